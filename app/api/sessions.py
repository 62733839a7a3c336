"""Session routes: GET/DELETE /v1/sessions[/{id}] and the overlay feed /v1/ws/sessions/{id}/tracks (DESIGN 4.3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from starlette import status
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.api.auth import require_admin
from app.api.errors import ApiError
from app.api.origins import origin_allowed
from app.stream.feeds import TrackFeed
from app.stream.session import Session
from app.stream.sessions import SessionManager

WS_4404_UNKNOWN_SESSION = 4404


def _session(request: Request) -> Session:
    session_id: str = request.path_params["session_id"]
    sessions: SessionManager = request.state.sessions
    session = sessions.get(session_id)
    if session is None:
        raise ApiError(404, "session_not_found", f"no session {session_id[:64]!r}; GET /v1/sessions lists them")
    return session


async def list_sessions(request: Request) -> JSONResponse:
    sessions: SessionManager = request.state.sessions
    return JSONResponse(sessions.summaries())


async def session_resource(request: Request) -> JSONResponse:
    """GET: the summary; DELETE (admin token when one is set): close it, answer its final summary."""
    if request.method == "DELETE":
        require_admin(request, request.state.settings.admin_token)
        session = _session(request)
        await session.close("closed by DELETE /v1/sessions")
    else:
        session = _session(request)
    return JSONResponse(session.summary(time.monotonic()))


async def _forward(websocket: WebSocket, feed: TrackFeed) -> None:
    while (message := await feed.get()) is not None:
        await websocket.send_text(message)
    await websocket.close(status.WS_1000_NORMAL_CLOSURE, "the session ended")


async def track_feed(websocket: WebSocket) -> None:
    """The session's `tracks` messages for overlay consumers; messages from them are answered with an error."""
    if not origin_allowed(websocket, websocket.state.settings):
        await websocket.close(status.WS_1008_POLICY_VIOLATION)  # before accept: the upgrade is refused (403)
        return
    await websocket.accept()
    session_id: str = websocket.path_params["session_id"]
    sessions: SessionManager = websocket.state.sessions
    session = sessions.get(session_id)
    if session is None:
        reason = f"no session {session_id[:64]!r}; GET /v1/sessions lists them"
        # A close reason holds at most 123 bytes.
        await websocket.close(WS_4404_UNKNOWN_SESSION, reason.encode()[:123].decode(errors="ignore"))
        return
    feed = session.subscribe()
    forward = asyncio.create_task(_forward(websocket, feed), name=f"overlay:{session_id}")
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            error = {"type": "error", "code": "read_only", "message": "this feed only sends tracks messages"}
            feed.put(json.dumps(error))
    except (WebSocketDisconnect, RuntimeError):
        pass  # the consumer left, or the session closed the socket meanwhile
    finally:
        session.unsubscribe(feed)
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
            await forward


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/sessions", list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", session_resource, methods=["GET", "DELETE"]),
        WebSocketRoute("/v1/ws/sessions/{session_id}/tracks", track_feed),
    ]
