"""Loading a checkpoint never runs code from it unless asked to, and a
checkpoint that does not fit the model stops the run."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from safety_files import QUICK, Payload
from tiny_runs import REPO, run

from mmf_rec import runs, safe_load, zoo


def crafted(tiny_run, name="crafted.ckpt"):
    """The tiny run's best.ckpt plus a payload: (checkpoint, marker)."""
    tmp, _ = tiny_run
    marker = tmp / f"{name}.ran"
    ckpt = torch.load(tmp / "run" / "best.ckpt", weights_only=True)
    ckpt["note"] = Payload(marker)
    torch.save(ckpt, tmp / name)
    return tmp / name, marker


def last_line(result):
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


def test_run_checkpoints_load_as_plain_values(tiny_run):
    tmp, _ = tiny_run
    for name in ("best.ckpt", "current.ckpt", "dlrm_final.pth"):
        torch.load(tmp / "run" / name, weights_only=True)


def test_what_a_checkpoint_writes_is_made_plain():
    ckpt = {"best_metric_value": np.float64(0.5), "config": OmegaConf.create({"a": [1]}),
            "model": {"w": torch.ones(2)}}
    out = safe_load.plain(ckpt)
    assert out["best_metric_value"] == 0.5 and type(out["best_metric_value"]) is float
    assert out["config"] == {"a": [1]} and out["model"] is ckpt["model"]
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]: a object"):
        safe_load.plain({"extra": object()})


def test_load_run_refuses_a_crafted_pickle_unless_allowed(tiny_run):
    path, marker = crafted(tiny_run, "load_run.ckpt")
    with pytest.raises(runs.RunLoadError, match=r"allow_pickle=True"):
        runs.load_run(path)
    assert not marker.exists()
    shutil.copy(tiny_run[0] / "run" / "config.yaml", path.parent / "config.yaml")
    loaded = runs.load_run(path, allow_pickle=True)
    assert marker.exists() and loaded.model_name == "dlrm"


def test_export_zoo_refuses_a_crafted_pickle_unless_allowed(tiny_run):
    tmp, env = tiny_run
    run_dir = tmp / "export"
    shutil.copytree(tmp / "run", run_dir)
    path, marker = crafted(tiny_run, "export.ckpt")
    shutil.copy(path, run_dir / "best.ckpt")
    tool = [sys.executable, "tools/export_zoo.py", "--run", str(run_dir),
            "--key", "kbrec.dlrm.crafted", "--zoo", str(tmp / "zoo.yaml")]
    refused = subprocess.run(tool, cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "--allow-pickle" in last_line(refused) and not marker.exists()
    exported = zoo.export(run_dir, "kbrec.dlrm.crafted", zoo_file=tmp / "zoo.yaml",
                          allow_pickle=True)
    assert marker.exists() and (run_dir / "zoo" / "kbrec.dlrm.crafted.tar.gz").is_file()
    assert exported["entry"]["model"] == "dlrm"


def test_quantize_refuses_a_crafted_pickle(tiny_run):
    tmp, env = tiny_run
    path, marker = crafted(tiny_run, "quantize.ckpt")
    result = subprocess.run(
        [sys.executable, "tools/quantize.py", "--run", str(tmp / "run"), "--checkpoint",
         str(path), "--out-dir", str(tmp / "quantized"), "--precision", "int8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "--allow-pickle" in last_line(result) and not marker.exists()


def test_mmf_run_resumes_from_a_crafted_pickle_only_when_allowed(tiny_run):
    tmp, env = tiny_run
    path, marker = crafted(tiny_run, "resume.ckpt")
    refused = run("mmf_run", tmp / "refused", tmp / "data", *QUICK,
                  f"checkpoint.resume_file={path}", env=env, check=False)
    assert refused.returncode == 2
    assert last_line(refused).startswith(f"mmf_run: error: {path}: holds more than tensors")
    assert "checkpoint.allow_pickle=True" in last_line(refused) and not marker.exists()
    allowed = run("mmf_run", tmp / "allowed", tmp / "data", *QUICK,
                  f"checkpoint.resume_file={path}", "checkpoint.allow_pickle=True", env=env)
    assert marker.exists() and "unpickling in full" in allowed.stdout + allowed.stderr


def test_mmf_run_stops_on_a_checkpoint_that_does_not_fit(tiny_run):
    tmp, env = tiny_run
    path = tmp / "foreign.ckpt"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, path)
    result = run("mmf_run", tmp / "foreign", tmp / "data", *QUICK,
                 f"checkpoint.resume_file={path}", env=env, check=False)
    assert result.returncode == 2
    line = last_line(result)
    assert "does not fit the model" in line and "'encoder.weight'" in line
    assert "'dense_encoder.layers.0.weight'" in line and "checkpoint.strict=False" in line
    run("mmf_run", tmp / "relaxed", tmp / "data", *QUICK,
        f"checkpoint.resume_file={path}", "checkpoint.strict=False", env=env)
