"""TrackMotion: boxes moved to an output frame's time, and coasting tracks dropped (DESIGN 1)."""

from __future__ import annotations

from typing import Any

import pytest

from app.stream.motion import COASTING_S, TrackMotion
from app.stream.stats import SessionStats


def track(box: list[float], velocity: list[float] | None = None, track_id: int = 1) -> dict[str, Any]:
    made: dict[str, Any] = {"id": track_id, "box": box, "score": 1.0, "label": "face"}
    if velocity is not None:
        made["velocity"] = velocity
    return made


def test_a_box_moves_by_the_plugins_velocity_to_the_frames_time() -> None:
    motion = TrackMotion()
    motion.update([track([100, 100, 200, 200], [200, -100])], at=10.0)
    placed = motion.place(10.25)
    assert placed.tracks[0]["box"] == pytest.approx([150, 75, 250, 175])
    assert placed.age_s == pytest.approx(0.25)


def test_without_a_plugin_velocity_the_host_estimates_one_from_the_last_results() -> None:
    motion = TrackMotion()
    motion.update([track([100, 100, 200, 200])], at=10.0)
    assert motion.place(10.1).tracks[0]["box"] == [100, 100, 200, 200]  # one result: no motion known
    motion.update([track([130, 100, 230, 200])], at=10.2)  # 150 px/s to the right
    assert motion.place(10.4).tracks[0]["box"] == pytest.approx([160, 100, 260, 200])


def test_an_estimate_is_kept_per_track_id() -> None:
    motion = TrackMotion()
    motion.update([track([0, 0, 10, 10], track_id=1), track([100, 0, 110, 10], track_id=2)], at=1.0)
    motion.update([track([10, 0, 20, 10], track_id=1), track([100, 20, 110, 30], track_id=2)], at=1.1)
    moved = {t["id"]: t["box"] for t in motion.place(1.2).tracks}
    assert moved[1] == pytest.approx([20, 0, 30, 10]) and moved[2] == pytest.approx([100, 40, 110, 50])


def test_a_result_past_the_coasting_limit_is_no_longer_drawn() -> None:
    motion = TrackMotion()
    motion.update([track([0, 0, 10, 10], [10, 0])], at=5.0)
    assert motion.place(5.0 + COASTING_S - 0.01).tracks
    coasting = motion.place(5.0 + COASTING_S + 0.01)
    assert coasting.tracks == [] and coasting.age_s == pytest.approx(COASTING_S + 0.01)


def test_motion_off_draws_the_newest_result_where_it_was_found() -> None:
    motion = TrackMotion()
    motion.update([track([0, 0, 10, 10], [100, 0])], at=1.0)
    assert motion.place(1.3, move=False).tracks[0]["box"] == [0, 0, 10, 10]


def test_an_older_frames_result_does_not_replace_a_newer_one() -> None:
    motion = TrackMotion()
    motion.update([track([50, 0, 60, 10])], at=2.0)
    motion.update([track([0, 0, 10, 10])], at=1.0)
    assert motion.place(2.0).tracks[0]["box"] == [50, 0, 60, 10]


def test_cleared_motion_draws_nothing_and_has_no_age() -> None:
    motion = TrackMotion()
    motion.update([track([0, 0, 10, 10])], at=1.0)
    motion.clear()
    placed = motion.place(1.1)
    assert placed.tracks == [] and placed.age_s is None


def test_box_age_quantiles_come_from_the_frames_that_had_a_result() -> None:
    stats = SessionStats()
    for n in range(10):
        stats.frame_out(received_at=n, now=n + 0.01, box_age_s=None if n < 5 else 0.1 * (n - 4))
    ages = stats.snapshot(10.0)["box_age_ms"]
    assert ages["p50"] == pytest.approx(300.0) and ages["p95"] == pytest.approx(500.0)
