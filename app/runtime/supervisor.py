"""One plugin's lifecycle: checks, worker start, batching, failures, restarts (DESIGN 3.3, 3.6).

The supervisor turns every SandboxResult into a registry update, so the registry
is told about every outcome in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from app.runtime.checks import check_plugin
from app.runtime.errors import Outcome, PluginFault
from app.runtime.frames import FrameInput
from app.runtime.manifest import Manifest
from app.runtime.registry import PluginRegistry, PluginState
from app.runtime.sandbox import EndSession, Load, PluginWorker, Process, SandboxResult, run_plugin_sandboxed

logger = logging.getLogger(__name__)

RESTART_BUDGET = 3
RESTART_WINDOW_S = 60.0
MAX_BATCH = 32
USABLE = (PluginState.INITIALIZED, PluginState.RUNNING)


@dataclass
class _Pending:
    frame: FrameInput
    answer: asyncio.Future[SandboxResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PluginSupervisor:
    def __init__(self, manifest: Manifest, registry: PluginRegistry, gpu_policy: str, log_level: str = "INFO") -> None:
        self.manifest = manifest
        self.name = manifest.name
        self._registry = registry
        self._gpu_policy = gpu_policy
        self._log_level = log_level
        self._worker: PluginWorker | None = None
        self._restarts: deque[float] = deque(maxlen=RESTART_BUDGET)
        self._lifecycle_lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._lifecycle_tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def state(self) -> PluginState:
        return self._registry.get(self.name).state

    @property
    def usable(self) -> bool:
        return self.state in USABLE

    def not_ready_fault(self) -> PluginFault:
        record = self._registry.get(self.name)
        what = f"plugin {self.name} is {record.state.value}"
        if record.reason:
            what += f": {record.reason}"
        return PluginFault(
            "PluginNotReady", what, f"wait for it to load, or restart with POST /v1/plugins/{self.name}/restart"
        )

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Load in the background; the server keeps serving meanwhile."""
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name=f"dispatch:{self.name}")
        self._run_lifecycle(self._load())

    def _run_lifecycle(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"lifecycle:{self.name}")
        self._lifecycle_tasks.add(task)
        task.add_done_callback(self._lifecycle_tasks.discard)

    async def _load(self) -> None:
        async with self._lifecycle_lock:
            if self._closed:
                return
            fault = await asyncio.to_thread(check_plugin, self.manifest)
            if fault is not None:
                self._mark_fault(fault)
                return
            worker = PluginWorker(self.manifest, self._gpu_policy, self._on_worker_death, self._log_level)
            self._worker = worker
            result = await run_plugin_sandboxed(worker, Load())
            if self._closed:
                return
            if result.ok:
                answer = result.result
                self._registry.mark_initialized(
                    self.name, device=answer["device"], degraded=answer.get("degraded"), worker_pid=worker.pid
                )
                return
            assert result.fault is not None
            await worker.stop()
            self._worker = None
            self._mark_fault(result.fault)

    def _mark_fault(self, fault: PluginFault) -> None:
        if fault.outcome is Outcome.UNAVAILABLE:
            self._registry.mark_unavailable(self.name, fault.reason)
        else:
            self._registry.mark_failed(self.name, fault.reason, fault.traceback)
        if fault.traceback:
            logger.warning("plugin %s: traceback\n%s", self.name, fault.traceback.rstrip())

    def _budget_left(self) -> bool:
        now = time.monotonic()
        return len(self._restarts) < RESTART_BUDGET or now - self._restarts[0] > RESTART_WINDOW_S

    def _fail(self, fault: PluginFault) -> None:
        """A usable plugin broke: FAILED now, then an automatic restart while the budget lasts."""
        if self._closed or self.state not in USABLE:
            return
        auto_restart = self._budget_left()
        if not auto_restart:
            fault = PluginFault(
                fault.error_type,
                fault.what,
                f"{fault.fix}; automatic restarts stopped after {RESTART_BUDGET} in {RESTART_WINDOW_S:.0f} s, "
                f"restart with POST /v1/plugins/{self.name}/restart",
                fault.outcome,
                fault.traceback,
            )
        self._mark_fault(fault)
        if auto_restart:
            self._restarts.append(time.monotonic())
            self._run_lifecycle(self._restart())

    def _on_worker_death(self, fault: PluginFault) -> None:
        """The worker died while no call was in flight."""
        self._registry.record_error(self.name, 0.0)
        self._fail(fault)

    async def _restart(self) -> None:
        async with self._lifecycle_lock:
            if self._worker is not None:
                await self._worker.stop()
                self._worker = None
            if self._closed or self.state not in (PluginState.FAILED, PluginState.UNAVAILABLE):
                return
            self._registry.mark_loaded(self.name)
        await self._load()

    def restart(self) -> bool:
        """Manual restart (POST .../restart): only from FAILED or UNAVAILABLE; resets the budget."""
        if self.state not in (PluginState.FAILED, PluginState.UNAVAILABLE) or self._lifecycle_lock.locked():
            return False
        self._restarts.clear()
        self._run_lifecycle(self._restart())
        return True

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._lifecycle_tasks, *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        for pending in self._pending:
            if not pending.answer.done():
                pending.answer.set_result(SandboxResult.failure(self.not_ready_fault(), 0.0))
        self._pending.clear()

    # -- frames ---------------------------------------------------------------------
    async def process(self, frame: FrameInput) -> SandboxResult:
        """Process one frame; frames waiting at the same time go to the worker in one batch."""
        if not self.usable or self._closed:
            return SandboxResult.failure(self.not_ready_fault(), 0.0)
        pending = _Pending(frame)
        self._pending.append(pending)
        self._wakeup.set()
        return await pending.answer

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                # One loop turn first: sessions answered by the last batch hand in their next
                # frame now and join this batch, instead of alternating one-frame batches.
                await asyncio.sleep(0)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await self._run_batch(batch)
                except Exception:  # a bug here must not leave every later frame waiting forever
                    logger.exception("plugin %s: dispatching a batch failed", self.name)
                    for pending in batch:
                        if not pending.answer.done():
                            pending.answer.set_result(SandboxResult.failure(self.not_ready_fault(), 0.0))

    async def _run_batch(self, batch: list[_Pending]) -> None:
        worker = self._worker
        if worker is None or not self.usable:
            result = SandboxResult.failure(self.not_ready_fault(), 0.0)
        else:
            result = await run_plugin_sandboxed(worker, Process([p.frame for p in batch]))
            if result.ok:
                self._registry.record_success(self.name, result.execution_time_ms, len(batch))
            else:
                assert result.fault is not None
                self._registry.record_error(self.name, result.execution_time_ms)
                self._fail(result.fault)
        for index, pending in enumerate(batch):
            if pending.answer.done():
                continue
            if result.ok:
                pending.answer.set_result(
                    SandboxResult(True, result.result[index], execution_time_ms=result.execution_time_ms)
                )
            else:
                pending.answer.set_result(result)

    # -- sessions -------------------------------------------------------------------
    def session_started(self) -> None:
        self._registry.session_started(self.name)

    async def session_ended(self, session_id: str) -> None:
        self._registry.session_ended(self.name)
        worker = self._worker
        if worker is not None and self.usable:
            result = await run_plugin_sandboxed(worker, EndSession(session_id))
            if (
                not result.ok
                and result.fault is not None
                and result.fault.error_type in ("TimeoutError", "WorkerCrashed")
            ):
                self._registry.record_error(self.name, result.execution_time_ms)
                self._fail(result.fault)

    async def run_image(self, frame: FrameInput) -> SandboxResult:
        """A one-off run (POST /v1/plugins/{name}/run): one frame, then its session is ended."""
        result = await self.process(frame)
        worker = self._worker
        if worker is not None and self.usable:
            await run_plugin_sandboxed(worker, EndSession(frame.session_id))
        return result
