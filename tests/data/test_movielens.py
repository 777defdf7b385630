import json
from pathlib import Path

import numpy as np
import pytest

from mmf_rec.ranking_metrics import sampled_candidates_metrics
from mmf_rec.data import interactions, movielens
from mmf_rec.data.prepared import load_prepared
from mmf_rec.data.report import DataInputError
from mmf_rec.schema import PAD_ID

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ML100K = SHARED / "ml-100k"
LOO = SHARED / "ml-100k-loo"
needs_ml100k = pytest.mark.skipif(not ML100K.is_dir(),
                                  reason=f"MovieLens 100K not found at {ML100K}")

GENRE_FLAGS = "|".join(["0"] * 19)


def _flags(*on):
    flags = ["0"] * 19
    for i in on:
        flags[i] = "1"
    return "|".join(flags)


def write_100k(root: Path, extra_data=(), extra_items=(), n_users=4, n_items=8, n_rated=6):
    """A small 100K layout: every user rates items 1..n_rated, in order, at distinct times."""
    root.mkdir(parents=True, exist_ok=True)
    items = [f"{i}|Movie {i} (19{80 + i})|01-Jan-19{80 + i}||http://x|{_flags(1 + i % 5)}"
             for i in range(1, n_items + 1)]
    items[0] = "1|Mis\xe9rables, Les (1995)|01-Jan-1995||http://x|" + _flags(8)
    (root / "u.item").write_bytes("\n".join([*items, *extra_items]).encode("latin-1") + b"\n")
    users = [f"{u}|{20 + u}|{'MF'[u % 2]}|writer|{10000 + u}" for u in range(1, n_users + 1)]
    (root / "u.user").write_text("\n".join(users) + "\n")
    rng = np.random.default_rng(0)
    lines = []
    t = 880000000
    for u in range(1, n_users + 1):
        for i in range(1, n_rated + 1):
            t += 10
            lines.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{t}")
    (root / "u.data").write_bytes(("\n".join([*lines, *extra_data]) + "\n").encode("latin-1"))
    return root


def test_small_100k_layout_leave_last_out(tmp_path):
    src = write_100k(tmp_path / "src")
    manifest = movielens.prepare_movielens(src, tmp_path / "out", {"eval_negatives": 2})
    data = load_prepared(tmp_path / "out")
    assert manifest["layout"] == "100k" and data.split_names == ["train", "val", "test"]
    # 4 users x 6 rated items; one test and one val item per user; up to 4
    # negatives per positive, among the items that exist at the row's time
    train = data.split("train")
    sampled = np.asarray(train["sampled"])
    assert (~sampled).sum() == 4 * 4 and np.all(np.asarray(train["label"])[~sampled] == 1)
    assert sampled.sum() + manifest["repaired"]["interactions.negatives_not_found"] == 4 * 4 * 4
    assert data.split("test").rows == data.split("val").rows == 4 * 3
    users, items = interactions.split_blocks(tmp_path / "out", "test")
    # items are rated in order: the test item is 6, the val item 5; the unseen are 7 and 8
    keys = np.asarray(data.items["key"]).astype(int)
    assert keys[items[:, 0]].tolist() == [6] * 4
    assert all(sorted(keys[row[1:]].tolist()) == [7, 8] for row in items)
    _, val_items = interactions.split_blocks(tmp_path / "out", "val")
    assert keys[val_items[:, 0]].tolist() == [5] * 4
    assert all(set(keys[row[1:]].tolist()) <= {6, 7, 8} for row in val_items)
    assert data.descriptions()[0] == "Misérables, Les (1995). Genres: Drama."
    assert data.schema.dense_names == ["age"]
    assert not any(manifest["dropped"].values())
    # items 5 and 6 are only ever val / test items, 7 and 8 never rated: no
    # observed training row, so they are cold (7 and 8 were not even negatives)
    assert np.asarray(data.items["is_cold"]).tolist() == [False] * 4 + [True] * 4


def test_leave_last_out_negatives_are_unseen_and_history_is_earlier(tmp_path):
    src = write_100k(tmp_path / "src", n_users=3, n_items=30, n_rated=19)
    movielens.prepare_movielens(src, tmp_path / "out", {"eval_negatives": 5})
    data = load_prepared(tmp_path / "out")
    users, items = interactions.split_blocks(tmp_path / "out", "test")
    user0 = int(np.flatnonzero(users == 0)[0])
    assert set(items[user0, 1:].tolist()) <= set(range(19, 30))  # unseen by user 1
    assert len(set(items[user0, 1:].tolist())) == 5  # without replacement
    test = data.split("test")
    history = np.asarray(test["history"])[0]
    # user 1's test item is 19 (item id 18); the history is its 5 previous items, newest first
    assert np.asarray(test["item_id"])[0, 0] == 18
    assert history.tolist() == [17, 16, 15, 14, 13]
    train = data.split("train")
    for row in range(0, train.rows, 97):
        h = np.asarray(train["history"])[row]
        assert np.asarray(train["item_id"])[row, 0] not in h[h != PAD_ID] or \
            np.asarray(train["label"])[row] == 0


def test_bad_lines_are_counted_with_line_numbers(tmp_path):
    extra = ["1\t2\t3", "x\t1\t4\t880000001", "1\t1\t9\t880000001",
             "99\t1\t4\t880000001", "1\t77\t4\t880000001", "2\t3\t4\t-5"]
    src = write_100k(tmp_path / "src", extra_data=extra,
                     extra_items=["3|Duplicate (1999)|||x|" + GENRE_FLAGS, "bad|row"])
    first = (src / "u.data").read_bytes().split(b"\n")[0]
    raw = (src / "u.data").read_bytes() + first + b"\n1\t2\t\xff\xfe\t880000002\n"
    (src / "u.data").write_bytes(raw)
    manifest = movielens.prepare_movielens(src, tmp_path / "out",
                                           {"eval_negatives": 2, "max_bad_fraction": 0.5})
    dropped = manifest["dropped"]
    assert dropped["ratings.wrong_field_count"] == 1
    assert dropped["ratings.bad_number"] == 1
    assert dropped["ratings.rating_out_of_range"] == 1
    assert dropped["ratings.timestamp_out_of_range"] == 1
    assert dropped["ratings.unknown_user"] == 1
    assert dropped["ratings.unknown_movie"] == 1
    assert dropped["ratings.duplicate_row"] == 1
    assert dropped["ratings.bad_encoding"] == 1
    assert dropped["movies.duplicate_id"] == 1 and dropped["movies.wrong_field_count"] == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["examples"]["ratings.wrong_field_count"] == ["u.data:25"]
    assert report["examples"]["ratings.duplicate_row"] == ["u.data:31"]
    assert report["examples"]["ratings.bad_encoding"] == ["u.data:32"]
    assert manifest["interactions"]["valid"] == 24


def test_policy_fail_stops_and_leaves_no_output(tmp_path):
    src = write_100k(tmp_path / "src", extra_data=["1\t2\t3"])
    with pytest.raises(DataInputError, match=r"ratings\.wrong_field_count: 1 rows.*u\.data:25"):
        movielens.prepare_movielens(src, tmp_path / "out", {"on_bad_rows": "fail"})
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_too_many_bad_rows_fail_even_when_skipping(tmp_path):
    src = write_100k(tmp_path / "src", extra_data=["1\t2\t3"] * 5)
    with pytest.raises(DataInputError, match=r"ratings: 5 of 29 rows are bad"):
        movielens.prepare_movielens(src, tmp_path / "out", {"max_bad_fraction": 0.05})
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_error_line_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        movielens.main(["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "source directory does not exist" in err and "Traceback" not in err


def test_1m_and_latest_layouts(tmp_path):
    one = tmp_path / "ml-1m"
    one.mkdir()
    (one / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's\n"
                                     "2::Caf\xe9 (2001)::Drama\n3::Heat (1995)::Action\n"
                                     .encode("latin-1"))
    (one / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (one / "ratings.dat").write_text("".join(
        f"{u}::{i}::{(u + i) % 5 + 1}::{978300000 + 10 * (3 * u + i)}\n"
        for u in (1, 2) for i in (1, 2, 3)))
    manifest = movielens.prepare_movielens(one, tmp_path / "out1",
                                           {"protocol": "time", "train_fraction": 0.5,
                                            "val_fraction": 0.2})
    data = load_prepared(tmp_path / "out1")
    assert manifest["layout"] == "1m" and manifest["protocol"]["labels"] == "rating"
    vocab = json.loads((tmp_path / "out1" / "vocab.json").read_text())
    assert set(vocab["occupation"][1:]) == {"K-12 student", "self-employed"}
    assert data.descriptions()[1] == "Café (2001). Genres: Drama."

    latest = tmp_path / "ml-latest"
    latest.mkdir()
    (latest / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story, The (1995)",'
                                       'Animation|Comedy\n2,Heat (1995),(no genres listed)\n')
    (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{3.5 + (u % 2)},{1000 + 10 * (2 * u + i)}\n" for u in range(1, 6)
        for i in (1, 2)))
    manifest = movielens.prepare_movielens(latest, tmp_path / "out2",
                                           {"protocol": "time", "train_fraction": 0.5,
                                            "val_fraction": 0.2})
    data = load_prepared(tmp_path / "out2")
    assert manifest["layout"] == "latest" and data.schema.dense_names == ["bias"]
    assert data.descriptions() == ["Toy Story, The (1995). Genres: Animation, Comedy.",
                                   "Heat (1995)."]


def test_bad_config_is_one_clear_error():
    with pytest.raises(DataInputError, match=r"unknown keys \['negatives'\]"):
        movielens.MovieLensConfig.from_mapping({"negatives": 3})
    with pytest.raises(DataInputError, match=r"protocol: expected one of"):
        movielens.MovieLensConfig.from_mapping({"protocol": "random"})


# -- the real MovieLens 100K ------------------------------------------------------
@pytest.fixture(scope="module")
def ml_loo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml") / "loo"
    assert movielens.main(["--src", str(ML100K), "--out", str(root)]) == 0
    return root


@needs_ml100k
def test_100k_leave_last_out_matches_the_fixed_candidate_lists(ml_loo):
    data = load_prepared(ml_loo)
    assert data.manifest["interactions"]["valid"] == 100_000
    assert not any(data.manifest["dropped"].values())
    sampled = np.asarray(data.split("train")["sampled"])
    assert (~sampled).sum() == 100_000 - 2 * 943
    not_found = data.manifest["repaired"].get("interactions.negatives_not_found", 0)
    assert sampled.sum() + not_found == (100_000 - 2 * 943) * 4 and not_found < 100
    if not LOO.is_dir():
        pytest.skip(f"{LOO} not found")
    item_key = np.asarray(data.items["key"]).astype(int)
    user_key = np.load(ml_loo / "users" / "key.npy").astype(int)
    for split in ("test", "val"):
        users, items = interactions.split_blocks(ml_loo, split)
        reference = np.loadtxt(LOO / f"{split}_negatives.tsv", dtype=np.int64)
        got = np.concatenate([user_key[users][:, None], item_key[items]], axis=1)
        np.testing.assert_array_equal(got, reference)


@needs_ml100k
def test_100k_popularity_baseline(ml_loo):
    metrics = sampled_candidates_metrics(interactions.popularity_scores(ml_loo, "test"))
    assert metrics["users"] == 943
    assert 0.25 < metrics["hr@10"] < 0.45 and 0.1 < metrics["ndcg@10"] < metrics["hr@10"]


@needs_ml100k
def test_100k_cold_start_split_keeps_cold_items_out_of_training(tmp_path):
    movielens.prepare_movielens(ML100K, tmp_path / "cold", {"protocol": "cold_start"})
    data = load_prepared(tmp_path / "cold")
    is_cold = np.asarray(data.items["is_cold"])
    assert data.manifest["protocol"]["cold_item_reasons"]["held_out"] > 100
    for name in ("train", "val", "test"):
        table = data.split(name)
        assert not is_cold[np.asarray(table["item_id"])[:, 0]].any()
        h = np.asarray(table["history"])
        assert not is_cold[h[h != PAD_ID]].any()
    cold = data.split("cold")
    assert is_cold[np.asarray(cold["item_id"])[:, 0]].all()
    # only evaluation-period rows of cold items are scored, never older ones
    test_start = data.manifest["protocol"]["test_start"]
    assert np.asarray(cold["timestamp"]).min() >= test_start
    assert data.manifest["protocol"]["labels"] == "rating"


def test_ranking_metrics_count_ties_against_the_model():
    scores = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 2.0]])
    m = sampled_candidates_metrics(scores, k=1)
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
