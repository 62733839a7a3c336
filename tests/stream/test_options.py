"""Client options: overlay keys are checked, the rest is checked against the plugin's schema, errors name the rule."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.runtime.manifest import read_manifest
from app.runtime.options_schema import OptionsError, OptionsSchema
from app.stream.annotate import OverlayOptions
from app.stream.options import SessionOptions, host_options_only, merge_options
from tests.conftest import DEFAULT_PLUGINS

NO_SCHEMA = OptionsSchema("free", None)
COLORBLOB = OptionsSchema("colorblob", read_manifest(DEFAULT_PLUGINS / "colorblob").options)


def test_overlay_keys_update_only_what_is_given() -> None:
    options = merge_options(SessionOptions(), {"labels": False, "min_score": 0.5}, NO_SCHEMA)
    options = merge_options(options, {"type": "options", "ids": False}, NO_SCHEMA)
    assert options.overlay == OverlayOptions(boxes=True, labels=False, ids=False, min_score=0.5)


def test_plugin_options_pass_through_without_type_and_plugin() -> None:
    raw = {"type": "options", "plugin": "x", "min_area": 10, "min_score": 0.2}
    options = merge_options(SessionOptions(), raw, NO_SCHEMA)
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
        ({"min_score": -(10**400)}, "within 0..1"),  # JSON allows it; float() cannot hold it
        ({"plugin": 3}, "'plugin'"),
        ({f"k{i}": i for i in range(65)}, "at most 64"),
        ({"blob": "x" * 9000}, "bytes"),
    ],
)
def test_bad_options_raise_naming_the_problem(raw: Any, named: str) -> None:
    with pytest.raises(OptionsError) as error:
        merge_options(SessionOptions(), raw, NO_SCHEMA)
    assert named in str(error.value)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"min_area": "big"}, "option 'min_area' breaks the rule type: \"integer\""),
        ({"min_area": 0}, "option 'min_area' breaks the rule minimum: 1"),
        ({"min_area": 10**40}, "option 'min_area' breaks the rule maximum"),
        ({"min_area": math.inf}, "plain JSON"),
        ({"min_area": {"a": [1]}}, "option 'min_area' breaks the rule type"),
        ({"min_aera": 3}, "option 'min_aera' is not accepted by plugin colorblob (additionalProperties: false)"),
    ],
)
def test_the_schema_names_the_option_and_the_rule(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(OptionsError) as error:
        merge_options(SessionOptions(), raw, COLORBLOB)
    assert named in str(error.value)


def test_host_keys_are_accepted_by_a_closed_schema() -> None:
    raw = {"boxes": False, "labels": True, "ids": True, "motion": False, "min_score": 0.3, "min_area": 12}
    assert merge_options(SessionOptions(), raw, COLORBLOB).plugin_options == raw


def test_a_refused_message_leaves_the_options_as_they_were() -> None:
    before = merge_options(SessionOptions(), {"min_area": 12}, COLORBLOB)
    with pytest.raises(OptionsError):
        merge_options(before, {"min_area": 30, "labels": "x"}, COLORBLOB)
    assert before.plugin_options == {"min_area": 12}


def test_shipped_manifests_declare_closed_schemas() -> None:
    for name in ("colorblob", "videotracker"):
        schema = read_manifest(DEFAULT_PLUGINS / name).options
        assert schema is not None and schema["additionalProperties"] is False, json.dumps(schema)


def test_options_checked_before_a_new_schema_are_refused_per_frame() -> None:
    options = merge_options(SessionOptions(), {"min_area": 12}, COLORBLOB).plugin_options
    assert COLORBLOB.accepts(options)
    stricter = OptionsSchema(
        "colorblob", {"type": "object", "properties": {"min_area": {"type": "integer", "minimum": 50}}}
    )
    assert not stricter.accepts(options) and not stricter.accepts(options)  # the verdict is kept for the object
    assert stricter.accepts({"min_area": 60})


def test_a_plugin_switch_keeps_the_host_options_and_drops_the_old_plugins_own() -> None:
    videotracker = OptionsSchema("videotracker", read_manifest(DEFAULT_PLUGINS / "videotracker").options)
    colorblob_options = merge_options(SessionOptions(), {"min_area": 12, "labels": False, "min_score": 0.4}, COLORBLOB)
    with pytest.raises(OptionsError, match="'min_area' is not accepted by plugin videotracker"):
        merge_options(colorblob_options, {"plugin": "videotracker"}, videotracker)
    switched = merge_options(host_options_only(colorblob_options), {"plugin": "videotracker"}, videotracker)
    assert switched.plugin_options == {"labels": False, "min_score": 0.4}
    assert switched.overlay == colorblob_options.overlay
