"""HealthHub: what every health channel of one server shares (DESIGN 4.2)."""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from app.runtime.registry import PluginRegistry, RegistryEvent, Subscription

# Events a subscriber may have waiting; past it the queue is dropped and the subscriber
# gets a fresh snapshot instead. A plugin makes at most ~1 counter event a second, so
# only a client that stopped reading ever gets here.
QUEUE_SIZE = 256
# Session summaries are read at most this often however many channels tick at once.
SESSIONS_CACHE_S = 0.25
# Recent events kept encoded: one event goes to every subscriber within moments.
ENCODED_EVENTS = 64


class SessionSource(Protocol):
    """The session manager, as far as health needs it (DESIGN 4.3 session summaries)."""

    def summaries(self) -> list[dict[str, Any]]: ...


class HealthHub:
    """One per server: the plugin registry, the session stats, and the health subscriptions.

    It counts its own subscriptions, so /metrics reports health subscribers only, not
    other registry listeners.
    """

    def __init__(self, registry: PluginRegistry, sessions: SessionSource | None = None) -> None:
        self.registry = registry
        self.sessions_source = sessions
        self._subscriptions: set[Subscription] = set()
        self._sessions_read_at = float("-inf")
        self._sessions: list[dict[str, Any]] = []
        self._encoded: dict[int, tuple[RegistryEvent, str]] = {}

    def subscribe(self) -> Subscription:
        subscription = self.registry.subscribe(QUEUE_SIZE)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        self.registry.unsubscribe(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        return frozenset(self._subscriptions)

    def sessions(self) -> list[dict[str, Any]]:
        """Session summaries, [] while there is no session manager."""
        if self.sessions_source is None:
            return []
        now = time.monotonic()
        if now - self._sessions_read_at >= SESSIONS_CACHE_S:
            self._sessions = self.sessions_source.summaries()
            self._sessions_read_at = now
        return self._sessions

    def encode(self, event: RegistryEvent) -> str:
        """The event's health object as JSON, encoded once for all subscribers rather than once each."""
        cached = self._encoded.get(id(event))
        if cached is not None and cached[0] is event:
            return cached[1]
        text = json.dumps(event.health, separators=(",", ":"), allow_nan=False)
        # The cache holds the event itself, so its id cannot be reused while it is cached.
        self._encoded[id(event)] = (event, text)
        if len(self._encoded) > ENCODED_EVENTS:
            del self._encoded[next(iter(self._encoded))]
        return text

    def snapshot(self) -> dict[str, Any]:
        return {"plugins": self.registry.list(), "sessions": self.sessions()}
