"""Benchmarks: make scaling.py importable and register the markers used here.

Run: python -m pytest benchmarks -m "not slow" --benchmark-enable --benchmark-json=out/bench.json
(pyproject's addopts disable pytest-benchmark timing by default; ratio tests run either way).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "large: ~10^6-element benchmark (also marked slow)")


def pytest_collect_file(parent, file_path):
    # pyproject's python_files is the default test_*.py; benchmark modules are named bench_*.py
    # (files named on the command line are collected by pytest itself: skip them here)
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        import pytest
        return pytest.Module.from_parent(parent, path=file_path)
    return None
