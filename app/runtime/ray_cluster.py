"""What the Ray cluster says, for every server that shares it (DESIGN 6).

Serve's status of the livetrack applications, and the few records servers and replicas
leave for each other in Ray's key-value store (namespace `livetrack`):

    deployed:<app>            digest of the manifest it was deployed from (deploy or attach)
    server:<app>:<server id>  a server that uses it (the last one out deletes it)
    fault:<app>               the last replica death a server saw: {seq, replica, fault}
    replica-fault:<app>:<id>  a replica's own verdict before it exits (deadline, memory)

Every function here blocks on the cluster: call it from a thread.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.experimental import internal_kv

from app.runtime.errors import PluginFault
from app.runtime.wire import encode, fault_to_wire

KV_NAMESPACE = "livetrack"
REPLICA_PREFIX = "SERVE_REPLICA::"
LIVE_REPLICA_STATES = ("RUNNING", "STARTING", "RECOVERING", "PENDING_MIGRATION", "UPDATING")
# A replica whose __init__ failed raises with this before the wire fault, so every server gives the usual reason.
LOAD_FAULT_MARKER = "LIVETRACK_FAULT="


def app_name(plugin: str) -> str:
    return f"livetrack-{plugin}"


def replica_fault_key(app: str, replica: str) -> str:
    return f"replica-fault:{app}:{replica}"


def kv_get(key: str) -> bytes | None:
    value: bytes | None = internal_kv._internal_kv_get(key.encode(), namespace=KV_NAMESPACE)
    return value


def kv_put(key: str, value: bytes) -> None:
    internal_kv._internal_kv_put(key.encode(), value, overwrite=True, namespace=KV_NAMESPACE)


def kv_del(key: str) -> None:
    internal_kv._internal_kv_del(key.encode(), namespace=KV_NAMESPACE)


def kv_keys(prefix: str) -> list[str]:
    keys: list[bytes] = internal_kv._internal_kv_list(prefix.encode(), namespace=KV_NAMESPACE)
    return [key.decode() for key in keys]


@dataclass(frozen=True)
class AppStatus:
    """What Serve says about one livetrack application, read once per watch tick."""

    status: str  # Serve's deployment status: HEALTHY, UNHEALTHY, UPDATING, DEPLOY_FAILED, ... or MISSING
    message: str
    running: int
    target: int
    replicas: frozenset[str]  # the names of its live replica actors
    fault: tuple[int, str, dict[str, Any]] | None  # the last published fault: (sequence, replica, wire fault)


def read_status(names: list[str]) -> dict[str, AppStatus]:
    """Serve's view of the named applications."""
    applications = serve.status().applications
    actors = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(REPLICA_PREFIX)
    ]
    statuses = {}
    for name in names:
        fault = published_fault(name)
        application = applications.get(name)
        deployment = application.deployments.get(name) if application is not None else None
        if deployment is None:
            statuses[name] = AppStatus("MISSING", "", 0, 0, frozenset(), fault)
            continue
        states = deployment.replica_states
        live = frozenset(a for a in actors if a.startswith(f"{REPLICA_PREFIX}{name}#"))
        target = sum(states.get(state, 0) for state in LIVE_REPLICA_STATES)
        statuses[name] = AppStatus(
            str(deployment.status.value), deployment.message, states.get("RUNNING", 0), target, live, fault
        )
    return statuses


def replica_actor_name(app: str, replica: str) -> str:
    return f"{REPLICA_PREFIX}{app}#{app}#{replica}"


def published_fault(app: str) -> tuple[int, str, dict[str, Any]] | None:
    raw = kv_get(f"fault:{app}")
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        return int(record["seq"]), str(record["replica"]), dict(record["fault"])
    except (ValueError, KeyError, TypeError):
        return None


def publish_fault(app: str, replica: str, fault: PluginFault) -> None:
    kv_put(f"fault:{app}", encode({"seq": time.time_ns(), "replica": replica, "fault": fault_to_wire(fault)}))


def replica_of(error: BaseException) -> tuple[str, str]:
    """(replica id, pid) named in a Ray actor error's text; '?' where it does not say."""
    text = str(error)
    name = re.search(r"name: SERVE_REPLICA::\S+#(\S+)", text)
    pid = re.search(r"pid: (\d+)", text)
    return (name.group(1) if name else "?"), (pid.group(1) if pid else "?")


def exit_detail(error: BaseException) -> str:
    found = re.search(r"Worker exit detail: ([^.]*\.)", str(error))
    detail = found.group(1) if found else type(error).__name__
    return f"its process exited ({detail.strip()} A crash such as SIGSEGV, os._exit or the OOM killer does this)"


def load_fault(message: str) -> dict[str, Any] | None:
    """The wire fault a failed replica __init__ left in Serve's deployment message; None when there is none."""
    start = message.find(LOAD_FAULT_MARKER)
    if start < 0:
        return None
    try:
        fault, _ = json.JSONDecoder().raw_decode(message, start + len(LOAD_FAULT_MARKER))
    except ValueError:
        return None
    return fault if isinstance(fault, dict) else None
