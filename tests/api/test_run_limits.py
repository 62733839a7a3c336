"""`POST /v1/plugins/{name}/run` is bounded: concurrent calls per plugin (429) and browser Origins (403)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.conftest import DEFAULT_PLUGINS, FIXTURE_PLUGINS, LiveServer
from tests.helpers import png_with_square


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "unhurried").symlink_to(FIXTURE_PLUGINS / "unhurried")  # 1 s per call: runs overlap for sure
    live = LiveServer(Settings(plugins_dirs=(Path(folder),), max_runs=1)).start()
    try:
        live.wait_state("unhurried", "INITIALIZED")
        yield live
    finally:
        live.stop()


def test_runs_past_the_limit_get_429_with_retry_after(server: LiveServer) -> None:
    async def three_runs() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            calls = (client.post("/v1/plugins/unhurried/run", content=png_with_square()) for _ in range(3))
            return list(await asyncio.gather(*calls))

    # The three calls arrive within milliseconds; the one admitted holds the only run for 1 s.
    responses = sorted(asyncio.run(three_runs()), key=lambda response: response.status_code)
    assert [response.status_code for response in responses] == [200, 429, 429], [r.text for r in responses]
    for refused in responses[1:]:
        assert refused.json()["error"]["code"] == "too_many_runs"
        assert int(refused.headers["Retry-After"]) >= 1
    # The run is given back: a later call is admitted.
    assert server.post("/v1/plugins/unhurried/run", content=png_with_square()).status_code == 200


def test_a_foreign_origin_gets_403_and_a_local_one_runs(server: LiveServer) -> None:
    foreign = server.post(
        "/v1/plugins/unhurried/run", content=png_with_square(), headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "origin_not_allowed"
    local = server.post(
        "/v1/plugins/unhurried/run", content=png_with_square(), headers={"Origin": "http://localhost:3000"}
    )
    assert local.status_code == 200


def test_an_image_over_max_resolution_gets_boxes_in_its_own_pixels(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    (tmp_path / "colorblob").symlink_to(DEFAULT_PLUGINS / "colorblob")
    small = serve(plugins_dirs=(tmp_path,), max_resolution=(80, 60))  # the image is 160x120
    small.wait_state("colorblob", "INITIALIZED")
    response = small.post("/v1/plugins/colorblob/run", content=png_with_square((40, 30, 90, 70), (0, 0, 255)))
    assert response.status_code == 200, response.text
    [track] = response.json()["tracks"]
    assert all(abs(a - b) <= 3 for a, b in zip(track["box"], (40, 30, 90, 70), strict=True)), track
