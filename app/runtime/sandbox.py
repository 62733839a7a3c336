"""The host side of the sandbox (DESIGN 3.6).

`run_plugin_sandboxed()` is the only way the server calls plugin code. It never
raises: every outcome, a crash or a hang included, comes back as a SandboxResult.
A `PluginWorker` is one spawned process; its death is seen at once through the
process sentinel, its deadline and memory limit are enforced by killing it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from app.runtime.errors import PluginFault, restart_hint
from app.runtime.frames import FrameInput, InvalidResult, validate_results
from app.runtime.manifest import Manifest
from app.runtime.shm import SlotPool
from app.runtime.worker import WorkerSpec, worker_main

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 3.0
LOADING = "loading the plugin"
MEMORY_POLL_S = 0.1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_spawn = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Load:
    """Start the worker and construct the plugin."""


@dataclass(frozen=True)
class Process:
    frames: Sequence[FrameInput]


@dataclass(frozen=True)
class EndSession:
    session_id: str


Call = Load | Process | EndSession


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    execution_time_ms: float = 0.0
    fault: PluginFault | None = None

    @classmethod
    def failure(cls, fault: PluginFault, elapsed_ms: float) -> SandboxResult:
        return cls(False, None, fault.reason, fault.error_type, elapsed_ms, fault)


def resident_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker exited"
    if exitcode < 0:
        try:
            return f"worker exited with signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker exited with signal {-exitcode}"
    return f"worker exited with code {exitcode}"


class PluginWorker:
    """One worker process for one plugin; created stopped, started by a Load call."""

    def __init__(
        self,
        manifest: Manifest,
        gpu_policy: str,
        on_death: Callable[[PluginFault], None],
        log_level: str = "INFO",
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self._spec = WorkerSpec(
            manifest.name,
            str(manifest.folder),
            manifest.entrypoint,
            manifest.config,
            manifest.requires_gpu,
            gpu_policy,
            manifest.memory_limit_mb,
            log_level,
        )
        self._on_death = on_death
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._slots = SlotPool(f"livetrack-{manifest.name}-{os.getpid()}")
        self._kill_fault: PluginFault | None = None
        self._exit_fault: PluginFault | None = None
        self._memory_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._call_lock = asyncio.Lock()
        self._current: str = "starting"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._exit_fault is None

    # -- process lifetime -----------------------------------------------------------
    async def _spawn(self) -> None:
        parent, child = _spawn.Pipe(duplex=True)
        process = _spawn.Process(
            target=worker_main, args=(self._spec, child), name=f"livetrack.plugin:{self.name}", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._on_exit)
        loop.add_reader(parent.fileno(), self._on_readable)
        self._memory_task = asyncio.create_task(self._watch_memory(), name=f"memory-watch:{self.name}")
        logger.info("plugin %s: worker started (pid %s)", self.name, process.pid)

    def _on_readable(self) -> None:
        assert self._conn is not None
        try:
            answer = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            return  # the sentinel reports the death
        except Exception as exc:  # an unreadable answer is the worker's fault
            self.kill(PluginFault("ValueError", f"unreadable answer from worker ({exc})", restart_hint(self.name)))
            return
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    def _on_exit(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._process.sentinel)
        if self._conn is not None:
            loop.remove_reader(self._conn.fileno())
        self._reaper = asyncio.create_task(self._reap(self._process), name=f"reap:{self.name}")

    async def _reap(self, process: BaseProcess) -> None:
        # The sentinel closes while the process is still exiting; its exit code comes a moment later.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.exitcode is None and time.monotonic() < deadline:  # noqa: ASYNC110 (no event for it)
            await asyncio.sleep(0.002)
        fault = self._kill_fault or PluginFault(
            "WorkerCrashed", f"{describe_exit(process.exitcode)} while {self._current}", restart_hint(self.name)
        )
        self._exit_fault = fault
        logger.warning("plugin %s: worker %s gone: %s", self.name, process.pid, fault.reason)
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(_WorkerGone(fault))
        elif fault is not _STOPPED:
            self._on_death(fault)

    async def _watch_memory(self) -> None:
        limit = self.manifest.memory_limit_mb
        while self.alive and self.pid is not None:
            used = resident_mb(self.pid)
            if used is not None and used > limit:
                self.kill(
                    PluginFault(
                        "MemoryError",
                        f"worker used {used:.0f} MB, over memory_limit_mb {limit}; worker killed",
                        "raise memory_limit_mb or fix the leak",
                    )
                )
                return
            await asyncio.sleep(MEMORY_POLL_S)

    def kill(self, fault: PluginFault) -> None:
        """Kill the worker now; the pending call (if any) is answered with `fault`."""
        if self._process is None or self._kill_fault is not None or self._exit_fault is not None:
            return
        self._kill_fault = fault
        logger.warning("plugin %s: killing worker %s: %s", self.name, self._process.pid, fault.reason)
        self._process.kill()

    async def stop(self) -> None:
        """Ask the worker to stop, wait a bounded time, kill, release everything. Idempotent."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            await self._end_process(process, conn)
        if self._memory_task is not None:
            self._memory_task.cancel()
            await asyncio.gather(self._memory_task, return_exceptions=True)
            self._memory_task = None
        self._exit_fault = self._exit_fault or _STOPPED
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(_WorkerGone(self._kill_fault or self._exit_fault))
        self._slots.close()

    async def _end_process(self, process: BaseProcess, conn: Connection | None) -> None:
        loop = asyncio.get_running_loop()
        if self._reaper is None:  # still running: ask it to stop, as it has not exited on its own
            self._kill_fault = self._kill_fault or _STOPPED
            loop.remove_reader(process.sentinel)
            if conn is not None:
                loop.remove_reader(conn.fileno())
                try:
                    conn.send_bytes(pickle.dumps({"op": "stop"}))
                except OSError:
                    pass
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while process.exitcode is None and time.monotonic() < deadline:  # noqa: ASYNC110 (no event for it)
                await asyncio.sleep(0.02)
            if process.exitcode is None:
                process.kill()
        else:
            await asyncio.gather(self._reaper, return_exceptions=True)
        await asyncio.to_thread(process.join)
        process.close()
        if conn is not None:
            conn.close()

    # -- calls ----------------------------------------------------------------------
    async def _exchange(self, message: dict[str, Any] | None, timeout_s: float) -> dict[str, Any]:
        """Send one message and wait for its answer; raise _WorkerGone when the worker dies."""
        loop = asyncio.get_running_loop()
        answer = self._answer = loop.create_future()
        if message is not None:
            assert self._conn is not None
            try:
                self._conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                pass  # the sentinel is about to report the death
        try:
            return await asyncio.wait_for(asyncio.shield(answer), timeout_s)
        except TimeoutError:
            return await self._timed_out(timeout_s)
        finally:
            # A caller that was cancelled leaves no answer behind for a later death to fail.
            if not answer.done():
                answer.cancel()

    async def _timed_out(self, timeout_s: float) -> dict[str, Any]:
        assert self._answer is not None
        setting = "load_timeout_ms" if self._current == LOADING else "timeout_ms"
        self.kill(
            PluginFault(
                "TimeoutError",
                f"no answer within {timeout_s * 1000:.0f} ms while {self._current}; worker killed",
                f"raise {setting} in manifest.json or fix the plugin",
            )
        )
        return await self._answer  # the sentinel answers it with the kill fault

    async def load(self) -> dict[str, Any]:
        await self._spawn()
        self._current = LOADING
        return await self._exchange(None, self.manifest.load_timeout_ms / 1000)

    async def process(self, frames: Sequence[FrameInput]) -> dict[str, Any]:
        slots = self._slots.fill([frame.image for frame in frames])
        first = frames[0]
        self._current = f"processing frame {first.index} of session {first.session_id}"
        message = {
            "op": "process",
            "retired": self._slots.take_retired(),
            "frames": [
                {
                    "session_id": frame.session_id,
                    "index": frame.index,
                    "pts": frame.pts,
                    "slot": slot.name,
                    "shape": frame.image.shape,
                    "options": frame.options,
                }
                for frame, slot in zip(frames, slots, strict=True)
            ],
        }
        deadline = self.manifest.timeout_ms * len(frames) / 1000
        return await self._exchange(message, deadline)

    async def end_session(self, session_id: str) -> dict[str, Any]:
        self._current = f"ending session {session_id}"
        return await self._exchange({"op": "end_session", "session_id": session_id}, self.manifest.timeout_ms / 1000)


_STOPPED = PluginFault("WorkerStopped", "the worker was stopped by the server", "none needed")


class _WorkerGone(Exception):
    def __init__(self, fault: PluginFault) -> None:
        super().__init__(fault.reason)
        self.fault = fault


async def _call(worker: PluginWorker, call: Call) -> dict[str, Any]:
    if worker._exit_fault is not None:
        raise _WorkerGone(worker._exit_fault)
    if isinstance(call, Load):
        return await worker.load()
    if isinstance(call, Process):
        return await worker.process(call.frames)
    return await worker.end_session(call.session_id)


async def run_plugin_sandboxed(worker: PluginWorker, call: Call) -> SandboxResult:
    """Run one call in the plugin's worker. Never raises; calls to one worker run one at a time."""
    async with worker._call_lock:
        started = time.perf_counter()
        try:
            answer = await _call(worker, call)
        except _WorkerGone as gone:
            return SandboxResult.failure(gone.fault, (time.perf_counter() - started) * 1000)
        except OSError as exc:  # the worker could not be spawned at all
            fault = PluginFault("WorkerCrashed", f"worker failed to start ({exc})", restart_hint(worker.name))
            return SandboxResult.failure(fault, (time.perf_counter() - started) * 1000)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if answer["op"] in ("error", "load_failed"):
            return SandboxResult.failure(answer["fault"], elapsed_ms)
        if isinstance(call, Process):
            try:
                results = validate_results(answer.get("results"), len(call.frames))
            except InvalidResult as exc:
                fault = PluginFault("ValueError", f"invalid result: {exc}", restart_hint(worker.name))
                return SandboxResult.failure(fault, elapsed_ms)
            return SandboxResult(True, results, execution_time_ms=elapsed_ms)
        return SandboxResult(True, answer, execution_time_ms=elapsed_ms)
