"""A CUDA out-of-memory error inside a plugin becomes a MemoryError reason naming the device memory cap
(DESIGN 3.5, 3.6). The allocator's error is raised by hand here, so this runs without a GPU; the real
allocation past the cap is tests/gpu/test_gpu_faults.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch

from app.runtime.frames import Frame
from app.runtime.manifest import read_manifest
from app.runtime.sandbox import Load, PluginWorker, Process, run_plugin_sandboxed
from app.runtime.worker import cuda_out_of_memory_fault
from tests.helpers import REASON

TORCH_MESSAGE = (
    "CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of 79.19 GiB of which "
    "75.10 GiB is free. Of the allocated memory 3.00 GiB is allocated by PyTorch"
)


async def test_a_cuda_out_of_memory_error_from_a_frame_is_a_memory_error_naming_the_cap(tmp_path: Path) -> None:
    folder = tmp_path / "oom"
    folder.mkdir()
    manifest = {"name": "oom", "version": "1", "entrypoint": "plugin:Plugin", "memory_limit_mb": 2048}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "plugin.py").write_text(
        textwrap.dedent(
            f"""
            import torch

            class Plugin:
                def __init__(self, device, config):
                    pass

                def process(self, batch):
                    raise torch.OutOfMemoryError({TORCH_MESSAGE!r})
            """
        )
    )
    worker = PluginWorker(read_manifest(folder), "cpu", lambda fault: None)
    try:
        assert (await run_plugin_sandboxed(worker, Load())).ok
        image = torch.zeros((48, 64, 3), dtype=torch.uint8).numpy()
        result = await run_plugin_sandboxed(worker, Process([Frame("s1", 7, 0, image)]))
    finally:
        await worker.stop()
    assert not result.ok and result.error_type == "MemoryError"
    assert result.error is not None and REASON.match(result.error)
    assert result.error.startswith(
        "MemoryError: CUDA out of memory allocating 512.00 MiB (frame 7 of session s1), "
        "past the worker's device memory cap of 2048 MB (memory_limit_mb) or the GPU's free memory "
        "(raise memory_limit_mb in manifest.json or use less GPU memory per call; "
    )
    assert result.fault is not None and result.fault.traceback and "OutOfMemoryError" in result.fault.traceback


def test_other_errors_are_left_to_the_generic_reason() -> None:
    class OutOfMemoryError(Exception):  # a plugin's own error of the same name is not CUDA's
        pass

    assert cuda_out_of_memory_fault(OutOfMemoryError("x"), 2048, "fix it") is None
    assert cuda_out_of_memory_fault(RuntimeError("CUDA out of memory"), 2048, "fix it") is None
    fault = cuda_out_of_memory_fault(torch.OutOfMemoryError("CUDA out of memory."), 1024, "fix it")
    assert fault is not None and fault.reason == (
        "MemoryError: CUDA out of memory, past the worker's device memory cap of 1024 MB (memory_limit_mb) "
        "or the GPU's free memory (raise memory_limit_mb in manifest.json or use less GPU memory per call; fix it)"
    )
