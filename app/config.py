"""Settings from command-line flags, each also read from LIVETRACK_<NAME> (DESIGN 4.5)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
GPU_POLICIES = ("auto", "require", "cpu")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    plugins_dirs: tuple[Path, ...] = (DEFAULT_PLUGINS_DIR,)
    gpu_policy: str = "auto"
    admin_token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_sessions: int = 8
    max_runs: int = 4
    max_resolution: tuple[int, int] = (1920, 1080)
    session_idle_s: float = 30.0
    ice_servers: tuple[str, ...] = ()
    ice_addresses: tuple[str, ...] = ()
    log_level: str = "INFO"
    ray_address: str | None = None  # DESIGN 6: run plugins as Ray Serve deployments on this cluster


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _resolution(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}") from None
    if min(size) < 16:
        raise argparse.ArgumentTypeError(f"must be at least 16x16, got {text!r}")
    return size


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    def env(name: str, default: str | None = None) -> str | None:
        return environ.get(f"LIVETRACK_{name}", default)

    def env_number(name: str, default: str, convert: Callable[[str], T]) -> T:
        text = env(name, default) or default
        try:
            return convert(text)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise SystemExit(f"python -m app: error: LIVETRACK_{name}={text!r}: {exc}") from None

    def env_list(name: str) -> list[str] | None:
        value = env(name)
        return _split(value) if value else None

    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="livetrack: realtime video tracking over WebRTC. "
        "Every flag can also be set as LIVETRACK_<FLAG> (e.g. LIVETRACK_PORT=9000); "
        "repeatable flags take a comma-separated list there.",
    )
    add = parser.add_argument
    add("--host", default=env("HOST", "127.0.0.1"), help="address to listen on [LIVETRACK_HOST] (default 127.0.0.1)")
    add("--port", type=int, default=env_number("PORT", "8080", int), help="port [LIVETRACK_PORT] (default 8080)")
    add(
        "--plugins-dir",
        action="append",
        type=Path,
        dest="plugins_dirs",
        help="folder of plugin folders; repeatable, replaces the default plugins/ [LIVETRACK_PLUGINS_DIR]",
    )
    add(
        "--gpu-policy",
        choices=GPU_POLICIES,
        default=env("GPU_POLICY", "auto"),
        help="auto: CUDA when available, else CPU (degraded); require: no GPU means UNAVAILABLE; "
        "cpu: everything on CPU [LIVETRACK_GPU_POLICY] (default auto)",
    )
    add(
        "--admin-token",
        default=env("ADMIN_TOKEN"),
        help="bearer token for restart and session deletion [LIVETRACK_ADMIN_TOKEN]",
    )
    add(
        "--allowed-origins",
        action="append",
        help="browser Origins allowed for WebSocket and offer requests, repeatable "
        "(default: this server's origin, http(s)://localhost and 127.0.0.1 on any port) [LIVETRACK_ALLOWED_ORIGINS]",
    )
    add(
        "--max-sessions",
        type=_positive_int,
        default=env_number("MAX_SESSIONS", "8", _positive_int),
        help="open WebRTC sessions at most [LIVETRACK_MAX_SESSIONS] (default 8)",
    )
    add(
        "--max-runs",
        type=_positive_int,
        default=env_number("MAX_RUNS", "4", _positive_int),
        help="single-image runs (POST /v1/plugins/{name}/run) in progress per plugin at most; "
        "past it 429 with Retry-After [LIVETRACK_MAX_RUNS] (default 4)",
    )
    add(
        "--max-resolution",
        type=_resolution,
        default=env_number("MAX_RESOLUTION", "1920x1080", _resolution),
        help="largest frame a plugin gets (WIDTHxHEIGHT, either orientation); larger input is downscaled "
        "for the plugin and its boxes scaled back; shared memory is sized from it "
        "[LIVETRACK_MAX_RESOLUTION] (default 1920x1080)",
    )
    add(
        "--session-idle-s",
        type=_positive_float,
        default=env_number("SESSION_IDLE_S", "30", _positive_float),
        help="close a session after this many seconds without frames [LIVETRACK_SESSION_IDLE_S] (default 30)",
    )
    add(
        "--ice-server",
        action="append",
        dest="ice_servers",
        help="STUN/TURN URL, repeatable; turn://user:pass@host:port for credentials [LIVETRACK_ICE_SERVER]",
    )
    add(
        "--ice-address",
        action="append",
        dest="ice_addresses",
        help="host address offered as ICE candidate, repeatable (default: every interface) [LIVETRACK_ICE_ADDRESS]",
    )
    add(
        "--ray-address",
        default=env("RAY_ADDRESS"),
        help="run each plugin as the Ray Serve application livetrack-<plugin> on this Ray cluster "
        "(host:port of its head, or auto for one started on this host with ray start --head), "
        "shared with every server given the same address; needs the ray extra [LIVETRACK_RAY_ADDRESS] "
        "(default: local worker processes)",
    )
    add(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=(env("LOG_LEVEL", "INFO") or "INFO").upper(),
        help="[LIVETRACK_LOG_LEVEL] (default INFO)",
    )
    parser.set_defaults(
        plugins_dirs=None,
        allowed_origins=None,
        ice_servers=None,
        ice_addresses=None,
        _env_lists={
            "plugins_dirs": env_list("PLUGINS_DIR"),
            "allowed_origins": env_list("ALLOWED_ORIGINS"),
            "ice_servers": env_list("ICE_SERVER"),
            "ice_addresses": env_list("ICE_ADDRESS"),
        },
    )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    lists = args._env_lists
    if args.gpu_policy not in GPU_POLICIES:
        parser.error(f"LIVETRACK_GPU_POLICY must be one of {', '.join(GPU_POLICIES)}, got {args.gpu_policy!r}")
    if args.log_level not in LOG_LEVELS:
        parser.error(f"LIVETRACK_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {args.log_level!r}")

    def pick(name: str) -> list[str]:
        value = getattr(args, name)
        return list(value) if value is not None else list(lists[name] or [])

    plugins = [Path(p) for p in pick("plugins_dirs")] or [DEFAULT_PLUGINS_DIR]
    return Settings(
        host=args.host,
        port=args.port,
        plugins_dirs=tuple(plugins),
        gpu_policy=args.gpu_policy,
        admin_token=args.admin_token or None,
        allowed_origins=tuple(o for item in pick("allowed_origins") for o in _split(item)),
        max_sessions=args.max_sessions,
        max_runs=args.max_runs,
        max_resolution=args.max_resolution,
        session_idle_s=args.session_idle_s,
        ice_servers=tuple(pick("ice_servers")),
        ice_addresses=tuple(pick("ice_addresses")),
        log_level=args.log_level,
        ray_address=args.ray_address or None,
    )
