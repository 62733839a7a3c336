"""The `tracks` data channel protocol (DESIGN 4.3): what the server sends, what a client may send.

Server -> client: `tracks` (one per processed frame), `status` (the plugin's state,
once per change) and `error` (a client message that could not be used).
Client -> server: `{"type": "options", ...}` only, JSON text of at most
MAX_MESSAGE_BYTES; `read_options` turns anything else into a `MessageError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

TRACKS_CHANNEL = "tracks"
MAX_MESSAGE_BYTES = 16 * 1024
# Past this many bytes waiting in the data channel (a client that stopped reading),
# messages are skipped instead of piling up in aiortc's unbounded SCTP queue.
MAX_CHANNEL_BUFFER = 1 << 20


class MessageError(ValueError):
    """A client message that cannot be used; answered with an `error` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_options(message: str | bytes) -> dict[str, Any]:
    """The fields of a client's `options` message; MessageError for anything else."""
    if isinstance(message, bytes):
        raise MessageError(
            "invalid_message", 'binary messages are not accepted; send JSON text: {"type": "options", ...}'
        )
    if len(message) > MAX_MESSAGE_BYTES:
        raise MessageError(
            "message_too_large", f"the message is {len(message)} characters; at most {MAX_MESSAGE_BYTES} are accepted"
        )
    try:
        raw = json.loads(message)
    except (ValueError, RecursionError):
        raise MessageError("invalid_message", f"the message is not JSON: {message[:80]!r}") from None
    if not isinstance(raw, dict) or raw.get("type") != "options":
        kind = raw.get("type") if isinstance(raw, dict) else type(raw).__name__
        raise MessageError(
            "invalid_message", f'unknown message type {json.dumps(kind)[:80]}; the only one accepted is "options"'
        )
    return raw


def tracks_message(frame: int, pts: int, plugin: str, tracks: list[dict[str, Any]], latency_ms: float) -> str:
    return json.dumps(
        {"type": "tracks", "frame": frame, "pts": pts, "plugin": plugin, "tracks": tracks, "latency_ms": latency_ms}
    )


class TracksChannel:
    """The session's side of the client's `tracks` channel (the first one the client opens)."""

    def __init__(self) -> None:
        self._channel: RTCDataChannel | None = None
        self._last_status: tuple[str, str | None] | None = None

    def attach(self, channel: RTCDataChannel, on_message: Callable[[str | bytes], None]) -> bool:
        """Adopt `channel` when it is the client's tracks channel; False for any other."""
        if channel.label != TRACKS_CHANNEL or self._channel is not None:
            return False
        self._channel = channel
        channel.on("message", on_message)
        return True

    @property
    def open(self) -> bool:
        return self._channel is not None and self._channel.readyState == "open"

    def send(self, text: str) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open" and channel.bufferedAmount < MAX_CHANNEL_BUFFER:
            channel.send(text)

    def send_error(self, code: str, message: str) -> None:
        self.send(json.dumps({"type": "error", "code": code, "message": message}))

    def send_status(self, state: str, reason: str | None) -> None:
        """Send the plugin's state once per change (nothing while the channel is not open)."""
        if (state, reason) == self._last_status or not self.open:
            return
        self._last_status = (state, reason)
        self.send(json.dumps({"type": "status", "state": state, "reason": reason}))

    def detach(self) -> None:
        self._channel = None
