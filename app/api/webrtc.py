"""POST /v1/webrtc/offer: a browser's SDP offer in, the answer and a session id out (DESIGN 4.3)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.api.errors import ApiError
from app.api.origins import origin_allowed
from app.api.plugins import _read_body
from app.runtime.options_schema import OptionsError
from app.runtime.registry import UnknownPlugin
from app.stream.peer import OfferError
from app.stream.sessions import AtCapacity, SessionManager

MAX_OFFER_BYTES = 64 * 1024


def _offer_fields(body: bytes) -> tuple[str, str, Any]:
    """(sdp, plugin, options) from the body; ApiError 400 naming what is wrong."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", 'the body is not JSON; send {"sdp", "type": "offer", "plugin"}') from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_offer", f"the body must be a JSON object, got {type(data).__name__}")
    missing = [key for key in ("sdp", "type", "plugin") if key not in data]
    if missing:
        raise ApiError(400, "invalid_offer", f'missing field(s) {missing}; send {{"sdp", "type": "offer", "plugin"}}')
    if data["type"] != "offer":
        raise ApiError(400, "invalid_offer", f"'type' must be \"offer\", got {json.dumps(data['type'])[:80]}")
    sdp, plugin = data["sdp"], data["plugin"]
    if not isinstance(sdp, str) or not sdp.strip():
        raise ApiError(400, "invalid_offer", "'sdp' must be the offer's SDP text")
    if not isinstance(plugin, str) or not plugin:
        raise ApiError(400, "invalid_offer", f"'plugin' must be a plugin name, got {json.dumps(plugin)[:80]}")
    return sdp, plugin, data.get("options")


async def offer(request: Request) -> JSONResponse:
    if not origin_allowed(request, request.state.settings):
        raise ApiError(403, "origin_not_allowed", "this Origin may not open sessions; see --allowed-origins")
    sdp, plugin, options = _offer_fields(await _read_body(request, MAX_OFFER_BYTES))
    sessions: SessionManager = request.state.sessions
    try:
        session, answer = await sessions.create(sdp, plugin, options)
    except UnknownPlugin:
        raise ApiError(
            404, "plugin_not_found", f"no plugin named {plugin[:100]!r}; GET /v1/plugins lists them"
        ) from None
    except AtCapacity as exc:
        raise ApiError(503, "at_capacity", f"{exc}; close one (DELETE /v1/sessions/{{id}}) or retry later") from None
    except OptionsError as exc:
        raise ApiError(400, "invalid_options", str(exc)) from None
    except OfferError as exc:
        raise ApiError(400, "invalid_sdp", str(exc)) from None
    return JSONResponse({"sdp": answer, "type": "answer", "session_id": session.session_id})


def routes() -> list[BaseRoute]:
    return [Route("/v1/webrtc/offer", offer, methods=["POST"])]
