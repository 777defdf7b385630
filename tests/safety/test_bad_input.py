"""Bad input is counted and reported, never silently turned into bad data."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from safety_files import INCOMES, write_shop

from mmf_rec.data import custom, movielens
from mmf_rec.data.prepared import load_prepared


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_an_extreme_dense_value_is_clipped_and_counted(tmp_path):
    manifest = custom.prepare_from_yaml(write_shop(tmp_path / "src"), tmp_path / "out")
    written = strict_json(tmp_path / "out" / "manifest.json")  # no Infinity / NaN
    stats = written["dense_stats"]["income"]
    assert stats["clipped"] == 1 and 1000 < stats["std"] < 1e6
    assert manifest["repaired"]["users.income_clipped"] == 1
    data = load_prepared(tmp_path / "out")
    income = np.asarray(data.split("train")["dense"])[:, data.schema.dense_names.index("income")]
    assert np.all(np.isfinite(income))
    # the other users keep distinct values: the feature still tells them apart
    assert len(np.unique(np.round(income, 3))) == len(INCOMES)


def test_bad_row_line_numbers_count_blank_lines(tmp_path):
    # clicks.csv: header + 48 rows (lines 1-49), then a blank line 50
    tail = ["", "u0,i0", "u1,nope,1,1600009999"]  # line 51: 2 fields; line 52: unknown item
    manifest = custom.prepare_from_yaml(write_shop(tmp_path / "src", tail), tmp_path / "out")
    report = strict_json(tmp_path / "out" / "report.json")
    assert manifest["dropped"]["interactions.wrong_field_count"] == 1
    assert report["examples"]["interactions.wrong_field_count"] == ["clicks.csv:51"]
    assert report["examples"]["interactions.unknown_item"] == ["clicks.csv:52"]


def test_empty_and_truncated_images_are_counted_as_unreadable(tmp_path):
    whole = (tmp_path / "whole.png")
    Image.new("RGB", (16, 16), (1, 2, 3)).save(whole)
    photos = {"p1.png": b"", "p3.png": whole.read_bytes()[:40]}
    manifest = custom.prepare_from_yaml(write_shop(tmp_path / "src", photos=photos),
                                        tmp_path / "out")
    assert manifest["repaired"]["items.unreadable_image"] == 2
    assert manifest["images"] == {"present": 4, "missing": 2}
    data = load_prepared(tmp_path / "out")
    keys = np.asarray(data.items["key"]).astype(str).tolist()
    has_image = np.asarray(data.items["has_image"])
    assert [keys[i] for i in np.flatnonzero(~has_image)] == ["i1", "i3"]


def write_100k(root: Path, title: bytes, data_prefix: bytes = b"") -> Path:
    """A small 100K layout: 4 users rate items 1..6; item 1's title is ``title``."""
    root.mkdir(parents=True)
    flags = "|".join(["0"] * 8 + ["1"] + ["0"] * 10).encode()
    items = [b"1|" + title + b"|01-Jan-1995||http://x|" + flags]
    items += [f"{i}|Movie {i} (1990)|01-Jan-1990||http://x|".encode() + flags
              for i in range(2, 7)]
    (root / "u.item").write_bytes(b"\n".join(items) + b"\n")
    (root / "u.user").write_text("".join(f"{u}|{20 + u}|M|writer|1000{u}\n"
                                         for u in range(1, 5)))
    lines = [f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + 10 * (6 * u + i)}"
             for u in range(1, 5) for i in range(1, 7)]
    (root / "u.data").write_bytes(data_prefix + "\n".join(lines).encode() + b"\n")
    return root


def test_a_byte_order_mark_does_not_cost_the_first_rating(tmp_path):
    src = write_100k(tmp_path / "src", b"Movie 1 (1990)", data_prefix=b"\xef\xbb\xbf")
    manifest = movielens.prepare_movielens(src, tmp_path / "out", {"eval_negatives": 2})
    assert not any(manifest["dropped"].values()), manifest["dropped"]
    assert manifest["interactions"]["valid"] == 24


def test_a_utf8_title_in_a_latin1_file_is_decoded_and_counted(tmp_path):
    src = write_100k(tmp_path / "src", "Störy (1995)".encode("utf-8"))
    manifest = movielens.prepare_movielens(src, tmp_path / "out", {"eval_negatives": 2})
    data = load_prepared(tmp_path / "out")
    assert data.descriptions()[0].startswith("Störy (1995).")
    assert manifest["repaired"]["movies.redecoded"] == 1
    report = strict_json(tmp_path / "out" / "report.json")
    assert report["examples"]["movies.redecoded"] == ["u.item:1"]
