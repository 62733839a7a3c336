"""Scale-out benchmark (DESIGN 6): two servers sharing Ray Serve replicas against two servers with local workers.

    python scripts/bench_scaleout.py                        # about 1.5 minutes
    python scripts/bench_scaleout.py --sessions 6 --duration 15

Needs the ray extra (pip install -e '.[ray]'). It starts one Ray cluster on this machine
(`ray start --head --block`, ended by its process id), then runs the same load twice:

1. local: two servers (`python -m app`), each with its own worker process per plugin;
2. ray: two servers with --ray-address, sharing the deployment `livetrack-<plugin>`.

The load is --sessions headless WebRTC clients (pre-encoded VP8, 320x240) split across the
two servers, on a plugin that costs --fixed-ms per call plus --per-frame-ms per frame (a GPU
model's shape: a batch costs little more than one frame). Each track's label names the batch
it came in, so the figures come from what the clients received:

- throughput: processed frames per second (tracks messages) over all sessions;
- latency: the server's frame-received to annotated-frame latency, p50/p95, from the messages;
- batch sizes the replica saw, and how many batches held frames of both servers;
- per-frame overhead of the Ray path: a plugin that does nothing, one session, the server's own
  mean execution time per call (health's avg_execution_time_ms) on Ray against a local worker.

Everything runs on this host. Results are printed and written to bench-results/scaleout-<time>.json.

Ray advertises the host's own address even when told 127.0.0.1; to keep every packet on
loopback (as the tests do), run it in a network namespace with only `lo`, as root:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python scripts/bench_scaleout.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from client import EncodedTrack, StreamClient, encode_vp8, pattern, percentile
from loopback import free_port

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 320, 240, 15.0

COST_PLUGIN = '''"""Costs config fixed_ms per call plus per_frame_ms per frame; its label names the batch."""

import os
import time
from typing import Any


class Plugin:
    def __init__(self, device: str, config: dict[str, Any]) -> None:
        self.fixed_s = config["fixed_ms"] / 1000
        self.per_frame_s = config["per_frame_ms"] / 1000
        self.calls = 0

    def process(self, batch: list[Any]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.fixed_s or self.per_frame_s:
            time.sleep(self.fixed_s + self.per_frame_s * len(batch))
        label = f"{os.getpid()}-{self.calls}"
        return [{"tracks": [{"id": 1, "box": [1, 1, 9, 9], "score": 1.0, "label": label}]} for _ in batch]
'''


def write_plugins(folder: Path, fixed_ms: float, per_frame_ms: float, max_batch: int, wait_ms: float) -> Path:
    ray_block = {"max_batch_size": max_batch, "batch_wait_timeout_ms": wait_ms, "num_cpus": 0}
    for name, config, wait in (
        ("cost", {"fixed_ms": fixed_ms, "per_frame_ms": per_frame_ms}, wait_ms),
        ("noop", {"fixed_ms": 0, "per_frame_ms": 0}, 0),
    ):
        plugin = folder / name
        plugin.mkdir(parents=True)
        manifest = {
            "name": name,
            "version": "1.0.0",
            "entrypoint": "plugin:Plugin",
            "timeout_ms": 5000,
            "config": config,
            "ray": {**ray_block, "batch_wait_timeout_ms": wait},
        }
        (plugin / "manifest.json").write_text(json.dumps(manifest))
        (plugin / "plugin.py").write_text(COST_PLUGIN)
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


@contextmanager
def ray_cluster() -> Iterator[str]:
    temp_dir = Path(tempfile.mkdtemp(prefix="ltray-", dir="/tmp"))
    port = free_port()
    ports = [f"--{flag}={free_port()}" for flag in ("ray-client-server-port", "dashboard-agent-listen-port")]
    ports += [f"--{flag}={free_port()}" for flag in ("dashboard-agent-grpc-port", "runtime-env-agent-port")]
    command = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head", "--block"]
    command += ["--node-ip-address=127.0.0.1", f"--port={port}", *ports, "--num-cpus=2", "--include-dashboard=false"]
    command += ["--disable-usage-stats", f"--temp-dir={temp_dir}"]
    process = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def servers(plugins: Path, ray_address: str | None, logs: Path) -> Iterator[list[str]]:
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for index in range(2):
            port = free_port()
            command = [sys.executable, "-m", "app", f"--port={port}", f"--plugins-dir={plugins}"]
            command += ["--ice-address=127.0.0.1", "--gpu-policy=cpu", "--max-sessions=64", "--log-level=WARNING"]
            if ray_address:
                command.append(f"--ray-address={ray_address}")
            with open(logs / f"{'ray' if ray_address else 'local'}-{index}.log", "ab") as log:
                process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
            started.append((f"http://127.0.0.1:{port}", process))
            # One after the other: the first deploys, the second attaches.
            wait_ready(started[-1][0], process)
        yield [url for url, _ in started]
    finally:
        for _, process in started:
            process.terminate()
        for _, process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], within_s: float = 180) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server at {url} exited with {process.returncode}; see its log")
        try:
            plugins = httpx.get(f"{url}/v1/plugins", timeout=5).json()
            if all(p["state"] == "INITIALIZED" for p in plugins):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server at {url} did not get its plugins INITIALIZED within {within_s:.0f} s")


async def run_load(
    urls: list[str], plugin: str, sessions: int, duration_s: float, packets: list[bytes]
) -> dict[str, Any]:
    clients = [StreamClient(urls[i % len(urls)], plugin, EncodedTrack(packets, FPS)) for i in range(sessions)]
    for stream in clients:
        await stream.start()
    try:
        await asyncio.sleep(2.0)  # warm-up: ICE, the first frames, the replica's first batches
        marks = [len(stream.of_type("tracks")) for stream in clients]
        await asyncio.sleep(duration_s)
        windows = [stream.of_type("tracks")[mark:] for stream, mark in zip(clients, marks, strict=True)]
    finally:
        for stream in clients:
            await stream.close()
    latencies = [m["latency_ms"] for window in windows for m in window]
    # label "<replica pid>-<call>": one batch; which servers' sessions it held.
    batch_frames: Counter[str] = Counter()
    batch_servers: defaultdict[str, set[int]] = defaultdict(set)
    for index, window in enumerate(windows):
        for message in window:
            label = message["tracks"][0]["label"] if message["tracks"] else "?"
            batch_frames[label] += 1
            batch_servers[label].add(index % len(urls))
    sizes = list(batch_frames.values())
    return {
        "sessions": sessions,
        "frames_per_s": round(len(latencies) / duration_s, 1),
        "latency_ms_p50": round(percentile(latencies, 0.5), 1) if latencies else None,
        "latency_ms_p95": round(percentile(latencies, 0.95), 1) if latencies else None,
        "batches": len(sizes),
        "batch_size_mean": round(statistics.fmean(sizes), 2) if sizes else None,
        "batch_size_max": max(sizes) if sizes else None,
        "batch_size_histogram": dict(sorted(Counter(sizes).items())),
        "batches_with_both_servers": sum(1 for servers in batch_servers.values() if len(servers) > 1),
    }


async def call_overhead(url: str, duration_s: float, packets: list[bytes]) -> dict[str, Any]:
    """One session on the no-op plugin; the server's own mean time per call."""
    stream = StreamClient(url, "noop", EncodedTrack(packets, FPS))
    await stream.start()
    try:
        await asyncio.sleep(duration_s)
    finally:
        await stream.close()
    async with httpx.AsyncClient(timeout=10) as http:
        health = (await http.get(f"{url}/v1/plugins/noop/health")).json()
    return {
        "calls": health["success_count"],
        "avg_ms": health["avg_execution_time_ms"],
        "p95_ms": health["p95_execution_time_ms"],
    }


def backend_run(label: str, plugins: Path, address: str | None, logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    packets = encode_vp8(pattern(WIDTH, HEIGHT), FPS, int(FPS * 4))
    with servers(plugins, address, logs) as urls:
        load = asyncio.run(run_load(urls, "cost", args.sessions, args.duration, packets))
        overhead = asyncio.run(call_overhead(urls[0], args.overhead_duration, packets))
    print(f"{label:>6}: {json.dumps(load)}")
    print(f"{label:>6}: no-op call through the server: {json.dumps(overhead)}")
    return {"load": load, "noop_call": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per load run")
    parser.add_argument("--overhead-duration", type=float, default=5.0)
    parser.add_argument("--fixed-ms", type=float, default=40.0, help="the plugin's cost per call")
    parser.add_argument("--per-frame-ms", type=float, default=2.0, help="the plugin's cost per frame")
    parser.add_argument(
        "--max-batch", type=int, default=None, help="the replica's max_batch_size (default: --sessions)"
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=40.0, help="about one call's cost, so servers' frames meet"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--logs", type=Path, default=None, help="keep the servers' logs here (default: discarded)")
    args = parser.parse_args()
    args.max_batch = args.max_batch or args.sessions

    with tempfile.TemporaryDirectory(prefix="scaleout-") as temp:
        plugins = write_plugins(
            Path(temp) / "plugins", args.fixed_ms, args.per_frame_ms, args.max_batch, args.batch_wait_ms
        )
        logs = args.logs or Path(temp)
        logs.mkdir(parents=True, exist_ok=True)
        print(
            f"{args.sessions} sessions of {WIDTH}x{HEIGHT}@{FPS:g} over two servers; plugin: "
            f"{args.fixed_ms:g} ms per call + {args.per_frame_ms:g} ms per frame"
        )
        local = backend_run("local", plugins, None, logs, args)
        started = time.perf_counter()
        with ray_cluster() as address:
            print(f"ray cluster at {address} up (ray start launched in {time.perf_counter() - started:.1f} s)")
            on_ray = backend_run("ray", plugins, address, logs, args)
    ratio = on_ray["load"]["frames_per_s"] / local["load"]["frames_per_s"] if local["load"]["frames_per_s"] else None
    overhead_ms = None
    if on_ray["noop_call"]["avg_ms"] is not None and local["noop_call"]["avg_ms"] is not None:
        overhead_ms = round(on_ray["noop_call"]["avg_ms"] - local["noop_call"]["avg_ms"], 2)
    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "frame": [WIDTH, HEIGHT, FPS],
        "local": local,
        "ray": on_ray,
        "throughput_ray_over_local": round(ratio, 2) if ratio else None,
        # local: one worker per server (two model instances); ray: one replica shared by both servers.
        "frames_per_s_per_model_instance": {
            "local": round(local["load"]["frames_per_s"] / 2, 1),
            "ray": on_ray["load"]["frames_per_s"],
        },
        "ray_per_call_overhead_ms": overhead_ms,
    }
    per_instance = report["frames_per_s_per_model_instance"]
    print(
        f"frames/s per model instance: local {per_instance['local']} (two workers), ray {per_instance['ray']} "
        "(one replica for both servers)"
    )
    print(
        f"throughput ray/local: {report['throughput_ray_over_local']}x; "
        f"Ray path overhead per call (no-op plugin): {overhead_ms} ms over a local worker"
    )
    out = args.out or REPO / "bench-results" / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
