"""A manual restart of a RUNNING plugin reloads it while streams stay up (DESIGN 3.3, 4.1)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import LiveServer
from tests.helpers import REASON
from tests.stream.helpers import Clients, plugins_dir


async def test_reload_of_a_running_plugin_with_a_stream_open(
    serve: Callable[..., LiveServer], tmp_path: Path, clients: Clients
) -> None:
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 10, 20, "tracks before the reload")
    before = server.health("colorblob")
    assert before["state"] == "RUNNING"

    response = await asyncio.to_thread(server.post, "/v1/plugins/colorblob/restart")
    assert response.status_code == 202
    await stream.wait_for(
        lambda: (
            [m["state"] for m in stream.of_type("status")][-1:] == ["RUNNING"]
            and any(m["state"] == "LOADED" for m in stream.of_type("status"))
        ),
        30,
        "back to RUNNING",
    )
    states = [m["state"] for m in stream.of_type("status")]
    # LOADED while the new worker starts, then back (through INITIALIZED, as after any load); never FAILED.
    assert states[:2] == ["RUNNING", "LOADED"] and states[-1] == "RUNNING" and "FAILED" not in states, states
    back_at = stream.messages.index(stream.of_type("status")[-1])
    await stream.wait_for(
        lambda: len([m for m in stream.messages[back_at:] if m["type"] == "tracks"]) >= 10, 30, "tracks to resume"
    )
    after = server.health("colorblob")
    assert after["state"] == "RUNNING" and after["worker_pid"] != before["worker_pid"]
    assert after["restarts"] == before["restarts"] + 1 and after["error_count"] == 0
    summary = server.get(f"/v1/sessions/{stream.session_id}").json()
    assert summary["state"] == "streaming"


async def test_a_reload_that_finds_a_broken_manifest_leaves_the_plugin_failed_with_why(
    serve: Callable[..., LiveServer], tmp_path: Path, clients: Clients
) -> None:
    folder = tmp_path / "plugins" / "copied"
    source = Path(__file__).resolve().parents[2] / "plugins" / "colorblob"
    folder.mkdir(parents=True)
    for item in ("manifest.json", "plugin.py"):
        (folder / item).write_bytes((source / item).read_bytes())
    server = serve(plugins_dirs=(folder.parent,))
    server.wait_state("colorblob", "INITIALIZED")
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 3, 20, "tracks before the reload")

    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "timeout_ms": "soon"}))
    assert (await asyncio.to_thread(server.post, "/v1/plugins/colorblob/restart")).status_code == 202
    await stream.wait_for(lambda: any(m["state"] == "FAILED" for m in stream.of_type("status")), 20, "FAILED")
    failed = server.health("colorblob")
    assert failed["reason"].startswith("ValueError: invalid manifest: 'timeout_ms' must be a whole number")
    assert REASON.match(failed["reason"]), failed["reason"]

    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": "1.0.1"}))  # fixed: a new version
    assert (await asyncio.to_thread(server.post, "/v1/plugins/colorblob/restart")).status_code == 202
    await stream.wait_for(lambda: stream.of_type("status")[-1]["state"] == "RUNNING", 30, "RUNNING again")
    assert server.health("colorblob")["version"] == "1.0.1"
