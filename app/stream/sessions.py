"""SessionManager: every open WebRTC session, its limits, idle timeout and plugin status fan-out."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from app.config import Settings
from app.runtime.registry import RegistryEvent, Subscription, UnknownPlugin
from app.runtime.runtime import PluginRuntime
from app.stream.ice import check_addresses, parse_ice_servers
from app.stream.options import SessionOptions, merge_options
from app.stream.session import Session

logger = logging.getLogger(__name__)

STATUS_QUEUE = 256


class AtCapacity(RuntimeError):
    """--max-sessions are open (503)."""


class SessionManager:
    """Owns the sessions: creates them from offers, closes them, and reports them.

    Settings are checked at construction (a bad --ice-server or --ice-address stops
    the server at start, with the value named), tasks start in `start()`.
    """

    def __init__(self, settings: Settings, runtime: PluginRuntime) -> None:
        self._runtime = runtime
        self._max_sessions = settings.max_sessions
        self._idle_s = settings.session_idle_s
        self._max_resolution = settings.max_resolution
        self._ice_servers = parse_ice_servers(settings.ice_servers)
        self._addresses = check_addresses(settings.ice_addresses)
        self._sessions: dict[str, Session] = {}
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._subscription = self._runtime.registry.subscribe(STATUS_QUEUE)
        self._tasks = [
            asyncio.create_task(self._forward_status(self._subscription), name="sessions:status"),
            asyncio.create_task(self._close_idle(), name="sessions:idle"),
        ]

    # -- sessions ---------------------------------------------------------------------
    async def create(self, sdp: str, plugin: str, raw_options: Any) -> tuple[Session, str]:
        """A new session and its answer SDP.

        Raises UnknownPlugin (404), OptionsError or OfferError (400), AtCapacity (503).
        """
        if plugin not in self._runtime.registry:
            raise UnknownPlugin(plugin)
        raw = raw_options if raw_options is not None else {}
        options = merge_options(SessionOptions(), raw, self._runtime.options_schema(plugin))
        if len(self._sessions) >= self._max_sessions:
            raise AtCapacity(f"{len(self._sessions)} sessions are open, the most this server takes (--max-sessions)")
        session_id = secrets.token_hex(8)
        session = Session(
            session_id, plugin, options, self._runtime, self._ice_servers, self._forget, self._max_resolution
        )
        # Counted from here, before the first await, so concurrent offers cannot pass the limit.
        self._sessions[session_id] = session
        try:
            answer = await session.answer(sdp, self._addresses)
        except BaseException:
            await session.close("the offer was refused")
            raise
        logger.info("session %s: created (plugin %s)", session_id, plugin)
        return session, answer

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.session_id, None)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def summaries(self) -> list[dict[str, Any]]:
        """Every open session's summary (DESIGN 4.3), oldest first; cheap enough to call every second."""
        now = time.monotonic()
        return [session.summary(now) for session in self._sessions.values()]

    # -- background work --------------------------------------------------------------
    async def _forward_status(self, subscription: Subscription) -> None:
        """Plugin state changes become `status` messages on the sessions that use the plugin."""
        while True:
            self._forward_event(await subscription.get())

    def _forward_event(self, event: RegistryEvent | None) -> None:
        # Kept out of the loop above so that no session stays referenced while it waits.
        if event is None:  # we fell behind: tell every session the current state
            for session in list(self._sessions.values()):
                session.send_status()
        elif event.kind == "state":
            for session in list(self._sessions.values()):
                if session.plugin == event.health["name"]:
                    session.plugin_state_changed(event.health)

    async def _close_idle(self) -> None:
        interval = min(1.0, self._idle_s / 4)
        while True:
            await asyncio.sleep(interval)
            self._close_idle_now(time.monotonic())

    def _close_idle_now(self, now: float) -> None:
        for session in list(self._sessions.values()):
            last = session.stats.last_frame_at or session.created_monotonic
            if now - last > self._idle_s:
                session.request_close(f"no video for {self._idle_s:g} s (--session-idle-s)")

    async def close(self) -> None:
        """Stop the background tasks, then close every session (before the plugin runtime closes)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._subscription is not None:
            self._runtime.registry.unsubscribe(self._subscription)
            self._subscription = None
        await asyncio.gather(
            *(session.close("the server is shutting down") for session in list(self._sessions.values()))
        )
