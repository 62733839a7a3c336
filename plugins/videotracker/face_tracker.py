"""The multi-object tracker of one session: ByteTrack-style association with buffered IoU.

Per frame:
1. every track's Kalman filter predicts where its face is now;
2. confident detections (score >= min_score) are matched to confirmed tracks, the
   ones seen last frame and the ones lost for a while, by IoU of boxes grown with
   the time a track has been unseen (buffered IoU, C-BIoU), so that a face that
   reappears after an occlusion or a dropped frame is found again;
3. weak detections (low_score <= score < min_score) may only continue tracks seen
   last frame (ByteTrack's second stage: a half-hidden face keeps its track but
   never starts one);
4. tentative tracks take what is left; unmatched confident detections start new
   tentative tracks, which are confirmed, and given an id, after `min_hits` hits.

Only confirmed tracks matched in this frame are reported: a coasting prediction
is not a face someone can see. Each carries its filter's velocity (px/s of the box
centre), which the server moves the box by on the frames between results.

Time is the frames' own clock (pts, 90 kHz as in WebRTC video) where it advances
sensibly, else the frame index at a nominal 30 fps. The filter runs in steps of
1/30 s, so its noise settings mean the same whatever the frame rate or the gaps:
results 300-500 ms apart are 9-15 steps, and the gates widen with them and with the
track's speed (a face at 200 px/s that turns moves 2 x 80 px from its prediction
in 400 ms).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from box_kalman import BoxKalman, FloatArray
from box_matching import expand, iou_matrix, match


@dataclass(frozen=True)
class TrackerSettings:
    low_score: float = 0.6
    min_hits: int = 2
    max_lost_frames: int = 60
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    tentative_match_iou: float = 0.3
    buffer_per_missed_frame: float = 0.1
    unknown_motion_buffer: float = 0.3
    max_buffer: float = 0.5
    wide_buffer: float = 0.5
    # The gate also widens by this share of the distance the track moves in the time
    # since it was last seen (relative to its width), up to `max_speed_buffer`.
    speed_buffer: float = 0.5
    max_speed_buffer: float = 1.0


@dataclass(frozen=True)
class TrackedFace:
    track_id: int
    box: FloatArray
    score: float
    velocity: tuple[float, float]  # px/s of the box centre


# The filter's time step; frame clocks are converted to it.
STEP_S = 1 / 30
PTS_PER_S = 90000
# A pts gap outside (0, this] is not time passing (a wrap, a restarted sender): count frames instead.
MAX_PTS_GAP_S = 10.0


class TrackState(enum.Enum):
    TENTATIVE = "tentative"
    TRACKED = "tracked"
    LOST = "lost"


class Track:
    def __init__(self, box: FloatArray, score: float, index: int, at: float) -> None:
        self.kalman = BoxKalman(box)
        self.state = TrackState.TENTATIVE
        self.track_id: int | None = None
        self.hits = 1
        self.last_index = index
        self.last_at = at  # the session clock (in steps) when last seen
        self.box = box
        self.score = score

    def hit(self, box: FloatArray, score: float, index: int, at: float) -> None:
        self.kalman.update(box)
        self.hits += 1
        self.last_index = index
        self.last_at = at
        self.box, self.score = box, score
        if self.state is TrackState.LOST:
            self.state = TrackState.TRACKED

    def confirm(self, track_id: int) -> None:
        self.state = TrackState.TRACKED
        self.track_id = track_id


class FaceTracker:
    """Tracks of one session. `new_id` hands out ids that no other session uses."""

    def __init__(self, settings: TrackerSettings, new_id: Callable[[], int]) -> None:
        self._settings = settings
        self._new_id = new_id
        self._tracks: list[Track] = []
        self._last_index: int | None = None
        self._last_pts: int | None = None
        self._clock = 0.0  # steps of STEP_S since the session's first frame

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)

    def update(
        self,
        index: int,
        boxes: FloatArray,
        scores: FloatArray,
        min_score: float,
        frame_size: tuple[int, int],
        pts: int | None = None,
    ) -> list[TrackedFace]:
        """Feed the detections of frame `index` (boxes N x 4 xyxy, scores N); return the faces to report."""
        if self._last_index is not None and index < self._last_index:
            # The index went back: a restarted stream, which old tracks say nothing about.
            self._tracks, self._last_index, self._last_pts = [], None, None
        first_frame = self._last_index is None
        steps = self._steps(index, pts)
        self._clock += steps
        self._last_index, self._last_pts = index, pts
        self._predict(steps, frame_size)
        at = self._clock

        low = min(self._settings.low_score, min_score)
        strong = [i for i in range(len(scores)) if scores[i] >= min_score]
        weak = [i for i in range(len(scores)) if low <= scores[i] < min_score]

        confirmed = [t for t in self._tracks if t.state is not TrackState.TENTATIVE]
        left_tracks, strong = self._associate(confirmed, strong, boxes, scores, index, at, buffer=0.0)
        # Second cascade (C-BIoU): what is left, with much wider boxes, for a face that
        # turned or sped up (or frames were dropped) and so left its prediction behind.
        left_tracks, strong = self._associate(
            left_tracks, strong, boxes, scores, index, at, buffer=self._settings.wide_buffer
        )
        recent = [t for t in left_tracks if t.state is TrackState.TRACKED]
        self._associate(recent, weak, boxes, scores, index, at, minimum=self._settings.low_match_iou)
        tentative = [t for t in self._tracks if t.state is TrackState.TENTATIVE]
        _, strong = self._associate(
            tentative, strong, boxes, scores, index, at, buffer=0.0, minimum=self._settings.tentative_match_iou
        )
        self._age(index)
        for i in strong:
            self._start(boxes[i], float(scores[i]), index, at, confirm_now=first_frame)
        return [
            TrackedFace(t.track_id, t.box, t.score, _velocity(t))
            for t in self._tracks
            if t.track_id is not None and t.state is TrackState.TRACKED and t.last_index == index
        ]

    def _steps(self, index: int, pts: int | None) -> float:
        """Filter steps since the last frame: from the pts where they advance sensibly, else from the index.

        Indexes jump when the server drops frames (latest-frame-wins): the gap is predicted across.
        """
        if self._last_index is None:
            return 1.0
        if pts is not None and self._last_pts is not None and 0 < pts - self._last_pts <= MAX_PTS_GAP_S * PTS_PER_S:
            return (pts - self._last_pts) / PTS_PER_S / STEP_S
        return float(max(1, index - self._last_index))

    def _predict(self, steps: float, frame_size: tuple[int, int]) -> None:
        for track in self._tracks:
            if track.state is TrackState.LOST:
                track.kalman.hold_size()
            track.kalman.predict(steps)
            if track.state is TrackState.LOST:
                track.kalman.park_inside(*frame_size)

    def _associate(
        self,
        tracks: list[Track],
        detections: list[int],
        boxes: FloatArray,
        scores: FloatArray,
        index: int,
        at: float,
        *,
        buffer: float | None = None,
        minimum: float | None = None,
    ) -> tuple[list[Track], list[int]]:
        """Match `tracks` to the detections numbered `detections`; return what is left of each.

        `buffer` None compares plain boxes; a number compares buffered boxes, with that
        much added to the margin each track earns by being unseen or new.
        """
        if not tracks or not detections:
            return tracks, detections
        predicted = np.stack([t.kalman.box for t in tracks])
        candidates = boxes[detections]
        if buffer is not None:
            similarity = self._buffered_iou(tracks, predicted, candidates, at, buffer)
        else:
            similarity = iou_matrix(predicted, candidates)
        pairs, left_rows, left_cols = match(similarity, self._settings.match_iou if minimum is None else minimum)
        for row, col in pairs:
            det = detections[col]
            tracks[row].hit(boxes[det], float(scores[det]), index, at)
            self._maybe_confirm(tracks[row])
        return [tracks[r] for r in left_rows], [detections[c] for c in left_cols]

    def _buffered_iou(
        self, tracks: list[Track], predicted: FloatArray, candidates: FloatArray, at: float, extra: float
    ) -> FloatArray:
        # The longer a track has been unseen, the less its prediction is worth: grow
        # both boxes by a margin that grows with the time missed (C-BIoU), and with how
        # far the track moves in that time (a turn puts the face up to twice that far
        # from its prediction). A track seen once has no velocity yet, so it gets a
        # margin for the unknown motion.
        settings = self._settings
        similarity = np.zeros((len(tracks), len(candidates)))
        for row, track in enumerate(tracks):
            elapsed = max(0.0, at - track.last_at)
            missed = max(0.0, elapsed - 1)
            unknown = settings.unknown_motion_buffer if track.hits == 1 else 0.0
            width = max(1.0, float(track.kalman.mean[2]))
            travelled = float(np.hypot(*track.kalman.mean[4:6])) * elapsed / width
            ratio = (
                min(settings.buffer_per_missed_frame * missed + unknown, settings.max_buffer)
                + min(settings.speed_buffer * travelled, settings.max_speed_buffer)
                + extra
            )
            grown_track = expand(predicted[row : row + 1], np.array([ratio]))
            grown_dets = expand(candidates, np.full(len(candidates), ratio))
            similarity[row] = iou_matrix(grown_track, grown_dets)[0]
        return similarity

    def _maybe_confirm(self, track: Track) -> None:
        if track.state is TrackState.TENTATIVE and track.hits >= self._settings.min_hits:
            track.confirm(self._new_id())

    def _age(self, index: int) -> None:
        kept = []
        for track in self._tracks:
            if track.last_index == index:
                kept.append(track)
            elif track.state is TrackState.TENTATIVE:
                continue  # a tentative track that misses a frame was noise
            elif index - track.last_index <= self._settings.max_lost_frames:
                track.state = TrackState.LOST
                kept.append(track)
        self._tracks = kept

    def _start(self, box: FloatArray, score: float, index: int, at: float, *, confirm_now: bool) -> None:
        track = Track(box, score, index, at)
        # On a session's first frame nothing can be a duplicate of an older track, so
        # report at once (as ByteTrack does) instead of losing the first frame.
        if confirm_now or self._settings.min_hits <= 1:
            track.confirm(self._new_id())
        self._tracks.append(track)


def _velocity(track: Track) -> tuple[float, float]:
    """The filter's velocity of the box centre, in pixels per second."""
    return float(track.kalman.mean[4]) / STEP_S, float(track.kalman.mean[5]) / STEP_S
