"""A session whose video cannot connect ends within a bound, with a reason that says what to change (DESIGN 4.3)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from app.stream import session as session_module
from app.stream.ice import connect_failure_reason, offered_addresses, sdp_candidates
from tests.conftest import LiveServer
from tests.helpers import REASON
from tests.stream.helpers import client, plugins_dir

Serve = Callable[..., LiveServer]


def test_candidates_are_read_from_the_sdp() -> None:
    sdp = "v=0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host\r\na=mid:0\r\n"
    assert sdp_candidates(sdp) == ["127.0.0.1:50000 udp host"]


def test_the_reason_names_the_addresses_and_every_fix() -> None:
    reason = connect_failure_reason("it did not connect", ["10.0.0.2:5000 udp host"])
    assert REASON.match(reason), reason
    assert "10.0.0.2:5000" in reason and "--ice-address" in reason and "TURN" in reason and "firewall" in reason


async def test_an_offer_that_never_connects_ends_with_the_ice_reason(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The symptom prevented: a page saying "Starting…" forever when the browser cannot reach the server."""
    monkeypatch.setattr(session_module, "ICE_CONNECT_TIMEOUT_S", 2.0)
    caplog.set_level(logging.INFO, logger="app.stream.session")
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")
    # A client that offers and then never applies the answer: no ICE check ever succeeds.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(client.StampedTrack(client.pattern(64, 48)), direction="sendrecv")
        pc.createDataChannel("tracks")
        with offered_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            offer = {"sdp": pc.localDescription.sdp, "type": "offer", "plugin": "colorblob"}
            session_id = (await http.post("/v1/webrtc/offer", json=offer)).json()["session_id"]
            async with asyncio.timeout(15):
                while (await http.get(f"/v1/sessions/{session_id}")).status_code != 404:
                    await asyncio.sleep(0.1)  # external state: the server's session list
    finally:
        await pc.close()
    closing = [r.getMessage() for r in caplog.records if f"session {session_id}: closing:" in r.getMessage()]
    assert len(closing) == 1 and "IceConnectionError: " in closing[0], closing
    assert "did not connect within 2 s" in closing[0] and "127.0.0.1:" in closing[0] and "--ice-address" in closing[0]
    offered = [
        r.getMessage() for r in caplog.records if f"session {session_id}: ICE candidates offered" in r.getMessage()
    ]
    assert offered and "127.0.0.1:" in offered[0], offered
