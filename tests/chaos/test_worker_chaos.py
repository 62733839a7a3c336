"""Chaos at the process level: workers killed, stopped or bloated from outside, mid-frame and idle."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.conftest import DEFAULT_PLUGINS, LiveServer
from tests.helpers import REASON, png_with_square

CHAOS_PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    (tmp_path / "colorblob").symlink_to(DEFAULT_PLUGINS / "colorblob")
    live = LiveServer(Settings(plugins_dirs=(CHAOS_PLUGINS, tmp_path))).start()
    try:
        for name in ("sleepy", "idle_leak", "colorblob"):
            live.wait_state(name, "INITIALIZED")
        yield live
    finally:
        live.stop()


def pid_of(server: LiveServer, name: str) -> int:
    pid = server.health(name)["worker_pid"]
    assert isinstance(pid, int)
    return pid


def run_in_background(server: LiveServer, name: str) -> tuple[threading.Thread, list[httpx.Response]]:
    responses: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: responses.append(server.post(f"/v1/plugins/{name}/run", content=png_with_square()))
    )
    thread.start()
    return thread, responses


def assert_others_unaffected(server: LiveServer) -> None:
    assert server.get("/healthz").status_code == 200
    response = server.post("/v1/plugins/colorblob/run", content=png_with_square((30, 20, 70, 50)))
    assert response.status_code == 200 and response.json()["tracks"][0]["box"] == [30.0, 20.0, 70.0, 50.0]
    assert server.health("colorblob")["restarts"] == 0


def test_kill_9_while_a_frame_is_in_flight(server: LiveServer) -> None:
    pid = pid_of(server, "sleepy")
    thread, responses = run_in_background(server, "sleepy")
    time.sleep(0.3)  # inside its 600 ms frame
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    assert responses[0].status_code == 502
    message = responses[0].json()["error"]["message"]
    assert message.startswith("WorkerCrashed: worker exited with signal SIGKILL while processing frame 0")
    assert REASON.match(message)
    back = server.wait_state("sleepy", "INITIALIZED", timeout=30)
    assert back["restarts"] == 1 and back["worker_pid"] != pid
    assert server.post("/v1/plugins/sleepy/run", content=png_with_square()).status_code == 200
    assert_others_unaffected(server)


def test_kill_9_while_idle_fails_then_restarts(server: LiveServer) -> None:
    pid = pid_of(server, "sleepy")
    os.kill(pid, signal.SIGKILL)
    back = server.wait_for("sleepy", lambda h: h["restarts"] == 1 and h["state"] == "INITIALIZED", timeout=30)
    assert back["error_count"] == 1
    assert_others_unaffected(server)


def test_sigstop_is_a_hang_without_cpu_and_is_killed_at_the_deadline(server: LiveServer) -> None:
    pid = pid_of(server, "sleepy")
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    response = server.post("/v1/plugins/sleepy/run", content=png_with_square())
    assert response.status_code == 504
    assert 1.4 < time.monotonic() - started < 10
    assert response.json()["error"]["message"].startswith("TimeoutError: no answer within 1500 ms")
    server.wait_state("sleepy", "INITIALIZED", timeout=30)
    assert not Path(f"/proc/{pid}").exists()
    assert_others_unaffected(server)


def test_memory_filled_while_idle_is_seen_and_killed(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    assert server.post("/v1/plugins/idle_leak/run", content=png_with_square()).status_code == 200
    back = server.wait_for("idle_leak", lambda h: h["restarts"] == 1, timeout=30)
    assert back["error_count"] == 1
    failures = [
        r.getMessage()
        for r in caplog.records
        if "idle_leak: RUNNING -> FAILED" in r.getMessage() or "idle_leak: INITIALIZED -> FAILED" in r.getMessage()
    ]
    assert len(failures) == 1 and "(MemoryError: worker used " in failures[0]
    assert "over memory_limit_mb 250; worker killed" in failures[0]
    assert_others_unaffected(server)
