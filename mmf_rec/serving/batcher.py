"""Dynamic batching of concurrent requests, as TorchServe's batch_size /
max_batch_delay do.

Callers ``await batcher.submit(item)`` from an asyncio event loop. The first
item to arrive opens a batch; the batch is handed to ``handler`` (a plain,
blocking function run in a worker thread, never on the event loop) when it
holds ``max_batch_size`` items or when its oldest item has waited
``max_wait_ms``, whichever comes first. Items that arrive while the worker is
busy queue up and form the next batch; if the oldest of them has already
waited ``max_wait_ms`` it is dispatched at once, so batching adds at most
``max_wait_ms`` to a request on top of the time spent queueing behind other
batches. ``max_batch_size=1`` turns batching off (one call per request, in
arrival order), which is the baseline the load generator compares with.

``handler(items)`` returns one result per item, in order. A result that is an
``Exception`` instance is raised to that item's caller only; an exception
raised by ``handler`` itself goes to every caller of the batch. Callers that
gave up (cancelled) before their batch was formed are left out of it.
"""

import asyncio
import collections
import concurrent.futures
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple


class BatcherClosed(RuntimeError):
    """``submit`` after ``close``."""


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    # worker threads, each running one batch at a time
    workers: int = 1

    def __post_init__(self):
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {self.workers!r}")


# (size, seconds the oldest item waited before dispatch, seconds the handler ran)
BatchObserver = Callable[[int, float, float], None]


class DynamicBatcher:
    def __init__(self, handler: Callable[[List[Any]], Sequence[Any]],
                 config: Optional[BatchConfig] = None,
                 on_batch: Optional[BatchObserver] = None, **kwargs):
        self.config = config or BatchConfig(**kwargs)
        if config is not None and kwargs:
            raise TypeError("give either config or its fields, not both")
        self._handler = handler
        self._on_batch = on_batch
        self._queue: Deque[Tuple[Any, asyncio.Future, float]] = collections.deque()
        self._wakeup: Optional[asyncio.Event] = None
        self._tasks: List[asyncio.Task] = []
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False
        self.batches = 0
        self.items = 0

    # -- the API -------------------------------------------------------------------------
    async def submit(self, item: Any) -> Any:
        """The handler's result for ``item``, once its batch has run."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        self._start()
        future = self._loop.create_future()
        self._queue.append((item, future, time.perf_counter()))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Run what is queued, then stop the workers and their threads."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._tasks, self._executor = [], None

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- the workers ---------------------------------------------------------------------
    def _start(self) -> None:
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.workers, thread_name_prefix="batcher")
        self._tasks = [self._loop.create_task(self._work())
                       for _ in range(self.config.workers)]

    async def _next_batch(self) -> List[Tuple[Any, asyncio.Future, float]]:
        """Wait for a first item, then until the batch is full or its oldest
        item's wait is up; [] when closed and drained."""
        max_size, max_wait = self.config.max_batch_size, self.config.max_wait_ms / 1000.0
        while not self._queue:
            if self._closed:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        while len(self._queue) < max_size and not self._closed:
            remaining = self._queue[0][2] + max_wait - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
            if not self._queue:  # another worker took them
                return await self._next_batch()
        batch = []
        while self._queue and len(batch) < max_size:
            entry = self._queue.popleft()
            if not entry[1].done():  # its caller has not given up
                batch.append(entry)
        if self._queue:
            self._wakeup.set()  # more waiting: let an idle worker start on them
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                if self._closed and not self._queue:
                    return
                continue
            items = [item for item, _, _ in batch]
            started = time.perf_counter()
            waited = started - batch[0][2]
            try:
                results = await self._loop.run_in_executor(self._executor, self._handler, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch handler returned {len(results)} results "
                                       f"for {len(items)} items")
            except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
                results = [error] * len(items)
            ran = time.perf_counter() - started
            self.batches += 1
            self.items += len(items)
            for (_, future, _), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if self._on_batch is not None:
                self._on_batch(len(items), waited, ran)
