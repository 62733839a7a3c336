"""Face detection speed per frame: the videotracker's detector against the one it replaced, in one run.

The baseline is what the plugin ran before issue 10: facenet-pytorch's `detect_face`
on the full frame, default pyramid, nets in the default memory layout. The current
detector is `plugins/videotracker/face_detector.py` with the manifest's config
(working resolution, pyramid factor, channels-last nets, one-call crops). Both run
in this process on the same frames of scripts/tracking_sequences.py, interleaved
frame by frame so that load from other work on the machine hits both alike, with
the thread count the plugin uses. Printed: median and p95 ms per frame, the ratio,
and whether both found the same faces (IoU >= 0.5).

    python scripts/bench_detector.py                   # 640x480, CPU
    python scripts/bench_detector.py --size 1280x720 --device cuda
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import detect_face
from tracking_metrics import iou
from tracking_sequences import SEQUENCES, build

from app.runtime.manifest import read_manifest

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "plugins" / "videotracker"


def plugin_module(name: str) -> Any:
    """A module of the plugin by its plain name, the plugin folder first on sys.path (as in the worker)."""
    if str(PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGIN_DIR))
    return importlib.import_module(name)


def baseline(mtcnn: MTCNN, device: torch.device, image: np.ndarray, min_face_size: int) -> np.ndarray:
    with torch.inference_mode():
        found, _ = detect_face(
            torch.from_numpy(image[None]), min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
            mtcnn.thresholds, mtcnn.factor, device,
        )  # fmt: skip
    return np.asarray(found[0], dtype=np.float64).reshape(-1, 5)[:, :4]


def same_faces(a: np.ndarray, b: np.ndarray) -> bool:
    if len(a) != len(b):
        return False
    return len(a) == 0 or bool((iou(a, b).max(axis=1) >= 0.5).all())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--frames", type=int, default=20, help="frames per sequence")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "detector.json")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    settings = plugin_module("tracker_options").PluginSettings.from_config(read_manifest(PLUGIN_DIR).config)
    if args.device == "cpu":
        torch.set_num_threads(plugin_module("plugin").cpu_threads(settings.cpu_threads))
    device = torch.device(args.device)
    old = MTCNN(keep_all=True, device=device).eval()
    new = plugin_module("face_detector").FaceDetector(
        args.device, settings.max_batch, settings.working_size, settings.pyramid_factor
    )
    frames = [
        build(name, width, height, args.frames).render(index).image
        for name in SEQUENCES
        for index in range(args.frames)
    ]
    baseline(old, device, frames[0], settings.min_face_size)  # first calls allocate; not timed
    new.detect([frames[0]], [settings.min_face_size])
    times: dict[str, list[float]] = {"before": [], "after": []}
    agree = 0
    for image in frames:
        started = time.perf_counter()
        before = baseline(old, device, image, settings.min_face_size)
        middle = time.perf_counter()
        (after,) = new.detect([image], [settings.min_face_size])
        times["before"].append((middle - started) * 1000)
        times["after"].append((time.perf_counter() - middle) * 1000)
        agree += same_faces(before, after.boxes)
    report: dict[str, Any] = {
        "size": args.size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "frames": len(frames),
        "config": {k: getattr(settings, k) for k in ("working_size", "pyramid_factor", "min_face_size")},
        "same_faces_share": round(agree / len(frames), 3),
    }
    for key, values in times.items():
        report[f"{key}_ms"] = {
            "p50": round(float(np.median(values)), 1),
            "p95": round(float(np.percentile(values, 95)), 1),
        }
    report["speedup_p50"] = round(report["before_ms"]["p50"] / report["after_ms"]["p50"], 2)
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
