import logging

import numpy as np
import pytest
import torch
from mmf.common.registry import registry
from mmf.datasets.processors.processors import Processor
from omegaconf import OmegaConf
from PIL import Image

from mmf_rec.imagenet import IMAGENET_MEAN, IMAGENET_STD
from mmf_rec.processors.image import ImageProcessor

LOGGER = "mmf_rec.processors.image"


def save(path, pixels, **kwargs):
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, **kwargs)
    return str(path)


def solid(height, width, rgb):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3))


@pytest.fixture
def files(tmp_path):
    """A good PNG and the three ways a catalogue image goes bad."""
    good = save(tmp_path / "good.png", solid(30, 40, (255, 128, 0)))
    noisy = save(tmp_path / "noisy.png", np.random.RandomState(0).randint(0, 256, (64, 64, 3)))
    data = open(noisy, "rb").read()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("this is a product description, not a picture\n")
    return {
        "good": good,
        "missing": str(tmp_path / "missing.png"),
        "truncated": str(tmp_path / "truncated.png"),
        "text": str(tmp_path / "text.png"),
    }


def test_registered_and_built_by_mmf():
    assert registry.get_processor_class("kbrec_image") is ImageProcessor
    wrapped = Processor(OmegaConf.create({"type": "kbrec_image", "params": {"image_size": 16}}))
    assert isinstance(wrapped.processor, ImageProcessor) and wrapped.image_size == 16


def test_good_png_is_resized_and_normalised(files):
    processor = ImageProcessor({"image_size": 16})
    out = processor({"image_path": files["good"]})
    assert set(out) == {"image", "image_valid"}
    assert out["image"].shape == (3, 16, 16) and out["image"].dtype == torch.float32
    assert out["image_valid"].dtype == torch.bool and bool(out["image_valid"])
    rgb = torch.tensor([255, 128, 0]) / 255
    expected = (rgb - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out["image"], expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-5)


def test_bad_files_become_counted_placeholders(files, caplog):
    processor = ImageProcessor({"image_size": 16})
    order = ["good", "missing", "truncated", "text"]
    with caplog.at_level(logging.WARNING):
        batch = processor.load_batch([files[k] for k in order])
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["image_valid"].tolist() == [True, False, False, False]
    assert torch.count_nonzero(batch["image"][1:]) == 0
    assert torch.count_nonzero(batch["image"][0]) > 0
    assert processor.counts == {"loaded": 1, "missing": 1, "unreadable": 2}
    logged = caplog.text
    for key in ("missing", "truncated", "text"):
        assert files[key] in logged
    assert "truncated" in logged and "UnidentifiedImageError" in logged

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        report = processor.report()
    assert report["examples"] == {"missing": [files["missing"]],
                                  "unreadable": [files["truncated"], files["text"]]}
    assert "3 of 4 images replaced by placeholders (1 missing, 2 unreadable)" in caplog.text
    processor.reset()
    assert processor.counts == {"loaded": 0, "missing": 0, "unreadable": 0}


def test_only_the_first_bad_files_are_logged_but_all_are_counted(tmp_path, caplog):
    processor = ImageProcessor({"image_size": 8, "log_first": 2})
    paths = [str(tmp_path / f"gone{i}.jpg") for i in range(5)] + [None, ""]
    with caplog.at_level(logging.WARNING):
        batch = processor.load_batch(paths)
    assert not batch["image_valid"].any()
    assert processor.counts["missing"] == 7
    individual = [r for r in caplog.records if "using a placeholder" in r.getMessage()]
    assert len(individual) == 2
    assert "counted, not logged" in individual[-1].getMessage()


def test_relative_paths_are_read_under_root(tmp_path):
    (tmp_path / "images").mkdir()
    save(tmp_path / "images" / "a.png", solid(10, 10, (0, 0, 255)))
    processor = ImageProcessor({"image_size": 4, "root": str(tmp_path / "images")})
    assert processor.load_batch(["a.png"])["image_valid"].tolist() == [True]
    unrooted = ImageProcessor({"image_size": 4}).load_batch(["a.png"])
    assert unrooted["image_valid"].tolist() == [False]


def test_resize_modes_keep_or_fill_the_frame(tmp_path):
    # 40 wide, 20 high: a red left half and a blue right half.
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20, 0] = 255
    wide[:, 20:, 2] = 255
    path = save(tmp_path / "wide.png", wide)
    plain = {"image_size": 8, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    squash = ImageProcessor({**plain, "resize": "squash"}).load(path)[0]
    crop = ImageProcessor({**plain, "resize": "crop"}).load(path)[0]
    pad = ImageProcessor({**plain, "resize": "pad"}).load(path)[0]
    assert squash[0, :, 0].min() > 0.99 and squash[2, :, -1].min() > 0.99  # whole picture
    assert crop[0, :, 0].min() > 0.99 and crop[2, :, -1].min() > 0.99  # the centre 20 x 20
    assert torch.count_nonzero(pad[:, :2]) == 0 and torch.count_nonzero(pad[:, -2:]) == 0
    assert pad[0, 3:5, 0].min() > 0.99  # picture between the bands
    assert not torch.allclose(squash, crop)


def test_exif_orientation_is_applied(tmp_path):
    # Stored red on top, blue below, with "rotate 90 clockwise to display".
    stored = np.zeros((10, 20, 3), dtype=np.uint8)
    stored[:5, :, 0] = 255
    stored[5:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path / "rotated.png", stored, exif=exif)
    image = ImageProcessor({"image_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}).load(path)[0]
    assert image[0, :, -1].min() > 0.99 and image[2, :, 0].min() > 0.99  # red right, blue left


def test_jpeg_and_grayscale_load_as_rgb(tmp_path):
    gray = save(tmp_path / "gray.png", np.full((12, 12), 200))
    jpeg = save(tmp_path / "photo.jpg", solid(300, 200, (10, 200, 30)), quality=95)
    processor = ImageProcessor({"image_size": 16, "mean": [0, 0, 0], "std": [1, 1, 1]})
    batch = processor.load_batch([gray, jpeg])
    assert batch["image_valid"].all()
    assert torch.allclose(batch["image"][0], torch.full((3, 16, 16), 200 / 255), atol=1e-6)
    green = batch["image"][1].mean((1, 2))
    assert torch.allclose(green, torch.tensor([10, 200, 30]) / 255, atol=0.03)


def test_identity_and_config_errors():
    base = ImageProcessor().identity()
    assert base == {"image_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                    "resize": "squash"}
    assert ImageProcessor({"resize": "crop"}).identity() != base
    with pytest.raises(ValueError, match="resize must be one of"):
        ImageProcessor({"resize": "stretch"})
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        ImageProcessor({"std": [0.5, 0.5]})
    with pytest.raises(ValueError, match="kbrec_image processor config"):
        ImageProcessor({"size": 32})
    with pytest.raises(TypeError, match="list of paths"):
        ImageProcessor().load_batch("one.png")
    empty = ImageProcessor({"image_size": 8}).load_batch([])
    assert empty["image"].shape == (0, 3, 8, 8) and empty["image_valid"].shape == (0,)
