"""The plugin worker: the child-process side of the sandbox.

It is the only process that imports plugin code or touches the GPU. Each
message from the server gets exactly one answer (JSON, see wire.py); any exception
from plugin code, BaseException included, becomes an error answer instead of
ending the process. The worker leads its own process group and is a child
subreaper, so the server can find and kill everything the plugin starts (proctree.py).
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib
import json
import logging
import os
import re
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.runtime.errors import Outcome, PluginFault, fix_plugin_hint
from app.runtime.frames import Frame, InvalidResult, validate_results
from app.runtime.shm import ReadOnlySegments
from app.runtime.wire import MAX_MESSAGE_BYTES, MAX_TRACEBACK, encode, fault_to_wire

logger = logging.getLogger("livetrack.plugin")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    folder: str
    entrypoint: str
    config: dict[str, Any]
    requires_gpu: bool
    gpu_policy: str
    memory_limit_mb: int
    log_level: str = "INFO"


class DeviceUnavailable(Exception):
    pass


def fault_from_exception(exc: BaseException, fix: str, where: str = "") -> PluginFault:
    what = (str(exc) or repr(exc)).splitlines()[0][:300]
    # The tail of a deep traceback is where it failed; the wire takes at most MAX_TRACEBACK characters.
    return PluginFault(type(exc).__name__, what + where, fix, traceback=traceback.format_exc()[-MAX_TRACEBACK:])


def _cuda_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    try:
        if torch.cuda.is_available():
            return True, ""
        return False, "torch.cuda.is_available() is False"
    except Exception as exc:  # a broken driver raises here instead of answering False
        return False, f"CUDA failed to initialise ({exc})"


def resolve_device(spec: WorkerSpec) -> tuple[str, str | None]:
    """DESIGN 3.7: the device this plugin runs on, and a degraded note when not where it wanted."""
    if not spec.requires_gpu:
        return "cpu", None
    if spec.gpu_policy == "cpu":
        return "cpu", "running on CPU because the server runs with --gpu-policy cpu"
    available, why = _cuda_status()
    if available:
        return "cuda", None
    if spec.gpu_policy == "require":
        raise DeviceUnavailable(f"requires a CUDA GPU but {why}")
    return "cpu", f"no usable CUDA GPU ({why}); running on CPU, slower"


def _cap_gpu_memory(limit_mb: int) -> None:
    """DESIGN 3.6: the worker's share of device memory is its manifest's memory_limit_mb.

    torch's caching allocator refuses allocations past the share with torch.OutOfMemoryError,
    which `cuda_out_of_memory_fault` turns into a MemoryError reason naming the cap, so one
    plugin cannot take the GPU memory other plugins' workers need.
    """
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_mb * 2**20 / total))


def cuda_out_of_memory_fault(exc: BaseException, limit_mb: int, fix: str, where: str = "") -> PluginFault | None:
    """A CUDA out-of-memory error from plugin code as DESIGN 3.5's MemoryError naming the cap; None otherwise."""
    torch = sys.modules.get("torch")  # a plugin that never imported torch cannot have hit this
    if torch is None or not isinstance(exc, torch.OutOfMemoryError):
        return None
    asked = re.search(r"Tried to allocate ([0-9.]+ [KMGT]?i?B)", str(exc))
    what = f"CUDA out of memory{f' allocating {asked.group(1)}' if asked else ''}{where}"
    what += f", past the worker's device memory cap of {limit_mb} MB (memory_limit_mb) or the GPU's free memory"
    return PluginFault(
        "MemoryError",
        what,
        f"raise memory_limit_mb in manifest.json or use less GPU memory per call; {fix}",
        traceback=traceback.format_exc(),
    )


def _setup_process(spec: WorkerSpec) -> None:
    faulthandler.enable()
    # Its own process group: what the plugin starts joins it, and the server kills the group.
    os.setpgid(0, 0)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        # The worker must not outlive a server that was killed without cleaning up.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # Orphans of the plugin's processes (double forks, setsid daemons) become our children,
        # so the server still finds them under this process when it sweeps the tree.
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which stops us
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s livetrack.plugin:{spec.name}[{os.getpid()}] %(message)s",
    )


def load_plugin(spec: WorkerSpec) -> tuple[Any, dict[str, Any]]:
    """Import and construct the plugin; return it and the `ready` answer (or None and a fault)."""
    fix = fix_plugin_hint(spec.name)
    try:
        device, degraded = resolve_device(spec)
    except DeviceUnavailable as exc:
        fix_gpu = "run on a GPU host, or start with --gpu-policy auto to run on CPU"
        unavailable = PluginFault("RuntimeError", str(exc), fix_gpu, Outcome.UNAVAILABLE)
        return None, {"op": "load_failed", "fault": fault_to_wire(unavailable)}
    module_name, class_name = spec.entrypoint.split(":", 1)
    sys.path.insert(0, spec.folder)
    try:
        if device == "cuda":
            _cap_gpu_memory(spec.memory_limit_mb)
        module = importlib.import_module(module_name)
        plugin_class = getattr(module, class_name)
        plugin = plugin_class(device, dict(spec.config))
    except ModuleNotFoundError as exc:
        # Declared dependencies were checked before the worker started: this one is undeclared.
        missing = (exc.name or "?").split(".")[0]
        if not (Path(spec.folder) / missing).exists() and missing != module_name:
            fix = f"install it with: pip install {missing}, list it in the manifest's dependencies, then restart"
        return None, {"op": "load_failed", "fault": fault_to_wire(fault_from_exception(exc, fix))}
    except BaseException as exc:  # plugin code: contain everything, SystemExit included
        fault = cuda_out_of_memory_fault(exc, spec.memory_limit_mb, fix) or fault_from_exception(exc, fix)
        return None, {"op": "load_failed", "fault": fault_to_wire(fault)}
    return plugin, {"op": "ready", "device": device, "degraded": degraded}


def process_frames(
    plugin: Any, segments: ReadOnlySegments, message: dict[str, Any], name: str, memory_limit_mb: int
) -> dict[str, Any]:
    for retired in message.get("retired", ()):
        segments.release(retired)
    frames = [
        Frame(f["session_id"], f["index"], f["pts"], segments.view(f["slot"], tuple(f["shape"])), f["options"])
        for f in message["frames"]
    ]
    fix = f"fix the plugin; it restarts automatically, or with POST /v1/plugins/{name}/restart"
    try:
        results = validate_results(plugin.process(frames), len(frames))
    except InvalidResult as exc:
        return {"op": "error", "fault": fault_to_wire(PluginFault("ValueError", f"invalid result: {exc}", fix))}
    except BaseException as exc:  # plugin code
        where = f" (frame {frames[0].index} of session {frames[0].session_id})" if frames else ""
        fault = cuda_out_of_memory_fault(exc, memory_limit_mb, fix, where) or fault_from_exception(exc, fix, where)
        return {"op": "error", "fault": fault_to_wire(fault)}
    finally:
        del frames
    return {"op": "result", "results": results}


def end_session(plugin: Any, session_id: str) -> dict[str, Any]:
    hook = getattr(plugin, "end_session", None)
    if hook is None:
        return {"op": "ok"}
    try:
        hook(session_id)
    except BaseException as exc:  # plugin code; a failing cleanup is logged, not fatal
        logger.warning("end_session(%s) raised %r", session_id, exc)
    return {"op": "ok"}


def _send(conn: Connection, answer: dict[str, Any]) -> None:
    payload = encode(answer)
    if len(payload) > MAX_MESSAGE_BYTES:
        what = f"the answer is {len(payload)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
        payload = encode(
            {"op": "error", "fault": fault_to_wire(PluginFault("ValueError", what, "return fewer tracks"))}
        )
    conn.send_bytes(payload)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of the spawned process."""
    _setup_process(spec)
    plugin, answer = load_plugin(spec)
    _send(conn, answer)
    if plugin is None:
        return
    logger.info("ready on %s", answer["device"])
    segments = ReadOnlySegments()
    try:
        while True:
            try:
                message = json.loads(conn.recv_bytes())
            except EOFError:
                return  # the server closed its end
            op = message["op"]
            if op == "process":
                _send(conn, process_frames(plugin, segments, message, spec.name, spec.memory_limit_mb))
            elif op == "end_session":
                _send(conn, end_session(plugin, message["session_id"]))
            elif op == "stop":
                return
    finally:
        segments.close()
