"""The videotracker on CUDA: where it runs under each policy, and that CUDA finds what the CPU finds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.runtime.errors import PluginFault
from app.runtime.frames import Frame
from app.runtime.manifest import read_manifest
from app.runtime.sandbox import EndSession, Load, PluginWorker, Process, run_plugin_sandboxed
from tests.conftest import LiveServer
from tests.gpu.helpers import SHIPPED_PLUGINS, needs_cuda, plugin_folder, tracking_sequences

pytestmark = [pytest.mark.gpu, needs_cuda()]

BOX_TOLERANCE_PX = 2.0
FRAMES = 16


@pytest.mark.parametrize("policy", ["auto", "require"])
def test_videotracker_is_initialized_on_cuda(serve: Callable[..., LiveServer], tmp_path: Path, policy: str) -> None:
    server = serve(plugins_dirs=(plugin_folder(tmp_path, "videotracker"),), gpu_policy=policy)
    health = server.wait_state("videotracker", "INITIALIZED", "FAILED", "UNAVAILABLE", timeout=180)
    assert (health["state"], health["device"], health["degraded"]) == ("INITIALIZED", "cuda", None), health


async def tracks_on(policy: str, images: list[np.ndarray]) -> list[list[dict[str, Any]]]:
    """The videotracker's tracks for `images` (one session, one frame per call) in a real worker."""
    deaths: list[PluginFault] = []
    worker = PluginWorker(read_manifest(SHIPPED_PLUGINS / "videotracker"), policy, deaths.append, "WARNING")
    try:
        loaded = await run_plugin_sandboxed(worker, Load())
        assert loaded.ok, loaded.error
        assert loaded.result["device"] == ("cpu" if policy == "cpu" else "cuda")
        found = []
        for index, image in enumerate(images):
            result = await run_plugin_sandboxed(worker, Process([Frame("match", index, index * 3000, image)]))
            assert result.ok, result.error
            found.append(result.result[0]["tracks"])
        await run_plugin_sandboxed(worker, EndSession("match"))
        return found
    finally:
        await worker.stop()


async def test_cuda_tracks_match_cpu_tracks_on_the_same_frames() -> None:
    path = tracking_sequences.build("zigzag", 640, 480, FRAMES)
    images = [path.render(index).image for index in range(FRAMES)]
    on_cuda = await tracks_on("require", images)
    on_cpu = await tracks_on("cpu", images)
    assert sum(len(tracks) for tracks in on_cpu) >= FRAMES // 2, "the CPU run found too few faces to compare"
    for index, (cuda_tracks, cpu_tracks) in enumerate(zip(on_cuda, on_cpu, strict=True)):
        assert len(cuda_tracks) == len(cpu_tracks), f"frame {index}: {cuda_tracks} on CUDA, {cpu_tracks} on CPU"
        for cuda_track, cpu_track in zip(cuda_tracks, cpu_tracks, strict=True):
            gap = np.abs(np.array(cuda_track["box"]) - np.array(cpu_track["box"])).max()
            assert gap <= BOX_TOLERANCE_PX, f"frame {index}: boxes {gap:.2f} px apart: {cuda_track} vs {cpu_track}"
