"""The server every fuzz test hammers: colorblob only, an admin token, room for many sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.conftest import DEFAULT_PLUGINS, LiveServer

ADMIN_TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "colorblob").symlink_to(DEFAULT_PLUGINS / "colorblob")
    settings = Settings(
        plugins_dirs=(Path(folder),), admin_token=ADMIN_TOKEN, ice_addresses=("127.0.0.1",), max_sessions=64
    )
    live = LiveServer(settings).start()
    try:
        live.wait_state("colorblob", "INITIALIZED")
        yield live
    finally:
        live.stop()
