"""The videotracker's tracker at low result rates: velocity in px/s, ids across 300-500 ms gaps (issue 10)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from face_tracker import FaceTracker, TrackerSettings

FRAME = (640, 480)
PTS_PER_FRAME = 3000  # 90 kHz at 30 fps
FACE = 90.0  # px wide and tall, as a face at arm's length from a 640x480 webcam


def make_tracker() -> FaceTracker:
    ids = itertools.count(1)
    return FaceTracker(TrackerSettings(), lambda: next(ids))


def pacing(t: float, phase: float = 0.0, row: int = 0) -> tuple[float, float]:
    """Centre of a face pacing left-right at 200 px/s (turning every 1.5 s) and bobbing up and down;
    `row` 1 walks half a face lower, so two faces cross as in scripts/tracking_sequences.py."""
    period = 3.0
    position = ((t + phase) % period) / period
    x = 120 + 300 * (2 * position if position < 0.5 else 2 - 2 * position)  # 300 px / 1.5 s
    y = 220 + 0.45 * FACE * row + 30 * math.sin(2 * math.pi * t / 1.7)
    return x, y


def boxes_at(centres: list[tuple[float, float]]) -> np.ndarray:
    return np.array([[x - FACE / 2, y - FACE / 2, x + FACE / 2, y + FACE / 2] for x, y in centres])


def feed(tracker: FaceTracker, frames_apart: int, seconds: float, faces: int = 1) -> list[list[int]]:
    """Results every `frames_apart` frames of a 30 fps stream; the ids reported each time, in face order."""
    reported = []
    for index in range(0, round(seconds * 30), frames_apart):
        t = index / 30
        centres = [pacing(t, phase=1.5 * n, row=n) for n in range(faces)]
        found = tracker.update(index, boxes_at(centres), np.full(faces, 0.99), 0.9, FRAME, pts=index * PTS_PER_FRAME)
        by_face = []
        for x, y in centres:
            # The reported face nearest to this one's centre, if it is within half a face.
            distance = {
                f.track_id: math.hypot((f.box[0] + f.box[2]) / 2 - x, (f.box[1] + f.box[3]) / 2 - y) for f in found
            }
            nearest = min(distance, key=lambda track_id: distance[track_id], default=None)
            by_face.append(nearest if nearest is not None and distance[nearest] < FACE / 2 else -1)
        reported.append(by_face)
    return reported


@pytest.mark.parametrize("frames_apart", [9, 12, 15])  # results 300, 400 and 500 ms apart
def test_a_pacing_face_keeps_one_id_with_results_300_to_500_ms_apart(frames_apart: int) -> None:
    """The symptom prevented: the id of a face moving at 200 px/s changing at every turn on a slow CPU."""
    reported = feed(make_tracker(), frames_apart, seconds=12)
    ids = {i for (face,) in reported[2:] for i in [face]}
    assert ids == {1}, reported


def test_two_faces_crossing_back_and_forth_keep_their_ids() -> None:
    """Results 300 ms apart: the faces close in on each other at 400 px/s, 120 px between two results."""
    reported = feed(make_tracker(), 9, seconds=12, faces=2)
    settled = [row for row in reported[2:] if -1 not in row]
    assert len(settled) >= 0.8 * len(reported[2:]), reported
    assert {tuple(row) for row in settled} == {tuple(settled[0])}, reported


def test_the_reported_velocity_is_in_pixels_per_second() -> None:
    tracker = make_tracker()
    found = []
    for index in range(0, 60, 6):  # 200 px/s to the right, results 200 ms apart
        x = 100 + 200 * index / 30
        found = tracker.update(index, boxes_at([(x, 240)]), np.array([0.99]), 0.9, FRAME, pts=index * PTS_PER_FRAME)
    (face,) = found
    assert face.velocity[0] == pytest.approx(200, rel=0.15) and abs(face.velocity[1]) < 20, face.velocity


def test_time_comes_from_the_pts_when_frames_arrive_unevenly() -> None:
    """15 fps input: frame indexes are 66 ms apart, and the velocity must still be px/s."""
    tracker = make_tracker()
    found = []
    for index in range(20):
        t = index / 15
        found = tracker.update(
            index, boxes_at([(100 + 150 * t, 240)]), np.array([0.99]), 0.9, FRAME, pts=round(t * 90000)
        )
    assert found[0].velocity[0] == pytest.approx(150, rel=0.15), found[0].velocity
