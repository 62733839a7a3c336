"""Round trip of a no-op plugin for 640x480 RGB frames: in-process call vs through the worker.

    python scripts/bench_sandbox.py [--frames 2000] [--out bench-results/sandbox.json]

The worker path is the server's: the frame is copied into shared memory, a control
message crosses the pipe, the worker builds the read-only view, calls process(), and
the answer is validated. The in-process path builds the same Frame and calls process().
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.runtime.frames import Frame
from app.runtime.manifest import read_manifest
from app.runtime.sandbox import Load, PluginWorker, Process, run_plugin_sandboxed

NOOP = """
class Plugin:
    def __init__(self, device, config):
        pass

    def process(self, batch):
        return [{"tracks": []} for _ in batch]
"""


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "median_ms": round(statistics.median(ordered), 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
    }


def in_process(folder: Path, image: np.ndarray, count: int) -> list[float]:
    spec = importlib.util.spec_from_file_location("bench_noop_plugin", folder / "plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.Plugin("cpu", {})
    samples = []
    for index in range(count):
        started = time.perf_counter()
        view = image.view()
        view.flags.writeable = False
        plugin.process([Frame("bench", index, index, view, {})])
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def through_worker(folder: Path, image: np.ndarray, count: int) -> list[float]:
    worker = PluginWorker(read_manifest(folder), "cpu", lambda fault: None, "WARNING")
    try:
        loaded = await run_plugin_sandboxed(worker, Load())
        assert loaded.ok, loaded.error
        samples = []
        for index in range(count):
            started = time.perf_counter()
            result = await run_plugin_sandboxed(worker, Process([Frame("bench", index, index, image)]))
            samples.append((time.perf_counter() - started) * 1000)
            assert result.ok, result.error
        return samples
    finally:
        await worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("bench-results/sandbox.json"))
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "noop"
        folder.mkdir()
        (folder / "manifest.json").write_text('{"name": "noop", "version": "1", "entrypoint": "plugin:Plugin"}')
        (folder / "plugin.py").write_text(NOOP)
        warmup = max(50, args.frames // 20)
        in_process(folder, image, warmup)
        direct = in_process(folder, image, args.frames)
        sandboxed = asyncio.run(through_worker(folder, image, args.frames + warmup))[warmup:]
    report: dict[str, Any] = {
        "frame": "640x480 RGB uint8",
        "frames": args.frames,
        "in_process": summary(direct),
        "worker": summary(sandboxed),
    }
    report["extra_median_ms"] = round(report["worker"]["median_ms"] - report["in_process"]["median_ms"], 4)
    report["extra_p99_ms"] = round(report["worker"]["p99_ms"] - report["in_process"]["p99_ms"], 4)
    report["ratio_median"] = round(report["worker"]["median_ms"] / max(report["in_process"]["median_ms"], 1e-6), 1)
    print(f"no-op plugin, {args.frames} frames of 640x480 RGB")
    for label, key in (("in-process", "in_process"), ("via worker", "worker")):
        print(f"  {label:<12} median {report[key]['median_ms']:.4f} ms   p99 {report[key]['p99_ms']:.4f} ms")
    print(
        f"  extra        median {report['extra_median_ms']:.4f} ms   p99 {report['extra_p99_ms']:.4f} ms"
        f"   (target: under 1 ms at the median)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
