"""MMF 1.0.0rc10 on today's torch, transformers, omegaconf and Python.

The PyPI release of MMF predates the stack it must run on; these shims make
it import and run there, and backfill the parts of MMF main's public API
(``registry.register_encoder``, ``Encoder``) that mmf_rec's plugins are
written against. Shims detect features, not versions, so the same plugins
run on an MMF installed from source. Nothing here is mmf_rec's own
behaviour: that plugs into MMF through :mod:`mmf_rec.plugin`.

Importing this package is cheap; :func:`apply` does the work.
"""


def apply(after=None):
    """Make ``import mmf`` work in this process, then call ``after()``; safe
    to call repeatedly."""
    import sys

    from mmf_rec.compat import hook, shims

    if "mmf" in sys.modules:
        shims.before_import()
        shims.after_import()
        if after is not None:
            after()
        return
    hook.arm("mmf", lambda execute, module: hook.load_mmf(execute, after))
    import mmf  # noqa: F401  (the hook runs the shims around this import)
