import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmf_rec.data import criteo, criteo_lines
from mmf_rec.data.prepared import load_prepared
from mmf_rec.data.report import DataInputError

REPO = Path(__file__).resolve().parents[2]


def _line(rng, label=None):
    label = int(rng.integers(0, 2)) if label is None else label
    dense = ["" if rng.random() < 0.2 else str(int(rng.integers(-3, 500))) for _ in range(13)]
    cats = ["" if rng.random() < 0.1 else "%08x" % int(rng.integers(0, 20) * 7919 + j)
            for j in range(26)]
    return "\t".join([str(label), *dense, *cats])


def write_tsv(path, n, seed=0, opener=open):
    rng = np.random.default_rng(seed)
    lines = [_line(rng) for _ in range(n)]
    with opener(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode())
    return lines


def test_parse_block_applies_dlrm_preprocessing():
    fields = ["1", "0", "-2", "", "10", *["7"] * 9, "68fd1e64", "", "ABCDEF01", *["1"] * 23]
    chunk, n = criteo_lines.parse_block(("\t".join(fields) + "\r\n").encode(), 1)
    assert n == 1 and chunk.label.tolist() == [1.0]
    dense, clipped = criteo.dense_transform(chunk)
    assert clipped == 1
    np.testing.assert_allclose(dense[0, :4], [0.0, 0.0, 0.0, np.log(11.0)], rtol=1e-6)
    assert chunk.dense_missing[0, :4].tolist() == [False, False, True, False]
    assert chunk.sparse[0, 0] == 0x68FD1E64 and chunk.sparse[0, 2] == 0xABCDEF01
    assert chunk.sparse_missing[0, :3].tolist() == [False, True, False]
    ids = criteo.map_ids(chunk, criteo.CriteoConfig(categorical="hash", max_table_size=101),
                         None)
    assert ids[0, 0] == 0x68FD1E64 % 100 + 1 and ids[0, 1] == 0


def test_malformed_lines_are_counted_by_reason_with_line_numbers(tmp_path):
    lines = write_tsv(tmp_path / "train.txt", 300)
    lines[4] = "1\t2\t3"  # line 5: wrong field count
    lines[9] = lines[9].replace("\t", "\t12x", 1)  # line 10: bad integer
    lines[14] = "2" + lines[14][1:]  # line 15: bad label
    fields = lines[19].split("\t")
    fields[20] = "zz11"  # line 20: bad categorical
    lines[19] = "\t".join(fields)
    lines[29] = ""  # blank: skipped, not an error
    data = ("\n".join(lines) + "\n").encode()
    data = data.replace(lines[24].encode(), lines[24].encode()[:-2] + b"\xe9a")  # line 25
    (tmp_path / "train.txt").write_bytes(data)
    manifest = criteo.prepare_criteo(tmp_path, tmp_path / "out",
                                     {"chunk_mb": 1, "max_bad_fraction": 0.1})
    assert manifest["dropped"] == {"lines.wrong_field_count": 1, "lines.bad_integer": 1,
                                   "lines.bad_label": 1, "lines.bad_categorical": 1,
                                   "lines.bad_encoding": 1}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["examples"]["lines.wrong_field_count"] == ["train.txt:5"]
    assert report["examples"]["lines.bad_integer"] == ["train.txt:10"]
    assert report["examples"]["lines.bad_categorical"] == ["train.txt:20"]
    assert report["examples"]["lines.bad_encoding"] == ["train.txt:25"]
    data = load_prepared(tmp_path / "out")
    total = sum(data.split(s).rows for s in data.split_names)
    assert total == 300 - 5 - 1
    assert manifest["repaired"]["lines.dense_missing_set_to_0"] > 0


def test_kaggle_split_frequency_vocab_and_chunking_agree(tmp_path):
    lines = write_tsv(tmp_path / "train.txt", 700, seed=1)
    small = criteo.prepare_criteo(tmp_path / "train.txt", tmp_path / "a",
                                  {"chunk_mb": 1, "min_frequency": 3})
    data = load_prepared(tmp_path / "a")
    # 6/7 of the lines train, the last day is halved
    assert [data.split(s).rows for s in ("train", "val", "test")] == [600, 50, 50]
    labels = np.array([int(x.split("\t")[0]) for x in lines], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(data.split("test")["label"]), labels[650:])
    # vocab: values seen >= 3 times in the training lines, id = 1 + rank in the sorted vocab
    column = [x.split("\t")[14] for x in lines[:600]]
    values, counts = np.unique([v for v in column if v], return_counts=True)
    kept = sorted(int(v, 16) for v, c in zip(values, counts) if c >= 3)
    vocab = np.load(tmp_path / "a" / "vocab" / "C1.npy")
    assert vocab.tolist() == kept
    assert data.schema.sparse_feature("C1").cardinality == len(kept) + 1
    expected = [kept.index(int(v, 16)) + 1 if v and int(v, 16) in kept else 0
                for v in (x.split("\t")[14] for x in lines[650:])]
    assert np.asarray(data.split("test")["C1"])[:, 0].tolist() == expected
    # reading in one block gives identical files
    big = criteo.prepare_criteo(tmp_path / "train.txt", tmp_path / "b",
                                {"chunk_mb": 64, "min_frequency": 3})
    assert big["splits"] == small["splits"]


def test_terabyte_layout_with_gzip_and_hashing(tmp_path):
    src = tmp_path / "tb"
    src.mkdir()
    for day in range(3):
        write_tsv(src / f"day_{day}.gz", 40, seed=day, opener=gzip.open)
    manifest = criteo.prepare_criteo(src, tmp_path / "out",
                                     {"categorical": "hash", "max_table_size": 1000})
    data = load_prepared(tmp_path / "out")
    assert manifest["layout"] == "terabyte"
    assert [data.split(s).rows for s in ("train", "val", "test")] == [80, 20, 20]
    assert all(f.cardinality == 1000 for f in data.schema.sparse)
    assert not (tmp_path / "out" / "vocab").exists() or not manifest["vocab"]["files"]


def test_dlrm_trains_on_prepared_criteo_through_mmf_run(tmp_path):
    """The whole path a user takes: prepare, then mmf_run with kbrec_prepared."""
    write_tsv(tmp_path / "train.txt", 700, seed=2)
    criteo.prepare_criteo(tmp_path, tmp_path / "out", {"min_frequency": 2})
    mmf_run = Path(sys.executable).parent / "mmf_run"
    result = subprocess.run(
        [str(mmf_run), "config=projects/kbrec/dlrm.yaml", "datasets=kbrec_prepared",
         f"dataset_config.kbrec_prepared.data_dir={tmp_path / 'out'}",
         f"env.save_dir={tmp_path / 'run'}", "training.max_updates=20",
         "training.evaluation_interval=10", "training.checkpoint_interval=10",
         "training.batch_size=64"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trained_updates"] == 20
    assert 0.0 <= metrics["test"]["auc"] <= 1.0 and "cold" not in metrics


def test_errors_are_clear_and_leave_no_output(tmp_path):
    with pytest.raises(DataInputError, match=r"no Criteo files; looked for train\.txt"):
        criteo.prepare_criteo(tmp_path, tmp_path / "out")
    (tmp_path / "train.txt").write_text("1\t2\n" * 50)
    with pytest.raises(DataInputError, match=r"lines: 50 of 50 rows are bad"):
        criteo.prepare_criteo(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]
    with pytest.raises(DataInputError, match=r"categorical: expected frequency or hash"):
        criteo.CriteoConfig.from_mapping({"categorical": "bloom"})
