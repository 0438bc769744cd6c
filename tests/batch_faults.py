"""Per-design functions for tests/test_batch.py that fail the way real workers can (picklable)."""

import os

from lightweight.batch import evaluate_design


def die_on_crash_designs(case_path, design_path, limits=None):
    """Like evaluate_design, but the worker process dies at once on a design named crash*."""
    if os.path.basename(design_path).startswith("crash"):
        os._exit(17)
    return evaluate_design(case_path, design_path, limits)


def hang_on_slow_designs(case_path, design_path, limits=None):
    """Like evaluate_design, but never returns on a design named slow* (a solver that hangs)."""
    if os.path.basename(design_path).startswith("slow"):
        import time
        while True:
            time.sleep(1.0)
    return evaluate_design(case_path, design_path, limits)
