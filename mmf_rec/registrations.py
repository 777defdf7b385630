"""Import every module that registers something with MMF's registry.

MMF finds plugins through imports; mmf_rec.plugin makes MMF call
``mmf_rec.setup_imports()`` from MMF's own import points, so these are found
because mmf_rec is installed, whatever ``env.user_dir`` says.
"""

from mmf_rec import encoders, metrics, models, ranking_metrics, trainer  # noqa: F401
from mmf_rec.processors import image, text  # noqa: F401
from mmf_rec.data import builder  # noqa: F401
