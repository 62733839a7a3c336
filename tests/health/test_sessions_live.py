"""A real WebRTC session as the health channel and /metrics see it (DESIGN 4.2, 4.3, 4.4)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer
from tests.health.clients import Received, Subscriber, epoch, plugin_state
from tests.stream.helpers import Clients


async def test_a_session_shows_in_sessions_messages_at_most_once_a_second_and_in_metrics(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    server = serve(plugins_dirs=(plugins_dir("colorblob"),))
    await asyncio.to_thread(server.wait_state, "colorblob", "INITIALIZED")
    subscriber = await Subscriber.open(server.ws_url)
    clients = Clients()
    try:
        stream = await clients.connect(server.url, "colorblob", fps=15.0, size=(320, 240))
        await subscriber.until(plugin_state("colorblob", "RUNNING"))
        streaming = await subscriber.until(
            lambda r: r.type == "sessions" and any((s["fps_in"] or 0) > 0 for s in r.payload["sessions"])
        )
        summary = streaming.payload["sessions"][0]
        assert summary["plugin"] == "colorblob" and summary["frames_in"] > 0
        session_id = summary["session_id"]
        # Box age is known once an output frame has had a result drawn on it (external state: poll).
        async with asyncio.timeout(10):
            while (await asyncio.to_thread(server.get, f"/v1/sessions/{session_id}")).json()["box_age_ms"][
                "p50"
            ] is None:
                await asyncio.sleep(0.1)

        text = (await asyncio.to_thread(server.get, "/metrics")).text
        wanted = {"session": session_id, "plugin": "colorblob", "direction": "in"}
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        fps = [s.value for s in samples if s.name == "livetrack_session_fps" and s.labels == wanted]
        assert fps and fps[0] > 0
        ages = {
            s.labels["quantile"]: s.value
            for s in samples
            if s.name == "livetrack_session_box_age_seconds" and s.labels["session"] == session_id
        }
        assert set(ages) == {"0.5", "0.95"} and 0 <= ages["0.5"] <= ages["0.95"] < 5, ages

        await stream.close()
        seen: set[str] = set()

        def ended(received: Received) -> bool:
            """The last (empty) sessions message and the plugin back to idle, in either order."""
            if received.type == "sessions" and received.payload["sessions"] == []:
                seen.add("sessions")
            if plugin_state("colorblob", "INITIALIZED")(received):
                seen.add("idle")
            return seen == {"sessions", "idle"}

        await subscriber.until(ended, 10)
    finally:
        await clients.close()
        await subscriber.close()
    stamps = [epoch(r.envelope["timestamp"]) for r in subscriber.received if r.type == "sessions"]
    assert len(stamps) >= 2
    assert min(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 0.9  # at most once a second
    assert subscriber.seqs() == list(range(1, len(subscriber.received) + 1))
