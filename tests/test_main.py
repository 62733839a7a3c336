"""`python -m app` serves, answers at once while plugins load, and shuts down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import DEFAULT_PLUGINS, free_port

REPO = Path(__file__).resolve().parent.parent


def test_the_server_serves_then_stops_its_workers_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "colorblob").symlink_to(DEFAULT_PLUGINS / "colorblob")
    port = free_port()
    env = {**os.environ, "LIVETRACK_PORT": str(port), "LIVETRACK_LOG_LEVEL": "INFO"}
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--plugins-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "server did not come up"
            time.sleep(0.1)
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        health = httpx.get(f"{url}/v1/plugins/colorblob/health").json()
        assert health["state"] == "INITIALIZED"
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    # uvicorn re-raises the signal after a clean shutdown, so the exit reads as SIGTERM.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "colorblob: LOADED -> INITIALIZED" in output
    worker_pids = [line for line in output.splitlines() if "worker started (pid" in line]
    assert worker_pids
    pid = int(worker_pids[0].rsplit("pid ", 1)[1].rstrip(")"))
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_bad_ice_flag_stops_the_server_with_its_value() -> None:
    for flag, value in (("--ice-server", "http://nope"), ("--ice-address", "not-an-ip")):
        result = subprocess.run(
            [sys.executable, "-m", "app", flag, value], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0
        assert value in result.stderr and "error" in result.stderr
