"""Box overlap and one-to-one assignment between tracks and detections."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

FloatArray = npt.NDArray[np.float64]


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Intersection over union of every box in `a` (N x 4, xyxy) with every box in `b` (M x 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def expand(boxes: FloatArray, ratio: FloatArray) -> FloatArray:
    """Grow each box by `ratio` of its width/height on every side (the "buffer" of C-BIoU)."""
    w = (boxes[:, 2] - boxes[:, 0]) * ratio
    h = (boxes[:, 3] - boxes[:, 1]) * ratio
    return np.stack([boxes[:, 0] - w, boxes[:, 1] - h, boxes[:, 2] + w, boxes[:, 3] + h], axis=1)


def match(similarity: FloatArray, minimum: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Best one-to-one pairs (row, col) by total similarity, keeping only pairs >= `minimum`.

    Returns the pairs, the unmatched rows and the unmatched columns.
    """
    rows, cols = similarity.shape
    if rows == 0 or cols == 0:
        return [], list(range(rows)), list(range(cols))
    # Pairs under the gate get a prohibitive cost rather than being removed, so the
    # solver still sees a rectangular matrix; they are dropped after solving.
    cost = np.where(similarity >= minimum, -similarity, 1e6)
    chosen_rows, chosen_cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(chosen_rows, chosen_cols, strict=True) if similarity[r, c] >= minimum]
    used_rows = {r for r, _ in pairs}
    used_cols = {c for _, c in pairs}
    return (
        pairs,
        [r for r in range(rows) if r not in used_rows],
        [c for c in range(cols) if c not in used_cols],
    )
