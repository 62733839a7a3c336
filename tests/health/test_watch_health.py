"""scripts/watch_health.py follows a real server: the table, then each transition in order."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO, LiveServer
from tests.helpers import png_with_square


async def test_watch_health_prints_the_table_then_each_transition_of_a_crash(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    server = serve(plugins_dirs=(plugins_dir("segfault"),))
    await asyncio.to_thread(server.wait_state, "segfault", "INITIALIZED")
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "scripts/watch_health.py", "--url", server.ws_url, "--plain", "--exit-after", "3",
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watcher.stdout is not None
    try:
        async with asyncio.timeout(30):
            header = (await watcher.stdout.readline()).decode().split()
            row = (await watcher.stdout.readline()).decode().split()
            assert header[:3] == ["PLUGIN", "STATE", "DEVICE"] and row[:3] == ["segfault", "INITIALIZED", "cpu"]
            response = await asyncio.to_thread(server.post, "/v1/plugins/segfault/run", content=png_with_square())
            assert response.status_code == 502
            lines = (await watcher.stdout.read()).decode().splitlines()
            assert await watcher.wait() == 0
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    assert [line.split("  ")[1:3] for line in lines] == [
        ["segfault", "INITIALIZED -> FAILED"],
        ["segfault", "FAILED -> LOADED"],
        ["segfault", "LOADED -> INITIALIZED"],
    ]
    assert "(WorkerCrashed: worker exited with signal SIGSEGV" in lines[0]
