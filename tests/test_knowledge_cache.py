"""The item knowledge cache: hit, miss, invalidation, damaged entries."""

import logging

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf_rec.encoders.text import TransformerEncoder  # noqa: E402
from mmf_rec.knowledge_cache import build_or_load, source_fingerprint  # noqa: E402
from mmf_rec.processors.text import TextTokenizerProcessor  # noqa: E402
from tiny_models import TINY_BERT  # noqa: E402

TEXTS = [f"a {c} {m} shirt number {i}" for i, (c, m) in
         enumerate(zip(["navy", "red", "olive"] * 7, ["linen", "wool", "silk"] * 7))]


def tiny_encoder(max_length=12, seed=0):
    torch.manual_seed(seed)
    return TransformerEncoder({"random_init": TINY_BERT, "max_length": max_length,
                               "out_dim": 8})


def build(encoder, cache_dir, texts=TEXTS):
    tokenizer = TextTokenizerProcessor(encoder.processor_config()["params"])
    return build_or_load(
        "text", encoder, len(texts),
        lambda start, stop: tokenizer.tokenize(texts[start:stop]),
        cache_dir, source_fingerprint([], extra=texts), batch_size=8,
    )


def test_miss_builds_then_hit_reads_the_same_tokens(tmp_path):
    encoder = tiny_encoder()
    first = build(encoder, tmp_path)
    assert first.built and first.tokens.shape == (len(TEXTS), 12, 16)
    assert first.mask.shape == (len(TEXTS), 12) and first.mask[:, 0].all()
    second = build(encoder, tmp_path)
    assert not second.built and second.path == first.path
    np.testing.assert_array_equal(np.asarray(second.tokens), np.asarray(first.tokens))
    # the cached tokens are the backbone's own output
    tokenizer = TextTokenizerProcessor(encoder.processor_config()["params"])
    with torch.no_grad():
        direct, _ = encoder.eval().embed(tokenizer.tokenize(TEXTS[:3]))
    np.testing.assert_allclose(np.asarray(first.tokens[:3], dtype=np.float32),
                               direct.numpy(), atol=1e-2)


def test_changed_encoder_or_data_is_a_miss(tmp_path):
    base = build(tiny_encoder(), tmp_path)
    other_weights = build(tiny_encoder(seed=1), tmp_path)
    other_length = build(tiny_encoder(max_length=10), tmp_path)
    other_text = build(tiny_encoder(), tmp_path, texts=TEXTS[:-1] + ["a new item"])
    for entry in (other_weights, other_length, other_text):
        assert entry.built and entry.key != base.key and entry.path != base.path
    assert not build(tiny_encoder(), tmp_path).built  # the original is still valid


def test_projection_does_not_invalidate(tmp_path):
    encoder = tiny_encoder()
    first = build(encoder, tmp_path)
    with torch.no_grad():
        encoder.projection.weight.add_(1.0)
    assert not build(encoder, tmp_path).built and first.built


@pytest.mark.parametrize("damage", ["truncate", "meta"])
def test_damaged_entry_is_reported_and_rebuilt(tmp_path, caplog, damage):
    encoder = tiny_encoder()
    first = build(encoder, tmp_path)
    expected = np.asarray(first.tokens).copy()
    if damage == "truncate":
        path = first.path / "tokens.npy"
        path.write_bytes(path.read_bytes()[:200])
    else:
        meta = first.path / "meta.json"
        meta.write_text(meta.read_text().replace('"num_items": 21', '"num_items": 5'))
    with caplog.at_level(logging.WARNING):
        again = build(encoder, tmp_path)
    assert again.built
    assert "unusable" in caplog.text and str(first.path) in caplog.text
    np.testing.assert_array_equal(np.asarray(again.tokens), expected)


def test_source_fingerprint_sees_file_bytes_and_missing_files(tmp_path):
    a, b = tmp_path / "0.png", tmp_path / "1.png"
    a.write_bytes(b"one")
    with_missing = source_fingerprint([a, b])
    b.write_bytes(b"two")
    with_both = source_fingerprint([a, b])
    b.write_bytes(b"TWO")
    assert len({with_missing, with_both, source_fingerprint([a, b])}) == 3
