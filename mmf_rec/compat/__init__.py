"""MMF 1.0.0rc10 on today's torch, transformers, omegaconf and Python.

The PyPI release of MMF predates the stack it must run on; this package
makes it import and train there, and backfills the parts of MMF main's
public API (``registry.register_encoder``, ``Encoder``) that mmf_rec's
plugins are written against. Patches detect features, not versions, so the
same plugins run on an MMF installed from source.

Importing this package is cheap (it runs at interpreter start-up through a
.pth file); :func:`apply` does the work.
"""


def apply():
    """Make ``import mmf`` work in this process; safe to call repeatedly."""
    import sys

    from mmf_rec.compat import hook, patches

    if "mmf" in sys.modules:
        patches.before_import()
        patches.after_import()
        return
    hook.install()
    import mmf  # noqa: F401  (the hook patches around this import)
