"""One plugin's lifecycle: checks, worker start, failures, restarts and reloads (DESIGN 3.3, 3.6).

The supervisor turns every SandboxResult into a registry update, so the registry
is told about every outcome in one place. Batching frames is the FrameBatcher's
job (batching.py); the supervisor only hands it the worker to run batches in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from app.runtime.batching import FrameBatcher
from app.runtime.checks import check_plugin
from app.runtime.errors import Outcome, PluginFault
from app.runtime.frames import Frame
from app.runtime.manifest import Manifest, ManifestError, read_manifest
from app.runtime.options_schema import OptionsSchema
from app.runtime.registry import PluginRegistry, PluginState
from app.runtime.sandbox import EndSession, Load, PluginWorker, Process, SandboxResult, run_plugin_sandboxed

logger = logging.getLogger(__name__)

RESTART_BUDGET = 3
RESTART_WINDOW_S = 60.0
USABLE = (PluginState.INITIALIZED, PluginState.RUNNING)
# Faults that end a worker without it being the plugin's doing (a stop for a reload or shutdown).
NOT_THE_PLUGINS = ("WorkerStopped", "SessionEnded")


class PluginSupervisor:
    def __init__(self, manifest: Manifest, registry: PluginRegistry, gpu_policy: str, log_level: str = "INFO") -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.options_schema = OptionsSchema(self.name, manifest.options)
        self._registry = registry
        self._gpu_policy = gpu_policy
        self._log_level = log_level
        self._worker: PluginWorker | None = None
        self._restarts: deque[float] = deque(maxlen=RESTART_BUDGET)
        self._lifecycle_lock = asyncio.Lock()
        self._restart_requested = False
        self._batcher = FrameBatcher(self.name, self._run_batch, self._end_session, self.not_ready_fault)
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
        self._batcher.start()
        self._run_lifecycle(self._load())

    def _run_lifecycle(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"lifecycle:{self.name}")
        self._lifecycle_tasks.add(task)
        task.add_done_callback(self._lifecycle_tasks.discard)

    async def _load(self) -> None:
        async with self._lifecycle_lock:
            await self._load_locked()

    async def _load_locked(self) -> None:
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
                self.name, device=answer["device"], degraded=answer["degraded"], worker_pid=worker.pid
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
            self._run_lifecycle(self._restart(reload=False))

    def _on_worker_death(self, fault: PluginFault) -> None:
        """The worker died while no call was in flight."""
        self._registry.record_error(self.name, 0.0)
        self._fail(fault)

    def restart(self) -> bool:
        """Manual restart (POST .../restart), in any state: a healthy plugin is reloaded with its manifest
        read again. False only while a load or restart is already under way. Resets the budget."""
        if self._restart_requested or self._lifecycle_lock.locked():
            return False
        self._restart_requested = True
        self._restarts.clear()
        self._run_lifecycle(self._restart(reload=True))
        return True

    async def _restart(self, *, reload: bool) -> None:
        try:
            async with self._lifecycle_lock:
                if self._closed or (not reload and self.state not in (PluginState.FAILED, PluginState.UNAVAILABLE)):
                    return
                # LOADED first: sessions stop sending frames and get a status message before the worker goes.
                if self.state is not PluginState.LOADED:
                    self._registry.mark_loaded(self.name)
                if self._worker is not None:
                    await self._worker.stop()
                    self._worker = None
                if reload and not self._reread_manifest():
                    return
                await self._load_locked()
        finally:
            if reload:
                self._restart_requested = False

    def _reread_manifest(self) -> bool:
        """A reload takes the manifest as it is now; an invalid one leaves the plugin FAILED with why."""
        folder = self.manifest.folder
        fix = f"fix {folder / 'manifest.json'}, then restart with POST /v1/plugins/{self.name}/restart"
        try:
            manifest = read_manifest(folder)
            if manifest.name != self.name:
                raise ManifestError(f"'name' is now {manifest.name!r}; restart the server to rename a plugin")
        except ManifestError as exc:
            self._mark_fault(PluginFault("ValueError", f"invalid manifest: {exc}", fix))
            return False
        self.manifest = manifest
        self.options_schema = OptionsSchema(self.name, manifest.options)
        self._registry.describe(
            self.name, description=manifest.description, version=manifest.version, requires_gpu=manifest.requires_gpu
        )
        return True

    async def close(self) -> None:
        """Stop loading, batching and the worker; idempotent."""
        self._closed = True
        tasks = list(self._lifecycle_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._batcher.close()
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None

    # -- frames ---------------------------------------------------------------------
    async def process(self, frame: Frame) -> SandboxResult:
        """Process one frame; frames waiting at the same time go to the worker in one batch."""
        if not self.usable or self._closed:
            return SandboxResult.failure(self.not_ready_fault(), 0.0)
        if frame.options and not self.options_schema.accepts(frame.options):
            # Validated when the client sent them, against the schema before a reload changed it: the
            # plugin must still never see them, so this frame runs with the plugin's defaults.
            frame = replace(frame, options={})
        return await self._batcher.submit(frame)

    async def _run_batch(self, frames: list[Frame]) -> SandboxResult:
        worker = self._worker
        if worker is None or not self.usable:
            return SandboxResult.failure(self.not_ready_fault(), 0.0)
        result = await run_plugin_sandboxed(worker, Process(frames))
        if result.ok:
            self._registry.record_success(self.name, result.execution_time_ms, len(frames))
        elif result.error_type not in NOT_THE_PLUGINS:
            assert result.fault is not None
            self._registry.record_error(self.name, result.execution_time_ms)
            self._fail(result.fault)
        return result

    # -- sessions -------------------------------------------------------------------
    def session_started(self) -> None:
        self._registry.session_started(self.name)

    async def session_ended(self, session_id: str) -> None:
        """Counted at once; the worker drops the session's state after its frames already sent."""
        self._registry.session_ended(self.name)
        await self._batcher.end_session(session_id)

    async def _end_session(self, session_id: str) -> None:
        worker = self._worker
        if worker is None or not self.usable:
            return  # a new worker will have no state of this session anyway
        result = await run_plugin_sandboxed(worker, EndSession(session_id))
        if not result.ok and result.error_type in ("TimeoutError", "WorkerCrashed", "ProtocolError"):
            assert result.fault is not None
            self._registry.record_error(self.name, result.execution_time_ms)
            self._fail(result.fault)

    async def run_image(self, frame: Frame) -> SandboxResult:
        """A one-off run (POST /v1/plugins/{name}/run): one frame, then its session is ended."""
        result = await self.process(frame)
        await self._batcher.end_session(frame.session_id)
        return result
