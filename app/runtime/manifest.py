"""manifest.json: reading and validation (DESIGN 3.1)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from app.runtime.options_schema import check_schema

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
ENTRYPOINT_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_BYTES = 256 * 1024
DEFAULT_TIMEOUT_MS = 1000
DEFAULT_LOAD_TIMEOUT_MS = 120_000
DEFAULT_MEMORY_LIMIT_MB = 4096


class ManifestError(ValueError):
    """The manifest is unreadable or breaks the contract; the message says which field and why."""


@dataclass(frozen=True)
class ModelFile:
    key: str
    path: str
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    entrypoint: str
    folder: Path
    description: str = ""
    requires_gpu: bool = False
    dependencies: tuple[str, ...] = ()
    models: tuple[ModelFile, ...] = ()
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    load_timeout_ms: int = DEFAULT_LOAD_TIMEOUT_MS
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    config: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] | None = None  # JSON Schema of the client options (options_schema.py)

    @property
    def module(self) -> str:
        return self.entrypoint.split(":", 1)[0]

    @property
    def class_name(self) -> str:
        return self.entrypoint.split(":", 1)[1]


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in data:
        raise ManifestError(f"'{key}' is missing (add {what})")
    value = data[key]
    # bool is an int in Python; a manifest that says "timeout_ms": true is still wrong.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise ManifestError(f"'{key}' must be {what}, got {json.dumps(value)[:80]}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _optional(data: dict[str, Any], key: str, kind: type, what: str, default: Any) -> Any:
    return _require(data, key, kind, what) if key in data else default


def _positive_int(data: dict[str, Any], key: str, default: int, upper: int) -> int:
    value: int = _optional(data, key, int, f"a whole number from 1 to {upper}", default)
    if not 1 <= value <= upper:
        raise ManifestError(f"'{key}' must be a whole number from 1 to {upper}, got {value}")
    return value


def _models(raw: Any) -> tuple[ModelFile, ...]:
    if not isinstance(raw, dict):
        raise ManifestError('\'models\' must be an object of name -> {"path", "sha256"}')
    models = []
    for key, spec in raw.items():
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"]:
            raise ManifestError(f"model '{key}' needs a \"path\" string")
        digest = spec.get("sha256")
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ManifestError(f"model '{key}': sha256 must be 64 lowercase hex digits")
        models.append(ModelFile(key, spec["path"], digest))
    return tuple(models)


def _dependencies(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ManifestError("'dependencies' must be a list of pip requirement strings")
    for item in raw:
        try:
            Requirement(item)
        except InvalidRequirement as exc:
            raise ManifestError(f"dependency {item!r} is not a valid requirement ({exc})") from None
    return tuple(raw)


def parse_manifest(data: Any, folder: Path) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("the manifest must be a JSON object")
    name = _require(data, "name", str, "a name matching [a-z][a-z0-9_-]{0,63}")
    if not NAME_PATTERN.fullmatch(name):
        raise ManifestError(f"'name' {name[:80]!r} does not match [a-z][a-z0-9_-]{{0,63}}")
    entrypoint = _require(data, "entrypoint", str, '"module:Class"')
    if not ENTRYPOINT_PATTERN.fullmatch(entrypoint):
        raise ManifestError(f"'entrypoint' {entrypoint[:80]!r} must look like \"module:Class\"")
    config = _optional(data, "config", dict, "an object", {})
    try:
        options = check_schema(data["options"]) if "options" in data else None
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    return Manifest(
        name=name,
        version=_require(data, "version", str, 'a version string such as "1.0.0"'),
        entrypoint=entrypoint,
        folder=folder,
        description=_optional(data, "description", str, "a string", ""),
        requires_gpu=_optional(data, "requires_gpu", bool, "true or false", False),
        dependencies=_dependencies(data.get("dependencies", [])),
        models=_models(data.get("models", {})),
        timeout_ms=_positive_int(data, "timeout_ms", DEFAULT_TIMEOUT_MS, 600_000),
        load_timeout_ms=_positive_int(data, "load_timeout_ms", DEFAULT_LOAD_TIMEOUT_MS, 3_600_000),
        memory_limit_mb=_positive_int(data, "memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB, 1_048_576),
        config=config,
        options=options,
    )


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_FILE
    try:
        raw = path.read_bytes()[: MAX_MANIFEST_BYTES + 1]
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES // 1024} KB")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_FILE} is not valid JSON ({exc})") from None
    return parse_manifest(data, folder)
