"""CLEAR-MOT and identity metrics (recall, precision, ID switches, MOTA, IDF1) with motmetrics.

motmetrics 1.4.0 (the latest release) still calls `np.asfarray`, removed in NumPy 2,
inside `motmetrics.distances.iou_matrix`; its accumulator and metrics work on NumPy 2.
So the IoU distances are computed here and only the accumulator and metrics
are taken from motmetrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import motmetrics
import numpy as np
from scipy.optimize import linear_sum_assignment
from tracking_sequences import FloatArray, GroundTruth

MATCH_IOU = 0.5  # the usual MOT threshold: a hypothesis farther than this from a face is not it
METRICS = [
    "recall",
    "precision",
    "num_switches",
    "mota",
    "idf1",
    "num_frames",
    "num_objects",
    "num_false_positives",
    "num_misses",
]


def iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """IoU of every xyxy box in `a` (N x 4) with every box in `b` (M x 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    overlap: FloatArray = inter / union
    return overlap


def _boxes(items: Sequence[Any]) -> FloatArray:
    return np.array(items, dtype=np.float64).reshape(-1, 4)


class SequenceScore:
    """Accumulates one sequence: feed each frame's ground truth and reported tracks."""

    def __init__(self) -> None:
        self.accumulator = motmetrics.MOTAccumulator(auto_id=True)

    def add_frame(self, truth: Sequence[GroundTruth], tracks: Sequence[Mapping[str, Any]]) -> None:
        hyp_boxes = _boxes([t["box"] for t in tracks])
        hyp_ids = [int(t["id"]) for t in tracks]
        # A track on a half-hidden ("don't care") face is neither right nor wrong: drop it.
        overlap = iou(_boxes([g.box for g in truth]), hyp_boxes)
        dropped: set[int] = set()
        if overlap.size:
            rows, cols = linear_sum_assignment(-overlap)
            dropped = {
                int(c) for r, c in zip(rows, cols, strict=True) if overlap[r, c] >= MATCH_IOU and truth[r].ignored
            }
        keep = [n for n in range(len(tracks)) if n not in dropped]
        counted = [g for g in truth if g.counted]
        distances = 1.0 - iou(_boxes([g.box for g in counted]), hyp_boxes[keep])
        distances[distances > 1.0 - MATCH_IOU] = np.nan
        self.accumulator.update([g.obj_id for g in counted], [hyp_ids[n] for n in keep], distances)


def summarize(scores: Mapping[str, SequenceScore]) -> dict[str, dict[str, float]]:
    """Metrics per sequence name, plus "OVERALL" over all of them."""
    handler = motmetrics.metrics.create()
    table = handler.compute_many(
        [s.accumulator for s in scores.values()], metrics=METRICS, names=list(scores), generate_overall=True
    )
    return {str(name): {metric: float(row[metric]) for metric in METRICS} for name, row in table.iterrows()}
