"""The live view as a person sees it: boxes read from the returned video's pixels, scored against the truth.

    python scripts/bench_liveview.py                     # 3 sequences x 20 s, motion compensation on and off
    python scripts/bench_liveview.py --duration 10 --sequences pacing
    python scripts/bench_liveview.py --gpu-policy auto   # the plugin on CUDA when there is one
    python scripts/bench_liveview.py --config '{"working_size": 0, "pyramid_factor": 0.709}'  # slower detection

Starts the real server (`python -m app`, the videotracker plugin only, 127.0.0.1) and
streams face sequences at webcam speeds (scripts/tracking_sequences.py's Grace Hopper
sprite, which ships in matplotlib's wheel) at 30 fps, 640x480, over WebRTC:

- pacing: one face pacing left and right and bobbing, peak about 200 px/s;
- crossing: two faces crossing back and forth, one half a face lower (behind);
- approach: a face coming towards the camera and going back (58 to 240 px tall), swaying.

The client sends pre-encoded VP8 (encoded once, up front) so that its CPU goes to
receiving. Session options turn labels and ids off, so only box outlines are drawn.
Each returned frame is matched to the frame sent by the counter stamped into it;
the drawn boxes are read from its pixels (where it differs from the frame sent,
grouped by the palette colour of the track, app/stream/annotate.py) and scored
against that very frame's ground truth: per-output-frame recall and precision at
IoU >= 0.5, and how many distinct ids (box colours) each face wore. Processed fps and
box age come from the server's session summary. The first second of each stream
(connection and first detection) is not scored.

Every sequence runs twice in the same server: with motion compensation (the default)
and without it (session option `"motion": false`: boxes drawn where the newest result
found them, the behaviour before issue 10), the baseline. Figures are printed and
written to bench-results/liveview-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from client import EncodedTrack, StreamClient, encode_vp8, read_counter, stamp_counter
from loopback import end_process, free_port
from scipy.optimize import linear_sum_assignment
from tracking_metrics import iou
from tracking_sequences import FACE_HEIGHT, Placement, RenderedFrame, Sequence

from app.stream.annotate import PALETTE

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 640, 480, 30.0
WARMUP_S = 1.0
MATCH_IOU = 0.5
# Where the returned frame differs from the frame sent by more than this (max over RGB),
# something was drawn: VP8 at WebRTC bitrates moves pixels by far less on these scenes.
DRAWN_DIFF = 70
# A drawn pixel belongs to the palette colour nearest to it, if it is this close (RGB distance).
COLOUR_DISTANCE = 120
MIN_BOX_SIDE = 12
CLOSING = np.ones((5, 5), np.uint8)
SETTLE_S = 2.0


# -- sequences at webcam speed ---------------------------------------------------------------------
def _sway(t: float, amplitude: float, period: float) -> float:
    return amplitude * math.sin(2 * math.pi * t / period)


def pacing(length: int) -> Sequence:
    face = FACE_HEIGHT * HEIGHT

    def at(t: float) -> list[Placement]:
        # 170 px either side in 6 s: 178 px/s at the centre; a 20 px bob at 1.6 s adds ~80 px/s.
        return [Placement(1, WIDTH / 2 + _sway(t, 170, 6.0), HEIGHT * 0.45 + _sway(t, 20, 1.6), face)]

    return Sequence("pacing", WIDTH, HEIGHT, "gradient", [at(i / FPS) for i in range(length)])


def crossing(length: int) -> Sequence:
    face = FACE_HEIGHT * HEIGHT

    def at(t: float) -> list[Placement]:
        # Copy 2 walks behind copy 1, half a face lower; they pass each other twice every 6 s.
        behind = Placement(2, WIDTH / 2 - _sway(t, 170, 6.0), HEIGHT * 0.42 + 0.45 * face, face)
        front = Placement(1, WIDTH / 2 + _sway(t, 170, 6.0), HEIGHT * 0.42, face)
        return [behind, front]

    return Sequence("crossing", WIDTH, HEIGHT, "gradient", [at(i / FPS) for i in range(length)])


def approach(length: int) -> Sequence:
    def at(t: float) -> list[Placement]:
        near = 0.5 - 0.5 * math.cos(2 * math.pi * t / 8.0)  # 0 -> 1 -> 0 every 8 s
        size = HEIGHT * (0.12 + 0.38 * near)
        return [Placement(1, WIDTH / 2 + _sway(t, 60, 5.0), HEIGHT * 0.5 + _sway(t, 10, 2.3), size)]

    return Sequence("approach", WIDTH, HEIGHT, "plain", [at(i / FPS) for i in range(length)])


SEQUENCES = {"pacing": pacing, "crossing": crossing, "approach": approach}


# -- boxes from pixels -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DrawnBox:
    colour: int  # index in PALETTE: the track id modulo its length
    box: np.ndarray  # x1, y1, x2, y2


def drawn_boxes(received: np.ndarray, sent: np.ndarray) -> list[DrawnBox]:
    """The box outlines drawn on `received` (RGB) that are not in `sent`, one per colour and outline."""
    difference = np.abs(received.astype(np.int16) - sent.astype(np.int16)).max(axis=2)
    changed = difference > DRAWN_DIFF
    ys, xs = np.nonzero(changed)
    if len(xs) == 0:
        return []
    pixels = received[ys, xs].astype(np.float32)
    palette = np.array(PALETTE, np.float32)
    distance = np.linalg.norm(pixels[:, None, :] - palette[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(nearest)), nearest] <= COLOUR_DISTANCE
    # Whether an outline is closed is judged on any change, of any colour, at half the threshold:
    # where two outlines cross the one drawn last covers the other, and a line over a scene of
    # nearly its colour (cyan over a blue backdrop) changes it less.
    anything = cv2.morphologyEx((difference > DRAWN_DIFF // 2).astype(np.uint8), cv2.MORPH_CLOSE, CLOSING)
    found = []
    for colour in np.unique(nearest[close]):
        mask = np.zeros(changed.shape, np.uint8)
        chosen = close & (nearest == colour)
        mask[ys[chosen], xs[chosen]] = 1
        # Compression can break a thin outline where the scene is close to its colour: close small gaps.
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, CLOSING)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for n in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[n])
            # An outline, not a blob or a streak of compression noise: big enough, mostly hollow,
            # and closed on all four sides.
            if w >= MIN_BOX_SIDE and h >= MIN_BOX_SIDE and area <= 0.6 * w * h:
                if _closed_outline(anything[y : y + h, x : x + w] > 0):
                    found.append(DrawnBox(int(colour), np.array([x + 1.0, y + 1.0, x + w - 1.0, y + h - 1.0])))
    return found


def _closed_outline(region: np.ndarray, band: int = 4, cover: float = 0.7) -> bool:
    """Whether the pixels of `region` run along most of each of its four sides."""
    top, bottom = region[:band].any(axis=0).mean(), region[-band:].any(axis=0).mean()
    left, right = region[:, :band].any(axis=1).mean(), region[:, -band:].any(axis=1).mean()
    return bool(min(top, bottom, left, right) >= cover)


@dataclass
class Score:
    frames: int = 0
    true_positives: int = 0
    misses: int = 0
    false_positives: int = 0
    colours: dict[int, set[int]] = field(default_factory=dict)  # face -> box colours it wore

    def add(self, truth: RenderedFrame, boxes: list[DrawnBox]) -> None:
        self.frames += 1
        counted = [g for g in truth.truth if g.counted]
        ignored = [g for g in truth.truth if g.ignored]
        drawn = np.array([b.box for b in boxes]).reshape(-1, 4)
        overlap = iou(np.array([g.box for g in counted]).reshape(-1, 4), drawn)
        matched: set[int] = set()
        if overlap.size:
            for row, col in zip(*linear_sum_assignment(-overlap), strict=True):
                if overlap[row, col] >= MATCH_IOU:
                    matched.add(int(col))
                    self.colours.setdefault(counted[row].obj_id, set()).add(boxes[col].colour)
        self.true_positives += len(matched)
        self.misses += len(counted) - len(matched)
        # A box on a half-hidden ("don't care") face is neither right nor wrong.
        spare = [n for n in range(len(boxes)) if n not in matched]
        on_ignored = iou(drawn[spare], np.array([g.box for g in ignored]).reshape(-1, 4))
        self.false_positives += sum(1 for n in range(len(spare)) if not (on_ignored[n] >= MATCH_IOU).any())

    def figures(self) -> dict[str, Any]:
        found = self.true_positives + self.misses
        drawn = self.true_positives + self.false_positives
        return {
            "frames_scored": self.frames,
            "recall": round(self.true_positives / found, 4) if found else None,
            "precision": round(self.true_positives / drawn, 4) if drawn else None,
            "ids_per_face": {str(face): len(colours) for face, colours in sorted(self.colours.items())},
        }


# -- one stream --------------------------------------------------------------------------------------
class RecordingClient(StreamClient):
    """Keeps every returned frame (yuv420p planes, as decoded) with the counter read from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[tuple[int, np.ndarray]] = []

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.VideoFrame):
                    continue
                yuv = frame.to_ndarray(format="yuv420p")
                counter = read_counter(yuv[: frame.height])
                if counter is not None:
                    self.recorded.append((counter, yuv))
                self.changed.set()
        except MediaStreamError:
            pass


def rendered(sequence: Sequence, counter: int) -> RenderedFrame:
    frame = sequence.render(counter)
    stamp_counter(frame.image, counter)
    return frame


def image_of(sequence: Sequence, counter: int) -> np.ndarray:
    return sequence.render(counter).image


def to_rgb(yuv: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420))


async def stream(
    server: str, sequence: Sequence, packets: list[bytes], duration_s: float, motion: bool
) -> dict[str, Any]:
    source = EncodedTrack(packets, FPS)
    options = {"labels": False, "ids": False, "motion": motion}
    client = RecordingClient(server, "videotracker", source, options)
    try:
        await client.start()
        await client.wait_for(lambda: bool(client.recorded), 30, "the first frame back")
        await asyncio.sleep(duration_s)
        async with httpx.AsyncClient(timeout=10) as http:
            summary = (await http.get(f"{server}/v1/sessions/{client.session_id}")).json()
        tracks = client.of_type("tracks")
    finally:
        await client.close()
    score = Score()
    first = round(WARMUP_S * FPS)
    for counter, yuv in client.recorded:
        if first <= counter < len(sequence):
            truth = rendered(sequence, counter)
            score.add(truth, drawn_boxes(to_rgb(yuv), truth.image))
    received = len(client.recorded)
    client.recorded.clear()
    processed = [m for m in tracks if m["frame"] >= first]
    span = (processed[-1]["frame"] - processed[0]["frame"]) / FPS if len(processed) > 1 else 0.0
    return {
        **score.figures(),
        "frames_sent": source.counter,
        "frames_received": received,
        "processed_fps": round((len(processed) - 1) / span, 2) if span else None,
        "box_age_ms": summary.get("box_age_ms"),
        "server_fps_processed": summary.get("fps_processed"),
        "server_fps_in": summary.get("fps_in"),
        "server_fps_out": summary.get("fps_out"),
    }


# -- the server -------------------------------------------------------------------------------------
def plugin_folder(config: dict[str, Any]) -> Path:
    """A plugins folder with the videotracker, its manifest's config updated with `config`."""
    plugins = Path(tempfile.mkdtemp(prefix="livetrack-liveview-"))
    source = REPO / "plugins" / "videotracker"
    if not config:
        (plugins / "videotracker").symlink_to(source)
        return plugins
    shutil.copytree(source, plugins / "videotracker", ignore=shutil.ignore_patterns("__pycache__"))
    manifest_path = plugins / "videotracker" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"] = {**manifest.get("config", {}), **config}
    manifest_path.write_text(json.dumps(manifest))
    return plugins


@contextlib.contextmanager
def running_server(gpu_policy: str, config: dict[str, Any], log: Path) -> Iterator[str]:
    plugins = plugin_folder(config)
    port = free_port()
    command = [
        sys.executable, "-m", "app", "--port", str(port), "--plugins-dir", str(plugins),
        "--ice-address", "127.0.0.1", "--gpu-policy", gpu_policy, "--log-level", "WARNING",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIVETRACK_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not get ready; see {log}")
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"{url}/v1/plugins/videotracker/health", timeout=5).json()
                if health["state"] in ("INITIALIZED", "RUNNING"):
                    break
                if health["state"] in ("FAILED", "UNAVAILABLE"):
                    raise SystemExit(f"videotracker is {health['state']}: {health['reason']}")
            time.sleep(0.3)
        yield url
    finally:
        end_process(process)


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = args.out_dir / f"liveview-{stamp}-server.log"
    report: dict[str, Any] = {
        "started": stamp,
        "size": f"{WIDTH}x{HEIGHT}",
        "fps": FPS,
        "duration_s": args.duration,
        "gpu_policy": args.gpu_policy,
        "plugin_config": args.config,
        "cpus": os.cpu_count(),
        "load_average_before": load_average(),
        "sequences": {},
    }
    length = round((args.duration + 5) * FPS)
    with running_server(args.gpu_policy, args.config, log) as url:
        async with httpx.AsyncClient(timeout=10) as http:
            health = (await http.get(f"{url}/v1/plugins/videotracker/health")).json()
        report["device"] = health.get("device")
        for name in args.sequences:
            sequence = SEQUENCES[name](length)
            print(f"{name}: encoding {length} frames...", flush=True)
            packets = await asyncio.to_thread(encode_vp8, functools.partial(image_of, sequence), FPS, length)
            results = {}
            for mode, motion in (("compensated", True), ("baseline", False)):
                await asyncio.sleep(SETTLE_S)  # the previous session's teardown
                results[mode] = await stream(url, sequence, packets, args.duration, motion)
                results[mode]["load_average"] = load_average()
                print(f"  {mode:12s} {json.dumps(results[mode])}", flush=True)
            report["sequences"][name] = results
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['size']} at {report['fps']:g} fps, {report['duration_s']:g} s each, plugin on {report['device']}")
    print(
        f"{'sequence':<10}{'mode':<13}{'recall':>8}{'prec':>8}{'ids/face':>10}{'proc fps':>10}{'age p50':>9}{'p95':>7}"
    )
    for name, results in report["sequences"].items():
        for mode, r in results.items():
            ids = ",".join(str(v) for v in r["ids_per_face"].values()) or "-"
            age = r["box_age_ms"] or {}
            cells = [r["recall"], r["precision"]]
            shown = [f"{v:>8.3f}" if isinstance(v, float) else f"{'-':>8}" for v in cells]
            print(
                f"{name:<10}{mode:<13}{''.join(shown)}{ids:>10}{r['processed_fps'] or 0:>10.1f}"
                f"{age.get('p50') or 0:>9.0f}{age.get('p95') or 0:>7.0f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds streamed per sequence and mode")
    parser.add_argument("--sequences", type=lambda s: s.split(","), default=list(SEQUENCES))
    parser.add_argument("--gpu-policy", choices=["auto", "require", "cpu"], default="cpu")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench-results")
    parser.add_argument(
        "--config",
        type=json.loads,
        default={},
        help="videotracker config overrides as JSON, e.g. '{\"working_size\": 0}' (a slower detector)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.sequences if name not in SEQUENCES]
    if unknown:
        parser.error(f"unknown sequence(s) {unknown}; choose from {list(SEQUENCES)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(bench(args))
    report["load_average_after"] = load_average()
    print_table(report)
    out = args.out_dir / f"liveview-{report['started']}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
