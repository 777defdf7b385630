from mmf_rec.models import dlrm, dlrm_mm, two_tower  # noqa: F401
