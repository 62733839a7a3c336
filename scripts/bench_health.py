"""Health API under load: REST requests per second, and fan-out latency of state changes.

    python scripts/bench_health.py [--seconds 3] [--clients 1,10,100] [--subscribers 100,1000]
                                   [--crashes 4] [--out bench-results/health.json]

It starts `python -m app` on a free loopback port with two inline plugins: `steady`
(always INITIALIZED) and `crasher` (its worker segfaults on every frame, so each
POST .../run makes three state changes: FAILED, LOADED on the automatic restart,
INITIALIZED). Then:

- REST: N clients on keep-alive connections GET /v1/plugins/steady/health for
  --seconds each; requests per second and per-request latency.
- Fan-out: S subscribers on /v1/ws/health (websockets' default client, with
  permessage-deflate) while the crasher crashes --crashes times; the latency of a
  state change is its arrival at a subscriber minus the registry's timestamp of it.

Clients and server share this machine's cores; the clients run in this one process.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
STEADY = "class Plugin:\n    def __init__(self, device, config):\n        pass\n\n    def process(self, batch):\n" \
    "        return [{'tracks': []} for _ in batch]\n"  # fmt: skip
CRASHER = "import ctypes\n\n\nclass Plugin:\n    def __init__(self, device, config):\n        pass\n\n" \
    "    def process(self, batch):\n        ctypes.string_at(0)\n"  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Server:
    """`python -m app` in a child process, its log in a file."""

    def __init__(self, workdir: Path) -> None:
        plugins = workdir / "plugins"
        for name, source in (("steady", STEADY), ("crasher", CRASHER)):
            (plugins / name).mkdir(parents=True)
            manifest = {"name": name, "version": "1.0.0", "entrypoint": "plugin:Plugin", "timeout_ms": 2000}
            (plugins / name / "manifest.json").write_text(json.dumps(manifest))
            (plugins / name / "plugin.py").write_text(source)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        command = [sys.executable, "-m", "app", "--port", str(self.port), "--plugins-dir", str(plugins)]
        command += ["--admin-token", TOKEN, "--log-level", "WARNING"]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not get ready; its log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- REST ---------------------------------------------------------------------------------
async def _rest_client(port: int, path: str, until: float, latencies: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection, written by hand so the client costs little next to the server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"GET {path} answered {head[:40]!r}")
            await reader.readexactly(_content_length(head))
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
        await writer.wait_closed()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"no content-length in {head[:200]!r}")


async def bench_rest(port: int, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_rest_client(port, "/v1/plugins/steady/health", until, latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


# -- fan-out ------------------------------------------------------------------------------
class Listener:
    """One subscriber: for every crasher state change it sees, how late it arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.state: str | None = None
        self.delays: dict[str, float] = {}  # registry timestamp -> arrival delay (s)
        self.restarts = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            arrived = time.time()
            message = json.loads(text)
            if message["type"] == "snapshot":
                crasher = next(p for p in message["payload"]["plugins"] if p["name"] == "crasher")
                self.state = crasher["state"]
            elif message["type"] == "plugin" and message["payload"]["name"] == "crasher":
                health = message["payload"]
                if health["state"] != self.state:
                    self.delays[message["timestamp"]] = arrived - epoch(message["timestamp"])
                self.state = health["state"]
                self.restarts = health["restarts"]


async def _open_listeners(ws_url: str, count: int) -> list[Listener]:
    listeners: list[Listener] = []
    for start in range(0, count, 100):  # in waves, so the listen backlog never overflows
        batch = await asyncio.gather(*(connect(ws_url + "/v1/ws/health") for _ in range(min(100, count - start))))
        listeners += [Listener(ws) for ws in batch]
    return listeners


async def _crash_once(client: httpx.AsyncClient, listeners: list[Listener]) -> None:
    """One crash and its recovery (a manual restart when the automatic budget is spent)."""
    restarts = max(listener.restarts for listener in listeners)
    response = await client.post("/v1/plugins/crasher/run", content=_png())
    if response.status_code != 502:
        raise RuntimeError(f"the crasher answered {response.status_code}: {response.text}")
    deadline = time.monotonic() + 60
    while not all(li.state == "INITIALIZED" and li.restarts > restarts for li in listeners):
        if time.monotonic() > deadline:
            raise RuntimeError("the crasher did not come back within 60 s")
        if all(li.state == "FAILED" for li in listeners):
            await asyncio.sleep(0.2)
            health = (await client.get("/v1/plugins/crasher/health")).json()
            if health["state"] == "FAILED":
                await client.post("/v1/plugins/crasher/restart", headers={"Authorization": f"Bearer {TOKEN}"})
        await asyncio.sleep(0.02)


async def bench_fanout(server: Server, subscribers: int, crashes: int) -> dict[str, Any]:
    listeners = await _open_listeners(server.ws_url, subscribers)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while not all(li.state == "INITIALIZED" for li in listeners):
                if time.monotonic() > deadline:
                    raise RuntimeError("subscribers did not all see the crasher INITIALIZED within 60 s")
                await asyncio.sleep(0.05)
            for _ in range(crashes):
                await _crash_once(client, listeners)
    finally:
        for listener in listeners:
            await listener.ws.close()
            listener.task.cancel()
        await asyncio.gather(*(li.task for li in listeners), return_exceptions=True)
    delays = [delay for li in listeners for delay in li.delays.values()]
    changes = sorted({stamp for li in listeners for stamp in li.delays})
    # The slowest subscriber per change: when the last one of them knew.
    last = [max(li.delays[stamp] for li in listeners if stamp in li.delays) for stamp in changes]
    missed = sum(len(changes) - len(li.delays) for li in listeners)
    return {
        "subscribers": subscribers,
        "state_changes": len(changes),
        "deliveries": len(delays),
        "missed": missed,
        "latency_p50_ms": round(percentile(delays, 0.5) * 1000, 2),
        "latency_p99_ms": round(percentile(delays, 0.99) * 1000, 2),
        "last_subscriber_p50_ms": round(percentile(last, 0.5) * 1000, 2),
    }


def _png() -> bytes:
    # Any small image: the crasher dies before looking at it.
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


async def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    rest = []
    for clients in args.clients:
        rest.append(await bench_rest(server.port, clients, args.seconds))
        print(
            f"REST GET /v1/plugins/steady/health  {clients:>4} clients: {rest[-1]['requests_per_s']:>8.1f} req/s"
            f"   p50 {rest[-1]['latency_p50_ms']:.2f} ms   p99 {rest[-1]['latency_p99_ms']:.2f} ms",
            flush=True,
        )
    fanout = []
    for subscribers in args.subscribers:
        fanout.append(await bench_fanout(server, subscribers, args.crashes))
        row = fanout[-1]
        print(
            f"fan-out to {subscribers:>5} subscribers: p50 {row['latency_p50_ms']:.2f} ms"
            f"   p99 {row['latency_p99_ms']:.2f} ms"
            f"   last subscriber p50 {row['last_subscriber_p50_ms']:.2f} ms"
            f"   ({row['state_changes']} changes, {row['deliveries']} deliveries, {row['missed']} missed)",
            flush=True,
        )
    return {"rest": rest, "fanout": fanout}


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each REST run")
    parser.add_argument("--clients", type=_numbers, default=[1, 10, 100], help="REST concurrencies, comma-separated")
    parser.add_argument("--subscribers", type=_numbers, default=[100, 1000], help="subscriber counts, comma-separated")
    parser.add_argument("--crashes", type=int, default=4, help="crash cycles per subscriber count (3 changes each)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/health.json"))
    args = parser.parse_args()
    # Each subscriber is a descriptor here and one in the server, which inherits the limit.
    _raise_fd_limit(2 * max(args.subscribers, default=0) + 512)
    # Other work on the machine skews every figure here; the report says how busy it was.
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-health-"))
    server = Server(workdir)
    try:
        server.wait_ready()
        results = asyncio.run(run(server, args))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "clients_in_one_process": True,
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; wrote {args.out}")


if __name__ == "__main__":
    main()
