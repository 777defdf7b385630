"""Several processes through MMF (mmf_rec.plugin.processes) and mmf_rec.distributed's pieces."""

import os
import subprocess
import sys

import pytest
import torch

import mmf_rec.plugin

mmf_rec.plugin.apply()

from mmf_rec import distributed  # noqa: E402
from tiny_runs import run_python  # noqa: E402


def test_mmf_run_gets_the_launcher_that_runs_cpu_processes():
    """As the ``mmf_run`` script does it: mmf_cli.run imports mmf (and so the
    plugin) before it defines ``run``; the hook swaps it in afterwards."""
    result = run_python(
        """
        from mmf_cli.run import run, distributed_init
        import mmf.utils.distributed as d
        from mmf_rec import distributed
        print(run.__wrapped__ is distributed.run,
              distributed_init is d.distributed_init is distributed.distributed_init)
        """,
        env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "True"]


def test_a_spawned_rank_ends_after_its_exit_handlers_without_teardown(tmp_path):
    """What a spawned rank does once its work is done: threads joined, exit
    handlers run, output flushed, its exit code kept, and no finalisation
    (an object's ``__del__`` at interpreter teardown never runs)."""
    result = run_python(
        f"""
        import atexit, sys, threading, time
        from mmf_rec.distributed.launch import exit_without_teardown

        def late():
            time.sleep(0.3)
            open({str(tmp_path / "thread")!r}, "w").write("done")

        threading.Thread(target=late).start()
        atexit.register(lambda: open({str(tmp_path / "atexit")!r}, "w").write("ran"))

        class TornDown:
            def __del__(self):
                print("finalised")

        kept = TornDown()
        sys.stdout.write("buffered, no newline")
        exit_without_teardown(3)
        print("after the exit")
        """,
        env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_backend_follows_the_device():
    from omegaconf import OmegaConf

    def config(device, backend):
        return OmegaConf.create({"training": {"device": device},
                                 "distributed": {"backend": backend}})

    assert distributed.backend_for(config("cpu", None)) == "gloo"
    assert distributed.backend_for(config("cpu", "nccl")) == "gloo"  # nccl needs CUDA
    assert not distributed.uses_cuda(config("cpu", None))
    expected = "nccl" if torch.cuda.is_available() else "gloo"
    assert distributed.backend_for(config("cuda", None)) == expected


GLOO_SCRIPT = """
import os, sys
import torch, torch.distributed as dist
from mmf_rec import distributed
from mmf_rec.distributed import launch

def worker(rank, world, port):
    dist.init_process_group("gloo", init_method=f"tcp://localhost:{port}",
                            world_size=world, rank=rank)
    # evaluation: 7 rows in in-order shards, gathered back in order, padding dropped
    rows = torch.arange(7)
    shard = list(distributed.eval_sampler(rows))
    assert len(shard) == 4, shard
    got = distributed.gather_rows(rows[shard].float().unsqueeze(1) * 10, rows=7)
    assert got.squeeze(1).tolist() == [0, 10, 20, 30, 40, 50, 60], got
    # unequal shards without a size: the ranks' rows one after another
    mine = torch.arange(rank + 1)
    assert distributed.gather_rows(mine).tolist() == [0, 0, 1]
    # sparse row gradients, averaged over ranks and kept sparse
    table = torch.nn.Parameter(torch.zeros(5, 2))
    picked = torch.tensor([[1, 3]]) if rank == 0 else torch.tensor([[3]])
    table.grad = torch.sparse_coo_tensor(picked, torch.ones(picked.shape[1], 2), (5, 2))
    distributed.all_reduce_gradients([table])
    assert table.grad.is_sparse
    assert table.grad.to_dense()[:, 0].tolist() == [0, 0.5, 0, 1, 0], table.grad
    dist.destroy_process_group()

if __name__ == "__main__":
    port = launch._free_port()
    torch.multiprocessing.start_processes(worker, args=(2, port), nprocs=2,
                                          start_method="fork")
    print("ok")
"""


def test_gather_and_sparse_gradients_across_two_gloo_processes(tmp_path):
    script = tmp_path / "gloo_check.py"
    script.write_text(GLOO_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "MMF_USER_DIR"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_combined_optimizer_steps_and_checkpoints_both():
    dense = torch.nn.Linear(2, 1)
    table = torch.nn.Embedding(4, 2, sparse=True)
    opt = distributed.CombinedOptimizer([
        torch.optim.Adam(dense.parameters(), lr=0.1),
        torch.optim.SparseAdam(table.parameters(), lr=0.1),
    ])
    assert len(opt.param_groups) == 2
    before = table.weight.detach().clone()
    loss = dense(table(torch.tensor([1, 2]))).sum()
    loss.backward()
    opt.step()
    changed = (table.weight.detach() != before).any(1).tolist()
    assert changed == [False, True, True, False]  # only the rows looked up
    state = opt.state_dict()
    fresh = distributed.CombinedOptimizer([
        torch.optim.Adam(dense.parameters(), lr=0.1),
        torch.optim.SparseAdam(table.parameters(), lr=0.1),
    ])
    fresh.load_state_dict(state)
    assert fresh.state_dict()["optimizers"][1]["state"].keys() == state["optimizers"][1]["state"].keys()
    with pytest.raises(ValueError, match="reset.optimizer"):
        fresh.load_state_dict(torch.optim.Adam(dense.parameters()).state_dict())
    # MMF's schedulers take it as an optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]
    del scheduler


def test_embedding_gradients_auto_follows_table_size():
    from omegaconf import OmegaConf

    def config(gradients):
        return OmegaConf.create({"optimizer": {"type": "Adam", "params": {"lr": 0.01},
                                               "embeddings": {"gradients": gradients,
                                                              "auto_mb": 4}}})

    small, large = torch.nn.Embedding(1000, 16), torch.nn.Embedding(70_000, 16)  # 4.3 MiB
    assert distributed.embedding_gradients(small, config("auto")) == "dense"
    assert distributed.embedding_gradients(large, config("auto")) == "sparse"
    assert distributed.embedding_gradients(large, config("dense")) == "dense"
    with pytest.raises(ValueError, match="gradients"):
        distributed.embedding_gradients(small, config("sometimes"))
    model = torch.nn.Sequential(large, torch.nn.Linear(16, 1))
    tables = distributed.use_sparse_gradients(model)
    assert tables == ["0.weight"] and large.sparse
    optimizer = distributed.build_optimizer(model, config("sparse"), tables)
    assert [type(o).__name__ for o in optimizer.optimizers] == ["Adam", "SparseAdam"]
    assert optimizer.optimizers[1].param_groups[0]["params"] == [large.weight]


@pytest.mark.parametrize("main, params, expected, expected_params", [
    ("SGD", {"lr": 0.1, "momentum": 0.9}, "SGD", {"lr": 0.1, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.05, "weight_decay": 1e-4}, "Adagrad", {"lr": 0.05}),
    ("AdamW", {"lr": 0.01, "betas": [0.8, 0.9], "weight_decay": 0.1}, "SparseAdam",
     {"lr": 0.01, "betas": [0.8, 0.9]}),
])
def test_tables_follow_the_runs_optimizer_unless_told(main, params, expected, expected_params):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"optimizer": {"type": main, "params": params,
                                             "embeddings": {"type": None, "params": {}}}})
    assert distributed.embedding_optimizer(config) == (expected, expected_params)
    table = torch.nn.Embedding(50, 4, sparse=True)
    model = torch.nn.Sequential(table, torch.nn.Linear(4, 1))
    optimizer = distributed.build_optimizer(model, config, ["0.weight"])
    assert [type(o).__name__ for o in optimizer.optimizers] == [main, expected]
    model(torch.tensor([1, 2])).sum().backward()
    optimizer.step()  # the inherited options are valid for sparse gradients
    config.optimizer.embeddings.type = "SparseAdam"
    config.optimizer.embeddings.params = {"lr": 0.3}
    assert distributed.embedding_optimizer(config) == ("SparseAdam", {"lr": 0.3})
