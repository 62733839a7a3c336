"""The pipe between the server and a worker: length-prefixed JSON, checked on arrival (DESIGN 3.6).

Nothing a worker sends is unpickled. A message is UTF-8 JSON of at most
MAX_MESSAGE_BYTES, with finite numbers only, and an answer must have the shape its
`op` promises; anything else raises WireError, which the host treats as a fault of
the plugin. The framing is multiprocessing's `Connection.send_bytes` (a 4-byte
big-endian length, then the bytes), so the worker keeps a plain blocking Connection
while the server reads its end without ever blocking the event loop.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from app.runtime.errors import Outcome, PluginFault

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
HEADER = struct.Struct("!i")
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
MAX_TEXT = 2000
MAX_TRACEBACK = 64 * 1024
DEVICES = ("cpu", "cuda")


class WireError(ValueError):
    """Bytes from a worker that are not a valid message; the text says what was wrong."""


# -- encoding (both sides) ---------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode()


def framed(payload: bytes) -> bytes:
    """`payload` with the header `Connection.recv_bytes` expects."""
    return HEADER.pack(len(payload)) + payload


def fault_to_wire(fault: PluginFault) -> dict[str, Any]:
    return {
        "error_type": fault.error_type,
        "what": fault.what,
        "fix": fault.fix,
        "outcome": fault.outcome.value,
        "traceback": fault.traceback,
    }


# -- decoding (the server's side) --------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise WireError(f"a non-finite number ({name})")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise WireError(f"a non-finite number ({text[:40]})")
    return number


def decode(payload: bytes) -> Any:
    """JSON text to plain Python values; WireError for anything else (pickles, garbage, NaN)."""
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"{len(payload)} bytes that are not JSON ({type(exc).__name__})") from None


class MessageReader:
    """Cuts a byte stream into messages; WireError for a length outside 0..MAX_MESSAGE_BYTES."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if not 0 <= length <= MAX_MESSAGE_BYTES:
                raise WireError(f"a message of {length} bytes, outside 0..{MAX_MESSAGE_BYTES}")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            messages.append(bytes(self._buffer[HEADER.size : end]))
            del self._buffer[:end]
        return messages


@dataclass(frozen=True)
class Answer:
    """A checked answer from the worker: `op` is ready, load_failed, result, error or ok."""

    op: str
    fault: PluginFault | None = None
    results: Any = None
    device: str | None = None
    degraded: str | None = None


def _text(raw: dict[str, Any], key: str, limit: int, *, optional: bool = False) -> Any:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise WireError(f"a fault whose {key!r} is not a string of at most {limit} characters")
    return value


def _fault(raw: Any) -> PluginFault:
    if not isinstance(raw, dict):
        raise WireError("an error answer without a fault object")
    error_type = _text(raw, "error_type", 100)
    if not ERROR_TYPE.fullmatch(error_type):
        raise WireError(f"a fault whose error_type {error_type[:40]!r} is not a type name")
    outcome = raw.get("outcome")
    if outcome not in (Outcome.FAILED.value, Outcome.UNAVAILABLE.value):
        raise WireError(f"a fault whose outcome {str(outcome)[:40]!r} is neither failed nor unavailable")
    return PluginFault(
        error_type,
        _text(raw, "what", MAX_TEXT),
        _text(raw, "fix", MAX_TEXT),
        Outcome(outcome),
        _text(raw, "traceback", MAX_TRACEBACK, optional=True),
    )


def parse_answer(payload: bytes) -> Answer:
    """One answer from the worker, checked for its shape; the results are checked by the caller."""
    raw = decode(payload)
    op = raw.get("op") if isinstance(raw, dict) else None
    if op == "ready":
        device, degraded = raw.get("device"), raw.get("degraded")
        if device not in DEVICES or not (degraded is None or (isinstance(degraded, str) and len(degraded) < MAX_TEXT)):
            raise WireError("a ready answer without a device of cpu or cuda")
        return Answer(op, device=device, degraded=degraded)
    if op in ("load_failed", "error"):
        return Answer(op, fault=_fault(raw.get("fault")))
    if op == "result":
        return Answer(op, results=raw.get("results"))
    if op == "ok":
        return Answer(op)
    raise WireError(f"a message with op {str(op)[:40]!r}, not an answer")
