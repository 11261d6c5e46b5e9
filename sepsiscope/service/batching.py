"""Batch concurrent requests into one model call, on one scoring thread.

Requests queue up while the scoring thread works; when it is free it takes everything queued
(up to ``max_batch``) in one call of ``fn``. Under light load a request is scored at once, alone;
under heavy load each model runs once per batch instead of once per request, which is where a
model's fixed cost per call (building frames, starting the kernel) is paid. When a batch fails,
its items are retried one by one so that one bad stay fails only its own request.

Clients that wait for each answer before posting again split into groups that alternate: while
one group is scored the other queues up, and every batch holds half of them. So the batcher
counts the clients it is serving -- those it just answered plus those queued meanwhile -- and
for ``linger`` seconds after a batch it waits for that many items before it takes the next one.
A lone client never waits (it is the only one counted), nor does the first request after a quiet
spell.

Examples
--------
>>> import asyncio
>>> calls = []
>>> def square(xs):
...     calls.append(len(xs))
...     return [x * x for x in xs]
>>> async def main():
...     b = Batcher(square, max_batch=8)
...     out = await asyncio.gather(*(b.submit(i) for i in range(5)))
...     b.close()
...     return out
>>> asyncio.run(main()), sum(calls)
([0, 1, 4, 9, 16], 5)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Batcher"]


class Batcher:
    """Run ``fn(list of items) -> list of results`` on one thread, over batches of queued items."""

    def __init__(self, fn, *, max_batch: int = 64, linger: float = 0.0):
        self.fn = fn
        self.max_batch = max_batch
        self.linger = linger
        self._queue: list = []
        self._executor: ThreadPoolExecutor | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The one scoring thread (also for other model calls that must not run concurrently)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sepsiscope-score")
        return self._executor

    async def run(self, fn):
        """Run ``fn()`` on the scoring thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def submit(self, item):
        """Queue ``item`` and wait for its result (or its exception)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        future = loop.create_future()
        self._queue.append((item, future))
        self._wake.set()
        return await future

    def _call_each(self, items):
        out = []
        for item in items:
            try:
                out.append(self.fn([item])[0])
            except Exception as exc:  # noqa: BLE001 - handed to that item's request
                out.append(exc)
        return out

    def _call(self, items):
        try:
            return self.fn(items)
        except Exception:  # noqa: BLE001 - retried per item below
            if len(items) == 1:
                raise
            return self._call_each(items)

    async def _gather(self, want: int) -> None:
        """Wait up to ``linger`` seconds for ``want`` items to be queued."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger
        while len(self._queue) < want and (left := deadline - loop.time()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    async def _run(self):
        loop = asyncio.get_running_loop()
        clients, finished = 0, 0.0  # served by the last batch or queued while it ran; when it ended
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                want = min(self.max_batch, clients)
                if len(self._queue) < want and loop.time() - finished < self.linger:
                    await self._gather(want)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                items = [i for i, _ in batch]
                try:
                    results = await loop.run_in_executor(self.executor, self._call, items)
                except Exception as exc:  # noqa: BLE001 - a single item failed
                    results = [exc]
                self.batches += 1
                self.items += len(items)
                clients = len(items) + len(self._queue)  # (before the answered ones post again)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                finished = loop.time()

    def close(self) -> None:
        """Stop the batching task and the scoring thread (a later submit starts them again)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
