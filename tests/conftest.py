"""Shared fixtures: paths to the shipped reference data."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def repo_root() -> Path:
    return ROOT
