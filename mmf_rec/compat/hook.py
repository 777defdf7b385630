"""Run mmf_rec's compatibility patches around the first ``import mmf``.

MMF's own console scripts (``mmf_run``, ``mmf_predict``) import mmf before
any user code runs, so the patches must be armed at interpreter start-up.
The ``mmf_rec_compat.pth`` file in site-packages calls :func:`install`,
which only puts a finder on ``sys.meta_path``: nothing is imported until a
program actually imports mmf, so unrelated programs start as fast as before.
A second finder waits for ``mmf_cli.run`` (``mmf_run``'s module) to put
mmf_rec's launcher in place of its ``run`` once it has loaded.
"""

import importlib.abc
import sys

_TARGET = "mmf"


class _PatchingLoader(importlib.abc.Loader):
    """Wraps mmf's own loader: patch before its code runs, finish after."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        from mmf_rec.compat import patches

        with patches.while_mmf_loads():
            self._loader.exec_module(module)
        patches.after_import()


class MMFImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        uninstall()
        from mmf_rec.compat import patches

        patches.before_import()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


# mmf_run's module: its ``run`` is replaced once it has loaded (it imports mmf,
# and so the patches, before it defines ``run``); see patches.patch_mmf_cli_run.
_CLI_RUN = "mmf_cli.run"


class _CliRunLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        from mmf_rec.compat import patches

        patches.patch_mmf_cli_run(module)


class MMFCliRunHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _CLI_RUN:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, MMFCliRunHook)]
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                spec.loader = _CliRunLoader(spec.loader)
                return spec
        return None


def install():
    """Arm the hook (idempotent); a no-op once mmf is already imported."""
    if _CLI_RUN not in sys.modules and not any(
        isinstance(f, MMFCliRunHook) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, MMFCliRunHook())
    if _TARGET in sys.modules:
        return
    if not any(isinstance(f, MMFImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, MMFImportHook())


def uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, MMFImportHook)]
