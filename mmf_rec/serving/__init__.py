"""A local HTTP service for the retrieve-then-rank pipeline (``tools/serve.py``):
dynamic batching (``batcher``), the blocking model work (``engine``), the
routes (``service``), a small asyncio HTTP server (``http``), metrics and
the demo page."""
