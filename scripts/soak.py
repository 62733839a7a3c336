"""Soak test: a real server under changing load and plugin failures; fails when something grows or slows down.

    python scripts/soak.py                    # 10 minutes (issue 7's acceptance run)
    python scripts/soak.py --minutes 0.5      # a quick check (too short to judge slopes)

Starts `python -m app` on a free 127.0.0.1 port with four plugins (colorblob; the zoo's
`segfault` and `hangs`; scripts/soak_plugins/soak_flaky) and, for --minutes:
- streaming clients come and go (scripts/client.py, 640x480 at 15-30 fps for 10-40 s,
  up to --clients at once): mostly colorblob, some on soak_flaky set to hang or crash
  every Nth frame, so sessions must live through plugin failures; some with an overlay
  consumer on /v1/ws/sessions/{id}/tracks;
- health subscribers come and go on /v1/ws/health, some never reading;
- every ~15 s a PNG is run through `segfault` (its worker dies), every ~25 s through
  `hangs` (past its deadline); a plugin left FAILED (restart budget spent) is restarted
  with POST /v1/plugins/{name}/restart;
- every --sample-s the server's RSS, fds, threads, shared-memory segments, sessions
  (and asyncio tasks when /metrics has `livetrack_asyncio_tasks`) are sampled, and
  /healthz is checked. The server runs with a fixed glibc mmap threshold, so its RSS
  follows what it holds rather than what malloc caches (see MMAP_THRESHOLD).
Then it prints sessions, frames, restarts, the per-minute slopes of those resources
after a warm-up (least squares) against stated bounds, and client-measured latency
p50/p95 per minute; writes JSON to --out (default bench-results/soak.json) and the
server's log next to it. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
from client import EncodedTrack, StreamClient, encode_vp8, pattern
from loopback import free_port
from soak_report import (
    BOUNDS,
    LATENCY_FACTOR,
    LATENCY_SLACK_MS,
    MIN_JUDGED_MINUTES,
    STOP_GRACE_S,
    TASKS_NOTE,
    Sample,
    failures,
    latency_by_minute,
    latency_verdict,
    resource_slopes,
    show,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

REPO = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = {
    "colorblob": REPO / "plugins" / "colorblob",
    "segfault": REPO / "tests" / "fixtures" / "plugins" / "segfault",
    "hangs": REPO / "tests" / "fixtures" / "plugins" / "hangs",
    "soak_flaky": REPO / "scripts" / "soak_plugins" / "soak_flaky",
}
WIDTH, HEIGHT = 640, 480
FPS_CHOICES = (15.0, 20.0, 25.0, 30.0)
LOOP_FRAMES = 200  # pre-encoded frames each client loops over; frame 0 is a keyframe
HEALTHZ_MISSES = 3  # consecutive /healthz misses that end the soak early (any single miss fails it)
# glibc's mmap threshold slides up to the largest block freed, so after the first frames every
# 640x480 buffer (~0.9 MB) is carved from the heap and cached there: RSS then swings +-30 MB
# with the load and, measured, ends a 10-minute run 230 MB above its idle start though it is
# flat. A fixed threshold hands such buffers back to the OS on free, so RSS follows what the
# server holds and a leak stands out. --default-malloc measures glibc's default behaviour.
MMAP_THRESHOLD = "131072"


@dataclass
class Tally:
    sessions_served: int = 0
    offers_refused: list[str] = field(default_factory=list)
    sessions_without_frames: list[str] = field(default_factory=list)
    frames_sent: int = 0
    frames_received: int = 0
    by_plugin: dict[str, int] = field(default_factory=dict)
    overlay_consumers: int = 0
    subscribers_reading: int = 0
    subscribers_idle: int = 0
    health_messages: int = 0
    crash_runs: dict[str, int] = field(default_factory=dict)
    hang_runs: dict[str, int] = field(default_factory=dict)
    manual_restarts: int = 0
    unexpected: list[str] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # last server summary per session
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (minute, ms) per frame back


# -- the server -------------------------------------------------------------------------------
@contextlib.contextmanager
def running_server(
    plugins: Path, log: Path, max_sessions: int, default_malloc: bool
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m app` on 127.0.0.1 until the block ends: SIGTERM, then SIGKILL after STOP_GRACE_S."""
    port = free_port()
    command = [sys.executable, "-m", "app", "--port", str(port), "--plugins-dir", str(plugins)]
    command += ["--ice-address", "127.0.0.1", "--gpu-policy", "cpu", "--max-sessions", str(max_sessions)]
    command += ["--log-level", "WARNING"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVETRACK_")}  # only our flags count
    if not default_malloc:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> float | None:
    """Seconds the server took to exit on SIGTERM; None when it had to be killed (or had died)."""
    if process.poll() is not None:
        return None
    started = time.monotonic()
    process.terminate()
    try:
        process.wait(STOP_GRACE_S)
        return time.monotonic() - started
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


async def wait_ready(http: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode} while starting; see its log")
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.3)
    raise SystemExit("the server's plugins did not load within 90 s; see its log")


# -- what the server holds, read from /proc ---------------------------------------------------
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MB


def children(pid: int) -> list[int]:
    """Direct children (the plugin workers and multiprocessing's resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stat:
                    # The command name may hold spaces and parentheses; fields after the last ')' do not.
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
    return found


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def shm_segments(pid: int) -> int:
    # The server names its segments livetrack-<plugin>-<its pid>-<random>; other servers on
    # this machine (a test suite) use their own pid, so they are not counted.
    return sum(1 for name in os.listdir("/dev/shm") if name.startswith("livetrack-") and f"-{pid}-" in name)


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds by kind (socket, pipe, anon_inode:[eventpoll], a file's path...): what grew, when fds did."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kind = target.split(":[")[0] if target.startswith(("socket:", "pipe:")) else target
            kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def metric_value(text: str, name: str) -> float | None:
    """The first unlabelled sample of `name` in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# -- the load ---------------------------------------------------------------------------------
class Soak:
    def __init__(
        self, args: argparse.Namespace, url: str, process: subprocess.Popen[bytes], packets: list[bytes]
    ) -> None:
        self.args = args
        self.url = url
        self.process = process
        self.packets = packets
        self.rng = random.Random(args.seed)
        self.http = httpx.AsyncClient(base_url=url, timeout=10)
        self.stopping = asyncio.Event()
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self.png = bytes(cv2.imencode(".png", cv2.cvtColor(pattern(WIDTH, HEIGHT)(0), cv2.COLOR_RGB2BGR))[1])
        self._failed_seen: dict[str, str] = {}

    def minute(self, at: float | None = None) -> float:
        return ((time.monotonic() if at is None else at) - self.started) / 60

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the soak ends."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def run(self) -> None:
        self.started = time.monotonic()
        loops = [self.sampler(), self.crasher(), self.hanger(), self.restarter()]
        loops += [self.client_slot(n) for n in range(self.args.clients)]
        loops += [self.subscriber_slot(n) for n in range(self.args.subscribers)]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await self.pause(self.args.minutes * 60)
            self.stopping.set()
            # Each loop ends its current client or subscriber and returns; the bound is a backstop.
            done, pending = await asyncio.wait(tasks, timeout=60)
            for task in pending:
                task.cancel()
                self.tally.unexpected.append(f"harness: {task.get_coro()} did not stop within 60 s")
            for task in done:
                if task.exception() is not None:
                    self.tally.unexpected.append(f"harness: {task.exception()!r}")
        finally:
            self.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # streaming clients
    def _choose_plugin(self) -> tuple[str, dict[str, Any]]:
        roll = self.rng.random()
        if roll < 0.15:
            return "soak_flaky", {"fault": "hang", "fault_every": self.rng.randint(100, 250)}
        if roll < 0.3:
            return "soak_flaky", {"fault": "crash", "fault_every": self.rng.randint(100, 250)}
        return "colorblob", {}

    async def client_slot(self, slot: int) -> None:
        await self.pause(slot * 3.0)  # staggered, so the clients do not come and go together
        while not self.stopping.is_set():
            await self.one_client()
            await self.pause(self.rng.uniform(1, 6))

    async def one_client(self) -> None:
        plugin, options = self._choose_plugin()
        fps = self.rng.choice(FPS_CHOICES)
        # Pre-encoded VP8 (a StampedTrack that skips encoding): the client's CPU goes to reading
        # the video back, which leaves this 2-core machine to the server.
        stream = StreamClient(self.url, plugin, EncodedTrack(self.packets, fps), options)
        overlay: asyncio.Task[None] | None = None
        try:
            try:
                await stream.start()
            except httpx.HTTPError as exc:
                self.tally.offers_refused.append(f"{plugin}: {exc!r}")
                return
            session_id = stream.session_id or ""
            self.tally.sessions_served += 1
            self.tally.by_plugin[plugin] = self.tally.by_plugin.get(plugin, 0) + 1
            if self.rng.random() < 0.3:
                overlay = asyncio.create_task(self.overlay_consumer(session_id))
            await self.pause(self.rng.uniform(10, 40))
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await self.http.get(f"/v1/sessions/{session_id}")
                if response.status_code == 200:
                    self.tally.summaries[session_id] = response.json()
            if not stream.received:
                self.tally.sessions_without_frames.append(f"{session_id} ({plugin} {options})")
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await stream.close()
            if overlay is not None:
                overlay.cancel()
                await asyncio.gather(overlay, return_exceptions=True)
            self.tally.frames_sent += stream.source.counter
            self.tally.frames_received += len(stream.received)
            self.tally.latencies += [
                (self.minute(r.at), r.latency_ms) for r in stream.received if r.latency_ms is not None
            ]

    async def overlay_consumer(self, session_id: str) -> None:
        """Reads the session's tracks feed until the session ends (the server closes it) or is cancelled."""
        self.tally.overlay_consumers += 1
        with contextlib.suppress(WebSocketException, OSError):
            async with connect(f"{self.url.replace('http', 'ws', 1)}/v1/ws/sessions/{session_id}/tracks") as ws:
                async for _ in ws:
                    pass

    # health subscribers
    async def subscriber_slot(self, slot: int) -> None:
        await self.pause(slot * 2.0)
        while not self.stopping.is_set():
            reading = self.rng.random() < 0.6
            # A small max_queue makes a client that does not read stop reading its socket too,
            # so the server's send backs up as with a stalled dashboard.
            with contextlib.suppress(WebSocketException, OSError, TimeoutError):
                async with connect(
                    f"{self.url.replace('http', 'ws', 1)}/v1/ws/health", max_queue=2, close_timeout=3
                ) as ws:
                    if reading:
                        self.tally.subscribers_reading += 1
                        await self.read_health(ws, self.rng.uniform(10, 45))
                    else:
                        self.tally.subscribers_idle += 1
                        await self.pause(self.rng.uniform(10, 45))
            await self.pause(self.rng.uniform(0.5, 3))

    async def read_health(self, ws: ClientConnection, seconds: float) -> None:
        until = time.monotonic() + seconds
        try:
            while not self.stopping.is_set() and (left := until - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 2.0)):
                        await ws.recv()
                        self.tally.health_messages += 1
                        if self.rng.random() < 0.02:
                            await ws.send(json.dumps({"type": self.rng.choice(("ping", "resync"))}))
        except ConnectionClosed as exc:
            # Only a subscriber that stops reading may be dropped; one that keeps up never is.
            self.tally.unexpected.append(f"a reading health subscriber was disconnected: {exc}")

    # plugin failures on a schedule
    async def crasher(self) -> None:
        await self.pause(2)
        while not self.stopping.is_set():
            await self.run_image("segfault", self.tally.crash_runs, {502, 409})
            await self.pause(15)

    async def hanger(self) -> None:
        await self.pause(6)
        while not self.stopping.is_set():
            await self.run_image("hangs", self.tally.hang_runs, {504, 409})
            await self.pause(25)

    async def run_image(self, plugin: str, counts: dict[str, int], expected: set[int]) -> None:
        try:
            response = await self.http.post(
                f"/v1/plugins/{plugin}/run", content=self.png, headers={"content-type": "image/png"}
            )
        except httpx.HTTPError as exc:
            self.tally.unexpected.append(f"POST /v1/plugins/{plugin}/run: {exc!r}")
            return
        counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1
        if response.status_code not in expected:
            self.tally.unexpected.append(f"POST /v1/plugins/{plugin}/run: {response.status_code} {response.text[:200]}")

    async def restarter(self) -> None:
        """Restart plugins left FAILED: budget spent, or failed while restarting (no automatic restart then)."""
        while not self.stopping.is_set():
            await self.pause(5)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self.restart_failed()

    async def restart_failed(self, everything: bool = False) -> None:
        plugins = (await self.http.get("/v1/plugins")).json()
        for health in plugins:
            name, reason = health["name"], str(health["reason"])
            if health["state"] != "FAILED":
                self._failed_seen.pop(name, None)
                continue
            if everything or "automatic restarts stopped" in reason or self._failed_seen.get(name) == reason:
                response = await self.http.post(f"/v1/plugins/{name}/restart")
                if response.status_code == 202:
                    self.tally.manual_restarts += 1
                elif response.status_code != 409:  # 409: a restart is already under way
                    self.tally.unexpected.append(f"POST /v1/plugins/{name}/restart: {response.status_code}")
                self._failed_seen.pop(name, None)
            else:
                self._failed_seen[name] = reason

    # sampling
    async def sampler(self) -> None:
        misses = 0
        while True:
            sample = await self.sample()
            self.samples.append(sample)
            misses = 0 if sample.healthz else misses + 1
            if self.process.poll() is not None or misses >= HEALTHZ_MISSES:
                self.stopping.set()  # nothing more to learn; the verdict reports it
                return
            if self.stopping.is_set():
                return
            await self.pause(self.args.sample_s)

    async def sample(self) -> Sample:
        pid = self.process.pid
        healthz, sessions, tasks, subscribers = False, 0, None, None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            healthz = (await self.http.get("/healthz", timeout=5)).status_code == 200
            summaries = (await self.http.get("/v1/sessions")).json()
            sessions = len(summaries)
            for summary in summaries:
                self.tally.summaries[summary["session_id"]] = summary
            text = (await self.http.get("/metrics")).text
            value = metric_value(text, "livetrack_asyncio_tasks")
            tasks = None if value is None else int(value)
            value = metric_value(text, "livetrack_health_subscribers")
            subscribers = None if value is None else int(value)
        workers = children(pid)
        worker_rss = 0.0
        for worker in workers:
            with contextlib.suppress(OSError):
                worker_rss += rss_mb(worker)
        try:
            rss, fds, count = rss_mb(pid), len(os.listdir(f"/proc/{pid}/fd")), threads(pid)
        except OSError:  # the server is gone
            rss, fds, count, healthz = math.nan, 0, 0, False
        return Sample(
            round(self.minute(), 3),
            round(rss, 2),
            round(worker_rss, 1),
            len(workers),
            fds,
            count,
            tasks,
            shm_segments(pid),
            sessions,
            subscribers,
            healthz,
        )


# -- the run ----------------------------------------------------------------------------------
async def settle(soak: Soak) -> dict[str, Any]:
    """After the load: sessions must close, FAILED plugins must come back on a restart."""
    end: dict[str, Any] = {"sessions_left_open": None, "not_recovered": ["(never answered)"], "plugins": {}}
    with contextlib.suppress(httpx.HTTPError, ValueError):
        for _ in range(60):  # 30 s: a closed peer connection is noticed well within that
            end["sessions_left_open"] = len((await soak.http.get("/v1/sessions")).json())
            if not end["sessions_left_open"]:
                break
            await asyncio.sleep(0.5)
        await soak.restart_failed(everything=True)
        for _ in range(60):  # 30 s for every worker to start again
            plugins = (await soak.http.get("/v1/plugins")).json()
            end["plugins"] = {p["name"]: {k: p[k] for k in ("state", "restarts", "error_count")} for p in plugins}
            end["not_recovered"] = [f"{p['name']} {p['state']}" for p in plugins if p["state"] != "INITIALIZED"]
            if not end["not_recovered"]:
                break
            await asyncio.sleep(0.5)
    end["idle_sample"] = asdict(await soak.sample())
    with contextlib.suppress(OSError):
        end["idle_sample"]["fd_kinds"] = fd_kinds(soak.process.pid)
    return end


async def soak_server(args: argparse.Namespace, url: str, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    print(f"pre-encoding {LOOP_FRAMES} frames of {WIDTH}x{HEIGHT} VP8 for the clients...", flush=True)
    packets = await asyncio.to_thread(encode_vp8, pattern(WIDTH, HEIGHT), 20.0, LOOP_FRAMES)
    soak = Soak(args, url, process, packets)
    try:
        await wait_ready(soak.http, process)
        start = {**asdict(await soak.sample()), "fd_kinds": fd_kinds(process.pid)}
        print(f"server pid {process.pid} on {url}; soaking for {args.minutes:g} min", flush=True)
        await soak.run()
        died = process.poll() is not None
        end: dict[str, Any] = {"sessions_left_open": 0, "not_recovered": [], "plugins": {}}
        if not died:
            end = await settle(soak)
    finally:
        await soak.http.aclose()
    samples = soak.samples
    misses = sum(not s.healthz for s in samples) + (not died and not end["idle_sample"]["healthz"])
    summaries = soak.tally.summaries.values()
    frames = {kind: sum(s.get(f"frames_{kind}") or 0 for s in summaries) for kind in ("in", "processed", "dropped")}
    frames["out"] = sum(s.get("frames_out") or 0 for s in summaries)
    per_minute = latency_by_minute(soak.tally.latencies, args.minutes)
    tally = asdict(soak.tally)
    del tally["summaries"], tally["latencies"]
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"cpus": os.cpu_count(), "load_at_end": os.getloadavg()},
        "tally": tally,
        "server_frames": frames,
        "restarts": sum(p["restarts"] for p in end["plugins"].values()),
        "slopes": resource_slopes(samples),
        "bounds_per_min": BOUNDS,
        "latency_per_minute": per_minute,
        "latency": latency_verdict(per_minute),
        "server": {"pid": process.pid, "died": died, "exit_code": process.returncode, "healthz_misses": misses},
        "start_idle_sample": start,
        "end": end,
        "samples": [asdict(s) for s in samples],
        "notes": [] if any(s.tasks is not None for s in samples) else [TASKS_NOTE],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (fractions allowed)")
    parser.add_argument("--out", default="bench-results/soak.json", help="JSON report; the server log goes beside it")
    parser.add_argument("--clients", type=int, default=3, help="streaming clients at most at once")
    parser.add_argument("--subscribers", type=int, default=3, help="health subscribers at most at once")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between resource samples")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one each run)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help=f"do not set MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD} (noisier RSS)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    args.seed = random.randrange(2**32) if args.seed is None else args.seed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(f"{out.stem}-server.log")
    with tempfile.TemporaryDirectory(prefix="livetrack-soak-") as folder:
        plugins = Path(folder)
        for name, source in PLUGIN_SOURCES.items():
            (plugins / name).symlink_to(source)
        max_sessions = args.clients * 4  # closing sessions linger a moment; never the limit here
        with running_server(plugins, log, max_sessions, args.default_malloc) as (url, process):
            report = asyncio.run(soak_server(args, url, process))
            report["server"]["stop_s"] = stop_server(process)
            report["server"]["exit_code"] = process.returncode
    report["server"]["log"] = str(log)
    threshold = None if args.default_malloc else os.environ.get("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    report["settings"]["malloc_mmap_threshold"] = threshold
    report["failures"] = failures(report)
    show(report)
    print(
        f"bounds per minute after warm-up, judged over >= {MIN_JUDGED_MINUTES:g} min: {BOUNDS}; latency: p95 of "
        f"each of the last 2 full minutes <= {LATENCY_FACTOR:g} x early median p95 + {LATENCY_SLACK_MS:g} ms"
    )
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}; server log {log}")
    for failure in report["failures"]:
        print(f"FAIL: {failure}")
    print("FAIL" if report["failures"] else "PASS")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
