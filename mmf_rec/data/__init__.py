"""Prepared data, the synthetic generator, and the MMF dataset glue.

``prepared`` and ``synthetic`` need only numpy and Pillow. The MMF builder
is imported (and so registered) here once mmf is loaded, which is when
MMF's import points call ``mmf_rec.setup_imports()``; importing the package
without mmf stays cheap for tools that only read or write prepared data.
"""

import sys

if "mmf" in sys.modules:
    from mmf_rec.data import builder  # noqa: F401  registers kbrec_synthetic
