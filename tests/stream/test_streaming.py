"""Loopback WebRTC against the real server and worker: boxes drawn, tracks sent, options, overlay feed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.typing import Origin

from app.stream.annotate import track_colour
from tests.conftest import LiveServer
from tests.stream.helpers import Clients, box_pixels, client, get_json, plugins_dir

Serve = Callable[..., LiveServer]
COLOUR = track_colour(1)  # colorblob numbers its first track 1
NO_CAPTION = {"labels": False, "ids": False}


def colorblob_server(serve: Serve, tmp_path: Path, *more: str) -> LiveServer:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob", *more),))
    for name in ("colorblob", *more):
        server.wait_state(name, "INITIALIZED")
    return server


async def test_box_is_drawn_where_the_square_is(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob", NO_CAPTION, keep_frames=10)
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 30 and len(stream.received) >= 60, 20, "frames")
    checked = 0
    for counter, image in list(stream.frames):
        assert counter is not None, "a frame came back without its counter"
        ys, xs = np.nonzero(box_pixels(image, COLOUR))
        assert len(xs), f"frame {counter}: no box drawn"
        drawn = (xs.min(), ys.min(), xs.max(), ys.max())
        # The newest tracks are moved to this frame's time by the square's velocity, so the box is
        # where the square is in this frame, to a few pixels and a few frames: behind it by the
        # tracker's latency before a velocity is known, ahead of it when frames arrive in a burst.
        lag = [
            k
            for k in range(-5, 10)
            if max(abs(a - b) for a, b in zip(drawn, client.square_box(counter - k), strict=True)) <= 5
        ]
        assert lag, f"frame {counter}: box drawn at {drawn}, the square was at {client.square_box(counter)}"
        x1, y1, x2, y2 = client.square_box(counter)
        assert tuple(image[(y1 + y2) // 2, (x1 + x2) // 2] // 64) == (3, 0, 0)  # the square itself is not painted over
        checked += 1
    assert checked == 10


async def test_tracks_messages_match_the_ground_truth(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 40, 20, "40 tracks messages")
    messages = stream.of_type("tracks")
    assert [m["frame"] for m in messages] == sorted({m["frame"] for m in messages})
    for message in messages:
        assert set(message) == {"type", "frame", "pts", "plugin", "tracks", "latency_ms"}
        assert message["plugin"] == "colorblob" and isinstance(message["pts"], int) and message["latency_ms"] > 0
        # Nothing is lost on loopback, so the server's frame n is the client's frame n.
        [track] = message["tracks"]
        truth = client.square_box(message["frame"])
        assert track["label"] == "red" and track["id"] == 1
        assert all(abs(a - b) <= 4 for a, b in zip(track["box"], truth, strict=True)), (message, truth)


async def test_first_data_channel_message_is_the_plugin_status(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: bool(stream.of_type("tracks")), 20, "tracks")
    assert stream.messages[0] == {"type": "status", "state": "RUNNING", "reason": None}


async def test_options_message_turns_the_overlay_off(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob", keep_frames=15)
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 10, 20, "tracks")
    assert box_pixels(stream.frames[-1][1], COLOUR).any()
    stream.send({"type": "options", "boxes": False, "labels": False, "ids": False})
    sent_at = len(stream.received)
    await stream.wait_for(lambda: len(stream.received) >= sent_at + 30, 20, "30 more frames")
    assert not any(box_pixels(image, COLOUR).any() for _, image in stream.frames)
    assert len(stream.of_type("tracks")) > 10  # tracks still come: only the drawing is off


async def test_garbage_on_the_data_channel_gets_errors_and_the_session_goes_on(
    serve: Serve, tmp_path: Path, clients: Clients
) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 5, 20, "tracks")
    garbage: list[Any] = [
        "not json",
        b"\x00\x01binary",
        "[1, 2, 3]",
        {"type": "shout"},
        {"type": "options", "min_score": "high"},
        {"type": "options", "plugin": "nope"},
        json.dumps({"type": "options", "pad": "x" * 20000}),
    ]
    for message in garbage:
        stream.send(message)
    await stream.wait_for(lambda: len(stream.of_type("error")) >= len(garbage), 10, "an error per message")
    codes = [m["code"] for m in stream.of_type("error")]
    assert codes == [
        "invalid_message", "invalid_message", "invalid_message", "invalid_message", "invalid_options",
        "plugin_not_found", "message_too_large",
    ]  # fmt: skip
    assert all(m["message"] for m in stream.of_type("error"))
    tracks_before, frames_before = len(stream.of_type("tracks")), len(stream.received)
    await stream.wait_for(
        lambda: len(stream.of_type("tracks")) > tracks_before + 10 and len(stream.received) > frames_before + 20,
        20,
        "the session to go on",
    )
    summary = await get_json(f"{server.url}/v1/sessions/{stream.session_id}")
    assert summary["state"] == "streaming" and summary["plugin"] == "colorblob"


async def test_options_message_switches_the_plugin(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path, "crashy")
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 5, 20, "colorblob tracks")
    stream.send({"type": "options", "plugin": "crashy"})
    await stream.wait_for(
        lambda: any(m["plugin"] == "crashy" for m in stream.of_type("tracks")), 20, "tracks from crashy"
    )
    switched = [m for m in stream.of_type("tracks") if m["plugin"] == "crashy"]
    assert all(m["tracks"][0]["label"] == "blob" for m in switched)
    assert all(m["plugin"] == "crashy" for m in stream.of_type("tracks")[stream.of_type("tracks").index(switched[0]) :])
    summary = await get_json(f"{server.url}/v1/sessions/{stream.session_id}")
    assert summary["plugin"] == "crashy"
    colorblob = await get_json(f"{server.url}/v1/plugins/colorblob/health")
    crashy = await get_json(f"{server.url}/v1/plugins/crashy/health")
    assert (colorblob["state"], colorblob["active_sessions"]) == ("INITIALIZED", 0)
    assert (crashy["state"], crashy["active_sessions"]) == ("RUNNING", 1)


async def test_overlay_feed_gets_the_same_tracks_messages(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: bool(stream.of_type("tracks")), 20, "tracks")
    async with websockets.connect(f"{server.ws_url}/v1/ws/sessions/{stream.session_id}/tracks") as feed:
        received = [json.loads(await feed.recv()) for _ in range(10)]
    await stream.wait_for(lambda: stream.of_type("tracks")[-1]["frame"] >= received[-1]["frame"], 10, "channel")
    on_channel = {m["frame"]: m for m in stream.of_type("tracks")}
    assert [on_channel[m["frame"]] for m in received] == received


async def test_overlay_feed_closes_when_the_session_ends(serve: Serve, tmp_path: Path, clients: Clients) -> None:
    server = colorblob_server(serve, tmp_path)
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: bool(stream.of_type("tracks")), 20, "tracks")
    async with websockets.connect(f"{server.ws_url}/v1/ws/sessions/{stream.session_id}/tracks") as feed:
        await feed.recv()
        await stream.close()
        with pytest.raises(websockets.ConnectionClosedOK):
            while True:
                await feed.recv()
    assert feed.close_code == 1000


async def test_overlay_feed_for_an_unknown_session_closes_with_4404(serve: Serve, tmp_path: Path) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path),))
    async with websockets.connect(f"{server.ws_url}/v1/ws/sessions/nope/tracks") as feed:
        with pytest.raises(websockets.ConnectionClosed):
            await feed.recv()
    assert feed.close_code == 4404 and "nope" in (feed.close_reason or "")


async def test_overlay_feed_refuses_a_foreign_origin(serve: Serve, tmp_path: Path) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path),))
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            f"{server.ws_url}/v1/ws/sessions/nope/tracks", origin=Origin("https://evil.example")
        ):
            pass
    assert refused.value.response.status_code == 403
