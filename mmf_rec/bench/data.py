"""``python tools/bench.py data``: how fast batches come off a prepared
directory, against how fast the trainer consumes them.

The loader is the one ``mmf_run`` builds for a ``kbrec_prepared`` split: a
torch DataLoader over :class:`KBRecDataset`, shuffled, with MMF's
BatchCollator. Three ways of feeding it, one change at a time:

- ``batched``: what runs by default. The DataLoader hands the dataset a
  whole batch of indices (``__getitems__``): one gather per column from the
  memory-mapped files, no Python object per row.
- ``per-row``: MMF's stock path, one ``Sample`` per row merged by the
  collator; the dataset's ``__getitems__`` is hidden from the DataLoader.
- ``batched, 1 worker``: the batched path in a worker process, which
  prefetches batches while the main process would be training.

The rows are the random bench data of ``bench.py train`` (same shapes), so
the trainer's step time from that benchmark is the consumption to beat.
"""

import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch

from mmf_rec.bench import REPO
from mmf_rec.bench.shapes import CONFIGS, write_random_prepared



class _RowsOnly(torch.utils.data.Dataset):
    """The dataset without ``__getitems__``: the DataLoader falls back to one
    ``__getitem__`` per row, MMF's default path."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]


def open_split(root: Path):
    from mmf_rec.data import prepared as fmt
    from mmf_rec.data.dataset import KBRecDataset

    data = fmt.load_prepared(root, verify_checksums=False)
    return KBRecDataset(data, "train", dataset_type="train", dataset_name="kbrec_prepared")


def loader(dataset, batch: int, workers: int, per_row: bool, seed: int = 0):
    from mmf.common.batch_collator import BatchCollator

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        _RowsOnly(dataset) if per_row else dataset,
        batch_size=batch,
        sampler=torch.utils.data.RandomSampler(dataset, generator=generator),
        collate_fn=BatchCollator(dataset.dataset_name, dataset.dataset_type),
        num_workers=workers,
        drop_last=True,
    )


def time_batches(make_loader, batches: int, warmup: int) -> List[float]:
    """Seconds per batch as the training loop sees them: the wait for each
    ``next()``, after ``warmup`` batches (a worker's start-up among them)."""
    iterator = iter(make_loader())
    for _ in range(warmup):
        next(iterator)
    waits = []
    for _ in range(batches):
        start = time.perf_counter()
        batch = next(iterator)
        waits.append(time.perf_counter() - start)
    assert batch["targets"].shape[0] > 0
    return waits


WAYS = {
    "batched": dict(workers=0, per_row=False),
    "per-row": dict(workers=0, per_row=True),
    "batched, 1 worker": dict(workers=1, per_row=False),
}


def bench_data(args) -> Dict[str, object]:
    from mmf_rec.bench.host import machine

    results = []
    for name in args.configs:
        shape = CONFIGS[name]
        rows = args.batch * (args.batches + args.warmup + 2)
        root = write_random_prepared(args.work_dir / f"data-{name}", shape, rows)
        dataset = open_split(root)
        for way, options in WAYS.items():
            # per-row is slow enough that a few batches tell the story
            count = max(3, args.batches // 10) if options["per_row"] else args.batches
            waits = []
            for _ in range(args.rounds):
                waits += time_batches(lambda: loader(dataset, args.batch, **options),
                                      count, args.warmup)
            ms = 1e3 * statistics.median(waits)
            results.append({
                "config": name, "way": way, **options, "batch": args.batch,
                "batches_timed": len(waits), "ms_per_batch_median": ms,
                "samples_per_s": args.batch / (ms / 1e3),
            })
    return {"benchmark": "data", "machine": machine(), "args": {
        "configs": args.configs, "batch": args.batch, "batches": args.batches,
        "warmup": args.warmup, "rounds": args.rounds,
    }, "results": results}


def data_table(payload) -> str:
    a = payload["args"]
    lines = [
        f"Batches of {a['batch']} from a prepared directory (memory-mapped), through "
        f"the DataLoader and MMF's BatchCollator as mmf_run builds them; median wait "
        f"per batch over {a['rounds']} rounds.",
        "",
        "| config | way | ms per batch | samples/s |",
        "|---|---|---:|---:|",
    ]
    for r in payload["results"]:
        lines.append(f"| {r['config']} | {r['way']} | {r['ms_per_batch_median']:.2f} "
                     f"| {r['samples_per_s']:,.0f} |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--configs", nargs="+", default=list(CONFIGS),
                   choices=list(CONFIGS))
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--batches", type=int, default=100, help="timed batches per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work-dir", type=Path, default=REPO / "save" / "bench_train",
                   help="where the random prepared data lives (shared with bench.py train)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_data.json")
