"""manifest.json validation (DESIGN 3.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.runtime.manifest import ManifestError, parse_manifest, read_manifest

VALID: dict[str, Any] = {"name": "p", "version": "1.0.0", "entrypoint": "plugin:P"}


def test_defaults_fill_what_the_manifest_leaves_out(tmp_path: Path) -> None:
    manifest = parse_manifest(VALID, tmp_path)
    assert (manifest.timeout_ms, manifest.memory_limit_mb, manifest.requires_gpu) == (1000, 4096, False)
    assert (manifest.module, manifest.class_name) == ("plugin", "P")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "'name'"),
        ({"name": "x" * 65}, "'name'"),
        ({"name": 3}, "'name' must be"),
        ({"entrypoint": "plugin"}, "module:Class"),
        ({"version": 1}, "'version' must be"),
        ({"timeout_ms": 0}, "'timeout_ms'"),
        ({"timeout_ms": True}, "'timeout_ms'"),
        ({"memory_limit_mb": "lots"}, "'memory_limit_mb'"),
        ({"requires_gpu": "yes"}, "'requires_gpu'"),
        ({"dependencies": "torch"}, "'dependencies'"),
        ({"dependencies": ["torch=="]}, "not a valid requirement"),
        ({"models": {"m": {"sha256": "0" * 64}}}, 'needs a "path"'),
        ({"models": {"m": {"path": "m.pt", "sha256": "xyz"}}}, "sha256"),
        ({"config": []}, "'config'"),
    ],
)
def test_invalid_fields_are_named_in_the_error(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest({**VALID, **change}, tmp_path)


@pytest.mark.parametrize("missing", ["name", "version", "entrypoint"])
def test_required_fields(tmp_path: Path, missing: str) -> None:
    data = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(ManifestError, match=f"'{missing}' is missing"):
        parse_manifest(data, tmp_path)


def test_unreadable_and_non_json_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**VALID, "description": "x" * 300_000}))
    with pytest.raises(ManifestError, match="larger than"):
        read_manifest(tmp_path)


def test_models_accept_a_bare_path_or_an_object(tmp_path: Path) -> None:
    manifest = parse_manifest(
        {**VALID, "models": {"a": "a.pt", "b": {"path": "pkg:x/b.pt", "sha256": "a" * 64}}}, tmp_path
    )
    assert [(m.key, m.path, m.sha256) for m in manifest.models] == [("a", "a.pt", None), ("b", "pkg:x/b.pt", "a" * 64)]
