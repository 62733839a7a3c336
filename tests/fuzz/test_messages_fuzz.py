"""Fuzzing what clients send besides HTTP: health-channel messages, data-channel messages, mutated SDP offers."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from app.stream.ice import offered_addresses
from tests.conftest import LiveServer
from tests.fuzz.conftest import ADMIN_TOKEN
from tests.stream.helpers import Clients, client, get_json, plugins_dir

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
client_messages = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "resync", "PING", "subscribe", "", "options"])}).map(
        json.dumps
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "resync"])}, optional={"extra": json_values}).map(
        json.dumps
    ),
    st.text(max_size=200),
    st.binary(min_size=1, max_size=512),
)


@pytest.fixture(scope="module")
def health_ws(server: LiveServer) -> Iterator[ClientConnection]:
    # Unbounded queue: the other tests' state changes pile up unread here, and a full queue would stop
    # this client reading, so the server's closing frame would wait behind them for the 10 s close timeout.
    with connect(server.ws_url + "/v1/ws/health", max_size=None, max_queue=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        yield ws


def reply_to(ws: ClientConnection) -> dict[str, Any]:
    """The server's answer to the last message, skipping what it pushes on its own."""
    while True:
        envelope: dict[str, Any] = json.loads(ws.recv(timeout=10))
        if envelope["type"] in ("error", "pong", "snapshot"):
            return envelope


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=client_messages)
def test_health_channel_answers_every_message_and_stays_open(health_ws: ClientConnection, message: str | bytes) -> None:
    health_ws.send(message)
    reply = reply_to(health_ws)
    decoded: Any = None
    if isinstance(message, str):
        try:
            decoded = json.loads(message)
        except ValueError:
            pass
    kind = decoded.get("type") if isinstance(decoded, dict) else None
    expected = {"ping": "pong", "resync": "snapshot"}.get(kind, "error") if isinstance(kind, str) else "error"
    assert reply["type"] == expected, (message, reply)
    if expected == "error":
        assert reply["payload"]["code"] and reply["payload"]["message"]


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("tracks")
        pc.addTransceiver("video", direction="sendrecv")
        with offered_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def mutate(sdp: str, rng: random.Random, operations: int) -> str:
    lines = sdp.split("\r\n")
    for _ in range(operations):
        index = rng.randrange(len(lines))
        choice = rng.randrange(6)
        if choice == 0 and len(lines) > 1:
            del lines[index]
        elif choice == 1:
            lines.insert(index, lines[rng.randrange(len(lines))])
        elif choice == 2 and lines[index]:
            at = rng.randrange(len(lines[index]))
            lines[index] = lines[index][:at] + chr(rng.randrange(32, 0x2FF)) + lines[index][at + 1 :]
        elif choice == 3:
            lines[index] = lines[index][: rng.randrange(len(lines[index]) + 1)]
        elif choice == 4:
            lines.insert(index, rng.choice(["a=", "m=video 0 X/Y 0", "c=IN IP4 999.1.1.1", "a=fingerprint:x y", "="]))
        else:
            lines[index] = lines[index].replace(str(rng.randrange(10)), str(rng.randrange(10)))
    return "\r\n".join(lines)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), operations=st.integers(1, 6))
def test_mutated_offers_get_an_answer_or_a_400(server: LiveServer, offer_sdp: str, seed: int, operations: int) -> None:
    sdp = mutate(offer_sdp, random.Random(seed), operations)
    response = server.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer", "plugin": "colorblob"})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        session = f"{server.url}/v1/sessions/{response.json()['session_id']}"
        assert httpx.delete(session, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    else:
        assert set(response.json()["error"]) == {"code", "message"}


def random_channel_message(rng: random.Random) -> str | bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 80)))
    if kind == 2:
        return json.dumps([rng.random(), None, {"type": "options"}])
    fields: dict[str, Any] = {"type": rng.choice(["options", "tracks", "status", "", None, 3])}
    for key in rng.sample(["boxes", "labels", "ids", "min_score", "plugin", "min_area", "x"], rng.randrange(0, 5)):
        fields[key] = rng.choice([True, False, None, -1, 0.5, 2, "colorblob", "nope", [], {}, "x" * 100, 1e308])
    return json.dumps(fields)


async def test_data_channel_garbage_never_breaks_the_session(serve: Callable[..., LiveServer], tmp_path: Path) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    await asyncio.to_thread(server.wait_state, "colorblob", "INITIALIZED")
    clients = Clients()
    try:
        stream = await clients.connect(server.url, "colorblob")
        await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 5, 30, "the first tracks")
        rng = random.Random(20261127)
        for _ in range(300):
            stream.send(random_channel_message(rng))
            await asyncio.sleep(0.005)
        stream.send({"type": "options", "boxes": True, "labels": True, "ids": True, "min_score": 0.0})
        seen = len(stream.of_type("tracks"))
        await stream.wait_for(lambda: len(stream.of_type("tracks")) >= seen + 20, 30, "tracks after the garbage")
        assert stream.of_type("error"), "garbage got no error message back"
        assert stream.pc.connectionState == "connected"
        sessions = await get_json(f"{server.url}/v1/sessions")
        assert [s["state"] for s in sessions] == ["streaming"]
        assert server.health("colorblob")["state"] == "RUNNING"
        assert client  # the real headless client drove this session
    finally:
        await clients.close()


def test_regression_an_offer_with_its_video_line_cut_is_a_400_not_a_500(server: LiveServer, offer_sdp: str) -> None:
    """Found by the offer fuzzer: aiortc accepts such an offer (data channel only), then fails to close the
    half-set-up connection with an AttributeError, which surfaced as a 500 and left the session behind."""
    lines = offer_sdp.split("\r\n")
    lines[next(i for i, line in enumerate(lines) if line.startswith("m=video"))] = "m"
    response = server.post("/v1/webrtc/offer", json={"sdp": "\r\n".join(lines), "type": "offer", "plugin": "colorblob"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("the offer sends no video")
    assert server.get("/v1/sessions").json() == []
    assert server.health("colorblob")["active_sessions"] == 0
