"""HealthChannel: the conversation with one health subscriber (DESIGN 4.2).

Two tasks per subscriber: the sender drains the subscriber's bounded registry queue
and the timers (sessions, heartbeat); the receiver answers client messages. Every
send holds one lock, so `seq` order is wire order. A send to a client that stopped
reading blocks only this channel's tasks (uvicorn writes nothing more once the socket
buffer is full); meanwhile the registry keeps dropping this subscriber's queue on
overflow, so its memory stays bounded, and it gets a snapshot when it reads again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Protocol

from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from app.health.hub import HealthHub
from app.runtime.registry import RegistryEvent, Subscription, utc_iso

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 15.0
SESSIONS_INTERVAL_S = 1.0
# A send that cannot finish within this time means the client stopped reading; it is dropped.
SEND_TIMEOUT_S = 30.0
CLIENT_MESSAGES = ("ping", "resync")


class Connection(Protocol):
    """The part of starlette's WebSocket a channel uses (tests pass a fake)."""

    async def receive(self) -> Message: ...

    async def send_text(self, data: str) -> None: ...


class HealthChannel:
    def __init__(self, hub: HealthHub, connection: Connection, label: str) -> None:
        self._hub = hub
        self._connection = connection
        self.label = label
        self.seq = 0
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._had_sessions = False

    async def run(self) -> None:
        """Serve until the client leaves or stops reading for SEND_TIMEOUT_S; unsubscribes in any case."""
        subscription = self._subscription = self._hub.subscribe()
        logger.debug("health subscriber %s: connected (%d now)", self.label, self._hub.subscriber_count)
        tasks: list[asyncio.Task[None]] = []
        try:
            # The snapshot goes out before the receiver starts, so it is first even when
            # the client's first ping is already waiting.
            await self._send_snapshot()
            tasks = [
                asyncio.create_task(self._receive_loop(), name=f"health-receive:{self.label}"),
                asyncio.create_task(self._send_loop(), name=f"health-send:{self.label}"),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception as exc:  # the snapshot send: same outcomes as the tasks'
            self._log_end(exc)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._hub.unsubscribe(subscription)
        for result in results:
            if isinstance(result, Exception):
                self._log_end(result)
        logger.debug("health subscriber %s: gone (%d left)", self.label, self._hub.subscriber_count)

    def _log_end(self, exc: Exception) -> None:
        if isinstance(exc, TimeoutError):
            logger.info("health subscriber %s: not reading for %.0f s; dropped", self.label, SEND_TIMEOUT_S)
        elif isinstance(exc, WebSocketDisconnect | OSError):
            logger.debug("health subscriber %s: connection lost (%r)", self.label, exc)
        else:
            logger.error("health subscriber %s: channel failed", self.label, exc_info=exc)

    # -- server -> client -----------------------------------------------------------
    async def _send_loop(self) -> None:
        assert self._subscription is not None
        loop = asyncio.get_running_loop()
        next_sessions = loop.time() + SESSIONS_INTERVAL_S
        next_heartbeat = loop.time() + HEARTBEAT_INTERVAL_S
        while True:
            # Timers are checked on every turn, so a steady stream of events cannot starve them.
            now = loop.time()
            if now >= next_sessions:
                await self._send_sessions()
                next_sessions = now + SESSIONS_INTERVAL_S
            if now >= next_heartbeat:
                await self._send("heartbeat", {})
                next_heartbeat = now + HEARTBEAT_INTERVAL_S
            try:
                async with asyncio.timeout_at(min(next_sessions, next_heartbeat)):
                    event = await self._subscription.get()
            except TimeoutError:
                continue
            await self._deliver(event)

    async def _deliver(self, event: RegistryEvent | None) -> None:
        if event is None:  # overflow or resync
            await self._send_snapshot()
        else:
            await self._send("plugin", self._hub.encode(event), event.timestamp)

    async def _send_snapshot(self) -> None:
        assert self._subscription is not None
        async with self._lock:
            # Built and queue cleared in one step: whatever was queued is in the snapshot.
            self._subscription.clear()
            await self._write("snapshot", self._hub.snapshot(), time.time())

    async def _send_sessions(self) -> None:
        """Stats while sessions exist, and one empty list when the last one has gone."""
        sessions = self._hub.sessions()
        if sessions or self._had_sessions:
            await self._send("sessions", {"sessions": sessions})
        self._had_sessions = bool(sessions)

    async def _send(self, kind: str, payload: dict[str, Any] | str, timestamp: float | None = None) -> None:
        async with self._lock:
            await self._write(kind, payload, time.time() if timestamp is None else timestamp)

    async def _write(self, kind: str, payload: dict[str, Any] | str, timestamp: float) -> None:
        """Only with the lock held. `payload` may be JSON already; `timestamp` is when the news happened."""
        self.seq += 1
        if not isinstance(payload, str):
            payload = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        # Spliced rather than encoded as a whole, so a shared payload is encoded once; the
        # other fields need no escaping (a fixed type name, a number, an ISO time).
        text = f'{{"type":"{kind}","seq":{self.seq},"timestamp":"{utc_iso(timestamp)}","payload":{payload}}}'
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await self._connection.send_text(text)

    # -- client -> server -----------------------------------------------------------
    async def _receive_loop(self) -> None:
        while True:
            message = await self._connection.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._send_error("binary_not_supported", "binary frames are not accepted")
            else:
                await self._handle(text)

    async def _handle(self, text: str) -> None:
        assert self._subscription is not None
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            await self._send_error("invalid_json", f"the message is not valid JSON ({exc.msg} at position {exc.pos})")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            await self._send_error(
                "invalid_message", f"expected a JSON object with a string 'type', got {text[:100]!r}"
            )
        elif kind == "ping":
            await self._send("pong", {})
        elif kind == "resync":
            # The sender answers it, after what it is sending now, so snapshots never go out of order.
            self._subscription.request_snapshot()
        else:
            await self._send_error("unknown_type", f"unknown message type {kind[:100]!r}")

    async def _send_error(self, code: str, message: str) -> None:
        accepted = " or ".join(f'{{"type": "{kind}"}}' for kind in CLIENT_MESSAGES)
        await self._send(
            "error", {"code": code, "message": f"{message}; the health channel takes JSON text: {accepted}"}
        )
