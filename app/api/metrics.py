"""GET /metrics: Prometheus exposition, read from the registry and sessions at scrape time (DESIGN 4.4)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.health.hub import HealthHub
from app.runtime.registry import EXECUTION_BUCKETS_MS, PluginRecord, PluginState

SESSION_FRAME_KINDS = ("in", "processed", "dropped", "out")


class LivetrackCollector:
    """Turns the registry and session summaries into metric families on every scrape.

    Nothing is copied into prometheus-client's own metric objects, so there is no second
    copy of the counters to keep in step, and a plugin or session that is gone is gone.
    """

    def __init__(self, hub: HealthHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        registry = self._hub.registry
        records = [registry.get(name) for name in registry.names()]
        yield from _plugin_families(records)
        yield from _session_families(self._hub.sessions())
        subscribers = GaugeMetricFamily("livetrack_health_subscribers", "Open /v1/ws/health subscriptions.")
        subscribers.add_metric([], self._hub.subscriber_count)
        yield subscribers
        # A count that only grows is a leaked task: the soak test and operators watch its slope.
        try:
            alive = len(asyncio.all_tasks())
        except RuntimeError:  # collected outside the server's loop: there is nothing to count
            return
        tasks = GaugeMetricFamily("livetrack_asyncio_tasks", "asyncio tasks alive on the server's event loop.")
        tasks.add_metric([], alive)
        yield tasks


def _plugin_families(records: list[PluginRecord]) -> Iterator[Metric]:
    labels = ["plugin"]
    state = GaugeMetricFamily(
        "livetrack_plugin_state", "1 for the plugin's current state, 0 for the others.", labels=["plugin", "state"]
    )
    successes = CounterMetricFamily(
        "livetrack_plugin_successes", "Frames the plugin processed successfully.", labels=labels
    )
    errors = CounterMetricFamily("livetrack_plugin_errors", "Calls of the plugin that failed.", labels=labels)
    restarts = CounterMetricFamily(
        "livetrack_plugin_restarts", "Restarts of the plugin, automatic and manual.", labels=labels
    )
    sessions = GaugeMetricFamily("livetrack_plugin_active_sessions", "Sessions using the plugin.", labels=labels)
    execution = HistogramMetricFamily(
        "livetrack_plugin_execution_seconds", "Time of one call of the plugin (one batch of frames).", labels=labels
    )
    bounds = [f"{bound / 1000:g}" for bound in EXECUTION_BUCKETS_MS] + ["+Inf"]
    for record in records:
        name = [record.name]
        for candidate in PluginState:
            state.add_metric([record.name, candidate.value], 1.0 if record.state is candidate else 0.0)
        successes.add_metric(name, record.success_count)
        errors.add_metric(name, record.error_count)
        restarts.add_metric(name, record.restarts)
        sessions.add_metric(name, record.active_sessions)
        histogram = record.execution_histogram
        cumulative = list(accumulate(histogram.counts))
        execution.add_metric(name, list(zip(bounds, cumulative, strict=True)), histogram.sum_ms / 1000)
    yield from (state, successes, errors, restarts, sessions, execution)


def _session_families(summaries: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["session", "plugin"]
    count = GaugeMetricFamily("livetrack_sessions", "Sessions by state.", labels=["state"])
    fps = GaugeMetricFamily("livetrack_session_fps", "Frames per second of a session.", labels=[*labels, "direction"])
    frames = CounterMetricFamily(
        "livetrack_session_frames", "Frames of a session by what became of them.", labels=[*labels, "kind"]
    )
    latency = GaugeMetricFamily(
        "livetrack_session_latency_seconds",
        "Frame received to annotated frame out, by quantile.",
        labels=[*labels, "quantile"],
    )
    box_age = GaugeMetricFamily(
        "livetrack_session_box_age_seconds",
        "Age of the result drawn on each output frame (its frame's arrival to the output frame's), by quantile.",
        labels=[*labels, "quantile"],
    )
    states: dict[str, int] = {}
    for summary in summaries:
        states[str(summary.get("state"))] = states.get(str(summary.get("state")), 0) + 1
        ids = [str(summary.get("session_id")), str(summary.get("plugin"))]
        for direction in ("in", "out", "processed"):
            _add(fps, [*ids, direction], summary.get(f"fps_{direction}"))
        for kind in SESSION_FRAME_KINDS:
            _add(frames, [*ids, kind], summary.get(f"frames_{kind}"))
        _add_quantiles(latency, ids, summary.get("latency_ms"))
        _add_quantiles(box_age, ids, summary.get("box_age_ms"))
    for state, number in sorted(states.items()):
        count.add_metric([state], number)
    yield from (count, fps, frames, latency, box_age)


def _add_quantiles(family: GaugeMetricFamily, ids: list[str], quantiles_ms: object) -> None:
    """p50 and p95 of a summary's {p50, p95} milliseconds, as seconds."""
    known = quantiles_ms if isinstance(quantiles_ms, dict) else {}
    for key, quantile in (("p50", "0.5"), ("p95", "0.95")):
        value = known.get(key)
        _add(family, [*ids, quantile], value / 1000 if isinstance(value, int | float) else None)


def _add(family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: object) -> None:
    """Add a sample only when the summary knows the value (null before the first frames)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        family.add_metric(labels, value)


async def metrics(request: Request) -> Response:
    # A registry per scrape: nothing global, so several servers in one process (tests) never collide.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LivetrackCollector(request.state.health))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
