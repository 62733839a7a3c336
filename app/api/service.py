"""Liveness and readiness (DESIGN 4.4)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.runtime.registry import PluginState
from app.runtime.runtime import PluginRuntime


async def healthz(request: Request) -> JSONResponse:
    """200 while the process serves; it checks nothing else on purpose (a liveness probe)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """200 once every plugin has left LOADED (whatever state it reached), else 503 naming them."""
    runtime: PluginRuntime = request.state.runtime
    pending = [h["name"] for h in runtime.registry.list() if h["state"] == PluginState.LOADED.value]
    if pending:
        return JSONResponse({"ready": False, "pending": pending}, status_code=503)
    return JSONResponse({"ready": True, "pending": []})


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
