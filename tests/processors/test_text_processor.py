"""The kbrec_text_tokenizer processor, on all-MiniLM-L6-v2's real tokenizer."""

import pytest
import torch
from mmf.common.registry import registry
from mmf.datasets.processors.processors import BaseProcessor, Processor
from omegaconf import OmegaConf

from mmf_rec.processors.text import TextTokenizerProcessor


@pytest.fixture(scope="module")
def processor():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield TextTokenizerProcessor({"max_length": 8})


def test_registered_as_an_mmf_processor():
    cls = registry.get_processor_class("kbrec_text_tokenizer")
    assert cls is TextTokenizerProcessor and issubclass(cls, BaseProcessor)


def test_built_by_mmf_from_type_and_params():
    config = OmegaConf.create({"type": "kbrec_text_tokenizer", "params": {"max_length": 12}})
    processor = Processor(config)
    out = processor({"text": "hello world"})
    assert out["input_ids"].shape == (12,)
    assert processor.max_length == 12  # MMF's wrapper forwards attributes


def test_one_text_gives_vectors_a_list_gives_matrices(processor):
    one = processor({"text": "hello world"})
    assert set(one) == {"input_ids", "attention_mask"}
    assert one["input_ids"].shape == (8,) and one["input_ids"].dtype == torch.long
    assert one["attention_mask"].dtype == torch.long
    many = processor({"text": ["hello world", "goodbye"]})
    assert many["input_ids"].shape == (2, 8) and many["attention_mask"].shape == (2, 8)
    assert torch.equal(many["input_ids"][0], one["input_ids"])


def test_pads_and_truncates_to_max_length(processor):
    tokenizer = processor.tokenizer
    short, long = "red shoes", "a very long product description that goes on and on and on"
    out = processor.tokenize([short, long])
    ids, mask = out["input_ids"], out["attention_mask"]
    # short: [CLS] red shoes [SEP] then padding, masked out
    words = tokenizer.convert_tokens_to_ids(["red", "shoes"])
    assert ids[0, :4].tolist() == [tokenizer.cls_token_id, *words, tokenizer.sep_token_id]
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert (ids[0, 4:] == processor.pad_token_id).all()
    # long: cut to max_length, still ending in [SEP]
    assert mask[1].tolist() == [1] * 8
    assert ids[1, -1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids[1, 1:-1]) == "a very long product description that"


def test_batches_of_any_size(processor):
    assert processor.tokenize([])["input_ids"].shape == (0, 8)
    texts = [f"item number {i}" for i in range(100)]
    assert processor.tokenize(texts)["input_ids"].shape == (100, 8)


def test_bad_inputs_are_named(processor):
    with pytest.raises(ValueError, match="'text'"):
        processor({"caption": "x"})
    with pytest.raises(TypeError, match="text 1 is a int"):
        processor.tokenize(["fine", 3])
    with pytest.raises(TypeError, match="list of texts"):
        processor.tokenize("not a list")


def test_bad_config_is_named(tmp_path):
    with pytest.raises(ValueError, match="max_lenght"):
        TextTokenizerProcessor({"max_lenght": 8})
    with pytest.raises(ValueError, match="model_max_length 512"):
        TextTokenizerProcessor({"max_length": 1000})
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        TextTokenizerProcessor({"model_path": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="tokenizer files"):
        TextTokenizerProcessor({"model_path": str(tmp_path)})
