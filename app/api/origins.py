"""Origin checks for browser requests (DESIGN 4.6)."""

from __future__ import annotations

import re

from starlette.requests import HTTPConnection

from app.config import Settings

_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")


def origin_allowed(connection: HTTPConnection, settings: Settings) -> bool:
    """True without an Origin header (programs), for the server's own origin, localhost, or an allowed one."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    if settings.allowed_origins:
        return origin in {allowed.rstrip("/").lower() for allowed in settings.allowed_origins}
    host = connection.headers.get("host", "").lower()
    own = {f"http://{host}", f"https://{host}"}
    return origin in own or _LOCAL_ORIGIN.fullmatch(origin) is not None
