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


def hog_memory_on_hog_designs(case_path, design_path, limits=None):
    """Like evaluate_design, but allocates 64 GiB on a design named hog* (a design that blows the memory)."""
    if os.path.basename(design_path).startswith("hog"):
        import numpy as np
        hog = np.ones(8 << 30)          # 64 GiB: past the worker's address-space limit
        return {"status": "ok", "size": hog.size}
    return evaluate_design(case_path, design_path, limits)
