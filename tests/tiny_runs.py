"""Tiny real ``mmf_run`` / ``mmf_predict`` runs shared by the checkpoint,
resume, zoo, predict and service tests, and a fresh interpreter for the
start-up tests (not a test module itself)."""

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def run_python(code, env_extra=None):
    """``code`` (dedented) in a fresh interpreter of this environment, started
    outside the checkout and without ``MMF_USER_DIR``: what any program gets
    from the installed package and its start-up file alone."""
    env = {k: v for k, v in os.environ.items() if k != "MMF_USER_DIR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)


DATA = [
    "dataset_config.kbrec_synthetic.generator.num_users=300",
    "dataset_config.kbrec_synthetic.generator.num_items=150",
    "dataset_config.kbrec_synthetic.generator.num_interactions=20000",
]
# 16,000 training rows: 63 batches of 256 per epoch (the last one partial), so
# checkpoints every 20 updates fall mid-epoch.
TRAIN = [
    "training.batch_size=256",
    "training.max_updates=160",
    "training.log_interval=20",
    "training.evaluation_interval=40",
    "training.checkpoint_interval=20",
]


def environment(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMF_", "MMF_REC_"))}
    env["MMF_CACHE_DIR"] = str(tmp_path / "cache")
    env["OMP_NUM_THREADS"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def command(tool, save_dir, data_dir, *args, config="projects/kbrec/dlrm.yaml"):
    return [os.path.join(BIN, tool), f"config={config}", f"env.save_dir={save_dir}",
            f"env.data_dir={data_dir}", *DATA, *args]


def run(tool, save_dir, data_dir, *args, env, check=True, config="projects/kbrec/dlrm.yaml"):
    result = subprocess.run(
        command(tool, save_dir, data_dir, *args, config=config),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    if check:
        assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


# -- a tiny retrieve-then-rank pipeline, and the service CLI -----------------------------
# for the service tests (test_serving.py, test_browser.py): a two_tower, its index and
# an ids-only dlrm_mm, trained for 20 updates
SERVING = [
    *DATA,
    "training.batch_size=256",
    "training.max_updates=20",
    "training.log_interval=10",
    "training.evaluation_interval=20",
    "training.checkpoint_interval=20",
    "training.num_workers=0",
]
# ids and features only: no text or image backbone to load, so the runs are quick
NO_KNOWLEDGE = ["model_config.{model}.modalities.text=false",
                "model_config.{model}.modalities.image=false"]


def train_pipeline(tmp):
    """Train ``tmp/two_tower`` and ``tmp/dlrm_mm`` with mmf_run and build the
    retriever's index; the two runs overlap (the ranker starts once the
    retriever's run has generated the shared data) to halve the wait."""
    env = environment(tmp)
    processes = {}
    for model, config in (("two_tower", "two_tower"), ("dlrm_mm", "dlrm_mm_ids")):
        if processes:
            deadline = time.time() + 300
            while not (tmp / "data" / "kbrec_synthetic" / "manifest.json").is_file():
                assert processes["two_tower"].poll() is None and time.time() < deadline
                time.sleep(0.2)
        args = [*SERVING, *(o.format(model=model) for o in NO_KNOWLEDGE)]
        with open(tmp / f"{model}.log", "w") as log:  # a file: no pipe to fill up
            processes[model] = subprocess.Popen(
                [os.path.join(BIN, "mmf_run"), f"config=projects/kbrec/{config}.yaml",
                 f"env.save_dir={tmp / model}", f"env.data_dir={tmp / 'data'}", *args],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    for model, process in processes.items():
        assert process.wait(timeout=600) == 0, (tmp / f"{model}.log").read_text()[-3000:]
    from mmf_rec.retrieval import build_index  # in this process: torch and mmf are loaded

    assert build_index.main(["--retriever", str(tmp / "two_tower")]) == 0
    return tmp


@contextlib.contextmanager
def serve_cli(*args, env):
    """``tools/serve.py ARGS --port 0`` in a subprocess; yields its URL once it
    announces the port it bound, and stops it afterwards."""
    with tempfile.TemporaryFile("w+") as log:  # a file: no pipe to fill up
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tools", "serve.py"), *args, "--port", "0"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            seen = []
            for line in process.stdout:  # ends when the process does
                seen.append(line)
                match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
                if match:
                    break
            else:
                process.wait(30)
                log.seek(0)
                raise AssertionError(f"serve.py did not start: {''.join(seen)[-2000:]}\n"
                                     f"{log.read()[-3000:]}")
            # keep reading what it prints, so it never blocks on a full pipe
            threading.Thread(target=process.stdout.read, daemon=True).start()
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            process.terminate()
            process.wait(30)
