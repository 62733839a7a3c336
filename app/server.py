"""Builds the Starlette app: routes, lifespan, static files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from app.api import health_ws, metrics, plugins, service, sessions, webrtc
from app.api.errors import EXCEPTION_HANDLERS
from app.api.plugins import RunLimiter
from app.config import Settings
from app.health.hub import HealthHub
from app.runtime import offload, shm
from app.runtime.runtime import PluginRuntime
from app.stream.sessions import SessionManager

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def build_routes() -> list[BaseRoute]:
    return [
        *service.routes(),
        *metrics.routes(),
        *plugins.routes(),
        *webrtc.routes(),
        *sessions.routes(),
        *health_ws.routes(),
        Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True, check_dir=False), name="static"),
    ]


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Pixel work and aiortc's encoders run in this pool, a thread per core.
        asyncio.get_running_loop().set_default_executor(offload.background_pool())
        offload.single_threaded_opencv()
        runtime = PluginRuntime(settings.plugins_dirs, settings.gpu_policy, settings.log_level, settings.ray_address)
        runtime.start()
        # One frame in flight per session, plus one single-image run per plugin.
        shm_problem = shm.shm_shortfall(settings.max_sessions + len(runtime.registry.names()), settings.max_resolution)
        if shm_problem is not None:
            logger.error("not ready: %s", shm_problem)
        logger.info("serving; %d plugins loading in the background", len(runtime.registry.names()))
        try:
            session_manager = SessionManager(settings, runtime)
            session_manager.start()
            health = HealthHub(runtime.registry, session_manager)
            try:
                yield {
                    "settings": settings,
                    "runtime": runtime,
                    "health": health,
                    "sessions": session_manager,
                    "run_limiter": RunLimiter(settings.max_runs),
                    "shm_problem": shm_problem,
                }
            finally:
                await session_manager.close()  # sessions end before the plugin workers they use
        finally:
            await runtime.close()

    return Starlette(routes=build_routes(), exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
