"""Warm against cold quality per model, from benchmark results files.

    python tools/plot_results.py docs/results/*.json --out docs/images/warm_cold.png

One panel per suite: for every model, the full-catalogue test metric
(default NDCG@10) on warm items and on cold items, as the mean over seeds
with the population standard deviation as an error bar. Models that did not
run (skipped, failed) are left out.
"""

import argparse
import json
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Tuple


Row = Tuple[str, float, float, float, float]


def warm_cold_rows(results: Mapping[str, Any], metric: str = "ndcg@10") -> List[Row]:
    """(model, warm mean, warm std, cold mean, cold std) of every model that ran."""
    rows = []
    for name, entry in (results.get("models") or {}).items():
        if entry.get("status") != "ok":
            continue
        mean, std = entry.get("mean") or {}, entry.get("std") or {}
        values = []
        for split in ("test_warm", "test_cold"):
            values += [float((mean.get(split) or {}).get(metric, 0.0)),
                       float((std.get(split) or {}).get(metric, 0.0))]
        rows.append((name, *values))
    return rows


def plot(paths: Sequence[Path], out: Path, metric: str = "ndcg@10") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    suites = [json.loads(Path(p).read_text()) for p in paths]
    fig, axes = plt.subplots(1, len(suites), figsize=(4.2 * len(suites), 3.8), squeeze=False)
    for ax, results in zip(axes[0], suites):
        rows = warm_cold_rows(results, metric)
        x = np.arange(len(rows))
        names = [r[0] for r in rows]
        ax.bar(x - 0.2, [r[1] for r in rows], 0.4, yerr=[r[2] for r in rows],
               label="warm items", color="#4c72b0", capsize=2)
        ax.bar(x + 0.2, [r[3] for r in rows], 0.4, yerr=[r[4] for r in rows],
               label="cold items", color="#dd8452", capsize=2)
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{results.get('suite')} ({len(results.get('seeds') or [])} seeds)",
                     fontsize=10)
        ax.set_ylabel(f"test {metric}, full catalogue", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/plot_results.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results.json files (one per suite)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--metric", default="ndcg@10", help="metric of the test period (ndcg@10)")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.results if not r.is_file()]
    if missing:
        p.error(f"no such results file: {', '.join(missing)}")
    print(plot(args.results, args.out, args.metric))
    return 0
