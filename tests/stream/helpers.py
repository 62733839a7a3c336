"""Shared helpers for the stream tests: plugin folders, the headless client, async HTTP."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Shipped plugins, this suite's own (tests/stream/plugins), and the broken-plugin zoo.
PLUGIN_SOURCES = (REPO / "plugins", REPO / "tests" / "stream" / "plugins", REPO / "tests" / "fixtures" / "plugins")


def _load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (scripts/ is not a package; the tests drive the real client)."""
    module_name = f"livetrack_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


client = _load_script("client")


def plugins_dir(folder: Path, *names: str) -> Path:
    """`folder`/plugins linking to just the named plugins, so a server starts only their workers."""
    target = folder / "plugins"
    target.mkdir()
    for name in names:
        source = next((base / name for base in PLUGIN_SOURCES if (base / name / "manifest.json").is_file()), None)
        assert source is not None, f"no plugin folder named {name}"
        (target / name).symlink_to(source)
    return target


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.json()


BOX_TOLERANCE = 60  # colour distance that still counts as the drawn box after VP8


def box_pixels(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Mask of the pixels of an RGB image within BOX_TOLERANCE of `colour` on every channel."""
    mask: np.ndarray = np.abs(image.astype(np.int16) - np.array(colour, np.int16)).max(axis=2) <= BOX_TOLERANCE
    return mask


class Clients:
    """Headless clients opened by one test, all closed at its end."""

    def __init__(self) -> None:
        self.opened: list[Any] = []

    async def connect(
        self,
        url: str,
        plugin: str,
        options: dict[str, Any] | None = None,
        *,
        fps: float = 30.0,
        size: tuple[int, int] = (640, 480),
        keep_frames: int = 0,
    ) -> Any:
        source = client.StampedTrack(client.pattern(*size), fps)
        stream = client.StreamClient(url, plugin, source, options, keep_frames=keep_frames)
        self.opened.append(stream)
        await stream.start()
        return stream

    async def close(self) -> None:
        for stream in self.opened:
            await stream.close()
