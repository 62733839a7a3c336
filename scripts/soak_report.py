"""The soak's verdict: resource slopes and latency per minute against stated bounds, and the printed summary.

Kept apart from scripts/soak.py, which drives the load; both run as plain scripts.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from client import percentile

WARM_UP = 0.2  # share of the samples left out of the slopes
MIN_JUDGED_MINUTES = 3.0  # a shorter window is noise: slopes are shown but not judged
# Per minute, after warm-up. A healthy server is flat but noisy here: sessions (each
# with sockets, decoder threads and frame slots) open and close at random moments on a
# shared 2-core machine. A real leak, e.g. one fd, thread or segment per session or per
# worker restart, or one frame of memory per session, grows several times faster.
STOP_GRACE_S = 15.0  # SIGTERM to exit, at most, for a clean stop
BOUNDS = {"rss_mb": 5.0, "fds": 1.0, "threads": 1.0, "tasks": 5.0, "shm": 1.0}
LATENCY_FACTOR, LATENCY_SLACK_MS = 1.5, 50.0


@dataclass
class Sample:
    minute: float
    rss_mb: float
    worker_rss_mb: float
    workers: int
    fds: int
    threads: int
    tasks: int | None
    shm: int
    sessions: int
    subscribers: int | None
    healthz: bool


# -- the verdict ------------------------------------------------------------------------------
def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 3 points or no spread in x."""
    if len(points) < 3:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def resource_slopes(samples: list[Sample]) -> dict[str, Any]:
    """Per-minute slope of each resource after the warm-up, and whether it is judged and within its bound."""
    judged = samples[int(len(samples) * WARM_UP) :]
    judged = [s for s in judged if s.healthz]
    span = judged[-1].minute - judged[0].minute if len(judged) > 1 else 0.0
    result: dict[str, Any] = {}
    for key, bound in BOUNDS.items():
        values = [(s.minute, float(getattr(s, key))) for s in judged if getattr(s, key) is not None]
        rate = slope(values)
        if rate is None:
            verdict = "not measured" if not values else "too few samples"
        elif span < MIN_JUDGED_MINUTES:
            verdict = f"not judged (window {span:.1f} min < {MIN_JUDGED_MINUTES:g})"
        else:
            verdict = "ok" if rate < bound else "FAIL"
        first = values[0][1] if values else None
        last = values[-1][1] if values else None
        result[key] = {"slope_per_min": rate, "bound": bound, "first": first, "last": last, "verdict": verdict}
    worker_rate = slope([(s.minute, s.worker_rss_mb) for s in judged])
    result["worker_rss_mb"] = {"slope_per_min": worker_rate, "verdict": "reported only (workers restart)"}
    return result


def latency_by_minute(latencies: list[tuple[float, float]], minutes: float) -> list[dict[str, Any]]:
    buckets: dict[int, list[float]] = {}
    for minute, ms in latencies:
        if ms >= 0:
            buckets.setdefault(int(minute), []).append(ms)
    return [
        {
            "minute": m,
            "full": m + 1 <= minutes,
            "frames": len(values),
            "p50_ms": round(percentile(values, 0.5), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
        }
        for m, values in sorted(buckets.items())
    ]


def latency_verdict(per_minute: list[dict[str, Any]]) -> dict[str, Any]:
    """Build-up: both of the last two full minutes' p95 above LATENCY_FACTOR x the early p95 + slack.

    The early p95 is the median of the first three full minutes (two when there are only four).
    A queue that builds up grows minute after minute; one busy minute (other work on this
    machine) at either end does not fail the run.
    """
    full = [m for m in per_minute if m["full"] and m["frames"]]
    if len(full) < 4:
        return {"verdict": "not judged (fewer than 4 full minutes)"}
    early = statistics.median(m["p95_ms"] for m in full[: min(3, len(full) - 2)])
    late = min(m["p95_ms"] for m in full[-2:])
    limit = LATENCY_FACTOR * early + LATENCY_SLACK_MS
    return {"early_p95_ms": early, "late_p95_ms": late, "limit_ms": limit, "verdict": "ok" if late <= limit else "FAIL"}


def failures(report: dict[str, Any]) -> list[str]:
    found = [f"{key}: slope {value['slope_per_min']:+.2f}/min over bound {value['bound']}"
             for key, value in report["slopes"].items() if value["verdict"] == "FAIL"]  # fmt: skip
    if report["latency"]["verdict"] == "FAIL":
        found.append(f"latency built up: {report['latency']}")
    server = report["server"]
    if server["died"]:
        found.append(f"the server died (exit code {server['exit_code']})")
    if server["healthz_misses"]:
        found.append(f"/healthz went unanswered {server['healthz_misses']} times")
    if server["stop_s"] is None:
        found.append(f"the server did not stop within {STOP_GRACE_S:g} s of SIGTERM")
    tally = report["tally"]
    for key in ("offers_refused", "sessions_without_frames", "unexpected"):
        if tally[key]:
            found.append(f"{key}: {tally[key][:5]}")
    if report["end"]["sessions_left_open"] != 0:
        found.append(f"{report['end']['sessions_left_open']} sessions still open 30 s after every client closed")
    if report["end"]["not_recovered"]:
        found.append(f"plugins that did not come back after a restart: {report['end']['not_recovered']}")
    if tally["sessions_served"] == 0:
        found.append("no session was served")
    return found


TASKS_NOTE = (
    "asyncio tasks not measured: the server exposes no task count (a livetrack_asyncio_tasks gauge "
    "in /metrics, len(asyncio.all_tasks()) at scrape time, would be read here)"
)


def show(report: dict[str, Any]) -> None:
    t, f = report["tally"], report["server_frames"]
    settings = report["settings"]
    print(
        f"\nsoak: {settings['minutes']:g} min, seed {settings['seed']}, {len(report['samples'])} samples, "
        f"server MALLOC_MMAP_THRESHOLD_={settings['malloc_mmap_threshold'] or 'glibc default'}"
    )
    print(
        f"sessions served {t['sessions_served']} {t['by_plugin']}, offers refused {len(t['offers_refused'])}, "
        f"without frames back {len(t['sessions_without_frames'])}, "
        f"left open at end {report['end']['sessions_left_open']}"
    )
    print(
        f"frames: clients sent {t['frames_sent']} received {t['frames_received']}; "
        f"server in {f['in']} processed {f['processed']} dropped {f['dropped']} out {f['out']}"
    )
    plugins = report["end"].get("plugins", {})
    print(
        f"plugin restarts {report['restarts']} (manual {t['manual_restarts']}): "
        + ", ".join(f"{name} {p['restarts']}" for name, p in plugins.items())
    )
    print(f"chaos: segfault runs {t['crash_runs']}, hangs runs {t['hang_runs']}")
    print(
        f"health subscribers: {t['subscribers_reading']} reading ({t['health_messages']} messages), "
        f"{t['subscribers_idle']} never reading; overlay consumers {t['overlay_consumers']}"
    )
    print(f"resources (slope per minute after {WARM_UP:.0%} warm-up; worker RSS is all workers together):")
    for key, value in report["slopes"].items():
        rate = value["slope_per_min"]
        shown = "   n/a" if rate is None else f"{rate:+8.2f}"
        bound = f"< {value['bound']:g}" if "bound" in value else ""
        span = f"{value.get('first')} -> {value.get('last')}" if "first" in value else ""
        print(f"  {key:14s} {shown} {bound:6s} {span:22s} {value['verdict']}")
    for note in report["notes"]:
        print(f"  note: {note}")
    before, after = report["start_idle_sample"], report["end"].get("idle_sample")
    if after is not None:
        print(
            "idle server before -> after (no sessions, no subscribers): "
            + ", ".join(f"{key} {before[key]} -> {after[key]}" for key in ("rss_mb", "fds", "threads", "shm"))
        )
    print("latency per minute (client send -> annotated frame back, ms):")
    for m in report["latency_per_minute"]:
        partial = "" if m["full"] else " (partial)"
        print(
            f"  minute {m['minute']:2d}: p50 {m['p50_ms']:7.1f} p95 {m['p95_ms']:7.1f}  frames {m['frames']}{partial}"
        )
    latency = report["latency"]
    if "limit_ms" in latency:
        print(
            f"latency build-up: last 2 full minutes' lower p95 {latency['late_p95_ms']} <= {LATENCY_FACTOR:g} x "
            f"first full minutes' median p95 {latency['early_p95_ms']} + {LATENCY_SLACK_MS:g} "
            f"= {latency['limit_ms']:.1f}: {latency['verdict']}"
        )
    else:
        print(f"latency build-up: {latency['verdict']}")
    server = report["server"]
    print(
        f"server: died {server['died']}, /healthz misses {server['healthz_misses']}, "
        f"stopped on SIGTERM in {server['stop_s']} s, exit code {server['exit_code']}"
    )
