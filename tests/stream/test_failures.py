"""Broken plugins never stop the video: it passes through, the data channel says why, tracks come back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.stream.annotate import track_colour
from tests.conftest import LiveServer
from tests.helpers import REASON
from tests.stream.helpers import Clients, box_pixels, plugins_dir

Serve = Callable[..., LiveServer]


def largest_gap_s(stream: object) -> float:
    times = [r.at for r in stream.received]  # type: ignore[attr-defined]
    return float(max(b - a for a, b in zip(times, times[1:], strict=False)))


async def test_plugin_crash_mid_stream_keeps_video_flowing_and_tracks_resume(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "crashy"),))
    server.wait_state("crashy", "INITIALIZED")
    stream = await clients.connect(server.url, "crashy")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 10, 20, "tracks before the crash")
    stream.send({"type": "options", "crash": True})
    await stream.wait_for(lambda: any(m["state"] == "FAILED" for m in stream.of_type("status")), 10, "FAILED")
    failed = next(m for m in stream.of_type("status") if m["state"] == "FAILED")
    assert failed["reason"].startswith("WorkerCrashed: worker exited with signal SIGSEGV") and REASON.match(
        failed["reason"]
    )
    stream.send({"type": "options", "crash": False})  # the restarted worker gets well-behaved frames
    failed_at = stream.messages.index(failed)
    await stream.wait_for(
        lambda: len([m for m in stream.messages[failed_at:] if m["type"] == "tracks"]) >= 10, 30, "tracks to resume"
    )
    states = [m["state"] for m in stream.of_type("status")]
    assert states[:2] == ["RUNNING", "FAILED"] and states[-1] == "RUNNING", states
    assert largest_gap_s(stream) < 1.0
    health = server.health("crashy")
    assert health["state"] == "RUNNING" and health["restarts"] == 1


@pytest.mark.parametrize("plugin", ["init_raises", "frame_raises"])
async def test_video_passes_through_unannotated_while_the_plugin_is_failed(
    serve: Serve, tmp_path: Path, clients: Clients, plugin: str
) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, plugin),))
    stream = await clients.connect(server.url, plugin, keep_frames=30)
    await stream.wait_for(lambda: any(m["state"] == "FAILED" for m in stream.of_type("status")), 20, "FAILED")
    start = len(stream.received)
    await stream.wait_for(lambda: len(stream.received) >= start + 60, 20, "60 frames after the failure")
    failed = next(m for m in stream.of_type("status") if m["state"] == "FAILED")
    assert REASON.match(failed["reason"]), failed
    assert stream.of_type("tracks") == []
    assert not any(box_pixels(image, track_colour(1)).any() for _, image in stream.frames)
    assert largest_gap_s(stream) < 1.0
    summary = server.get(f"/v1/sessions/{stream.session_id}").json()
    assert summary["state"] == "streaming" and summary["frames_processed"] == 0
