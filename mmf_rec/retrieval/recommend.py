"""Top-N items for users: retrieve with the two-tower and its index, rank with dlrm_mm.

    python tools/recommend.py --retriever save/kbrec_synthetic/two_tower \\
        --ranker save/kbrec_synthetic/dlrm_mm --user 42
    python tools/recommend.py --retriever save/kbrec_synthetic/two_tower \\
        --ranker save/kbrec_synthetic/dlrm_mm --users 0-999 --out recs.tsv

One user: prints rank, item id, retrieval score (cosine), ranking score (the
ranker's click probability), "new" for an item with no observed training
interaction, how the item was found (``by content`` for a new item, whose
vector comes from its attributes, text and photo alone; ``retrieved`` for
the rest) and a description snippet. ``--new-item-share`` reserves that share
of the retrieved candidates for new items. Many users
(``--users a-b``, ``a,b,c`` or ``@file`` with one id per line): writes a TSV
file, one line per (user, rank). Items the user clicked before are left out
unless ``--no-exclude-seen``. An unknown user id gets the features-only
fallback and is reported as such. Without ``--ranker`` the retrieval order
is returned.

The command line behind ``python tools/recommend.py``.
"""

import argparse
from pathlib import Path

from mmf_rec.retrieval.cli import add_pipeline_arguments, pipeline_paths


def parse_users(text: str):
    if text.startswith("@"):
        lines = Path(text[1:]).read_text().split()
        return [int(x) for x in lines]
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            low, high = (int(x) for x in part.split("-", 1))
            out.extend(range(low, high + 1))
        elif part:
            out.append(int(part))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pipeline_arguments(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="one user id: print the list")
    who.add_argument("--users", help="many users: a-b, a,b,c or @file; needs --out")
    p.add_argument("--out", type=Path, help="TSV file for --users")
    p.add_argument("--k-retrieve", type=int, default=200, help="candidates from the index")
    p.add_argument("--top", type=int, default=10, help="items returned per user")
    p.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=True,
                   help="leave out items the user clicked before (default: on)")
    p.add_argument("--final-score", choices=["ctr", "ctr_x_exposure"], default="ctr",
                   help="order of the ranked candidates: the ranker's click probability "
                        "(default), or it times the item's training exposure share")
    p.add_argument("--new-item-share", type=float, default=0.0,
                   help="share of the --k-retrieve candidates reserved for new items (0)")
    p.add_argument("--data-dir", type=Path, help="replaces the runs' env.data_dir")
    p.add_argument("--batch-size", type=int, default=256)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.users is not None and args.out is None:
        parser().error("--users writes a file: give --out")
    retriever, index, ranker = pipeline_paths(args, parser(), "recommend")
    from mmf_rec.retrieval.pipeline import Recommender, write_recommendations

    try:
        recommender = Recommender.from_runs(retriever, index, ranker, data_dir=args.data_dir,
                                            final_score=args.final_score,
                                            new_item_share=args.new_item_share)
    except ValueError as error:
        if "new_item_share" not in str(error):
            raise
        parser().error(str(error).replace("new_item_share", "--new-item-share"))
    users = [args.user] if args.user is not None else parse_users(args.users)
    results = recommender.recommend(users, k_retrieve=args.k_retrieve, k_final=args.top,
                                    exclude_seen=args.exclude_seen, batch_size=args.batch_size,
                                    progress=len(users) > args.batch_size)
    if args.out is not None:
        write_recommendations(results, args.out)
        cold = sum(r.cold_user for r in results)
        print(f"wrote {sum(len(r.items) for r in results)} recommendations for {len(results)} "
              f"users to {args.out}" + (f" ({cold} unknown users: features-only fallback)"
                                        if cold else ""))
        if args.user is None:
            return 0
    result = results[0]
    note = " (unknown user: features-only fallback, no id, no history)" if result.cold_user else ""
    seen = "excluding" if args.exclude_seen else "including"
    print(f"user {result.user}{note}: top {len(result.items)} of {args.k_retrieve} retrieved, "
          f"{seen} items clicked before")
    print(f"{'rank':>4}  {'item':>6}  {'retrieval':>9}  {'ranking':>7}  {'new':>3}  "
          f"{'source':<10}  description")
    for item in result.items:
        ranking = "-" if item.ranking_score is None else f"{item.ranking_score:.3f}"
        new, source = ("new", "by content") if item.new else ("", "retrieved")
        print(f"{item.rank:>4}  {item.item_id:>6}  {item.retrieval_score:>9.3f}  {ranking:>7}  "
              f"{new:>3}  {source:<10}  {item.description}")
    return 0

