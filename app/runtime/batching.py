"""FrameBatcher: the frames of every session waiting at once go to the worker in one call.

One queue per plugin keeps the order of what was asked: an `end_session` goes behind
that session's frames, so it reaches the worker after them, and a frame whose caller
is gone (its task cancelled, its session ended) is dropped before it is batched, so
an ended session's tracker state is never brought back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.runtime.errors import PluginFault
from app.runtime.frames import Frame
from app.runtime.sandbox import SandboxResult

logger = logging.getLogger(__name__)

MAX_BATCH = 32
# Ended session ids kept to refuse their late frames; ids are random, so old ones never come back.
REMEMBERED_ENDINGS = 4096

RunBatch = Callable[[list[Frame]], Awaitable[SandboxResult]]
EndSessionHook = Callable[[str], Awaitable[None]]


def _future() -> asyncio.Future[SandboxResult]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _FrameJob:
    frame: Frame
    answer: asyncio.Future[SandboxResult] = field(default_factory=_future)


@dataclass
class _EndJob:
    session_id: str
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _dropped(frame: Frame) -> SandboxResult:
    fault = PluginFault("SessionEnded", f"session {frame.session_id} ended before its frame was sent", "none needed")
    return SandboxResult.failure(fault, 0.0)


class FrameBatcher:
    """Queues frames and session endings for one plugin and hands them, in order, to `run_batch`/`end_session`."""

    def __init__(
        self, name: str, run_batch: RunBatch, end_session: EndSessionHook, not_ready: Callable[[], PluginFault]
    ):
        self._name = name
        self._run_batch = run_batch
        self._end_session = end_session
        self._not_ready = not_ready
        self._queue: deque[_FrameJob | _EndJob] = deque()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch_loop(), name=f"batcher:{self._name}")

    async def submit(self, frame: Frame) -> SandboxResult:
        """The frame's result; cancelling the caller drops the frame if it was not sent yet."""
        if frame.session_id in self._ended or self._task is None:
            return _dropped(frame) if self._task is not None else SandboxResult.failure(self._not_ready(), 0.0)
        job = _FrameJob(frame)
        self._queue.append(job)
        self._wakeup.set()
        return await job.answer

    async def end_session(self, session_id: str) -> None:
        """Drop the session's waiting frames, then end it in the worker after any frame of it already sent."""
        self._ended[session_id] = None
        if len(self._ended) > REMEMBERED_ENDINGS:
            self._ended.popitem(last=False)
        for job in self._queue:
            if isinstance(job, _FrameJob) and job.frame.session_id == session_id and not job.answer.done():
                job.answer.set_result(_dropped(job.frame))
        if self._task is None:
            return
        job = _EndJob(session_id)
        self._queue.append(job)
        self._wakeup.set()
        await job.done.wait()

    def _next_batch(self) -> list[_FrameJob]:
        """Frame jobs from the head of the queue, up to MAX_BATCH, stopping at a session ending."""
        batch: list[_FrameJob] = []
        while self._queue and len(batch) < MAX_BATCH and isinstance(self._queue[0], _FrameJob):
            job = self._queue.popleft()
            assert isinstance(job, _FrameJob)
            if not job.answer.done():  # done: its caller was cancelled, or its session ended
                batch.append(job)
        return batch

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # One loop turn first: sessions answered by the last batch hand in their next
                # frame now and join this batch, instead of alternating one-frame batches.
                await asyncio.sleep(0)
                head = self._queue[0]
                if isinstance(head, _EndJob):
                    self._queue.popleft()
                    await self._end(head)
                elif batch := self._next_batch():
                    await self._dispatch(batch)

    async def _end(self, job: _EndJob) -> None:
        try:
            await self._end_session(job.session_id)
        except Exception:  # a bug here must not leave the session's close waiting forever
            logger.exception("plugin %s: ending session %s failed", self._name, job.session_id)
        finally:
            job.done.set()

    async def _dispatch(self, batch: list[_FrameJob]) -> None:
        result = SandboxResult.failure(self._not_ready(), 0.0)  # what callers get if this is cancelled
        try:
            result = await self._run_batch([job.frame for job in batch])
        except Exception:  # a bug here must not leave every later frame waiting forever
            logger.exception("plugin %s: dispatching a batch failed", self._name)
        finally:
            for index, job in enumerate(batch):
                if job.answer.done():
                    continue
                if result.ok:
                    ms = result.execution_time_ms
                    job.answer.set_result(SandboxResult(True, result.result[index], execution_time_ms=ms))
                else:
                    job.answer.set_result(result)

    async def close(self) -> None:
        """Stop dispatching; every waiting caller is answered (not ready). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while self._queue:
            job = self._queue.popleft()
            if isinstance(job, _EndJob):
                job.done.set()
            elif not job.answer.done():
                job.answer.set_result(SandboxResult.failure(self._not_ready(), 0.0))
