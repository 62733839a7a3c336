"""The replica side of the Ray backend (DESIGN 6): the plugin class inside a Ray Serve replica.

This module is imported by the replicas, never by a server without --ray-address.
Like the local worker (worker.py) it is the only place that runs plugin code, and
it answers in the same plain-data wire format (wire.py): every answer is JSON bytes,
which the server checks as it checks a worker's. Frames from every server that uses
the deployment meet in `process_frame`, which `@serve.batch` calls with one list.

The replica watches itself: past the per-frame deadline or the memory limit it
records why under its own name in Ray's key-value store, so every server can say
what happened, and exits; Serve then replaces it. `deploy()` puts the class on the cluster
with the plugin's folder and this package as its runtime env.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

import app as app_package
from app.runtime.errors import PluginFault
from app.runtime.frames import Frame, InvalidResult, validate_results
from app.runtime.manifest import Manifest
from app.runtime.ray_cluster import LOAD_FAULT_MARKER, app_name, kv_put, replica_fault_key
from app.runtime.ray_config import RayConfig
from app.runtime.sandbox import resident_mb
from app.runtime.wire import MAX_MESSAGE_BYTES, encode, fault_to_wire
from app.runtime.worker import WorkerSpec, fault_from_exception, load_plugin

logger = logging.getLogger("livetrack.plugin")

WATCH_INTERVAL_S = 0.05
# Serve asks each replica this often whether it is alive; a death between frames shows this fast.
HEALTH_CHECK_PERIOD_S = 1.0
# serve.batch's own defaults are replaced from the manifest in __init__ (ray_config.py).
PLACEHOLDER_BATCH = 1


class LoadFailed(RuntimeError):
    """__init__ failed; the message carries the wire fault so the server can give the usual reason."""

    def __init__(self, fault: dict[str, Any]) -> None:
        super().__init__(LOAD_FAULT_MARKER + json.dumps(fault, separators=(",", ":")))


class PluginReplica:
    """One replica of `livetrack-<plugin>`; `spec` is what a local worker gets, plus batching and the deadline."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._app = app_name(spec["name"])
        self._name = spec["name"]
        context = serve.get_replica_context()
        self._replica = f"{context.replica_tag}" if hasattr(context, "replica_tag") else str(context.replica_id)
        worker_spec = WorkerSpec(
            spec["name"],
            os.getcwd(),  # the runtime env's working_dir: the plugin's folder
            spec["entrypoint"],
            spec["config"],
            spec["requires_gpu"],
            spec["gpu_policy"],
            spec["memory_limit_mb"],
            spec["log_level"],
        )
        plugin, answer = load_plugin(worker_spec)
        if plugin is None:
            raise LoadFailed(answer["fault"])
        self._plugin = plugin
        self._ready = {**answer, "replica": self._replica, "pid": os.getpid()}
        self._timeout_ms: int = spec["timeout_ms"]
        self._memory_limit_mb: int = spec["memory_limit_mb"]
        self.process_frame.set_max_batch_size(spec["max_batch_size"])
        self.process_frame.set_batch_wait_timeout_s(spec["batch_wait_timeout_ms"] / 1000)
        self._busy: tuple[float, str] | None = None  # (started, what) while plugin code runs
        threading.Thread(target=self._watch, name="livetrack-watchdog", daemon=True).start()
        logger.info("replica %s of %s ready on %s", self._replica, self._app, answer["device"])

    def ready(self) -> bytes:
        return encode(self._ready)

    # -- self-watch -----------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            busy = self._busy
            if busy is not None and (time.monotonic() - busy[0]) * 1000 > self._timeout_ms:
                self._die(
                    PluginFault(
                        "TimeoutError",
                        f"replica {self._replica} gave no answer within {self._timeout_ms} ms while {busy[1]}; "
                        "replica ended, Serve starts a new one",
                        "raise timeout_ms in manifest.json or fix the plugin",
                    )
                )
            used = resident_mb(os.getpid())
            if used is not None and used > self._memory_limit_mb:
                self._die(
                    PluginFault(
                        "MemoryError",
                        f"replica {self._replica} used {used:.0f} MB, over memory_limit_mb {self._memory_limit_mb}; "
                        "replica ended, Serve starts a new one",
                        "raise memory_limit_mb or fix the leak",
                    )
                )

    def _die(self, fault: PluginFault) -> None:
        logger.error("%s: %s", self._app, fault.reason)
        try:
            kv_put(replica_fault_key(self._app, self._replica), encode(fault_to_wire(fault)))
        finally:
            os._exit(1)

    # -- calls ----------------------------------------------------------------------
    @serve.batch(max_batch_size=PLACEHOLDER_BATCH)  # type: ignore[untyped-decorator]  # Ray is Any here
    async def process_frame(self, items: list[dict[str, Any]]) -> list[bytes]:
        """One call per frame from any server; Serve hands the waiting ones over together."""
        frames = [
            Frame(item["session_id"], item["index"], item["pts"], np.asarray(item["image"]), item["options"])
            for item in items
        ]
        answers = await asyncio.to_thread(self._process, frames)
        return answers

    def _process(self, frames: list[Frame]) -> list[bytes]:
        first = frames[0]
        self._busy = (time.monotonic(), f"processing frame {first.index} of session {first.session_id}")
        fix = f"fix the plugin; it restarts automatically, or with POST /v1/plugins/{self._name}/restart"
        try:
            results = validate_results(self._plugin.process(frames), len(frames))
        except InvalidResult as exc:
            error = encode(
                {"op": "error", "fault": fault_to_wire(PluginFault("ValueError", f"invalid result: {exc}", fix))}
            )
            return [error] * len(frames)
        except BaseException as exc:  # plugin code: contain everything, SystemExit included
            where = f" (frame {first.index} of session {first.session_id}, replica {self._replica})"
            error = encode({"op": "error", "fault": fault_to_wire(fault_from_exception(exc, fix, where))})
            return [error] * len(frames)
        finally:
            self._busy = None
        answers = []
        for result in results:
            payload = encode({"op": "result", "results": [result]})
            if len(payload) > MAX_MESSAGE_BYTES:
                what = f"the answer is {len(payload)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
                payload = encode({"op": "error", "fault": fault_to_wire(PluginFault("ValueError", what, fix))})
            answers.append(payload)
        return answers

    async def end_session(self, session_id: str) -> bytes:
        hook = getattr(self._plugin, "end_session", None)
        if hook is not None:
            try:
                await asyncio.to_thread(hook, session_id)
            except BaseException as exc:  # plugin code; a failing cleanup is logged, not fatal
                logger.warning("end_session(%s) raised %r", session_id, exc)
        return encode({"op": "ok"})


def deploy(manifest: Manifest, config: RayConfig, gpu_policy: str, log_level: str, num_gpus: float) -> None:
    """Deploy (or redeploy) `livetrack-<plugin>` without waiting for it; blocking on the cluster for the upload."""
    # Local folders are uploaded the way `ray.init(runtime_env=...)` does for a job: each becomes a
    # gcs:// package every node can fetch (Serve accepts only URIs in a deployment's runtime env).
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    runtime_env: dict[str, Any] = {
        "working_dir": str(Path(manifest.folder).resolve()),
        "py_modules": [str(Path(app_package.__file__).resolve().parent)],
    }
    scratch = os.getcwd()
    runtime_env = upload_py_modules_if_needed(runtime_env, include_gitignore=True, scratch_dir=scratch)
    runtime_env = upload_working_dir_if_needed(runtime_env, include_gitignore=True, scratch_dir=scratch)
    spec = {
        "name": manifest.name,
        "entrypoint": manifest.entrypoint,
        "config": manifest.config,
        "requires_gpu": manifest.requires_gpu,
        "gpu_policy": gpu_policy,
        "memory_limit_mb": manifest.memory_limit_mb,
        "log_level": log_level,
        "timeout_ms": manifest.timeout_ms,
        "max_batch_size": config.max_batch_size,
        "batch_wait_timeout_ms": config.batch_wait_timeout_ms,
    }
    scaling: dict[str, Any] = (
        {"autoscaling_config": config.autoscaling} if config.autoscaling else {"num_replicas": config.num_replicas}
    )
    name = app_name(manifest.name)
    deployment = serve.deployment(PluginReplica).options(
        name=name,
        max_ongoing_requests=max(2 * config.max_batch_size, 8),
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=max(10.0, manifest.timeout_ms / 1000),
        graceful_shutdown_timeout_s=5,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": num_gpus, "runtime_env": runtime_env},
        logging_config={"log_level": log_level, "enable_access_log": False},
        **scaling,
    )
    serve._run(deployment.bind(spec), _blocking=False, name=name, route_prefix=None)
