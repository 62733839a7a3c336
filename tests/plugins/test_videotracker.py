"""The videotracker plugin on real faces with ground truth (issue 4).

Small versions (320x240, 30 frames) of the benchmark sequences of
scripts/bench_tracking.py. Most tests call the plugin class in-process for speed;
`test_through_the_sandbox_*` runs it as the server does, in a spawned worker.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from face_tracker import FaceTracker, TrackerSettings
from tracking_metrics import SequenceScore, summarize
from tracking_sequences import SINGLE_FACE, RenderedFrame, Sequence, build

from app.runtime.checks import check_plugin
from app.runtime.frames import Frame
from app.runtime.manifest import read_manifest
from app.runtime.sandbox import EndSession, Load, PluginWorker, Process, run_plugin_sandboxed

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "videotracker"
SIZE = (320, 240)
LENGTH = 30


def video_tracker_class() -> Any:
    """plugin.py under a name of its own: other plugins have a `plugin` module too."""
    spec = importlib.util.spec_from_file_location("videotracker_plugin", PLUGIN_DIR / "plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VideoTracker


@pytest.fixture(scope="module")
def tracker() -> Iterator[Any]:
    """One plugin instance for the module: loading MTCNN takes a moment; sessions keep tests apart."""
    yield video_tracker_class()("cpu", read_manifest(PLUGIN_DIR).config)


_sessions = itertools.count()


def new_session(label: str) -> str:
    return f"{label}-{next(_sessions)}"


def frame(session_id: str, index: int, rendered: RenderedFrame, options: dict[str, Any] | None = None) -> Frame:
    image = rendered.image.copy()
    image.setflags(write=False)  # as in shared memory: the plugin must not write to it
    return Frame(session_id, index, index * 3000, image, options or {})


def run(
    tracker: Any, sequence: Sequence, session_id: str, options: dict[str, Any] | None = None
) -> list[list[dict[str, Any]]]:
    """Stream `sequence` one frame per call; return the tracks of every frame."""
    tracks = []
    for index in range(len(sequence)):
        (result,) = tracker.process([frame(session_id, index, sequence.render(index), options)])
        tracks.append(result["tracks"])
    tracker.end_session(session_id)
    return tracks


def score(sequence: Sequence, tracks: list[list[dict[str, Any]]]) -> dict[str, float]:
    scored = SequenceScore()
    for index, frame_tracks in enumerate(tracks):
        scored.add_frame(sequence.render(index).truth, frame_tracks)
    return summarize({sequence.name: scored})[sequence.name]


def ids_on(sequence: Sequence, tracks: list[list[dict[str, Any]]], obj_id: int, index: int) -> int:
    """The track id reported on ground-truth face `obj_id` in frame `index` (best overlap)."""
    truth = next(g for g in sequence.render(index).truth if g.obj_id == obj_id)
    best = max(tracks[index], key=lambda t: _iou(np.array(t["box"]), truth.box))
    assert _iou(np.array(best["box"]), truth.box) >= 0.5, f"no track on face {obj_id} in frame {index}"
    return int(best["id"])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


# -- tracking quality on ground truth ---------------------------------------------------------------


@pytest.mark.parametrize("name", SINGLE_FACE)
def test_a_single_face_is_found_and_keeps_one_id(tracker: Any, name: str) -> None:
    """Guards against: boxes missing or doubled, and a face's id changing while it moves,
    hides behind a bar, or leaves and comes back."""
    sequence = build(name, *SIZE, LENGTH)
    tracks = run(tracker, sequence, new_session(name))
    metrics = score(sequence, tracks)
    assert metrics["recall"] >= 0.95, metrics
    assert metrics["precision"] >= 0.95, metrics
    assert metrics["num_switches"] == 0, metrics
    assert len({t["id"] for frame_tracks in tracks for t in frame_tracks}) == 1
    assert all(t["label"] == "face" for frame_tracks in tracks for t in frame_tracks)


def test_two_crossing_faces_keep_their_ids(tracker: Any) -> None:
    """Guards against: two faces swapping ids when one walks past (and partly behind) the other."""
    sequence = build("crossing", *SIZE, LENGTH)
    tracks = run(tracker, sequence, new_session("crossing"))
    metrics = score(sequence, tracks)
    assert metrics["recall"] >= 0.95 and metrics["precision"] >= 0.95, metrics
    assert metrics["num_switches"] == 0, metrics
    last = len(sequence) - 1
    front, back = ids_on(sequence, tracks, 1, 0), ids_on(sequence, tracks, 2, 0)
    assert front != back
    assert (ids_on(sequence, tracks, 1, last), ids_on(sequence, tracks, 2, last)) == (front, back)


def test_a_face_keeps_its_id_when_the_server_drops_every_other_frame(tracker: Any) -> None:
    """Guards against: ids changing on a busy server, where latest-frame-wins skips frames
    and a zig-zagging face turns between two processed frames."""
    sequence = build("zigzag", *SIZE, LENGTH)
    session_id = new_session("dropped")
    scored, ids = SequenceScore(), set()
    for index in range(0, len(sequence), 2):
        rendered = sequence.render(index)
        (result,) = tracker.process([frame(session_id, index, rendered)])
        scored.add_frame(rendered.truth, result["tracks"])
        ids |= {t["id"] for t in result["tracks"]}
    tracker.end_session(session_id)
    metrics = summarize({"zigzag": scored})["zigzag"]
    assert metrics["recall"] >= 0.95 and metrics["num_switches"] == 0, metrics
    assert len(ids) == 1


# -- sessions ---------------------------------------------------------------------------------------


def test_two_sessions_never_share_ids(tracker: Any) -> None:
    """Guards against: one viewer's tracks continuing, or being numbered, from another's."""
    sequence = build("straight", *SIZE, LENGTH)
    first, second = new_session("a"), new_session("b")
    ids: dict[str, set[int]] = {first: set(), second: set()}
    for index in range(6):
        rendered = sequence.render(index)
        # Both sessions in one call, as the server batches them.
        results = tracker.process([frame(first, index, rendered), frame(second, index, rendered)])
        for session_id, result in zip((first, second), results, strict=True):
            assert len(result["tracks"]) == 1
            ids[session_id] |= {t["id"] for t in result["tracks"]}
    assert len(ids[first]) == len(ids[second]) == 1
    assert ids[first].isdisjoint(ids[second])


def test_end_session_drops_the_sessions_tracks(tracker: Any) -> None:
    """Guards against: state of ended sessions piling up in the worker, or an old track coming back."""
    sequence = build("straight", *SIZE, LENGTH)
    session_id = new_session("ended")
    (first,) = tracker.process([frame(session_id, 0, sequence.render(0))])
    (kept,) = tracker.process([frame(session_id, 1, sequence.render(1))])
    assert kept["tracks"][0]["id"] == first["tracks"][0]["id"]
    assert session_id in tracker.session_ids
    tracker.end_session(session_id)
    assert session_id not in tracker.session_ids
    tracker.end_session(session_id)  # twice is harmless
    (after,) = tracker.process([frame(session_id, 2, sequence.render(2))])
    assert after["tracks"][0]["id"] != first["tracks"][0]["id"]


def test_one_batched_call_equals_single_calls(tracker: Any) -> None:
    """Guards against: batching mixing up frames, sizes or order."""
    small, large = build("straight", *SIZE, LENGTH), build("zigzag", 400, 300, LENGTH)
    batched, single = new_session("batched"), new_session("single")
    plan = [(n, index, sequence) for index in range(3) for n, sequence in enumerate((small, large))]
    together = tracker.process([frame(f"{batched}-{n}", index, seq.render(index)) for n, index, seq in plan])
    alone = [tracker.process([frame(f"{single}-{n}", index, seq.render(index))])[0] for n, index, seq in plan]
    assert len(together) == len(plan)
    for joint, solo in zip(together, alone, strict=True):
        assert len(joint["tracks"]) == len(solo["tracks"]) == 1
        assert joint["tracks"][0]["box"] == pytest.approx(solo["tracks"][0]["box"], abs=0.5)


# -- options -----------------------------------------------------------------------------------------


def test_min_score_just_above_a_faces_score_hides_it(tracker: Any) -> None:
    """Guards against: the client's min_score being ignored."""
    sequence = build("straight", *SIZE, LENGTH)
    (shown,) = tracker.process([frame(new_session("score"), 0, sequence.render(0))])
    face_score = shown["tracks"][0]["score"]
    assert face_score < 1.0
    above = {"min_score": (face_score + 1.0) / 2}
    (hidden,) = tracker.process([frame(new_session("score"), 0, sequence.render(0), above)])
    assert hidden["tracks"] == []
    below = {"min_score": face_score - 0.01}
    (kept,) = tracker.process([frame(new_session("score"), 0, sequence.render(0), below)])
    assert len(kept["tracks"]) == 1


def test_min_face_size_above_the_face_hides_it(tracker: Any) -> None:
    """Guards against: the client's min_face_size being ignored (the face here is 60 px tall)."""
    sequence = build("straight", *SIZE, 1)
    (big_only,) = tracker.process([frame(new_session("size"), 0, sequence.render(0), {"min_face_size": 120})])
    assert big_only["tracks"] == []
    (larger_than_frame,) = tracker.process([frame(new_session("size"), 0, sequence.render(0), {"min_face_size": 1000})])
    assert larger_than_frame["tracks"] == []
    (default,) = tracker.process([frame(new_session("size"), 0, sequence.render(0), {"min_face_size": 30})])
    assert len(default["tracks"]) == 1


def test_unusable_options_fall_back_to_defaults(tracker: Any) -> None:
    """Guards against: a client's bad option value failing the plugin for every session."""
    sequence = build("straight", *SIZE, 1)
    options = {"min_score": "high", "min_face_size": float("nan")}
    (result,) = tracker.process([frame(new_session("bad"), 0, sequence.render(0), options)])
    assert len(result["tracks"]) == 1


@pytest.mark.parametrize("config", [{"min_hits": 0}, {"min_score": 2}, {"min_face_size": "20"}, {"no_such_key": 1}])
def test_an_invalid_config_is_refused_at_load(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="config"):
        video_tracker_class()("cpu", config)


# -- the tracker alone, on made-up detections ---------------------------------------------------------


def make_tracker(**settings: Any) -> FaceTracker:
    ids = itertools.count(1)
    return FaceTracker(TrackerSettings(**settings), lambda: next(ids))


def box_at(x: float) -> np.ndarray:
    return np.array([[x, 50.0, x + 40.0, 100.0]])


def test_a_weak_detection_continues_a_track_but_never_starts_one() -> None:
    """ByteTrack's second stage: a half-hidden face stays tracked; a weak blob never becomes a face."""
    tracker = make_tracker()
    weak, strong = np.array([0.7]), np.array([0.99])
    assert [tracker.update(index, box_at(10 + index), weak, 0.9, (320, 240)) for index in range(3)] == [[], [], []]
    assert tracker.update(3, box_at(13), strong, 0.9, (320, 240)) == []  # tentative
    assert [f.track_id for f in tracker.update(4, box_at(14), strong, 0.9, (320, 240))] == [1]
    assert [f.track_id for f in tracker.update(5, box_at(15), weak, 0.9, (320, 240))] == [1]


def test_a_new_face_is_reported_from_its_second_hit_after_the_first_frame() -> None:
    tracker = make_tracker()
    tracker.update(0, np.zeros((0, 4)), np.zeros(0), 0.9, (320, 240))
    assert tracker.update(1, box_at(10), np.array([0.99]), 0.9, (320, 240)) == []
    assert len(tracker.update(2, box_at(12), np.array([0.99]), 0.9, (320, 240))) == 1


def test_a_track_survives_dropped_frames_and_expires_after_max_lost_frames() -> None:
    tracker = make_tracker(max_lost_frames=10)
    for index in range(3):
        tracker.update(index, box_at(10 + 5 * index), np.array([0.99]), 0.9, (320, 240))
    # The server skipped frames 3..7 (index gap): the prediction moves on 5 px per frame.
    assert [f.track_id for f in tracker.update(8, box_at(50), np.array([0.99]), 0.9, (320, 240))] == [1]
    tracker.update(19, np.zeros((0, 4)), np.zeros(0), 0.9, (320, 240))
    assert tracker.tracks == []


def test_an_index_going_back_starts_the_session_afresh() -> None:
    """A restarted stream counts from 0 again: its faces are reported at once, under new ids."""
    tracker = make_tracker()
    for index in range(3):
        tracker.update(index, box_at(10 + index), np.array([0.99]), 0.9, (320, 240))
    assert [f.track_id for f in tracker.update(0, box_at(200), np.array([0.99]), 0.9, (320, 240))] == [2]
    assert len(tracker.tracks) == 1


# -- as the server runs it ----------------------------------------------------------------------------


def test_the_manifest_names_the_installed_weights() -> None:
    """Guards against: a manifest sha256 that does not match the wheel (the plugin would be UNAVAILABLE)."""
    assert check_plugin(read_manifest(PLUGIN_DIR)) is None


@pytest.mark.asyncio
async def test_through_the_sandbox_a_moving_face_keeps_one_id() -> None:
    deaths: list[object] = []
    worker = PluginWorker(read_manifest(PLUGIN_DIR), "auto", on_death=deaths.append, log_level="WARNING")
    try:
        loaded = await run_plugin_sandboxed(worker, Load())
        assert loaded.ok, loaded.error
        sequence = build("zigzag", *SIZE, LENGTH)
        session_id = new_session("sandbox")
        scored, ids = SequenceScore(), set()
        for index in range(len(sequence)):
            rendered = sequence.render(index)
            result = await run_plugin_sandboxed(worker, Process([Frame(session_id, index, index, rendered.image)]))
            assert result.ok, result.error
            scored.add_frame(rendered.truth, result.result[0]["tracks"])
            ids |= {t["id"] for t in result.result[0]["tracks"]}
        ended = await run_plugin_sandboxed(worker, EndSession(session_id))
        assert ended.ok, ended.error
    finally:
        await worker.stop()
    metrics = summarize({"zigzag": scored})["zigzag"]
    assert metrics["recall"] >= 0.95 and metrics["precision"] >= 0.95, metrics
    assert len(ids) == 1
    assert deaths == []
