"""The one error shape: {"error": {"code": "snake_case", "message": "what and how to fix"}}."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"no route for {request.method} {request.url.path[:200]}"
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Reached only by a bug in the server; the client gets the envelope, the log the traceback.
    logger.error("unhandled error on %s %s", request.method, request.url.path[:200], exc_info=exc)
    return error_response(500, "internal_error", "the server hit a bug; see its log")


EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    Exception: _server_error,
}
