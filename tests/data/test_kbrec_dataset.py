import pickle

import numpy as np
import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf.common.batch_collator import BatchCollator  # noqa: E402
from mmf.common.registry import registry  # noqa: E402
from mmf.common.sample import SampleList  # noqa: E402

from mmf_rec.data import prepared  # noqa: E402
from mmf_rec.data.dataset import KBRecDataset, select_schema  # noqa: E402


@pytest.fixture(scope="module")
def data(tiny_dir):
    return prepared.load_prepared(tiny_dir)


@pytest.fixture(scope="module")
def train(data):
    # MMF's trainer registers the device before it builds datasets.
    registry.register("current_device", torch.device("cpu"))
    return KBRecDataset(data, "train", dataset_type="train")


def _expected_keys(schema):
    return ["dense", *[f"sparse_{f.name}" for f in schema.sparse],
            "targets", "click_prob", "item_index"]


def test_getitems_gathers_the_rows_asked_for(train, data):
    table = data.split("train")
    indices = [5, 0, 3999, 17, 17, 2048]
    batch = train.__getitems__(indices)
    assert list(batch) == _expected_keys(data.schema)
    b = len(indices)
    assert batch["dense"].shape == (b, len(data.schema.dense))
    assert batch["dense"].dtype == torch.float32
    np.testing.assert_array_equal(batch["dense"].numpy(), table["dense"][indices])
    for f in data.schema.sparse:
        got = batch[f"sparse_{f.name}"]
        assert got.shape == (b, f.max_len) and got.dtype == torch.int64, f.name
        np.testing.assert_array_equal(got.numpy(), table[f.name][indices])
    assert batch["targets"].shape == (b, 1) and batch["targets"].dtype == torch.float32
    np.testing.assert_array_equal(batch["targets"][:, 0].numpy(), table["label"][indices])
    np.testing.assert_array_equal(batch["click_prob"].numpy(), table["click_prob"][indices])
    assert batch["item_index"].dtype == torch.int64
    np.testing.assert_array_equal(batch["item_index"].numpy(), table["item_id"][indices, 0])


def test_getitem_samples_collate_to_the_same_batch(train):
    indices = [3, 1, 4, 1, 5, 9, 2, 6]
    collate = BatchCollator("kbrec_synthetic", "train")
    fast = collate(train.__getitems__(indices))
    slow = collate([train[i] for i in indices])
    assert fast.fields() == slow.fields()
    tensors = [k for k in fast.fields() if isinstance(fast[k], torch.Tensor)]
    assert tensors == _expected_keys(train.schema)
    for key in tensors:
        assert fast[key].dtype == slow[key].dtype, key
        torch.testing.assert_close(fast[key], slow[key], rtol=0, atol=0)


def test_dataloader_with_mmf_collator_yields_sample_lists(train, data):
    loader = torch.utils.data.DataLoader(
        train, batch_size=512, shuffle=True,
        collate_fn=BatchCollator(train.dataset_name, train.dataset_type),
    )
    batches = list(loader)
    assert sum(b.get_batch_size() for b in batches) == len(train) == data.split("train").rows
    first = batches[0]
    assert isinstance(first, SampleList)
    assert first.dataset_name == "kbrec_synthetic" and first.dataset_type == "train"
    assert first.sparse_history.shape == (512, data.schema.sparse_feature("history").max_len)
    moved = train.prepare_batch(first)
    assert isinstance(moved, SampleList) and moved.fields() == first.fields()
    assert moved.targets.device.type == "cpu"
    # every row once: item ids over the epoch add up to the column's
    seen = torch.cat([b.item_index for b in batches]).sort().values.numpy()
    np.testing.assert_array_equal(seen, np.sort(data.split("train")["item_id"][:, 0]))


def test_workers_reopen_the_files_instead_of_copying_them(train):
    blob = pickle.dumps(train)
    assert len(blob) < 20_000  # the columns themselves are far larger
    clone = pickle.loads(blob)
    indices = [7, 8, 100]
    for key, value in train.__getitems__(indices).items():
        torch.testing.assert_close(clone.__getitems__(indices)[key], value)
    loader = torch.utils.data.DataLoader(
        train, batch_size=1000, num_workers=2,
        collate_fn=BatchCollator(train.dataset_name, train.dataset_type),
    )
    assert sum(b.get_batch_size() for b in loader) == len(train)


def test_selected_features_only(data):
    schema = select_schema(data.schema, ["item_id", "history"])
    dataset = KBRecDataset(data, "val", dataset_type="val", schema=schema)
    batch = dataset.__getitems__([0, 1])
    assert [k for k in batch if k.startswith("sparse_")] == ["sparse_item_id", "sparse_history"]


def test_other_splits_and_oracle(data, train):
    cold = train.for_split("cold")
    assert len(cold) == data.split("cold").rows
    assert cold.oracle_auc == pytest.approx(data.manifest["oracle_auc"]["cold"])
    with pytest.raises(prepared.PreparedDataError, match="unknown split 'future'"):
        train.for_split("future")


def test_out_of_range_rows_are_refused(train):
    with pytest.raises(IndexError, match="out of range"):
        train.__getitems__([0, len(train)])
    with pytest.raises(IndexError, match="out of range"):
        train[len(train)]
