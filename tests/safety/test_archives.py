"""No archive member lands outside the folder it is unpacked into, MMF's
own ``decompress`` (zoo entries with http(s) or mmf:// URLs) included."""

import io
import tarfile
import zipfile

import pytest

import mmf_rec.plugin

mmf_rec.plugin.apply()

import mmf.utils.download as download  # noqa: E402

from mmf_rec.safe_load import ArchiveError  # noqa: E402


def tar_with(path, name):
    with tarfile.open(path, "w:gz") as tar:
        for member in ("model.pth", name):
            info = tarfile.TarInfo(member)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))


def test_mmf_decompress_refuses_a_tar_member_outside_the_folder(tmp_path):
    folder = tmp_path / "models" / "key"
    folder.mkdir(parents=True)
    tar_with(folder / "model.tar.gz", "../../escaped.txt")
    with pytest.raises(ArchiveError, match=r"escaped\.txt"):
        download.decompress(str(folder), "model.tar.gz")
    assert not (tmp_path / "escaped.txt").exists()


def test_mmf_decompress_refuses_a_zip_member_outside_the_folder(tmp_path):
    folder = tmp_path / "key"
    folder.mkdir()
    with zipfile.ZipFile(folder / "model.zip", "w") as zipped:
        zipped.writestr("model.pth", b"hi")
        zipped.writestr("../escaped.txt", b"hi")
    with pytest.raises(ArchiveError, match=r"'\.\./escaped\.txt' would be written outside"):
        download.decompress(str(folder), "model.zip")
    assert not (tmp_path / "escaped.txt").exists() and not (folder / "model.pth").exists()


def test_mmf_decompress_unpacks_a_sound_archive(tmp_path):
    tar_with(tmp_path / "model.tar.gz", "config.yaml")
    download.decompress(str(tmp_path), "model.tar.gz", delete_original=True)
    assert (tmp_path / "config.yaml").read_bytes() == b"hi"
    assert not (tmp_path / "model.tar.gz").exists()
