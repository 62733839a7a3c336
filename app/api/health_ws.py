"""GET /v1/ws/health: the live health channel (DESIGN 4.2, 4.6)."""

from __future__ import annotations

import logging

from starlette import status
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from app.api.origins import origin_allowed
from app.health.channel import HealthChannel
from app.health.hub import HealthHub

logger = logging.getLogger(__name__)


async def health_socket(websocket: WebSocket) -> None:
    if not origin_allowed(websocket, websocket.state.settings):
        # Closing before accept makes uvicorn refuse the upgrade with a plain 403. (A denial
        # response with the error envelope works too, but uvicorn 0.54 then logs a spurious
        # "returned without completing handshake" error, and browsers never show that body.)
        logger.info(
            "health: refused a WebSocket from Origin %r (see --allowed-origins)", websocket.headers["origin"][:200]
        )
        await websocket.close(status.WS_1008_POLICY_VIOLATION)
        return
    hub: HealthHub = websocket.state.health
    await websocket.accept()
    client = websocket.client
    label = f"{client.host}:{client.port}" if client else "unknown"
    await HealthChannel(hub, websocket, label).run()


def routes() -> list[BaseRoute]:
    return [WebSocketRoute("/v1/ws/health", health_socket)]
