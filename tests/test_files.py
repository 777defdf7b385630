"""mmf_rec/files.py: the one checksum and the one atomic write."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mmf_rec.files import atomic_path, atomic_write, sha256_file, umask


def test_sha256_file_of_known_bytes(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(str(empty)) == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_sha256_file_reads_past_one_block(tmp_path):
    import hashlib

    data = os.urandom((1 << 20) + 123)
    path = tmp_path / "big"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_atomic_write_writes_bytes_and_text_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "sub" / "out.json"  # the parent is created
    atomic_write(target, "naïve\n")
    assert target.read_bytes() == "naïve\n".encode("utf-8")
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask()


def test_a_failed_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp, open(tmp, "w") as f:
            f.write("half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_first_write_leaves_no_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.npy"):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old")
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, signal, sys
        from mmf_rec.files import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            tmp.write_bytes(bytes(1 << 20))
            os.kill(os.getpid(), signal.SIGKILL)
        """), str(target)])
    assert killed.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    left = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and left[0].startswith(".index.faiss.") and left[0].endswith(".tmp")
