"""Each compatibility shim, proven needed and working on the installed stack."""

import collections
import collections.abc
import importlib.util
import os
import sys

import pytest
import torch

import mmf_rec.compat

mmf_rec.compat.apply()

from mmf.common.registry import registry  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tiny_runs import run_python  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_interpreter_start_up_imports_nothing_heavy():
    result = run_python(
        "import sys; print(sorted(m for m in ('torch', 'mmf', 'transformers', "
        "'omegaconf') if m in sys.modules)); "
        "print([type(f).__name__ for f in sys.meta_path])"
    )
    assert result.returncode == 0, result.stderr
    loaded, finders = result.stdout.splitlines()
    assert loaded == "[]"
    assert "ImportHook" in finders


def test_plain_import_mmf_works_in_a_fresh_interpreter():
    """No apply() call: the .pth hook alone must patch around ``import mmf``."""
    result = run_python(
        "import mmf, sys; from mmf.common.registry import registry; "
        "print(hasattr(registry, 'register_encoder'), 'torchtext' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", str(_torchtext_installed())]


def test_collections_abc_aliases():
    assert collections.Mapping is collections.abc.Mapping
    assert collections.Sequence is collections.abc.Sequence


def test_demjson_is_served_by_demjson3():
    import demjson

    assert demjson.decode("{a: 1, b: [2, 3]}") == {"a": 1, "b": [2, 3]}


def test_moved_transformers_modules():
    from transformers.configuration_bert import BertConfig
    from transformers.modeling_auto import AutoModel
    from transformers.modeling_bert import BertEmbeddings, BertLayerNorm
    from transformers.models.bert import modeling_bert
    from transformers.tokenization_auto import AutoTokenizer  # noqa: F401

    assert BertEmbeddings is modeling_bert.BertEmbeddings
    assert BertLayerNorm is torch.nn.LayerNorm
    assert AutoModel.__name__ == "AutoModel"
    assert BertConfig(hidden_size=32).hidden_size == 32


def test_adam_w_optimizer_keeps_transformers_defaults():
    adam_w = registry.get_optimizer_class("adam_w")
    assert issubclass(adam_w, torch.optim.AdamW)
    param = torch.nn.Parameter(torch.ones(2))
    assert adam_w([param], lr=0.1).defaults["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="correct_bias"):
        adam_w([param], correct_bias=False)


def _torchtext_installed():
    return importlib.util.find_spec("torchtext") is not None


@pytest.mark.skipif(_torchtext_installed(), reason="torchtext is installed here")
def test_torchtext_stub_only_while_mmf_loads_and_fails_loudly():
    import mmf.utils.vocab as vocab

    assert "torchtext" not in sys.modules
    with pytest.raises(ImportError, match="torchtext is not installed"):
        vocab.vocab.GloVe


def test_omegaconf_reads_missing_keys_as_none():
    assert OmegaConf.create({}).missing_key is None


def test_encoder_registry_backfill():
    from mmf.modules.encoders import Encoder

    @registry.register_encoder("_test_identity")
    class Identity(Encoder):
        def forward(self, x):
            return x

    assert registry.get_encoder_class("_test_identity") is Identity
    with pytest.raises(TypeError, match="must subclass"):
        registry.register_encoder("_test_bad")(torch.nn.Linear)


def test_encoder_base_from_params_builds_structured_config():
    from dataclasses import dataclass

    from mmf.modules.encoders import Encoder

    class Sized(Encoder):
        @dataclass
        class Config(Encoder.Config):
            size: int = 3

        def __init__(self, config):
            super().__init__()
            self.config = config

    built = Sized.from_params(name="sized", size=5)
    assert (built.config.name, built.config.size) == ("sized", 5)
    with pytest.raises(Exception):
        Sized.from_params(name="sized", size="not an int")
