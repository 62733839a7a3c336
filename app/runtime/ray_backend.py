"""The Ray backend (DESIGN 6): each plugin as the Ray Serve application `livetrack-<plugin>`.

Imported only when the server runs with --ray-address. Every server pointed at the same
cluster shares one deployment per plugin: the first deploys it, the others attach, and
frames from all of them meet in the replicas' `@serve.batch` (ray_replica.py).

To the supervisor a `RayPluginWorker` looks like a local worker: a load, per-frame
calls and session endings that come back as SandboxResults with the same reasons, and
`on_death` when a replica dies while no call of this server was waiting on it. What
one server sees (a replica that died under its frame, a replica's own deadline or
memory verdict) it publishes in Ray's key-value store, and every server's watcher
turns it into the same FAILED reason; a plugin is INITIALIZED again once Serve reports
its replicas running and healthy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve

from app.runtime import offload
from app.runtime.errors import Outcome, PluginFault, restart_hint
from app.runtime.frames import Frame, InvalidResult, pixels, validate_results
from app.runtime.manifest import Manifest, ManifestError
from app.runtime.ray_cluster import (
    AppStatus,
    app_name,
    exit_detail,
    kv_del,
    kv_get,
    kv_keys,
    kv_put,
    load_fault,
    publish_fault,
    published_fault,
    read_status,
    replica_actor_name,
    replica_fault_key,
    replica_of,
)
from app.runtime.ray_config import RayConfig, read_ray_config
from app.runtime.ray_replica import deploy
from app.runtime.registry import PluginRegistry
from app.runtime.sandbox import CALL_ALLOWANCE_MS, EndSession, Load, Process, SandboxResult
from app.runtime.wire import WireError, encode, parse_answer

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.25
# On top of timeout_ms and the batch wait: the object store, the handle's routing, Serve's queue.
RAY_CALL_ALLOWANCE_MS = 1000


class RayBackend:
    """One connection to the Ray cluster per server, shared by that server's plugins."""

    name = "ray"

    def __init__(self, address: str, registry: PluginRegistry, keep_deployed_default: bool = False) -> None:
        self.address = address
        self._registry = registry
        self.server_id = uuid.uuid4().hex[:12]
        self._connecting: asyncio.Task[PluginFault | None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.workers: dict[str, RayPluginWorker] = {}  # plugin name -> its current worker
        self._joined: dict[str, bool] = {}  # application name -> keep_deployed
        self._keep_default = keep_deployed_default
        self._closed = False
        # One deployment at a time from this server: Serve's client is not made for concurrent deploys.
        self.deploy_lock = threading.Lock()

    # -- the connection -------------------------------------------------------------
    async def connected(self) -> PluginFault | None:
        """Connect once (in a thread: ray.init blocks for seconds); a fault when the cluster cannot be reached."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(asyncio.to_thread(self._connect), name="ray-connect")
        fault = await asyncio.shield(self._connecting)
        if fault is None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="ray-watch")
        return fault

    def _connect(self) -> PluginFault | None:
        try:
            ray.init(
                address=self.address,
                namespace="livetrack",
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
            serve.start(http_options={"location": "NoServer"})
        except Exception as exc:  # any failure to reach the cluster
            logger.exception("cannot connect to the Ray cluster at %s", self.address)
            return PluginFault(
                "ConnectionError",
                f"cannot reach the Ray cluster at {self.address} ({str(exc).splitlines()[0][:200]})",
                "start it (ray start --head) or fix --ray-address, then restart the plugin",
                Outcome.UNAVAILABLE,
            )
        logger.info("connected to the Ray cluster at %s as server %s", self.address, self.server_id)
        return None

    async def _watch(self) -> None:
        """Serve's status of every plugin, turned into replica counts and, for a ready worker, failures."""
        unreachable = False
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            names = [app_name(plugin) for plugin in self.workers]
            if not names:
                continue
            try:
                statuses = await asyncio.to_thread(read_status, names)
            except Exception as exc:  # the cluster is going away; the calls themselves will say so
                if not unreachable:  # one line when it starts failing, one when it is back
                    logger.warning("reading Serve's status from %s failed: %r", self.address, exc)
                unreachable = True
                continue
            if unreachable:
                logger.info("reading Serve's status from %s works again", self.address)
                unreachable = False
            for plugin, worker in list(self.workers.items()):
                status = statuses.get(app_name(plugin))
                if status is None:
                    continue
                if plugin in self._registry:
                    self._registry.set_replicas(plugin, status.running, status.target)
                worker.observe(status)

    # -- deployments ----------------------------------------------------------------
    def join(self, name: str, keep: bool) -> None:
        """This server uses application `name` (blocking)."""
        kv_put(f"server:{name}:{self.server_id}", b"1")
        self._joined[name] = keep or self._keep_default

    async def close(self) -> None:
        """Leave every application; the last server to leave one deletes it unless it is kept. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._connecting is None:
            return
        self._connecting.cancel()
        if (await asyncio.gather(self._connecting, return_exceptions=True))[0] is not None:
            return
        await asyncio.to_thread(self._leave_all)

    def _leave_all(self) -> None:
        try:
            for name, keep in self._joined.items():
                kv_del(f"server:{name}:{self.server_id}")
                # Only what a server deployed goes; an application deployed elsewhere stays.
                ours = kv_get(f"deployed:{name}") is not None
                if ours and not keep and not kv_keys(f"server:{name}:"):
                    logger.info("last server using %s: deleting it", name)
                    serve.delete(name, _blocking=False)
                    kv_del(f"deployed:{name}")
                    kv_del(f"fault:{name}")
        except Exception:
            logger.exception("leaving the Ray cluster's applications failed")
        finally:
            ray.shutdown()

    # -- the supervisor's seam ------------------------------------------------------
    def new_worker(
        self,
        manifest: Manifest,
        gpu_policy: str,
        on_death: Callable[[PluginFault], None],
        log_level: str,
        *,
        redeploy: bool,
    ) -> RayPluginWorker:
        worker = RayPluginWorker(self, manifest, gpu_policy, on_death, log_level, redeploy=redeploy)
        self.workers[manifest.name] = worker
        return worker

    async def run(self, worker: Any, call: Load | Process | EndSession) -> SandboxResult:
        assert isinstance(worker, RayPluginWorker)
        if isinstance(call, Load):
            return await worker.load()
        if isinstance(call, Process):
            return await worker.process(list(call.frames))
        return await worker.end_session(call.session_id)


@dataclass
class _Watch:
    """What a worker remembers between watch ticks."""

    fault_baseline: int = 0  # published faults up to this sequence happened before this worker
    dead_replicas: set[str] = field(default_factory=set)


class RayPluginWorker:
    """One server's use of `livetrack-<plugin>`; single-use like a local worker (a restart makes a new one)."""

    pid: int | None = None  # no local process

    def __init__(
        self,
        backend: RayBackend,
        manifest: Manifest,
        gpu_policy: str,
        on_death: Callable[[PluginFault], None],
        log_level: str,
        *,
        redeploy: bool,
    ) -> None:
        self.name = manifest.name
        self.app = app_name(manifest.name)
        self.manifest = manifest
        self._backend = backend
        self._gpu_policy = gpu_policy
        self._log_level = log_level
        self._on_death = on_death
        self._redeploy = redeploy
        self._handle: Any = None
        self._ready = False
        self._gone = False  # failed or stopped: nothing more is reported
        self._watch = _Watch()
        self._config = RayConfig()

    # -- load -----------------------------------------------------------------------
    async def load(self) -> SandboxResult:
        started = time.perf_counter()

        def failure(fault: PluginFault) -> SandboxResult:
            self._gone = True
            return SandboxResult.failure(fault, (time.perf_counter() - started) * 1000)

        fault = await self._backend.connected()
        if fault is not None:
            return failure(fault)
        try:
            self._config, manifest_bytes = read_ray_config(self.manifest)
        except ManifestError as exc:
            fix = (
                f"fix {self.manifest.folder / 'manifest.json'}, then restart with POST /v1/plugins/{self.name}/restart"
            )
            return failure(PluginFault("ValueError", f"invalid manifest: {exc}", fix))
        try:
            fault = await asyncio.to_thread(self._deploy_or_attach_locked, manifest_bytes)
        except Exception as exc:  # Serve refused the deployment itself
            logger.exception("plugin %s: deploying %s failed", self.name, self.app)
            fault = PluginFault("RuntimeError", f"Serve refused {self.app}: {str(exc)[:300]}", restart_hint(self.name))
        if fault is not None:
            return failure(fault)
        result = await self._wait_running(started)
        if not result.ok:
            self._gone = True
        return result

    def _num_gpus(self) -> tuple[float, PluginFault | None]:
        if not self.manifest.requires_gpu or self._gpu_policy == "cpu":
            return 0.0, None
        if ray.cluster_resources().get("GPU", 0) > 0:
            return self._config.num_gpus, None
        if self._gpu_policy == "require":
            return 0.0, PluginFault(
                "RuntimeError",
                f"requires a CUDA GPU but the Ray cluster at {self._backend.address} has none",
                "add a GPU node to the cluster, or start with --gpu-policy auto to run on CPU",
                Outcome.UNAVAILABLE,
            )
        return 0.0, None  # auto: the replica finds no CUDA and runs on CPU with a degraded note

    def _deploy_or_attach_locked(self, manifest_bytes: bytes) -> PluginFault | None:
        with self._backend.deploy_lock:
            return self._deploy_or_attach(manifest_bytes)

    def _deploy_or_attach(self, manifest_bytes: bytes) -> PluginFault | None:
        """Deploy unless the cluster already runs this manifest (then attach); blocking."""
        num_gpus, fault = self._num_gpus()
        if fault is not None:
            return fault
        digest = hashlib.sha256(
            manifest_bytes + f"|{self._gpu_policy}|{num_gpus}|{self._log_level}".encode()
        ).hexdigest()
        current = kv_get(f"deployed:{self.app}")
        application = serve.status().applications.get(self.app)
        healthy = application is not None and str(application.status.value) not in ("DEPLOY_FAILED", "DELETING")
        # An application that runs without our record was deployed by someone else (a KubeRay
        # RayService, an operator): attach to it, never replace it unless told to restart.
        managed_elsewhere = healthy and current is None
        if self._redeploy or not healthy or (current != digest.encode() and not managed_elsewhere):
            deploy(self.manifest, self._config, self._gpu_policy, self._log_level, num_gpus)
            kv_put(f"deployed:{self.app}", digest.encode())
            logger.info("plugin %s: deployed %s", self.name, self.app)
        else:
            why = "deployed outside livetrack" if managed_elsewhere else "same manifest"
            logger.info("plugin %s: attached to %s (%s)", self.name, self.app, why)
        self._backend.join(self.app, self._config.keep_deployed)
        fault_record = published_fault(self.app)
        self._watch.fault_baseline = fault_record[0] if fault_record else 0
        if fault_record is not None and fault_record[1] != "?":
            self._watch.dead_replicas.add(fault_record[1])
        self._handle = serve.get_app_handle(self.app)
        return None

    async def _wait_running(self, started: float) -> SandboxResult:
        """Until Serve runs every replica of the application healthy (and none that died before), then ready."""
        deadline = started + self.manifest.load_timeout_ms / 1000
        while time.perf_counter() < deadline:
            status = (await asyncio.to_thread(read_status, [self.app]))[self.app]
            self._backend_replicas(status)
            if status.status == "DEPLOY_FAILED":
                wire = load_fault(status.message)
                if wire is not None:
                    try:
                        fault = parse_answer(encode({"op": "load_failed", "fault": wire})).fault
                    except WireError:
                        fault = None
                    if fault is not None:
                        return SandboxResult.failure(fault, (time.perf_counter() - started) * 1000)
                first_line = status.message.splitlines()[0][:300] if status.message else "no message"
                what = f"Serve could not start {self.app}: {first_line}"
                return SandboxResult.failure(
                    PluginFault("RuntimeError", what, restart_hint(self.name)), (time.perf_counter() - started) * 1000
                )
            settled = (
                status.status == "HEALTHY"
                and status.running == status.target
                and len(status.replicas) == status.target
                and not (status.replicas & {replica_actor_name(self.app, r) for r in self._watch.dead_replicas})
            )
            if settled:
                try:
                    answer = parse_answer(await self._handle.ready.remote())
                except Exception as exc:  # a replica that died between the status and this call
                    logger.info("plugin %s: ready probe failed (%s); waiting", self.name, type(exc).__name__)
                else:
                    self._ready = True
                    return SandboxResult(
                        True,
                        {"device": answer.device, "degraded": answer.degraded},
                        execution_time_ms=(time.perf_counter() - started) * 1000,
                    )
            await asyncio.sleep(WATCH_INTERVAL_S)
        fault = PluginFault(
            "TimeoutError",
            f"Serve did not run {self.app} within {self.manifest.load_timeout_ms} ms",
            "see the Ray cluster's Serve logs; raise load_timeout_ms in manifest.json or add resources",
        )
        return SandboxResult.failure(fault, (time.perf_counter() - started) * 1000)

    def _backend_replicas(self, status: AppStatus) -> None:
        registry = self._backend._registry
        if self.name in registry:
            registry.set_replicas(self.name, status.running, status.target)

    # -- the watcher's view ---------------------------------------------------------
    def observe(self, status: AppStatus) -> None:
        """A watch tick: a fault another server saw, or a deployment Serve calls unhealthy, ends this worker."""
        if not self._ready or self._gone:
            return
        if status.fault is not None and status.fault[0] > self._watch.fault_baseline:
            _, replica, wire = status.fault
            try:
                fault = parse_answer(encode({"op": "error", "fault": wire})).fault
            except WireError:
                fault = None
            if fault is not None:
                self._die(fault, replica)
                return
        if status.status in ("UNHEALTHY", "MISSING", "DEPLOY_FAILED"):
            what = f"Serve reports {self.app} {status.status}"
            if status.message:
                what += f": {status.message.splitlines()[0][:300]}"
            self._die(PluginFault("WorkerCrashed", what, restart_hint(self.name)), None)

    def _die(self, fault: PluginFault, replica: str | None) -> None:
        self._gone = True
        if replica:
            self._watch.dead_replicas.add(replica)
        self._on_death(fault)

    # -- calls ----------------------------------------------------------------------
    async def process(self, frames: list[Frame]) -> SandboxResult:
        """Each frame is its own call, so Serve can batch it with frames from every other server."""
        started = time.perf_counter()
        if self._gone or self._handle is None:
            return SandboxResult.failure(_STOPPED, 0.0)
        limit_ms = self.manifest.timeout_ms + self._config.batch_wait_timeout_ms + CALL_ALLOWANCE_MS
        limit_ms += RAY_CALL_ALLOWANCE_MS
        calls = [self._call_frame(frame) for frame in frames]
        try:
            async with asyncio.timeout(limit_ms / 1000):
                payloads = await asyncio.gather(*calls)
        except TimeoutError:
            first = frames[0]
            fault = PluginFault(
                "TimeoutError",
                f"no answer from {self.app} within {limit_ms:.0f} ms for frame {first.index} of session "
                f"{first.session_id}",
                "raise timeout_ms in manifest.json or fix the plugin; see the Ray cluster's Serve logs",
            )
            return self._failed_call(fault, started)
        except ray.exceptions.RayActorError as exc:
            # The replica died under this frame: why, from its own verdict if it left one, for every server.
            replica = replica_of(exc)[0]
            fault = await asyncio.to_thread(self._death_fault, exc, frames[0])
            self._watch.dead_replicas.add(replica)
            try:
                await asyncio.to_thread(publish_fault, self.app, replica, fault)
            except Exception:  # the others still see Serve's UNHEALTHY, with a plainer reason
                logger.warning("plugin %s: publishing the fault failed", self.name, exc_info=True)
            return self._failed_call(fault, started)
        except ray.exceptions.RayError as exc:
            fault = PluginFault(
                "WorkerCrashed", f"{self.app} failed a call: {str(exc).splitlines()[0][:300]}", restart_hint(self.name)
            )
            return self._failed_call(fault, started)
        elapsed_ms = (time.perf_counter() - started) * 1000
        results = []
        for payload in payloads:
            try:
                answer = parse_answer(payload)
            except (WireError, AttributeError) as exc:
                what = f"replica of {self.app} sent {exc}"
                return self._failed_call(PluginFault("ProtocolError", what, restart_hint(self.name)), started)
            if answer.fault is not None:
                return SandboxResult.failure(answer.fault, elapsed_ms)
            try:
                results.extend(validate_results(answer.results, 1))
            except InvalidResult as exc:
                fault = PluginFault("ValueError", f"invalid result: {exc}", restart_hint(self.name))
                return SandboxResult.failure(fault, elapsed_ms)
        return SandboxResult(True, results, execution_time_ms=elapsed_ms)

    async def _call_frame(self, frame: Frame) -> Any:
        item = {
            "session_id": frame.session_id,
            "index": frame.index,
            "pts": frame.pts,
            "image": await offload.off_loop(pixels, frame.image),  # a decoded frame is converted here, in a thread
            "options": frame.options,
        }
        return await self._handle.process_frame.remote(item)

    def _death_fault(self, error: BaseException, frame: Frame) -> PluginFault:
        """Why the replica under this frame died: its own verdict (deadline, memory) when it left one (blocking)."""
        replica, pid = replica_of(error)
        raw = kv_get(replica_fault_key(self.app, replica)) if replica != "?" else None
        if raw is not None:
            try:
                fault = parse_answer(_wrap(raw)).fault
            except WireError:
                fault = None
            if fault is not None:
                return fault
        what = (
            f"replica {replica} (pid {pid}) of {self.app} died while processing frame {frame.index} "
            f"of session {frame.session_id}: {exit_detail(error)}"
        )
        return PluginFault(
            "WorkerCrashed",
            what,
            f"see the replica's log on the Ray cluster; Serve starts a new replica, "
            f"or restart with POST /v1/plugins/{self.name}/restart",
        )

    def _failed_call(self, fault: PluginFault, started: float) -> SandboxResult:
        """A call that ended this worker: the supervisor marks FAILED and restarts (attaching again)."""
        self._gone = True
        return SandboxResult.failure(fault, (time.perf_counter() - started) * 1000)

    async def end_session(self, session_id: str) -> SandboxResult:
        if self._gone or self._handle is None:
            return SandboxResult(True)
        try:
            async with asyncio.timeout((self.manifest.timeout_ms + RAY_CALL_ALLOWANCE_MS) / 1000):
                await self._handle.end_session.remote(session_id)
        except (TimeoutError, ray.exceptions.RayError) as exc:
            # The session's state is lost with the replica either way; the frames' calls report deaths.
            logger.info("plugin %s: ending session %s: %s", self.name, session_id, type(exc).__name__)
        return SandboxResult(True)

    async def stop(self) -> None:
        """This server stops using the deployment (the backend decides at shutdown whether it goes)."""
        self._gone = True
        if self._backend.workers.get(self.name) is self:
            del self._backend.workers[self.name]


_STOPPED = PluginFault("WorkerStopped", "the worker was stopped by the server", "none needed")


def _wrap(raw: bytes) -> bytes:
    """A replica's own verdict (a wire fault) as an error answer, to be checked like one."""
    return b'{"op":"error","fault":' + raw + b"}"
