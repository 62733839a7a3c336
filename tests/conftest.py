"""Shared fixtures: a clean environment, and the real server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.server import create_app

REPO = Path(__file__).resolve().parent.parent
FIXTURE_PLUGINS = REPO / "tests" / "fixtures" / "plugins"
DEFAULT_PLUGINS = REPO / "plugins"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's LIVETRACK_* settings."""
    for key in list(os.environ):
        if key.startswith("LIVETRACK_"):
            monkeypatch.delenv(key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The real app under uvicorn in a thread on 127.0.0.1; `url` is its base address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = replace(settings, host="127.0.0.1", port=free_port())
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.settings.port,
            log_level="warning",
            ws_max_size=64 * 1024,
            loop="asyncio",  # as app/__main__.py: not uvloop, even when the ray extra installed it
            http="h11",
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.ws_url = f"ws://127.0.0.1:{self.settings.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def health(self, name: str) -> dict[str, object]:
        response = self.get(f"/v1/plugins/{name}/health")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    def wait_for(
        self, name: str, predicate: Callable[[dict[str, object]], bool], timeout: float = 60
    ) -> dict[str, object]:
        """Poll a plugin's health until `predicate` holds; fail with the last health seen."""
        deadline = time.monotonic() + timeout
        health = self.health(name)
        while not predicate(health):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {name}: last health {health}")
            time.sleep(0.05)
            health = self.health(name)
        return health

    def wait_state(self, name: str, *states: str, timeout: float = 60) -> dict[str, object]:
        return self.wait_for(name, lambda h: h["state"] in states, timeout)


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """Start real servers: serve(plugins_dirs=[...], **settings) -> LiveServer; stopped at teardown."""
    servers: list[LiveServer] = []

    def start(**overrides: object) -> LiveServer:
        settings = replace(Settings(ice_addresses=("127.0.0.1",)), **overrides)  # type: ignore[arg-type]
        server = LiveServer(settings).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
