"""Only plain data crosses from a worker to the server (DESIGN 3.6): JSON, bounded, checked on arrival."""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from app.runtime.errors import Outcome, PluginFault
from app.runtime.wire import (
    MAX_MESSAGE_BYTES,
    MessageReader,
    WireError,
    encode,
    fault_to_wire,
    framed,
    parse_answer,
)
from tests.conftest import FIXTURE_PLUGINS, LiveServer
from tests.helpers import REASON, png_with_square
from tests.stream.helpers import plugins_dir


def test_a_fault_survives_the_round_trip() -> None:
    fault = PluginFault("ZeroDivisionError", "division by zero", "fix it", Outcome.FAILED, "Traceback ...")
    answer = parse_answer(encode({"op": "error", "fault": fault_to_wire(fault)}))
    assert answer.fault == fault


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (pickle.dumps({"op": "ok"}), "not JSON"),
        (b'{"op": "result", "results": [NaN]}', "non-finite"),
        (b'{"op": "result", "results": [1e999]}', "non-finite"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"op": "exec"}', "op 'exec'"),
        (b'{"op": "ready", "device": "tpu"}', "device"),
        (
            b'{"op": "error", "fault": {"error_type": "os.system(1)", "what": "", "fix": "", "outcome": "failed"}}',
            "type",
        ),
        (b'{"op": "error", "fault": {"error_type": "E", "what": 3, "fix": "", "outcome": "failed"}}', "'what'"),
    ],
)
def test_anything_but_a_plain_answer_is_refused_naming_why(payload: bytes, named: str) -> None:
    with pytest.raises(WireError, match=named):
        parse_answer(payload)


def test_the_reader_cuts_messages_across_chunks_and_refuses_a_length_over_the_limit() -> None:
    reader = MessageReader()
    stream = framed(b'{"op":"ok"}') + framed(b'{"op":"ok"}')
    assert reader.feed(stream[:3]) == [] and reader.feed(stream[3:15]) == [b'{"op":"ok"}']
    assert reader.feed(stream[15:]) == [b'{"op":"ok"}']
    with pytest.raises(WireError, match="outside"):
        MessageReader().feed((MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"))


def test_encode_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError):
        encode({"op": "result", "results": [math.nan]})


def _pickle_fixture() -> Callable[[], bytes]:
    spec = importlib.util.spec_from_file_location(
        "pickle_answer_fixture", FIXTURE_PLUGINS / "pickle_answer" / "plugin.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    payload: Callable[[], bytes] = module.payload
    return payload


def test_a_worker_writing_a_pickle_payload_is_failed_and_nothing_runs_in_the_server(
    serve: Callable[..., LiveServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The payload is live: unpickled, it runs its code (here, in this test only).
    monkeypatch.delenv("LIVETRACK_PWNED", raising=False)
    pickle.loads(_pickle_fixture()())
    assert os.environ.pop("LIVETRACK_PWNED") == "pickle_answer"

    server = serve(plugins_dirs=(plugins_dir(tmp_path, "pickle_answer", "colorblob"),))
    server.wait_state("colorblob", "INITIALIZED")
    before = server.wait_state("pickle_answer", "INITIALIZED")
    response = server.post("/v1/plugins/pickle_answer/run", content=png_with_square())
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith("ProtocolError: the worker sent ") and "not JSON" in message, message
    assert REASON.match(message)
    failed = server.wait_for("pickle_answer", lambda h: h["restarts"] == 1)
    assert failed["error_count"] == 1 and failed["worker_pid"] != before["worker_pid"]
    assert "LIVETRACK_PWNED" not in os.environ  # the server is this process: the payload never ran here
    assert server.post("/v1/plugins/colorblob/run", content=png_with_square()).status_code == 200
