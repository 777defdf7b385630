"""How mmf_rec plugs into MMF where MMF offers no registry or subclass.

Most of mmf_rec reaches MMF through its registries (models, encoders,
builders, processors, metrics, the ``kbrec`` trainer and its
:class:`~mmf_rec.checkpoint.KBRecCheckpoint`). What remains are MMF's
import points, its command line and a few of its module-level functions;
:func:`install` sets those, once MMF has imported (under the
:mod:`mmf_rec.compat` shims, :mod:`.hook`):

- :mod:`.configuration`: plugins found because mmf_rec is installed, its
  default config, ``config=X.yaml`` naming model and dataset, and command-line
  values decoded as yaml would;
- :mod:`.zoo_keys`: ``kbrec.<model>.<name>`` keys in MMF's zoo functions, and
  archives unpacked safely;
- :mod:`.processes`: several processes on CPU as on CUDA, ``mmf_run``'s launcher.

A ``.pth`` file (``python -m mmf_rec.plugin --install-hook``, or shipped by
a wheel) calls :func:`arm` at interpreter start-up, so MMF's own console
scripts run with all of it. This module imports nothing heavy.
"""

MMF = "mmf"
# mmf_run's module: its ``run`` is replaced once it has loaded (it imports mmf,
# and so everything else, before it defines ``run``).
MMF_CLI_RUN = "mmf_cli.run"


def rebind(module, name, new):
    """Replace ``module.name`` and every copy that MMF's loaded modules
    imported with ``from module import name``."""
    import sys

    old = getattr(module, name)
    setattr(module, name, new)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith(("mmf.", "mmf_cli.")):
            if loaded.__dict__.get(name) is old:
                setattr(loaded, name, new)


def install():
    """mmf_rec's hooks into MMF; MMF is imported (idempotent)."""
    import sys

    from mmf_rec.plugin import configuration, processes, zoo_keys

    configuration.install()
    zoo_keys.install()
    processes.install()
    processes.replace_mmf_run(sys.modules.get(MMF_CLI_RUN))


def _load_cli_run(execute, module):
    execute()
    from mmf_rec.plugin import processes

    processes.replace_mmf_run(module)


def arm():
    """Run the compat shims and :func:`install` around the first ``import mmf``,
    and replace ``mmf_run``'s launcher when it loads."""
    from mmf_rec.plugin import hook

    hook.arm(MMF_CLI_RUN, _load_cli_run)
    hook.arm(MMF, lambda execute, module: hook.load_mmf(execute, install))


def apply():
    """``import mmf`` with the shims and mmf_rec's hooks, in this process
    (safe to call repeatedly)."""
    from mmf_rec import compat

    compat.apply()
    install()
