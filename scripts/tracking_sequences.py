"""Synthetic face-tracking sequences with ground truth, for the tracking tests and benchmark.

A real face photo (Grace Hopper, shipped inside matplotlib's wheel) is cut out with
a soft elliptical mask and moved over a background on known paths. The ground
truth box of each copy is the box MTCNN finds on the clean, full-size cut-out,
scaled and moved with it, so it is the box a correct detector would report.

Every frame also says how much of each face can be seen (other copies, a bar, and
the frame edge hide it): a face mostly visible is ground truth, a face mostly
hidden is not there, and one in between is "don't care" (neither a miss nor a
false positive), as MOTChallenge does with its ignore regions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import matplotlib.cbook
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]

# The part of grace_hopper.jpg (512 x 600) around the head, in photo pixels (x1, y1, x2, y2).
HEAD_CROP = (120, 60, 410, 400)
VISIBLE = 0.7  # at least this share of the face box seen: ground truth
HIDDEN = 0.3  # at most this share seen: not there; in between: don't care
FACE_HEIGHT = 0.25  # of the frame height, unless a sequence says otherwise


@dataclass(frozen=True)
class Sprite:
    rgb: Image
    alpha: npt.NDArray[np.float32]  # 0..1, soft ellipse around the head
    face: FloatArray  # the face box inside the sprite, xyxy


@dataclass(frozen=True)
class Placement:
    """One face copy in one frame: `obj_id` is its ground-truth identity; the face box
    centre lands on (cx, cy) and the face box is `face_height` pixels tall."""

    obj_id: int
    cx: float
    cy: float
    face_height: float


@dataclass(frozen=True)
class GroundTruth:
    obj_id: int
    box: FloatArray  # clipped to the frame
    visibility: float

    @property
    def counted(self) -> bool:
        return self.visibility >= VISIBLE

    @property
    def ignored(self) -> bool:
        return HIDDEN < self.visibility < VISIBLE


@dataclass(frozen=True)
class RenderedFrame:
    image: Image
    truth: list[GroundTruth]  # counted and ignored faces; hidden ones are left out


@functools.cache
def load_sprite() -> Sprite:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with PILImage.open(path) as photo:
        rgb = np.ascontiguousarray(
            np.asarray(photo.convert("RGB"))[HEAD_CROP[1] : HEAD_CROP[3], HEAD_CROP[0] : HEAD_CROP[2]]
        )
    height, width = rgb.shape[:2]
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 2), (int(width * 0.46), int(height * 0.47)), 0, 0, 360, 1.0, -1)
    # A feathered edge: a hard cut-out edge is a strong, unnatural contour for a detector.
    alpha = np.asarray(cv2.GaussianBlur(mask, (0, 0), sigmaX=width * 0.03), dtype=np.float32)
    return Sprite(rgb, alpha, _face_box(rgb, alpha))


def _face_box(rgb: Image, alpha: npt.NDArray[np.float32]) -> FloatArray:
    from facenet_pytorch import MTCNN

    gray = np.full_like(rgb, 128)
    composed = (rgb * alpha[..., None] + gray * (1 - alpha[..., None])).astype(np.uint8)
    boxes, scores = MTCNN(keep_all=True, device="cpu").detect(composed)
    if boxes is None or len(boxes) != 1:
        raise RuntimeError(f"expected one face in the sprite, MTCNN found {0 if boxes is None else len(boxes)}")
    return np.asarray(boxes[0], dtype=np.float64)


def make_background(kind: str, width: int, height: int, seed: int = 0) -> Image:
    if kind == "plain":
        return np.full((height, width, 3), (96, 120, 104), np.uint8)
    if kind == "gradient":
        x = np.linspace(0.0, 1.0, width)[None, :, None]
        y = np.linspace(0.0, 1.0, height)[:, None, None]
        image = 40 + 150 * x * np.array([1.0, 0.6, 0.2]) + 60 * y * np.array([0.2, 0.5, 1.0])
        return np.broadcast_to(image, (height, width, 3)).astype(np.uint8)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        noise = rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)
        return np.asarray(cv2.GaussianBlur(noise, (0, 0), sigmaX=1.0), dtype=np.uint8)
    raise ValueError(f"unknown background {kind!r}; use plain, gradient or noise")


@functools.lru_cache(maxsize=64)
def _scaled_sprite(width: int, height: int) -> tuple[Image, npt.NDArray[np.float32]]:
    sprite = load_sprite()
    rgb = cv2.resize(sprite.rgb, (width, height), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(sprite.alpha, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(rgb, dtype=np.uint8), np.asarray(alpha, dtype=np.float32)


class Sequence:
    """Frames rendered on demand (a 1280x720 sequence does not fit in memory at once)."""

    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        background: str,
        placements: list[list[Placement]],
        bars: tuple[tuple[int, int, int, int], ...] = (),
    ) -> None:
        self.name, self.width, self.height = name, width, height
        self.placements = placements  # per frame, back to front
        self.bars = bars  # drawn over every face
        self._background = make_background(background, width, height)

    def __len__(self) -> int:
        return len(self.placements)

    def render(self, index: int) -> RenderedFrame:
        image = self._background.copy()
        owner = np.zeros((self.height, self.width), np.int32)  # which copy each pixel shows (0: none)
        placed = [self._paste(image, owner, placement) for placement in self.placements[index]]
        for x1, y1, x2, y2 in self.bars:
            image[y1:y2, x1:x2] = (30, 30, 30)
            owner[y1:y2, x1:x2] = -1
        truth = []
        for placement, (box, own_pixels) in zip(self.placements[index], placed, strict=True):
            x1, y1, x2, y2 = _pixel_box(box, self.width, self.height)
            seen = int(np.count_nonzero(owner[y1:y2, x1:x2] == placement.obj_id))
            visibility = seen / own_pixels if own_pixels else 0.0
            if visibility > HIDDEN:
                clipped = np.clip(box, 0, [self.width, self.height, self.width, self.height]).astype(np.float64)
                truth.append(GroundTruth(placement.obj_id, clipped, visibility))
        return RenderedFrame(image, truth)

    def _paste(self, image: Image, owner: npt.NDArray[np.int32], placement: Placement) -> tuple[FloatArray, int]:
        """Draw one copy; return its face box in frame pixels and how many face-box pixels it covers alone."""
        sprite = load_sprite()
        scale = placement.face_height / float(sprite.face[3] - sprite.face[1])
        width = max(1, round(sprite.rgb.shape[1] * scale))
        height = max(1, round(sprite.rgb.shape[0] * scale))
        rgb, alpha = _scaled_sprite(width, height)
        sx, sy = width / sprite.rgb.shape[1], height / sprite.rgb.shape[0]
        face = sprite.face * np.array([sx, sy, sx, sy])
        left = round(placement.cx - (face[0] + face[2]) / 2)
        top = round(placement.cy - (face[1] + face[3]) / 2)
        # The part of the sprite that falls inside the frame.
        fx1, fy1 = max(left, 0), max(top, 0)
        fx2, fy2 = min(left + width, self.width), min(top + height, self.height)
        if fx2 > fx1 and fy2 > fy1:
            part_alpha = alpha[fy1 - top : fy2 - top, fx1 - left : fx2 - left, None]
            part_rgb = rgb[fy1 - top : fy2 - top, fx1 - left : fx2 - left]
            region = image[fy1:fy2, fx1:fx2]
            region[:] = (part_rgb * part_alpha + region * (1 - part_alpha)).astype(np.uint8)
            owner[fy1:fy2, fx1:fx2][part_alpha[..., 0] > 0.5] = placement.obj_id
        fx1_, fy1_, fx2_, fy2_ = _pixel_box(face, width, height)
        own_pixels = int(np.count_nonzero(alpha[fy1_:fy2_, fx1_:fx2_] > 0.5))
        return face + np.array([left, top, left, top]), own_pixels


def _pixel_box(box: FloatArray, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return x1, y1, max(x1, x2), max(y1, y2)


# -- the sequences -------------------------------------------------------------------------------


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _path(length: int, at: Callable[[float], list[Placement]]) -> list[list[Placement]]:
    return [at(i / max(1, length - 1)) for i in range(length)]


def straight(width: int, height: int, length: int) -> Sequence:
    face = FACE_HEIGHT * height
    return Sequence(
        "straight",
        width,
        height,
        "plain",
        _path(length, lambda t: [Placement(1, _lerp(0.2, 0.8, t) * width, _lerp(0.4, 0.6, t) * height, face)]),
    )


def zigzag(width: int, height: int, length: int) -> Sequence:
    face = FACE_HEIGHT * height

    def at(t: float) -> list[Placement]:
        wave = 2 * abs((t * 3) % 1.0 - 0.5)  # triangle wave, three periods: 0 -> 1 -> 0
        return [Placement(1, _lerp(0.2, 0.8, t) * width, _lerp(0.35, 0.65, wave) * height, face)]

    return Sequence("zigzag", width, height, "gradient", _path(length, at))


def scale_change(width: int, height: int, length: int) -> Sequence:
    def at(t: float) -> list[Placement]:
        grow = 0.5 - 0.5 * math.cos(2 * math.pi * t)  # 0 -> 1 -> 0
        return [Placement(1, _lerp(0.4, 0.6, t) * width, 0.5 * height, _lerp(0.15, 0.5, grow) * height)]

    return Sequence("scale", width, height, "noise", _path(length, at))


def crossing(width: int, height: int, length: int) -> Sequence:
    face = FACE_HEIGHT * height

    def at(t: float) -> list[Placement]:
        # Copy 2 walks right to left behind copy 1, a little lower: their faces overlap in the middle.
        behind = Placement(2, _lerp(0.8, 0.2, t) * width, 0.45 * height + 0.45 * face, face)
        front = Placement(1, _lerp(0.2, 0.8, t) * width, 0.45 * height, face)
        return [behind, front]

    return Sequence("crossing", width, height, "gradient", _path(length, at))


def occlusion(width: int, height: int, length: int) -> Sequence:
    face = FACE_HEIGHT * height
    face_width = face * _face_aspect()
    # A bar one and a half faces wide: the face is wholly hidden for a few frames.
    bar_half = round(0.75 * face_width)
    bars = ((width // 2 - bar_half, 0, width // 2 + bar_half, height),)
    placements = _path(length, lambda t: [Placement(1, _lerp(0.15, 0.85, t) * width, 0.5 * height, face)])
    return Sequence("occlusion", width, height, "plain", placements, bars)


def exit_reentry(width: int, height: int, length: int) -> Sequence:
    face = FACE_HEIGHT * height
    outside = width + 1.5 * face  # the whole sprite past the right edge

    def at(t: float) -> list[Placement]:
        # Out through the right edge, a fifth of the sequence away, back the same way.
        if t < 0.4:
            x = _lerp(0.5 * width, outside, t / 0.4)
        elif t < 0.6:
            x = outside
        else:
            x = _lerp(outside, 0.5 * width, (t - 0.6) / 0.4)
        return [Placement(1, x, 0.5 * height, face)]

    return Sequence("exit_reentry", width, height, "noise", _path(length, at))


def _face_aspect() -> float:
    face = load_sprite().face
    return float((face[2] - face[0]) / (face[3] - face[1]))


SEQUENCES: dict[str, Callable[[int, int, int], Sequence]] = {
    "straight": straight,
    "zigzag": zigzag,
    "scale": scale_change,
    "crossing": crossing,
    "occlusion": occlusion,
    "exit_reentry": exit_reentry,
}
SINGLE_FACE = ("straight", "zigzag", "scale", "occlusion", "exit_reentry")


def build(name: str, width: int, height: int, length: int) -> Sequence:
    return SEQUENCES[name](width, height, length)
