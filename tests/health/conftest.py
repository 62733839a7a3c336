"""Fixtures of the health suite: plugin folders holding just the plugins a test needs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_PLUGINS, FIXTURE_PLUGINS


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Callable[..., Path]:
    """plugins_dir("segfault", "colorblob") -> a folder with copies of those plugins only."""

    def make(*names: str) -> Path:
        folder = tmp_path / "plugins"
        folder.mkdir(exist_ok=True)
        for name in names:
            source = DEFAULT_PLUGINS / name if (DEFAULT_PLUGINS / name).is_dir() else FIXTURE_PLUGINS / name
            shutil.copytree(source, folder / name)
        return folder

    return make
