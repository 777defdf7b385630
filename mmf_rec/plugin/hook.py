"""Run code around the first import of one of MMF's modules.

MMF's console scripts (``mmf_run``, ``mmf_predict``) import mmf before any
user code runs, so the compat shims and mmf_rec's hooks must be armed at
interpreter start-up, by a ``.pth`` file. Arming only puts a finder on ``sys.meta_path``: nothing is
imported until a program imports the target, so unrelated programs start
as fast as before.
"""

import importlib.abc
import sys


class _WrappingLoader(importlib.abc.Loader):
    """A module's own loader, with ``around(execute, module)`` running its code."""

    def __init__(self, loader, around):
        self._loader = loader
        self._around = around

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._around(lambda: self._loader.exec_module(module), module)


class ImportHook(importlib.abc.MetaPathFinder):
    """Finds ``target`` once, then leaves ``sys.meta_path``; the module loads
    through its own loader, wrapped by ``around``."""

    def __init__(self, target, around):
        self.target = target
        self._around = around

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.target:
            return None
        remove(self.target)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                spec.loader = _WrappingLoader(spec.loader, self._around)
                return spec
        return None


def armed(target) -> bool:
    return any(isinstance(f, ImportHook) and f.target == target for f in sys.meta_path)


def remove(target) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, ImportHook) and f.target == target)]


def arm(target, around) -> None:
    """Wrap the first import of ``target`` in ``around`` (idempotent; nothing
    happens when it is imported already)."""
    if target not in sys.modules and not armed(target):
        sys.meta_path.insert(0, ImportHook(target, around))


def load_mmf(execute, after=None):
    """Run MMF's import with the shims around it, then ``after()``."""
    from mmf_rec.compat import shims

    shims.around_mmf_import(execute)
    if after is not None:
        after()
