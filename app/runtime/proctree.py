"""Every process a worker started, found and killed with it (DESIGN 3.6).

A plugin may start processes, which may start more, call `setsid`, or ignore
SIGTERM. Three nets catch them, because each one alone has a hole:

- the process group: the worker leads its own group (`setpgid` at start) and its
  children join it, unless they call `setsid`/`setpgid`;
- parenthood: the worker is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so an
  orphaned descendant is re-parented to the worker, not to init, and stays under
  it through ppid links for as long as the worker lives;
- memory: the host re-reads the tree every few tenths of a second and remembers
  each descendant (pid and start time), for when the worker is already dead (a
  crash) and the ppid links are gone.

A sweep stops (SIGSTOP) everything it finds before it kills anything, so nothing
forks while it looks, then sends SIGKILL, which no process can ignore or catch.
Signals go through a pidfd opened after the start time was checked, so a pid that
was reused by an unrelated process is never signalled. Linux only (`/proc`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SWEEP_ROUNDS = 20


@dataclass(frozen=True)
class Proc:
    """A process, told apart from a later one that reuses its pid by its start time (clock ticks after boot)."""

    pid: int
    started: int


def _stat(pid: int | str) -> tuple[int, int, int] | None:
    """(ppid, pgid, start time) of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            return None  # a zombie holds no resources and ignores signals: nothing left to stop
        return int(fields[1]), int(fields[2]), int(fields[19])
    except (ValueError, IndexError):
        return None  # read while the process was going away


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, pgid, start time) of every live process this host shows us."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (entry := _stat(name)) is not None:
            table[int(name)] = entry
    return table


def find_tree(root: int, remembered: Iterable[Proc] = ()) -> set[Proc]:
    """The root's descendants, its process group's members and the remembered processes still alive.

    The root itself is left out: its owner reaps it.
    """
    if root <= 1:
        raise ValueError(f"not a worker's pid: {root}")  # 0 or 1 would sweep this process group, or everything
    table = process_table()
    pids = {p.pid for p in remembered if p.pid in table and table[p.pid][2] == p.started}
    pids |= {pid for pid, (_, pgid, _) in table.items() if pgid == root}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [root, *pids]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in pids:
                pids.add(child)
                todo.append(child)
    pids.discard(root)
    pids.discard(os.getpid())
    return {Proc(pid, table[pid][2]) for pid in pids}


def signal_proc(proc: Proc, signum: int) -> None:
    """Send `signum` to `proc` if it is still that process; a gone one is skipped."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        return
    try:
        entry = _stat(proc.pid)
        if entry is not None and entry[2] == proc.started:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signum)
    finally:
        os.close(pidfd)


def kill_tree(root: int, remembered: Iterable[Proc] = ()) -> set[Proc]:
    """Stop, then kill, everything under `root` (not the root); returns what was killed. Blocking: run in a thread."""
    stopped: set[Proc] = set()
    known = set(remembered)
    for _ in range(MAX_SWEEP_ROUNDS):
        found = find_tree(root, known | stopped) - stopped
        if not found:
            break
        for proc in found:
            signal_proc(proc, signal.SIGSTOP)
        stopped |= found
    for proc in stopped:
        signal_proc(proc, signal.SIGKILL)
    return stopped
