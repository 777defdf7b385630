"""A user error in ``mmf_run`` ends it with one line and a non-zero exit."""

import json
import os
import shutil
import subprocess

import numpy as np

from safety_files import QUICK
from tiny_runs import BIN, REPO


def broken_copy(tiny_run, name):
    tmp, _ = tiny_run
    data = tmp / name
    shutil.copytree(tmp / "data" / "kbrec_synthetic", data)
    return data


def run_on(tiny_run, data, **env):
    tmp, base = tiny_run
    command = [os.path.join(BIN, "mmf_run"), "config=projects/kbrec/dlrm.yaml",
               "datasets=kbrec_prepared", f"dataset_config.kbrec_prepared.data_dir={data}",
               f"env.save_dir={tmp / ('run_' + data.name)}", *QUICK]
    return subprocess.run(command, cwd=REPO, env={**base, **env}, capture_output=True,
                          text=True, timeout=600)


def test_a_truncated_column_ends_the_run_with_one_line(tiny_run):
    data = broken_copy(tiny_run, "truncated")
    column = data / "train" / "label.npy"
    column.write_bytes(column.read_bytes()[:200])
    result = run_on(tiny_run, data)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mmf_run: error: {column}: not a readable .npy (truncated")
    debug = run_on(tiny_run, data, MMF_REC_DEBUG="1")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_manifest_with_the_wrong_row_count_ends_the_run_with_one_line(tiny_run):
    data = broken_copy(tiny_run, "rows")
    manifest = json.loads((data / "manifest.json").read_text())
    rows = manifest["splits"]["val"]["rows"]
    manifest["splits"]["val"]["rows"] = rows + 1
    (data / "manifest.json").write_text(json.dumps(manifest))
    result = run_on(tiny_run, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"the manifest says the table has {rows + 1}" in last
    assert np.load(data / "val" / "label.npy").shape == (rows,)
