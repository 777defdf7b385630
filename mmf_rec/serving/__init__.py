"""A local HTTP service for the retrieve-then-rank pipeline (``tools/serve.py``,
``cli``): the routes (``service``) on Starlette and uvicorn with the server's
limits (``server``), request checks (``requests``), dynamic batching
(``batcher``), the blocking model work (``engine``, over the user and item
records in ``records``), the fused ranking path (``fused``), the CPU's
features (``cpu``), metrics and the demo page; and the open-loop load
generator that measures it (``open_loop``, ``loadgen``: ``tools/loadgen.py``)."""
