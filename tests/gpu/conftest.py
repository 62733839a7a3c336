"""Fixtures of the GPU tests (DESIGN 3.6, 3.7 on a CUDA host)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.stream.helpers import Clients


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    """Opens headless WebRTC clients; request it after `serve` so they close before the server stops."""
    opened = Clients()
    try:
        yield opened
    finally:
        await opened.close()
