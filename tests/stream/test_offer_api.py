"""POST /v1/webrtc/offer and /v1/sessions against the real server: answers, limits, errors (DESIGN 4.3)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from app.config import Settings
from app.stream.ice import offered_addresses
from tests.conftest import LiveServer
from tests.stream.helpers import plugins_dir

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SUMMARY_FIELDS = {
    "session_id", "plugin", "state", "created_at", "frames_in", "frames_processed", "frames_dropped", "frames_out",
    "fps_in", "fps_out", "fps_processed", "latency_ms", "box_age_ms", "plugin_state",
}  # fmt: skip


async def _offer_sdp(kinds: tuple[str, ...]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for kind in kinds:
            if kind == "data":
                pc.createDataChannel("tracks")
            else:
                pc.addTransceiver(kind, direction="sendrecv")
        with offered_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def offer_sdp(*kinds: str) -> str:
    """A real aiortc offer's SDP (its peer is closed at once: the session never connects)."""
    return asyncio.run(_offer_sdp(kinds or ("video", "data")))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = plugins_dir(tmp_path_factory.mktemp("offer"), "colorblob")
    settings = Settings(plugins_dirs=(folder,), max_sessions=2, admin_token=TOKEN, ice_addresses=("127.0.0.1",))
    live = LiveServer(settings).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def sessions(server: LiveServer) -> Iterator[list[str]]:
    """Ids of sessions a test opened; deleted afterwards so each test starts with none."""
    opened: list[str] = []
    yield opened
    for session_id in opened:
        server_delete(server, session_id)
    assert server.get("/v1/sessions").json() == []


def server_delete(server: LiveServer, session_id: str, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.delete(f"{server.url}/v1/sessions/{session_id}", headers=headers, timeout=30)


def post_offer(server: LiveServer, body: Any, **kwargs: Any) -> httpx.Response:
    if isinstance(body, dict):
        return server.post("/v1/webrtc/offer", json=body, **kwargs)
    return server.post("/v1/webrtc/offer", content=body, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body


def test_offer_answers_with_a_session_and_only_the_chosen_host_address(server: LiveServer, sessions: list[str]) -> None:
    response = post_offer(server, {"sdp": offer_sdp(), "type": "offer", "plugin": "colorblob"})
    assert response.status_code == 200, response.text
    body = response.json()
    sessions.append(body["session_id"])
    assert set(body) == {"sdp", "type", "session_id"} and body["type"] == "answer"
    candidates = re.findall(r"^a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ (\w+)", body["sdp"], re.MULTILINE)
    assert candidates and all(candidate == ("127.0.0.1", "host") for candidate in candidates), candidates


def test_sessions_are_listed_with_every_summary_field(server: LiveServer, sessions: list[str]) -> None:
    session_id = post_offer(server, {"sdp": offer_sdp(), "type": "offer", "plugin": "colorblob"}).json()["session_id"]
    sessions.append(session_id)
    listed = server.get("/v1/sessions").json()
    assert [s["session_id"] for s in listed] == [session_id]
    summary = server.get(f"/v1/sessions/{session_id}").json()
    assert set(summary) == SUMMARY_FIELDS
    assert summary["state"] == "connecting" and summary["plugin"] == "colorblob" and summary["frames_in"] == 0
    assert set(summary["latency_ms"]) == {"p50", "p95"}
    assert summary["box_age_ms"] == {"p50": None, "p95": None}  # no result drawn yet


def test_delete_closes_the_session(server: LiveServer) -> None:
    session_id = post_offer(server, {"sdp": offer_sdp(), "type": "offer", "plugin": "colorblob"}).json()["session_id"]
    response = server_delete(server, session_id)
    assert response.status_code == 200 and response.json()["state"] == "closed"
    assert_error(server.get(f"/v1/sessions/{session_id}"), 404, "session_not_found")


def test_delete_needs_the_admin_token(server: LiveServer, sessions: list[str]) -> None:
    session_id = post_offer(server, {"sdp": offer_sdp(), "type": "offer", "plugin": "colorblob"}).json()["session_id"]
    sessions.append(session_id)
    assert_error(server_delete(server, session_id, headers={}), 401, "unauthorized")
    assert_error(server_delete(server, session_id, headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
    assert server.get(f"/v1/sessions/{session_id}").status_code == 200


def test_unknown_session_is_404(server: LiveServer) -> None:
    assert_error(server.get("/v1/sessions/nope"), 404, "session_not_found")
    assert_error(server_delete(server, "nope"), 404, "session_not_found")


GOOD = {"type": "offer", "plugin": "colorblob"}
NO_ICE_CREDENTIALS = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"this is not json", "invalid_json"),
        (b"[1, 2]", "invalid_offer"),
        ({"type": "offer", "plugin": "colorblob"}, "invalid_offer"),
        ({"sdp": "v=0", "plugin": "colorblob"}, "invalid_offer"),
        ({"sdp": "v=0", "type": "offer"}, "invalid_offer"),
        ({"sdp": "v=0", "type": "answer", "plugin": "colorblob"}, "invalid_offer"),
        ({"sdp": 42, **GOOD}, "invalid_offer"),
        ({"sdp": "", **GOOD}, "invalid_offer"),
        ({"sdp": "v=0", "type": "offer", "plugin": 7}, "invalid_offer"),
        ({"sdp": "garbage", **GOOD}, "invalid_sdp"),
        ({"sdp": "v=0\r\nm=audio x\r\n", **GOOD}, "invalid_sdp"),
        ({"sdp": NO_ICE_CREDENTIALS, **GOOD}, "invalid_sdp"),
        ({"sdp": "OFFER_AUDIO", **GOOD}, "invalid_sdp"),
        ({"sdp": "OFFER", **GOOD, "options": [1]}, "invalid_options"),
        ({"sdp": "OFFER", **GOOD, "options": {"boxes": "yes"}}, "invalid_options"),
        ({"sdp": "OFFER", **GOOD, "options": {"min_score": 2}}, "invalid_options"),
    ],
    ids=[
        "non-json", "not-an-object", "no-sdp", "no-type", "no-plugin", "wrong-type", "sdp-not-text", "empty-sdp",
        "plugin-not-text", "garbage-sdp", "broken-media-line", "no-ice-credentials", "no-video", "options-not-object",
        "bad-overlay-flag", "min-score-out-of-range",
    ],
)  # fmt: skip
def test_bad_offer_is_400_and_leaves_no_session(server: LiveServer, body: Any, code: str) -> None:
    if isinstance(body, dict) and body.get("sdp") in ("OFFER", "OFFER_AUDIO"):
        body = {**body, "sdp": offer_sdp() if body["sdp"] == "OFFER" else offer_sdp("audio", "data")}
    assert_error(post_offer(server, body), 400, code)
    assert server.get("/v1/sessions").json() == []


def test_unknown_plugin_is_404(server: LiveServer) -> None:
    assert_error(post_offer(server, {"sdp": offer_sdp(), "type": "offer", "plugin": "nope"}), 404, "plugin_not_found")


def test_body_over_64_kb_is_413(server: LiveServer) -> None:
    body = json.dumps({"sdp": "v=0\r\n" + "a=x\r\n" * 14000, **GOOD}).encode()
    assert len(body) > 64 * 1024
    assert_error(post_offer(server, body), 413, "payload_too_large")


def test_offers_past_max_sessions_are_503(server: LiveServer, sessions: list[str]) -> None:
    for _ in range(2):
        response = post_offer(server, {"sdp": offer_sdp(), **GOOD})
        assert response.status_code == 200, response.text
        sessions.append(response.json()["session_id"])
    assert_error(post_offer(server, {"sdp": offer_sdp(), **GOOD}), 503, "at_capacity")


def test_offer_from_a_foreign_origin_is_403(server: LiveServer) -> None:
    response = post_offer(server, {"sdp": offer_sdp(), **GOOD}, headers={"Origin": "https://evil.example"})
    assert_error(response, 403, "origin_not_allowed")
    assert server.get("/v1/sessions").json() == []


def test_offer_from_localhost_origin_is_accepted(server: LiveServer, sessions: list[str]) -> None:
    response = post_offer(server, {"sdp": offer_sdp(), **GOOD}, headers={"Origin": "http://localhost:3000"})
    assert response.status_code == 200, response.text
    sessions.append(response.json()["session_id"])


def test_session_routes_appear_once(server: LiveServer) -> None:
    paths = [getattr(route, "path", None) for route in server.app.routes]
    for path in (
        "/v1/webrtc/offer",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/ws/sessions/{session_id}/tracks",
    ):
        assert paths.count(path) == 1, path
