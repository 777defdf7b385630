"""The model zoo: export a run, load it back by key offline, and every way
it can fail with one clear error (mmf_rec/zoo/, tools/export_zoo.py)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
import yaml

from tiny_runs import REPO, TRAIN, environment, last_line, run

from mmf_rec.files import sha256_file

KEY = "kbrec.dlrm.tiny"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zoo")
    zoo_file = tmp / "models.yaml"
    zoo_file.write_text("# my zoo\nkbrec: {}\n")
    env = environment(tmp, MMF_REC_MODEL_ZOO=zoo_file, MMF_REC_ZOO_CACHE=tmp / "zoo_cache")
    run("mmf_run", tmp / "run", tmp / "data", *TRAIN, "training.max_updates=80", env=env)
    result = subprocess.run(
        [sys.executable, "tools/export_zoo.py", "--run", str(tmp / "run"), "--key", KEY,
         "--out", str(tmp / "store"), "--zoo", str(zoo_file)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, env, zoo_file, json.loads(result.stdout)


@pytest.fixture
def zoo_env(exported, monkeypatch, tmp_path):
    """This process reads the test's zoo file, with a fresh cache."""
    tmp, _, zoo_file, _ = exported
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(zoo_file))
    monkeypatch.setenv("MMF_REC_ZOO_CACHE", str(tmp_path / "cache"))
    import mmf  # noqa: F401  (shims, mmf_rec's hooks, registrations)
    import mmf_rec
    from mmf_rec import zoo

    mmf_rec.setup_imports()
    return zoo


def with_entry(zoo_file, tmp_path, **resource):
    """A copy of the zoo file whose entry's resource is changed."""
    tree = yaml.safe_load(zoo_file.read_text())
    tree["kbrec"]["dlrm"]["tiny"]["resources"][0].update(resource)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_export_writes_an_mmf_zoo_archive_and_entry(exported):
    tmp, _, zoo_file, result = exported
    archive = tmp / "store" / f"{KEY}.tar.gz"
    assert result["archive"] == str(archive) and result["sha256"] == sha256_file(archive)
    text = zoo_file.read_text()
    assert text.startswith("# my zoo\n")  # the file's comments are kept
    node = yaml.safe_load(text)["kbrec"]["dlrm"]["tiny"]
    assert node["resources"] == [{"url": archive.as_uri(), "file_name": f"{KEY}.tar.gz",
                                  "hashcode": sha256_file(archive), "compressed": True}]
    assert node["version"].endswith(sha256_file(archive)[:12])
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["config.yaml", "dlrm.pth", "zoo.json"]
        meta = json.load(tar.extractfile("zoo.json"))
        weights = torch.load(tar.extractfile("dlrm.pth"), weights_only=True)
    assert meta["model"] == "dlrm" and meta["dataset"] == "kbrec_synthetic"
    schema = meta["data"]["schema"]["features"]
    assert {f["name"]: f["cardinality"] for f in schema["sparse"]}["user_id"] == 300
    assert "items/category" in meta["data"]["vocabulary"]["parts"]
    assert node["depends_on"]["schema"] == meta["data"]["schema"]["fingerprint"]
    best = torch.load(tmp / "run" / "best.ckpt", weights_only=True)["model"]
    assert weights.keys() == best.keys()
    assert all(torch.equal(weights[k], best[k]) for k in best)


def test_export_again_updates_the_entry_in_place(exported, zoo_env, tmp_path):
    tmp, _, zoo_file, _ = exported
    copy = tmp_path / "models.yaml"
    shutil.copy(zoo_file, copy)
    for key in (KEY, "kbrec.dlrm.other"):
        zoo_env.export(tmp / "run", key, out_dir=tmp_path / "store", zoo_file=copy,
                       checkpoint="current")
    tree = yaml.safe_load(copy.read_text())
    assert sorted(tree["kbrec"]["dlrm"]) == ["other", "tiny"]
    url = tree["kbrec"]["dlrm"]["tiny"]["resources"][0]["url"]
    assert url == (tmp_path / "store" / f"{KEY}.tar.gz").as_uri()  # replaced, not added
    with pytest.raises(zoo_env.ZooMismatchError, match="the run trained 'dlrm'"):
        zoo_env.export(tmp / "run", "kbrec.dlrm_mm.tiny", out_dir=tmp_path, zoo_file=copy)


def test_mmf_run_resume_zoo_reproduces_the_runs_test_metrics(exported):
    tmp, env, _, _ = exported
    save = tmp / "from_zoo"
    result = run("mmf_run", save, tmp / "data", "training.batch_size=256",
                 f"checkpoint.resume_zoo={KEY}", "run_type=test", env=env)
    assert f"zoo model '{KEY}' fits this run's data and model" in result.stdout + result.stderr
    trained = json.loads((tmp / "run" / "metrics.json").read_text())
    loaded = json.loads((save / "metrics.json").read_text())
    for split in ("test", "cold"):
        assert loaded[split]["auc"] == trained[split]["auc"]
        assert loaded[split]["log_loss"] == trained[split]["log_loss"]


def test_from_pretrained_predicts_as_mmf_predict_by_key(exported, zoo_env):
    tmp, env, _, _ = exported
    save = tmp / "predict_by_key"
    run("mmf_predict", save, tmp / "data", "training.batch_size=256", "run_type=test",
        f"checkpoint.resume_zoo={KEY}", "evaluation.predict_file_format=csv", env=env)
    from mmf.common.registry import registry

    from mmf_rec.data.dataset import KBRecDataset
    from mmf_rec.data.prepared import load_prepared
    from mmf_rec.predict import read_predictions

    model = registry.get_model_class("dlrm").from_pretrained(KEY)
    assert not model.training
    best = torch.load(tmp / "run" / "best.ckpt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)

    data = load_prepared(tmp / "data" / "kbrec_synthetic")
    test = KBRecDataset(data, "test")
    with torch.no_grad():
        scores = model(test.__getitems__(range(len(test))))["scores"].reshape(-1)
    rows = read_predictions(save / "predictions" / "kbrec_synthetic_test.csv")
    assert len(rows) == len(test) == 1839
    from_file = torch.tensor([r["score"] for r in rows], dtype=torch.float32)
    assert torch.equal(from_file, scores)


def test_mmf_zoo_entries_stay_visible(exported, zoo_env, tmp_path):
    from mmf.common.registry import registry
    from mmf.utils import download
    from omegaconf import OmegaConf

    mmf_zoo = tmp_path / "mmf_models.yaml"
    mmf_zoo.write_text("visual_bert:\n  pretrained:\n    coco:\n"
                       "      version: '1.0_2020_04_29'\n      resources: []\n")
    merged = zoo_env.model_zoo(mmf_zoo)
    assert merged["visual_bert"]["pretrained"]["coco"]["version"] == "1.0_2020_04_29"
    assert merged["kbrec"]["dlrm"]["tiny"]["version"].startswith("1.0_")

    previous = registry.get("config", no_warning=True)
    registry.register("config", OmegaConf.create(
        {"env": {"model_zoo": str(mmf_zoo), "data_dir": str(tmp_path / "data"),
                 "user_dir": ""}}))
    try:
        # MMF's key: MMF's own loader and zoo file (no resources: nothing to download)
        path = download.download_pretrained_model("visual_bert.pretrained.coco")
        assert path == str(tmp_path / "data" / "models" / "visual_bert.pretrained.coco")
        # mmf_rec's key: fetched offline into mmf_rec's cache
        ours = download.download_pretrained_model(KEY)
        assert sorted(os.listdir(ours)) == [".built.json", "config.yaml", "dlrm.pth",
                                            f"{KEY}.tar.gz", "zoo.json"]
    finally:
        registry.unregister("config")
        if previous is not None:
            registry.register("config", previous)


@pytest.mark.parametrize("where", ["directory", "unpacked", "plain path"])
def test_resource_can_be_a_directory_or_a_plain_path(exported, zoo_env, tmp_path, monkeypatch,
                                                     where):
    tmp, _, zoo_file, _ = exported
    archive = tmp / "store" / f"{KEY}.tar.gz"
    if where == "directory":
        url = str(archive.parent)
    elif where == "unpacked":
        url = tmp_path / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(url, filter="data")
        url = url.as_uri()
    else:
        url = str(archive)
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(with_entry(zoo_file, tmp_path, url=url)))
    state = zoo_env.load(KEY).state_dict
    assert "top_mlp.0.weight" in state or any(k.startswith("top_mlp") for k in state)


def test_checksum_mismatch_names_the_file(exported, zoo_env, tmp_path, monkeypatch):
    tmp, _, zoo_file, _ = exported
    damaged = tmp_path / f"{KEY}.tar.gz"
    data = bytearray((tmp / "store" / f"{KEY}.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(with_entry(zoo_file, tmp_path,
                                                          url=damaged.as_uri())))
    from mmf.common.registry import registry

    with pytest.raises(zoo_env.ZooChecksumError, match="checksum mismatch") as error:
        registry.get_model_class("dlrm").from_pretrained(KEY)
    assert str(damaged) in str(error.value) and sha256_file(damaged) in str(error.value)


def test_missing_file_names_the_url(exported, zoo_env, tmp_path, monkeypatch):
    _, _, zoo_file, _ = exported
    gone = (tmp_path / "nowhere" / f"{KEY}.tar.gz").as_uri()
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(with_entry(zoo_file, tmp_path, url=gone)))
    from mmf.common.registry import registry

    with pytest.raises(zoo_env.ZooFileError, match="does not exist") as error:
        registry.get_model_class("dlrm").from_pretrained(KEY)
    assert gone in str(error.value)


def test_unknown_key_lists_the_zoo(zoo_env):
    with pytest.raises(zoo_env.ZooKeyError, match=r"no zoo entry 'kbrec.dlrm.nope'.*tiny"):
        zoo_env.load("kbrec.dlrm.nope")


def test_wrong_model_class_is_refused(zoo_env):
    from mmf.common.registry import registry

    with pytest.raises(zoo_env.ZooMismatchError, match="'dlrm'"):
        registry.get_model_class("dlrm_mm").from_pretrained(KEY)


def test_schema_mismatch_is_one_error_naming_the_feature(exported):
    tmp, env, _, _ = exported
    result = run("mmf_run", tmp / "other_users", tmp / "data_301",
                 "dataset_config.kbrec_synthetic.generator.num_users=301",
                 "training.batch_size=256", f"checkpoint.resume_zoo={KEY}", "run_type=test",
                 env=env, check=False)
    assert result.returncode != 0
    line = last_line(result)
    assert line.startswith(f"mmf_run: error: zoo model '{KEY}' does not fit"), line
    assert "Traceback" not in result.stderr
    assert "schema differs" in line
    assert "'user_id': cardinality 300 in the zoo model, 301 here" in line


def test_vocabulary_mismatch_is_one_error_naming_the_table(exported):
    """Same features and sizes, other items: the ids mean something else."""
    tmp, env, _, _ = exported
    result = run("mmf_run", tmp / "other_seed", tmp / "data_seed2",
                 "dataset_config.kbrec_synthetic.generator.seed=2",
                 "training.batch_size=256", f"checkpoint.resume_zoo={KEY}", "run_type=test",
                 env=env, check=False)
    assert result.returncode != 0
    line = last_line(result)
    assert line.startswith(f"mmf_run: error: zoo model '{KEY}' does not fit"), line
    assert "Traceback" not in result.stderr
    assert "schema differs" not in line
    assert "vocabularies differ" in line and "items/category" in line


def test_weights_archive_holds_only_tensors(exported):
    """zoo weights load with torch.load's safe default; nothing else is pickled."""
    tmp, _, _, _ = exported
    with tarfile.open(tmp / "store" / f"{KEY}.tar.gz") as tar:
        state = torch.load(tar.extractfile("dlrm.pth"), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert np.isfinite(sum(float(v.float().sum()) for v in state.values()))
