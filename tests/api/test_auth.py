"""Access control (DESIGN 4.6): the admin token on restart, the Origin check on WebSockets and the offer."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from app.config import Settings
from tests.conftest import FIXTURE_PLUGINS, LiveServer

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with an admin token and one plugin that is FAILED after loading (restartable)."""
    folder = tmp_path_factory.mktemp("plugins")
    shutil.copytree(FIXTURE_PLUGINS / "init_raises", folder / "init_raises")
    server = LiveServer(Settings(plugins_dirs=(folder,), admin_token=TOKEN)).start()
    try:
        server.wait_state("init_raises", "FAILED")
        yield server
    finally:
        server.stop()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"]}}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {TOKEN}"}, {"X-Token": TOKEN}],
)
def test_restart_without_a_bearer_token_is_401(guarded: LiveServer, headers: dict[str, str]) -> None:
    response = guarded.post("/v1/plugins/init_raises/restart", headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", ["wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()])
def test_restart_with_a_wrong_token_is_403(guarded: LiveServer, token: str) -> None:
    response = guarded.post("/v1/plugins/init_raises/restart", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 403, "forbidden")
    assert TOKEN not in response.text


def test_an_unknown_plugin_is_401_without_the_token_so_names_do_not_leak(guarded: LiveServer) -> None:
    assert_error(guarded.post("/v1/plugins/nope/restart"), 401, "unauthorized")


def test_restart_with_the_token_is_202_and_reading_health_needs_no_token(guarded: LiveServer) -> None:
    response = guarded.post("/v1/plugins/init_raises/restart", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "init_raises"
    health = guarded.wait_for("init_raises", lambda h: h["state"] == "FAILED" and h["restarts"] == 1)
    assert health["restarts"] == 1
    assert guarded.get("/v1/plugins").status_code == 200


def test_without_a_configured_token_restart_is_open(serve: Callable[..., LiveServer], tmp_path: Path) -> None:
    shutil.copytree(FIXTURE_PLUGINS / "init_raises", tmp_path / "init_raises")
    server = serve(plugins_dirs=(tmp_path,), admin_token=None)
    server.wait_state("init_raises", "FAILED")
    assert server.post("/v1/plugins/init_raises/restart").status_code == 202


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "null"])
async def test_a_health_websocket_from_a_foreign_origin_is_refused(guarded: LiveServer, origin: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(guarded.ws_url + "/v1/ws/health", origin=origin):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("origin", [None, "http://localhost:3000", "https://127.0.0.1", "own"])
async def test_a_health_websocket_from_no_or_a_local_origin_is_open(guarded: LiveServer, origin: str | None) -> None:
    if origin == "own":
        origin = guarded.url
    async with connect(guarded.ws_url + "/v1/ws/health", origin=origin) as ws:  # type: ignore[arg-type]
        assert '"type":"snapshot"' in str(await ws.recv())


async def test_allowed_origins_replace_the_defaults(serve: Callable[..., LiveServer]) -> None:
    server = serve(plugins_dirs=(), allowed_origins=("https://dash.example",))
    async with connect(server.ws_url + "/v1/ws/health", origin="https://dash.example") as ws:  # type: ignore[arg-type]
        await ws.recv()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(server.ws_url + "/v1/ws/health", origin="http://localhost:3000"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


def test_an_offer_from_a_foreign_origin_is_403_before_its_body_is_read(guarded: LiveServer) -> None:
    response = guarded.post("/v1/webrtc/offer", content=b"not even json", headers={"Origin": "https://evil.example"})
    assert_error(response, 403, "origin_not_allowed")
