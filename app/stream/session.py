"""Session: one browser's WebRTC peer connection, its frame pump, data channel and overlay feeds (DESIGN 4.3).

The pixel path is the pump's (app/stream/pump.py) and the plugin step the tracker's
(app/stream/tracking.py); the session answers the offer, applies the client's
messages, reports the plugin's state and tears everything down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from app.runtime.options_schema import OptionsError
from app.runtime.registry import PluginState, utc_iso
from app.runtime.runtime import PluginRuntime
from app.stream.feeds import TrackFeed
from app.stream.ice import connect_failure_reason, sdp_candidates
from app.stream.options import SessionOptions
from app.stream.peer import OfferError, answer_offer, close_peer, take_offer
from app.stream.pixels import Resolution
from app.stream.protocol import MessageError, TracksChannel, read_options
from app.stream.pump import FramePump
from app.stream.stats import SessionStats
from app.stream.tracking import PluginTracker

logger = logging.getLogger(__name__)

# A browser that cannot reach any offered address never connects and says nothing:
# past this bound the session ends with a reason that says what to change.
ICE_CONNECT_TIMEOUT_S = 15.0
USABLE = (PluginState.INITIALIZED.value, PluginState.RUNNING.value)


class Session:
    """Composes the peer connection, the frame pump and the plugin step of one client; `close()` frees them."""

    def __init__(
        self,
        session_id: str,
        plugin: str,
        options: SessionOptions,
        runtime: PluginRuntime,
        ice_servers: list[RTCIceServer],
        on_closed: Callable[[Session], None],
        max_resolution: Resolution = (1920, 1080),
    ) -> None:
        self.session_id = session_id
        self.created_at = time.time()
        self.created_monotonic = time.monotonic()
        self.stats = SessionStats()
        self.closed = False
        self.close_reason: str | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self._runtime = runtime
        self._on_closed = on_closed
        self._pump: FramePump | None = None
        self._channel = TracksChannel()
        self._feeds: set[TrackFeed] = set()
        self._tracker = PluginTracker(session_id, plugin, options, runtime, self._channel, self._feeds, max_resolution)
        self._close_task: asyncio.Task[None] | None = None
        self._connected = False
        self._offered: list[str] = []
        self._ice_deadline: asyncio.TimerHandle | None = None
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def plugin(self) -> str:
        return self._tracker.plugin

    # -- signalling -------------------------------------------------------------------
    async def answer(self, sdp: str, addresses: tuple[str, ...]) -> str:
        """Apply the client's offer and return the answer SDP (with its host candidates)."""
        await take_offer(self.pc, sdp)
        if self._pump is None:
            raise OfferError("the offer sends no video; add a video track (sendrecv, or sendonly for tracks only)")
        answer_sdp = await answer_offer(self.pc, addresses)
        self._offered = sdp_candidates(answer_sdp)
        logger.info(
            "session %s: ICE candidates offered: %s; the client's: %s",
            self.session_id,
            ", ".join(self._offered) or "none",
            ", ".join(sdp_candidates(sdp)) or "none (trickled or mDNS only)",
        )
        self._ice_deadline = asyncio.get_running_loop().call_later(ICE_CONNECT_TIMEOUT_S, self._ice_timed_out)
        return answer_sdp

    def _ice_timed_out(self) -> None:
        if not self._connected:
            what = f"the video connection did not connect within {ICE_CONNECT_TIMEOUT_S:g} s"
            self.request_close(connect_failure_reason(what, self._offered))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._pump is not None:
            # Only the first video track is tracked. Refusing the others keeps aiortc from
            # decoding into receive queues nobody reads.
            for transceiver in self.pc.getTransceivers():
                if transceiver.receiver.track is track:
                    transceiver.direction = "inactive"
            return
        self._pump = FramePump(self.session_id, track, self._tracker, self._tracker.overlay, self.stats)
        self._pump.ended.add_done_callback(self._on_pump_ended)
        self.pc.addTrack(self._pump.output)
        self._pump.start()

    def _on_pump_ended(self, ended: asyncio.Future[str]) -> None:
        if not ended.cancelled():  # cancelled: stopped by the teardown, which is under way
            self.request_close(ended.result())

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.debug("session %s: peer connection %s", self.session_id, state)
        if state == "connected":
            self._connected = True
        elif state == "failed" and not self._connected:
            self.request_close(
                connect_failure_reason("the ICE checks failed: no offered address answered", self._offered)
            )
        elif state in ("failed", "closed"):
            self.request_close(f"the peer connection {state}")

    # -- data channel -----------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel.attach(channel, self._on_message):
            self.send_status()

    def _on_message(self, message: str | bytes) -> None:
        try:
            switched = self._tracker.apply_options(read_options(message))
        except MessageError as exc:
            self._channel.send_error(exc.code, str(exc))
            return
        except OptionsError as exc:
            self._channel.send_error("invalid_options", str(exc))
            return
        if switched:
            if self._pump is not None:
                self._pump.clear_tracks()  # the old plugin's boxes are not drawn under the new one
            self.send_status()

    # -- plugin state -----------------------------------------------------------------
    def plugin_state_changed(self, health: dict[str, Any]) -> None:
        """A registry state event (its health object) for this session's plugin."""
        if health["state"] not in USABLE and self._pump is not None:
            self._pump.clear_tracks()  # pass the video through unannotated at once
        self.send_status(health)

    def send_status(self, health: dict[str, Any] | None = None) -> None:
        """Tell the client the plugin's state (the current one when `health` is None), once per change."""
        if health is None:
            record = self._runtime.registry.get(self.plugin)
            self._channel.send_status(record.state.value, record.reason)
        else:
            self._channel.send_status(health["state"], health["reason"])

    # -- overlay consumers ------------------------------------------------------------
    def subscribe(self) -> TrackFeed:
        feed = TrackFeed()
        if self.closed or self._close_task is not None:
            feed.close()
        else:
            self._feeds.add(feed)
        return feed

    def unsubscribe(self, feed: TrackFeed) -> None:
        self._feeds.discard(feed)
        feed.close()

    # -- summary and lifetime ---------------------------------------------------------
    @property
    def state(self) -> str:
        if self.closed or self._close_task is not None:
            return "closed"
        return "streaming" if self.stats.frames_in else "connecting"

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "plugin": self.plugin,
            "state": self.state,
            "created_at": utc_iso(self.created_at),
            **self.stats.snapshot(now),
            "plugin_state": self._runtime.registry.get(self.plugin).state.value,
        }

    def request_close(self, reason: str) -> None:
        """Start closing (from callbacks that cannot await); idempotent."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._teardown(reason), name=f"session-close:{self.session_id}")

    async def close(self, reason: str = "closed by the server") -> None:
        """Close and release everything; safe to call twice at once, and a cancelled caller does not stop it."""
        self.request_close(reason)
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    async def _teardown(self, reason: str) -> None:
        self.close_reason = reason
        logger.info("session %s: closing: %s", self.session_id, reason)
        if self._ice_deadline is not None:
            self._ice_deadline.cancel()
        try:
            for feed in self._feeds:
                feed.close()
            self._feeds.clear()
            if self._pump is not None:
                await self._pump.stop()
            await close_peer(self.pc, self.session_id)
            await self._tracker.close()
        finally:
            self._pump = None
            self._channel.detach()
            self.closed = True
            self.pc.remove_all_listeners()
            self._on_closed(self)
            logger.info("session %s: closed", self.session_id)
