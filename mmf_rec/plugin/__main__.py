"""``python -m mmf_rec.plugin --install-hook``: arm the plugin at start-up.

A wheel install ships ``mmf_rec.pth`` itself; an editable install
(``pip install -e .``) cannot, so the Makefile runs this after it.
"""

import argparse
import os
import sysconfig

PTH_NAME = "mmf_rec.pth"
# the same line under its earlier name, which would run it twice
STALE_PTH_NAME = "mmf_rec_compat.pth"
# A .pth line starting with "import" is executed at start-up. It must stay
# harmless when mmf_rec has been uninstalled but this file was left behind.
PTH_LINE = (
    "import importlib.util as _u; "
    "_u.find_spec('mmf_rec') and __import__('mmf_rec.plugin').plugin.arm()\n"
)


def install_hook(site_packages=None) -> str:
    site_packages = site_packages or sysconfig.get_paths()["purelib"]
    path = os.path.join(site_packages, PTH_NAME)
    with open(path, "w") as f:
        f.write(PTH_LINE)
    stale = os.path.join(site_packages, STALE_PTH_NAME)
    if os.path.exists(stale):
        os.remove(stale)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install-hook", action="store_true", required=True)
    parser.parse_args()
    print(f"wrote {install_hook()}")


if __name__ == "__main__":
    main()
