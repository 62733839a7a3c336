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
    A shared-memory filesystem too small for the configured sessions keeps it at 503
    for good, with the reason and its fix: the server would fault writing a frame.
    """
    runtime: PluginRuntime = request.state.runtime
    pending = runtime.registry.pending_first_load()
    reason: str | None = request.state.shm_problem
    if pending or reason:
        return JSONResponse({"ready": False, "pending": pending, "reason": reason}, status_code=503)
    return JSONResponse({"ready": True, "pending": [], "reason": None})


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
