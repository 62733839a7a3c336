"""Client options: overlay keys are checked, the rest reaches the plugin, errors name the value."""

from __future__ import annotations

import math
from typing import Any

import pytest

from app.stream.annotate import OverlayOptions
from app.stream.options import OptionsError, SessionOptions, merge_options


def test_overlay_keys_update_only_what_is_given() -> None:
    options = merge_options(SessionOptions(), {"labels": False, "min_score": 0.5})
    options = merge_options(options, {"type": "options", "ids": False})
    assert options.overlay == OverlayOptions(boxes=True, labels=False, ids=False, min_score=0.5)


def test_plugin_options_pass_through_without_type_and_plugin() -> None:
    options = merge_options(SessionOptions(), {"type": "options", "plugin": "x", "min_area": 10, "min_score": 0.2})
    assert options.plugin_options == {"min_area": 10, "min_score": 0.2}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ([], "JSON object"),
        ({"boxes": 1}, "'boxes'"),
        ({"labels": "no"}, "'labels'"),
        ({"min_score": -0.1}, "-0.1"),
        ({"min_score": math.nan}, "'min_score'"),
        ({"min_score": True}, "'min_score'"),
        ({"plugin": 3}, "'plugin'"),
        ({f"k{i}": i for i in range(65)}, "at most 64"),
        ({"blob": "x" * 9000}, "bytes"),
    ],
)
def test_bad_options_raise_naming_the_problem(raw: Any, named: str) -> None:
    with pytest.raises(OptionsError) as error:
        merge_options(SessionOptions(), raw)
    assert named in str(error.value)
