"""Watch a livetrack server's plugins live: the state table, and each transition as it happens.

    python scripts/watch_health.py [--url ws://127.0.0.1:8080] [--plain] [--exit-after N]

On a terminal the table is redrawn in place with the latest transitions under it;
with --plain (or when the output is not a terminal) the table is printed at each
snapshot and every transition is one line, for logs and pipes. It reconnects by
itself when the server goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections import deque
from datetime import datetime
from typing import Any, TextIO

import websockets
from websockets.asyncio.client import connect

COLUMNS = ("PLUGIN", "STATE", "DEVICE", "OK", "ERRORS", "P95 MS", "RESTARTS", "SESSIONS", "REASON")
RECENT = 15
CLEAR = "\x1b[H\x1b[2J"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render_table(plugins: dict[str, dict[str, Any]], width: int) -> str:
    rows = [
        [
            h["name"],
            h["state"],
            _cell(h["device"]),
            str(h["success_count"]),
            str(h["error_count"]),
            _cell(h["p95_execution_time_ms"]),
            str(h["restarts"]),
            str(h["active_sessions"]),
            _cell(h["reason"]),
        ]
        for h in (plugins[name] for name in sorted(plugins))
    ]
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in [list(COLUMNS), *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        lines.append(line[:width].rstrip())
    return "\n".join(lines)


def describe(old: str | None, health: dict[str, Any], stamp: str) -> str:
    clock = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S.%f")[:-3]
    reason = f"  ({health['reason']})" if health["reason"] else ""
    return f"{clock}  {health['name']}  {old or '(new)'} -> {health['state']}{reason}"


class Watcher:
    """Keeps the last known health of every plugin and prints what changes."""

    def __init__(self, out: TextIO, plain: bool) -> None:
        self.out = out
        self.plain = plain
        self.plugins: dict[str, dict[str, Any]] = {}
        self.sessions = 0
        self.transitions: deque[str] = deque(maxlen=RECENT)
        self.transition_count = 0

    def handle(self, message: dict[str, Any]) -> None:
        kind, payload = message["type"], message["payload"]
        if kind == "snapshot":
            self._snapshot(payload, message["timestamp"])
        elif kind == "plugin":
            self._plugin(payload, message["timestamp"])
        elif kind == "sessions":
            self.sessions = len(payload["sessions"])
            self._redraw()
        elif kind == "error":
            print(f"server says: {payload['code']}: {payload['message']}", file=self.out, flush=True)

    def _snapshot(self, payload: dict[str, Any], stamp: str) -> None:
        # A snapshot after a gap may hide changes; report the ones it reveals.
        for health in payload["plugins"]:
            old = self.plugins.get(health["name"])
            if old is not None and old["state"] != health["state"]:
                self._transition(old["state"], health, stamp)
        self.plugins = {h["name"]: h for h in payload["plugins"]}
        self.sessions = len(payload["sessions"])
        if self.plain:
            print(render_table(self.plugins, 10_000), file=self.out, flush=True)
        self._redraw()

    def _plugin(self, health: dict[str, Any], stamp: str) -> None:
        old = self.plugins.get(health["name"])
        self.plugins[health["name"]] = health
        if old is None or old["state"] != health["state"]:
            self._transition(old["state"] if old else None, health, stamp)
        self._redraw()

    def _transition(self, old: str | None, health: dict[str, Any], stamp: str) -> None:
        line = describe(old, health, stamp)
        self.transition_count += 1
        self.transitions.append(line)
        if self.plain:
            print(line, file=self.out, flush=True)

    def _redraw(self) -> None:
        if self.plain:
            return
        width = shutil.get_terminal_size().columns
        parts = [CLEAR, render_table(self.plugins, width), f"\n{self.sessions} session(s)\n\nrecent transitions:"]
        parts += [line[:width] for line in self.transitions]
        print("\n".join(parts), file=self.out, flush=True)


async def watch(url: str, watcher: Watcher, exit_after: int | None) -> None:
    """Follow the channel, reconnecting with a growing pause; return after `exit_after` transitions."""
    pause = 0.5
    while True:
        try:
            async with connect(url.rstrip("/") + "/v1/ws/health") as ws:
                pause = 0.5
                async for text in ws:
                    watcher.handle(json.loads(text))
                    if exit_after is not None and watcher.transition_count >= exit_after:
                        return
        except (OSError, websockets.WebSocketException) as exc:
            print(f"not connected to {url} ({exc}); retrying in {pause:.1f} s", file=sys.stderr, flush=True)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="the server's WebSocket base URL")
    parser.add_argument("--plain", action="store_true", help="one line per transition, no redrawing")
    parser.add_argument("--exit-after", type=int, help="exit after this many transitions (for scripts and tests)")
    args = parser.parse_args()
    watcher = Watcher(sys.stdout, plain=args.plain or not sys.stdout.isatty())
    try:
        asyncio.run(watch(args.url, watcher, args.exit_after))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
