"""scripts/gpu_check.py on a machine without CUDA: the gpu tests are collected, and each skips saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gpu.helpers import cuda_missing
from tests.stream.helpers import _load_script

gpu_check = _load_script("gpu_check")


@pytest.mark.skipif(cuda_missing() is None, reason="this machine has a CUDA GPU: make gpu-check runs the gpu tests")
def test_without_cuda_every_gpu_test_is_collected_and_skipped_with_the_reason(tmp_path: Path) -> None:
    check = gpu_check.gpu_tests(gpu_check.Plan.for_host(cuda=False), tmp_path, timeout_s=240)
    assert check.verdict == "skipped", check.detail
    tests = check.figures["tests"]
    assert len(tests) >= 8
    assert {t["outcome"] for t in tests} == {"skipped"}
    assert all(t["message"].startswith("needs a CUDA GPU: ") for t in tests), tests
    assert any(
        t["test"]
        == "gpu.test_gpu_sharing::test_two_gpu_plugins_do_not_starve_each_other_and_the_server_never_initialises_cuda"
        for t in tests
    )
