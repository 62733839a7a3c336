"""VideoTracker: the default livetrack plugin (DESIGN 3.2). Faces: MTCNN + a multi-object tracker.

Runs inside the plugin worker process, with this folder first on sys.path, which
is why the sibling modules are imported by their plain names.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from face_detector import FaceDetector
from face_tracker import FaceTracker
from tracker_options import FrameOptions, PluginSettings, parse_frame_options

logger = logging.getLogger("videotracker")

LABEL = "face"
WARMUP_SHAPE = (240, 320, 3)
MAX_NOTES_PER_SESSION = 16


class Frame(Protocol):
    """What the worker hands to `process()` (app.runtime.frames.Frame); typed structurally so
    the plugin does not import the server."""

    @property
    def session_id(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def pts(self) -> int: ...
    @property
    def image(self) -> npt.NDArray[np.uint8]: ...
    @property
    def options(self) -> Mapping[str, Any]: ...


def cpu_threads(configured: int) -> int:
    """Threads for MTCNN on the CPU: `configured`, or half the cores this process may use.

    Torch's default, one thread per core, collapses when the cores are shared (with the
    server's video decoding and encoding, or other workers): its threads wait for each
    other at every layer, and frames went from ~100 ms to over 4 s on 2 busy cores in
    our measurement; one thread stayed at 100-300 ms. Leaving cores to the server is the
    safer default.
    """
    if configured > 0:
        return configured
    return max(1, len(os.sched_getaffinity(0)) // 2)


class _Session:
    def __init__(self, tracker: FaceTracker) -> None:
        self.tracker = tracker
        self.noted: set[str] = set()  # option problems already logged, to log each once


class VideoTracker:
    """The plugin (DESIGN 3.2): one instance per worker, one tracker per session."""

    def __init__(self, device: str, config: dict[str, Any]) -> None:
        self._settings = PluginSettings.from_config(config)
        if device == "cpu":
            torch.set_num_threads(cpu_threads(self._settings.cpu_threads))
        settings = self._settings
        self._detector = FaceDetector(device, settings.max_batch, settings.working_size, settings.pyramid_factor)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        # One counter for every session: an id never means two faces, whatever the session.
        self._ids = itertools.count(1)
        # The first pass through MTCNN allocates and (on CUDA) initialises kernels; doing it
        # here keeps that cost inside the load deadline instead of the first frame's.
        self._detector.detect([np.zeros(WARMUP_SHAPE, np.uint8)], [self._settings.min_face_size])
        logger.info("videotracker ready on %s, %d CPU threads (%s)", device, torch.get_num_threads(), self._settings)

    @property
    def session_ids(self) -> list[str]:
        return list(self._sessions)

    def process(self, batch: list[Frame]) -> list[dict[str, Any]]:
        """One result per frame, in order; detection runs batched across all frames of the call."""
        options = [self._frame_options(frame) for frame in batch]
        detections = self._detector.detect([f.image for f in batch], [o.min_face_size for o in options])
        results: list[dict[str, Any]] = []
        for frame, frame_options, found in zip(batch, options, detections, strict=True):
            height, width = frame.image.shape[:2]
            faces = self._session(frame.session_id).tracker.update(
                frame.index, found.boxes, found.scores, frame_options.min_score, (width, height), frame.pts
            )
            tracks = [
                {
                    "id": face.track_id,
                    "box": [float(v) for v in face.box],
                    "score": face.score,
                    "label": LABEL,
                    "velocity": [round(v, 1) for v in face.velocity],
                }
                for face in faces
            ]
            results.append({"tracks": tracks})
        return results

    def end_session(self, session_id: str) -> None:
        if self._sessions.pop(session_id, None) is not None:
            logger.debug("session %s: tracker state dropped", session_id)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = _Session(FaceTracker(self._settings.tracker, lambda: next(self._ids)))
            self._sessions[session_id] = session
            self._evict_oldest()
        self._sessions.move_to_end(session_id)
        return session

    def _evict_oldest(self) -> None:
        # end_session() normally frees a session; this bound keeps a worker that
        # missed some (a server crash between calls) from growing without limit.
        while len(self._sessions) > self._settings.max_sessions:
            stale, _ = self._sessions.popitem(last=False)
            logger.warning(
                "session %s: tracker state dropped, over max_sessions %d", stale, self._settings.max_sessions
            )

    def _frame_options(self, frame: Frame) -> FrameOptions:
        frame_options, notes = parse_frame_options(frame.options, self._settings)
        if notes:
            session = self._session(frame.session_id)
            for note in notes:
                if note not in session.noted and len(session.noted) < MAX_NOTES_PER_SESSION:
                    session.noted.add(note)
                    logger.warning("session %s: option %s", frame.session_id, note)
        return frame_options
