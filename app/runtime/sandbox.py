"""The host side of the sandbox (DESIGN 3.6).

`run_plugin_sandboxed()` is the only way the server calls plugin code. It never
raises: every outcome, a crash or a hang included, comes back as a SandboxResult.
A `PluginWorker` is one spawned process. Its answers are read without blocking
and checked as plain data (wire.py); its death is seen at once through the process
sentinel; its deadline and memory limit are enforced by killing it, and whatever
it started dies with it (proctree.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from app.runtime import offload
from app.runtime.errors import PluginFault, restart_hint
from app.runtime.frames import Frame, InvalidResult, validate_results
from app.runtime.manifest import Manifest
from app.runtime.proctree import Proc, find_tree, kill_tree
from app.runtime.shm import SlotPool, SlotPoolClosed
from app.runtime.wire import Answer, MessageReader, WireError, encode, framed, parse_answer
from app.runtime.worker import WorkerSpec, worker_main

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 3.0
# Added to timeout_ms for every call, whatever its batch size: it covers the pipe, the
# shared-memory copies and scheduling, not the plugin's work (DESIGN 3.6, docs/decisions.md).
CALL_ALLOWANCE_MS = 500
LOADING = "loading the plugin"
WATCH_INTERVAL_S = 0.1
TREE_SCAN_EVERY = 5  # watch ticks between two reads of the worker's process tree
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_spawn = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Load:
    """Start the worker and construct the plugin."""


@dataclass(frozen=True)
class Process:
    frames: Sequence[Frame]


@dataclass(frozen=True)
class EndSession:
    session_id: str


Call = Load | Process | EndSession
# The answers each call may get; any other is a protocol fault of the worker.
EXPECTED_OPS: dict[type, tuple[str, ...]] = {
    Load: ("ready", "load_failed"),
    Process: ("result", "error"),
    EndSession: ("ok", "error"),
}


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


def _pid(process: BaseProcess) -> int:
    """The pid of a started process (never 0: signalling or sweeping pid 0 would hit our own group)."""
    pid = process.pid
    if not pid:
        raise RuntimeError("the worker process has no pid; it was never started")
    return pid


class _AnswerStream(asyncio.Protocol):
    """Bytes from the worker's end of the pipe, cut into messages for the worker object."""

    def __init__(self, worker: PluginWorker) -> None:
        self._worker = worker
        self._reader = MessageReader()
        self._broken = False

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            payloads = self._reader.feed(data)
        except WireError as exc:
            self._broken = True
            self._worker.protocol_fault(str(exc))
            return
        for payload in payloads:
            self._worker._on_payload(payload)


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
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self._owed = 0  # answers the worker still owes: one per message sent, one for loading
        self._slots = SlotPool(f"livetrack-{manifest.name}-{os.getpid()}")
        self._descendants: set[Proc] = set()
        self._kill_fault: PluginFault | None = None
        self._exit_fault: PluginFault | None = None
        self._exited = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._killer: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
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
        try:
            process.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._process = process
        self._owed = 1  # the `ready` (or `load_failed`) answer
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._on_exit)
        sock = socket.socket(fileno=os.dup(parent.fileno()))
        parent.close()
        self._transport, _ = await loop.connect_accepted_socket(lambda: _AnswerStream(self), sock)
        self._watch_task = asyncio.create_task(self._watch(_pid(process)), name=f"worker-watch:{self.name}")
        logger.info("plugin %s: worker started (pid %s)", self.name, process.pid)

    def _on_payload(self, payload: bytes) -> None:
        if self._kill_fault is not None or self._exit_fault is not None:
            return  # being killed: what it says now no longer counts
        try:
            answer = parse_answer(payload)
        except WireError as exc:
            self.protocol_fault(str(exc))
            return
        if self._owed == 0:
            self.protocol_fault(f"a {answer.op} answer when none was owed")
            return
        self._owed -= 1
        # Answers come in order; one owed to a caller that was cancelled is dropped here.
        if self._owed == 0 and self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    def protocol_fault(self, what: str) -> None:
        """The worker broke the pipe's contract (DESIGN 3.6): kill it, naming what it sent."""
        self.kill(self._protocol_error(f"the worker sent {what}; worker killed"))

    def _protocol_error(self, what: str) -> PluginFault:
        fix = "a plugin must not write to the server's pipe; fix it, then restart with "
        return PluginFault("ProtocolError", what, fix + f"POST /v1/plugins/{self.name}/restart")

    def _on_exit(self) -> None:
        assert self._process is not None
        asyncio.get_running_loop().remove_reader(self._process.sentinel)
        self._exited.set()
        self._reaper = asyncio.create_task(self._reap(self._process), name=f"reap:{self.name}")

    async def _reap(self, process: BaseProcess) -> None:
        # Sweep before reaping: until it is reaped, the worker's pid (and process group id) cannot be reused.
        if self._killer is not None:
            await asyncio.gather(self._killer, return_exceptions=True)
        await self._sweep(process)
        await asyncio.to_thread(process.join)
        fault = self._kill_fault or PluginFault(
            "WorkerCrashed", f"{describe_exit(process.exitcode)} while {self._current}", restart_hint(self.name)
        )
        self._exit_fault = fault
        log = logger.info if fault is _STOPPED else logger.warning
        log("plugin %s: worker %s gone: %s", self.name, process.pid, fault.reason)
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(_WorkerGone(fault))
        elif fault is not _STOPPED:
            self._on_death(fault)

    async def _watch(self, pid: int) -> None:
        """Memory limit, and the process tree remembered for when the worker dies on its own."""
        limit = self.manifest.memory_limit_mb
        tick = 0
        while not self._exited.is_set():
            used = resident_mb(pid)
            if used is not None and used > limit:
                self.kill(
                    PluginFault(
                        "MemoryError",
                        f"worker used {used:.0f} MB, over memory_limit_mb {limit}; worker killed",
                        "raise memory_limit_mb or fix the leak",
                    )
                )
                return
            if tick % TREE_SCAN_EVERY == 0:
                await self._remember_tree(pid)
            tick += 1
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _remember_tree(self, pid: int) -> None:
        try:
            self._descendants = await asyncio.to_thread(find_tree, pid, self._descendants)
        except Exception:  # the memory watch must go on; the next scan may succeed
            logger.exception("plugin %s: could not read the process tree of worker %s", self.name, pid)

    def kill(self, fault: PluginFault) -> None:
        """Kill the worker and all it started, now; the pending call (if any) is answered with `fault`."""
        if self._process is None or self._kill_fault is not None or self._exit_fault is not None:
            return
        self._kill_fault = fault
        logger.warning("plugin %s: killing worker %s: %s", self.name, self._process.pid, fault.reason)
        self._terminate(self._process)

    def _terminate(self, process: BaseProcess) -> None:
        if self._killer is not None or self._exited.is_set():
            return
        # Stopped, it can start nothing more while the sweep looks for what it started.
        with contextlib.suppress(ProcessLookupError):
            os.kill(_pid(process), signal.SIGSTOP)
        self._killer = asyncio.create_task(self._kill_everything(process), name=f"kill:{self.name}")

    async def _kill_everything(self, process: BaseProcess) -> None:
        try:
            await self._sweep(process)
        finally:
            process.kill()

    async def _sweep(self, process: BaseProcess) -> None:
        """Kill what the worker started; a failure to read /proc must not leave a caller waiting forever."""
        try:
            killed = await asyncio.to_thread(kill_tree, _pid(process), self._descendants)
        except Exception:
            logger.exception("plugin %s: could not sweep the processes of worker %s", self.name, process.pid)
            return
        if killed:
            logger.info("plugin %s: killed %d process(es) started by worker %s", self.name, len(killed), process.pid)

    async def stop(self) -> None:
        """Stop the worker and everything it started, release its memory. Idempotent, and a cancelled
        caller does not cut it short (it runs in its own task)."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(), name=f"stop:{self.name}")
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        process = self._process
        if process is not None and await self._end_process(process):
            process.close()
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        self._exit_fault = self._exit_fault or _STOPPED
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(_WorkerGone(self._kill_fault or self._exit_fault))
        await asyncio.to_thread(self._slots.close)  # waits for a copy in progress, off the loop
        self._process = None

    async def _end_process(self, process: BaseProcess) -> bool:
        """Ask it to stop, wait on its sentinel a bounded time, then kill; the reaper sweeps the tree.
        False when even SIGKILL did not end it in time (a process stuck in the kernel): it is left behind."""
        self._kill_fault = self._kill_fault or _STOPPED
        if not self._exited.is_set():
            # Read the tree now: once the worker exits, its children are orphans of init.
            await self._remember_tree(_pid(process))
            self._write({"op": "stop"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), STOP_TIMEOUT_S)
        if not self._exited.is_set():
            self._terminate(process)
            try:
                await asyncio.wait_for(self._exited.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                logger.error("plugin %s: worker %s survived SIGKILL for %.0f s", self.name, process.pid, STOP_TIMEOUT_S)
                asyncio.get_running_loop().remove_reader(process.sentinel)
                return False
        assert self._reaper is not None
        await asyncio.gather(self._reaper, return_exceptions=True)
        return True

    # -- calls ----------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(framed(encode(message)))

    async def _exchange(self, message: dict[str, Any] | None, limit_ms: int, expected: tuple[str, ...]) -> Answer:
        """Send one message and wait for its answer; raise _WorkerGone when the worker dies."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answer = answer
        if message is not None:
            self._owed += 1
            self._write(message)
        deadline_s = (limit_ms + (CALL_ALLOWANCE_MS if message is not None else 0)) / 1000
        try:
            async with asyncio.timeout(deadline_s):
                result = await answer
        except TimeoutError:
            setting = "load_timeout_ms" if self._current == LOADING else "timeout_ms"
            return await self._killed_while_waiting(
                PluginFault(
                    "TimeoutError",
                    f"no answer within {limit_ms} ms while {self._current}; worker killed",
                    f"raise {setting} in manifest.json or fix the plugin",
                )
            )
        finally:
            # A caller that was cancelled leaves no answer behind for a later death to fail.
            if not answer.done():
                answer.cancel()
        if result.op not in expected:
            what = f"the worker answered {result.op!r} while {self._current}; worker killed"
            return await self._killed_while_waiting(self._protocol_error(what))
        return result

    async def _killed_while_waiting(self, fault: PluginFault) -> Answer:
        """Kill with `fault` and wait for the death, which answers with it (so it is reported once)."""
        if self._exit_fault is not None:
            raise _WorkerGone(self._exit_fault)
        waiting: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answer = waiting
        self.kill(fault)
        return await waiting

    async def load(self) -> Answer:
        await self._spawn()
        assert self._process is not None
        pid = _pid(self._process)
        self._current = LOADING
        answer = await self._exchange(None, self.manifest.load_timeout_ms, EXPECTED_OPS[Load])
        self._current = "waiting for frames"
        # What __init__ started is known from now on, even if the worker dies before the next scan.
        await self._remember_tree(pid)
        return answer

    async def process(self, frames: Sequence[Frame]) -> Answer:
        # Rendering (rgb conversion) and the copy into shared memory are pixel work: one thread hop per batch.
        try:
            slots = await offload.off_loop(self._slots.fill, [frame.image for frame in frames])
        except SlotPoolClosed:
            raise _WorkerGone(self._exit_fault or _STOPPED) from None
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
                    "shape": list(frame.image.shape),
                    "options": frame.options,
                }
                for frame, slot in zip(frames, slots, strict=True)
            ],
        }
        return await self._exchange(message, self.manifest.timeout_ms, EXPECTED_OPS[Process])

    async def end_session(self, session_id: str) -> Answer:
        self._current = f"ending session {session_id}"
        message = {"op": "end_session", "session_id": session_id}
        return await self._exchange(message, self.manifest.timeout_ms, EXPECTED_OPS[EndSession])


_STOPPED = PluginFault("WorkerStopped", "the worker was stopped by the server", "none needed")


class _WorkerGone(Exception):
    def __init__(self, fault: PluginFault) -> None:
        super().__init__(fault.reason)
        self.fault = fault


async def _call(worker: PluginWorker, call: Call) -> Answer:
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
        if answer.fault is not None:
            return SandboxResult.failure(answer.fault, elapsed_ms)
        if isinstance(call, Process):
            try:
                results = validate_results(answer.results, len(call.frames))
            except InvalidResult as exc:
                fault = PluginFault("ValueError", f"invalid result: {exc}", restart_hint(worker.name))
                return SandboxResult.failure(fault, elapsed_ms)
            return SandboxResult(True, results, execution_time_ms=elapsed_ms)
        if isinstance(call, Load):
            return SandboxResult(True, {"device": answer.device, "degraded": answer.degraded}, None, None, elapsed_ms)
        return SandboxResult(True, None, execution_time_ms=elapsed_ms)
