"""Files written whole or not at all, and their checksums.

Published files (prepared columns and manifests, index files, zoo archives
and zoo files, predictions, recommendations, benchmark results) are written
through :func:`atomic_path` or :func:`atomic_write`, and the checksums the
project records and checks (manifests, index metadata, zoo entries) are
:func:`sha256_file`. Standard library only, so data preparation can use it
without torch or mmf.
"""

import functools
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def sha256_file(path: PathLike) -> str:
    """The hex sha256 of a file's bytes. Read in 1 MiB blocks, so weights,
    indexes and archives need not fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process's umask. The only way to read it is to set it (and set it
    back), so it is read once, not again while other threads create files."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file there. When the
    block ends without an error the file is flushed to disk and renamed to
    ``path`` in one step.

    Why: a reader never sees half a file under the final name, and a process
    that fails or is killed mid-write leaves the old ``path`` as it was (a
    killed one may leave its hidden ``.<name>.*.tmp`` beside it; a failed
    one removes it). The parent directory is created if missing; the file
    gets the permissions a plain ``open()`` would give it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp's file is owner-only
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: PathLike, data: Union[bytes, str]) -> None:
    """Write ``data`` (a str as UTF-8) to ``path`` whole or not at all; see
    :func:`atomic_path`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
