"""Builds the Starlette app: routes, lifespan, static files."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.api import plugins
from app.api.errors import EXCEPTION_HANDLERS
from app.config import Settings
from app.runtime.registry import PluginState
from app.runtime.runtime import PluginRuntime

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    runtime: PluginRuntime = request.state.runtime
    pending = [h["name"] for h in runtime.registry.list() if h["state"] == PluginState.LOADED.value]
    if pending:
        return JSONResponse({"ready": False, "pending": pending}, status_code=503)
    return JSONResponse({"ready": True, "pending": []})


def build_routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *plugins.routes(),
        Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True, check_dir=False), name="static"),
    ]


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        runtime = PluginRuntime(settings.plugins_dirs, settings.gpu_policy, settings.log_level)
        runtime.start()
        logger.info("serving; %d plugins loading in the background", len(runtime.registry.names()))
        try:
            yield {"settings": settings, "runtime": runtime}
        finally:
            await runtime.close()

    return Starlette(routes=build_routes(), exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
