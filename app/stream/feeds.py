"""TrackFeed: the bounded queue of `tracks` messages for one overlay consumer."""

from __future__ import annotations

import asyncio
from collections import deque

FEED_SIZE = 64


class TrackFeed:
    """Messages for one consumer; a consumer that falls behind loses the oldest ones, never slows the session."""

    def __init__(self, maxsize: int = FEED_SIZE) -> None:
        self._messages: deque[str] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.skipped = 0

    def put(self, message: str) -> None:
        if self._closed:
            return
        if len(self._messages) == self._messages.maxlen:
            self.skipped += 1
        self._messages.append(message)
        self._ready.set()

    async def get(self) -> str | None:
        """The next message; None once the feed is closed (the session ended)."""
        while not self._messages and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            return None
        return self._messages.popleft()

    def close(self) -> None:
        self._closed = True
        self._messages.clear()
        self._ready.set()
