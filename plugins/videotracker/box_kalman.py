"""A constant-velocity Kalman filter on one box: centre x, centre y, width, height.

The state is [cx, cy, w, h, vcx, vcy, vw, vh]. Noise is proportional to the box
size (as in ByteTrack/BoT-SORT): a face 200 px wide moves and jitters more pixels
per frame than one 30 px wide, so one absolute noise level would be wrong for both.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160
# Prior on an unseen velocity, per frame, relative to box size: a face can move a
# quarter of its width between two processed frames (more when frames are dropped).
STD_VELOCITY_PRIOR = 1.0 / 4
MIN_SIZE_PX = 2.0

_MEASURE = np.hstack([np.eye(4), np.zeros((4, 4))])


def xyxy_to_cxcywh(box: FloatArray) -> FloatArray:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=np.float64)


def cxcywh_to_xyxy(state: FloatArray) -> FloatArray:
    cx, cy, w, h = (float(v) for v in state[:4])
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


def _velocity_prior(w: float, h: float) -> FloatArray:
    # A velocity nobody has seen yet: a wide prior lets the next hit set it.
    return _size_noise(w, h, STD_VELOCITY_PRIOR)


def _size_noise(w: float, h: float, weight: float) -> FloatArray:
    std = np.array([weight * w, weight * h, weight * w, weight * h], dtype=np.float64)
    return std * std


class BoxKalman:
    """Motion model of one track; `predict(steps)` may jump several frames at once."""

    def __init__(self, box: FloatArray) -> None:
        measured = xyxy_to_cxcywh(box)
        w, h = float(measured[2]), float(measured[3])
        self.mean: FloatArray = np.concatenate([measured, np.zeros(4)])
        variances = np.concatenate([_size_noise(w, h, 2 * STD_POSITION), _velocity_prior(w, h)])
        self.covariance: FloatArray = np.diag(variances)

    @property
    def box(self) -> FloatArray:
        return cxcywh_to_xyxy(self.mean)

    def predict(self, steps: float) -> None:
        """Advance by `steps` frame times (1/30 s each; fractions allowed); the server drops
        frames when busy, so gaps are normal."""
        steps = max(0.1, steps)
        transition = np.eye(8)
        transition[:4, 4:] = steps * np.eye(4)
        w, h = float(self.mean[2]), float(self.mean[3])
        noise = np.diag(np.concatenate([_size_noise(w, h, STD_POSITION), _size_noise(w, h, STD_VELOCITY)])) * steps
        self.mean = transition @ self.mean
        self.covariance = transition @ self.covariance @ transition.T + noise
        self.mean[2:4] = np.maximum(self.mean[2:4], MIN_SIZE_PX)

    def update(self, box: FloatArray) -> None:
        measured = xyxy_to_cxcywh(box)
        noise = np.diag(_size_noise(float(self.mean[2]), float(self.mean[3]), STD_POSITION))
        projected = _MEASURE @ self.covariance @ _MEASURE.T + noise
        gain = np.linalg.solve(projected, _MEASURE @ self.covariance).T
        self.mean = self.mean + gain @ (measured - _MEASURE @ self.mean)
        self.covariance = (np.eye(8) - gain @ _MEASURE) @ self.covariance

    def hold_size(self) -> None:
        """Stop growing or shrinking: while unseen, a size trend only drifts (ByteTrack does the same)."""
        self.mean[6:8] = 0.0

    def park_inside(self, width: int, height: int) -> None:
        """Keep a track that walked out of the frame waiting at the edge it left by.

        A face that leaves usually comes back through the same edge; a prediction
        that keeps flying away could never be matched again.
        """
        cx, cy = float(self.mean[0]), float(self.mean[1])
        if 0 <= cx <= width and 0 <= cy <= height:
            return
        self.mean[0] = min(max(cx, 0.0), float(width))
        self.mean[1] = min(max(cy, 0.0), float(height))
        # How it comes back is unknown: forget the old velocity and how sure we were of it,
        # or the filter would trust "standing still" and fall behind a face walking back in.
        self.mean[4:8] = 0.0
        self.covariance[4:, :] = 0.0
        self.covariance[:, 4:] = 0.0
        self.covariance[4:, 4:] = np.diag(_velocity_prior(float(self.mean[2]), float(self.mean[3])))
