import collections
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mmf_rec.data import hm
from mmf_rec.data.prepared import PreparedDataError, load_prepared
from mmf_rec.data.prepared_layout import CLICK_PROB_COLUMN
from mmf_rec.data.vocab import UNKNOWN
from mmf_rec.schema import PAD_ID

HM_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hm_sample"
pytestmark = pytest.mark.skipif(
    not HM_SAMPLE.is_dir(), reason=f"H&M sample data not found at {HM_SAMPLE}")
K = 3  # negatives per positive, passed on the command line


def _raw(table):
    return pq.read_table(HM_SAMPLE / f"{table}_sample.parquet")


@pytest.fixture(scope="module")
def hm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hm") / "prepared"
    assert hm.main(["--src", str(HM_SAMPLE), "--out", str(root),
                    "--negatives-per-positive", str(K)]) == 0
    return root


@pytest.fixture(scope="module")
def data(hm_dir):
    return load_prepared(hm_dir)


@pytest.fixture(scope="module")
def rows(data):
    """Every split's rows with raw ids and dates, keyed by split."""
    article = np.asarray(data.items["article_id"])
    customer = np.load(data.root / "users" / "customer_id.npy").astype(str)
    out = {}
    for name in data.split_names:
        t = data.split(name)
        out[name] = {
            "user": np.asarray(t["user_id"])[:, 0],
            "item": np.asarray(t["item_id"])[:, 0],
            "customer": customer[np.asarray(t["user_id"])[:, 0]],
            "article": article[np.asarray(t["item_id"])[:, 0]],
            "day": np.asarray(t["timestamp"]) // 86400,
            "label": np.asarray(t["label"]),
            "history": np.asarray(t["history"]),
            "sampled": np.asarray(t["sampled"]),
        }
    return out


def _raw_purchases():
    t = _raw("transactions")
    day = pc.cast(pc.cast(pc.strptime(t["t_dat"], "%Y-%m-%d", "s"), pa.date32()), pa.int32())
    return list(zip(t["customer_id"].to_pylist(), t["article_id"].to_pylist(),
                    day.to_pylist()))


def test_sample_is_valid_prepared_data_without_a_click_model(data):
    assert data.name == "hm" and data.split_names == ["train", "val", "test", "cold"]
    assert data.items.rows == 1000 == data.schema.sparse_feature("item_id").cardinality
    assert data.schema.sparse_feature("user_id").cardinality == 4946
    assert data.schema.dense_names == ["age", "age_missing", "fn", "active"]
    assert data.schema.sparse_feature("history").max_len == 5
    assert data.manifest["oracle_auc"] is None
    for name in data.split_names:
        assert CLICK_PROB_COLUMN not in data.split(name)
    assert not any(data.manifest["dropped"].values())


def test_every_valid_purchase_is_one_positive_with_k_negatives(data, rows):
    raw = collections.Counter(_raw_purchases())
    manifest = data.manifest
    assert manifest["transactions"]["valid"] == sum(raw.values()) == 5000
    got = collections.Counter()
    for name, r in rows.items():
        positive = r["label"] == 1
        assert positive.sum() == manifest["positives"][name]
        # negatives come only from items on sale by that day: early rows find fewer
        assert (~positive).sum() == manifest["negatives"][name] <= K * positive.sum()
        assert np.array_equal(r["sampled"], ~positive)
        got.update(zip(r["customer"][positive], r["article"][positive],
                       r["day"][positive].tolist()))
    assert (sum(manifest["negatives"].values()) + manifest["dropped"]["negatives.no_candidate"]
            == K * sum(manifest["positives"].values()))
    # Missing: the held-out items' training-period purchases and cold items'
    # validation-period purchases, counted by reason.
    missing = raw - got
    assert sum(missing.values()) == sum(manifest["protocol"]["rows_left_out"].values())
    assert not got - raw


def test_no_negative_was_bought_by_then_or_sold_later(rows):
    first_day = {}
    bought_by = {}
    for c, a, d in _raw_purchases():
        first_day[a] = min(first_day.get(a, d), d)
        bought_by[(c, a)] = min(bought_by.get((c, a), d), d)
    for name, r in rows.items():
        negative = np.flatnonzero(r["label"] == 0)
        assert negative.size, name
        for at in negative:
            key = (r["customer"][at], r["article"][at])
            day = int(r["day"][at])
            assert key not in bought_by or bought_by[key] > day, (name, key)
            assert first_day[r["article"][at]] <= day, (name, key)
        # Each negative follows its positive, sharing user, day and history.
        starts = np.flatnonzero(r["label"] == 1)
        owner = starts[np.searchsorted(starts, negative, side="right") - 1]
        for column in ("user", "day"):
            assert np.array_equal(r[column][negative], r[column][owner]), (name, column)


def test_splits_follow_time(data, rows):
    periods = data.manifest["periods"]
    val_start = np.datetime64(periods["val_start"]).astype(int)
    test_start = np.datetime64(periods["test_start"]).astype(int)
    for r in rows.values():
        assert np.all(np.diff(r["day"]) >= 0)
    assert rows["train"]["day"].max() < val_start <= rows["val"]["day"].min()
    assert rows["val"]["day"].max() < test_start
    assert rows["test"]["day"].min() >= test_start and rows["cold"]["day"].min() >= test_start


def test_cold_items_are_only_in_the_cold_split(data, rows):
    is_cold = np.asarray(data.items["is_cold"])
    reasons = data.manifest["cold_item_reasons"]
    assert is_cold.sum() == data.manifest["cold_items"] == sum(reasons.values())
    assert reasons["no_training_purchase"] > 0 and reasons["held_out"] > 0
    # cold = no observed training row
    trained = np.zeros(len(is_cold), bool)
    trained[rows["train"]["item"][~rows["train"]["sampled"]]] = True
    assert np.array_equal(is_cold, ~trained)
    assert np.all(is_cold[rows["cold"]["item"]])
    for name, r in rows.items():
        history = r["history"][r["history"] != PAD_ID]
        assert not np.any(is_cold[history]), f"cold item in {name} history"
        if name != "cold":
            assert not np.any(is_cold[r["item"]]), f"cold item in {name}"


def test_history_holds_earlier_days_only(data, rows):
    earlier = collections.defaultdict(list)
    for customer, article, day in _raw_purchases():
        earlier[customer].append((day, article))
    item_of = {a: i for i, a in enumerate(np.asarray(data.items["article_id"]).tolist())}
    is_cold = np.asarray(data.items["is_cold"])
    seen = 0
    for r in rows.values():
        for customer, day, history in zip(r["customer"], r["day"], r["history"]):
            before = {item_of[a] for d, a in earlier[customer] if d < day}
            before = {i for i in before if not is_cold[i]}
            kept = set(history[history != PAD_ID].tolist())
            assert kept <= before and len(kept) == min(len(before), len(history))
            seen += bool(kept)
    assert seen > 0  # the sample has repeat customers


def test_descriptions_name_the_article_and_its_colour(data):
    articles = _raw("articles").to_pylist()
    by_id = {a["article_id"]: a for a in articles}
    texts = data.descriptions()
    assert len(texts) == data.items.rows
    for text, article_id in zip(texts, np.asarray(data.items["article_id"]).tolist()):
        article = by_id[article_id]
        assert text.startswith(article["prod_name"])
        assert article["colour_group_name"] in text
        if article["detail_desc"]:
            assert text.endswith(article["detail_desc"])


def test_vocabularies_map_ids_back_to_values(data):
    vocab = json.loads((data.root / "vocab.json").read_text())
    articles = {a["article_id"]: a for a in _raw("articles").to_pylist()}
    ids = np.asarray(data.items["colour_group"])[:, 0]
    for item, article_id in enumerate(np.asarray(data.items["article_id"]).tolist()):
        assert vocab["colour_group"][ids[item]] == articles[article_id]["colour_group_name"]
    for f in data.schema.sparse:
        if f.name not in ("user_id", "item_id", "history"):
            assert f.cardinality == len(vocab[f.name]) and vocab[f.name][0] == UNKNOWN


def test_photos_are_copied_by_item_and_gaps_are_recorded(data, hm_dir):
    photos = {int(p.stem): p for p in (HM_SAMPLE / "images").glob("*.jpg")}
    article = np.asarray(data.items["article_id"])
    has_image = np.asarray(data.items["has_image"])
    matching = [a for a in photos if a in set(article.tolist())]
    assert len(matching) == has_image.sum() == 100
    assert len(os.listdir(hm_dir / "items" / "images")) == 100
    entry = data.manifest["knowledge"]["image"]
    assert entry["images_may_be_missing"] and entry["missing"] == 900
    for item in range(data.items.rows):
        assert data.image_path(item).is_file() == has_image[item]
    item = int(np.flatnonzero(has_image)[0])
    assert data.image_path(item).read_bytes() == photos[int(article[item])].read_bytes()


def test_images_removed_after_preparing_are_detected(hm_dir, tmp_path):
    copy = shutil.copytree(hm_dir, tmp_path / "copy")
    os.remove(next((copy / "items" / "images").iterdir()))
    with pytest.raises(PreparedDataError,
                       match=r"901 of 1000 item images are missing, but the manifest records 900"):
        load_prepared(copy)


def _source_copy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for table in ("articles", "customers", "transactions"):
        shutil.copy(HM_SAMPLE / f"{table}_sample.parquet", src)
    return src


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    src = _source_copy(tmp_path)
    pq.write_table(_raw("articles").drop_columns(["colour_group_name"]),
                   src / "articles_sample.parquet")
    with pytest.raises(hm.HMDataError,
                       match=r"articles_sample\.parquet: column 'colour_group_name' is missing"):
        hm.prepare_hm(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_file_is_named(tmp_path):
    src = _source_copy(tmp_path)
    os.remove(src / "customers_sample.parquet")
    with pytest.raises(hm.HMDataError, match=r"no customers file; looked for customers\.csv"):
        hm.prepare_hm(src, tmp_path / "out")


def test_an_unknown_article_is_counted_not_silently_dropped(tmp_path):
    src = _source_copy(tmp_path)
    t = _raw("transactions")
    extra = pa.table({"t_dat": ["2020-01-02"], "customer_id": [t["customer_id"][0].as_py()],
                      "article_id": [1], "price": [0.01]}, schema=t.schema)
    pq.write_table(pa.concat_tables([t, extra]), src / "transactions_sample.parquet")
    manifest = hm.prepare_hm(src, tmp_path / "out", {"negatives_per_positive": 1})
    assert manifest["dropped"]["transactions.unknown_article"] == 1
    assert manifest["transactions"]["valid"] == 5000
    assert "image" not in manifest["knowledge"]  # no images/ folder: no image field
    load_prepared(tmp_path / "out")


def test_photos_can_be_linked_instead_of_copied(tmp_path):
    src = _source_copy(tmp_path)
    os.symlink(HM_SAMPLE / "images", src / "images")
    hm.prepare_hm(src, tmp_path / "out", {"negatives_per_positive": 1, "images": "symlink"})
    data = load_prepared(tmp_path / "out")
    assert data.manifest["knowledge"]["image"]["mode"] == "symlink"
    item = int(np.flatnonzero(np.asarray(data.items["has_image"]))[0])
    path = data.image_path(item)
    article = int(np.asarray(data.items["article_id"])[item])
    assert path.is_symlink() and path.resolve() == (HM_SAMPLE / "images" /
                                                   f"{article:010d}.jpg").resolve()


def _kaggle_csv_layout(tmp_path):
    """The sample as Kaggle publishes the full data: CSV, 10-digit article ids,
    images/<first 3 digits>/ folders."""
    src = tmp_path / "kaggle"
    src.mkdir()
    articles = _raw("articles")
    padded = pa.array([f"{a:010d}" for a in articles["article_id"].to_pylist()])
    pacsv.write_csv(articles.set_column(0, "article_id", padded), src / "articles.csv")
    pacsv.write_csv(_raw("customers"), src / "customers.csv")
    pacsv.write_csv(_raw("transactions"), src / "transactions_train.csv")
    for photo in sorted((HM_SAMPLE / "images").glob("*.jpg"))[:5]:
        (src / "images" / photo.name[:3]).mkdir(parents=True, exist_ok=True)
        os.symlink(photo, src / "images" / photo.name[:3] / photo.name)
    return src


def test_kaggle_csv_layout_gives_the_same_columns_as_the_parquet_sample(tmp_path, data):
    src = _kaggle_csv_layout(tmp_path)
    manifest = hm.prepare_hm(src, tmp_path / "out", {"negatives_per_positive": K})
    again = load_prepared(tmp_path / "out")
    for name in data.split_names:
        assert again.manifest["splits"][name] == data.manifest["splits"][name], name
    for column in ("article_id", "colour_group", "is_cold"):
        assert manifest["items"]["files"][column] == data.manifest["items"]["files"][column]
    assert again.descriptions() == data.descriptions()
    assert manifest["knowledge"]["image"]["present"] == 5
    assert np.asarray(again.items["has_image"]).sum() == 5


def test_an_unparseable_date_names_file_row_and_column(tmp_path):
    src = _kaggle_csv_layout(tmp_path)
    path = src / "transactions_train.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[0], '"2020-13-45"', 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(hm.HMDataError, match=r"transactions_train\.csv: row 3 \(line 4\), "
                                             r"column 't_dat': cannot parse '2020-13-45'"):
        hm.prepare_hm(src, tmp_path / "out")


# -- the generic MMF builder -----------------------------------------------------
def _builder_config(data_dir, **overrides):
    from omegaconf import OmegaConf

    from mmf_rec.data import builder

    default = OmegaConf.load(builder.KBRecPreparedBuilder.config_path())
    full = OmegaConf.merge(default, {"dataset_config": {"kbrec_prepared": {
        "data_dir": data_dir, **overrides}}})
    return OmegaConf.select(full, "dataset_config.kbrec_prepared")


def test_mmf_builds_kbrec_prepared_on_the_hm_sample_and_reads_a_batch(hm_dir, data):
    import mmf_rec.plugin

    mmf_rec.plugin.apply()
    import torch
    from mmf.common.registry import registry
    from mmf.utils.build import build_dataset

    registry.register("current_device", torch.device("cpu"))
    train = build_dataset("kbrec_prepared", _builder_config(str(hm_dir)), "train")
    assert train.split == "train" and len(train) == data.split("train").rows
    assert registry.get("kbrec_prepared_schema") == data.schema
    assert registry.get("kbrec_prepared_root") == str(hm_dir)
    batch = train.__getitems__(list(range(K + 1)))
    assert batch["targets"][:, 0].tolist() == [1.0] + [0.0] * K
    assert batch["dense"].shape == (K + 1, 4) and "click_prob" not in batch
    assert batch["sparse_history"].shape == (K + 1, 5)
    np.testing.assert_array_equal(batch["item_index"].numpy(),
                                  np.asarray(data.split("train")["item_id"])[: K + 1, 0])
    assert train.oracle_auc is None
    test = build_dataset("kbrec_prepared", _builder_config(str(hm_dir)), "test")
    assert test.split == "test" and test.extra_eval_splits == ("cold",)


def test_kbrec_prepared_without_data_dir_says_how_to_make_one():
    import mmf_rec.plugin

    mmf_rec.plugin.apply()
    from mmf.utils.build import build_dataset

    from mmf_rec.data import builder

    with pytest.raises(builder.KBRecConfigError,
                       match=r"kbrec_prepared\.data_dir: required.*python -m mmf_rec\.data\.hm"):
        build_dataset("kbrec_prepared", _builder_config(None), "train")
