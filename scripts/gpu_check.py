"""The GPU path in one go (`make gpu-check`): the environment, the tests marked gpu, the GPU benchmarks, one summary.

On a CUDA host (`make gpu-check` first installs the project as `make install` does, unless .venv is current):
1. environment: device name, driver (nvidia-smi), torch and CUDA versions, asked in a child process;
2. `pytest -m gpu`: every test marked gpu, each with its verdict (from pytest's JUnit XML);
3. scripts/bench_tracker_gpu.py: batched MTCNN at 1, 8 and 32 frames against single calls, same run;
4. scripts/bench_gpu_sessions.py: 640x480@30 face sessions per GPU through the real server, what binds
   first, end-to-end box age at 1, 8 and the most sessions held.
Then one summary, also written as JSON to bench-results/gpu-check-<time>/summary.json (next to each
part's own output). Exit 1 when a check failed. It keeps to --budget-s (8 minutes) in all.

Without CUDA it says so and checks what a CPU can: the gpu tests must be collected and all skip with
their reason, and both benchmarks run tiny on the CPU (a smoke run of their code: not GPU figures);
exit 0 when those hold.

    make gpu-check
    python scripts/gpu_check.py --budget-s 480
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
SKIP_WORDS = "needs a CUDA GPU"  # how every gpu test's skip reason starts (tests/gpu/helpers.py)

# Asked in a child: this process stays free of CUDA, and a broken torch is a finding, not a crash.
PROBE = """
import json
facts = {}
try:
    import torch
    facts["torch"] = torch.__version__
    facts["cuda_build"] = torch.version.cuda
    facts["cuda"] = torch.cuda.is_available()
    facts["why"] = "" if facts["cuda"] else "torch.cuda.is_available() is False"
    if facts["cuda"]:
        props = torch.cuda.get_device_properties(0)
        facts["device"] = torch.cuda.get_device_name(0)
        facts["capability"] = "sm_%d%d" % torch.cuda.get_device_capability(0)
        facts["memory_mb"] = props.total_memory // 2**20
        facts["device_count"] = torch.cuda.device_count()
except Exception as exc:
    facts["cuda"] = False
    facts["why"] = f"CUDA failed to initialise ({type(exc).__name__}: {exc})"
print(json.dumps(facts))
"""


@dataclass
class Check:
    name: str
    verdict: str
    detail: str
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What each step runs: the GPU figures on CUDA, a quick pass through the same code on a CPU."""

    cuda: bool
    tests_timeout_s: float
    tracker_args: list[str]
    tracker_timeout_s: float
    sessions_args: list[str]

    @classmethod
    def for_host(cls, cuda: bool) -> Plan:
        if cuda:
            return cls(
                cuda,
                tests_timeout_s=240,
                tracker_args=["--device", "cuda", "--max-batch", "32", "--batches", "1,8,32"]
                + ["--sizes", "640x480", "--frames", "30", "--repeats", "3"],
                tracker_timeout_s=120,
                sessions_args=["--gpu-policy", "require"],
            )
        return cls(
            cuda,
            tests_timeout_s=180,
            tracker_args=["--device", "cpu", "--batches", "1,2", "--sizes", "320x240", "--batch-size", "320x240"]
            + ["--frames", "3", "--repeats", "1"],
            tracker_timeout_s=120,
            sessions_args=["--gpu-policy", "cpu", "--steps", "1", "--sequences", "straight", "--length", "90"]
            + ["--warmup", "1", "--window", "3"],
        )


# -- environment ----------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    facts: dict[str, Any]
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180)
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        facts = {"cuda": False, "why": f"the torch probe failed ({exc!r})"}
    facts["driver"] = nvidia_driver()
    facts["python"] = sys.version.split()[0]
    facts["install"] = install_state()
    return facts


def nvidia_driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "nvidia-smi did not answer within 30 s"
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else f"nvidia-smi failed: {done.stderr.strip()[:200]}"


def install_state() -> str:
    venv, marker = REPO / ".venv", REPO / ".venv" / ".installed"
    if Path(sys.prefix).resolve() != venv.resolve():
        return f"running from {sys.prefix}, not {venv} (make gpu-check installs there first)"
    if not marker.exists() or marker.stat().st_mtime < (REPO / "pyproject.toml").stat().st_mtime:
        return "not current: pyproject.toml changed since the last install (make gpu-check reinstalls)"
    return "current (.venv installed from this pyproject.toml)"


# -- the steps ------------------------------------------------------------------------------
def run_step(command: list[str], timeout_s: float) -> tuple[int | None, float]:
    """Run a step, its output going straight to ours; (exit code or None on timeout, seconds)."""
    started = time.monotonic()
    print(f"\n$ {' '.join(command)}", flush=True)
    try:
        code: int | None = subprocess.run(command, cwd=REPO, timeout=max(1.0, timeout_s)).returncode
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def test_outcomes(junit: Path) -> list[dict[str, str]]:
    """Each test case of a JUnit XML report: its id, outcome and the first line of its message."""
    outcomes = []
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome, message = PASSED, ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = SKIPPED if child.tag == "skipped" else FAILED
                text = (child.get("message") or child.text or "").strip()
                message = next(iter(text.splitlines()), "")[:300]
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}".removeprefix("tests.")
        outcomes.append({"test": test_id, "outcome": outcome, "message": message})
    return outcomes


def gpu_tests(plan: Plan, out: Path, timeout_s: float) -> Check:
    junit = out / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "-p", "no:cacheprovider", "-q", "-rs"]
    code, seconds = run_step([*command, f"--junitxml={junit}"], timeout_s)
    if code is None:
        return Check("gpu tests", FAILED, f"did not finish within {timeout_s:.0f} s", seconds)
    if not junit.exists():
        return Check("gpu tests", FAILED, f"pytest exited with {code} before writing its report", seconds)
    outcomes = test_outcomes(junit)
    counts = {kind: sum(o["outcome"] == kind for o in outcomes) for kind in (PASSED, FAILED, SKIPPED)}
    summary = f"{len(outcomes)} collected: {counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped"
    figures: dict[str, Any] = {"tests": outcomes}
    if not outcomes:
        return Check("gpu tests", FAILED, "no test marked gpu was collected", seconds, figures)
    if plan.cuda:
        verdict = PASSED if counts[PASSED] == len(outcomes) and code == 0 else FAILED
        return Check("gpu tests", verdict, summary, seconds, figures)
    # Without CUDA every one must skip, and say why.
    unexplained = [o["test"] for o in outcomes if o["outcome"] != SKIPPED or SKIP_WORDS not in o["message"]]
    if unexplained:
        return Check("gpu tests", FAILED, f"{summary}; not skipped for want of CUDA: {unexplained}", seconds, figures)
    return Check("gpu tests", SKIPPED, f"{summary}, each saying: {outcomes[0]['message']}", seconds, figures)


def benchmark(
    name: str,
    script: str,
    args: list[str],
    out_json: Path,
    timeout_s: float,
    read: Callable[[dict[str, Any]], tuple[bool, str, dict[str, Any]]],
    cuda: bool,
) -> Check:
    """Run one benchmark script and judge it from the JSON it writes with `read` -> (ok, detail, figures)."""
    code, seconds = run_step([sys.executable, str(SCRIPTS / script), *args, "--out", str(out_json)], timeout_s)
    if code is None:
        return Check(name, FAILED, f"did not finish within {timeout_s:.0f} s", seconds)
    if code != 0 or not out_json.exists():
        return Check(name, FAILED, f"exited with {code}; its output is above", seconds)
    ok, detail, figures = read(json.loads(out_json.read_text()))
    if not cuda:
        detail = f"CPU smoke run of the benchmark's code, not GPU figures: {detail}"
    return Check(name, PASSED if ok else FAILED, detail, seconds, figures)


def read_tracker(report: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    batching = report["batching"]
    speedups = {count: round(result["speedup"], 2) for count, result in batching.items() if count != "size"}
    figures = {
        "device": f"{report['device']} ({report['device_name']})",
        "speedup_batched_over_single_calls": speedups,
        "batched_frames_per_s": {count: round(r["batched_fps"], 1) for count, r in batching.items() if count != "size"},
        "ms_per_frame_single": {size: round(r["ms_median"], 1) for size, r in report["latency"].items()},
        "peak_cuda_mb": round(report["peak_cuda_mb"]) if "peak_cuda_mb" in report else None,
    }
    detail = ", ".join(f"x{speedup:.2f} at {count}" for count, speedup in speedups.items())
    detail += f" frames ({batching['size']}; one batched call vs as many single calls, same run)"
    return bool(speedups), detail, figures


def read_sessions(report: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    held = report["max_sessions_held"]
    ages = {label: age for label, age in report["box_age"].items() if age is not None}
    figures = {
        "device": report["device"],
        "max_sessions_held": held,
        "binding": report["binding"],
        "worst_shown_recall_held": report["worst_shown_recall_held"],
        "box_age_ms": ages,
    }
    age_text = "; ".join(
        f"at {a['sessions']}: p50 {a['p50_median_session_ms']} ms, p95 {a['p95_worst_session_ms']} ms"
        for a in ages.values()
    )
    detail = f"{held} session(s) held (every session shown recall >= 0.9); {report['binding']}; box age {age_text}"
    # On a CPU one session of the face tracker may not hold; the smoke run only shows the code works.
    steps_ran = any(step["error"] is None for step in report["steps"])
    return steps_ran and (held > 0 or report["device"] != "cuda"), detail, figures


# -- summary --------------------------------------------------------------------------------
def print_summary(facts: dict[str, Any], checks: list[Check], seconds: float, path: Path) -> None:
    print("\n" + "=" * 30 + " livetrack GPU check " + "=" * 30)
    if facts.get("cuda"):
        device = f"{facts['device']} ({facts['capability']}, {facts['memory_mb']} MB; {facts['device_count']} visible)"
    else:
        device = f"no CUDA GPU: {facts.get('why')}"
    print(f"device   {device}")
    print(f"driver   {facts['driver']}")
    print(f"torch    {facts.get('torch', 'not importable')}, built for CUDA {facts.get('cuda_build')}")
    print(f"python   {facts['python']}; install: {facts['install']}")
    if not facts.get("cuda"):
        print("         the CUDA parts were skipped: gpu tests collected and skipped, benchmarks run tiny on the CPU")
    print("checks")
    for check in checks:
        print(f"  {check.verdict.upper():8s} {check.name:18s} {check.detail} [{check.seconds:.0f} s]")
        for test in check.figures.get("tests", []):
            if facts.get("cuda") or test["outcome"] != SKIPPED:
                note = f": {test['message']}" if test["message"] and test["outcome"] != PASSED else ""
                print(f"           {test['outcome']:8s} {test['test']}{note}")
    print("figures")
    for check in checks:
        for key, value in check.figures.items():
            if key != "tests":
                print(f"  {check.name}: {key} = {json.dumps(value)}")
    failed = [c.name for c in checks if c.verdict == FAILED]
    verdict = f"FAILED: {', '.join(failed)}" if failed else ("all passed" if facts.get("cuda") else "CPU checks passed")
    print(f"verdict  {verdict} in {seconds:.0f} s; written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole check's time (8 minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="folder for the results")
    args = parser.parse_args(argv)
    started, budget_s = time.monotonic(), float(args.budget_s)

    def left() -> float:
        return budget_s - (time.monotonic() - started)

    out = args.out / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    facts = environment()
    plan = Plan.for_host(bool(facts.get("cuda")))
    if plan.cuda:
        print(f"CUDA: {facts['device']}, driver {facts['driver']}; running the gpu tests, then the GPU benchmarks")
    else:
        print(
            f"no CUDA here ({facts.get('why')}): the gpu tests must be collected and skipped, and the benchmarks "
            "run tiny on the CPU to check their code; run `make gpu-check` on a CUDA host for the GPU figures"
        )
    checks = [gpu_tests(plan, out, min(plan.tests_timeout_s, left()))]
    tracker_timeout = min(plan.tracker_timeout_s, left())
    checks.append(
        benchmark(
            "batched MTCNN",
            "bench_tracker_gpu.py",
            plan.tracker_args,
            out / "tracker.json",
            tracker_timeout,
            read_tracker,
            plan.cuda,
        )
    )
    # The sessions benchmark starts no step it expects to overrun its budget; the margin is for its shutdown.
    sessions_args = [*plan.sessions_args, "--budget-s", f"{max(10.0, left() - 30):.0f}"]
    checks.append(
        benchmark(
            "sessions per GPU",
            "bench_gpu_sessions.py",
            sessions_args,
            out / "sessions.json",
            left(),
            read_sessions,
            plan.cuda,
        )
    )
    seconds = time.monotonic() - started
    summary = out / "summary.json"
    report = {"environment": facts, "seconds": round(seconds, 1), "checks": [asdict(check) for check in checks]}
    summary.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(facts, checks, seconds, summary)
    return 1 if any(check.verdict == FAILED for check in checks) else 0


if __name__ == "__main__":
    # The steps import app from this checkout, whatever else PYTHONPATH holds.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    sys.exit(main())
