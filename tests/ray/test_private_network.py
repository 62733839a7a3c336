"""The Ray backend's tests, run in a network namespace that has only `lo` (DESIGN 5).

Ray advertises the host's own address even when started with
`--node-ip-address=127.0.0.1`, so on a host with a network card its traffic would
leave the loopback range. In a namespace with only `lo`, 127.0.0.1 is the one address
it can find. test_ray_backend.py skips anywhere else; this test runs it there, the way
the browser tests run Chromium and the server.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import isolation

SUITE = Path(__file__).with_name("test_ray_backend.py")
SUITE_TIMEOUT_S = 540


@pytest.mark.ray
@pytest.mark.timeout(SUITE_TIMEOUT_S + 30)
def test_the_ray_backend_suite_passes_in_a_network_with_only_lo() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs the ray extra: pip install -e '.[ray]'")
    if not isolation():
        pytest.skip("needs root and unshare for a network namespace with only lo")
    command = [*isolation(), sys.executable, "-m", "pytest", str(SUITE), "-q", "-rs", "-p", "no:cacheprovider"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S, check=False)
    report = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert " passed" in report and "skipped" not in report, report
