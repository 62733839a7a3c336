"""Admin token checks (DESIGN 4.6)."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from app.api.errors import ApiError


def require_admin(connection: HTTPConnection, token: str | None) -> None:
    """401 without a bearer token, 403 with a wrong one; nothing to check when no token is set."""
    if token is None:
        return
    header = connection.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401,
            "unauthorized",
            "this server needs the admin token: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "forbidden", "the admin token is wrong")
