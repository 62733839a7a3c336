"""Event-loop benchmark: what 8 sessions at 1280x720 on colorblob leave of the server's loop.

    python scripts/bench_loop.py                 # about 1.5 minutes
    python scripts/bench_loop.py --sessions 4 --duration 10
    python scripts/bench_loop.py --clients-niceness 0   # clients at the server's priority

The server runs as a child process with a probe task on its event loop: the probe sleeps
PROBE_S and records how late it wakes (the loop's lag: the time anything else on the loop,
a WebSocket message, a REST answer, an RTP packet, waits behind the work before it). While
--sessions clients stream pre-encoded 1280x720@30 VP8 to colorblob, the bench measures:

- event-loop lag p50/p99 (the probe's overshoot);
- health fan-out: a plugin restart asked over REST -> its state change on /v1/ws/health;
- REST latency p50/p99 of GET /v1/plugins, one request at a time.

The clients run in a process of their own, --clients-niceness (10) nice levels below the server:
they stand in for browsers on other machines, and on this machine's two cores, at the server's
priority, they would take its CPU and measure the scheduler's share between them rather than
the server. The probes run in this process, at the server's priority.

Three runs in one go: `inline`, the per-frame pixel work (rgb conversion, the copy into shared
memory, drawing) run on the loop as before issue 12, the baseline; `threads`, as shipped; and
`bare`, an aiortc loopback with no livetrack code (bench_stream.py's), for the lag aiortc's own
RTP/SRTP work leaves with the same clients (loop lag only: it has no health channel or REST).
Printed, and written to bench-results/loop-<time>.json with the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets
from client import EncodedTrack, StreamClient, encode_vp8, pattern, percentile
from loopback import end_process, free_port

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 1280, 720, 30.0
PROBE_S = 0.005
T = TypeVar("T")

PROBE_PLUGIN = """class Plugin:
    def __init__(self, device, config):
        pass

    def process(self, batch):
        return [{"tracks": []} for _ in batch]
"""


# -- the server side (child process) ----------------------------------------------------------
async def _inline(work: Callable[..., T], *args: Any) -> T:
    return work(*args)


def serve(port: int, plugins: Path, mode: str) -> None:
    """livetrack (or the bare loopback) with a loop-lag probe and GET /bench/lag; `inline` puts the pixel work
    back on the loop."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from app.config import Settings
    from app.runtime import offload
    from app.server import create_app

    if mode == "inline":
        offload.off_loop = _inline
    lags: list[float] = []

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            lags.append((time.perf_counter() - started - PROBE_S) * 1000)

    async def lag(request: Request) -> JSONResponse:
        taken = list(lags)
        if request.query_params.get("reset"):
            lags.clear()
        return JSONResponse({"count": len(taken), "p50": percentile(taken, 0.5), "p99": percentile(taken, 0.99)})

    settings = Settings(
        port=port, plugins_dirs=(plugins,), gpu_policy="cpu", ice_addresses=("127.0.0.1",), log_level="WARNING"
    )
    if mode == "bare":
        from bench_stream import bare_app

        app = bare_app()
    else:
        app = create_app(settings)
    app.router.routes.insert(0, Route("/bench/lag", lag, methods=["GET"]))

    async def main() -> None:
        task = asyncio.create_task(probe())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(main())


@contextlib.contextmanager
def server_process(plugins: Path, mode: str, logs: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), "--plugins", str(plugins), "--mode", mode]
    url = f"http://127.0.0.1:{port}"
    with open(logs / "loop-server.log", "ab") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not come up; see bench-results/logs/loop-server.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        end_process(process)


# -- the measuring side -----------------------------------------------------------------------
async def health_fanout(url: str, rounds: int, gap_s: float) -> list[float]:
    """ms from asking for a restart of `probe` to its state change arriving on /v1/ws/health."""
    seen: list[float] = []
    ws_url = url.replace("http://", "ws://") + "/v1/ws/health"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=url, timeout=30) as http:
        while len(seen) < rounds:
            asked = time.perf_counter()
            if (await http.post("/v1/plugins/probe/restart")).status_code != 202:
                await asyncio.sleep(gap_s)  # still reloading from the last round
                continue
            async with asyncio.timeout(30):
                while True:
                    message = json.loads(await ws.recv())
                    payload = message["payload"]
                    if message["type"] == "plugin" and payload["name"] == "probe" and payload["state"] == "LOADED":
                        seen.append((time.perf_counter() - asked) * 1000)
                        break
            await asyncio.sleep(gap_s)
    return seen


async def rest_latency(url: str, until: float) -> list[float]:
    taken: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            await http.get("/v1/plugins")
            taken.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    return taken


async def stream(url: str, sessions: int, warmup_s: float) -> None:
    """The clients' process: stream `sessions` to colorblob; after `warmup_s` print how many frames came back,
    then again on each line read from stdin, until stdin closes."""
    packets = await asyncio.to_thread(encode_vp8, pattern(WIDTH, HEIGHT), FPS, int(3 * FPS))
    clients = [StreamClient(url, "colorblob", EncodedTrack(packets, FPS)) for _ in range(sessions)]
    try:
        for client in clients:
            await client.start()
        await asyncio.sleep(warmup_s)  # connected and streaming before the window opens
        while True:
            print(sum(len(c.received) for c in clients), flush=True)
            if not await asyncio.to_thread(sys.stdin.readline):
                break
    finally:
        for client in clients:
            await client.close()


class ClientsProcess:
    """The clients in their own process, `niceness` below this one: they stand in for browsers on other
    machines, so they must not take the CPU from the server they load, nor from this process's probes."""

    def __init__(self, url: str, sessions: int, niceness: int, logs: Path) -> None:
        command = [sys.executable, __file__, "--clients", url, "--sessions", str(sessions)]
        with open(logs / "loop-clients.log", "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=lambda: os.nice(niceness),  # in the child only: this process keeps its priority
            )

    async def frames_received(self) -> int:
        """Frames back so far, over all sessions (the first call waits for the warm-up)."""
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        if not line:
            raise SystemExit("the clients ended early; see bench-results/logs/loop-clients.log")
        return int(line)

    async def ask(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(b"report\n")
        self.process.stdin.flush()
        return await self.frames_received()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            end_process(self.process)


async def measure(url: str, args: argparse.Namespace, logs: Path, bare: bool) -> dict[str, Any]:
    clients = ClientsProcess(url, args.sessions, args.clients_niceness, logs)
    try:
        received_before = await clients.frames_received()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.get("/bench/lag?reset=1")
            started = time.monotonic()
            if bare:
                rest, fanout = [float("nan")], [float("nan")]
                await asyncio.sleep(args.duration)
            else:
                rest, fanout = await asyncio.gather(
                    rest_latency(url, started + args.duration),
                    health_fanout(url, max(3, int(args.duration / 2)), 1.0),
                )
            elapsed = time.monotonic() - started
            lag = (await http.get("/bench/lag?reset=1")).json()
        received = await clients.ask() - received_before
        return {
            "loop_lag_ms": {"p50": round(lag["p50"], 2), "p99": round(lag["p99"], 2), "samples": lag["count"]},
            "health_fanout_ms": {
                "p50": round(percentile(fanout, 0.5), 1),
                "max": round(max(fanout), 1),
                "samples": len(fanout),
            },
            "rest_ms": {"p50": round(percentile(rest, 0.5), 1), "p99": round(percentile(rest, 0.99), 1)},
            "fps_received_per_session": round(received / elapsed / args.sessions, 1),
            "load_average": os.getloadavg(),
        }
    finally:
        clients.close()


def show(name: str, figures: dict[str, Any]) -> None:
    lag, fan, rest = figures["loop_lag_ms"], figures["health_fanout_ms"], figures["rest_ms"]
    print(
        f"{name:8s} loop lag p50/p99 {lag['p50']:7.2f}/{lag['p99']:7.2f} ms | health fan-out p50/max "
        f"{fan['p50']:6.1f}/{fan['max']:6.1f} ms | REST p50/p99 {rest['p50']:6.1f}/{rest['p99']:6.1f} ms | "
        f"{figures['fps_received_per_session']:5.1f} fps back per session | load {figures['load_average']}"
    )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}}
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("serve", "plugins", "mode", "clients")}
    with tempfile.TemporaryDirectory(prefix="livetrack-bench-loop-") as folder:
        plugins = Path(folder)
        (plugins / "colorblob").symlink_to(REPO / "plugins" / "colorblob")
        (plugins / "probe").mkdir()
        manifest = {
            "name": "probe",
            "version": "1.0.0",
            "description": "restarted by the bench",
            "entrypoint": "plugin:Plugin",
        }
        (plugins / "probe" / "manifest.json").write_text(json.dumps(manifest))
        (plugins / "probe" / "plugin.py").write_text(PROBE_PLUGIN)
        print(
            f"{args.sessions} sessions of {WIDTH}x{HEIGHT}@{FPS:g} on colorblob, {args.duration:g} s each run, "
            f"clients {args.clients_niceness} nice levels below the server"
        )
        for mode in ("inline", "threads", "bare"):
            with server_process(plugins, mode, logs) as url:
                report[mode] = await measure(url, args, logs, mode == "bare")
            show(mode, report[mode])
    before, after = report["inline"]["loop_lag_ms"]["p99"], report["threads"]["loop_lag_ms"]["p99"]
    report["headline"] = {
        "loop_lag_p99_ms": {mode: report[mode]["loop_lag_ms"]["p99"] for mode in ("inline", "threads", "bare")},
        "loop_lag_p99_inline_over_threads": round(before / after, 2) if after else None,
    }
    report["machine"]["load_at_end"] = os.getloadavg()
    print(
        f"loop lag p99 (ms): {report['headline']['loop_lag_p99_ms']}; inline over threads: "
        f"{report['headline']['loop_lag_p99_inline_over_threads']}x"
    )
    path = out / f"loop-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per run")
    parser.add_argument(
        "--clients-niceness",
        type=int,
        default=10,
        help="how many nice levels below the server the clients run (0: the same priority)",
    )
    parser.add_argument("--out", default=str(REPO / "bench-results"))
    parser.add_argument("--clients", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--plugins", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("inline", "threads", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, Path(args.plugins), args.mode)
        return 0
    if args.clients is not None:
        asyncio.run(stream(args.clients, args.sessions, warmup_s=3.0))
        return 0
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
