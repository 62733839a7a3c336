"""Input over --max-resolution reaches the plugin downscaled, and its boxes come back in the input's pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from av import VideoFrame

from app.runtime.frames import pixels
from app.stream.pixels import fit_scale, plugin_image, scale_tracks_back
from tests.conftest import LiveServer
from tests.stream.helpers import Clients, client, plugins_dir


def test_a_frame_over_the_limit_is_downscaled_in_either_orientation() -> None:
    landscape = VideoFrame.from_ndarray(np.zeros((1440, 2560, 3), np.uint8), format="rgb24")
    image, scale = plugin_image(landscape, (1280, 720))
    assert image.shape == pixels(image).shape == (720, 1280, 3) and scale == 0.5
    portrait = VideoFrame.from_ndarray(np.zeros((1920, 1080, 3), np.uint8), format="rgb24")
    assert plugin_image(portrait, (1920, 1080))[1] == 1.0  # a phone held upright is within 1920x1080
    assert fit_scale(640, 480, (1920, 1080)) == 1.0


def test_boxes_and_velocities_are_scaled_back_to_the_input() -> None:
    [track] = scale_tracks_back([{"id": 1, "box": [10, 20, 30, 40], "velocity": [5, -5], "label": "x"}], 0.5)
    assert track == {"id": 1, "box": [20, 40, 60, 80], "velocity": [10, -10], "label": "x"}


async def test_a_stream_over_the_limit_gets_boxes_in_its_own_pixels(
    serve: Callable[..., LiveServer], tmp_path: Path, clients: Clients
) -> None:
    # The client sends 640x480; the plugin sees 320x240 and its boxes are doubled back.
    server = serve(plugins_dirs=(plugins_dir(tmp_path, "colorblob"),), max_resolution=(320, 240))
    server.wait_state("colorblob", "INITIALIZED")
    stream = await clients.connect(server.url, "colorblob")
    await stream.wait_for(lambda: len(stream.of_type("tracks")) >= 20, 20, "20 tracks messages")
    for message in stream.of_type("tracks"):
        [track] = message["tracks"]
        truth = client.square_box(message["frame"])
        assert all(abs(a - b) <= 6 for a, b in zip(track["box"], truth, strict=True)), (message, truth)


def test_a_decoded_frame_renders_to_the_colours_swscale_gives() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[100:200, 100:300] = (255, 0, 0)
    rgb[300:400, 320:480] = (30, 200, 90)
    decoded = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    image, _ = plugin_image(decoded, (1920, 1080))
    reference = decoded.to_ndarray(format="rgb24")
    assert image.shape == (480, 640, 3)
    assert int(np.abs(pixels(image).astype(int) - reference.astype(int)).max()) <= 3
