from mmf_rec.models import dlrm  # noqa: F401
