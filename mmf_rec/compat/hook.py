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
# mmf_run's module: its ``run`` is replaced once it has loaded (it imports mmf,
# and so the patches, before it defines ``run``); see patches.patch_mmf_cli_run.
_CLI_RUN = "mmf_cli.run"


class _WrappingLoader(importlib.abc.Loader):
    """A module's own loader, with ``around(execute, module)`` running its code."""

    def __init__(self, loader, around):
        self._loader = loader
        self._around = around

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._around(lambda: self._loader.exec_module(module), module)


class MMFImportHook(importlib.abc.MetaPathFinder):
    """Finds one of mmf's modules once, then leaves ``sys.meta_path``; the
    module loads through its own loader, wrapped by ``around``."""

    def __init__(self, target, around, before=None):
        self.target = target
        self._around = around
        self._before = before

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.target:
            return None
        _remove(self.target)
        if self._before is not None:
            self._before()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                spec.loader = _WrappingLoader(spec.loader, self._around)
                return spec
        return None


def _patch_mmf():
    from mmf_rec.compat import patches

    patches.before_import()


def _load_mmf(execute, module):
    """Patch before mmf's code runs, finish after."""
    from mmf_rec.compat import patches

    with patches.while_mmf_loads():
        execute()
    patches.after_import()


def _load_cli_run(execute, module):
    execute()
    from mmf_rec.compat import patches

    patches.patch_mmf_cli_run(module)


def _armed(target) -> bool:
    return any(isinstance(f, MMFImportHook) and f.target == target for f in sys.meta_path)


def _remove(target) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, MMFImportHook) and f.target == target)]


def install():
    """Arm the hooks (idempotent); each is a no-op once its module is imported."""
    if _CLI_RUN not in sys.modules and not _armed(_CLI_RUN):
        sys.meta_path.insert(0, MMFImportHook(_CLI_RUN, _load_cli_run))
    if _TARGET not in sys.modules and not _armed(_TARGET):
        sys.meta_path.insert(0, MMFImportHook(_TARGET, _load_mmf, before=_patch_mmf))


def uninstall():
    _remove(_TARGET)
