"""The default tracker end to end: a moving face over loopback WebRTC gets `face` tracks with one stable id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.conftest import LiveServer
from tests.stream.helpers import Clients, _load_script, client, plugins_dir

tracking_sequences = _load_script("tracking_sequences")


def iou(a: list[float], b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


async def test_a_moving_face_keeps_one_id(serve: Callable[..., LiveServer], clients: Clients, tmp_path: Path) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "videotracker"),))
    await asyncio.to_thread(server.wait_state, "videotracker", "INITIALIZED", timeout=120)
    sequence = tracking_sequences.build("straight", 640, 480, 240)
    source = client.StampedTrack(lambda n: sequence.render(n % len(sequence)).image.copy(), fps=15)
    stream = client.StreamClient(server.url, "videotracker", source)
    clients.opened.append(stream)
    await stream.start()

    def with_faces() -> list[dict[str, object]]:
        return [m for m in stream.of_type("tracks") if m["tracks"]]

    await stream.wait_for(lambda: len(with_faces()) >= 12, within_s=90, what="12 tracks messages with a face")
    messages = with_faces()
    labels = {track["label"] for m in messages for track in m["tracks"]}  # type: ignore[attr-defined]
    ids = {track["id"] for m in messages for track in m["tracks"]}  # type: ignore[attr-defined]
    assert labels == {"face"}
    assert len(ids) == 1, f"the one face got several ids: {ids}"
    assert all(len(m["tracks"]) == 1 for m in messages)  # type: ignore[arg-type]
    # Frame indices count the session's input frames, which are the source's frames on loopback.
    overlaps = [
        iou(m["tracks"][0]["box"], sequence.render(int(m["frame"]) % len(sequence)).truth[0].box)  # type: ignore[index, call-overload]
        for m in messages
    ]
    assert np.median(overlaps) > 0.5, overlaps
