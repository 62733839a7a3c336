"""Loopback helpers shared by the scripts that start their own servers (benchmarks, soak)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def end_process(process: subprocess.Popen[bytes]) -> None:
    """End a server this script started, by its id: SIGTERM, then SIGKILL past 30 s."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of process `pid` and its children (a server and its plugin workers) so far."""
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = process_cpu_seconds(pid)
    for child in children:
        with contextlib.suppress(OSError):  # a child that just exited
            total += process_cpu_seconds(child)
    return total
