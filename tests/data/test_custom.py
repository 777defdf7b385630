import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmf_rec.data import custom
from mmf_rec.data.prepared import load_prepared
from mmf_rec.data.report import DataInputError

REPO = Path(__file__).resolve().parents[2]
ML100K = REPO.parent / "shared" / "data" / "ml-100k"

DATA_YAML = """
name: shop
items:
  path: items.csv
  id: item_id
  categorical: [category]
  text: [title, description]
  image: photo
  images_root: photos
users:
  path: users.csv
  id: user_id
  dense: [age]
  categorical: [region]
interactions:
  path: clicks.csv
  user: user_id
  item: item_id
  label: clicked
  timestamp: ts
split: {protocol: time, train_fraction: 0.6, val_fraction: 0.2}
bad_rows: {policy: skip, max_bad_fraction: 0.2}
"""


def write_shop(root: Path, extra_clicks=(), n_items=6, n_users=5):
    root.mkdir(parents=True, exist_ok=True)
    (root / "photos").mkdir()
    items = ["item_id,category,title,description,photo"]
    for i in range(n_items):
        photo = f"p{i}.png" if i % 2 == 0 else ""
        items.append(f"i{i},cat{i % 2},Thing {i},\"A nice, red thing\",{photo}")
        if photo:
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "photos" / photo)
    items.append("i9,cat0,,,")  # no text, no photo
    (root / "items.csv").write_text("\n".join(items) + "\n")
    users = ["user_id,age,region"] + [f"u{u},{20 + u if u != 2 else 'n/a'},r{u % 2}"
                                      for u in range(n_users)]
    (root / "users.csv").write_text("\n".join(users) + "\n")
    clicks = ["user_id,item_id,clicked,ts"]
    t = 1_600_000_000
    for u in range(n_users):
        for i in range(n_items):
            t += 60
            clicks.append(f"u{u},i{i},{(u + i) % 2},{t}")
    (root / "clicks.csv").write_text("\n".join([*clicks, *extra_clicks]) + "\n")
    (root / "data.yaml").write_text(DATA_YAML)
    return root / "data.yaml"


def test_custom_tables_become_prepared_data(tmp_path):
    config = write_shop(tmp_path / "src")
    manifest = custom.prepare_from_yaml(config, tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.name == "shop" and manifest["protocol"]["labels"] == "label"
    assert data.items.rows == 7 and data.schema.sparse_feature("user_id").cardinality == 5
    assert data.schema.dense_names == ["age", "age_missing"]
    assert manifest["repaired"]["users.age_unparsable"] == 1
    assert manifest["repaired"]["items.missing_image"] == 4
    assert manifest["repaired"]["items.empty_text"] == 1
    keys = np.asarray(data.items["key"]).astype(str).tolist()
    assert data.descriptions()[keys.index("i1")] == "Thing 1. A nice, red thing."
    assert data.descriptions()[keys.index("i9")] == ""
    has_image = np.asarray(data.items["has_image"])
    assert [keys[i] for i in np.flatnonzero(has_image)] == ["i0", "i2", "i4"]
    assert data.image_path(keys.index("i2")).read_bytes() == \
        (tmp_path / "src" / "photos" / "p2.png").read_bytes()
    rows = sum(data.split(s).rows for s in data.split_names)
    assert rows == 30 and not any(manifest["dropped"].values())
    train_t = np.asarray(data.split("train")["timestamp"])
    assert train_t.max() < np.asarray(data.split("val")["timestamp"]).min()


def test_bad_interactions_are_counted_by_reason(tmp_path):
    extra = ["u0,i0,1", "u99,i0,1,1600000001", "u0,i77,1,1600000001", "u0,i0,yes,1600000001",
             "u0,i0,3,1600000001", "u0,i1,1,yesterday", "u1,i1,1,2020-09-13T12:26:40",
             "u1,i1,1,2020-09-13T12:26:40"]
    config = write_shop(tmp_path / "src", extra_clicks=extra)
    manifest = custom.prepare_from_yaml(config, tmp_path / "out")
    assert manifest["dropped"] == {
        "interactions.wrong_field_count": 1, "interactions.unknown_user": 1,
        "interactions.unknown_item": 1, "interactions.bad_label": 1,
        "interactions.label_out_of_range": 1, "interactions.bad_timestamp": 1,
        "interactions.duplicate_row": 1}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["examples"]["interactions.wrong_field_count"] == ["clicks.csv:32"]
    assert report["examples"]["interactions.unknown_user"] == ["clicks.csv:33"]
    assert report["examples"]["interactions.duplicate_row"] == ["clicks.csv:39"]
    assert manifest["interactions"]["valid"] == 31  # the ISO-dated row is kept once


def test_failed_prepare_leaves_nothing(tmp_path):
    config = write_shop(tmp_path / "src", extra_clicks=["u99,i0,1,1"] * 20)
    with pytest.raises(DataInputError, match=r"interactions: 20 of 50 rows are bad"):
        custom.prepare_from_yaml(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_yaml_mistakes_are_named(tmp_path):
    config = write_shop(tmp_path / "src")
    text = config.read_text()
    config.write_text(text.replace("  id: item_id\n", "  id: sku\n", 1))
    with pytest.raises(DataInputError, match=r"items\.csv: column 'sku' is missing"):
        custom.prepare_from_yaml(config, tmp_path / "out")
    config.write_text(text + "colour: red\n")
    with pytest.raises(DataInputError, match=r"unknown keys \['colour'\]"):
        custom.prepare_from_yaml(config, tmp_path / "out")
    config.write_text(text.replace("protocol: time", "protocol: shuffle"))
    with pytest.raises(DataInputError, match=r"split\.protocol: expected one of"):
        custom.prepare_from_yaml(config, tmp_path / "out")
    config.write_text("format: netflix\n")
    with pytest.raises(DataInputError, match=r"format: expected one of"):
        custom.prepare_from_yaml(config, tmp_path / "out")


def test_existing_output_is_refused(tmp_path):
    config = write_shop(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataInputError, match=r"refusing to prepare into an existing"):
        custom.prepare_from_yaml(config, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_prepare_tool_reports_user_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "prepare.py"), "--config",
                             str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "missing.yaml: data yaml does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not ML100K.is_dir(), reason=f"{ML100K} not found")
def test_format_shortcut_dispatches_to_the_movielens_reader(tmp_path):
    config = tmp_path / "ml.yaml"
    config.write_text(f"format: movielens\nsrc: {ML100K}\nconfig: {{protocol: time}}\n")
    manifest = custom.prepare_from_yaml(config, tmp_path / "out")
    assert manifest["name"] == "movielens" and manifest["protocol"]["name"] == "time"
    assert manifest["interactions"]["valid"] == 100_000
