"""scripts/soak.py: a short real soak passes and reports; its verdict catches growth and latency build-up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def soak(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/soak.py as a module; it imports scripts/client.py as `client`, as when run as a script."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("livetrack_scripts_soak", REPO / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_serves_sessions_survives_crashes_and_exits_0(tmp_path: Path) -> None:
    """Guards the acceptance run's harness: a broken soak would hide leaks instead of finding them."""
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "scripts/soak.py", "--minutes", "0.4", "--out", str(out), "--seed", "7"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert {
        "tally",
        "server_frames",
        "restarts",
        "slopes",
        "latency_per_minute",
        "latency",
        "server",
        "samples",
    } <= set(report)
    assert set(report["slopes"]) >= {"rss_mb", "fds", "threads", "tasks", "shm"}
    assert report["tally"]["sessions_served"] >= 1
    assert report["tally"]["frames_received"] > 0
    assert report["server_frames"]["processed"] > 0
    assert report["restarts"] >= 1  # the segfault plugin crashed and came back
    assert report["samples"] and all(sample["healthz"] for sample in report["samples"])
    assert report["server"]["died"] is False and report["failures"] == []
    assert (tmp_path / "soak-server.log").is_file()
    assert "PASS" in result.stdout


def test_slopes_judge_growth_after_warm_up_only(soak: ModuleType) -> None:
    """A server that leaks an fd per minute fails; one that only grew during warm-up passes."""

    def samples(fds: list[int], every_min: float = 1.0) -> list[object]:
        return [soak.Sample(i * every_min, 150.0, 300.0, 5, n, 12, None, 3, 2, 1, True) for i, n in enumerate(fds)]

    warming = soak.resource_slopes(samples([10, 30, 40, 40, 41, 40, 40, 41, 40, 40]))
    assert warming["fds"]["verdict"] == "ok"
    leaking = soak.resource_slopes(samples([40 + 2 * minute for minute in range(10)]))
    assert leaking["fds"]["verdict"] == "FAIL"
    assert leaking["fds"]["slope_per_min"] == pytest.approx(2.0)
    assert leaking["tasks"]["verdict"] == "not measured"
    short = soak.resource_slopes(samples([40, 42, 44, 46, 48, 50], every_min=0.1))
    assert short["fds"]["verdict"].startswith("not judged")


def test_latency_that_builds_up_fails(soak: ModuleType) -> None:
    steady = [(minute + 0.5, 100.0) for minute in range(5) for _ in range(50)]
    assert soak.latency_verdict(soak.latency_by_minute(steady, 5.0))["verdict"] == "ok"
    growing = [(minute + 0.5, 100.0 * (minute + 1)) for minute in range(5) for _ in range(50)]
    assert soak.latency_verdict(soak.latency_by_minute(growing, 5.0))["verdict"] == "FAIL"
