"""Nothing a plugin starts outlives its worker (DESIGN 3.6), through the real server and real workers.

The spawns_tree fixture starts `sleep`, a child that ignores SIGTERM with a grandchild
that calls setsid, and a double-forked setsid daemon. Each way a worker ends must take
all of them with it.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.runtime.proctree import Proc, find_tree
from tests.conftest import DEFAULT_PLUGINS, FIXTURE_PLUGINS, LiveServer
from tests.helpers import REASON

TREE_SIZE = 4  # sleep, the SIGTERM ignorer, its setsid grandchild, the daemon


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    (tmp_path / "spawns_tree").symlink_to(FIXTURE_PLUGINS / "spawns_tree")
    (tmp_path / "colorblob").symlink_to(DEFAULT_PLUGINS / "colorblob")
    live = LiveServer(Settings(plugins_dirs=(tmp_path,))).start()
    try:
        live.wait_state("spawns_tree", "INITIALIZED")
        yield live
    finally:
        live.stop()


def sessions_of(tree: set[Proc]) -> set[int]:
    sessions = set()
    for proc in tree:
        try:
            sessions.add(os.getsid(proc.pid))
        except ProcessLookupError:
            pass
    return sessions


def tree_of(worker_pid: int) -> set[Proc]:
    """The worker's descendants once all of them are up and the setsid ones have left its session
    (polled: they are other processes' doing)."""
    deadline = time.monotonic() + 20
    while len(tree := find_tree(worker_pid)) < TREE_SIZE or len(sessions_of(tree)) < 3:
        assert time.monotonic() < deadline, f"the fixture's tree did not come up: {tree}"
        time.sleep(0.05)
    return tree


def alive(procs: set[Proc]) -> set[Proc]:
    """Those still running (a zombie is dead: it only waits for its parent to read its status)."""
    still = set()
    for proc in procs:
        try:
            stat = Path(f"/proc/{proc.pid}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X") and int(fields[19]) == proc.started:
            still.add(proc)
    return still


def assert_all_gone(procs: set[Proc], within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while alive(procs):
        assert time.monotonic() < deadline, f"left behind: {alive(procs)}"
        time.sleep(0.05)


def the_tree(server: LiveServer) -> tuple[int, set[Proc]]:
    pid = server.health("spawns_tree")["worker_pid"]
    assert isinstance(pid, int)
    return pid, tree_of(pid)


def crash(server: LiveServer, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def deadline(server: LiveServer, pid: int) -> None:
    response = server.post("/v1/plugins/spawns_tree/run", content=png((255, 0, 0)))
    assert response.status_code == 504
    assert response.json()["error"]["message"].startswith("TimeoutError: no answer within 1000 ms")


def memory(server: LiveServer, pid: int) -> None:
    response = server.post("/v1/plugins/spawns_tree/run", content=png((0, 0, 255)))
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith("MemoryError: worker used ") and REASON.match(message)


def restart(server: LiveServer, pid: int) -> None:
    assert server.post("/v1/plugins/spawns_tree/restart").status_code == 202


ENDINGS: dict[str, Callable[[LiveServer, int], None]] = {
    "crash": crash,
    "deadline": deadline,
    "memory": memory,
    "restart": restart,
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_the_whole_tree_dies_with_its_worker(server: LiveServer, ending: str) -> None:
    pid, tree = the_tree(server)
    ENDINGS[ending](server, pid)
    assert_all_gone(tree)
    back = server.wait_for("spawns_tree", lambda h: h["state"] == "INITIALIZED" and h["worker_pid"] != pid)
    assert back["restarts"] == 1
    # The new worker has a tree of its own; the old one stays gone.
    assert tree_of(back["worker_pid"]).isdisjoint(tree)  # type: ignore[arg-type]


def test_server_shutdown_leaves_no_process_behind(tmp_path: Path) -> None:
    (tmp_path / "spawns_tree").symlink_to(FIXTURE_PLUGINS / "spawns_tree")
    live = LiveServer(Settings(plugins_dirs=(tmp_path,))).start()
    try:
        live.wait_state("spawns_tree", "INITIALIZED")
        pid, tree = the_tree(live)
    finally:
        live.stop()
    assert_all_gone(tree, within_s=2)  # SIGKILLed before stop() returned; init reaps them a moment later
    assert not Path(f"/proc/{pid}").exists()
