"""Fixtures of the chaos tests: the stream suite's headless clients."""

from tests.stream.conftest import clients  # noqa: F401
