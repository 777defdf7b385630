"""mmf-rec: multimodal, knowledge-based recommenders as MMF plugins.

This package is imported at interpreter start-up (by ``mmf_rec.pth``), so it
must stay free of heavy imports: no torch, no mmf here.
"""

__version__ = "0.1.0"


def setup_imports():
    """Import every module that registers something with MMF's registry."""
    from mmf_rec import registrations  # noqa: F401
