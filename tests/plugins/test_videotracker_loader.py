"""The videotracker through the real loader: why it is UNAVAILABLE, and where it runs (issue 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from app.runtime.runtime import PluginRuntime
from tests.gpu.helpers import cuda_missing
from tests.helpers import REASON

REPO = Path(__file__).resolve().parents[2]
VIDEOTRACKER = REPO / "plugins" / "videotracker"


async def load(plugins_dir: Path, gpu_policy: str) -> dict[str, Any]:
    runtime = PluginRuntime([plugins_dir], gpu_policy, "WARNING")
    runtime.start()
    try:
        await runtime.wait_settled(240)
        return runtime.registry.get("videotracker").health()
    finally:
        await runtime.close()


def copy_with_manifest(tmp_path: Path, change: dict[str, Any]) -> Path:
    target = tmp_path / "plugins" / "videotracker"
    shutil.copytree(VIDEOTRACKER, target, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(change)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target.parent


async def test_a_missing_weight_file_makes_it_unavailable(tmp_path: Path) -> None:
    manifest = json.loads((VIDEOTRACKER / "manifest.json").read_text())
    models = {**manifest["models"], "onet": {"path": "pkg:facenet_pytorch/data/onet-missing.pt"}}
    health = await load(copy_with_manifest(tmp_path, {"models": models}), "auto")
    assert health["state"] == "UNAVAILABLE"
    assert health["reason"].startswith(
        "FileNotFoundError: model file 'pkg:facenet_pytorch/data/onet-missing.pt' not found (place it at "
    )
    assert REASON.match(health["reason"])


async def test_a_weight_file_with_the_wrong_sha256_makes_it_unavailable(tmp_path: Path) -> None:
    manifest = json.loads((VIDEOTRACKER / "manifest.json").read_text())
    models = {**manifest["models"], "pnet": {**manifest["models"]["pnet"], "sha256": "0" * 64}}
    health = await load(copy_with_manifest(tmp_path, {"models": models}), "auto")
    assert health["state"] == "UNAVAILABLE" and "does not match its sha256" in health["reason"]


def test_without_facenet_pytorch_it_is_unavailable_with_the_install_command(tmp_path: Path) -> None:
    # A real environment without the package: every installed distribution but facenet-pytorch.
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site"
    farm.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith("facenet_pytorch"):
            (farm / entry.name).symlink_to(entry)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{farm}"}
    result = subprocess.run(
        [sys.executable, "-S", "scripts/audit_plugins.py", "--plugins-dir", str(REPO / "plugins"), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    health = {row["name"]: row for row in json.loads(result.stdout)}["videotracker"]
    assert health["state"] == "UNAVAILABLE"
    assert health["reason"] == (
        "ImportError: No module named 'facenet_pytorch' (install with: pip install facenet-pytorch==2.5.3)"
    )


@pytest.mark.skipif(cuda_missing() is None, reason="this machine has a CUDA GPU")
async def test_require_on_a_cpu_machine_is_unavailable_with_the_cuda_reason() -> None:
    health = await load(REPO / "plugins", "require")
    assert health["state"] == "UNAVAILABLE"
    assert health["reason"] == (
        "RuntimeError: requires a CUDA GPU but torch.cuda.is_available() is False "
        "(run on a GPU host, or start with --gpu-policy auto to run on CPU)"
    )


@pytest.mark.skipif(cuda_missing() is None, reason="this machine has a CUDA GPU")
async def test_auto_on_a_cpu_machine_runs_on_cpu_degraded() -> None:
    health = await load(REPO / "plugins", "auto")
    assert health["state"] == "INITIALIZED"
    assert health["device"] == "cpu"
    assert health["degraded"] is not None and "running on CPU" in health["degraded"]
