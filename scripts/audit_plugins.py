"""Load every plugin the way the server does and print one row per plugin.

    python scripts/audit_plugins.py [--plugins-dir DIR ...] [--gpu-policy auto|require|cpu] [--strict] [--json]

--strict exits 1 when any plugin is not INITIALIZED; --json prints the health objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from app.config import DEFAULT_PLUGINS_DIR, GPU_POLICIES
from app.runtime.runtime import PluginRuntime


async def audit(plugin_dirs: list[Path], gpu_policy: str, timeout_s: float) -> list[dict[str, Any]]:
    runtime = PluginRuntime(plugin_dirs, gpu_policy, "WARNING")
    runtime.start()
    try:
        await runtime.wait_settled(timeout_s)
    except TimeoutError:
        pass  # still LOADED plugins are reported as such
    finally:
        health = runtime.registry.list()
        await runtime.close()
    return health


def table(rows: list[dict[str, Any]]) -> str:
    header = ("NAME", "STATE", "DEVICE", "REASON")
    cells = [header] + [
        (h["name"], h["state"], h["device"] or "-", h["reason"] or h.get("degraded") or "") for h in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in cells
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins-dir", action="append", type=Path, dest="plugins_dirs")
    parser.add_argument("--gpu-policy", choices=GPU_POLICIES, default="auto")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every plugin is INITIALIZED")
    parser.add_argument("--json", action="store_true", help="print the health objects as JSON")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for plugins to load")
    args = parser.parse_args(argv)
    logging.basicConfig(level="ERROR", format="%(levelname)s %(name)s %(message)s")
    rows = asyncio.run(audit(args.plugins_dirs or [DEFAULT_PLUGINS_DIR], args.gpu_policy, args.timeout))
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    if args.strict and any(row["state"] != "INITIALIZED" for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
