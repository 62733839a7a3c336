"""Liveness and readiness (DESIGN 4.4)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.runtime.runtime import PluginRuntime


async def healthz(request: Request) -> JSONResponse:
    """200 while the process serves; it checks nothing else on purpose (a liveness probe)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """503 naming the plugins still in their first load, then 200 for good (DESIGN 4.4).

    A later restart, reload or crash loop of one plugin must not take a server whose
    other plugins work out of its load balancer; its state is on /v1/plugins.
    """
    runtime: PluginRuntime = request.state.runtime
    pending = runtime.registry.pending_first_load()
    if pending:
        return JSONResponse({"ready": False, "pending": pending}, status_code=503)
    return JSONResponse({"ready": True, "pending": []})


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
