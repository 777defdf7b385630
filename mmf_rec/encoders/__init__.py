"""Registered encoders: the parts that models are composed of.

Importing this package registers them with MMF's registry.
"""

from mmf_rec.encoders.dense import DenseEncoder, mlp  # noqa: F401
from mmf_rec.encoders.sparse import SparseEncoder  # noqa: F401
from mmf_rec.encoders.text import TransformerEncoder  # noqa: F401
from mmf_rec.encoders.image import EfficientNetLite0Encoder, TorchvisionResNetEncoder  # noqa: F401
