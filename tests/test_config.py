"""Flags and LIVETRACK_* environment variables (DESIGN 4.5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import DEFAULT_PLUGINS_DIR, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    settings = load_settings([], {})
    assert settings == Settings()
    assert settings.plugins_dirs == (DEFAULT_PLUGINS_DIR,)
    assert (settings.host, settings.port, settings.max_sessions, settings.gpu_policy) == ("127.0.0.1", 8080, 8, "auto")


def test_flags_override_environment() -> None:
    env = {"LIVETRACK_PORT": "9000", "LIVETRACK_GPU_POLICY": "cpu", "LIVETRACK_MAX_SESSIONS": "3"}
    assert load_settings([], env).port == 9000
    settings = load_settings(["--port", "9100", "--gpu-policy", "require"], env)
    assert (settings.port, settings.gpu_policy, settings.max_sessions) == (9100, "require", 3)


def test_every_flag_reads_its_environment_variable() -> None:
    env = {
        "LIVETRACK_HOST": "0.0.0.0",
        "LIVETRACK_PORT": "8181",
        "LIVETRACK_PLUGINS_DIR": "/a,/b",
        "LIVETRACK_GPU_POLICY": "cpu",
        "LIVETRACK_ADMIN_TOKEN": "s3cret",
        "LIVETRACK_ALLOWED_ORIGINS": "https://a.example,https://b.example",
        "LIVETRACK_MAX_SESSIONS": "2",
        "LIVETRACK_SESSION_IDLE_S": "5",
        "LIVETRACK_ICE_SERVER": "stun:stun.example:3478",
        "LIVETRACK_ICE_ADDRESS": "127.0.0.1",
        "LIVETRACK_LOG_LEVEL": "debug",
        "LIVETRACK_RAY_ADDRESS": "auto",
    }
    settings = load_settings([], env)
    assert settings == Settings(
        host="0.0.0.0",
        port=8181,
        plugins_dirs=(Path("/a"), Path("/b")),
        gpu_policy="cpu",
        admin_token="s3cret",
        allowed_origins=("https://a.example", "https://b.example"),
        max_sessions=2,
        session_idle_s=5.0,
        ice_servers=("stun:stun.example:3478",),
        ice_addresses=("127.0.0.1",),
        log_level="DEBUG",
        ray_address="auto",
    )


def test_repeatable_flags_replace_the_default_plugins_dir() -> None:
    settings = load_settings(["--plugins-dir", "x", "--plugins-dir", "y", "--ice-address", "127.0.0.1"], {})
    assert settings.plugins_dirs == (Path("x"), Path("y"))
    assert settings.ice_addresses == ("127.0.0.1",)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--max-sessions", "0"], {}),
        (["--gpu-policy", "gpu"], {}),
        ([], {"LIVETRACK_PORT": "eighty"}),
        ([], {"LIVETRACK_GPU_POLICY": "fast"}),
        ([], {"LIVETRACK_SESSION_IDLE_S": "-1"}),
    ],
)
def test_bad_values_exit_with_a_usage_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(argv, env)
    assert exited.value.code != 0


def test_help_lists_every_flag() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "app", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--host", "--port", "--plugins-dir", "--gpu-policy", "--admin-token", "--allowed-origins",
        "--max-sessions", "--max-runs", "--max-resolution",
        "--session-idle-s", "--ice-server", "--ice-address", "--log-level",
    ):  # fmt: skip
        assert flag in output
    assert "LIVETRACK_" in output


def test_ray_address_flag_and_its_default() -> None:
    assert load_settings([], {}).ray_address is None
    assert load_settings(["--ray-address", "127.0.0.1:6379"], {}).ray_address == "127.0.0.1:6379"


def test_a_server_without_ray_address_never_imports_ray(tmp_path: Path) -> None:
    """The whole startup, a plugin load and shutdown, in a fresh interpreter: Ray stays out of it."""
    script = """
import asyncio, sys
from app.runtime.runtime import PluginRuntime
from app.config import DEFAULT_PLUGINS_DIR

async def main():
    runtime = PluginRuntime([DEFAULT_PLUGINS_DIR], "cpu")
    runtime.start()
    await runtime.wait_settled(60)
    health = runtime.registry.get("colorblob").health()
    await runtime.close()
    return health

health = asyncio.run(main())
assert health["state"] == "INITIALIZED" and health["backend"] == "process", health
print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
