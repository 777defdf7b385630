"""Quantize a trained run's embedding tables and measure what it costs.

    python tools/quantize.py --run SAVE_DIR [--precision int8 fp16 int4]

Loads ``SAVE_DIR/config.yaml`` and the run's best checkpoint into the
model through MMF's own builders (``mmf_rec.runs.load_trainer``), evaluates
the test split (and the extra splits, e.g. cold items) in float32 and after
row-wise quantization of every sparse encoder's tables
(``mmf_rec.encoders.quantize``), and reports the tables' bytes, AUC / log
loss and their change, and inference latency per batch (median of
interleaved repeats). ``--save`` also writes each quantized
model's state dict (``quantized_<precision>.pt``, loadable into a model
passed through ``quantize_model``). ``--time-training N`` also times N
training steps of the float model (forward, backward, optimizer step), which
``tools/bench.py compression`` uses to compare table kinds.
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch


def split_metrics(trainer) -> Dict[str, Dict[str, float]]:
    """AUC and log loss of the test split and the dataset's extra splits."""
    trainer.results = {}
    trainer._inference_run("test")
    return {split: dict(metrics) for split, metrics in trainer.results.items()}


def sparse_encoders(model):
    from mmf_rec.encoders.sparse import SparseEncoder

    return [m for m in model.modules() if isinstance(m, SparseEncoder)]


def state_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def test_batches(trainer, count: int) -> List:
    out = []
    for batch in trainer.test_loader:
        out.append(trainer.dataset_loader.prepare_batch(batch))
        if len(out) == count:
            break
    return out


def latency_ms(models: Dict[str, torch.nn.Module], batches, rounds: int) -> Dict[str, float]:
    """Median ms per batch of each model, the models taking turns each round."""
    times = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model.eval()
            model(batches[0])
        for _ in range(rounds):
            for name, model in models.items():
                for batch in batches:
                    start = time.perf_counter()
                    model(batch)
                    times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def training_step_ms(trainer, model, steps: int, blocks: int = 3, warmup: int = 3):
    """ms of one training step (forward, backward, optimizer step) of a copy of
    the model, and the bytes its tables then hold: weights, gradients, optimizer
    state. The step time is the lowest of ``blocks`` block medians: on a shared
    machine other work only ever adds time."""
    from mmf.utils.build import build_optimizer

    model = copy.deepcopy(model).train()
    optimizer = build_optimizer(model, trainer.config)
    loader = iter(trainer.train_loader)
    medians = []
    for _ in range(blocks):
        times = []
        for i in range(warmup + steps):
            try:
                batch = next(loader)
            except StopIteration:
                loader = iter(trainer.train_loader)
                batch = next(loader)
            batch = trainer.dataset_loader.prepare_batch(batch)
            start = time.perf_counter()
            output = model(batch)
            loss = sum(output["losses"].values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
        medians.append(statistics.median(times))
    held = 0
    for encoder in sparse_encoders(model):
        for p in encoder.parameters():
            held += p.numel() * p.element_size()
            if p.grad is not None:
                held += p.grad.numel() * p.grad.element_size()
            held += sum(s.numel() * s.element_size() for s in optimizer.state[p].values()
                        if torch.is_tensor(s) and s.dim() > 0)
    return min(medians), held


def measure(run_dir: Path, precisions: List[str], checkpoint: Path = None, out_dir: Path = None,
            latency_batches: int = 20, latency_rounds: int = 5, time_training: int = 0,
            save: bool = False, allow_pickle: bool = False) -> Dict[str, object]:
    from mmf_rec.encoders.quantize import (
        PRECISIONS, quantize_model, replace_sparse_encoders, unfused_encoder,
    )
    from mmf_rec.runs import load_trainer

    for precision in precisions:
        if precision not in PRECISIONS:
            raise SystemExit(f"unknown precision '{precision}'; choose from {list(PRECISIONS)}")
    run_dir = Path(run_dir)
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "best.ckpt"
    out_dir = Path(out_dir) if out_dir else run_dir / "quantized"
    trainer = load_trainer(run_dir, checkpoint, out_dir, allow_pickle, opt_in="--allow-pickle")
    model = trainer.model
    models = {"fp32": model}
    # Quantized tables are looked up one by one: this separates the cost of
    # dequantizing from that of not fusing.
    models["fp32 unfused"] = replace_sparse_encoders(copy.deepcopy(model), unfused_encoder).eval()
    for precision in precisions:
        models[precision] = quantize_model(copy.deepcopy(model), precision).eval()
    variants = {}
    for name, m in models.items():
        trainer.model = m
        variants[name] = {
            "table_bytes": sum(state_bytes(e) for e in sparse_encoders(m)),
            "model_bytes": state_bytes(m),
        }
        if name != "fp32 unfused":  # same numbers as fp32; here for its latency
            variants[name]["metrics"] = split_metrics(trainer)
        if save and name in precisions:
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(m.state_dict(), out_dir / f"quantized_{name}.pt")
    trainer.model = model
    batches = test_batches(trainer, latency_batches)
    for name, ms in latency_ms(models, batches, latency_rounds).items():
        variants[name]["latency_ms"] = ms
    payload = {
        "run": str(run_dir),
        "checkpoint": str(checkpoint),
        "model": trainer.config.model,
        "batch_size": int(trainer.config.training.batch_size),
        "latency_batches": len(batches),
        "threads": torch.get_num_threads(),
        "variants": variants,
    }
    if time_training:
        step, held = training_step_ms(trainer, model, time_training)
        payload["training_step_ms"] = step
        payload["training_table_bytes"] = held
        payload["training_samples_per_s"] = payload["batch_size"] / step * 1e3
    return payload


def report(payload) -> str:
    base = payload["variants"]["fp32"]
    splits = [s for s in base["metrics"] if "auc" in base["metrics"][s]]
    head = " | ".join(f"{s} AUC (change)" for s in splits)
    lines = [
        f"{payload['model']} from {payload['checkpoint']}: median latency per batch of "
        f"{payload['batch_size']} ({payload['latency_batches']} test batches, "
        f"{payload['threads']} threads)",
        "",
        f"| tables | table bytes | model bytes | {head} | test log loss | latency ms |",
        "|---|---:|---:|" + "---:|" * len(splits) + "---:|---:|",
    ]
    for name, v in payload["variants"].items():
        if "metrics" not in v:
            lines.append(f"| {name} | {v['table_bytes']:,} | {v['model_bytes']:,} | "
                         + "| " * len(splits) + f"| {v['latency_ms']:.2f} |")
            continue
        cells = []
        for s in splits:
            auc, change = v["metrics"][s]["auc"], v["metrics"][s]["auc"] - base["metrics"][s]["auc"]
            cells.append(f"{auc:.4f} ({change:+.4f})")
        lines.append(
            f"| {name} | {v['table_bytes']:,} | {v['model_bytes']:,} | {' | '.join(cells)} "
            f"| {v['metrics']['test']['log_loss']:.4f} | {v['latency_ms']:.2f} |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the env.save_dir of an mmf_run")
    p.add_argument("--precision", nargs="*", default=["int8", "fp16", "int4"])
    p.add_argument("--checkpoint", type=Path, help="default: <run>/best.ckpt")
    p.add_argument("--out-dir", type=Path, help="logs and --save output; default <run>/quantized")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--latency-batches", type=int, default=20)
    p.add_argument("--latency-rounds", type=int, default=5)
    p.add_argument("--time-training", type=int, default=0, metavar="STEPS",
                   help="also time 3 blocks of this many training steps of the float model")
    p.add_argument("--save", action="store_true", help="write each quantized state dict")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a checkpoint that needs a full unpickle (it runs code stored "
                        "in the file: only for files you trust)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    payload = measure(
        args.run, args.precision, args.checkpoint, args.out_dir, args.latency_batches,
        args.latency_rounds, args.time_training, args.save, args.allow_pickle,
    )
    print(report(payload))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from mmf_rec.errors import one_line_user_errors

    sys.exit(one_line_user_errors(main)())
