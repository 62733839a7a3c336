"""Dependency and model checks: they decide UNAVAILABLE without importing the plugin's packages."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from app.runtime.checks import check_dependency, check_model, check_plugin
from app.runtime.errors import Outcome
from app.runtime.manifest import ModelFile, parse_manifest

REPO = Path(__file__).resolve().parents[2]


def test_installed_dependency_passes() -> None:
    assert check_dependency("numpy>=1.0") is None


def test_missing_package_reason_says_how_to_install() -> None:
    fault = check_dependency("livetrack-not-a-package==1.2.3")
    assert fault is not None and fault.outcome is Outcome.UNAVAILABLE
    assert fault.reason == (
        "ImportError: No module named 'livetrack_not_a_package' "
        "(install with: pip install livetrack-not-a-package==1.2.3)"
    )


def test_wrong_version_names_both_versions() -> None:
    fault = check_dependency("numpy<1.0")
    assert fault is not None
    assert "is installed but numpy<1.0 is required" in fault.reason
    assert fault.reason.endswith("(install with: pip install numpy<1.0)")


def test_checks_do_not_import_the_package_nor_initialise_cuda() -> None:
    # In a fresh interpreter: this test process may have imported torch for other tests.
    probe = (
        "import sys; from pathlib import Path\n"
        "from app.runtime.checks import check_plugin\n"
        "from app.runtime.manifest import read_manifest\n"
        "assert check_plugin(read_manifest(Path('plugins/videotracker'))) is None\n"
        "leaked = {'torch', 'torchvision', 'facenet_pytorch'} & set(sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_model_files(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "real.pt").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert check_model(ModelFile("m", "real.pt", digest), tmp_path) is None
    missing = check_model(ModelFile("m", "models/detector.pt"), tmp_path)
    assert missing is not None
    assert missing.reason == (
        f"FileNotFoundError: model file 'models/detector.pt' not found (place it at {tmp_path / 'models/detector.pt'})"
    )
    empty = check_model(ModelFile("m", "empty.pt"), tmp_path)
    assert empty is not None and "is empty" in empty.reason
    wrong = check_model(ModelFile("m", "real.pt", "0" * 64), tmp_path)
    assert wrong is not None and "sha256" in wrong.reason


def test_package_model_paths(tmp_path: Path) -> None:
    assert check_model(ModelFile("m", "pkg:numpy/__init__.py"), tmp_path) is None
    absent = check_model(ModelFile("m", "pkg:livetrack_nope/w.pt"), tmp_path)
    assert absent is not None and "package 'livetrack_nope' is not installed" in absent.reason


def test_check_plugin_reports_the_first_problem(tmp_path: Path) -> None:
    manifest = parse_manifest(
        {"name": "p", "version": "1", "entrypoint": "m:C", "dependencies": ["numpy"], "models": {"w": "w.pt"}},
        tmp_path,
    )
    fault = check_plugin(manifest)
    assert fault is not None and fault.error_type == "FileNotFoundError"
    (tmp_path / "w.pt").write_bytes(b"x")
    assert check_plugin(manifest) is None
