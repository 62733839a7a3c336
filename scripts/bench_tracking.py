"""Tracking quality and speed of the videotracker plugin, measured the way the server runs it.

Each synthetic sequence (scripts/tracking_sequences.py) is streamed frame by frame through
the real sandbox: a spawned PluginWorker, frames in shared memory, one
`run_plugin_sandboxed(Process)` call per frame, `EndSession` at the end. Printed per
sequence and overall for each frame size: recall, precision, ID switches, MOTA, IDF1
and the host-side ms per frame (median, p95), sandbox overhead included.

    python scripts/bench_tracking.py                  # 90 frames per sequence, 640x480 and 1280x720
    python scripts/bench_tracking.py --quick          # 30 frames per sequence
    python scripts/bench_tracking.py --out results.json --sizes 320x240
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tracking_metrics import SequenceScore, summarize
from tracking_sequences import SEQUENCES, build

from app.runtime.errors import PluginFault
from app.runtime.frames import Frame
from app.runtime.manifest import read_manifest
from app.runtime.sandbox import EndSession, Load, PluginWorker, Process, run_plugin_sandboxed

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "videotracker"
PTS_PER_FRAME = 3000  # 90 kHz clock at 30 fps, as WebRTC video timestamps run


class BenchError(RuntimeError):
    pass


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 640x480")
    return int(width), int(height)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_sequence(
    worker: PluginWorker, name: str, size: tuple[int, int], length: int
) -> tuple[SequenceScore, list[float]]:
    sequence = build(name, size[0], size[1], length)
    session_id = f"{name}-{size[0]}x{size[1]}"
    score, times = SequenceScore(), []
    for index in range(len(sequence)):
        frame = sequence.render(index)
        call = Process([Frame(session_id, index, index * PTS_PER_FRAME, frame.image, {})])
        result = await run_plugin_sandboxed(worker, call)
        if not result.ok:
            raise BenchError(f"{session_id} frame {index}: {result.error}")
        score.add_frame(frame.truth, result.result[0]["tracks"])
        times.append(result.execution_time_ms)
    await run_plugin_sandboxed(worker, EndSession(session_id))
    return score, times


async def run_size(worker: PluginWorker, size: tuple[int, int], length: int) -> dict[str, Any]:
    scores: dict[str, SequenceScore] = {}
    timings: dict[str, list[float]] = {}
    for name in SEQUENCES:
        scores[name], timings[name] = await run_sequence(worker, name, size, length)
    metrics = summarize(scores)
    every = [ms for values in timings.values() for ms in values]
    for name, values in [*timings.items(), ("OVERALL", every)]:
        metrics[name]["ms_median"] = percentile(values, 50)
        metrics[name]["ms_p95"] = percentile(values, 95)
    return metrics


def print_table(label: str, metrics: dict[str, dict[str, float]]) -> None:
    print(f"\n{label}")
    columns = (
        ("frames", 7),
        ("recall", 8),
        ("prec", 8),
        ("IDsw", 6),
        ("MOTA", 8),
        ("IDF1", 8),
        ("ms p50", 9),
        ("ms p95", 9),
    )
    print(f"{'sequence':<14}" + "".join(f"{title:>{width}}" for title, width in columns))
    for name, m in metrics.items():
        print(
            f"{name:<14}{int(m['num_frames']):>7}{m['recall']:>8.3f}{m['precision']:>8.3f}{int(m['num_switches']):>6}"
            f"{m['mota']:>8.3f}{m['idf1']:>8.3f}{m['ms_median']:>9.1f}{m['ms_p95']:>9.1f}"
        )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    manifest = read_manifest(PLUGIN_DIR)
    deaths: list[PluginFault] = []
    worker = PluginWorker(manifest, args.gpu_policy, on_death=deaths.append, log_level="WARNING")
    try:
        started = time.perf_counter()
        loaded = await run_plugin_sandboxed(worker, Load())
        if not loaded.ok:
            raise BenchError(f"the plugin did not load: {loaded.error}")
        device = loaded.result.get("device")
        print(f"videotracker {manifest.version} loaded on {device} in {time.perf_counter() - started:.1f} s")
        report: dict[str, Any] = {
            "plugin": manifest.name,
            "version": manifest.version,
            "device": device,
            "degraded": loaded.result.get("degraded"),
            "frames_per_sequence": args.frames,
            "path": "sandbox: PluginWorker + run_plugin_sandboxed, one frame per call",
            "sizes": {},
        }
        for size in args.sizes:
            label = f"{size[0]}x{size[1]}"
            metrics = await run_size(worker, size, args.frames)
            report["sizes"][label] = metrics
            print_table(f"{label} on {device}, {args.frames} frames per sequence", metrics)
        return report
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="30 frames per sequence instead of 90")
    parser.add_argument("--frames", type=int, default=None, help="frames per sequence (default 90, 30 with --quick)")
    parser.add_argument(
        "--sizes", type=lambda s: [parse_size(x) for x in s.split(",")], default=[(640, 480), (1280, 720)]
    )
    parser.add_argument("--gpu-policy", choices=["auto", "require", "cpu"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tracking.json"))
    args = parser.parse_args(argv)
    args.frames = args.frames or (30 if args.quick else 90)
    logging.basicConfig(level=logging.WARNING)
    try:
        report = asyncio.run(bench(args))
    except BenchError as exc:
        print(f"bench_tracking: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
