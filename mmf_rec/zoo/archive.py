"""A zoo model's archive: the files at its root, packed reproducibly and
unpacked through :mod:`mmf_rec.safe_load`'s checks."""

import gzip
import io
import tarfile
from pathlib import Path
from typing import Mapping

from mmf_rec import safe_load
from mmf_rec.zoo.errors import ZooFileError

META = "zoo.json"
CONFIG = "config.yaml"
FORMAT = "mmf_rec.zoo/1"


def write_tar_gz(path: Path, files: Mapping[str, Path]) -> None:
    """A reproducible archive: sorted names, no timestamps or owners."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                 filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = Path(files[name]).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


def unpack(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest``; one that safe_load refuses is a ZooFileError."""
    try:
        safe_load.extract(archive, dest)
    except safe_load.ArchiveError as e:
        raise ZooFileError(str(e)) from None
