"""Per-session client options: overlay toggles (and `motion`), `min_score`, plugin choice, and plugin options.

The same rules apply to the offer's `options` and to `options` messages on the
data channel. Overlay keys are checked here; the merged options are then checked
against the plugin's declared schema (app/runtime/options_schema.py) and reach it
as `Frame.options` (the overlay keys too, so a plugin can use `min_score` as its
own threshold).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from app.runtime.options_schema import HOST_OPTIONS, OptionsError, OptionsSchema
from app.stream.annotate import OverlayOptions

OVERLAY_FLAGS = ("boxes", "labels", "ids", "motion")
MAX_OPTION_KEYS = 64
MAX_OPTIONS_BYTES = 8 * 1024
# Keys of an `options` message that are about the message or the session, not the plugin.
NOT_FOR_PLUGIN = ("type", "plugin")


@dataclass(frozen=True)
class SessionOptions:
    overlay: OverlayOptions = OverlayOptions()
    plugin_options: dict[str, Any] = field(default_factory=dict)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionsError(f"option {key!r} must be true or false, got {json.dumps(value)[:80]}")
    return value


def _min_score(value: Any) -> float:
    # An int is finite however large (JSON allows 10**400, which float() cannot hold): only the range applies.
    not_a_number = isinstance(value, bool) or not isinstance(value, (int, float))
    if not_a_number or (isinstance(value, float) and not math.isfinite(value)):
        raise OptionsError(f"option 'min_score' must be a number within 0..1, got {json.dumps(value)[:80]}")
    if not 0 <= value <= 1:
        raise OptionsError(f"option 'min_score' must be within 0..1, got {json.dumps(value)[:80]}")
    return float(value)


def host_options_only(current: SessionOptions) -> SessionOptions:
    """What a session keeps on a plugin switch: the old plugin's own options mean nothing to the new one."""
    kept = {key: value for key, value in current.plugin_options.items() if key in HOST_OPTIONS}
    return SessionOptions(current.overlay, kept)


def requested_plugin(raw: dict[str, Any]) -> str | None:
    """The `plugin` an options object asks for, or None; OptionsError when it is not a name."""
    plugin = raw.get("plugin")
    if plugin is not None and (not isinstance(plugin, str) or not plugin):
        raise OptionsError(f"option 'plugin' must be a plugin name, got {json.dumps(plugin)[:80]}")
    return plugin


def merge_options(current: SessionOptions, raw: Any, schema: OptionsSchema) -> SessionOptions:
    """`current` updated with the keys of `raw` (a JSON object), as `schema`'s plugin accepts them;
    OptionsError names the first bad key and the rule it breaks."""
    if not isinstance(raw, dict):
        raise OptionsError(f"options must be a JSON object, got {type(raw).__name__}")
    overlay = current.overlay
    for key in OVERLAY_FLAGS:
        if key in raw:
            overlay = replace(overlay, **{key: _flag(key, raw[key])})
    if "min_score" in raw:
        overlay = replace(overlay, min_score=_min_score(raw["min_score"]))
    requested_plugin(raw)
    plugin_options = {**current.plugin_options, **{k: v for k, v in raw.items() if k not in NOT_FOR_PLUGIN}}
    if len(plugin_options) > MAX_OPTION_KEYS:
        raise OptionsError(f"at most {MAX_OPTION_KEYS} option keys are kept, got {len(plugin_options)}")
    try:
        size = len(json.dumps(plugin_options, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise OptionsError(f"options must be plain JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    if size > MAX_OPTIONS_BYTES:
        raise OptionsError(f"options take {size} bytes as JSON; at most {MAX_OPTIONS_BYTES} are kept")
    # Plain and bounded first: a schema's range rules pass NaN, which compares false with everything.
    schema.check(plugin_options)
    return SessionOptions(overlay, plugin_options)
