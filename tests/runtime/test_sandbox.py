"""The sandbox with real worker processes and real shared memory (DESIGN 3.6)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.runtime.errors import PluginFault
from app.runtime.frames import Frame
from app.runtime.manifest import read_manifest
from app.runtime.sandbox import STOP_TIMEOUT_S, EndSession, Load, PluginWorker, Process, run_plugin_sandboxed

REPO = Path(__file__).resolve().parents[2]

PluginFactory = Callable[..., PluginWorker]


def write_plugin(folder: Path, body: str, **manifest: Any) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"name": folder.name, "version": "1", "entrypoint": "plugin:Plugin", **manifest})
    )
    (folder / "plugin.py").write_text(textwrap.dedent(body))
    return folder


@pytest.fixture
async def workers() -> AsyncIterator[Callable[..., PluginWorker]]:
    """Make PluginWorkers (deaths collected in worker.deaths); all stopped at teardown."""
    made: list[PluginWorker] = []

    def make(folder: Path, gpu_policy: str = "auto") -> PluginWorker:
        deaths: list[PluginFault] = []
        worker = PluginWorker(read_manifest(folder), gpu_policy, deaths.append)
        worker.deaths = deaths  # type: ignore[attr-defined]
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()


def square_frame(session: str = "s", index: int = 0, at: tuple[int, int] = (100, 200)) -> Frame:
    image = np.zeros((480, 640, 3), np.uint8)
    y, x = at
    image[y : y + 50, x : x + 60] = (255, 0, 0)
    return Frame(session, index, index * 3000, image)


async def loaded(worker: PluginWorker) -> PluginWorker:
    result = await run_plugin_sandboxed(worker, Load())
    assert result.ok, result.error
    return worker


async def test_colorblob_box_comes_back_exact(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "plugins" / "colorblob"))
    result = await run_plugin_sandboxed(worker, Process([square_frame()]))
    assert result.ok and result.execution_time_ms > 0
    assert result.result == [{"tracks": [{"id": 1, "box": [200.0, 100.0, 260.0, 150.0], "score": 1.0, "label": "red"}]}]


async def test_one_call_carries_a_batch_from_several_sessions_in_order(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "plugins" / "colorblob"))
    frames = [square_frame("a", 0, (0, 0)), square_frame("b", 0, (200, 300)), square_frame("a", 1, (5, 5))]
    result = await run_plugin_sandboxed(worker, Process(frames))
    assert result.ok
    boxes = [r["tracks"][0]["box"] for r in result.result]
    assert boxes == [[0.0, 0.0, 60.0, 50.0], [300.0, 200.0, 360.0, 250.0], [5.0, 5.0, 65.0, 55.0]]
    # Per-session state: session a keeps id 1 for its moved square; session b has its own id 1.
    assert [r["tracks"][0]["id"] for r in result.result] == [1, 1, 1]


async def test_frames_arrive_as_read_only_views_of_shared_memory(tmp_path: Path, workers: PluginFactory) -> None:
    folder = write_plugin(
        tmp_path / "inspect",
        """
        import mmap
        class Plugin:
            def __init__(self, device, config):
                pass
            def process(self, batch):
                out = []
                for frame in batch:
                    try:
                        frame.image[0, 0, 0] = 1
                        wrote = True
                    except ValueError:
                        wrote = False
                    owner = frame.image
                    while getattr(owner, "base", None) is not None:
                        owner = owner.base
                    out.append({"tracks": [], "extra": {
                        "wrote": wrote,
                        "shared": isinstance(getattr(owner, "obj", owner), mmap.mmap),
                        "sum": int(frame.image.sum()), "shape": list(frame.image.shape),
                        "session": frame.session_id, "index": frame.index, "pts": frame.pts,
                        "options": frame.options}})
                return out
        """,
    )
    worker = await loaded(workers(folder))
    image = np.full((48, 64, 3), 2, np.uint8)
    result = await run_plugin_sandboxed(worker, Process([Frame("s9", 4, 1234, image, {"min_score": 0.5})]))
    assert result.ok, result.error
    assert result.result[0]["extra"] == {
        "wrote": False,
        "shared": True,
        "sum": int(image.sum()),
        "shape": [48, 64, 3],
        "session": "s9",
        "index": 4,
        "pts": 1234,
        "options": {"min_score": 0.5},
    }
    # A larger frame replaces the slot; the worker must read the new one.
    big = np.full((96, 128, 3), 3, np.uint8)
    result = await run_plugin_sandboxed(worker, Process([Frame("s9", 5, 0, big)]))
    assert result.ok and result.result[0]["extra"]["sum"] == int(big.sum())


async def test_a_segfault_is_seen_at_once_with_the_signal_named(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "tests" / "fixtures" / "plugins" / "segfault"))
    started = time.monotonic()
    result = await run_plugin_sandboxed(worker, Process([square_frame("s1", 17)]))
    assert time.monotonic() - started < 0.9  # far below the 1000 ms deadline: the sentinel, not a timeout
    assert not result.ok and result.error_type == "WorkerCrashed"
    assert result.error == (
        "WorkerCrashed: worker exited with signal SIGSEGV while processing frame 17 of session s1 "
        "(see the server log; restart with POST /v1/plugins/segfault/restart)"
    )
    assert not worker.alive


async def test_a_hung_frame_is_killed_at_its_deadline(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "tests" / "fixtures" / "plugins" / "hangs"))
    pid = worker.pid
    assert pid is not None
    result = await run_plugin_sandboxed(worker, Process([square_frame("s2", 812)]))
    assert result.error_type == "TimeoutError"
    assert result.error is not None and result.error.startswith(
        "TimeoutError: no answer within 300 ms while processing frame 812 of session s2; worker killed"
    )
    assert 300 <= result.execution_time_ms < 2000
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_worker_over_its_memory_limit_is_killed(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "tests" / "fixtures" / "plugins" / "memory_hog"))
    result = await run_plugin_sandboxed(worker, Process([square_frame()]))
    assert result.error_type == "MemoryError"
    assert result.error is not None and "over memory_limit_mb 300; worker killed" in result.error


@pytest.mark.parametrize(
    ("plugin", "error_type", "text"),
    [
        ("system_exit", "SystemExit", "SystemExit: 2 (frame 0 of session s)"),
        ("frame_raises", "ZeroDivisionError", "ZeroDivisionError: division by zero"),
        ("garbage_type", "ValueError", "process() must return a list, got str"),
        ("garbage_count", "ValueError", "returned 0 results for 1 frames"),
        ("garbage_nan", "ValueError", "is not finite (nan)"),
        ("os_exit", "WorkerCrashed", "worker exited with code 3"),
    ],
)
async def test_plugin_errors_become_results_never_exceptions(
    workers: PluginFactory, plugin: str, error_type: str, text: str
) -> None:
    worker = await loaded(workers(REPO / "tests" / "fixtures" / "plugins" / plugin))
    result = await run_plugin_sandboxed(worker, Process([square_frame()]))
    assert not result.ok and result.error_type == error_type
    assert result.error is not None and text in result.error


async def test_keyboard_interrupt_in_init_is_contained(tmp_path: Path, workers: PluginFactory) -> None:
    folder = write_plugin(
        tmp_path / "kbd",
        """
        class Plugin:
            def __init__(self, device, config):
                raise KeyboardInterrupt
        """,
    )
    result = await run_plugin_sandboxed(workers(folder), Load())
    assert not result.ok and result.error_type == "KeyboardInterrupt"


async def test_death_while_idle_is_reported_through_the_callback(tmp_path: Path, workers: PluginFactory) -> None:
    folder = write_plugin(
        tmp_path / "idle_crash",
        """
        import os, threading
        class Plugin:
            def __init__(self, device, config):
                threading.Timer(0.3, os._exit, (9,)).start()
            def process(self, batch):
                return [{"tracks": []} for _ in batch]
        """,
    )
    worker = await loaded(workers(folder))
    for _ in range(100):
        if worker.deaths:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.05)
    assert [d.error_type for d in worker.deaths] == ["WorkerCrashed"]  # type: ignore[attr-defined]
    assert "exited with code 9" in worker.deaths[0].what  # type: ignore[attr-defined]


async def test_gpu_policy_decides_the_device(workers: PluginFactory) -> None:
    folder = REPO / "tests" / "fixtures" / "plugins" / "requires_gpu"
    auto = await run_plugin_sandboxed(workers(folder, "auto"), Load())
    assert auto.ok and auto.result["device"] == "cpu" and "no usable CUDA GPU" in auto.result["degraded"]
    cpu = await run_plugin_sandboxed(workers(folder, "cpu"), Load())
    assert cpu.ok and cpu.result["device"] == "cpu" and "--gpu-policy cpu" in cpu.result["degraded"]
    require = await run_plugin_sandboxed(workers(folder, "require"), Load())
    assert not require.ok and require.fault is not None and require.fault.outcome.value == "unavailable"
    assert require.error == (
        "RuntimeError: requires a CUDA GPU but torch.cuda.is_available() is False "
        "(run on a GPU host, or start with --gpu-policy auto to run on CPU)"
    )


async def test_stop_is_idempotent_and_unlinks_every_segment(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "plugins" / "colorblob"))
    result = await run_plugin_sandboxed(worker, Process([square_frame("a"), square_frame("b")]))
    assert result.ok
    names = worker._slots.names
    assert len(names) == 2 and all(Path("/dev/shm", n).exists() for n in names)
    assert (await run_plugin_sandboxed(worker, EndSession("a"))).ok
    await asyncio.gather(worker.stop(), worker.stop())
    await worker.stop()
    assert not any(Path("/dev/shm", n).exists() for n in names)
    after = await run_plugin_sandboxed(worker, Process([square_frame()]))
    assert not after.ok


async def test_a_cancelled_stop_still_ends_the_worker_and_a_second_stop_waits_for_it(workers: PluginFactory) -> None:
    worker = await loaded(workers(REPO / "plugins" / "colorblob"))
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it cannot read "stop": the server must kill it after STOP_TIMEOUT_S
    first = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    started = time.monotonic()
    await worker.stop()  # the same stop, still under way, not a second one
    assert time.monotonic() - started < STOP_TIMEOUT_S + 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not worker.alive and worker.deaths == []  # type: ignore[attr-defined]
