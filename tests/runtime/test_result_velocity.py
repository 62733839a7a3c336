"""A track's optional `velocity` as the host accepts it from a plugin (DESIGN 3.2)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from app.runtime.frames import InvalidResult, validate_results


def one_track(**extra: Any) -> list[dict[str, Any]]:
    return [{"tracks": [{"id": 1, "box": [0, 0, 10, 10], "score": 0.9, "label": "face", **extra}]}]


def test_a_velocity_is_kept_as_two_numbers() -> None:
    assert validate_results(one_track(velocity=(120.123, -3)), 1)[0]["tracks"][0]["velocity"] == [120.12, -3.0]


def test_a_track_without_velocity_has_none() -> None:
    assert "velocity" not in validate_results(one_track(), 1)[0]["tracks"][0]


@pytest.mark.parametrize("velocity", [[1.0], [1, 2, 3], "fast", [math.nan, 0], [0, math.inf], [True, 0]])
def test_a_wrong_velocity_is_the_plugins_error(velocity: Any) -> None:
    with pytest.raises(InvalidResult, match="velocity"):
        validate_results(one_track(velocity=velocity), 1)
