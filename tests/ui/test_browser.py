"""The live-tracking page in Debian's Chromium against the real server (issue 6, DESIGN 5).

Each scenario runs `python -m tests.ui.driver` in a child process. As root, that process
runs in a private network namespace (`unshare -n`, then `ip link set lo up`): the
server (`python -m app`) and Chromium share a network that has only 127.0.0.1.
Without root it runs on the host's loopback instead (`--ice-address 127.0.0.1`, no
STUN), which keeps the traffic on this machine too. The driver records what the
page showed in test-artifacts/ui/<scenario>/result.json, with screenshots; these
tests assert on it. A scenario runs once per module and serves several tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REASON, isolation

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DRIVER = "tests.ui.driver"
ARTIFACTS = REPO / "test-artifacts" / "ui"
SCENARIO_TIMEOUT_S = 240
# Console noise a scenario causes on purpose (the browser logs every failed request).
EXPECTED_CONSOLE = ("Failed to load resource", "WebSocket connection to")

Result = dict[str, Any]


def run_scenario(name: str) -> Result:
    out = ARTIFACTS / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [*isolation(), sys.executable, "-m", DRIVER, name, str(out)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIVETRACK_")}
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"scenario {name} ran past {SCENARIO_TIMEOUT_S} s; see {out}") from None
    result_file = out / "result.json"
    if done.returncode != 0 or not result_file.exists():
        raise AssertionError(f"scenario {name} failed (exit {done.returncode}); see {out}\n{done.stderr[-4000:]}")
    result: Result = json.loads(result_file.read_text())
    return result


@pytest.fixture(scope="module")
def scenario() -> Callable[[str], Result]:
    """scenario(name) -> what the driver recorded; each scenario runs once per module."""
    if not CHROMIUM.exists():
        pytest.skip(
            "Chromium is not installed at /usr/bin/chromium: run `apt-get install chromium` (Debian) "
            "to run the browser tests"
        )
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is missing: pip install -e '.[dev]'")
    outcomes: dict[str, Result | AssertionError] = {}

    def get(name: str) -> Result:
        if name not in outcomes:
            try:
                outcomes[name] = run_scenario(name)
            except AssertionError as exc:
                outcomes[name] = exc
        outcome = outcomes[name]
        if isinstance(outcome, AssertionError):
            raise outcome
        return outcome

    return get


def unexpected_errors(errors: list[str]) -> list[str]:
    return [error for error in errors if not any(noise in error for noise in EXPECTED_CONSOLE)]


# -- isolation ------------------------------------------------------------------------------------
def test_browser_and_server_share_a_network_with_only_loopback(scenario: Callable[[str], Result]) -> None:
    """Guards DESIGN 5: no browser test traffic can leave the machine."""
    if not isolation():
        pytest.skip("not root (or no unshare): the scenarios ran on the host's loopback instead")
    assert scenario("session")["network_interfaces"] == ["lo"]


# -- session: start, video, stats, stop -------------------------------------------------------
def test_health_panel_lists_every_plugin_with_its_state_in_words(scenario: Callable[[str], Result]) -> None:
    cards = scenario("session")["cards"]
    assert {name: card["state"] for name, card in cards.items()} == {
        "colorblob": "INITIALIZED",
        "init_raises": "FAILED",
        "missing_package": "UNAVAILABLE",
        "segfault": "INITIALIZED",
    }
    assert all(card["badge"] == card["state"] for card in cards.values())  # written, not colour alone
    assert (
        REASON.match(cards["init_raises"]["reason"])
        and "detector weights are corrupt" in cards["init_raises"]["reason"]
    )
    assert cards["missing_package"]["reason"].startswith("ImportError: ")
    # Broken plugins are restarted, healthy ones reloaded (new code or model file): both from the same button.
    assert all(card["restartVisible"] for card in cards.values())
    assert {name: card["restartLabel"] for name, card in cards.items()} == {
        "colorblob": "Reload",
        "init_raises": "Restart",
        "missing_package": "Restart",
        "segfault": "Reload",
    }


def test_plugin_picker_disables_unusable_plugins_and_shows_why(scenario: Callable[[str], Result]) -> None:
    result = scenario("session")
    assert {o["name"]: o["disabled"] for o in result["options"]} == {
        "colorblob": False,
        "init_raises": True,
        "missing_package": True,
        "segfault": False,
    }
    assert result["selected_plugin"] == "colorblob"
    assert "2 plugins can't be used right now" in result["unusable_text"]
    assert "init_raises FAILED: RuntimeError: detector weights are corrupt" in result["unusable_text"]
    assert "missing_package UNAVAILABLE: ImportError:" in result["unusable_text"]


def test_start_from_the_keyboard_plays_the_annotated_video(scenario: Callable[[str], Result]) -> None:
    result = scenario("session")
    assert result["live"], "the page never reached the live phase after Enter on Start"
    before, after = result["remote_frames"]
    assert after - before >= 20, f"the annotated video showed {after - before} frames in 3 s"
    assert result["remote_size"] == [640, 480]  # the default resolution
    assert result["session_line"].startswith("Streaming to colorblob")


def test_stats_panel_shows_live_frame_rates_processed_fps_and_box_age(scenario: Callable[[str], Result]) -> None:
    result = scenario("session")
    tiles = result["tiles"]
    assert tiles["fps_in"] > 10 and tiles["fps_out"] > 10, tiles
    assert tiles["processed"] > 1, tiles
    assert tiles["dropped"] is not None, tiles
    # colorblob answers in a few ms: the boxes drawn are a frame or two old, never seconds.
    assert tiles["box_age_p50"] is not None and 0 <= tiles["box_age_p50"] <= 1000, tiles
    assert tiles["box_age_p95"] is not None and tiles["box_age_p95"] >= tiles["box_age_p50"], tiles
    assert result["charts_drawn"] == 6


def test_tracks_from_the_data_channel_are_listed_and_drawn_over_the_preview(
    scenario: Callable[[str], Result],
) -> None:
    result = scenario("session")
    summary = result["track_summary"]
    assert summary.startswith("3 tracks:") and all(c in summary for c in ("red", "blue", "yellow")), summary
    assert result["view"] == "overlay"
    assert result["overlay_pixels"] > 1000, "nothing was drawn on the overlay canvas"


def test_stop_closes_the_session_on_the_server(scenario: Callable[[str], Result]) -> None:
    stop = scenario("session")["stop"]
    assert stop["sessions_empty"] is True, "GET /v1/sessions still lists the session after Stop"
    assert stop["phase"] == "idle" and stop["button"] == "Start"


def test_closing_the_tab_closes_the_session_on_the_server(scenario: Callable[[str], Result]) -> None:
    closed = scenario("session")["tab_close"]
    assert closed["live_again"] and closed["sessions_before"] == 1
    assert closed["sessions_empty"] is True
    assert closed["delete_requests"], "the page sent no DELETE /v1/sessions/{id} on pagehide"


def test_page_is_labelled_readable_on_a_phone_and_error_free(scenario: Callable[[str], Result]) -> None:
    result = scenario("session")
    assert result["unlabelled_controls"] == []
    assert result["phone_overflow_px"] <= 0, "the page scrolls sideways at 390 px wide"
    assert result["errors"] == []


# -- a crashing plugin and the restart button -------------------------------------------------------
def test_a_video_connection_that_cannot_connect_says_what_to_change(scenario: Callable[[str], Result]) -> None:
    """The symptom prevented: "Starting…" forever when the browser cannot reach the server's addresses."""
    result = scenario("ice")
    assert result["message"] is not None, result
    assert result["kind"] == "ice" and result["phase"] == "idle", result
    assert "did not connect" in result["message"] and "--ice-address" in result["message"], result
    assert "TURN" in result["message"] and "firewall" in result["message"], result
    assert result["seconds_to_message"] <= 30, result
    assert result["sessions_after"], "the session stayed open on the server"
    # The server's bound starts when it answers, before the page's: its reason is the one logged.
    assert [r for r in result["close_reasons"] if r.startswith("IceConnectionError: ")], result["close_reasons"]
    assert not unexpected_errors(result["errors"]), result["errors"]


def test_crashed_plugin_shows_failed_and_its_reason_within_2_s(scenario: Callable[[str], Result]) -> None:
    result = scenario("crash")
    assert result["run_status"] == 502
    failed = next(entry for entry in result["first_crash"] if entry["state"] == "FAILED")
    assert failed["after_ms"] < 2000, failed
    assert failed["badge"] == "FAILED"
    assert REASON.match(failed["reason"]) and "SIGSEGV" in failed["reason"], failed


def test_crashed_plugin_shows_its_recovered_state(scenario: Callable[[str], Result]) -> None:
    result = scenario("crash")
    states = [entry["state"] for entry in result["first_crash"]]
    assert states[0] == "FAILED" and states[-1] == "INITIALIZED", states
    assert "from FAILED: WorkerCrashed:" in result["recovered_note"]


def test_restart_button_asks_for_the_admin_token_and_restarts(scenario: Callable[[str], Result]) -> None:
    result = scenario("crash")
    assert result["stuck"]["state"] == "FAILED" and result["stuck"]["restartVisible"]
    assert "automatic restarts stopped" in result["stuck"]["reason"]
    assert "admin token" in result["dialog_text"] and result["dialog_focus"] == "token-input"
    assert "not accepted" in result["wrong_token_error"]
    assert result["state_after_wrong_token"] == "FAILED"
    states = [entry["state"] for entry in result["after_restart"]]
    assert states[-1] == "INITIALIZED" and "LOADED" in states, states
    assert result["dialog_open_after"] is False
    assert result["restarts_after"] == result["restarts_before"] + 1
    assert result["restarts_shown"] == str(result["restarts_after"])
    assert unexpected_errors(result["errors"]) == []


def test_switching_to_a_crashing_plugin_says_why_and_keeps_the_video(scenario: Callable[[str], Result]) -> None:
    switched = scenario("crash")["switched"]
    assert switched["session_plugins"] == ["segfault"], "the plugin switch did not reach the server"
    assert switched["session_line"].startswith("Streaming to segfault")
    assert switched["picker"] == "segfault", "the picker no longer shows the session's plugin"
    assert switched["message"].startswith("segfault is FAILED.") and "SIGSEGV" in switched["message"]
    assert "passes through without tracking" in switched["message"]
    before, after = switched["frames"]
    assert after - before >= 10, f"the video stopped with the plugin: {after - before} frames in 2 s"


# -- camera problems and camera changes ---------------------------------------------------------
def test_denied_camera_says_how_to_allow_it(scenario: Callable[[str], Result]) -> None:
    denied = scenario("camera")["denied"]
    assert denied["kind"] == "denied"
    assert denied["text"].startswith("Camera access was denied.") and "Allow the camera" in denied["text"]
    assert denied["phase"] == "idle" and denied["button"] == "Start"
    assert denied["sessions"] == [] and denied["errors"] == []


def test_missing_camera_says_so(scenario: Callable[[str], Result]) -> None:
    missing = scenario("camera")["missing"]
    assert missing["kind"] == "missing"
    assert missing["text"].startswith("No camera was found.")
    assert missing["phase"] == "idle" and missing["sessions"] == [] and missing["errors"] == []


def test_camera_and_resolution_change_keep_the_session(scenario: Callable[[str], Result]) -> None:
    result = scenario("camera")
    assert result["cameras"] == 3
    assert result["label_before"] != result["label_after"]
    assert result["remote_size_after"] == [1280, 720], "the annotated video did not follow the new resolution"
    assert result["sessions_after_switch"] == 1 and result["phase_after_switch"] == "live"
    assert result["errors"] == []


# -- server down -------------------------------------------------------------------------------------
def test_server_down_shows_a_banner_and_why_a_session_cannot_start(scenario: Callable[[str], Result]) -> None:
    result = scenario("server_down")
    assert result["banner_before"] is False
    assert result["banner_after_s"] < 3
    assert "The server is unreachable." in result["banner_text"] and "Retrying in" in result["banner_text"]
    assert result["link_text"].strip() == "Offline"
    assert result["panel_stale"] is True
    assert result["start_while_down"]["kind"] == "unreachable"
    assert "could not be reached" in result["start_while_down"]["text"]


def test_health_channel_reconnects_with_backoff(scenario: Callable[[str], Result]) -> None:
    result = scenario("server_down")
    attempts = result["attempts_s"]
    assert len(attempts) == 4, attempts
    gaps = [round(b - a, 1) for a, b in zip([0.0, *attempts], attempts, strict=False)]
    for gap, expected in zip(gaps, (1, 2, 4, 8), strict=True):
        assert expected - 0.1 <= gap <= expected + 0.6, gaps
    assert result["link_text_after"].strip() == "Connected"
    assert result["panel_stale_after"] is False
    assert unexpected_errors(result["errors"]) == []
