from mmf_rec.models import dlrm, dlrm_mm  # noqa: F401
