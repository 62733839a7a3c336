"""Small helpers shared by test modules."""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import subprocess

import numpy as np
from PIL import Image


@functools.cache
def isolation() -> tuple[str, ...]:
    """The command prefix that runs a command in a network with only `lo` (DESIGN 5); () when this user cannot."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return ()
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, check=False)
    if probe.returncode != 0:
        return ()
    return ("unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"')


# DESIGN 3.5: `<ErrorType>: <what happened> (<how to fix>)`, one line, no traceback.
REASON = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*: [^\n]+ \([^\n]+\)$")


def png_with_square(
    box: tuple[int, int, int, int] = (20, 10, 60, 40), color: tuple[int, int, int] = (0, 255, 0)
) -> bytes:
    """A 160x120 PNG with one saturated square at box = (x1, y1, x2, y2)."""
    image = np.zeros((120, 160, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = color
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
