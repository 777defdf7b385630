import logging
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from mmf.common.registry import registry
from omegaconf import OmegaConf
from PIL import Image
from torchvision.models import ResNet18_Weights

from mmf_rec.encoders.image import (
    EfficientNetLite0Encoder,
    TorchvisionResNetEncoder,
    lite0_weights_path,
)
from mmf_rec.processors.image import ImageProcessor

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "encoders"
HM_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "hm_sample" / "images"
CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet class names, offline


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These batches are tiny: one thread is as fast, and does not slow to a
    crawl when other processes compete for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def lite0_state():
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


def resnet18(**params):
    return TorchvisionResNetEncoder({"name": "resnet18", "image_size": 64, **params})


def imagenet_probabilities(encoder, images, state):
    """The shipped classifier head over the encoder's globally pooled features."""
    tokens, _ = encoder.embed(images)
    return (tokens[:, 0] @ state["_fc.weight"].T + state["_fc.bias"]).softmax(-1)


def save_gray(path, pixels):
    Image.fromarray(np.stack([pixels.astype(np.uint8)] * 3, -1)).save(path)
    return str(path)


def test_registry_names_resolve_to_the_classes():
    assert registry.get_encoder_class("torchvision_resnet") is TorchvisionResNetEncoder
    assert registry.get_encoder_class("efficientnet_lite0") is EfficientNetLite0Encoder


# -- EfficientNet-Lite0 with the shipped weights --------------------------------------
def test_lite0_backbone_holds_the_shipped_weights(offline, lite0_state):
    encoder = EfficientNetLite0Encoder({"grid": 2})
    backbone = encoder.backbone.net.state_dict()
    expected = {k: v for k, v in lite0_state.items() if not k.startswith("_fc.")}
    assert set(backbone) == set(expected)
    for key, value in expected.items():
        assert torch.equal(backbone[key], value), key
    torch.manual_seed(0)
    random = EfficientNetLite0Encoder({"grid": 2, "weights": False}).backbone.net.state_dict()
    assert not torch.equal(random["_conv_head.weight"], expected["_conv_head.weight"])


def test_lite0_features_recognise_simple_patterns(tmp_path, lite0_state):
    """Concentric rings look like a coil and a fine lattice like a window
    screen to an ImageNet classifier; random features recognise nothing."""
    yy, xx = np.mgrid[0:224, 0:224]
    rings = save_gray(tmp_path / "rings.png", (np.hypot(yy - 112, xx - 112) // 10) % 2 * 255)
    lattice = save_gray(tmp_path / "lattice.png", (((yy % 16) < 2) | ((xx % 16) < 2)) * 255)
    encoder = EfficientNetLite0Encoder({"grid": 1, "out_dim": 0}).eval()
    images = ImageProcessor(encoder.processor_params()).load_batch([rings, lattice])
    with torch.no_grad():
        probs = imagenet_probabilities(encoder, images, lite0_state)
        torch.manual_seed(0)
        random = EfficientNetLite0Encoder({"grid": 1, "weights": False}).eval()
        random_probs = imagenet_probabilities(random, images, lite0_state)
    assert CATEGORIES[int(probs[0].argmax())] == "coil" and probs[0].max() > 0.5
    assert CATEGORIES[int(probs[1].argmax())] == "window screen" and probs[1].max() > 0.4
    assert random_probs.max() < 0.05


@pytest.mark.skipif(not HM_IMAGES.is_dir(), reason=f"real product photos not found at {HM_IMAGES}")
def test_lite0_recognises_real_product_photos(lite0_state):
    photos = {"0495573002.jpg": "brassiere", "0490793010.jpg": "jersey"}
    encoder = EfficientNetLite0Encoder({"grid": 1}).eval()
    images = ImageProcessor().load_batch([str(HM_IMAGES / name) for name in photos])
    assert images["image_valid"].all()
    with torch.no_grad():
        probs = imagenet_probabilities(encoder, images, lite0_state)
    assert [CATEGORIES[int(i)] for i in probs.argmax(-1)] == list(photos.values())
    assert (probs.max(-1).values > 0.5).all()


# -- shapes and masks -----------------------------------------------------------------
def test_output_shapes_and_token_counts():
    torch.manual_seed(0)
    lite = EfficientNetLite0Encoder({"grid": 3, "image_size": 96, "out_dim": 16})
    images = torch.randn(2, 3, 96, 96)
    tokens, mask = lite(images)
    assert tokens.shape == (2, 9, 16) and mask.shape == (2, 9) and mask.dtype == torch.bool
    assert lite.embed(images)[0].shape == (2, 9, 1280) and lite.num_tokens == 9

    net = resnet18(grid=2, out_dim=8)
    tokens, mask = net(torch.randn(3, 3, 64, 64))
    assert tokens.shape == (3, 4, 8) and mask.all() and net.backbone_dim == 512
    whole = resnet18(grid=0, out_dim=0, image_size=100)  # 100 -> 4 x 4 cells
    assert whole.num_tokens == math.ceil(100 / 32) ** 2 == 16
    assert whole(torch.randn(1, 3, 100, 100))[0].shape == (1, 16, 512)
    mmf_layout = resnet18(num_output_features=6, out_dim=8)  # MMF main's 3 x 2 regions
    assert mmf_layout(torch.randn(1, 3, 64, 64))[0].shape == (1, 6, 8)


def test_regions_are_pooled_parts_of_the_feature_map():
    torch.manual_seed(0)
    cells = resnet18(grid=2, out_dim=0).eval()  # 64 px -> a 2 x 2 feature map
    mean = resnet18(grid=1, out_dim=0).eval()
    peak = resnet18(grid=1, out_dim=0, pool_type="max").eval()
    for other in (mean, peak):
        other.backbone.load_state_dict(cells.backbone.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = cells.backbone(images)
        tokens, _ = cells.embed(images)
        assert torch.equal(tokens[:, 1], fmap[:, :, 0, 1])  # row-major regions
        assert torch.equal(tokens[:, 2], fmap[:, :, 1, 0])
        assert torch.allclose(mean.embed(images)[0][:, 0], fmap.mean((2, 3)), atol=1e-5)
        assert torch.equal(peak.embed(images)[0][:, 0], fmap.amax((2, 3)))


def test_backbone_runs_in_chunks_only_where_that_is_exact():
    torch.manual_seed(0)
    whole = resnet18(grid=2, out_dim=0, cpu_chunk_pixels=0, freeze=False)
    chunked = resnet18(grid=2, out_dim=0, cpu_chunk_pixels=2 * 64 * 64, freeze=False)
    chunked.load_state_dict(whole.state_dict())
    calls = []
    chunked.backbone.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    images = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        whole.eval(), chunked.eval()
        assert torch.allclose(chunked.embed(images)[0], whole.embed(images)[0], atol=1e-5)
        assert calls == [2, 2, 1]
        # In training, BatchNorm normalises with the statistics of each call.
        whole.train(), chunked.train()
        calls.clear()
        assert torch.allclose(chunked.embed(images)[0], whole.embed(images)[0], atol=1e-5)
        assert calls == [5]


def test_placeholder_images_are_masked_out_and_not_run():
    torch.manual_seed(0)
    encoder = resnet18(grid=2, out_dim=0).eval()
    images = torch.randn(3, 3, 64, 64)
    valid = torch.tensor([True, False, True])
    with torch.no_grad():
        tokens, mask = encoder.embed({"image": images, "image_valid": valid})
        alone, _ = encoder.embed(images[[0, 2]])
        invalid = torch.zeros(3, dtype=torch.bool)
        none, none_mask = encoder.embed({"image": images, "image_valid": invalid})
    assert mask.tolist() == [[True] * 4, [False] * 4, [True] * 4]
    assert torch.count_nonzero(tokens[1]) == 0
    assert torch.allclose(tokens[[0, 2]], alone, atol=1e-6)
    assert not none_mask.any() and torch.count_nonzero(none) == 0


def test_bad_inputs_are_refused_with_the_reason():
    encoder = resnet18()
    with pytest.raises(ValueError, match="image_size 64"):
        encoder(torch.randn(1, 3, 32, 32))
    with pytest.raises(TypeError, match="float tensor normalised"):
        encoder(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_valid must be a bool tensor"):
        encoder({"image": torch.randn(2, 3, 64, 64), "image_valid": torch.ones(3).bool()})
    with pytest.raises(KeyError, match="no 'image'"):
        encoder({"pixels": torch.randn(1, 3, 64, 64)})


# -- resnet weights: only from a local file ---------------------------------------------
def test_resnet_loads_weights_path(tmp_path, offline):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    encoder = resnet18(weights_path=str(path), pretrained=True)
    loaded = encoder.backbone.state_dict()
    reference = torch.nn.Sequential(*list(source.children())[:-2]).state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)

    without_fc = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": without_fc}, tmp_path / "wrapped.pth")
    again = resnet18(weights_path=str(tmp_path / "wrapped.pth"))
    assert again.fingerprint() == encoder.fingerprint()


def test_resnet_refuses_weights_that_do_not_fit(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="not a state dict of this architecture"):
        resnet18(weights_path=str(tmp_path / "r34.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        resnet18(weights_path=str(tmp_path / "junk.pth"))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resnet18(weights_path=str(tmp_path / "nowhere.pth"))


def test_pretrained_without_weights_path_raises_instead_of_downloading(
    tmp_path, monkeypatch, offline
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="pass its path as weights_path"):
        resnet18(pretrained=True)
    assert list(tmp_path.iterdir()) == []


def test_random_init_is_logged(caplog):
    with caplog.at_level(logging.WARNING):
        resnet18()
        EfficientNetLite0Encoder({"weights": False, "image_size": 64})
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("resnet18 starts from random weights" in m for m in messages)
    assert any("efficientnet_lite0" in m and "random weights" in m for m in messages)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="torchvision ResNet"):
        TorchvisionResNetEncoder({"name": "vgg16"})
    with pytest.raises(ValueError, match="pool_type"):
        resnet18(pool_type="median")
    with pytest.raises(ValueError, match="num_output_features"):
        resnet18(num_output_features=10)
    with pytest.raises(ValueError, match="grid must be >= 0"):
        EfficientNetLite0Encoder({"grid": -1})
    with pytest.raises(ValueError, match="efficientnet_lite0 encoder config"):
        EfficientNetLite0Encoder({"pretrained": True})  # not one of its keys


# -- freezing and fingerprints ----------------------------------------------------------
@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_stops_backbone_gradients_not_projection_gradients(freeze):
    torch.manual_seed(0)
    encoder = resnet18(grid=2, out_dim=8, freeze=freeze).train()
    running = encoder.backbone[1].running_mean.clone()
    tokens, _ = encoder(torch.randn(2, 3, 64, 64))
    tokens.square().sum().backward()
    backbone_grads = [p.grad for p in encoder.backbone.parameters()]
    assert encoder.projection.weight.grad is not None
    assert encoder.projection.weight.grad.abs().sum() > 0
    if freeze:
        assert all(g is None for g in backbone_grads)
        assert torch.equal(encoder.backbone[1].running_mean, running)  # BN kept in eval
    else:
        assert all(g is not None for g in backbone_grads)
        assert not torch.equal(encoder.backbone[1].running_mean, running)


def test_fingerprint_follows_weights_grid_and_image_size_not_projection(tmp_path):
    torch.manual_seed(0)
    base = EfficientNetLite0Encoder({"grid": 3, "image_size": 224, "out_dim": 8})
    torch.manual_seed(1)
    other_projection = EfficientNetLite0Encoder({"grid": 3, "image_size": 224, "out_dim": 32})
    assert not torch.equal(base.projection.weight, other_projection.projection.weight[:8])
    assert base.fingerprint() == other_projection.fingerprint()
    changed = [
        EfficientNetLite0Encoder({"grid": 2}),
        EfficientNetLite0Encoder({"image_size": 128}),
        EfficientNetLite0Encoder({"weights": False}),
    ]
    prints = {base.fingerprint(), *(e.fingerprint() for e in changed)}
    assert len(prints) == 4

    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "a.pth")
    torch.manual_seed(3)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "b.pth")
    a = resnet18(weights_path=str(tmp_path / "a.pth"))
    same_weights = str(tmp_path / "a.pth")
    assert a.fingerprint() == resnet18(weights_path=same_weights, out_dim=4).fingerprint()
    assert a.fingerprint() != resnet18(weights_path=str(tmp_path / "b.pth")).fingerprint()
    assert a.fingerprint() != resnet18(weights_path=same_weights, pool_type="max").fingerprint()
    identity = a.backbone_identity()
    assert identity["arch"] == "resnet18" and identity["image_size"] == 64
    assert identity["mean"] == [0.485, 0.456, 0.406] and identity["regions"] == [3, 3]


def test_default_yamls_build_the_encoders():
    lite = OmegaConf.load(CONFIGS / "efficientnet_lite0.yaml")
    encoder = registry.get_encoder_class(lite.type)(lite.params)
    assert encoder.num_tokens == 9 and encoder.out_dim == 64 and encoder.image_size == 224
    resnet = OmegaConf.load(CONFIGS / "torchvision_resnet.yaml")
    encoder = registry.get_encoder_class(resnet.type)(resnet.params)
    assert encoder.backbone_dim == 2048 and encoder.num_tokens == 9
