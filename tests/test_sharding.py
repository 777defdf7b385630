"""TorchRec tables (``sparse_encoder.params.backend: torchrec``) and their
sharding over processes (``distributed.embedding_sharding``).

The end-to-end proof runs real ``mmf_run``: 2 CPU processes with table-wise
sharded tables against 1 process with the same global batch, compared on
their parameters and validation AUC; then each run's checkpoint is evaluated
by the other layout (native tables in one process, and sharded tables in 2).
"""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from mmf_rec.encoders import torchrec_tables
from mmf_rec.encoders.sparse import SparseEncoder
from mmf_rec.encoders.torchrec_tables import init_rows_
from mmf_rec.errors import UserError
from mmf_rec.schema import PAD_ID, Schema, SchemaError, SparseFeature
from mmf_rec import sharding
from tests import tiny_runs

SCHEMA = Schema(
    dense=(),
    sparse=(SparseFeature("user", 7), SparseFeature("bag", 5, pooling="mean", max_len=3),
            SparseFeature("tags", 6, max_len=2)),
    label="label", source="test",
)
IDS = {
    "user": torch.tensor([[1], [6], [PAD_ID]]),
    "bag": torch.tensor([[1, 2, PAD_ID], [PAD_ID] * 3, [4, 0, 3]]),
    "tags": torch.tensor([[5, 5], [0, PAD_ID], [PAD_ID, PAD_ID]]),
}


# -- the tables --------------------------------------------------------------------


def test_a_shard_initialises_to_its_slice_of_the_whole_table(monkeypatch):
    monkeypatch.setattr(torchrec_tables, "BLOCK_ROWS", 4)  # shards across blocks
    whole = init_rows_(torch.empty(10, 6), seed=123, rows=10, dim=6)
    assert whole.abs().max() <= (1 / 10) ** 0.5 and whole.std() > 0
    shard = init_rows_(torch.empty(5, 2), seed=123, rows=10, dim=6, row_offset=3, col_offset=4)
    assert torch.equal(shard, whole[3:8, 4:6])
    assert not torch.equal(init_rows_(torch.empty(10, 6), seed=124, rows=10, dim=6), whole)


def test_torchrec_backend_pools_as_the_native_one_and_shares_its_checkpoint_keys():
    torchrec = SparseEncoder.from_params(SCHEMA, embedding_dim=4, backend="torchrec")
    native = SparseEncoder.from_params(SCHEMA, embedding_dim=4)
    assert sorted(torchrec.state_dict()) == sorted(native.state_dict()) == [
        "tables.bag.weight", "tables.tags.weight", "tables.user.weight"]
    native.load_state_dict(torchrec.state_dict())
    out = torchrec(IDS)
    assert out.shape == (3, 3, 4)
    assert torch.allclose(out, native(IDS), atol=1e-6)
    assert torch.equal(out[2, 0], torch.zeros(4)) and torch.equal(out[1, 1], torch.zeros(4))
    # and back: native weights into the TorchRec tables
    with torch.no_grad():
        native.table_weight("user").mul_(2)
    torchrec.load_state_dict(native.state_dict())
    assert torch.allclose(torchrec(IDS), native(IDS), atol=1e-6)


def test_torchrec_backend_refuses_table_kinds_it_cannot_hold_and_bad_ids():
    with pytest.raises(SchemaError, match="full tables only.*'user': 'hash'"):
        SparseEncoder.from_params(SCHEMA, embedding_dim=4, backend="torchrec",
                                  tables={"user": {"kind": "hash", "num_buckets": 3}})
    with pytest.raises(SchemaError, match="backend 'tensorflow'"):
        SparseEncoder.from_params(SCHEMA, embedding_dim=4, backend="tensorflow")
    encoder = SparseEncoder.from_params(SCHEMA, embedding_dim=4, backend="torchrec")
    with pytest.raises(ValueError, match="'user'.*out of range"):
        encoder({**IDS, "user": torch.tensor([[7], [0], [1]])})


# -- what the config asks for --------------------------------------------------------


def _config(sharding_type="data_parallel", backend="native", optimizer="Adam",
            table_type=None):
    return OmegaConf.create({
        "model": "dlrm",
        "model_config": {"dlrm": {"sparse_encoder": {"params": {"backend": backend}}}},
        "distributed": {"embedding_sharding": sharding_type, "memory_budget_mb": None},
        "optimizer": {"type": optimizer, "params": {"lr": 0.01},
                      "embeddings": {"type": table_type, "params": {}}},
    })


def test_the_config_names_a_known_sharding_with_the_torchrec_backend():
    assert not sharding.uses_torchrec(_config())
    assert sharding.uses_torchrec(_config("table_wise", "torchrec"))
    with pytest.raises(UserError, match="backend=torchrec"):
        sharding.uses_torchrec(_config("table_wise"))
    with pytest.raises(UserError, match="'diagonal'"):
        sharding.requested(_config("diagonal"))


def test_the_tables_optimizer_is_one_fbgemm_has_on_the_device(caplog):
    assert sharding.table_optimizer(_config(optimizer="SGD"), "cpu") == ("SGD", {"lr": 0.01})
    kind, params = sharding.table_optimizer(_config(), "cpu")  # Adam: none on CPU
    assert (kind, params) == ("Adagrad", {"lr": 0.01})
    assert sharding.table_optimizer(_config(), "cuda")[0] == "Adam"
    with pytest.raises(UserError, match="SparseAdam.*CPU kernels"):
        sharding.table_optimizer(_config(table_type="SparseAdam"), "cpu")


def test_an_impossible_plan_is_refused_naming_the_table_its_size_and_the_budget():
    mib = 2**20
    sizes = {"small": 10 * mib, "big": 300 * mib}
    with pytest.raises(UserError, match=r"'big' needs 300.0 MiB.*over the 256.0 MiB"):
        sharding.check_plan(sizes, "table_wise", 2, 256 * mib, "cpu", "SGD")
    # Adagrad keeps a state as large as the table
    with pytest.raises(UserError, match=r"'big' needs 600.0 MiB with its Adagrad state"):
        sharding.check_plan(sizes, "column_wise", 2, 256 * mib, "cpu", "Adagrad")
    sharding.check_plan(sizes, "column_wise", 2, 256 * mib, "cpu", "SGD")  # 150 MiB each
    with pytest.raises(UserError, match="over the 2 x 200.0 MiB"):
        sharding.check_plan({"a": 150 * mib, "b": 150 * mib, "c": 150 * mib}, "table_wise",
                            2, 200 * mib, "cpu", "SGD")
    with pytest.raises(UserError, match="row-wise on CUDA only"):
        sharding.check_plan(sizes, "row_wise", 2, None, "cpu", "SGD")


# -- through mmf_run -----------------------------------------------------------------

SHARDED = ["model_config.dlrm.sparse_encoder.params.backend=torchrec",
           "distributed.embedding_sharding=table_wise"]
TRAIN = ["optimizer.type=SGD", "optimizer.params.lr=0.1", "training.batch_size=256",
         "training.max_updates=40", "training.log_interval=20",
         "training.evaluation_interval=20", "training.checkpoint_interval=20",
         "run_type=train_val"]


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharding")
    env = tiny_runs.environment(tmp)
    data = tmp / "data"
    runs = {}
    for world in (1, 2):
        save = tmp / f"world{world}"
        tiny_runs.run("mmf_run", save, data, *SHARDED, *TRAIN,
                      f"distributed.world_size={world}", env=env)
        runs[world] = save
    return tmp, env, data, runs


def _val_auc(save_dir):
    with open(os.path.join(save_dir, "metrics.json")) as f:
        return json.load(f)["val"]["auc"]


def _weights(save_dir):
    return torch.load(os.path.join(save_dir, "current.ckpt"), weights_only=True)["model"]


def test_two_processes_with_sharded_tables_train_as_one(sharded_runs):
    _, _, _, runs = sharded_runs
    one, two = _weights(runs[1]), _weights(runs[2])
    assert one.keys() == two.keys()
    assert "sparse_encoder.tables.item_id.weight" in one  # whole tables, native keys
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-4), key
    first = one["sparse_encoder.tables.user_id.weight"]
    assert first.abs().max() > 0  # trained tables, not zeros
    assert abs(_val_auc(runs[1]) - _val_auc(runs[2])) < 1e-3


def test_a_sharded_checkpoint_serves_from_native_tables_and_back(sharded_runs):
    tmp, env, data, runs = sharded_runs
    native = tmp / "native_eval"
    # (the optimizers differ: the sharded tables' is fused into their kernels)
    tiny_runs.run("mmf_run", native, data, "run_type=val", "checkpoint.reset.optimizer=True",
                  f"checkpoint.resume_file={runs[2] / 'current.ckpt'}", env=env)
    assert abs(_val_auc(native) - _val_auc(runs[2])) < 1e-4
    # a native run's checkpoint into tables sharded over 2 processes
    trained = tmp / "native_train"
    tiny_runs.run("mmf_run", trained, data, *TRAIN, env=env)
    resharded = tmp / "sharded_eval"
    tiny_runs.run("mmf_run", resharded, data, *SHARDED, "distributed.world_size=2",
                  "run_type=val", "checkpoint.reset.optimizer=True",
                  f"checkpoint.resume_file={trained / 'current.ckpt'}",
                  env=env)
    assert abs(_val_auc(resharded) - _val_auc(trained)) < 1e-4


def test_a_plan_over_the_memory_budget_stops_before_training_in_one_line(sharded_runs):
    tmp, env, data, _ = sharded_runs
    result = tiny_runs.run("mmf_run", tmp / "over_budget", data, *SHARDED, *TRAIN,
                           "distributed.memory_budget_mb=0.001", env=env, check=False)
    assert result.returncode == 2
    line = tiny_runs.last_line(result)
    assert line.startswith("mmf_run: error: embedding table '") and "MiB" in line
    assert "Starting training" not in result.stdout


def test_mmf_predict_scores_the_same_from_sharded_and_native_tables(sharded_runs):
    tmp, env, data, runs = sharded_runs
    checkpoint = f"checkpoint.resume_file={runs[2] / 'current.ckpt'}"
    outputs = {}
    for name, extra in (("native", []), ("sharded", [*SHARDED, "distributed.world_size=2"])):
        save = tmp / f"predict_{name}"
        tiny_runs.run("mmf_predict", save, data, "run_type=val", "checkpoint.reset.optimizer=True",
                      checkpoint, *extra, env=env)
        with open(save / "predictions" / "kbrec_synthetic_val.jsonl") as f:
            outputs[name] = [json.loads(line) for line in f]
    native, sharded = outputs["native"], outputs["sharded"]
    assert len(native) == len(sharded) > 100
    assert [r["row"] for r in native] == [r["row"] for r in sharded]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(native, sharded)) < 1e-5
