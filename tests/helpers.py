"""Small helpers shared by test modules."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

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
