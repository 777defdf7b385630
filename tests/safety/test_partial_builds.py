"""A killed prepare leaves an unfinished build beside its output; the next
prepare removes it, and only builds whose process is gone."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

from safety_files import write_shop

from mmf_rec.data import builder, custom, synthetic

KILLED = """
import os, signal, sys
from mmf_rec.data.report import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    (tmp / "train.npy").write_bytes(bytes(1 << 20))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_prepare_removes_what_a_killed_one_left(tmp_path):
    out = tmp_path / "shop"
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(out)])
    assert killed.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".shop.*.partial"))
    assert len(left) == 1 and (left[0] / "train.npy").is_file()
    live = tmp_path / f".shop.{socket.gethostname()}-{os.getppid()}.abc.partial"
    elsewhere = tmp_path / f".shop.another-host-{gone_pid()}.abc.partial"
    unknown = tmp_path / ".shop.x1y2z3.partial"
    for path in (live, elsewhere, unknown):
        path.mkdir()
    custom.prepare_from_yaml(write_shop(tmp_path / "src"), out)
    assert (out / "manifest.json").is_file() and not left[0].exists()
    assert live.is_dir() and elsewhere.is_dir() and unknown.is_dir()


def test_the_builder_removes_what_a_killed_generator_left(tmp_path):
    root = tmp_path / "kbrec_synthetic"
    stale = tmp_path / f".kbrec_synthetic.tmp-{gone_pid()}"
    old = tmp_path / f".kbrec_synthetic.old-{gone_pid()}"
    live = tmp_path / f".kbrec_synthetic.tmp-{os.getppid()}"
    for path in (stale, old, live):
        (path / "train").mkdir(parents=True)
    config = synthetic.GeneratorConfig.from_mapping(
        {"num_users": 60, "num_items": 30, "num_interactions": 1500})
    builder.ensure_generated(root, config)
    assert (root / "manifest.json").is_file()
    assert not stale.exists() and not old.exists() and live.is_dir()
