"""MovieLens (GroupLens) -> the prepared format.

Layouts, found by file name in ``--src``:

* 100K: ``u.data`` (tab: user, item, rating, unix time), ``u.item`` (Latin-1,
  ``|``: id, title, release date, video date, URL, 19 genre flags in
  ``u.genre`` order) and ``u.user`` (``|``: id, age, gender, occupation, zip);
* 1M / 10M: ``ratings.dat``, ``movies.dat`` (``id::title::genre|genre``,
  Latin-1) and ``users.dat`` (``id::gender::age code::occupation code::zip``;
  10M has none);
* latest / 20M / 25M: ``ratings.csv`` and ``movies.csv`` with headers (UTF-8,
  quoted titles); no user file.

Items get ``genre`` (the first listed) and ``decade`` columns and the text
"<title>. Genres: <genres>." (the model's tokenizer reads all of them);
users get gender, occupation, an age bucket and a zip prefix, plus age as a
dense feature. Labels, splits and negatives follow ``SplitConfig`` (see
``splits.py``; by default leave-last-out with 99 sampled negatives,
the NCF protocol, which reproduces ``../shared/data/ml-100k-loo``).

Every line that cannot be used is counted by reason with its line number
(``report.json`` and the manifest's ``dropped``): wrong field counts,
unparsable numbers, undecodable bytes, out-of-range ratings or timestamps,
duplicate rows, ratings of unknown users or movies. ``bad_rows.policy``
decides between failing at the first one and skipping up to
``max_bad_fraction`` of a file.
"""

import logging
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from mmf_rec.data.cli import reader_main
from mmf_rec.data.config import as_config, config_from_mapping, requirement
from mmf_rec.data.interactions import Catalogue, Interactions, Population, build_prepared
from mmf_rec.data.movielens_lines import parse_float, parse_int, read_rows
from mmf_rec.data.report import DataInputError, RowReport, atomic_output, lines_where
from mmf_rec.data.splits import SplitConfig
from mmf_rec.data.vocab import buckets, encode

logger = logging.getLogger(__name__)

NAME = "movielens"
PREPARER_VERSION = 1
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# users.dat occupation codes (the 1M README's list).
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # the 1M age codes' boundaries
NO_GENRES = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})\)\s*$")
LAYOUTS = {
    "100k": {"ratings": "u.data", "movies": "u.item", "users": "u.user"},
    "1m": {"ratings": "ratings.dat", "movies": "movies.dat", "users": "users.dat"},
    "latest": {"ratings": "ratings.csv", "movies": "movies.csv", "users": None},
}


class MovieLensDataError(DataInputError):
    """The MovieLens input is missing or malformed, or the config is wrong."""


@dataclass(frozen=True)
class MovieLensConfig(SplitConfig):
    layout: str = "auto"  # auto | 100k | 1m | latest
    # auto: Latin-1 for 100K/1M movie files (as GroupLens wrote them), else UTF-8
    encoding: str = "auto"
    min_rating: float = 0.5
    max_rating: float = 5.0
    min_timestamp: int = 0
    max_timestamp: int = 4_102_444_800  # 2100-01-01
    zip_prefix_len: int = 2
    on_bad_rows: str = "skip"  # skip | fail
    max_bad_fraction: float = 0.01

    @classmethod
    def from_mapping(cls, data, source: str = "movielens config") -> "MovieLensConfig":
        return config_from_mapping(cls, data, source, MovieLensDataError,
                                   ignore=("preparer_version",))

    def validate(self, source: str = "movielens config") -> None:
        super().validate(source)
        need = requirement(self, source, MovieLensDataError)
        need(self.layout in ("auto", *LAYOUTS), "layout", f"auto or one of {list(LAYOUTS)}")
        need(self.encoding in ("auto", "utf-8", "latin-1"), "encoding",
             "auto, utf-8 or latin-1")
        need(self.min_rating <= self.max_rating, "max_rating", ">= min_rating")
        need(self.min_timestamp < self.max_timestamp, "max_timestamp", "> min_timestamp")
        need(self.zip_prefix_len >= 1, "zip_prefix_len", ">= 1")
        need(self.on_bad_rows in ("skip", "fail"), "on_bad_rows", "skip or fail")
        need(0.0 <= self.max_bad_fraction <= 1.0, "max_bad_fraction", "in [0, 1]")

    def split_config(self) -> SplitConfig:
        return SplitConfig(**{f.name: getattr(self, f.name) for f in fields(SplitConfig)})

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "preparer_version": PREPARER_VERSION}


# -- files and layouts -----------------------------------------------------
def find_layout(src: Path, layout: str) -> Tuple[str, Dict[str, Optional[Path]]]:
    candidates = [layout] if layout != "auto" else list(LAYOUTS)
    for name in candidates:
        files = LAYOUTS[name]
        if (src / files["ratings"]).is_file():
            paths = {}
            for table, file in files.items():
                path = src / file if file else None
                if table == "movies" and not path.is_file():
                    raise MovieLensDataError(f"{src}: {file} is missing; the {name} layout "
                                             f"needs it next to {files['ratings']}")
                paths[table] = path if path is not None and path.is_file() else None
            return name, paths
    looked = ", ".join(LAYOUTS[n]["ratings"] for n in candidates)
    raise MovieLensDataError(f"{src}: no MovieLens ratings file; looked for {looked}")


# -- the three tables ------------------------------------------------------
def read_movies(path: Path, layout: str, config: MovieLensConfig, report: RowReport,
                genre_names=GENRES_100K) -> Tuple[Catalogue, np.ndarray]:
    """The catalogue (rows sorted by movie id) and the sorted movie ids."""
    if layout == "100k":
        rows = read_rows(path, "movies", "|", 5 + len(genre_names), config.encoding, report)
    elif layout == "1m":
        rows = read_rows(path, "movies", "::", 3, config.encoding, report)
    else:
        rows = read_rows(path, "movies", "csv", 3, config.encoding, report, header=True)
    ids, titles, genres, years = [], [], [], []
    seen = set()
    bad_id, duplicate, bad_flags = [], [], []
    for number, parts in rows:
        movie = parse_int(parts[0])
        if movie is None:
            bad_id.append(number)
            continue
        if movie in seen:
            duplicate.append(number)
            continue
        if layout == "100k":
            flags = parts[5:]
            if any(f.strip() not in ("0", "1") for f in flags):
                bad_flags.append(number)
                continue
            names = [g for g, f in zip(genre_names, flags) if f.strip() == "1"]
            release = parts[2].strip()
        else:
            names = [g for g in parts[2].split("|") if g and g != NO_GENRES]
            release = ""
        title = parts[1].strip()
        year = _YEAR.search(title)
        year = int(year.group(1)) if year else parse_int(release[-4:]) if release else None
        seen.add(movie)
        ids.append(movie)
        titles.append(title)
        genres.append(names)
        years.append(year)
    report.drop("movies.bad_id", len(bad_id), lines_where(path.name, bad_id),
                "the movie id is not an integer")
    report.drop("movies.duplicate_id", len(duplicate), lines_where(path.name, duplicate),
                "a movie id seen on an earlier line; the first is kept")
    report.drop("movies.bad_genre_flags", len(bad_flags), lines_where(path.name, bad_flags),
                "genre flags must be 0 or 1")
    if not ids:
        raise MovieLensDataError(f"{path}: no usable movie lines")
    order = np.argsort(np.asarray(ids), kind="stable")
    titles = [titles[i] for i in order]
    genres = [genres[i] for i in order]
    years = [years[i] for i in order]
    empty = [i for i, t in enumerate(titles) if not t or t.lower() == "unknown"]
    report.repair("movies.unknown_title", len(empty),
                  [f"movie {ids[order[i]]}" for i in empty],
                  "the text falls back to the genres")
    no_genre = sum(1 for g in genres if not g or g == ["unknown"])
    report.repair("movies.no_genre", no_genre, detail="genre is the unknown id")
    descriptions = []
    for title, names in zip(titles, genres):
        known = [g for g in names if g != "unknown"]
        text = title if title and title.lower() != "unknown" else "Untitled movie"
        descriptions.append(f"{text}. Genres: {', '.join(known)}." if known else f"{text}.")
    vocab, categorical = {}, {}
    vocab["genre"], categorical["genre"] = encode(
        [next((g for g in names if g != "unknown"), None) for names in genres],
        config.min_count, config.max_vocab)
    vocab["decade"], categorical["decade"] = encode(
        [f"{y // 10 * 10}s" if y else None for y in years], config.min_count, config.max_vocab)
    sorted_ids = np.asarray(ids, dtype=np.int64)[order]
    catalogue = Catalogue(keys=[str(i) for i in sorted_ids], categorical=categorical,
                          vocab=vocab, descriptions=descriptions)
    return catalogue, sorted_ids


def read_users(path: Optional[Path], layout: str, user_ids: np.ndarray,
               config: MovieLensConfig, report: RowReport
               ) -> Tuple[Population, np.ndarray]:
    """Users from the users file, or (latest layout) the ids the ratings name."""
    if path is None:
        keys = np.unique(user_ids)
        return Population([str(k) for k in keys], {}, {}), keys
    if layout == "100k":
        rows = read_rows(path, "users", "|", 5, config.encoding, report)
    else:
        rows = read_rows(path, "users", "::", 5, config.encoding, report)
    records, seen, bad_id, duplicate, bad_value = [], set(), [], [], []
    for number, parts in rows:
        user = parse_int(parts[0])
        if user is None:
            bad_id.append(number)
            continue
        if user in seen:
            duplicate.append(number)
            continue
        if layout == "100k":
            age, gender, occupation, zip_code = parts[1], parts[2], parts[3], parts[4]
        else:
            gender, age, occupation, zip_code = parts[1], parts[2], parts[3], parts[4]
            code = parse_int(occupation)
            if code is None or not 0 <= code < len(OCCUPATIONS_1M):
                bad_value.append(number)
                occupation = ""
            else:
                occupation = OCCUPATIONS_1M[code]
        age_value = parse_int(age)
        if age.strip() and age_value is None:
            bad_value.append(number)
        seen.add(user)
        records.append((user, age_value, gender.strip() or None,
                        occupation.strip() or None,
                        zip_code.strip()[: config.zip_prefix_len] or None))
    report.drop("users.bad_id", len(bad_id), lines_where(path.name, bad_id),
                "the user id is not an integer")
    report.drop("users.duplicate_id", len(duplicate), lines_where(path.name, duplicate),
                "a user id seen on an earlier line; the first is kept")
    report.repair("users.bad_value", len(bad_value), lines_where(path.name, bad_value),
                  "an unparsable age or occupation code: set to unknown")
    if not records:
        raise MovieLensDataError(f"{path}: no usable user lines")
    records.sort(key=lambda r: r[0])
    keys = np.asarray([r[0] for r in records], dtype=np.int64)
    age = np.asarray([np.nan if r[1] is None else r[1] for r in records], dtype=np.float64)
    implausible = ~np.isnan(age) & ((age < 1) | (age > 110))
    report.repair("users.implausible_age", int(implausible.sum()),
                  detail="outside 1..110: treated as missing")
    age[implausible] = np.nan
    vocab, categorical = {}, {}
    for column, name in ((2, "gender"), (3, "occupation"), (4, "zip_prefix")):
        vocab[name], categorical[name] = encode([r[column] for r in records],
                                                config.min_count, config.max_vocab)
    vocab["age_bucket"], categorical["age_bucket"] = buckets(age, AGE_EDGES)
    return Population([str(k) for k in keys], categorical, vocab, {"age": age}), keys


def read_ratings(path: Path, layout: str, config: MovieLensConfig, report: RowReport
                 ) -> Dict[str, np.ndarray]:
    """Raw user id, movie id, rating, timestamp and line number of each usable line."""
    if layout == "100k":
        rows = read_rows(path, "ratings", "\t", 4, config.encoding, report)
    elif layout == "1m":
        rows = read_rows(path, "ratings", "::", 4, config.encoding, report)
    else:
        rows = read_rows(path, "ratings", ",", 4, config.encoding, report, header=True)
    user, movie, rating, stamp, line = [], [], [], [], []
    bad: Dict[str, List[int]] = {"bad_number": [], "rating_out_of_range": [],
                                 "timestamp_out_of_range": []}
    for number, parts in rows:
        u, m, r = parse_int(parts[0]), parse_int(parts[1]), parse_float(parts[2])
        t = parse_int(parts[3])
        if u is None or m is None or r is None or t is None:
            bad["bad_number"].append(number)
        elif not config.min_rating <= r <= config.max_rating:
            bad["rating_out_of_range"].append(number)
        elif not config.min_timestamp <= t < config.max_timestamp:
            bad["timestamp_out_of_range"].append(number)
        else:
            user.append(u)
            movie.append(m)
            rating.append(r)
            stamp.append(t)
            line.append(number)
    details = {"bad_number": "user, movie, rating and timestamp must be numbers",
               "rating_out_of_range": f"outside [{config.min_rating}, {config.max_rating}]",
               "timestamp_out_of_range":
                   f"outside [{config.min_timestamp}, {config.max_timestamp})"}
    for reason, numbers in bad.items():
        report.drop(f"ratings.{reason}", len(numbers), lines_where(path.name, numbers),
                    details[reason])
    return {"user": np.asarray(user, dtype=np.int64), "movie": np.asarray(movie, np.int64),
            "rating": np.asarray(rating, dtype=np.float64),
            "timestamp": np.asarray(stamp, dtype=np.int64),
            "line": np.asarray(line, dtype=np.int64)}


def link_ratings(raw: Dict[str, np.ndarray], user_keys: np.ndarray, movie_keys: np.ndarray,
                 name: str, report: RowReport) -> Interactions:
    """Raw ids -> row ids; unknown ids and duplicates are counted, then dropped."""
    def lookup(keys, values):
        at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
        return at, keys[at] == values

    user, user_ok = lookup(user_keys, raw["user"])
    movie, movie_ok = lookup(movie_keys, raw["movie"])
    line = raw["line"]
    report.drop("ratings.unknown_user", int((~user_ok).sum()),
                lines_where(name, line[~user_ok]), "the user is not in the users file")
    unknown_movie = user_ok & ~movie_ok
    report.drop("ratings.unknown_movie", int(unknown_movie.sum()),
                lines_where(name, line[unknown_movie]), "the movie is not in the movies file")
    keep = np.flatnonzero(user_ok & movie_ok)
    # A (user, movie) pair rated twice: the latest rating stands (ties: the later line).
    order = keep[np.lexsort((line[keep], raw["timestamp"][keep], movie[keep], user[keep]))]
    pair = user[order] * len(movie_keys) + movie[order]
    last = np.r_[pair[1:] != pair[:-1], True]
    repeated = order[~last]
    successor = order[1:][~last[:-1]]  # the next row of the same pair
    same = (raw["rating"][repeated] == raw["rating"][successor]) & \
        (raw["timestamp"][repeated] == raw["timestamp"][successor])
    # identical rows: which one stays does not matter; name the later line
    report.drop("ratings.duplicate_row", int(same.sum()),
                lines_where(name, np.sort(line[successor[same]])), "an exact repeat")
    report.drop("ratings.rerated_pair", int((~same).sum()),
                lines_where(name, np.sort(line[repeated[~same]])),
                "the user rated the movie again later; the latest rating is kept")
    keep = np.sort(order[last])
    return Interactions(user=user[keep], item=movie[keep],
                        timestamp=raw["timestamp"][keep], rating=raw["rating"][keep])


def _genre_names(src: Path) -> Tuple[str, ...]:
    """u.genre's names in index order when present (else the published list)."""
    path = src / "u.genre"
    if not path.is_file():
        return GENRES_100K
    names = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if "|" in line:
            name, _, index = line.rpartition("|")
            if index.strip().isdigit():
                names[int(index)] = name
    if sorted(names) != list(range(len(names))) or not names:
        raise MovieLensDataError(f"{path}: expected lines 'name|index' with indices 0..n-1")
    return tuple(names[i] for i in range(len(names)))


def prepare_movielens(src_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                      config=None) -> Dict[str, Any]:
    """Write a prepared directory from MovieLens files; returns its manifest.

    The directory appears complete or not at all (built beside it, renamed in).
    """
    config = as_config(MovieLensConfig, config)
    src = Path(src_dir)
    if not src.is_dir():
        raise MovieLensDataError(f"{src}: MovieLens source directory does not exist")
    layout, paths = find_layout(src, config.layout)
    report = RowReport(policy=config.on_bad_rows, max_bad_fraction=config.max_bad_fraction)
    genre_names = _genre_names(src) if layout == "100k" else GENRES_100K
    catalogue, movie_keys = read_movies(paths["movies"], layout, config, report, genre_names)
    raw = read_ratings(paths["ratings"], layout, config, report)
    if raw["user"].size == 0:
        raise MovieLensDataError(f"{paths['ratings']}: no usable rating lines")
    users, user_keys = read_users(paths["users"], layout, raw["user"], config, report)
    inter = link_ratings(raw, user_keys, movie_keys, paths["ratings"].name, report)
    extra = {
        "preparer": config.to_dict(),
        "layout": layout,
        "source": {table: {"path": str(p.resolve()), "bytes": p.stat().st_size}
                   for table, p in paths.items() if p is not None},
    }
    with atomic_output(out_dir) as tmp:
        manifest = build_prepared(tmp, NAME, catalogue, users, inter,
                                  config.split_config(), report, extra)
    return manifest


def main(argv=None) -> int:
    return reader_main(
        argv, prog="python -m mmf_rec.data.movielens",
        description="Prepare MovieLens (100K, 1M, latest) ratings for mmf_rec models.",
        src_help="directory with the MovieLens files",
        config_cls=MovieLensConfig, prepare=prepare_movielens,
    )


if __name__ == "__main__":
    raise SystemExit(main())
