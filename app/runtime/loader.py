"""Finds plugin folders (`<dir>/*/manifest.json`) and reads their manifests."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.runtime.manifest import MANIFEST_FILE, Manifest, ManifestError, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    """A folder whose manifest is invalid: listed under the folder's name, FAILED."""

    name: str
    folder: Path
    error: ManifestError


def is_plugin_folder(path: Path) -> bool:
    """A folder with a manifest, or one that looks meant to be a plugin but lacks it.

    A forgotten manifest.json must show up as a FAILED plugin, not vanish; hidden and
    private folders (`.git`, `__pycache__`) are not plugins.
    """
    if not path.is_dir() or path.name.startswith((".", "_")):
        return False
    return (path / MANIFEST_FILE).is_file() or any(path.glob("*.py"))


def discover(plugin_dirs: Iterable[Path]) -> list[Manifest | BrokenPlugin]:
    """Every plugin folder, in order; a name claimed twice keeps its first folder."""
    found: list[Manifest | BrokenPlugin] = []
    claimed: dict[str, Path] = {}
    for plugin_dir in plugin_dirs:
        if not plugin_dir.is_dir():
            logger.error("plugins dir %s does not exist or is not a folder", plugin_dir)
            continue
        for folder in sorted(p for p in plugin_dir.iterdir() if is_plugin_folder(p)):
            plugin: Manifest | BrokenPlugin
            try:
                plugin = read_manifest(folder)
            except ManifestError as exc:
                plugin = BrokenPlugin(folder.name, folder, exc)
            if plugin.name in claimed:
                logger.error(
                    "plugin name %r is claimed by both %s and %s; only the first is registered",
                    plugin.name,
                    claimed[plugin.name],
                    folder,
                )
                continue
            claimed[plugin.name] = folder
            found.append(plugin)
    return found
