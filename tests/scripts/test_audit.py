"""scripts/audit_plugins.py loads plugins as the server does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/audit_plugins.py", *args], cwd=REPO, capture_output=True, text=True, timeout=180
    )


def test_strict_fails_on_a_broken_plugin_and_json_lists_states(tmp_path: Path) -> None:
    for name in ("missing_package", "init_raises"):
        (tmp_path / name).symlink_to(REPO / "tests" / "fixtures" / "plugins" / name)
    (tmp_path / "colorblob").symlink_to(REPO / "plugins" / "colorblob")
    result = run_audit("--plugins-dir", str(tmp_path), "--json", "--strict")
    assert result.returncode == 1, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {name: row["state"] for name, row in rows.items()} == {
        "colorblob": "INITIALIZED",
        "init_raises": "FAILED",
        "missing_package": "UNAVAILABLE",
    }
    assert rows["colorblob"]["device"] == "cpu"


def test_table_and_strict_pass_when_all_load(tmp_path: Path) -> None:
    (tmp_path / "colorblob").symlink_to(REPO / "plugins" / "colorblob")
    result = run_audit("--plugins-dir", str(tmp_path), "--strict")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "DEVICE", "REASON"]
    assert row.split() == ["colorblob", "INITIALIZED", "cpu"]
