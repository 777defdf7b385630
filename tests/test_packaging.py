"""A non-editable install ships the yaml files and the start-up hook."""

import os
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_ships_configs_and_start_up_hook(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--no-build-isolation", "-w", str(tmp_path / "dist"), REPO],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("mmf_rec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in ("mmf_defaults.yaml", "models/dlrm.yaml",
                   "datasets/kbrec_synthetic.yaml", "encoders/sparse.yaml"):
        assert f"mmf_rec/configs/{config}" in names
    assert "mmf_rec.pth" in names
    pth = zipfile.ZipFile(wheel).read("mmf_rec.pth").decode()
    assert pth.startswith("import ") and "mmf_rec.plugin" in pth

    # Unpacked alone (no checkout beside it), the package finds its configs.
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, "-c",
         "import mmf_rec.paths as p; print(p.config_path('models', 'dlrm.yaml'))"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        cwd=str(tmp_path), capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "site/mmf_rec/configs/models/dlrm.yaml")
