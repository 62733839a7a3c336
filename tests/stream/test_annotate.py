"""Drawing tracks on frames: where, what, and only what the options ask for."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from av import VideoFrame

from app.stream.annotate import OverlayOptions, annotate, rgb_to_yuv, track_colour

GREY = (128, 128, 128)
TRACK = {"id": 1, "box": [100, 120, 220, 260], "score": 0.8, "label": "red"}


def grey_frame(width: int = 640, height: int = 480, fmt: str = "yuv420p") -> VideoFrame:
    image = np.full((height, width, 3), GREY, np.uint8)
    frame = VideoFrame.from_ndarray(image, format="rgb24").reformat(format=fmt)
    frame.pts, frame.time_base = 9000, fractions.Fraction(1, 90000)
    return frame


def near(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.abs(pixel.astype(int) - colour).max() <= tolerance)


def test_box_is_drawn_on_its_edges_in_the_track_colour_and_nowhere_inside() -> None:
    out = annotate(grey_frame(), [TRACK], OverlayOptions(labels=False, ids=False)).to_ndarray(format="rgb24")
    colour = track_colour(1)
    for y, x in ((190, 100), (190, 220), (260, 160), (120, 160)):  # left, right, bottom, top edges
        assert near(out[y, x], colour), (y, x, out[y, x])
    assert near(out[190, 160], GREY, 2) and near(out[50, 50], GREY, 2)


def test_caption_tag_sits_above_the_box() -> None:
    out = annotate(grey_frame(), [TRACK], OverlayOptions(boxes=False)).to_ndarray(format="rgb24")
    tag = out[100:119, 100:150]
    assert (np.abs(tag.astype(int) - track_colour(1)).max(axis=2) <= 40).mean() > 0.5  # mostly tag colour
    assert near(out[190, 100], GREY, 2)  # no box


def test_nothing_to_draw_returns_the_same_frame_object() -> None:
    frame = grey_frame()
    assert annotate(frame, [], OverlayOptions()) is frame
    assert annotate(frame, [TRACK], OverlayOptions(boxes=False, labels=False, ids=False)) is frame
    assert annotate(frame, [TRACK], OverlayOptions(min_score=0.9)) is frame


def test_annotated_frame_keeps_pts_time_base_and_format() -> None:
    frame = grey_frame()
    out = annotate(frame, [TRACK], OverlayOptions())
    assert out is not frame
    assert (out.pts, out.time_base, out.format.name, out.width, out.height) == (
        9000,
        frame.time_base,
        "yuv420p",
        640,
        480,
    )


def test_input_frame_is_left_untouched() -> None:
    frame = grey_frame()
    before = frame.to_ndarray().copy()
    annotate(frame, [TRACK], OverlayOptions())
    assert np.array_equal(frame.to_ndarray(), before)


@pytest.mark.parametrize(
    ("width", "height", "fmt"), [(321, 241, "yuv420p"), (640, 480, "rgb24"), (640, 482, "yuv420p")]
)
def test_odd_sizes_and_other_formats_are_drawn_too(width: int, height: int, fmt: str) -> None:
    track = {"id": 1, "box": [10, 20, 100, 120], "score": 1.0, "label": "x"}
    out = annotate(grey_frame(width, height, fmt), [track], OverlayOptions()).to_ndarray(format="rgb24")
    assert near(out[70, 10], track_colour(1)) and near(out[70, 50], GREY, 4)


def test_boxes_outside_the_frame_are_clipped() -> None:
    track = {"id": 2, "box": [-50, -50, 5000, 5000], "score": 1.0, "label": "big"}
    out = annotate(grey_frame(), [track], OverlayOptions(labels=False, ids=False)).to_ndarray(format="rgb24")
    assert near(out[240, 0], track_colour(2)) and near(out[240, 639], track_colour(2))


def test_yuv_colours_match_what_the_decoder_shows() -> None:
    # Drawn in YUV with these values, decoded back to RGB: the palette colours within rounding.
    for colour in ((0, 255, 0), (255, 0, 255), (255, 255, 255)):
        y, u, v = rgb_to_yuv(colour)
        plane = np.zeros((6, 4), np.uint8)
        plane[:4], plane[4, :2], plane[4, 2:], plane[5, :2], plane[5, 2:] = y, u, u, v, v
        rgb = VideoFrame.from_ndarray(plane, format="yuv420p").to_ndarray(format="rgb24")
        assert near(rgb[0, 0], colour, 6), (colour, rgb[0, 0])
