"""MTCNN face detection (facenet-pytorch), batched across the frames of one call.

MTCNN takes one batch only of equal-size images, and its pyramid depends on the
minimum face size, so frames are grouped by (height, width, min_face_size) and each
group runs as one batch (split into chunks of `max_batch` to bound memory).

Speed on a CPU (measured at 640x480 by scripts/bench_tracking.py, see docs/decisions.md):
- frames are detected at a working resolution (longest side `working_size`, 320 by
  default), with the minimum face size scaled to match, and boxes scaled back: a
  face a webcam sees is 60-300 px tall at 640x480, 30-150 px at 320x240, well above
  the 12 px MTCNN needs, for about a quarter of the pixels;
- the three nets run in channels-last memory layout: torch's CPU max-pooling and
  convolutions are 2-3x faster in it than in the default layout on these small nets;
- a coarser image pyramid (`pyramid_factor`) has fewer levels to run PNet on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from facenet_pytorch import MTCNN
from mtcnn_stages import detect_faces, resize

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
Image = npt.NDArray[np.uint8]

# PNet looks at 12x12 windows: a smaller minimum face means upsampling the whole
# frame first, several times the work for faces nobody can see at that size.
SMALLEST_MIN_FACE_SIZE = 12


@dataclass(frozen=True)
class Detections:
    boxes: FloatArray  # N x 4, xyxy pixels, clipped to the frame
    scores: FloatArray  # N

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0))


class FaceDetector:
    def __init__(self, device: str, max_batch: int, working_size: int = 0, pyramid_factor: float = 0.709) -> None:
        """`working_size`: the longest side frames are detected at (0: as they come)."""
        self._device = torch.device(device)
        self._max_batch = max_batch
        self._working_size = working_size
        # keep_all: every face, not only the most likely one. The weights load from
        # facenet_pytorch/data inside the wheel; nothing is downloaded.
        self._mtcnn = MTCNN(keep_all=True, device=self._device, factor=pyramid_factor).eval()
        for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
            net.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return self._device

    def detect(self, images: Sequence[Image], min_face_sizes: Sequence[int]) -> list[Detections]:
        """Detect faces in each image; the result list is in the order of `images`."""
        groups: dict[tuple[int, int, int], list[int]] = {}
        for n, (image, min_face_size) in enumerate(zip(images, min_face_sizes, strict=True)):
            _check_image(image, n)
            groups.setdefault((image.shape[0], image.shape[1], min_face_size), []).append(n)
        results = [Detections.empty() for _ in images]
        for (height, width, min_face_size), members in groups.items():
            if min(height, width) < min_face_size:
                continue  # no face that large fits; MTCNN's pyramid would be empty
            for start in range(0, len(members), self._max_batch):
                chunk = members[start : start + self._max_batch]
                found = self._detect_batch([images[n] for n in chunk], min_face_size)
                for n, detections in zip(chunk, found, strict=True):
                    results[n] = detections
        return results

    def working_scale(self, height: int, width: int) -> float:
        """Input pixels per working pixel (>= 1: frames are never upscaled)."""
        if self._working_size <= 0:
            return 1.0
        return max(1.0, max(height, width) / self._working_size)

    def _detect_batch(self, images: list[Image], min_face_size: int) -> list[Detections]:
        height, width = images[0].shape[:2]
        scale = self.working_scale(height, width)
        # The smallest face asked for, in working pixels; MTCNN cannot go under 12.
        working_min_face = max(SMALLEST_MIN_FACE_SIZE, round(min_face_size / scale))
        with torch.inference_mode():
            # np.stack copies out of the read-only shared-memory views: nothing of the
            # caller's frames is kept or written to.
            batch = torch.from_numpy(np.stack(images)).to(self._device).permute(0, 3, 1, 2).float().contiguous()
            if scale > 1.0:
                size = (round(height / scale), round(width / scale))
                batch = resize(batch, size)
            found = detect_faces(self._mtcnn, batch, working_min_face)
        return [_to_detections(raw.cpu().numpy(), width, height, scale) for raw in found]


def _check_image(image: Image, n: int) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame {n} must be H x W x 3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")


def _to_detections(raw: object, width: int, height: int, scale: float) -> Detections:
    rows = np.asarray(raw, dtype=np.float64).reshape(-1, 5)
    boxes = rows[:, :4] * scale
    # MTCNN boxes may reach past the frame for a face at its edge; clients draw in frame pixels.
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1) & np.isfinite(rows).all(axis=1)
    return Detections(boxes[keep], rows[keep, 4])
