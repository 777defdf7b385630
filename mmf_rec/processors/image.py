"""The image processor: an item's image file -> the tensor the image encoders take.

Catalogues have missing and broken images, and one bad file must not stop a
run of thousands. A file that is missing or cannot be decoded (truncated,
not an image) becomes a placeholder, zeros after normalisation (the mean
colour), with ``image_valid`` False, so the encoders mask its tokens out.
Every such file is counted by reason and the first few are logged with their
paths; :meth:`ImageProcessor.report` gives the totals. Counts are per process
(the item knowledge cache loads images in its own process).
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
from mmf.common.registry import registry
from mmf.datasets.processors.processors import BaseProcessor
from PIL import Image, ImageOps
from torch import Tensor

from mmf_rec.imagenet import IMAGENET_MEAN, IMAGENET_STD
from mmf_rec.log import get_logger
from mmf_rec.structured_config import structured_config

logger = get_logger(__name__)

MISSING = "missing"  # no file at the path (or no path)
UNREADABLE = "unreadable"  # a file that does not decode as an image
REASONS = (MISSING, UNREADABLE)
RESIZE_MODES = ("squash", "crop", "pad")


@registry.register_processor("kbrec_image")
class ImageProcessor(BaseProcessor):
    """{"image_path": path} (or a path) -> {"image": (3, S, S) float32,
    "image_valid": () bool}; :meth:`load_batch` does a list of paths at once."""

    @dataclass
    class Config:
        # Output side S; must equal the encoder's image_size.
        image_size: int = 224
        # Normalisation; must equal the encoder's (both default to ImageNet's).
        mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
        std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
        # squash: resize to S x S, aspect ratio not kept (the whole picture stays);
        # crop: shorter side to S, centre crop; pad: longer side to S, padded
        # with the mean colour.
        resize: str = "squash"
        # Directory that relative paths are relative to; "" = the working directory.
        root: str = ""
        # How many bad files of each reason are logged one by one.
        log_first: int = 5

    def __init__(self, config=None, *args, **kwargs):
        what = "kbrec_image processor"
        config = structured_config(self.Config, config, what)
        if config.image_size < 1:
            raise ValueError(f"{what} config: image_size must be >= 1, got {config.image_size}")
        if config.resize not in RESIZE_MODES:
            raise ValueError(f"{what} config: resize must be one of {RESIZE_MODES}, "
                             f"got {config.resize!r}")
        if len(config.mean) != 3 or len(config.std) != 3 or min(config.std) <= 0:
            raise ValueError(f"{what} config: mean and std need 3 values (R, G, B), std > 0; "
                             f"got mean {list(config.mean)}, std {list(config.std)}")
        self.config = config
        self.image_size = int(config.image_size)
        self.mean = torch.tensor(list(config.mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(config.std), dtype=torch.float32).view(3, 1, 1)
        self.reset()

    # -- what callers use ----------------------------------------------------------
    def __call__(self, item: Any, *args, **kwargs) -> Dict[str, Tensor]:
        if isinstance(item, Mapping):
            if "image_path" not in item:
                raise KeyError(f"kbrec_image processor: the item has no 'image_path'; "
                               f"it has {sorted(item.keys())}")
            item = item["image_path"]
        image, valid = self.load(item)
        return {"image": image, "image_valid": torch.tensor(valid)}

    def load_batch(self, paths: Sequence[Any]) -> Dict[str, Tensor]:
        """Paths -> {"image": (B, 3, S, S) float32, "image_valid": (B,) bool}."""
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError("kbrec_image processor: load_batch() takes a list of paths; "
                            "wrap a single path in a list")
        loaded = [self.load(p) for p in paths]
        if not loaded:
            return {"image": torch.zeros(0, 3, self.image_size, self.image_size),
                    "image_valid": torch.zeros(0, dtype=torch.bool)}
        return {"image": torch.stack([image for image, _ in loaded]),
                "image_valid": torch.tensor([valid for _, valid in loaded])}

    def load(self, path: Any) -> Tuple[Tensor, bool]:
        """One path -> ((3, S, S) normalised image, True), or (placeholder, False)."""
        resolved = self._resolve(path)
        if resolved is None:
            return self._bad(repr(path), MISSING, "no path given")
        try:
            with Image.open(resolved) as opened:
                opened.draft("RGB", (self.image_size, self.image_size))  # JPEG: decode smaller
                opened.load()
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except FileNotFoundError:
            return self._bad(resolved, MISSING, "no such file")
        except Exception as e:  # PIL raises many kinds for bad data; none may stop a run
            return self._bad(resolved, UNREADABLE, f"{type(e).__name__}: {e}")
        self._counts["loaded"] += 1
        return self._to_tensor(self._resize(image)), True

    @property
    def counts(self) -> Dict[str, int]:
        """{"loaded", "missing", "unreadable"}: images seen since the last reset()."""
        return {key: self._counts[key] for key in ("loaded", *REASONS)}

    def report(self, log: bool = True) -> Dict[str, Any]:
        """The counts and the first paths of each reason; logged as a warning
        when any file was bad."""
        counts = self.counts
        summary = {**counts, "examples": {r: list(self._examples[r]) for r in REASONS}}
        if log:
            bad = counts[MISSING] + counts[UNREADABLE]
            total = bad + counts["loaded"]
            if bad:
                examples = "; ".join(
                    f"{r}: {', '.join(self._examples[r])}" for r in REASONS if self._examples[r]
                )
                logger.warning(
                    "kbrec_image processor: %d of %d images replaced by placeholders "
                    "(%d missing, %d unreadable), e.g. %s",
                    bad, total, counts[MISSING], counts[UNREADABLE], examples,
                )
            else:
                logger.info("kbrec_image processor: all %d images loaded", total)
        return summary

    def reset(self) -> None:
        self._counts: Counter = Counter()
        self._examples: Dict[str, List[str]] = {r: [] for r in REASONS}

    def identity(self) -> Dict[str, Any]:
        """Everything that changes this processor's output, for cache keys."""
        return {"image_size": self.image_size, "mean": list(self.config.mean),
                "std": list(self.config.std), "resize": self.config.resize}

    def placeholder(self) -> Tensor:
        return torch.zeros(3, self.image_size, self.image_size)

    # -- internals -------------------------------------------------------------------
    def _resolve(self, path: Any):
        if path is None or (isinstance(path, float) and np.isnan(path)):  # None / NaN cells
            return None
        path = os.fspath(path)
        if not path:
            return None
        return os.path.join(self.config.root, path) if self.config.root else path

    def _bad(self, path: Any, reason: str, detail: str) -> Tuple[Tensor, bool]:
        self._counts[reason] += 1
        seen = self._counts[reason]
        limit = self.config.log_first
        if seen <= limit:
            self._examples[reason].append(str(path))
            more = (f"; further {reason} images are counted, not logged (see report())"
                    if seen == limit else "")
            logger.warning("kbrec_image processor: %s image %s (%s), using a placeholder%s",
                           reason, path, detail, more)
        return self.placeholder(), False

    def _resize(self, image: Image.Image) -> Image.Image:
        size = (self.image_size, self.image_size)
        mode = self.config.resize
        if mode == "squash":
            return image.resize(size, Image.Resampling.BICUBIC)
        if mode == "crop":
            return ImageOps.fit(image, size, Image.Resampling.BICUBIC)
        fill = tuple(int(round(255 * m)) for m in self.config.mean)
        return ImageOps.pad(image, size, Image.Resampling.BICUBIC, color=fill)

    def _to_tensor(self, image: Image.Image) -> Tensor:
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        pixels = pixels.permute(2, 0, 1).to(torch.float32).div_(255.0)
        return (pixels - self.mean) / self.std
