"""Where mmf_rec's yaml files live, in a source checkout and in a wheel.

A checkout keeps them at the top level (``configs/``), as MMF users expect;
a wheel ships the same files inside the package (``mmf_rec/configs/``).
"""

import os

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def configs_dir() -> str:
    for candidate in (
        os.path.join(os.path.dirname(_PACKAGE_DIR), "configs"),
        os.path.join(_PACKAGE_DIR, "configs"),
    ):
        if os.path.isfile(os.path.join(candidate, "mmf_defaults.yaml")):
            return candidate
    raise FileNotFoundError(
        f"mmf_rec's configs/ directory is missing: looked next to {_PACKAGE_DIR} "
        "and inside it for configs/mmf_defaults.yaml; reinstall mmf_rec"
    )


def config_path(*parts: str) -> str:
    """Absolute path of a yaml under configs/, checked to exist."""
    path = os.path.join(configs_dir(), *parts)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mmf_rec config file is missing: {path}")
    return path
