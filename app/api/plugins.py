"""Plugin health and control routes (DESIGN 4.1)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.api.auth import require_admin
from app.api.errors import ApiError
from app.api.origins import origin_allowed
from app.runtime.frames import Frame
from app.runtime.runtime import PluginRuntime
from app.runtime.supervisor import PluginSupervisor
from app.stream.pixels import fit_image, scale_tracks_back

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096


# What a client waits before trying again when a plugin's single-image runs are all taken.
RUN_RETRY_AFTER_S = 1


class RunLimiter:
    """Counts the single-image runs in progress per plugin; past the limit a run is refused (429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        running = self._running.get(name, 0)
        if running >= self.limit:
            raise ApiError(
                429,
                "too_many_runs",
                f"plugin {name} is already running {running} single-image calls (--max-runs {self.limit}); "
                f"retry after {RUN_RETRY_AFTER_S} s",
                headers={"Retry-After": str(RUN_RETRY_AFTER_S)},
            )
        self._running[name] = running + 1
        try:
            yield
        finally:
            self._running[name] -= 1


def _runtime(request: Request) -> PluginRuntime:
    runtime: PluginRuntime = request.state.runtime
    return runtime


def _known(request: Request) -> str:
    name: str = request.path_params["name"]
    if name not in _runtime(request).registry:
        raise ApiError(404, "plugin_not_found", f"no plugin named {name[:100]!r}; GET /v1/plugins lists them")
    return name


async def list_plugins(request: Request) -> JSONResponse:
    return JSONResponse(_runtime(request).registry.list())


async def plugin_health(request: Request) -> JSONResponse:
    name = _known(request)
    return JSONResponse(_runtime(request).registry.get(name).health())


async def restart_plugin(request: Request) -> JSONResponse:
    require_admin(request, request.state.settings.admin_token)
    name = _known(request)
    runtime = _runtime(request)
    if not runtime.restart(name):
        raise ApiError(
            409,
            "restart_in_progress",
            f"plugin {name} is being loaded or restarted now; wait until GET /v1/plugins/{name}/health "
            "shows it out of LOADED, then ask again",
        )
    return JSONResponse(runtime.registry.get(name).health(), status_code=202)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body is {declared} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(data: bytes) -> np.ndarray:
    """JPEG or PNG bytes to an H x W x 3 RGB array; ApiError 400/413 for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise ApiError(400, "unsupported_image", f"expected a JPEG or PNG image, got {image.format}")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ApiError(413, "image_too_large", f"{width}x{height} is over {MAX_IMAGE_PIXELS} pixels")
            return np.ascontiguousarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ApiError(400, "invalid_image", f"the body is not a decodable JPEG or PNG image ({exc})") from None


def _usable_supervisor(runtime: PluginRuntime, name: str) -> PluginSupervisor:
    supervisor = runtime.supervisor(name)
    if supervisor is None or not supervisor.usable:
        record = runtime.registry.get(name)
        detail = f": {record.reason}" if record.reason else ""
        raise ApiError(409, "plugin_not_ready", f"plugin {name} is {record.state.value}{detail}")
    return supervisor


async def run_plugin(request: Request) -> JSONResponse:
    if not origin_allowed(request, request.state.settings):
        raise ApiError(403, "origin_not_allowed", "this Origin may not run plugins; see --allowed-origins")
    name = _known(request)
    limiter: RunLimiter = request.state.run_limiter
    with limiter.hold(name):
        return await _run_image(request, name)


async def _run_image(request: Request, name: str) -> JSONResponse:
    runtime = _runtime(request)
    _usable_supervisor(runtime, name)
    body = await _read_body(request, MAX_IMAGE_BYTES)
    if not body:
        raise ApiError(400, "invalid_image", "the body is empty; send image/jpeg or image/png bytes")
    image = await asyncio.to_thread(decode_image, body)
    # Like a stream's frames: over --max-resolution, the plugin sees it downscaled and the boxes come back scaled.
    image, scale = await asyncio.to_thread(fit_image, image, request.state.settings.max_resolution)
    supervisor = _usable_supervisor(runtime, name)
    frame = Frame(f"run-{secrets.token_hex(4)}", 0, 0, image)
    result = await supervisor.run_image(frame)
    if result.ok:
        tracks = scale_tracks_back(result.result["tracks"], scale)
        return JSONResponse({"tracks": tracks, "execution_time_ms": round(result.execution_time_ms, 3)})
    if result.error_type == "PluginNotReady":
        raise ApiError(409, "plugin_not_ready", result.error or "")
    if result.error_type == "TimeoutError":
        raise ApiError(504, "plugin_timeout", result.error or "")
    raise ApiError(502, "plugin_failed", result.error or "")


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/plugins", list_plugins, methods=["GET"]),
        Route("/v1/plugins/{name}/health", plugin_health, methods=["GET"]),
        Route("/v1/plugins/{name}/restart", restart_plugin, methods=["POST"]),
        Route("/v1/plugins/{name}/run", run_plugin, methods=["POST"]),
    ]
