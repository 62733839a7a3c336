"""A real /v1/ws/health client for tests: records every envelope with the time it arrived."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Received:
    envelope: dict[str, Any]
    at: float  # time.time() on arrival

    @property
    def type(self) -> str:
        return str(self.envelope["type"])

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = self.envelope["payload"]
        return payload

    @property
    def delay(self) -> float:
        """Seconds from the envelope's timestamp (for `plugin`: the registry change) to arrival."""
        return self.at - epoch(self.envelope["timestamp"])


class Subscriber:
    """Reads in a background task, so arrival times stay true while the test awaits something else."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[Received] = []
        self._queue: asyncio.Queue[Received] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, ws_url: str, *, reading: bool = True, **kwargs: Any) -> Subscriber:
        # No compression: the server's bytes on the wire then track the messages, which the slow-reader test needs.
        kwargs.setdefault("compression", None)
        subscriber = cls(await connect(ws_url + "/v1/ws/health", **kwargs))
        if reading:
            subscriber.resume()
        return subscriber

    def resume(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def pause(self) -> None:
        """Stop reading; with a small max_queue the client soon stops reading its socket too."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def _read(self) -> None:
        async for text in self.ws:
            received = Received(json.loads(text), time.time())
            self.received.append(received)
            self._queue.put_nowait(received)

    async def next(self, within: float = 10.0) -> Received:
        return await asyncio.wait_for(self._queue.get(), within)

    async def until(self, predicate: Callable[[Received], bool], within: float = 30.0) -> Received:
        """The next message that matches; the ones before it stay in `received`."""
        async with asyncio.timeout(within):
            while True:
                received = await self._queue.get()
                if predicate(received):
                    return received

    def seqs(self) -> list[int]:
        return [int(r.envelope["seq"]) for r in self.received]

    async def close(self) -> None:
        await self.pause()
        await self.ws.close()

    async def abort(self) -> None:
        """Drop the connection at once (a reset), whatever is left unread: for cleanup after a failure."""
        await self.pause()
        self.ws.transport.abort()


def plugin_state(name: str, *states: str) -> Callable[[Received], bool]:
    def matches(received: Received) -> bool:
        if received.type == "plugin":
            return received.payload["name"] == name and received.payload["state"] in states
        if received.type == "snapshot":
            return any(p["name"] == name and p["state"] in states for p in received.payload["plugins"])
        return False

    return matches
