"""Client options a plugin declares (manifest `options`, a JSON Schema) and the host checks (DESIGN 3.1, 3.2).

A plugin never sees an option of the wrong type, range or name: every offer's and
data channel's options are validated here first, and a bad one is the client's
error. The host's own overlay options (boxes, labels, ids, motion, min_score) are accepted
by every plugin, so a schema with `additionalProperties: false` need not list them;
a schema may still declare `min_score` to narrow it. A plugin without a schema
accepts any plain JSON options (bounded in app/stream/options.py).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

logger = logging.getLogger(__name__)

CHECKED_OPTIONS_KEPT = 256
HOST_OPTIONS: dict[str, Any] = {
    "boxes": {"type": "boolean"},
    "labels": {"type": "boolean"},
    "ids": {"type": "boolean"},
    "motion": {"type": "boolean"},
    "min_score": {"type": "number", "minimum": 0, "maximum": 1},
}


class OptionsError(ValueError):
    """Options a client sent that cannot be used; the message names the option and the rule it breaks."""


def check_schema(schema: Any) -> dict[str, Any]:
    """A manifest's `options` schema, or ValueError saying what is wrong with it."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ValueError('\'options\' must be a JSON Schema object with "type": "object"')
    if not isinstance(schema.get("properties", {}), dict):
        raise ValueError("'options' has 'properties' that is not an object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"'options' is not a valid JSON Schema ({exc.message[:200]})") from None
    return schema


def _short(value: Any) -> str:
    return json.dumps(value, default=str)[:80]


class OptionsSchema:
    """The options one plugin accepts; `check` raises OptionsError for the first broken rule."""

    def __init__(self, plugin: str, schema: dict[str, Any] | None) -> None:
        self.plugin = plugin
        declared = schema or {"type": "object"}
        self.properties: dict[str, Any] = {**HOST_OPTIONS, **declared.get("properties", {})}
        self._validator = Draft202012Validator({**declared, "properties": self.properties})
        # Verdicts on option objects seen by `accepts`, by identity; the object is kept so its id stays its own.
        self._checked: OrderedDict[int, tuple[dict[str, Any], bool]] = OrderedDict()

    def check(self, options: dict[str, Any]) -> None:
        error = best_match(self._validator.iter_errors(options))
        if error is not None:
            raise OptionsError(self._describe(error, options))

    def accepts(self, options: dict[str, Any]) -> bool:
        """Per frame: True when `options` fit. A session's options object changes only when the client sends
        new ones, so each object is validated once; a reload with a new schema starts afresh."""
        seen = self._checked.get(id(options))
        if seen is not None and seen[0] is options:
            return seen[1]
        verdict = self._validator.is_valid(options)
        if not verdict:
            logger.warning("plugin %s: a session's options no longer fit its schema; using defaults", self.plugin)
        self._checked[id(options)] = (options, verdict)
        if len(self._checked) > CHECKED_OPTIONS_KEPT:
            self._checked.popitem(last=False)
        return bool(verdict)

    def _describe(self, error: ValidationError, options: dict[str, Any]) -> str:
        if error.validator == "additionalProperties" and not error.absolute_path:
            unknown = sorted(key for key in options if key not in self.properties)
            return (
                f"option {unknown[0][:80]!r} is not accepted by plugin {self.plugin} (additionalProperties: false); "
                f"it accepts {sorted(self.properties)}"
            )
        name = str(error.absolute_path[0]) if error.absolute_path else "options"
        return (
            f"option {name[:80]!r} breaks the rule {error.validator}: {_short(error.validator_value)} "
            f"of plugin {self.plugin}, got {_short(error.instance)}"
        )
