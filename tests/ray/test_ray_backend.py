"""Two servers sharing one plugin deployment on a local Ray cluster (DESIGN 6).

One cluster and two real servers (`python -m app --ray-address ...`) for the whole module;
the tests run in file order and the last one stops the servers. Everything listens on
127.0.0.1 and the cluster is ended by the process id of the `ray start --block` that
this module started.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import REASON, png_with_square
from tests.stream.helpers import Clients, client

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra: pip install -e '.[ray]'"),
    pytest.mark.skipif(
        [name for _, name in socket.if_nameindex()] != ["lo"],
        reason="runs in a network with only lo, where test_private_network.py starts it",
    ),
]

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "raybox"
APP = f"livetrack-{PLUGIN}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _ray_cli() -> list[str]:
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


@dataclass
class Cluster:
    address: str
    process: subprocess.Popen[bytes]
    temp_dir: Path

    def applications(self) -> list[str]:
        """The Serve applications on the cluster, asked from a fresh driver."""
        script = (
            "import ray, json; from ray import serve;"
            f"ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR');"
            "print(json.dumps(sorted(serve.status().applications)))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        names: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
        return names


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # A short temp dir: Ray's socket paths must fit in 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ltray-", dir="/tmp"))
    port = free_port()
    command = [
        *_ray_cli(),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    process = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    cluster = Cluster(f"127.0.0.1:{port}", process, temp_dir)
    try:
        yield cluster
    finally:
        # `ray start --block` ends the whole local cluster when it is signalled; its group goes last.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    replica_pid_at_start: str = ""  # the replica that answered it once it was INITIALIZED

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def health(self) -> dict[str, Any]:
        response = self.get(f"/v1/plugins/{PLUGIN}/health")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def start_server(cluster: Cluster, plugins: Path, log: Path) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "app",
        f"--port={port}",
        f"--plugins-dir={plugins}",
        f"--ray-address={cluster.address}",
        "--ice-address=127.0.0.1",
        "--gpu-policy=cpu",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    return Server(f"http://127.0.0.1:{port}", process, log)


def wait_until(condition: Callable[[], bool], within_s: float, what: str, servers: list[Server]) -> None:
    """Poll external state (a server's HTTP answers) until `condition`, failing with the servers' logs."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        for server in servers:
            assert server.process.poll() is None, f"a server exited:\n{server.log_text()[-4000:]}"
        time.sleep(0.2)
    logs = "\n---\n".join(server.log_text()[-3000:] for server in servers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def servers(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    plugins = tmp_path_factory.mktemp("plugins")
    shutil.copytree(Path(__file__).parent / "plugins" / PLUGIN, plugins / PLUGIN)
    logs = tmp_path_factory.mktemp("logs")
    first = start_server(cluster, plugins, logs / "a.log")
    try:
        # The first deploys; the second starts once the deployment runs, so it attaches.
        wait_until(lambda: first.health()["state"] == "INITIALIZED", 120, "server A's plugin", [first])
        first.replica_pid_at_start = _replica_pid(first)
        second = start_server(cluster, plugins, logs / "b.log")
        started = [first, second]
        try:
            yield started
        finally:
            second.stop()
    finally:
        first.stop()


def test_both_servers_list_the_plugin_initialized_on_ray_one_deployed_one_attached(servers: list[Server]) -> None:
    first, second = servers
    wait_until(lambda: second.health()["state"] == "INITIALIZED", 120, "server B's plugin", servers)
    for server in servers:
        [health] = server.get("/v1/plugins").json()
        assert (health["name"], health["state"], health["backend"]) == (PLUGIN, "INITIALIZED", "ray")
        assert health["replicas"] == {"running": 1, "target": 1} and health["reason"] is None
        assert server.get("/readyz").status_code == 200
    assert f"deployed {APP}" in first.log_text()
    assert f"attached to {APP} (same manifest)" in second.log_text() and f"deployed {APP}" not in second.log_text()
    # Attaching restarted nothing: the replica that answered A before B came is the one answering both.
    assert _replica_pid(first) == _replica_pid(second) == first.replica_pid_at_start


async def test_sessions_on_both_servers_get_correct_boxes_and_share_batches(servers: list[Server]) -> None:
    opened = Clients()
    try:
        streams = [await opened.connect(server.url, PLUGIN, fps=20) for server in servers]
        for stream in streams:
            await stream.wait_for(lambda s=stream: len(s.of_type("tracks")) >= 40, 60, "40 tracks messages")
        for stream in streams:
            for message in stream.of_type("tracks"):
                [track] = message["tracks"]
                truth = client.square_box(message["frame"])
                assert all(abs(a - b) <= 4 for a, b in zip(track["box"], truth, strict=True)), (message, truth)
        first_batches, second_batches = ({m["tracks"][0]["label"] for m in s.of_type("tracks")} for s in streams)
        shared = first_batches & second_batches
        assert shared, f"no batch had frames of both servers: {sorted(first_batches)} / {sorted(second_batches)}"
    finally:
        await opened.close()


def _run_image(server: Server) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/plugins/{PLUGIN}/run",
        content=png_with_square(),
        headers={"content-type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_replica_segfault_fails_the_plugin_on_both_servers_until_serve_replaces_it(
    servers: list[Server],
) -> None:
    first, second = servers
    pid_before = _replica_pid(first)
    opened = Clients()
    try:
        stream = await opened.connect(first.url, PLUGIN, fps=20)
        await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 5, 60, "tracks before the crash")
        stream.send({"type": "options", "crash": True})
        await stream.wait_for(lambda: any(m["state"] == "FAILED" for m in stream.of_type("status")), 30, "FAILED")
        stream.send({"type": "options", "crash": False})  # the next replica gets well-behaved frames
        for server in servers:
            await asyncio.to_thread(
                wait_until, lambda s=server: bool(_failed_reasons(s)), 30, "FAILED on every server", servers
            )
    finally:
        await opened.close()
    for server in servers:
        [reason] = _failed_reasons(server)
        assert REASON.match(reason) and reason.startswith("WorkerCrashed: replica "), reason
        assert f"of {APP} died while processing frame" in reason and "its process exited" in reason, reason
    for server in servers:
        wait_until(lambda s=server: s.health()["state"] == "INITIALIZED", 60, "INITIALIZED again", servers)
        assert server.get("/healthz").status_code == 200
        health = server.health()
        assert health["restarts"] == 1 and health["replicas"] == {"running": 1, "target": 1}
    assert _replica_pid(second) != pid_before  # Serve's new replica answers


async def test_a_replica_past_its_deadline_is_ended_and_both_servers_say_so(servers: list[Server]) -> None:
    first, second = servers
    opened = Clients()
    try:
        stream = await opened.connect(second.url, PLUGIN, fps=20)
        await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 5, 60, "tracks before the hang")
        stream.send({"type": "options", "hang": True})
        await stream.wait_for(lambda: any(m["state"] == "FAILED" for m in stream.of_type("status")), 30, "FAILED")
        stream.send({"type": "options", "hang": False})
        for server in servers:
            await asyncio.to_thread(
                wait_until,
                lambda s=server: len(_failed_reasons(s)) == 2,
                30,
                "a second FAILED on every server",
                servers,
            )
    finally:
        await opened.close()
    for server in servers:
        reason = _failed_reasons(server)[-1]
        assert REASON.match(reason) and reason.startswith("TimeoutError: replica "), reason
        assert "gave no answer within 2000 ms while processing frame" in reason, reason
        wait_until(lambda s=server: s.health()["state"] == "INITIALIZED", 60, "INITIALIZED again", servers)


def _replica_pid(server: Server) -> str:
    """The pid of the replica that answered a one-off run (the plugin puts it in the label)."""
    response = httpx.post(
        f"{server.url}/v1/plugins/{PLUGIN}/run",
        content=png_with_square(),
        headers={"content-type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    label: str = response.json()["tracks"][0]["label"]
    return label.split("-")[0]


def _failed_reasons(server: Server) -> list[str]:
    """The FAILED reasons the server logged (its state may have moved on by the time it is read)."""
    marker = "-> FAILED ("
    lines = server.log_text().splitlines()
    return [
        line.split(marker, 1)[1].rsplit(")", 1)[0] + ")"
        for line in lines
        if f"plugin {PLUGIN}: " in line and marker in line
    ]


def test_restart_redeploys_the_replicas_and_both_servers_keep_working(servers: list[Server]) -> None:
    first, second = servers
    pid_before = _replica_pid(first)
    response = httpx.post(f"{first.url}/v1/plugins/{PLUGIN}/restart", timeout=30)
    assert response.status_code == 202, response.text
    wait_until(lambda: first.health()["state"] == "INITIALIZED", 120, "A reloaded", servers)
    assert first.log_text().count(f"deployed {APP}") == 2
    wait_until(lambda: _replica_pid(second) != pid_before, 60, "a new replica", servers)
    assert _replica_pid(first) != pid_before


def test_servers_stop_cleanly_and_leave_no_livetrack_application(cluster: Cluster, servers: list[Server]) -> None:
    first, second = servers
    assert cluster.applications() == [APP]
    assert first.stop() in (0, -signal.SIGTERM)
    assert cluster.applications() == [APP]  # the other server still uses it
    assert second.health()["state"] == "INITIALIZED"
    assert second.stop() in (0, -signal.SIGTERM)
    # The last server asks Serve to delete it and exits without waiting; Serve finishes on its own.
    wait_until(lambda: cluster.applications() == [], 60, "the application deleted", [])
