"""What the GPU tests share: the CUDA probe that skips them, plugin folders, CUDA holders, a face stream."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.stream.helpers import Clients, _load_script, client

REPO = Path(__file__).resolve().parents[2]
GPU_PLUGINS = REPO / "tests" / "gpu" / "plugins"
SHIPPED_PLUGINS = REPO / "plugins"

tracking_sequences = _load_script("tracking_sequences")

# Asked in a child so that the test process (which hosts the server) never initialises CUDA.
_PROBE = """
import json
try:
    import torch
    ok = torch.cuda.is_available()
    why = "" if ok else "torch.cuda.is_available() is False"
except Exception as exc:
    ok, why = False, f"CUDA failed to initialise ({exc})"
print(json.dumps({"ok": ok, "why": why}))
"""


@functools.cache
def cuda_missing() -> str | None:
    """None on a CUDA host, else why the GPU tests cannot run here."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
        probe = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return f"the CUDA probe failed ({exc!r})"
    return None if probe["ok"] else str(probe["why"])


def needs_cuda() -> pytest.MarkDecorator:
    """Skip unless this machine has a usable CUDA GPU, saying why and where the tests do run."""
    why = cuda_missing()
    return pytest.mark.skipif(
        why is not None, reason=f"needs a CUDA GPU: {why} (these run on a CUDA host with: make gpu-check)"
    )


def plugin_folder(tmp_path: Path, source: str, name: str | None = None, **config: Any) -> Path:
    """A copy of plugins/<source> or tests/gpu/plugins/<source> under tmp_path/plugins, renamed
    `name` and with `config` merged into its manifest's config."""
    origin = next(base / source for base in (SHIPPED_PLUGINS, GPU_PLUGINS) if (base / source).is_dir())
    name = name or source
    target = tmp_path / "plugins" / name
    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["name"] = name
    manifest["config"] = {**manifest.get("config", {}), **config}
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target.parent


def holds_cuda(pid: int) -> bool:
    """Whether process `pid` has initialised CUDA: the driver opens /dev/nvidia* and maps libcuda.

    Read from /proc, which works inside containers where nvidia-smi lists no processes.
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd).startswith("/dev/nvidia"):
                return True
        except OSError:
            continue  # closed while we looked
    return "libcuda.so" in Path(f"/proc/{pid}/maps").read_text()


async def stream_face(clients: Clients, url: str, plugin: str, sequence: str = "zigzag", fps: float = 30.0) -> Any:
    """A headless client streaming a moving face (640x480) to `plugin`; closed with `clients`."""
    path = tracking_sequences.build(sequence, 640, 480, 120)
    images = [path.render(index).image for index in range(len(path))]
    source = client.StampedTrack(lambda n: images[n % len(images)].copy(), fps)
    stream = client.StreamClient(url, plugin, source)
    clients.opened.append(stream)
    await stream.start()
    return stream
