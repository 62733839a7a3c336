"""Runs one browser scenario against the real server and writes what it saw as JSON.

    python -m tests.ui.driver SCENARIO OUT_DIR      (from the repository root)

`tests/ui/test_browser.py` starts it inside a private network namespace (only `lo`),
so the server (`python -m app`, a subprocess) and Chromium (driven by Playwright)
talk over 127.0.0.1 and nothing else. It records observations (states, texts,
timings, counts) in OUT_DIR/result.json and screenshots next to it; the pytest
tests assert on them. It asserts nothing itself: a step that times out records
what it last saw, so a failing test shows the page's actual state.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from tests.ui.harness import (
    ADMIN_TOKEN,
    DESKTOP,
    OPTIONS,
    PHONE,
    PLUGINS,
    REMOTE_SIZE,
    Result,
    Server,
    browser,
    card_states,
    now_ms,
    open_page,
    png_bytes,
    tile,
    video_frames,
    wait_until,
    write_scene,
)


# -- scenarios ----------------------------------------------------------------------------------
def scenario_session(out: Path) -> Result:
    """Start -> annotated video plays and stats fill in; Stop -> no session left; closing the tab ends one too."""
    result: Result = {}
    server = Server(out)
    server.start()
    try:
        with browser(video=write_scene(out / "scene.mjpeg")) as context:
            page, errors = open_page(context, server)
            result["cards"] = card_states(page)
            result["options"] = page.evaluate(OPTIONS)
            result["unusable_text"] = page.text_content("#unusable")
            result["plugin_hint"] = page.inner_text("#plugin-hint")
            result["unlabelled_controls"] = unlabelled_controls(page)
            result["selected_plugin"] = page.input_value("#plugin-select")

            # Keyboard only: focus Start and press Enter.
            page.focus("#start-button")
            page.keyboard.press("Enter")
            started = time.monotonic()
            live = wait_until(lambda: page.get_attribute("#viewport", "data-phase") == "live", 30)
            result["live"] = bool(live)
            result["seconds_to_live"] = round(time.monotonic() - started, 2)
            result["sessions_while_live"] = server.sessions()
            result["session_line"] = page.inner_text("#session-line")

            first = video_frames(page, "#remote-video")
            time.sleep(3)
            result["remote_frames"] = [first, video_frames(page, "#remote-video")]
            result["remote_size"] = page.evaluate(REMOTE_SIZE)
            wait_until(lambda: (tile(page, "fps_in") or 0) > 10, 15)
            result["tiles"] = {
                key: tile(page, key)
                for key in ("fps_in", "fps_out", "processed", "dropped", "box_age_p50", "box_age_p95")
            }
            result["charts_drawn"] = page.evaluate(
                """() => [...document.querySelectorAll('#stats-tiles canvas')].filter((c) => {
                    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    for (let i = 3; i < data.length; i += 4) if (data[i]) return true;
                    return false;
                }).length"""
            )
            result["track_summary"] = page.inner_text("#track-summary")
            page.screenshot(path=out / "session-annotated.png")

            # The overlay view, chosen with the arrow key on the view radio group.
            page.focus("#view-annotated")
            page.keyboard.press("ArrowRight")
            time.sleep(1.5)
            result["view"] = page.get_attribute("#viewport", "data-view")
            result["overlay_pixels"] = page.evaluate(
                """() => { const c = document.querySelector('#overlay-canvas');
                    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 3; i < data.length; i += 4) if (data[i]) n++; return n; }"""
            )
            page.screenshot(path=out / "session-overlay.png")
            page.click("label[for=view-annotated]")

            page.set_viewport_size(PHONE)
            time.sleep(0.5)
            result["phone_overflow_px"] = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            page.screenshot(path=out / "session-phone.png", full_page=True)
            page.set_viewport_size(DESKTOP)
            page.mouse.click(1, 1)  # no keyboard focus ring in the picture (docs/screenshot.png comes from it)
            time.sleep(1)
            page.screenshot(path=out / "session-desktop.png")

            session_id = server.sessions()[0]["session_id"]
            page.click("#start-button")
            stopped = time.monotonic()
            empty = wait_until(lambda: server.sessions() == [], 10)
            result["stop"] = {
                "sessions_empty": empty,
                "reason": wait_until(lambda: server.close_reasons().get(session_id), 5),
                "delete_requests": server.requests("DELETE", f"/v1/sessions/{session_id}"),
                "seconds": round(time.monotonic() - stopped, 2),
                "phase": page.get_attribute("#viewport", "data-phase"),
                "button": page.inner_text("#start-button"),
            }

            # Closing the tab closes the session on the server (pagehide).
            page.click("#start-button")
            relive = wait_until(lambda: page.get_attribute("#viewport", "data-phase") == "live", 30)
            sessions = server.sessions()
            result["errors"] = errors.errors
            page.close()
            closed = time.monotonic()
            empty = wait_until(lambda: server.sessions() == [], 15)
            result["tab_close"] = {
                "live_again": bool(relive),
                "sessions_before": len(sessions),
                "sessions_empty": empty,
                "reason": sessions and wait_until(lambda: server.close_reasons().get(sessions[0]["session_id"]), 5),
                # The page's pagehide handler sends DELETE with keepalive; it may find the session
                # already closed by the peer connection's end (404), but it must have been sent.
                "delete_requests": sessions and server.requests("DELETE", f"/v1/sessions/{sessions[0]['session_id']}"),
                "seconds": round(time.monotonic() - closed, 2),
            }
    finally:
        server.close()
    return result


def unlabelled_controls(page: Page) -> list[str]:
    """Visible form controls without an accessible name (label, aria-label or text)."""
    names: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea')]
            .filter((el) => el.offsetParent !== null || el.type === 'radio')
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                    && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
            .map((el) => el.id || el.outerHTML.slice(0, 80))"""
    )
    return names


# Records every state/reason the page shows for one plugin card, with the time (ms since epoch).
RECORD_CARD = """(name) => {
    const li = document.querySelector(`#plugin-list li[data-name="${name}"]`);
    const seen = (window.__seen = []);
    const record = () => {
        const reason = li.querySelector('.plugin-reason');
        const entry = {t: Date.now(), state: li.dataset.state, badge: li.querySelector('.badge').textContent,
                       reason: reason.hidden ? null : reason.textContent};
        const last = seen[seen.length - 1];
        if (!last || last.state !== entry.state || last.reason !== entry.reason) seen.push(entry);
    };
    record();
    new MutationObserver(record).observe(li, {subtree: true, attributes: true, childList: true, characterData: true});
}"""
SEEN_AFTER = "(t) => window.__seen.filter((e) => e.t >= t)"


def restart_button(name: str) -> str:
    return f'#plugin-list li[data-name="{name}"] .plugin-actions button'


def scenario_crash(out: Path) -> Result:
    """A plugin crashes: the panel shows FAILED with the reason, then it recovers; once its
    automatic restarts are spent, the restart button (admin token asked on 401) brings it back."""
    result: Result = {}
    server = Server(out, admin_token=ADMIN_TOKEN)
    server.start()
    try:
        with browser() as context:
            page, errors = open_page(context, server)
            page.evaluate(RECORD_CARD, "segfault")
            crashed_at = now_ms()
            result["run_status"] = server.http.post(
                "/v1/plugins/segfault/run", content=png_bytes(), headers={"Content-Type": "image/png"}
            ).status_code
            page.wait_for_function(
                "window.__seen.some((e) => e.state === 'FAILED') && window.__seen.at(-1).state === 'INITIALIZED'",
                timeout=20_000,
            )
            seen = page.evaluate(SEEN_AFTER, crashed_at)
            result["first_crash"] = [{**e, "after_ms": round(e["t"] - crashed_at)} for e in seen]
            result["recovered_note"] = page.text_content('#plugin-list li[data-name="segfault"] .plugin-past')

            # Three more crashes spend the budget of 3 automatic restarts: it stays FAILED.
            for _ in range(3):
                server.wait_state("segfault", "INITIALIZED")
                server.http.post("/v1/plugins/segfault/run", content=png_bytes(), headers={"Content-Type": "image/png"})
            page.wait_for_function(
                """() => { const li = document.querySelector('#plugin-list li[data-name="segfault"]');
                    return li.dataset.state === 'FAILED'
                        && li.querySelector('.plugin-reason').textContent.includes('automatic restarts stopped'); }""",
                timeout=20_000,
            )
            time.sleep(1)
            result["stuck"] = card_states(page)["segfault"]
            result["restarts_before"] = server.health("segfault")["restarts"]
            page.screenshot(path=out / "crash-failed.png")

            # The restart button: 401 -> the dialog asks; a wrong token -> told so; the right one -> restarted.
            clicked_at = now_ms()
            page.click(restart_button("segfault"))
            page.wait_for_selector("#token-dialog[open]", timeout=5_000)
            result["dialog_text"] = page.text_content("#token-text")
            result["dialog_focus"] = page.evaluate("document.activeElement.id")
            page.fill("#token-input", "not-the-token")
            page.keyboard.press("Enter")
            page.wait_for_function(
                "document.querySelector('#token-dialog').open && document.querySelector('#token-error').textContent",
                timeout=5_000,
            )
            result["wrong_token_error"] = page.text_content("#token-error")
            result["state_after_wrong_token"] = server.health("segfault")["state"]
            page.fill("#token-input", ADMIN_TOKEN)
            page.click("#token-submit")
            page.wait_for_function("window.__seen.at(-1).state === 'INITIALIZED'", timeout=20_000)
            result["dialog_open_after"] = page.evaluate("document.querySelector('#token-dialog').open")
            result["after_restart"] = [
                {**e, "after_ms": round(e["t"] - clicked_at)} for e in page.evaluate(SEEN_AFTER, clicked_at)
            ]
            result["restarts_after"] = server.health("segfault")["restarts"]
            result["restarts_shown"] = page.text_content(
                '#plugin-list li[data-name="segfault"] [data-field="restarts"] dd'
            )
            result["toasts"] = page.text_content("#toasts")

            # Switched to mid-session, the crashing plugin fails on every frame until its automatic
            # restarts are spent; the page says so, and the video keeps coming (passed through).
            page.click("#start-button")
            page.wait_for_selector("#viewport[data-phase=live]", timeout=30_000)
            page.select_option("#plugin-select", "segfault")
            page.wait_for_function(
                """() => { const note = document.querySelector('#plugin-message');
                    return !note.hidden && note.textContent.includes('automatic restarts stopped'); }""",
                timeout=20_000,
            )
            first = video_frames(page, "#remote-video")
            time.sleep(2)
            result["switched"] = {
                "session_plugins": [session["plugin"] for session in server.sessions()],
                "message": page.inner_text("#plugin-message"),
                "session_line": page.inner_text("#session-line"),
                "picker": page.input_value("#plugin-select"),
                "frames": [first, video_frames(page, "#remote-video")],
            }
            page.screenshot(path=out / "crash-session.png")
            page.click("#start-button")
            result["errors"] = errors.errors
    finally:
        server.close()
    return result


def start_and_read_message(page: Page) -> dict[str, Any]:
    page.click("#start-button")
    page.wait_for_selector("#camera-message:not([hidden])", timeout=15_000)
    return {
        "kind": page.get_attribute("#camera-message", "data-kind"),
        "text": page.inner_text("#camera-message"),
        "phase": page.get_attribute("#viewport", "data-phase"),
        "button": page.inner_text("#start-button"),
    }


def scenario_camera(out: Path) -> Result:
    """Camera denied, no camera, and two cameras with a switch of camera and resolution mid-session."""
    result: Result = {}
    server = Server(out)
    server.start()
    try:
        with browser(fake_prompt=False) as context:  # no fake "allow": Chromium denies the permission
            page, errors = open_page(context, server)
            result["denied"] = start_and_read_message(page)
            page.screenshot(path=out / "camera-denied.png")
            result["denied"]["sessions"] = server.sessions()
            result["denied"]["errors"] = errors.errors
        with browser(fake_camera=False) as context:  # this machine has no real camera
            page, errors = open_page(context, server)
            result["missing"] = start_and_read_message(page)
            result["missing"]["sessions"] = server.sessions()
            result["missing"]["errors"] = errors.errors
        # Chromium's second fake camera delivers Y16 (depth) frames, which its WebRTC encoder
        # does not send; the third delivers MJPEG like a webcam. So: three cameras, switch to the last.
        with browser(cameras=3) as context:
            page, errors = open_page(context, server)
            result["picker_before_start"] = page.is_visible("#camera-select")
            page.click("#start-button")
            page.wait_for_selector("#viewport[data-phase=live]", timeout=30_000)
            page.wait_for_selector("#camera-select", state="visible", timeout=5_000)
            cameras = page.evaluate("[...document.querySelectorAll('#camera-select option')].map((o) => o.value)")
            result["cameras"] = len(cameras)
            local_label = "document.querySelector('#local-video').srcObject.getVideoTracks()[0].label"
            result["label_before"] = page.evaluate(local_label)
            page.select_option("#camera-select", cameras[-1])
            page.select_option("#resolution-select", "1280x720")
            wait_until(lambda: page.evaluate(REMOTE_SIZE) == [1280, 720], 15)
            result["label_after"] = page.evaluate(local_label)
            result["remote_size_after"] = page.evaluate(REMOTE_SIZE)
            result["sessions_after_switch"] = len(server.sessions())
            result["phase_after_switch"] = page.get_attribute("#viewport", "data-phase")
            page.click("#start-button")
            result["errors"] = errors.errors
    finally:
        server.close()
    return result


def scenario_server_down(out: Path) -> Result:
    """The server goes away: a banner says so, the health channel retries after 1, 2, 4, 8 s, and
    the page comes back by itself when the server does."""
    result: Result = {}
    server = Server(out)
    server.start()
    try:
        with browser() as context:
            # When the page opens a WebSocket, and when one closes (ms since epoch).
            context.add_init_script(
                """window.__sockets = []; window.__closes = []; const Native = window.WebSocket;
                window.WebSocket = class extends Native {
                    constructor(...args) {
                        window.__sockets.push(Date.now());
                        super(...args);
                        this.addEventListener('close', () => window.__closes.push(Date.now()));
                    }
                };"""
            )
            page, errors = open_page(context, server)
            result["banner_before"] = page.is_visible("#banner")
            opened_before = page.evaluate("window.__sockets.length")
            down_at = now_ms()
            server.stop()
            page.wait_for_selector("#banner", state="visible", timeout=10_000)
            result["banner_after_s"] = round((now_ms() - down_at) / 1000, 2)
            result["banner_text"] = page.inner_text("#banner")
            result["link_text"] = page.inner_text("#link-state")
            result["panel_stale"] = page.evaluate("document.querySelector('#plugin-list').hasAttribute('data-stale')")
            page.screenshot(path=out / "server-down.png")
            # A session cannot start while the server is away: the page says why.
            result["start_while_down"] = start_and_read_message(page)
            page.wait_for_function(f"window.__sockets.length >= {opened_before + 3}", timeout=15_000)
            server.start()  # same port: the next retry (8 s after the third) finds it
            page.wait_for_selector("#banner", state="hidden", timeout=30_000)
            result["recovered_after_s"] = round((now_ms() - down_at) / 1000, 2)
            opened = page.evaluate("window.__sockets")[opened_before:]
            lost_at = min(t for t in page.evaluate("window.__closes") if t >= down_at)
            # Seconds after the page saw the connection drop.
            result["attempts_s"] = [round((t - lost_at) / 1000, 2) for t in opened]
            result["link_text_after"] = page.inner_text("#link-state")
            page.wait_for_function(f"document.querySelectorAll('#plugin-list li').length === {len(PLUGINS)}")
            result["panel_stale_after"] = page.evaluate(
                "document.querySelector('#plugin-list').hasAttribute('data-stale')"
            )
            result["errors"] = errors.errors
    finally:
        server.close()
    return result


def scenario_ice(out: Path) -> Result:
    """The server offers an address the browser cannot reach: the page says so and what to change."""
    result: Result = {}
    server = Server(out, ice_address="192.0.2.1")  # TEST-NET-1: no interface here has it
    server.start()
    try:
        with browser() as context:
            page, errors = open_page(context, server)
            page.click("#start-button")
            started = time.monotonic()
            shown = wait_until(lambda: page.is_visible("#camera-message"), 40)
            result["seconds_to_message"] = round(time.monotonic() - started, 1)
            result["message"] = page.inner_text("#camera-message") if shown else None
            result["kind"] = page.get_attribute("#camera-message", "data-kind")
            result["phase"] = page.get_attribute("#viewport", "data-phase")
            result["session_line"] = page.inner_text("#session-line")
            page.screenshot(path=out / "ice-failed.png")
            result["sessions_after"] = wait_until(lambda: server.sessions() == [], 20)
            result["close_reasons"] = list(server.close_reasons().values())
            result["errors"] = errors.errors
    finally:
        server.close()
    return result


SCENARIOS: dict[str, Callable[[Path], Result]] = {
    "ice": scenario_ice,
    "session": scenario_session,
    "crash": scenario_crash,
    "camera": scenario_camera,
    "server_down": scenario_server_down,
}


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = SCENARIOS[name](out)
    result["scenario_seconds"] = round(time.monotonic() - started, 1)
    with suppress(OSError):
        result["network_interfaces"] = sorted(name for _, name in socket.if_nameindex())
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
