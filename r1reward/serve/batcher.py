"""Requests from concurrent clients, merged into one engine call.

A request is a list of prompts with one seed each and the K of its samples; its size is its number of
generations, prompts x K. The batcher takes the first waiting request, gathers whatever else arrives
within ``wait_s`` (and whatever queued while the engine was busy) up to ``max_batch`` generations, and
runs one engine call per distinct K in the engine's own thread (an in-process vLLM engine must be driven
from one thread). Because every prompt carries its own seed, a request's answer does not depend on what
it was batched with.

- A request of more than ``max_batch`` generations is refused (413).
- At most ``max_queue`` generations wait or run at once; a request that would pass that gets 503 with a
  Retry-After of about one engine call.
- A request that has no answer ``timeout_s`` after it was queued gets 504. The engine call it was in
  runs on (vLLM cannot stop it halfway); its answer is dropped, and requests whose time ran out, or whose
  client left (the caller's task was cancelled), are not sent to the engine.
- When an engine call of several requests fails, its requests are split in halves and each half is
  retried, so a bad request is found in about 2 log2(n) calls and fails only itself: an error the engine
  raises on its input (ValueError, e.g. a prompt longer than the model's context) is a 400, anything else
  a 500. The client reads a fixed line; the server log keeps the exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from r1reward.serve.schemas import ServeError

# run(prompts, k, seeds) -> one result per prompt; blocking, called in the engine thread.
EngineCall = Callable[[list[Any], int, list[int]], Sequence[Any]]
# observe(requests, prompts, seconds) after each engine call (metrics).
Observer = Callable[[int, int, float], None]
log = logging.getLogger("r1reward.serve")


@dataclass
class _Job:
    prompts: list[Any]
    seeds: list[int]
    k: int
    future: asyncio.Future
    expired: bool = field(default=False)  # no one waits for the answer any more
    left: bool = field(default=False)  # because the client left (its task was cancelled)

    @property
    def size(self) -> int:
        return len(self.prompts) * self.k


class Batcher:
    def __init__(
        self,
        run: EngineCall,
        *,
        max_batch: int = 256,
        max_queue: int | None = None,
        wait_s: float = 0.005,
        timeout_s: float = 300.0,
        observe: Observer | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        max_queue = 4 * max_batch if max_queue is None else max_queue
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_queue < max_batch:
            raise ValueError(f"max_queue ({max_queue}) must be at least max_batch ({max_batch})")
        if timeout_s <= 0:
            raise ValueError(f"timeout must be positive, got {timeout_s}")
        self.run, self.max_batch, self.wait_s, self.timeout_s = run, max_batch, max(0.0, wait_s), timeout_s
        self.max_queue, self.observe, self.on_drop = max_queue, observe, on_drop
        self.queued = 0  # generations of requests that wait for or are in an engine call
        self._last_call_s = 1.0
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # --- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1reward-engine")
        self._task = asyncio.create_task(self._loop(), name="r1reward-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- clients -------------------------------------------------------------------------------
    async def submit(self, prompts: list[Any], seeds: list[int], k: int) -> list[Any]:
        """The engine's results for ``prompts`` (one per prompt), or a ServeError (413, 503, 504, 400, 500)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        self.check_size(len(prompts), k)
        if not prompts:
            return []
        if not self.alive or self._queue is None:
            raise ServeError(503, "the batcher is not running")
        size = len(prompts) * k
        if self.queued + size > self.max_queue:
            raise ServeError(
                503,
                f"the server is busy: {self.queued} generations queued, --max-queue {self.max_queue}; retry later",
                headers={"Retry-After": str(max(1, math.ceil(self._last_call_s)))},
            )
        job = _Job(list(prompts), list(seeds), k, asyncio.get_running_loop().create_future())
        self.queued += size
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.timeout_s)
        except TimeoutError:
            raise ServeError(504, f"no answer from the engine within --timeout {self.timeout_s:g} s") from None
        except asyncio.CancelledError:  # the client left: its job must not reach the engine
            job.left = True
            raise
        finally:
            job.expired = True
            self.queued -= size

    def check_size(self, prompts: int, k: int) -> None:
        """413 unless ``prompts`` x ``k`` generations fit one engine call."""
        if prompts * k > self.max_batch:
            raise ServeError(
                413,
                f"the request needs {prompts} prompts x k={k} = {prompts * k} generations, more than "
                f"--max-batch {self.max_batch}: split it, lower k or raise --max-batch",
            )

    # --- the loop ------------------------------------------------------------------------------
    async def _next_batch(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """``first`` and what joins it within the wait window; a request that would overflow the batch
        is returned to open the next one."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch, size = [first], first.size
        window_end = loop.time() + self.wait_s
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = window_end - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + job.size > self.max_batch:
                return batch, job
            batch.append(job)
            size += job.size
        return batch, None

    async def _loop(self) -> None:
        assert self._queue is not None
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            batch, carry = await self._next_batch(first)
            live = [job for job in batch if not job.expired and not job.future.done()]
            if self.on_drop is not None:
                for job in batch:
                    if job.left:
                        self.on_drop()
            groups: dict[int, list[_Job]] = {}
            for job in live:
                groups.setdefault(job.k, []).append(job)
            for k, jobs in groups.items():
                try:
                    await self._run_group(k, jobs)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug here must fail these requests, not stop the server
                    for job in jobs:
                        _fail(job, exc)

    async def _call(self, jobs: list[_Job], k: int) -> list[Any]:
        assert self._executor is not None
        prompts = [p for job in jobs for p in job.prompts]
        seeds = [s for job in jobs for s in job.seeds]
        start = time.perf_counter()
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, prompts, k, seeds)
        self._last_call_s = time.perf_counter() - start
        if self.observe is not None:
            self.observe(len(jobs), len(prompts), self._last_call_s)
        results = list(results)
        if len(results) != len(prompts):
            raise RuntimeError(f"the engine returned {len(results)} results for {len(prompts)} prompts")
        return results

    async def _run_group(self, k: int, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.expired and not job.future.done()]
        if not jobs:
            return
        try:
            results = await self._call(jobs, k)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if len(jobs) > 1:  # find the request that broke the call; the others still get answers
                half = len(jobs) // 2
                await self._run_group(k, jobs[:half])
                await self._run_group(k, jobs[half:])
                return
            _fail(jobs[0], exc)
            return
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[start : start + len(job.prompts)])
            start += len(job.prompts)


def _fail(job: _Job, exc: Exception) -> None:
    if job.future.done() or job.expired:  # an expired request's client already got its answer
        return
    if isinstance(exc, ServeError):
        job.future.set_exception(exc)
        return
    log.error("engine call failed", exc_info=exc)
    if isinstance(exc, ValueError):
        message = "the engine refused the request (e.g. a prompt longer than the model's context)"
        job.future.set_exception(ServeError(400, message))
    else:
        job.future.set_exception(ServeError(500, "engine error (details in the server log)"))
