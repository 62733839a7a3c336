"""Model speed of the videotracker plugin: ms per frame, and what batching buys, in one go.

This is a model benchmark: it calls the plugin class in this process, without the
sandbox, so the figures are the detector and tracker alone (scripts/bench_tracking.py
measures the full path through the worker). It runs on CUDA when there is one and
on the CPU otherwise, and says which.

    python scripts/bench_tracker_gpu.py                 # CUDA if available, else CPU
    python scripts/bench_tracker_gpu.py --device cpu --out bench-results/tracker_cpu.json

Measured:
- ms per frame (median, p95) of single-frame process() calls at 640x480 and 1280x720;
- throughput of one process() call with 1, 8 and 32 frames (from as many sessions, as the
  server batches them) against as many single-frame calls on the same frames, measured
  back to back in this run (at 1 frame the ratio is the noise floor).

    python scripts/bench_tracker_gpu.py --device cuda --max-batch 32     # MTCNN itself at 32 frames
    python scripts/bench_tracker_gpu.py --device cpu --sizes 320x240 --batch-size 320x240 --batches 1,2 --frames 3
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tracking_sequences import build

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "videotracker"


@dataclass(frozen=True)
class BenchFrame:
    """The attributes of app.runtime.frames.Frame that the plugin reads."""

    session_id: str
    index: int
    pts: int
    image: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)


def load_plugin(device: str, config: dict[str, Any]) -> Any:
    # As the worker does: the plugin folder first on sys.path, the module by its plain name.
    sys.path.insert(0, str(PLUGIN_DIR))
    return importlib.import_module("plugin").VideoTracker(device, config)


def frames_of(size: tuple[int, int], count: int) -> list[np.ndarray]:
    sequence = build("zigzag", size[0], size[1], max(count, 2))
    return [sequence.render(index).image for index in range(count)]


def time_singles(tracker: Any, images: list[np.ndarray], session: str) -> list[float]:
    """ms of each single-frame call, one session streaming the frames in order."""
    times = []
    for index, image in enumerate(images):
        started = time.perf_counter()
        tracker.process([BenchFrame(session, index, index, image)])
        times.append((time.perf_counter() - started) * 1000)
    tracker.end_session(session)
    return times


def latency(tracker: Any, size: tuple[int, int], frames: int, warmup: int) -> dict[str, float]:
    images = frames_of(size, warmup + frames)
    time_singles(tracker, images[:warmup], f"warmup-{size}")
    times = time_singles(tracker, images[warmup:], f"latency-{size}")
    return {"ms_median": float(np.median(times)), "ms_p95": float(np.percentile(times, 95)), "frames": frames}


def batching(tracker: Any, size: tuple[int, int], batch: int, repeats: int) -> dict[str, float]:
    """Frames per second of one call with `batch` frames vs `batch` single calls, best of `repeats`."""
    images = frames_of(size, batch)
    batched_s, single_s = [], []
    for repeat in range(repeats):
        frames = [BenchFrame(f"batch-{repeat}-{n}", 0, 0, image) for n, image in enumerate(images)]
        started = time.perf_counter()
        tracker.process(frames)
        batched_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        for n, image in enumerate(images):
            tracker.process([BenchFrame(f"single-{repeat}-{n}", 0, 0, image)])
        single_s.append(time.perf_counter() - started)
        for n in range(batch):
            tracker.end_session(f"batch-{repeat}-{n}")
            tracker.end_session(f"single-{repeat}-{n}")
    batched_fps, single_fps = batch / min(batched_s), batch / min(single_s)
    return {
        "batched_fps": batched_fps,
        "single_fps": single_fps,
        "speedup": batched_fps / single_fps,
        "batched_call_ms": min(batched_s) * 1000,
    }


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 640x480")
    return int(width), int(height)


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches {text!r} must look like 1,8,32") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"batches {text!r} must be positive")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="videotracker model speed (in-process, no sandbox)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--frames", type=int, default=None, help="timed single frames per size (30 GPU, 15 CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each batch comparison (best is kept)")
    parser.add_argument(
        "--sizes", type=lambda s: [parse_size(x) for x in s.split(",")], default=[(640, 480), (1280, 720)]
    )
    parser.add_argument("--batch-size", type=parse_size, default=(640, 480), help="frame size of the batch comparison")
    parser.add_argument("--batches", type=parse_counts, default=[1, 8, 32], help="frames per batched call")
    parser.add_argument("--max-batch", type=int, default=None, help="override the manifest's max_batch")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tracker_gpu.json"))
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    frames = args.frames or (30 if device == "cuda" else 15)
    config = json.loads((PLUGIN_DIR / "manifest.json").read_text()).get("config", {})
    if args.max_batch is not None:
        config["max_batch"] = args.max_batch
    tracker = load_plugin(device, config)
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"max_batch {config.get('max_batch')}; in-process model benchmark (no sandbox)")
    report: dict[str, Any] = {"device": device, "device_name": name, "torch": torch.__version__, "config": config}
    report["latency"] = {}
    for size in args.sizes:
        label = f"{size[0]}x{size[1]}"
        result = latency(tracker, size, frames, warmup=3)
        report["latency"][label] = result
        print(f"{label:>9}: {result['ms_median']:7.1f} ms/frame median, {result['ms_p95']:7.1f} p95 ({frames} frames)")
    batch_label = f"{args.batch_size[0]}x{args.batch_size[1]}"
    report["batching"] = {"size": batch_label}
    for batch in args.batches:
        result = batching(tracker, args.batch_size, batch, args.repeats)
        report["batching"][str(batch)] = result
        print(
            f"batch {batch:>2} at {batch_label}: one call {result['batched_fps']:6.1f} frames/s,"
            f" {batch} single calls {result['single_fps']:6.1f} frames/s, x{result['speedup']:.2f}"
        )
    # Peak resident size of this process (Linux reports KiB): what memory_limit_mb must cover.
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(
        f"peak RSS {report['peak_rss_mb']:.0f} MB"
        + (f", CUDA {report['peak_cuda_mb']:.0f} MB" if device == "cuda" else "")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
