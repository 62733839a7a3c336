"""The plugin REST API against the real server: shapes, odd input, load (DESIGN 4.1)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Settings
from tests.conftest import DEFAULT_PLUGINS, FIXTURE_PLUGINS, LiveServer
from tests.helpers import png_with_square

HEALTH_FIELDS = {
    "name", "state", "description", "version", "reason", "requires_gpu", "device", "uptime_seconds", "last_used",
    "success_count", "error_count", "last_execution_time_ms", "avg_execution_time_ms", "p95_execution_time_ms",
    "restarts", "active_sessions", "backend", "replicas",
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # colorblob and one crashing plugin, in a folder of their own.
    folder = tmp_path_factory.mktemp("plugins")
    for name in ("segfault",):
        (folder / name).symlink_to(FIXTURE_PLUGINS / name)
    (folder / "colorblob").symlink_to(DEFAULT_PLUGINS / "colorblob")
    live = LiveServer(Settings(plugins_dirs=(Path(folder),))).start()
    try:
        live.wait_state("colorblob", "INITIALIZED")
        live.wait_state("segfault", "INITIALIZED")
        yield live
    finally:
        live.stop()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def test_list_is_a_flat_sorted_list_of_full_health_objects(server: LiveServer) -> None:
    response = server.get("/v1/plugins")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list) and [h["name"] for h in body] == ["colorblob", "segfault"]
    for health in body:
        assert HEALTH_FIELDS <= set(health)
    assert server.health("colorblob")["device"] == "cpu"


def test_local_workers_report_the_process_backend_and_their_one_replica(server: LiveServer) -> None:
    health = server.health("colorblob")
    assert (health["backend"], health["replicas"]) == ("process", {"running": 1, "target": 1})


@pytest.mark.parametrize(
    "name",
    ["nope", "ünïcødé-名前", "x" * 10_000, "..%2Fx", "%00", "colorblob%00", "COLORBLOB", "colorblob ", "%2e%2e"],
)
def test_unknown_and_odd_names_are_404_json(server: LiveServer, name: str) -> None:
    assert_error(server.get(f"/v1/plugins/{name}/health"), 404)


def test_dot_dot_paths_never_escape(server: LiveServer) -> None:
    raw = httpx.Request("GET", server.url + "/v1/plugins/../x/health")
    raw.url = httpx.URL(server.url + "/v1/plugins/%2E%2E%2Fx/health")
    with httpx.Client() as client:
        assert_error(client.send(raw), 404)


def test_unknown_routes_and_methods_use_the_error_shape(server: LiveServer) -> None:
    assert_error(server.get("/v1/nothing-here"), 404)
    assert_error(httpx.delete(server.url + "/v1/plugins"), 405)


def test_run_returns_tracks_for_an_image(server: LiveServer) -> None:
    response = server.post("/v1/plugins/colorblob/run", content=png_with_square((40, 30, 90, 70), (0, 0, 255)))
    assert response.status_code == 200
    body = response.json()
    assert body["tracks"] == [{"id": 1, "box": [40.0, 30.0, 90.0, 70.0], "score": 1.0, "label": "blue"}]
    assert body["execution_time_ms"] > 0
    assert server.health("colorblob")["success_count"] >= 1


def test_run_rejects_bad_images(server: LiveServer) -> None:
    assert_error(server.post("/v1/plugins/colorblob/run", content=b"not an image"), 400, "invalid_image")
    assert_error(server.post("/v1/plugins/colorblob/run", content=b""), 400, "invalid_image")
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    response = server.post("/v1/plugins/colorblob/run", content=gif)
    assert response.status_code == 400
    assert_error(server.post("/v1/plugins/colorblob/run", content=b"\xff" * (10 * 1024 * 1024 + 1)), 413)
    assert_error(server.post("/v1/plugins/nope/run", content=png_with_square()), 404, "plugin_not_found")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(min_size=1, max_size=300),
    body=st.binary(max_size=2048),
    verb=st.sampled_from(["health", "run", "restart"]),
)
def test_no_name_or_body_gets_a_500(server: LiveServer, name: str, body: bytes, verb: str) -> None:
    path = f"/v1/plugins/{quote(name, safe='')}/{verb}"
    if verb == "health":
        response = server.get(path)
    else:
        response = server.post(path, content=body)
    assert response.status_code < 500 or response.status_code in (502, 504), response.text
    assert response.status_code in (200, 202, 400, 404, 405, 409, 413, 502, 504)
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message"}


def test_200_concurrent_health_requests_while_a_plugin_crash_loops(server: LiveServer) -> None:
    stop = threading.Event()
    crashes = 0

    def crash_loop() -> None:
        nonlocal crashes
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                state = client.get(f"{server.url}/v1/plugins/segfault/health").json()["state"]
                if state == "INITIALIZED":
                    if (
                        client.post(f"{server.url}/v1/plugins/segfault/run", content=png_with_square()).status_code
                        == 502
                    ):
                        crashes += 1
                elif state == "FAILED":
                    client.post(f"{server.url}/v1/plugins/segfault/restart")
                time.sleep(0.01)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
            paths = ["/v1/plugins", "/v1/plugins/segfault/health", "/v1/plugins/colorblob/health"]
            responses = await asyncio.gather(*(client.get(paths[i % 3]) for i in range(200)))
        return [r.status_code for r in responses]

    looper = threading.Thread(target=crash_loop)
    looper.start()
    try:
        statuses = []
        for _ in range(3):
            statuses += asyncio.run(burst())
            time.sleep(0.3)
    finally:
        stop.set()
        looper.join(30)
    assert statuses == [200] * 600
    assert crashes >= 1
    assert server.get("/healthz").status_code == 200
