from mmf_rec.models import dlrm, dlrm_mm, two_tower

__all__ = ["dlrm", "dlrm_mm", "two_tower"]
