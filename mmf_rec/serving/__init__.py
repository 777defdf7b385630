"""A local HTTP service for the retrieve-then-rank pipeline (``tools/serve.py``):
the routes (``service``) on Starlette and uvicorn with the server's limits
(``server``), request checks (``requests``), dynamic batching (``batcher``),
the blocking model work (``engine``), the fused ranking path (``fused``),
the CPU's features (``cpu``), metrics and the demo page."""
