"""Checks that a plugin can run here, without importing any of its packages.

Distributions are looked up with importlib.metadata and compared with packaging;
model files are checked on disk. The GPU is checked inside the worker, the one
process allowed to initialise CUDA.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from packaging.requirements import Requirement

from app.runtime.errors import Outcome, PluginFault
from app.runtime.manifest import Manifest, ModelFile


def check_dependency(requirement_text: str) -> PluginFault | None:
    requirement = Requirement(requirement_text)
    install = f"install with: pip install {requirement_text}"
    if requirement.marker is not None and not requirement.marker.evaluate():
        return None
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        module = requirement.name.replace("-", "_").lower()
        return PluginFault("ImportError", f"No module named '{module}'", install, Outcome.UNAVAILABLE)
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return PluginFault(
            "ImportError",
            f"{requirement.name} {installed} is installed but {requirement_text} is required",
            install,
            Outcome.UNAVAILABLE,
        )
    return None


def resolve_model_path(model: ModelFile, plugin_folder: Path) -> Path | None:
    """The file a model entry points at; None when its package is not installed."""
    if model.path.startswith("pkg:"):
        package, _, inner = model.path[4:].partition("/")
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / inner
    return plugin_folder / model.path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model(model: ModelFile, plugin_folder: Path) -> PluginFault | None:
    path = resolve_model_path(model, plugin_folder)
    if path is None:
        package = model.path[4:].partition("/")[0]
        return PluginFault(
            "FileNotFoundError",
            f"model file '{model.path}' not found: package '{package}' is not installed",
            f"install the package that ships it, e.g. pip install {package}",
            Outcome.UNAVAILABLE,
        )
    place = f"place it at {path}"
    if not path.is_file():
        return PluginFault("FileNotFoundError", f"model file '{model.path}' not found", place, Outcome.UNAVAILABLE)
    if path.stat().st_size == 0:
        return PluginFault("FileNotFoundError", f"model file '{model.path}' is empty", place, Outcome.UNAVAILABLE)
    if model.sha256 is not None and _sha256(path) != model.sha256:
        return PluginFault(
            "FileNotFoundError",
            f"model file '{model.path}' does not match its sha256 {model.sha256[:12]}...",
            f"replace it with the right file or fix the sha256 in manifest.json; {place}",
            Outcome.UNAVAILABLE,
        )
    return None


def check_plugin(manifest: Manifest) -> PluginFault | None:
    """The first reason this plugin cannot run here, or None."""
    for requirement in manifest.dependencies:
        fault = check_dependency(requirement)
        if fault is not None:
            return fault
    for model in manifest.models:
        fault = check_model(model, manifest.folder)
        if fault is not None:
            return fault
    return None
