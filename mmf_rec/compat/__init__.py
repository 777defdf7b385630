"""MMF 1.0.0rc10 on today's torch, transformers, omegaconf and Python.

The PyPI release of MMF predates the stack it must run on; these shims make
it import and run there, and backfill the parts of MMF main's public API
(``registry.register_encoder``, ``Encoder``) that mmf_rec's plugins are
written against. Shims detect features, not versions, so the same plugins
run on an MMF installed from source. Nothing here is mmf_rec's own
behaviour: that plugs into MMF through :mod:`mmf_rec.plugin`.

Importing this package is cheap; :func:`apply` does the work (at start-up,
:mod:`mmf_rec.plugin` runs the same shims around MMF's own import).
"""


def apply():
    """Make ``import mmf`` work in this process; safe to call repeatedly."""
    import importlib

    from mmf_rec.compat import shims

    shims.around_mmf_import(lambda: importlib.import_module("mmf"))
