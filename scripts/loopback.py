"""Loopback helpers shared by the scripts that start their own servers (benchmarks, soak)."""

from __future__ import annotations

import socket
import subprocess


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
