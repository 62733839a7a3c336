"""MTCNN's three stages on facenet-pytorch's nets, with the candidate crops cut in one call.

facenet-pytorch's `detect_face` cuts and resizes every candidate window for RNet and
ONet in a Python loop (one slice and one resize per window, 30-40 of them a frame)
and converts boxes to NumPy between stages. On a CPU at a small working resolution
that glue took as long as the nets. Here every crop of a stage is one
`torchvision.ops.roi_align` call, and everything stays in tensors. The stages,
thresholds, box regression and NMS are facenet-pytorch's (its helpers are reused);
crops outside the frame read zeros, as in the original MTCNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from facenet_pytorch.models.mtcnn import MTCNN
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, rerec
from torchvision.ops import batched_nms, roi_align

PNET_CELL = 12


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - 127.5) * 0.0078125


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear with antialiasing: close to the area averaging MTCNN was trained with, and
    several times faster on a CPU than torch's "area" mode (adaptive average pooling)."""
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _pyramid(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    scale = PNET_CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _crops(images: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, size: int) -> torch.Tensor:
    # MTCNN boxes count pixels from 1, both ends included: box x1..x2 is pixels x1 - 1 .. x2 - 1.
    rois = torch.cat([image_inds[:, None].to(boxes.dtype), boxes[:, :2] - 1, boxes[:, 2:4]], dim=1)
    return _normalise(roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=False))


def _proposals(mtcnn: MTCNN, images: torch.Tensor, min_face_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: PNet over the image pyramid; candidate boxes (N x 9) and their image index."""
    height, width = images.shape[2:4]
    boxes, image_inds = [], []
    for scale in _pyramid(height, width, min_face_size, mtcnn.factor):
        level = resize(images, (int(height * scale + 1), int(width * scale + 1)))
        regression, probabilities = mtcnn.pnet(_normalise(level))
        found, inds = generateBoundingBox(regression, probabilities[:, 1], scale, mtcnn.thresholds[0])
        keep = batched_nms(found[:, :4], found[:, 4], inds, 0.5)
        boxes.append(found[keep])
        image_inds.append(inds[keep])
    if not boxes:
        return torch.zeros((0, 9), device=images.device), torch.zeros(0, dtype=torch.long, device=images.device)
    all_boxes, all_inds = torch.cat(boxes), torch.cat(image_inds)
    keep = batched_nms(all_boxes[:, :4], all_boxes[:, 4], all_inds, 0.7)
    all_boxes, all_inds = all_boxes[keep], all_inds[keep]
    widths = all_boxes[:, 2] - all_boxes[:, 0]
    heights = all_boxes[:, 3] - all_boxes[:, 1]
    refined = torch.stack(
        [
            all_boxes[:, 0] + all_boxes[:, 5] * widths,
            all_boxes[:, 1] + all_boxes[:, 6] * heights,
            all_boxes[:, 2] + all_boxes[:, 7] * widths,
            all_boxes[:, 3] + all_boxes[:, 8] * heights,
            all_boxes[:, 4],
        ],
        dim=1,
    )
    return rerec(refined), all_inds


def detect_faces(mtcnn: MTCNN, images: torch.Tensor, min_face_size: int) -> list[torch.Tensor]:
    """Faces in each image of `images` (N x 3 x H x W, float 0..255).

    Per image a K x 5 tensor: x1, y1, x2, y2, score.
    """
    count = images.shape[0]
    boxes, image_inds = _proposals(mtcnn, images, min_face_size)
    if len(boxes):  # stage 2: RNet refines and rejects
        regression, scores = mtcnn.rnet(_crops(images, boxes.trunc(), image_inds, 24))
        passed = scores[:, 1] > mtcnn.thresholds[1]
        boxes = torch.cat([boxes[passed, :4], scores[passed, 1:2]], dim=1)
        image_inds, regression = image_inds[passed], regression[passed]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes = rerec(bbreg(boxes[keep], regression[keep]))
        image_inds = image_inds[keep]
    if len(boxes):  # stage 3: ONet gives the final boxes and scores
        regression, _, scores = mtcnn.onet(_crops(images, boxes.trunc(), image_inds, 48))
        passed = scores[:, 1] > mtcnn.thresholds[2]
        boxes = torch.cat([boxes[passed, :4], scores[passed, 1:2]], dim=1)
        image_inds = image_inds[passed]
        boxes = bbreg(boxes, regression[passed])
        keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds = boxes[keep], image_inds[keep]
    return [boxes[image_inds == n] for n in range(count)]
