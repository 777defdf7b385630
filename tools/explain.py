"""Why this recommendation: Integrated Gradients attributions of a dlrm_mm run.

    python tools/explain.py --run save/kbrec_synthetic/dlrm_mm --user 7 --item 3
    python tools/explain.py --run save/kbrec_synthetic/dlrm_mm --global --users 500

One pair: prints the logit, its baseline, how much each feature group
contributed (dense features, each categorical, the history items, the
description words, the image regions) and the completeness check, and
writes ``<out>/u<user>_i<item>.png`` (the contributions, the description
with its words highlighted, the photo with a heat map over its grid cells)
and the same as ``.json``.

``--global``: mean |attribution| per feature group over ``--users`` sampled
users x ``--candidates`` random items each; writes ``<out>/global.png`` (a
bar chart) and ``<out>/global.json``. On ``kbrec_synthetic`` the JSON also
holds the comparison with the known click model (Spearman correlation).
See ``mmf_rec/explain/`` for the method and the baselines.
"""

import argparse
import json
import textwrap
import time
from pathlib import Path

import numpy as np

POSITIVE, NEGATIVE = "#c0392b", "#2166ac"  # raises the score / lowers it


def _bar(value: float, scale: float, width: int = 24) -> str:
    n = int(round(abs(value) / scale * width)) if scale > 0 else 0
    return ("+" if value >= 0 else "-") * n


def print_explanation(e, description: str, seconds: float) -> None:
    gap = e.score - e.baseline_score
    print(f"user {e.user_id}, item {e.item_id}: score (logit) {e.score:+.4f}, "
          f"{e.baseline} baseline {e.baseline_score:+.4f}, difference {gap:+.4f}")
    print(f"  sum of attributions {e.total:+.4f}, convergence delta {e.delta:+.2e} "
          f"({100 * e.completeness_error:.2f}% of the difference)")
    print(f"  description: {description}")
    print("contributions per feature group (logit units):")
    scale = max(abs(v) for v in e.groups.values()) or 1.0
    for group, value in sorted(e.groups.items(), key=lambda gv: -abs(gv[1])):
        print(f"  {group:<14}{value:+.4f}  {_bar(value, scale)}")
    if e.history:
        items = ", ".join(f"{i} {a:+.3f}" for i, a in e.history)
        print(f"history items (most recent first): {items}")
    if e.words:
        print("top words: " + ", ".join(f"{w} {a:+.3f}" for w, a in e.top_words(5)))
    if e.regions is not None:
        cells = ", ".join(f"row {r} col {c} {a:+.3f}" for (r, c), a in e.top_regions(3))
        print(f"top image regions: {cells}")
    print(f"explained in {seconds * 1000:.0f} ms")


def _diverging(value: float, scale: float):
    from matplotlib import colors

    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    base = colors.to_rgb(POSITIVE if value >= 0 else NEGATIVE)
    return tuple(1 - strength * (1 - c) for c in base)


def plot_explanation(e, image_path: Path, description: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors
    from PIL import Image

    fig = plt.figure(figsize=(12, 5))
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 1], width_ratios=[1.2, 1.2, 1])
    bars = fig.add_subplot(grid[0, 0:2])
    groups = sorted(e.groups.items(), key=lambda gv: abs(gv[1]))
    bars.barh([g for g, _ in groups], [v for _, v in groups],
              color=[POSITIVE if v >= 0 else NEGATIVE for _, v in groups])
    bars.axvline(0, color="black", linewidth=0.8)
    bars.set_xlabel("contribution to the click logit")
    bars.set_title(f"user {e.user_id}, item {e.item_id}: logit {e.score:+.3f} vs "
                   f"{e.baseline} baseline {e.baseline_score:+.3f} "
                   f"(sum of attributions {e.total:+.3f}, delta {e.delta:+.1e})", fontsize=9)

    words = fig.add_subplot(grid[1, 0:2])
    words.axis("off")
    words.set_title("description (red: raised the score, blue: lowered it)", fontsize=9)
    scale = max((abs(a) for _, a in e.words), default=0.0)
    x, y = 0.0, 0.8
    renderer = fig.canvas.get_renderer()
    for word, value in e.words:
        text = words.text(x, y, word, fontsize=11, transform=words.transAxes,
                          bbox={"facecolor": _diverging(value, scale), "edgecolor": "none",
                                "pad": 1.5})
        width = text.get_window_extent(renderer).transformed(words.transAxes.inverted()).width
        x += width + 0.012
        if x > 0.92:
            x, y = 0.0, y - 0.35

    picture = fig.add_subplot(grid[:, 2])
    picture.axis("off")
    if image_path.is_file() and e.regions is not None:
        image = np.asarray(Image.open(image_path).convert("RGB"))
        height, width = image.shape[:2]
        picture.imshow(image, extent=(0, width, height, 0))
        # colour by sign, opacity by size: cells that did not matter stay clear
        bound = float(np.abs(e.regions).max()) or 1.0
        overlay = np.zeros((*e.regions.shape, 4))
        overlay[..., :3] = np.where((e.regions >= 0)[..., None], colors.to_rgb(POSITIVE),
                                    colors.to_rgb(NEGATIVE))
        overlay[..., 3] = 0.75 * np.abs(e.regions) / bound
        picture.imshow(overlay, extent=(0, width, height, 0), interpolation="nearest")
        for (r, c), value in np.ndenumerate(e.regions):
            picture.text((c + 0.5) * width / e.regions.shape[1],
                         (r + 0.5) * height / e.regions.shape[0], f"{value:+.2f}",
                         ha="center", va="center", fontsize=8, color="white",
                         bbox={"facecolor": "black", "alpha": 0.4, "pad": 1, "edgecolor": "none"})
        rows, cols = e.regions.shape
        for r in range(1, rows):
            picture.axhline(r * height / rows, color="white", linewidth=0.6)
        for c in range(1, cols):
            picture.axvline(c * width / cols, color="white", linewidth=0.6)
        picture.set_title("image regions (grid cells; red raised, blue lowered)", fontsize=9)
    else:
        picture.set_title("no image", fontsize=9)
    fig.suptitle(textwrap.shorten(description, 110), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_global(result, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(result["mean_abs"], key=lambda g: result["mean_abs"][g])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.barh(groups, [result["mean_abs"][g] for g in groups], color="#555555",
            label="mean |attribution|")
    check = result.get("truth_check")
    title = (f"{result['pairs']} (user, item) pairs of {result['users']} users, "
             f"{result['baseline']} baseline")
    if check:
        truth = check["truth"]
        top = max(truth.values()) or 1.0
        peak = max(result["mean_abs"].values()) or 1.0
        ax.scatter([truth[g] / top * peak for g in groups], groups, color="#c0392b", zorder=3,
                   label="true click model (scaled)")
        title += f"\nSpearman vs the true click model: {check['spearman']:.2f}"
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("mean |attribution| (logit units)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/explain.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a dlrm_mm mmf_run env.save_dir")
    parser.add_argument("--user", type=int, help="user id (features as of their last row)")
    parser.add_argument("--item", type=int, help="item id to explain")
    parser.add_argument("--global", dest="global_", action="store_true",
                        help="mean |attribution| per feature group over sampled users")
    parser.add_argument("--users", type=int, default=500, help="users sampled by --global")
    parser.add_argument("--candidates", type=int, default=4,
                        help="random candidate items per user (--global)")
    parser.add_argument("--baseline", choices=("zero", "mean"), default="zero",
                        help="IG baseline: zero = absent features, empty text, no image; "
                             "mean = the average user / item (default: zero)")
    parser.add_argument("--steps", type=int, default=32,
                        help="Integrated Gradients steps (more: smaller convergence delta)")
    parser.add_argument("--split", default="test", help="split the users' rows come from")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (--global)")
    parser.add_argument("--data-dir", help="the run's env.data_dir, if the data moved")
    parser.add_argument("--out", type=Path, default=Path("explanations"),
                        help="directory for the PNG and JSON files (default: ./explanations)")
    args = parser.parse_args(argv)
    if not args.global_ and (args.user is None or args.item is None):
        parser.error("give --user and --item, or --global")

    from mmf_rec import explain as xp
    from mmf_rec.data.synthetic_truth import check_against_truth
    from mmf_rec.runs import load_run

    run = load_run(args.run, expect_model="dlrm_mm", data_dir=args.data_dir)
    engine = xp.explainer(run.model, run.data, n_steps=args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.global_:
        started = time.perf_counter()
        result = xp.global_importance(run.model, run.data, args.users, args.candidates,
                                      args.baseline, args.split, args.seed)
        seconds = time.perf_counter() - started
        generator = run.data.manifest.get("generator")
        if run.data.manifest.get("name") == "kbrec_synthetic" and generator:
            result["truth_check"] = check_against_truth(result, generator, xp.spearman)
        result["seconds"] = seconds
        print(f"{result['pairs']} pairs ({result['users']} users x {args.candidates} "
              f"candidates), {args.baseline} baseline, {seconds:.1f} s")
        print("mean |attribution| per feature group:")
        for group, value in sorted(result["mean_abs"].items(), key=lambda gv: -gv[1]):
            truth = result.get("truth_check", {}).get("truth", {}).get(group)
            extra = f"   true {truth:.3f}" if truth is not None else ""
            print(f"  {group:<14}{value:.4f}{extra}")
        c = result["completeness"]
        print(f"completeness: mean |score - baseline| {c['mean_abs_score_minus_baseline']:.4f}, "
              f"mean |delta| {c['mean_abs_delta']:.2e}, max |delta| {c['max_abs_delta']:.2e}")
        if "truth_check" in result:
            check = result["truth_check"]
            print(f"Spearman vs the true click model: {check['spearman']:.3f}; "
                  f"groups it ignores rank {check['ignored']} of {len(check['groups'])}")
        plot_global(result, args.out / "global.png")
        with open(args.out / "global.json", "w") as f:
            json.dump({k: v for k, v in result.items() if k not in ("user_ids", "item_ids")},
                      f, indent=2)
        print(f"wrote {args.out / 'global.png'} and {args.out / 'global.json'}")
        return 0

    if not 0 <= args.item < int(run.data.items.rows):
        parser.error(f"--item must be in [0, {int(run.data.items.rows)})")
    try:
        sample = xp.user_sample(run.data, args.user, args.split)
    except KeyError as e:
        parser.error(str(e.args[0]))
    engine.tokenizer()  # loaded once, not part of the per-pair time
    started = time.perf_counter()
    explanation = engine.explain(sample, [args.item], args.baseline)[0]
    seconds = time.perf_counter() - started
    description = run.data.descriptions()[args.item]
    print_explanation(explanation, description, seconds)
    stem = args.out / f"u{args.user}_i{args.item}"
    plot_explanation(explanation, run.data.image_path(args.item), description,
                     stem.with_suffix(".png"))
    with open(stem.with_suffix(".json"), "w") as f:
        json.dump({**explanation.to_dict(), "description": description, "seconds": seconds},
                  f, indent=2)
    print(f"wrote {stem.with_suffix('.png')} and {stem.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
