"""PluginTracker: the plugin step of a session's frame path (DESIGN 1), receive -> slot -> plugin -> draw -> send.

It owns which plugin the session uses and with which options (a client's `options`
message changes them), runs that plugin on a frame (in its worker, through the
supervisor), scales the boxes back to the frame's own pixels and publishes the
`tracks` message to the data channel and the overlay feeds.
A plugin switch bumps a generation counter, so a result the old plugin was still
computing is discarded rather than drawn or sent under the new plugin's name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.runtime.frames import Frame
from app.runtime.runtime import PluginRuntime
from app.stream.annotate import OverlayOptions, above
from app.stream.feeds import TrackFeed
from app.stream.options import SessionOptions, host_options_only, merge_options, requested_plugin
from app.stream.pixels import Resolution, plugin_image, scale_tracks_back
from app.stream.protocol import MessageError, TracksChannel, tracks_message
from app.stream.pump import InputFrame

logger = logging.getLogger(__name__)


class PluginTracker:
    """Runs the session's plugin on its frames; `close()` ends the session's use of its plugins.

    `channel` and `feeds` are the session's: the session attaches, subscribes and closes
    them, the tracker only sends the `tracks` messages to them.
    """

    def __init__(
        self,
        session_id: str,
        plugin: str,
        options: SessionOptions,
        runtime: PluginRuntime,
        channel: TracksChannel,
        feeds: set[TrackFeed],
        max_resolution: Resolution,
    ) -> None:
        self._session_id = session_id
        self._plugin = plugin
        self._options = options
        self._runtime = runtime
        self._channel = channel
        self._feeds = feeds
        self._max_resolution = max_resolution
        self._generation = 0  # bumped on a plugin switch and on close: results of before are discarded
        self._closed = False
        self._endings: set[asyncio.Task[None]] = set()
        self._plugin_started(plugin)

    @property
    def plugin(self) -> str:
        return self._plugin

    def overlay(self) -> OverlayOptions:
        """What the client asked to see drawn, read for each output frame."""
        return self._options.overlay

    async def track(self, entry: InputFrame) -> list[dict[str, Any]] | None:
        """Run the plugin on one frame; None when it was not processed."""
        generation, plugin, options = self._generation, self._plugin, self._options
        supervisor = self._runtime.supervisor(plugin)
        if supervisor is None or not supervisor.usable:
            return None
        image, scale = plugin_image(entry.frame, self._max_resolution)  # rendered in the sandbox's copy thread
        pts = entry.frame.pts or 0
        result = await supervisor.process(Frame(self._session_id, entry.index, pts, image, options.plugin_options))
        if generation != self._generation or not result.ok:
            return None  # a failure reaches the client as a status message from the registry
        tracks = scale_tracks_back(above(result.result["tracks"], options.overlay.min_score), scale)
        if self._feeds or self._channel.open:
            latency_ms = round((time.monotonic() - entry.received_at) * 1000, 3)
            text = tracks_message(entry.index, pts, plugin, tracks, latency_ms)
            self._channel.send(text)
            for feed in self._feeds:
                feed.put(text)
        return tracks

    def apply_options(self, raw: dict[str, Any]) -> bool:
        """A client's `options` message, from the next frame on; True when it switched the plugin.

        MessageError for an unknown plugin, OptionsError for options the plugin does not accept.
        """
        plugin = requested_plugin(raw)
        if plugin is not None and plugin not in self._runtime.registry:
            raise MessageError("plugin_not_found", f"no plugin named {plugin[:100]!r}; GET /v1/plugins lists them")
        # Checked against the schema of the plugin these options will reach (the new one on a switch).
        plugin = self._plugin if plugin is None else plugin
        current = self._options if plugin == self._plugin else host_options_only(self._options)
        self._options = merge_options(current, raw, self._runtime.options_schema(plugin))
        if plugin == self._plugin or self._closed:
            return False
        self._switch(plugin)
        return True

    def _switch(self, plugin: str) -> None:
        old = self._plugin
        logger.info("session %s: plugin %s -> %s", self._session_id, old, plugin)
        self._plugin_started(plugin)
        self._plugin = plugin
        self._generation += 1
        self._end_plugin(old)

    async def close(self) -> None:
        """End the session's use of its plugin and wait until every worker dropped its state; idempotent."""
        if not self._closed:
            self._closed = True
            self._generation += 1
            self._end_plugin(self._plugin)
        await asyncio.gather(*self._endings, return_exceptions=True)

    def _plugin_started(self, plugin: str) -> None:
        supervisor = self._runtime.supervisor(plugin)
        if supervisor is not None:
            supervisor.session_started()
        else:  # a plugin with an invalid manifest has no supervisor; the registry still counts it
            self._runtime.registry.session_started(plugin)

    def _end_plugin(self, plugin: str) -> None:
        supervisor = self._runtime.supervisor(plugin)
        if supervisor is None:
            self._runtime.registry.session_ended(plugin)
            return
        # Awaited, never cancelled, by close(): the worker drops this session's tracker state.
        task = asyncio.create_task(supervisor.session_ended(self._session_id), name=f"session-end:{self._session_id}")
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)
