"""Shared memory that fits the host: slots shrink after big frames stop, and a too-small /dev/shm is reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.runtime import shm
from app.runtime.shm import SHRINK_AFTER_CALLS, SlotPool
from tests.conftest import LiveServer


def test_slots_shrink_back_after_big_frames_stop() -> None:
    pool = SlotPool(f"livetrack-test-{np.random.default_rng().integers(1 << 30)}")
    try:
        big, small = np.ones((1080, 1920, 3), np.uint8), np.full((240, 320, 3), 7, np.uint8)
        pool.fill([big, big])
        assert pool.sizes == [big.nbytes, big.nbytes]
        big_names = pool.names
        for _ in range(2 * SHRINK_AFTER_CALLS):
            [slot] = pool.fill([small])
        assert pool.sizes == [small.nbytes]  # the one in use fits its frames, the idle one is gone
        assert set(big_names) <= set(pool.take_retired())  # the worker is told to drop both mappings
        assert bytes(slot.memory.buf[:3]) == b"\x07\x07\x07"
    finally:
        pool.close()
        pool.close()  # idempotent


def test_a_fill_after_close_is_refused_and_leaves_no_segment() -> None:
    pool = SlotPool("livetrack-test-closed")
    pool.close()
    with pytest.raises(shm.SlotPoolClosed):
        pool.fill([np.zeros((4, 4, 3), np.uint8)])
    assert pool.names == []


def test_free_space_is_read_from_the_filesystem() -> None:
    assert shm.shm_free_bytes(Path("/dev/shm")) > 0


def test_a_small_shm_gives_a_reason_naming_the_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shm, "shm_free_bytes", lambda directory: 64 << 20)  # Docker's default
    reason = shm.shm_shortfall(8 + 6, (1920, 1080))
    assert reason is not None and reason.startswith("SharedMemoryTooSmall: /dev/shm has 64 MiB free")
    assert "--shm-size" in reason and "--max-sessions" in reason
    assert shm.shm_shortfall(8 + 2, (640, 480)) is None  # 10 VGA frames fit in 64 MiB


def test_a_server_on_a_small_shm_is_not_ready_and_says_why(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shm, "shm_free_bytes", lambda directory: 16 << 20)
    server = serve(plugins_dirs=(tmp_path,))  # no plugins: readiness hangs on shared memory alone
    response = server.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False and body["pending"] == []
    assert body["reason"].startswith("SharedMemoryTooSmall:") and "--shm-size" in body["reason"]
