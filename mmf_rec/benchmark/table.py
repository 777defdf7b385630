"""What the results show: the mean and spread over seeds, and the markdown
table of a results dict."""

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

SAMPLED_K = 10
SPLITS = ("val", "test_warm", "test_cold")
STD_NOTE = "population standard deviation over the seeds that ran (numpy std, ddof=0)"
SAMPLED_NOTE = ("sampled 1+99: the held-out item ranked against its 99 fixed sampled "
                "negatives (NCF protocol), ties counted against the model; secondary, "
                "since sampled metrics can reverse model order (Krichene and Rendle, 2020)")


def summarize(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> Tuple[Dict, Dict]:
    """(mean, std) per split and metric over the seeds' ``splits`` dicts;
    a metric missing or None in any seed is left out."""
    mean: Dict[str, Dict[str, float]] = {}
    std: Dict[str, Dict[str, float]] = {}
    for split in SPLITS:
        names = sorted({k for s in per_seed for k in (s.get(split) or {})})
        for name in names:
            values = [(s.get(split) or {}).get(name) for s in per_seed]
            if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool)
                                 for v in values):
                continue
            mean.setdefault(split, {})[name] = float(np.mean(values))
            std.setdefault(split, {})[name] = float(np.std(values))
    return mean, std


# -- the table -------------------------------------------------------------------------
def _cell(entry: Mapping[str, Any], split: str, metric: str) -> str:
    mean = ((entry.get("mean") or {}).get(split) or {}).get(metric)
    if mean is None:
        return "n/a"
    spread = ((entry.get("std") or {}).get(split) or {}).get(metric, 0.0)
    return f"{mean:.4f} ± {spread:.4f}"


def format_table(results: Mapping[str, Any]) -> str:
    """The markdown summary of a results dict: one row per model."""
    sampled = bool(results.get("sampled"))
    columns = [("Recall@10 warm", "test_warm", "recall@10"),
               ("NDCG@10 warm", "test_warm", "ndcg@10"),
               ("Recall@50 warm", "test_warm", "recall@50"),
               ("Recall@10 cold", "test_cold", "recall@10"),
               ("NDCG@10 cold", "test_cold", "ndcg@10"),
               ("Recall@50 cold", "test_cold", "recall@50"),
               ("AUC test", "test_warm", "auc"),
               ("AUC cold", "test_cold", "auc")]
    if sampled:
        columns += [(f"HR@{SAMPLED_K} sampled 1+99", "test_warm", f"sampled_hr@{SAMPLED_K}"),
                    (f"NDCG@{SAMPLED_K} sampled 1+99", "test_warm",
                     f"sampled_ndcg@{SAMPLED_K}")]
    git = results.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    cpu = results.get("machine") or {}
    seeds = results.get("seeds") or []
    lines = [
        f"### Suite `{results.get('suite')}`: {results.get('dataset')}",
        "",
        f"Protocol: {_protocol_words(results.get('protocol'))}; seeds {seeds}; "
        f"commit {commit}; {results.get('date')}; {cpu.get('cpu')}, {cpu.get('cores')} cores.",
        "",
        "| model | " + " | ".join(c[0] for c in columns) + " | notes |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, entry in (results.get("models") or {}).items():
        status = entry.get("status")
        if status == "skipped":
            lines.append(f"| {name} | " + " | ".join("–" for _ in columns)
                         + f" | skipped: {entry.get('note', '')} |")
            continue
        failed = {seed: run for seed, run in (entry.get("seeds") or {}).items()
                  if run.get("status") != "ok"}
        notes = []
        if failed:
            notes += [f"failed seed {seed} (log: {run.get('log')})" for seed, run in failed.items()]
        ok = len(entry.get("seeds") or {}) - len(failed)
        if failed and ok == 0:
            lines.append(f"| {name} | " + " | ".join("failed" for _ in columns)
                         + f" | {'; '.join(notes)} |")
            continue
        if failed:
            notes.insert(0, f"{ok} seeds ok")
        lines.append(f"| {name} | " + " | ".join(_cell(entry, s, m) for _, s, m in columns)
                     + f" | {'; '.join(notes)} |")
    lines += ["", f"Full-catalogue metrics on the test period (warm and cold items apart); "
              f"mean ± {STD_NOTE}."]
    if sampled:
        lines.append(SAMPLED_NOTE + ".")
    overrides = sorted({" ".join(e.get("overrides") or []) for e in
                        (results.get("models") or {}).values() if e.get("kind") == "model"})
    if overrides:
        lines.append("Project models trained with `mmf_run` overrides: "
                     + "; ".join(f"`{o}`" for o in overrides if o) + ".")
    return "\n".join(lines) + "\n"


def _protocol_words(protocol: Optional[Mapping[str, Any]]) -> str:
    if not protocol:
        return "unknown"
    split = protocol.get("split") or {}
    name = split.get("name") or (protocol.get("preparer") or {}).get("protocol") or "?"
    labels = split.get("labels")
    return f"{name}" + (f", {labels} labels" if labels else "")

