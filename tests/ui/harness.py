"""What the browser scenarios stand on: the server as a subprocess, Chromium, a fake camera scene.

Used by tests/ui/driver.py; see there and tests/ui/test_browser.py.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, ViewportSize, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FIXTURES = REPO / "tests" / "fixtures" / "plugins"
# The plugins every scenario serves: a working tracker, one that crashes on a frame,
# one that fails at load, and one that cannot run here.
PLUGINS = {
    "colorblob": REPO / "plugins" / "colorblob",
    "segfault": FIXTURES / "segfault",
    "init_raises": FIXTURES / "init_raises",
    "missing_package": FIXTURES / "missing_package",
}
ADMIN_TOKEN = "ui-test-token"
CHROMIUM_ARGS = [
    "--no-sandbox",  # Chromium refuses to run as root otherwise
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",
]
FAKE_CAMERA = "--use-fake-device-for-media-stream"
FAKE_PROMPT = "--use-fake-ui-for-media-stream"
DESKTOP: ViewportSize = {"width": 1360, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
REMOTE_SIZE = (
    "[document.querySelector('#remote-video').videoWidth, document.querySelector('#remote-video').videoHeight]"
)
OPTIONS = "[...document.querySelectorAll('#plugin-select option')].map((o) => ({name: o.value, disabled: o.disabled}))"

Result = dict[str, Any]


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """check()'s first truthy value, or its last value once `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def now_ms() -> float:
    return time.time() * 1000


def write_scene(path: Path, frames: int = 90) -> Path:
    """A looping MJPEG for Chromium's fake camera: three saturated shapes (red, blue, yellow)
    moving apart over a dull background, so colorblob has exactly three things to track."""
    width, height = 640, 480
    background = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(background)
    for row in range(height):
        v = int(70 + 40 * row / height)
        draw.line([(0, row), (width, row)], fill=(v, v + 6, v + 14))
    with open(path, "wb") as file:
        for i in range(frames):
            angle = 2 * math.pi * i / frames
            image = background.copy()
            draw = ImageDraw.Draw(image)
            cx, cy = 340 + 170 * math.cos(angle), 235 + 100 * math.sin(angle)
            draw.ellipse([cx - 45, cy - 45, cx + 45, cy + 45], fill=(225, 45, 45))
            x = 330 + 220 * math.sin(angle)
            draw.rounded_rectangle([x - 38, 396, x + 38, 466], radius=10, fill=(40, 90, 230))
            y = 230 + 140 * math.sin(angle + 1)
            draw.polygon([(60, y - 42), (98, y + 36), (22, y + 36)], fill=(240, 200, 20))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            file.write(buffer.getvalue())
    return path


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 200, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """`python -m app` on 127.0.0.1, serving PLUGINS; can be stopped and started again on the same port."""

    def __init__(self, out: Path, admin_token: str | None = None, ice_address: str = "127.0.0.1") -> None:
        self.out = out
        self.ice_address = ice_address
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = admin_token
        self.plugins_dir = Path(tempfile.mkdtemp(prefix="livetrack-ui-plugins-"))
        for name, folder in PLUGINS.items():
            (self.plugins_dir / name).symlink_to(folder)
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.starts = 0

    def start(self) -> None:
        command = [
            sys.executable, "-m", "app",
            "--port", str(self.port),
            "--plugins-dir", str(self.plugins_dir),
            "--ice-address", self.ice_address,
            "--gpu-policy", "cpu",
            "--log-level", "INFO",
        ]  # fmt: skip
        if self.admin_token:
            command += ["--admin-token", self.admin_token]
        self.starts += 1
        env = {key: value for key, value in os.environ.items() if not key.startswith("LIVETRACK_")}
        with open(self.out / f"server-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        if not wait_until(self._ready, 60, 0.2):
            raise RuntimeError(f"the server did not get ready; see {self.out}/server-{self.starts}.log")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the server exited with {self.process.returncode}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.http.close()

    def close_reasons(self) -> dict[str, str]:
        """session id -> why it closed, from the server's log ("session <id>: closing: <reason>")."""
        reasons = {}
        for log in sorted(self.out.glob("server-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if ": closing: " in line and "session " in line:
                    head, reason = line.split(": closing: ", 1)
                    reasons[head.rsplit("session ", 1)[1]] = reason
        return reasons

    def requests(self, method: str, path: str) -> list[str]:
        """uvicorn's access-log lines for `method path` (status included)."""
        return [
            line.split(" - ", 1)[-1]
            for log in sorted(self.out.glob("server-*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if f'"{method} {path} HTTP' in line
        ]

    def sessions(self) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = self.http.get("/v1/sessions").json()
        return body

    def health(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/v1/plugins/{name}/health").json()
        return body

    def wait_state(self, name: str, *states: str, timeout: float = 20) -> dict[str, Any]:
        health: dict[str, Any] = wait_until(lambda: (h := self.health(name))["state"] in states and h, timeout)
        return health or self.health(name)


@contextmanager
def browser(
    *, fake_camera: bool = True, fake_prompt: bool = True, cameras: int = 1, video: Path | None = None
) -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile, a fake camera (`cameras` of them, or `video` looped) and no prompt."""
    args = list(CHROMIUM_ARGS)
    if fake_camera:
        args.append(FAKE_CAMERA + (f"=device-count={cameras}" if cameras > 1 else ""))
        if video is not None:
            args.append(f"--use-file-for-fake-video-capture={video}")
    if fake_prompt:
        args.append(FAKE_PROMPT)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="livetrack-ui-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            viewport=DESKTOP,
            color_scheme="light",
            reduced_motion="reduce",
        )
        try:
            yield context
        finally:
            context.close()


class PageErrors:
    """Uncaught exceptions and console errors of a page (each test asserts there are none unexpected)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", self._on_page_error)
        page.on("console", self._on_console)

    def _on_page_error(self, error: PlaywrightError) -> None:
        self.errors.append(f"pageerror: {error}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


def open_page(context: BrowserContext, server: Server) -> tuple[Page, PageErrors]:
    page = context.pages[0] if context.pages else context.new_page()
    errors = PageErrors(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#link-state[data-state=open]", timeout=15_000)
    page.wait_for_function(f"document.querySelectorAll('#plugin-list li').length === {len(PLUGINS)}")
    return page, errors


def card_states(page: Page) -> dict[str, Any]:
    states: dict[str, Any] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#plugin-list li')].map((li) => [
            li.dataset.name,
            {state: li.dataset.state, badge: li.querySelector('.badge').textContent,
             reason: li.querySelector('.plugin-reason').hidden ? null : li.querySelector('.plugin-reason').textContent,
             restartVisible: !li.querySelector('.plugin-actions button').hidden,
             restartLabel: li.querySelector('.plugin-actions button').textContent},
        ]))"""
    )
    return states


def tile(page: Page, key: str) -> float | None:
    value = page.get_attribute(f'#stats-tiles [data-stat="{key}"]', "data-value")
    return float(value) if value is not None else None


def video_frames(page: Page, selector: str) -> int:
    frames: int = page.evaluate(f"document.querySelector('{selector}').getVideoPlaybackQuality().totalVideoFrames")
    return frames
