"""The lines a run ends with: how good the model is, and where its files are.

Made from the same payload as metrics.json, so the console and the file
agree: one column per evaluated split (val, test, then the extra ones such as
cold), one row per metric the config asked for, the data's oracle under AUC
where it is known, then the best update, the time and throughput, and the
paths of metrics.json, the checkpoint and the log.
"""

from typing import Dict, List, Optional, Sequence

FIRST_SPLITS = ("val", "test")
# (metrics.json key, label); the oracle is shown under the metric it bounds
ORACLES = (("oracle_auc", "auc"),)


def splits_of(payload: Dict) -> List[str]:
    """The evaluated splits of a metrics.json payload, val and test first."""
    named = [k for k, v in payload.items() if isinstance(v, dict) and k != "training_speed"]
    return [s for s in FIRST_SPLITS if s in named] + [s for s in named if s not in FIRST_SPLITS]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def metrics_table(payload: Dict, metric_names: Sequence[str]) -> List[str]:
    splits = splits_of(payload)
    rows = []
    for name in metric_names:
        if any(name in payload[s] for s in splits):
            rows.append((name, [payload[s].get(name) for s in splits]))
        for oracle, bounded in ORACLES:
            if name == bounded and any(payload[s].get(oracle) is not None for s in splits):
                rows.append(("  oracle", [payload[s].get(oracle) for s in splits]))
    width = max([len(label) for label, _ in rows] + [6])
    lines = [" " * width + "".join(f"{s:>10}" for s in splits)]
    for label, values in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{_cell(v):>10}" for v in values))
    return lines


def format_summary(
    payload: Dict,
    metric_names: Sequence[str],
    *,
    title: str,
    best_by: Optional[str],
    wall_s: float,
    paths: Dict[str, str],
) -> str:
    """The summary as one block of text (the first line is its title)."""
    lines = [title]
    if splits_of(payload):
        lines += ["  " + line for line in metrics_table(payload, metric_names)]
    trained = payload.get("trained_updates")
    evaluated = payload.get("num_updates")
    if trained is not None:
        by = f", by val {best_by}" if best_by else ""
        lines.append(f"  best update {evaluated} of {trained}{by}")
    elif evaluated is not None:
        lines.append(f"  evaluated the checkpoint of update {evaluated} (no training)")
    speed = payload.get("training_speed") or {}
    timing = f"  time {_duration(wall_s)} (data, model, training, evaluation)"
    if speed:
        processes = int(speed.get("processes") or 1)
        each = f" per process, {processes} processes" if processes > 1 else ""
        timing += (f"; training {speed['loop_samples_per_s']:,.0f} samples/s{each} "
                   f"({speed['model_samples_per_s']:,.0f} in the model step alone)")
    lines.append(timing)
    width = max(len(k) for k in paths)
    lines += [f"  {label:<{width}}  {path}" for label, path in paths.items()]
    return "\n".join(lines)
