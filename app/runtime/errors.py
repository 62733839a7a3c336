"""Plugin outcomes and their reasons (DESIGN 3.5).

Every FAILED or UNAVAILABLE plugin carries a reason `<ErrorType>: <what happened> (<how to fix>)`.
The error types a reason may name:

    UNAVAILABLE (cannot run here; install or place something, then restart)
      ImportError         a dependency is not installed or has the wrong version
      FileNotFoundError   a model file is missing, empty or has the wrong sha256
      RuntimeError        a GPU is required and there is none
    FAILED (it loaded, or tried to, and broke)
      ValueError          invalid manifest, or a result that breaks the result contract
      <plugin's own type> import, __init__ or process() raised (ZeroDivisionError, SystemExit, ...)
      TimeoutError        no answer within timeout_ms; the worker was killed
      WorkerCrashed       the worker process died (signal or exit code)
      MemoryError         the worker's resident memory passed memory_limit_mb; it was killed
                          or CUDA ran out of memory past the worker's device memory cap (memory_limit_mb)
      ProtocolError       the worker sent something other than a plain-data answer (wire.py); it was killed
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    FAILED = "failed"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class PluginFault:
    """What went wrong with a plugin, ready to become a reason."""

    error_type: str
    what: str
    fix: str
    outcome: Outcome = Outcome.FAILED
    traceback: str | None = None

    @property
    def reason(self) -> str:
        return f"{self.error_type}: {self.what} ({self.fix})"


def restart_hint(name: str) -> str:
    return f"see the server log; restart with POST /v1/plugins/{name}/restart"


def fix_plugin_hint(name: str) -> str:
    return f"fix the plugin, then restart with POST /v1/plugins/{name}/restart"
