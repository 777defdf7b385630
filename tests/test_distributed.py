"""Two gloo processes on CPU through MMF's own ``mmf_run`` and the kbrec trainer.

One run with ``distributed.world_size=2`` (per-rank batch B) and one run in a
single process with the same global batch 2B, on the same tiny data. A probe
plugin (loaded the MMF way, through ``env.user_dir``) records the row indices
each rank trains on and each rank's parameters when training ends; it adds
nothing else to the real trainer.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMF_RUN = os.path.join(os.path.dirname(sys.executable), "mmf_run")

GLOBAL_BATCH = 64
UPDATES = 12

PROBE = '''
"""Records what each rank trained on, and its parameters before the best
checkpoint is restored (after the restore every rank holds the same file)."""
import os

import numpy as np
import torch
from mmf.common.registry import registry

from mmf_rec.data.builder import KBRecSyntheticBuilder
from mmf_rec.data.dataset import KBRecDataset
from mmf_rec.trainer import KBRecTrainer


class RowIndexDataset(KBRecDataset):
    def __getitems__(self, indices):
        batch = super().__getitems__(indices)
        batch["row_index"] = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return batch


@registry.register_builder("kbrec_synthetic")
class RowIndexBuilder(KBRecSyntheticBuilder):
    def load(self, config, dataset_type="train", *args, **kwargs):
        d = super().load(config, dataset_type, *args, **kwargs)
        return RowIndexDataset(d.prepared, d.split, config=config, dataset_type=dataset_type,
                               dataset_name=d.dataset_name, schema=d.schema,
                               extra_eval_splits=d.extra_eval_splits)


@registry.register_trainer("kbrec_probe")
class ProbeTrainer(KBRecTrainer):
    def load(self):
        self.seen_rows = []
        super().load()

    def _forward_pass(self, batch):
        if self.model.training:
            self.seen_rows.append(batch["row_index"].tolist())
        return super()._forward_pass(batch)

    def finalize(self):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        model = getattr(self.model, "module", self.model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"rows": self.seen_rows, "params": state},
                   os.path.join(self.config.env.save_dir, f"probe_rank{rank}.pt"))
        super().finalize()
'''


def _args(tmp_path, save_dir, *extra):
    return [
        MMF_RUN,
        "config=projects/kbrec/dlrm.yaml",
        f"env.save_dir={save_dir}",
        f"env.data_dir={tmp_path / 'data'}",
        f"env.user_dir={tmp_path / 'dist_probe'}",
        "training.trainer=kbrec_probe",
        "dataset_config.kbrec_synthetic.generator.num_users=300",
        "dataset_config.kbrec_synthetic.generator.num_items=150",
        "dataset_config.kbrec_synthetic.generator.num_interactions=4000",
        f"training.batch_size={GLOBAL_BATCH}",
        f"training.max_updates={UPDATES}",
        "training.log_interval=6",
        "training.evaluation_interval=6",
        "training.checkpoint_interval=6",
        "run_type=train_val",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process and the 1-process run, started together (data generation
    is locked, so the second waits for the first's)."""
    tmp_path = tmp_path_factory.mktemp("dist")
    (tmp_path / "dist_probe").mkdir()
    (tmp_path / "dist_probe" / "__init__.py").write_text(textwrap.dedent(PROBE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMF_")}
    env["MMF_CACHE_DIR"] = str(tmp_path / "cache")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a rank that aborts prints where it was
    saves = {n: tmp_path / f"save{n}" for n in (1, 2)}
    procs = {
        2: subprocess.Popen(_args(tmp_path, saves[2], "distributed.world_size=2"), cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        1: subprocess.Popen(_args(tmp_path, saves[1]), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    }
    logs = {}
    for n, proc in procs.items():
        logs[n], _ = proc.communicate(timeout=300)
        if proc.returncode != 0:  # the whole output, every rank's, for the record
            kept = os.path.join(REPO, "test-artifacts", f"distributed-{n}-processes.log")
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            with open(kept, "w") as f:
                f.write(logs[n])
            pytest.fail(f"{n} process(es) exited {proc.returncode}; whole output in {kept}:\n"
                        + logs[n][-4000:])
    out = {}
    for n, save in saves.items():
        with open(save / "metrics.json") as f:
            metrics = json.load(f)
        probes = [torch.load(save / f"probe_rank{r}.pt") for r in range(n)]
        out[n] = {"metrics": metrics, "probes": probes, "log": logs[n], "save": save}
    return out


def test_two_gloo_processes_ran(runs):
    log = runs[2]["log"]
    assert "backend gloo" in log
    assert "Initialized Host" in log and "as Rank 1" in log
    assert runs[2]["metrics"]["trained_updates"] == UPDATES


def test_ranks_trained_on_disjoint_shards(runs):
    rank0, rank1 = (p["rows"] for p in runs[2]["probes"])
    assert len(rank0) == len(rank1) == UPDATES
    assert all(len(step) == GLOBAL_BATCH // 2 for step in rank0 + rank1)
    seen0 = {i for step in rank0 for i in step}
    seen1 = {i for step in rank1 for i in step}
    assert len(seen0) == len(seen1) == UPDATES * GLOBAL_BATCH // 2
    assert not seen0 & seen1


def test_parameters_identical_across_ranks(runs):
    params0, params1 = (p["params"] for p in runs[2]["probes"])
    assert params0.keys() == params1.keys()
    for name in params0:
        assert torch.equal(params0[name], params1[name]), name


def test_two_processes_match_one_process_with_the_global_batch(runs):
    two, one = runs[2]["probes"], runs[1]["probes"][0]
    # the same global batches: per step, the ranks' rows are the single run's
    for step, (a, b, single) in enumerate(zip(two[0]["rows"], two[1]["rows"], one["rows"])):
        assert sorted(a + b) == sorted(single), step
    # so the same updates, up to float32 summation order
    for name, value in one["params"].items():
        torch.testing.assert_close(two[0]["params"][name], value, rtol=1e-4, atol=1e-5,
                                   msg=name)
    # validation metrics over the whole split, gathered from both ranks; the
    # weights agree to float32 summation order (above), so the metrics agree
    # to the same order: a score moving by 1e-6 can swap a near tie in AUC
    for key in ("auc", "log_loss"):
        assert runs[2]["metrics"]["val"][key] == pytest.approx(
            runs[1]["metrics"]["val"][key], abs=1e-4), key


def test_only_rank_zero_writes_files(runs):
    save = runs[2]["save"]
    written = sorted(p.name for p in save.iterdir())
    assert written == sorted(
        ["best.ckpt", "config.yaml", "current.ckpt", "dlrm_final.pth", "logs", "metrics.json",
         "models", "probe_rank0.pt", "probe_rank1.pt", "train.log"]
    ), written
    assert len(list((save / "logs").iterdir())) == 1
