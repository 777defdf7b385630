import json
import os

import numpy as np
import pytest

from mmf_rec.data import prepared
from mmf_rec.data import prepared_layout as layout
from mmf_rec.data.prepared import PreparedDataError, load_prepared
from mmf_rec.files import sha256_file


def _manifest(root):
    return json.loads((root / prepared.MANIFEST).read_text())


def _rewrite(root, split, column, array):
    """Replace a column and record it in the manifest, as a writer would."""
    manifest = _manifest(root)
    entry = layout.write_column(root / split, column, array)
    manifest["splits"][split]["files"][column] = entry
    layout.write_manifest(root, manifest)


def test_a_generated_directory_loads_memory_mapped(tiny_dir):
    data = load_prepared(tiny_dir)
    table = data.split("train")
    assert isinstance(table["label"], np.memmap)
    assert not table["label"].flags.writeable
    assert len(table) == data.manifest["splits"]["train"]["rows"]
    assert data.items.rows == data.schema.sparse_feature("item_id").cardinality
    with pytest.raises(PreparedDataError, match="no column 'colour'"):
        table["colour"]


def test_missing_directory_names_the_path_and_the_remedy(tmp_path):
    with pytest.raises(PreparedDataError, match=r"nowhere: .*does not exist.*mmf_rec\.data\.synthetic"):
        load_prepared(tmp_path / "nowhere")


def test_missing_manifest(tiny_copy):
    os.remove(tiny_copy / prepared.MANIFEST)
    with pytest.raises(PreparedDataError, match=r"manifest\.json: manifest is missing"):
        load_prepared(tiny_copy)


def test_missing_column_file(tiny_copy):
    os.remove(tiny_copy / "val" / "brand.npy")
    with pytest.raises(PreparedDataError, match=r"val/brand\.npy: file is missing.*shape"):
        load_prepared(tiny_copy)


def test_truncated_npy(tiny_copy):
    path = tiny_copy / "train" / "history.npy"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(PreparedDataError, match=r"train/history\.npy: not a readable \.npy"):
        load_prepared(tiny_copy)


def test_garbage_npy_header(tiny_copy):
    (tiny_copy / "test" / "label.npy").write_bytes(b"not numpy at all")
    with pytest.raises(PreparedDataError, match=r"test/label\.npy: not a readable \.npy"):
        load_prepared(tiny_copy)


def test_shape_mismatch(tiny_copy):
    path = tiny_copy / "train" / "dense.npy"
    dense = np.load(path)
    np.save(path, dense[:, :2])
    with pytest.raises(PreparedDataError,
                       match=r"train/dense\.npy: has shape \[4000, 2\].*expects shape \[4000, 4\]"):
        load_prepared(tiny_copy, verify_checksums=False)


def test_dtype_mismatch(tiny_copy):
    path = tiny_copy / "train" / "label.npy"
    np.save(path, np.load(path).astype(np.float64))
    with pytest.raises(PreparedDataError, match=r"train/label\.npy: .*dtype float64.*dtype float32"):
        load_prepared(tiny_copy, verify_checksums=False)


def test_checksum_mismatch_and_how_to_skip_it(tiny_copy):
    path = tiny_copy / "val" / "click_prob.npy"
    column = np.load(path, mmap_mode="r+")
    column[3] = 0.5 if column[3] != 0.5 else 0.25
    column.flush()
    del column
    with pytest.raises(PreparedDataError, match=r"val/click_prob\.npy: sha256 .* does not match"):
        load_prepared(tiny_copy)
    assert load_prepared(tiny_copy, verify_checksums=False).split("val").rows > 0


def test_id_at_the_cardinality_is_out_of_range(tiny_copy):
    path = tiny_copy / "train" / "brand.npy"
    brand = np.load(path)
    cardinality = _manifest(tiny_copy)["generator"]["num_brands"]
    brand[10, 0] = cardinality
    _rewrite(tiny_copy, "train", "brand", brand)
    with pytest.raises(PreparedDataError,
                       match=rf"train/brand\.npy: feature 'brand': id {cardinality} is out "
                             rf"of range; expected -1 \(padding\) or an id in \[0, {cardinality}\)"):
        load_prepared(tiny_copy)


def test_negative_id_other_than_padding(tiny_copy):
    history = np.load(tiny_copy / "test" / "history.npy")
    history[0, 0] = -2
    _rewrite(tiny_copy, "test", "history", history)
    with pytest.raises(PreparedDataError, match=r"test/history\.npy: feature 'history': id -2"):
        load_prepared(tiny_copy)


def test_label_outside_zero_one(tiny_copy):
    label = np.load(tiny_copy / "val" / "label.npy")
    label[0] = 2.0
    _rewrite(tiny_copy, "val", "label", label)
    with pytest.raises(PreparedDataError, match=r"val/label\.npy: labels must lie in \[0, 1\]"):
        load_prepared(tiny_copy)


def test_rows_disagreeing_with_the_table(tiny_copy):
    timestamp = np.load(tiny_copy / "cold" / "timestamp.npy")
    _rewrite(tiny_copy, "cold", "timestamp", timestamp[:-1])
    with pytest.raises(PreparedDataError, match=r"cold/timestamp\.npy: has \d+ rows; the manifest says"):
        load_prepared(tiny_copy)


def test_missing_item_image(tiny_copy):
    os.remove(tiny_copy / "items" / "images" / "42.png")
    with pytest.raises(PreparedDataError, match=r"items/images: 1 of 100 item images are missing \(first: 42\.png\)"):
        load_prepared(tiny_copy)


def test_descriptions_must_cover_every_item(tiny_copy):
    path = tiny_copy / "items" / "descriptions.json"
    manifest = _manifest(tiny_copy)
    texts = json.loads(path.read_text())
    sha = layout.write_json(path, texts[:-1])
    manifest["knowledge"]["description"]["sha256"] = sha
    layout.write_manifest(tiny_copy, manifest)
    with pytest.raises(PreparedDataError, match=r"descriptions\.json: expected a list of 100 texts.*got 99"):
        load_prepared(tiny_copy)


def test_unknown_split_names_the_known_ones(tiny_dir):
    with pytest.raises(PreparedDataError, match=r"unknown split 'tset'.*'train', 'val', 'test', 'cold'"):
        load_prepared(tiny_dir).split("tset")


def test_writes_leave_no_temporary_files(tmp_path):
    entry = layout.write_column(tmp_path, "x", np.arange(5, dtype=np.int64))
    layout.write_manifest(tmp_path, {"schema": {}, "splits": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "x.npy"]
    assert entry["shape"] == [5] and entry["dtype"] == "int64"
    assert entry["sha256"] == sha256_file(tmp_path / "x.npy")
    assert _manifest(tmp_path)["format"] == prepared.FORMAT
