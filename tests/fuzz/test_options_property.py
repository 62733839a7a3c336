"""Property: no client option, however wrong, can break a shipped plugin (DESIGN 3.1, 3.2).

Random options (wrong types, NaN, huge numbers, nesting, unknown keys, mixed with valid
ones) go to every shipped plugin in offers and on the data channel of many sessions;
each is accepted or refused with an error to that client, and every plugin stays usable
with no error counted and no restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.config import Settings
from tests.conftest import DEFAULT_PLUGINS, LiveServer
from tests.stream.helpers import Clients

SHIPPED = ("colorblob", "videotracker")
OPTION_NAMES = ("min_area", "min_score", "min_face_size", "boxes", "labels", "ids")

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, 0, -1, 1, 12, 64])
    | st.floats()  # NaN and infinities included
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
option_objects = st.dictionaries(st.sampled_from(OPTION_NAMES) | st.text(max_size=10), values, max_size=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("plugins")
    for name in SHIPPED:
        (folder / name).symlink_to(DEFAULT_PLUGINS / name)
    settings = Settings(plugins_dirs=(Path(folder),), ice_addresses=("127.0.0.1",), max_sessions=16)
    live = LiveServer(settings).start()
    try:
        for name in SHIPPED:
            live.wait_state(name, "INITIALIZED", timeout=120)
        yield live
    finally:
        live.stop()


async def refused_offer(server: LiveServer, plugin: str, options: dict[str, Any]) -> None:
    """Options httpx will not encode (NaN, infinity) sent as a careless client would: a 400 naming them."""
    body = json.dumps({"sdp": "v=0", "type": "offer", "plugin": plugin, "options": options})
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.url}/v1/webrtc/offer", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_options"


async def one_session(server: LiveServer, plugin: str, offer_options: dict[str, Any], messages: list[Any]) -> None:
    try:
        json.dumps(offer_options, allow_nan=False)
    except ValueError:
        await refused_offer(server, plugin, offer_options)
        offer_options = {}
    clients = Clients()
    try:
        try:
            stream = await clients.connect(server.url, plugin, offer_options, fps=15, size=(320, 240))
        except httpx.HTTPStatusError as refused:
            assert refused.response.status_code == 400, refused.response.text
            assert refused.response.json()["error"]["code"] == "invalid_options"
            stream = await clients.connect(server.url, plugin, fps=15, size=(320, 240))
        await stream.wait_for(lambda: bool(stream.of_type("status")), 20, "the status message")
        for options in messages:
            stream.send({"type": "options", **options})
        seen = len(stream.of_type("tracks"))
        await stream.wait_for(lambda: len(stream.of_type("tracks")) >= seen + 3, 20, "tracks after the options")
        for error in stream.of_type("error"):
            assert error["code"] == "invalid_options" and error["message"], error
    finally:
        await clients.close()


@settings(
    max_examples=6,
    deadline=None,
    # Each example opens real sessions: shrinking a failure would take many minutes, so it is reported as found.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(offer_options=option_objects, messages=st.lists(option_objects, min_size=5, max_size=15))
def test_random_options_never_break_a_shipped_plugin(
    server: LiveServer, offer_options: dict[str, Any], messages: list[dict[str, Any]]
) -> None:
    for plugin in SHIPPED:
        asyncio.run(one_session(server, plugin, offer_options, messages))
        health = server.health(plugin)
        assert health["state"] in ("INITIALIZED", "RUNNING"), health
        assert (health["error_count"], health["restarts"], health["reason"]) == (0, 0, None), health


def test_the_plugins_are_idle_and_initialized_after_all_those_sessions(server: LiveServer) -> None:
    for plugin in SHIPPED:
        health = server.wait_state(plugin, "INITIALIZED")
        assert (health["error_count"], health["restarts"], health["active_sessions"]) == (0, 0, 0), health


async def test_the_issue_example_min_area_big_is_the_clients_error_not_colorblobs(server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        offer = await http.post(
            f"{server.url}/v1/webrtc/offer",
            json={"sdp": "v=0", "type": "offer", "plugin": "colorblob", "options": {"min_area": "big"}},
        )
    assert offer.status_code == 400
    assert offer.json()["error"] == {
        "code": "invalid_options",
        "message": 'option \'min_area\' breaks the rule type: "integer" of plugin colorblob, got "big"',
    }
    clients = Clients()
    try:
        stream = await clients.connect(server.url, "colorblob", fps=15, size=(320, 240))
        await stream.wait_for(lambda: bool(stream.of_type("status")), 20, "the channel to open")
        for _ in range(4):  # once enough to spend the restart budget, when a plugin saw it
            stream.send({"type": "options", "min_area": "big"})
        await stream.wait_for(lambda: len(stream.of_type("error")) == 4, 20, "four errors")
        seen = len(stream.of_type("tracks"))
        await stream.wait_for(lambda: len(stream.of_type("tracks")) >= seen + 3, 20, "tracks after the errors")
        assert {e["code"] for e in stream.of_type("error")} == {"invalid_options"}
        health = await asyncio.to_thread(server.health, "colorblob")
        assert (health["state"], health["error_count"], health["restarts"]) == ("RUNNING", 0, 0)
    finally:
        await clients.close()
