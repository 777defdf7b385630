"""``python tools/bench.py train``: dlrm training through ``mmf_run``, and the
reference DLRM (facebookresearch/dlrm, ``dlrm_s_pytorch.py``) on the same
configuration in the same invocation.

Both sides train on random data of the same shape: dense features uniform in
[0, 1), one id per table drawn uniformly, 0/1 labels. Ours reads it from a
prepared directory on disk (what a real run does); the reference makes it
in its own data loader, as its ``--data-generation=random`` does.

Two numbers per side:
- model-only samples/s: batch over the median time of a training step
  (forward, loss, backward, optimizer). Ours comes from the trainer's own
  timing (``training_speed`` in metrics.json); the reference's from the
  ``ms/it`` it prints, which times the same span.
- whole-process samples/s, data loading included: ours from the trainer's
  own loop timing (waiting for each batch from the prepared files, plus the
  step); the reference's as extra samples over extra wall time between a
  short and a long run, so its start-up cancels and its data generation
  counts.
Runs alternate between the two sides, so drift of the machine hits both.

The reference runs from its own checkout (:mod:`mmf_rec.bench.reference_dlrm`).
"""

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from mmf_rec.bench import REPO
from mmf_rec.bench.reference_dlrm import SITECUSTOMIZE, run_reference, timed
from mmf_rec.bench.shapes import CONFIGS, ours_config, write_random_prepared


# One change at a time against our default (fused lookups, sparse gradients,
# SGD on the tables, fp32, batches gathered in the training process):
# mmf_run overrides, and what each shows.
VARIANTS = {
    "default": ([], "fused lookups, sparse gradients, SGD on the tables, fp32"),
    "dense-gradients": (
        ["optimizer.embeddings.gradients=dense",
         "model_config.dlrm.sparse_encoder.params.sparse_grad=false"],
        "dense gradients for the tables: each step rewrites whole tables",
    ),
    "sparse-adam": (["optimizer.embeddings.type=SparseAdam"],
                    "the tables under SparseAdam instead of SGD"),
    "per-table": (["model_config.dlrm.sparse_encoder.params.fused=false"],
                  "one lookup per table instead of fused groups"),
    "bf16": (["training.amp.enabled=true", "training.amp.dtype=bfloat16"],
             "bf16 autocast for the MLPs"),
    "torchrec": (["model_config.dlrm.sparse_encoder.params.backend=torchrec",
                  "distributed.embedding_sharding=table_wise"],
                 "the tables in FBGEMM's table-batched kernels, SGD fused into the backward"),
    "fp16": (["training.amp.enabled=true", "training.amp.dtype=float16"],
             "fp16 autocast for the MLPs, with loss scaling"),
    "bf16+torchrec": (["training.amp.enabled=true", "training.amp.dtype=bfloat16",
                       "model_config.dlrm.sparse_encoder.params.backend=torchrec",
                       "distributed.embedding_sharding=table_wise"],
                      "both: bf16 MLPs, FBGEMM tables"),
    "huge-pages": ([], "tables and activations on transparent huge pages "
                       "(THP_MEM_ALLOC_ENABLE=1)"),
    "loader-worker": (["training.num_workers=1"],
                      "batches prefetched by one loader worker process"),
}

# Variants that change the environment rather than the config.
VARIANT_ENV = {"huge-pages": {"THP_MEM_ALLOC_ENABLE": "1"}}

def mlp_gemm_ms(shape: Dict, batch: int, repeats: int = 20) -> float:
    """The matrix products of one training step's MLPs alone, ms: each
    layer's forward, its weight gradient and (except the first bottom layer,
    whose input needs none) its input gradient, each timed by itself on this
    machine. The step can go no faster than this in fp32; everything else
    (lookups, activations, interaction, loss, optimizer) comes on top."""
    import torch

    from mmf_rec.interaction import dot_interaction_size

    top_in = dot_interaction_size(len(shape["tables"]), shape["dim"])
    layers = list(zip([shape["dense"], *shape["bottom"][:-1]], shape["bottom"]))
    layers += list(zip([top_in, *shape["top"]], [*shape["top"], 1]))
    total = 0.0
    for i, (fan_in, fan_out) in enumerate(layers):
        x, w = torch.randn(batch, fan_in), torch.randn(fan_in, fan_out)
        g = torch.randn(batch, fan_out)
        products = [(x, w), (x.t(), g)] + ([(g, w.t())] if i > 0 else [])
        for a, b in products:
            a, b = a.contiguous(), b.contiguous()
            torch.mm(a, b)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b)
                times.append(time.perf_counter() - start)
            total += statistics.median(times)
    return total * 1e3


def bf16_unsupported() -> Optional[str]:
    """Why bf16 autocast is not worth a run here, measured; None where the CPU
    has native bf16 (AVX-512 BF16 or AMX), where it is."""
    import torch

    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    layer, x = torch.nn.Linear(512, 256), torch.randn(2048, 512)

    def ms(autocast: bool) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            layer(x)
            start = time.perf_counter()
            for _ in range(3):
                layer(x)
        return (time.perf_counter() - start) / 3 * 1e3

    fp32, bf16 = ms(False), ms(True)
    return (f"this CPU has no native bf16 (torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}): a 2048x512x256 Linear takes "
            f"{bf16:.1f} ms under bf16 autocast against {fp32:.1f} ms in fp32")


def run_ours(config: Path, updates: int, save_dir: Path, env: Dict[str, str],
             overrides: List[str] = ()) -> Dict:
    mmf_run = Path(sys.executable).parent / "mmf_run"
    cmd = [str(mmf_run), f"config={config}", f"training.max_updates={updates}",
           f"env.save_dir={save_dir}", "checkpoint.max_to_keep=1", *overrides]
    wall = timed(cmd, env, save_dir.with_suffix(".log"), REPO)
    speed = json.loads((save_dir / "metrics.json").read_text()).get("training_speed") or {}
    # the checkpoints hold the tables (0.5 GB at the reference shape): only
    # the numbers are kept
    for pattern in ("*.ckpt", "*.pth"):
        for path in save_dir.rglob(pattern):
            path.unlink()
    return {"wall_s": wall, "step_ms": speed.get("step_ms_median"),
            "fetch_ms": speed.get("fetch_ms_median"),
            "loop_samples_per_s": speed.get("loop_samples_per_s")}


def _rate(batch: int, short: Dict, long: Dict, updates: int) -> Optional[float]:
    extra = long["wall_s"] - short["wall_s"]
    return batch * updates / extra if extra > 0 else None


def _loop_rate(batch: int, run: Dict) -> Optional[float]:
    if run.get("loop_samples_per_s"):
        return run["loop_samples_per_s"]
    if run.get("step_ms") and run.get("fetch_ms") is not None:  # results from before it was kept
        return batch / ((run["step_ms"] + run["fetch_ms"]) / 1e3)
    return None


def summarize(side: str, by_updates: Dict, batch: int, short: int, long: int) -> Dict:
    """Medians over rounds. Whole-process for ours is the trainer's own loop
    rate (batch fetch from the prepared files + step): differencing two
    mmf_run wall times drowns its ~5 s of extra training in 2-4 s of
    start-up noise. The reference prints no loop time, and its loop is slow
    enough (its data generator) for differencing to hold."""
    steps = [r["step_ms"] for r in by_updates[long] if r.get("step_ms")]
    if side == "ours":
        rates = [_loop_rate(batch, r) for r in by_updates[long]]
    else:
        rates = [_rate(batch, s, l, long - short)
                 for s, l in zip(by_updates[short], by_updates[long])]
    rates = [x for x in rates if x]
    step = statistics.median(steps) if steps else None
    return {
        "step_ms_median": step,
        "model_samples_per_s": batch / (step / 1e3) if step else None,
        "whole_process_samples_per_s": statistics.median(rates) if rates else None,
        "whole_process_method": "trainer loop" if side == "ours" else "wall-time difference",
        "runs": by_updates,
    }


def bench_train(args) -> Dict[str, object]:
    import os

    work = args.work_dir.resolve()  # the reference runs in its own checkout
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    ref_env = None
    if args.reference_dlrm:
        site = work / "reference_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        ref_env = {**env, "PYTHONPATH": os.pathsep.join(
            [str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    short, long = args.updates
    variants = ["default"] + [v for v in args.variants if v != "default"]
    skipped = {}
    why = bf16_unsupported() if any("bf16" in v for v in variants) else None
    for variant in [v for v in variants if "bf16" in v and why]:
        skipped[variant] = why
        variants.remove(variant)
        print(f"skipping the {variant} variant: {why}", flush=True)
    results = []
    for name in args.configs:
        shape = CONFIGS[name]
        data = write_random_prepared(work / f"data-{name}", shape, rows=args.batch * (long + 5))
        config = ours_config(work, name, shape, data, args.batch, args.lr, args.sparse_grad)
        # Ours: its trainer times both rates itself, so one run of `long`
        # updates per round. The reference: a short and a long run per round.
        ours = {v: {long: []} for v in variants}
        reference = {short: [], long: []}
        for r in range(args.rounds):
            for variant in variants:
                tag = f"{name}-{variant}-r{r}"
                ours[variant][long].append(run_ours(
                    config, long, work / f"ours-{tag}", {**env, **VARIANT_ENV.get(variant, {})},
                    VARIANTS[variant][0]))
                print(f"{tag}: ours {ours[variant][long][-1]['step_ms']:.1f} ms/step", flush=True)
            if ref_env is not None:
                for updates in (short, long):
                    tag = f"{name}-r{r}-u{updates}"
                    reference[updates].append(run_reference(
                        args.reference_dlrm, shape, args.batch, args.lr, updates,
                        ref_env, work / f"reference-{tag}.log"))
                    print(f"{tag}: reference {reference[updates][-1]['wall_s']:.1f} s",
                          flush=True)
        entry = {"config": name, "shape": {**shape, "tables": len(shape["tables"]),
                                           "rows_per_table_max": max(shape["tables"])}}
        entry["ours"] = summarize("ours", ours["default"], args.batch, short, long)
        bound = mlp_gemm_ms(shape, args.batch)
        entry["mlp_gemm_bound"] = {
            "step_ms": bound, "samples_per_s": args.batch / (bound / 1e3),
            "ours_step_over_bound": (entry["ours"]["step_ms_median"] / bound
                                     if entry["ours"]["step_ms_median"] else None),
        }
        if reference[long]:
            entry["reference"] = summarize("reference", reference, args.batch, short, long)
            for key in ("model_samples_per_s", "whole_process_samples_per_s"):
                mine, ref = entry["ours"][key], entry["reference"][key]
                entry.setdefault("ratio", {})[key] = mine / ref if mine and ref else None
        entry["variants"] = {}
        for variant in variants[1:]:
            summary = summarize("ours", ours[variant], args.batch, short, long)
            base = entry["ours"]["model_samples_per_s"]
            summary["vs_default"] = (summary["model_samples_per_s"] / base
                                     if summary["model_samples_per_s"] and base else None)
            entry["variants"][variant] = summary
        results.append(entry)
    return {"benchmark": "train", "results": results, "args": {
        "configs": args.configs, "batch": args.batch, "lr": args.lr, "updates": args.updates,
        "rounds": args.rounds, "sparse_grad": args.sparse_grad, "variants": variants,
        "reference_dlrm": str(args.reference_dlrm) if args.reference_dlrm else None,
    }, "skipped": skipped}


def train_table(payload) -> str:
    a = payload["args"]
    lines = [
        f"dlrm training, batch {a['batch']}, SGD lr {a['lr']}, random data; "
        f"medians of {a['rounds']} alternating rounds. Whole-process (data included): "
        f"ours from the trainer's loop timing, the reference from the wall-time "
        f"difference of runs of {a['updates'][0]} and {a['updates'][1]} updates.",
        "",
        "| config | side | step ms | model-only samples/s | whole-process samples/s |",
        "|---|---|---:|---:|---:|",
    ]

    def fmt(x, spec):
        return format(x, spec) if x else "n/a"

    for e in payload["results"]:
        for side in ("ours", "reference"):
            if side not in e:
                continue
            s = e[side]
            label = "mmf-rec `dlrm` (mmf_run)" if side == "ours" else "reference dlrm_s_pytorch.py"
            lines.append(f"| {e['config']} | {label} | {fmt(s['step_ms_median'], '.1f')} "
                         f"| {fmt(s['model_samples_per_s'], ',.0f')} "
                         f"| {fmt(s['whole_process_samples_per_s'], ',.0f')} |")
        if "ratio" in e:
            r = e["ratio"]
            lines.append(f"| {e['config']} | **ratio ours / reference** | "
                         f"| **{fmt(r['model_samples_per_s'], '.2f')}x** "
                         f"| **{fmt(r['whole_process_samples_per_s'], '.2f')}x** |")
    lines += [""]
    for e in payload["results"]:
        b = e.get("mlp_gemm_bound")
        if b:
            lines.append(
                f"{e['config']}: the MLPs' matrix products alone take {b['step_ms']:.1f} ms "
                f"per step here ({b['samples_per_s']:,.0f} samples/s, the fp32 bound); our "
                f"step is {fmt(b['ours_step_over_bound'], '.2f')}x that.")
    if any(e.get("variants") for e in payload["results"]):
        lines += ["", "One change at a time against our default "
                      f"({VARIANTS['default'][1]}):", "",
                  "| config | variant | step ms | model-only samples/s | vs default "
                  "| whole-process samples/s |",
                  "|---|---|---:|---:|---:|---:|"]
        for e in payload["results"]:
            for variant, s in e.get("variants", {}).items():
                what = VARIANTS.get(variant, (None, "no longer a variant"))[1]
                lines.append(f"| {e['config']} | {variant}: {what} "
                             f"| {fmt(s['step_ms_median'], '.1f')} "
                             f"| {fmt(s['model_samples_per_s'], ',.0f')} "
                             f"| {fmt(s['vs_default'], '.2f')}x "
                             f"| {fmt(s['whole_process_samples_per_s'], ',.0f')} |")
    for variant, why in payload.get("skipped", {}).items():
        lines += ["", f"Skipped {variant}: {why}."]
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--reference-dlrm", type=Path,
                   help="a checkout of facebookresearch/dlrm to run side by side")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--updates", nargs=2, type=int, default=[20, 120], metavar=("SHORT", "LONG"),
                   help="updates of the short and the long run (whole-process rate)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", nargs="*", default=[], choices=list(VARIANTS),
                   help="our runs with one change each, besides the default")
    p.add_argument("--no-sparse-grad", dest="sparse_grad", action="store_false",
                   help="dense gradients for our tables (the reference's are sparse)")
    p.add_argument("--work-dir", type=Path, default=REPO / "save" / "bench_train")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_train.json")
