"""The manifest's optional "ray" block (DESIGN 6): how a plugin runs as a Ray Serve deployment.

    "ray": {
      "max_batch_size": 8,          frames from every server handed to process() at once (1..256)
      "batch_wait_timeout_ms": 5,   how long a replica waits for a batch to fill (0..1000)
      "num_replicas": 1,            fixed replica count (1..64), unless "autoscaling" is given
      "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
      "num_cpus": 1,                CPUs reserved per replica (0..64)
      "num_gpus": 1,                GPUs per replica when the plugin runs on a GPU (0..8)
      "keep_deployed": false        leave the application running when the last server stops
    }

Read from manifest.json itself, so this module adds nothing to the local backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.runtime.manifest import MANIFEST_FILE, Manifest, ManifestError

DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_MS = 5
AUTOSCALING_KEYS = ("min_replicas", "max_replicas", "target_ongoing_requests")


@dataclass(frozen=True)
class RayConfig:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_timeout_ms: float = DEFAULT_BATCH_WAIT_MS
    num_replicas: int = 1
    autoscaling: dict[str, float] | None = None
    num_cpus: float = 1.0
    num_gpus: float = 1.0
    keep_deployed: bool = False


def _number(block: dict[str, Any], key: str, low: float, high: float, default: float, *, whole: bool = False) -> Any:
    value = block.get(key, default)
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise ManifestError(f"'ray'.'{key}' must be {kind} from {low:g} to {high:g}, got {json.dumps(value)[:40]}")
    return value


def _autoscaling(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - set(AUTOSCALING_KEYS):
        raise ManifestError(f"'ray'.'autoscaling' must be an object with only {', '.join(AUTOSCALING_KEYS)}")
    low = _number(raw, "min_replicas", 0, 64, 1, whole=True)
    high = _number(raw, "max_replicas", 1, 64, max(1, low), whole=True)
    if low > high:
        raise ManifestError(f"'ray'.'autoscaling': min_replicas {low} is above max_replicas {high}")
    target = _number(raw, "target_ongoing_requests", 1, 1024, DEFAULT_MAX_BATCH_SIZE)
    return {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": target}


def parse_ray_config(raw: Any) -> RayConfig:
    if raw is None:
        return RayConfig()
    if not isinstance(raw, dict):
        raise ManifestError("'ray' must be an object")
    keep = raw.get("keep_deployed", False)
    if not isinstance(keep, bool):
        raise ManifestError("'ray'.'keep_deployed' must be true or false")
    return RayConfig(
        max_batch_size=_number(raw, "max_batch_size", 1, 256, DEFAULT_MAX_BATCH_SIZE, whole=True),
        batch_wait_timeout_ms=_number(raw, "batch_wait_timeout_ms", 0, 1000, DEFAULT_BATCH_WAIT_MS),
        num_replicas=_number(raw, "num_replicas", 1, 64, 1, whole=True),
        autoscaling=_autoscaling(raw.get("autoscaling")),
        num_cpus=_number(raw, "num_cpus", 0, 64, 1),
        num_gpus=_number(raw, "num_gpus", 0, 8, 1),
        keep_deployed=keep,
    )


def read_ray_config(manifest: Manifest) -> tuple[RayConfig, bytes]:
    """The plugin's "ray" block and the manifest's bytes (what decides whether a deployment is current)."""
    path = manifest.folder / MANIFEST_FILE
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {path} ({exc})") from None
    return parse_ray_config(data.get("ray") if isinstance(data, dict) else None), raw
