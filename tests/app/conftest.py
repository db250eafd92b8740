"""Fixtures of the ``fcam app`` tests (helpers in app_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from app_helpers import AppProcess, write_tiny_models


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_models(tmp_path_factory.mktemp("app-models"))


@pytest.fixture
def app_process(tmp_path: Path) -> Iterator[type[AppProcess]]:
    """The :class:`AppProcess` class; every process started from it is killed at teardown."""
    started: list[AppProcess] = []

    class Tracked(AppProcess):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for process in started:
        process.kill()
