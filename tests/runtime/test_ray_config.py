"""The manifest's optional "ray" block (app/runtime/ray_config.py); no Ray needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.runtime.manifest import ManifestError, read_manifest
from app.runtime.ray_config import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_BATCH_SIZE,
    RayConfig,
    parse_ray_config,
    read_ray_config,
)


def test_no_block_means_the_documented_defaults() -> None:
    config = parse_ray_config(None)
    assert config == RayConfig()
    assert (config.max_batch_size, config.batch_wait_timeout_ms) == (DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_WAIT_MS)
    assert (config.num_replicas, config.autoscaling, config.keep_deployed) == (1, None, False)


def test_every_key_is_read() -> None:
    raw = {
        "max_batch_size": 32,
        "batch_wait_timeout_ms": 12.5,
        "num_replicas": 3,
        "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
        "num_cpus": 0.5,
        "num_gpus": 0.25,
        "keep_deployed": True,
    }
    config = parse_ray_config(raw)
    assert config == RayConfig(
        32, 12.5, 3, {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}, 0.5, 0.25, True
    )


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ([], "'ray' must be an object"),
        ({"max_batch_size": 0}, "'max_batch_size'"),
        ({"max_batch_size": 2.5}, "'max_batch_size'"),
        ({"max_batch_size": True}, "'max_batch_size'"),
        ({"batch_wait_timeout_ms": -1}, "'batch_wait_timeout_ms'"),
        ({"num_replicas": 65}, "'num_replicas'"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "min_replicas 3 is above max_replicas 2"),
        ({"autoscaling": {"replicas": 2}}, "'autoscaling' must be an object with only"),
        ({"keep_deployed": "yes"}, "'keep_deployed'"),
    ],
)
def test_bad_values_name_the_key(raw: object, names: str) -> None:
    with pytest.raises(ManifestError, match=names.replace("(", r"\(")):
        parse_ray_config(raw)


def test_read_from_the_manifest_file_with_its_bytes(tmp_path: Path) -> None:
    manifest = {"name": "p", "version": "1", "entrypoint": "plugin:P", "ray": {"max_batch_size": 4}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    config, raw = read_ray_config(read_manifest(tmp_path))
    assert config.max_batch_size == 4 and raw == (tmp_path / "manifest.json").read_bytes()
