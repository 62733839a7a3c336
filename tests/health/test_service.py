"""/healthz, /readyz and /metrics (DESIGN 4.4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.api.metrics import LivetrackCollector
from app.health.hub import HealthHub
from app.runtime.registry import PluginRegistry
from tests.conftest import LiveServer
from tests.health.clients import Subscriber
from tests.helpers import png_with_square


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample by its name, through prometheus-client's own parser."""
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, f"{name}{labels}: {matching}"
    return float(matching[0])


def test_healthz_answers_while_the_process_serves(serve: Callable[..., LiveServer]) -> None:
    response = serve(plugins_dirs=()).get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_503_naming_loading_plugins_then_200_once_all_left_loaded(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    folder = plugins_dir("init_raises")
    sleepy = folder / "sleepy"
    sleepy.mkdir()
    manifest = {"name": "sleepy", "version": "1.0.0", "description": "slow to start", "entrypoint": "plugin:Plugin"}
    (sleepy / "manifest.json").write_text(json.dumps(manifest))
    (sleepy / "plugin.py").write_text(
        "import time\n\n\nclass Plugin:\n    def __init__(self, device, config):\n        time.sleep(2.0)\n\n"
        "    def process(self, batch):\n        return [{'tracks': []} for _ in batch]\n"
    )
    server = serve(plugins_dirs=(folder,))
    response = server.get("/readyz")
    assert response.status_code == 503, response.text
    assert "sleepy" in response.json()["pending"] and response.json()["ready"] is False
    server.wait_state("sleepy", "INITIALIZED")
    server.wait_state("init_raises", "FAILED")
    response = server.get("/readyz")
    # A FAILED plugin has left LOADED too: readiness is about loading being over.
    assert (response.status_code, response.json()) == (200, {"ready": True, "pending": [], "reason": None})


def test_readyz_stays_200_while_a_plugin_crash_loops_after_its_first_load(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    server = serve(plugins_dirs=(plugins_dir("colorblob", "segfault"),))
    server.wait_state("segfault", "INITIALIZED")
    server.wait_state("colorblob", "INITIALIZED")
    seen: list[tuple[str, int]] = []
    for _ in range(3):  # crash, automatic restart (LOADED again), crash again...
        assert server.post("/v1/plugins/segfault/run", content=png_with_square()).status_code == 502
        while (state := str(server.health("segfault")["state"])) != "INITIALIZED":
            seen.append((state, server.get("/readyz").status_code))
    assert server.post("/v1/plugins/segfault/restart").status_code == 202  # a reload: LOADED once more
    while (state := str(server.health("segfault")["state"])) != "INITIALIZED":
        seen.append((state, server.get("/readyz").status_code))
    assert ("LOADED", 200) in seen, seen
    assert {status for _, status in seen} == {200}
    assert server.get("/readyz").json() == {"ready": True, "pending": [], "reason": None}


async def test_metrics_parse_and_carry_plugin_series_after_real_work(
    serve: Callable[..., LiveServer], plugins_dir: Callable[..., Path]
) -> None:
    server = serve(plugins_dirs=(plugins_dir("colorblob", "segfault"),))
    server.wait_state("colorblob", "INITIALIZED")
    server.wait_state("segfault", "INITIALIZED")
    assert server.post("/v1/plugins/colorblob/run", content=png_with_square()).status_code == 200
    assert server.post("/v1/plugins/segfault/run", content=png_with_square()).status_code == 502
    server.wait_for("segfault", lambda h: h["state"] == "INITIALIZED" and h["restarts"] == 1)
    subscriber = await Subscriber.open(server.ws_url)
    await subscriber.next()

    response = server.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    for state in ("LOADED", "INITIALIZED", "RUNNING", "FAILED", "UNAVAILABLE"):
        expected = 1.0 if state == "INITIALIZED" else 0.0
        assert value(found, "livetrack_plugin_state", plugin="colorblob", state=state) == expected
    assert value(found, "livetrack_plugin_successes_total", plugin="colorblob") == 1
    assert value(found, "livetrack_plugin_errors_total", plugin="segfault") == 1
    assert value(found, "livetrack_plugin_restarts_total", plugin="segfault") == 1
    assert value(found, "livetrack_plugin_execution_seconds_count", plugin="colorblob") == 1
    assert 0 < value(found, "livetrack_plugin_execution_seconds_sum", plugin="colorblob") < 1
    buckets = [s.value for s in found["livetrack_plugin_execution_seconds_bucket"] if s.labels["plugin"] == "colorblob"]
    assert buckets == sorted(buckets) and buckets[-1] == 1
    assert value(found, "livetrack_health_subscribers") == 1
    # At least the plugin dispatchers, the sessions' background work and this subscriber's tasks.
    assert value(found, "livetrack_asyncio_tasks") >= 4
    assert value(found, "process_resident_memory_bytes") > 0
    await subscriber.close()

    openmetrics = server.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert any(f.name == "livetrack_plugin_state" for f in parse_openmetrics(openmetrics.text))  # type: ignore[no-untyped-call]


class FakeSessions:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def summaries(self) -> list[dict[str, Any]]:
        return self.rows


def test_session_series_follow_the_session_summaries() -> None:
    registry = PluginRegistry()
    registry.register("p")
    streaming = {
        "session_id": "s1",
        "plugin": "p",
        "state": "streaming",
        "frames_in": 300,
        "frames_processed": 250,
        "frames_dropped": 50,
        "frames_out": 300,
        "fps_in": 30.0,
        "fps_out": 29.5,
        "fps_processed": 8.0,
        "latency_ms": {"p50": 12.0, "p95": 40.0},
        "box_age_ms": {"p50": 120.0, "p95": 250.0},
    }
    connecting = {
        **streaming,
        "session_id": "s2",
        "state": "connecting",
        "fps_in": None,
        "latency_ms": None,
        "box_age_ms": {"p50": None, "p95": None},
    }
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(LivetrackCollector(HealthHub(registry, FakeSessions([streaming, connecting]))))
    found = samples(generate_latest(collectors).decode())
    assert value(found, "livetrack_sessions", state="streaming") == 1
    assert value(found, "livetrack_sessions", state="connecting") == 1
    assert value(found, "livetrack_session_fps", session="s1", plugin="p", direction="out") == 29.5
    assert value(found, "livetrack_session_frames_total", session="s1", kind="dropped") == 50
    assert value(found, "livetrack_session_latency_seconds", session="s1", quantile="0.95") == 0.04
    assert value(found, "livetrack_session_box_age_seconds", session="s1", quantile="0.5") == 0.12
    assert value(found, "livetrack_session_box_age_seconds", session="s1", quantile="0.95") == 0.25
    assert value(found, "livetrack_session_fps", session="s1", plugin="p", direction="processed") == 8.0
    # Unknown yet (null in the summary) means no sample, never a made-up zero.
    assert not [
        s for s in found["livetrack_session_fps"] if s.labels["session"] == "s2" and s.labels["direction"] == "in"
    ]
    assert not [s for s in found.get("livetrack_session_latency_seconds", []) if s.labels["session"] == "s2"]
    assert not [s for s in found.get("livetrack_session_box_age_seconds", []) if s.labels["session"] == "s2"]
