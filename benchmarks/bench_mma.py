"""MMA's subproblem: its dual (one pass over the variables per trial) against the interior point.

Random subproblems of 100 000 variables as MMA.update forms them, with one constraint (the
volume of minimize_compliance: regula falsi on the one-dimensional dual) and three (the three
compliance limits of a min-mass run with three load cases, or a stress and a volume constraint:
projected Newton on the m-dimensional dual), solved both ways in the same run, alternated, best
of 3; the ratio of the interior point's time to the dual's has a floor in thresholds.json.
Run: ``python -m pytest benchmarks/bench_mma.py -s``.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lightweight.optimize import mma as mma_module

THRESHOLDS = json.loads((Path(__file__).parent / "thresholds.json").read_text())
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))


def subproblem(n, m, seed=1):
    from test_mma import _constraints_subproblem
    return _constraints_subproblem(n, m, seed, np.linspace(0.01, 0.3, m))


@pytest.mark.parametrize("m", [1, 3])
def test_dual_vs_interior_point(m):
    n = 100_000
    data = subproblem(n, m)
    c, d = np.full(m, 1000.0), np.ones(m)
    dual_solver = mma_module._solve_single_dual if m == 1 else mma_module._solve_multi_dual
    dual_solver(*data, c, d, 1e-9)                     # compile
    mma_module._solve_subproblem(*data, 1.0, np.zeros(m), c, d, 1e-9)
    dual_s, interior_s = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        dual = dual_solver(*data, c, d, 1e-9)
        dual_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        interior = mma_module._solve_subproblem(*data, 1.0, np.zeros(m), c, d, 1e-9)
        interior_s.append(time.perf_counter() - t0)
    ratio = min(interior_s) / min(dual_s)
    print(f"\n{n} variables, {m} constraint(s): dual {min(dual_s) * 1e3:.1f} ms "
          f"({dual.iterations} passes), interior point {min(interior_s) * 1e3:.1f} ms "
          f"({interior.iterations} Newton steps), ratio {ratio:.1f}")
    np.testing.assert_allclose(dual.x, interior.x, rtol=0, atol=1e-5)
    assert ratio >= THRESHOLDS[f"mma_dual_vs_interior_point:m{m}_100k"]["min_ratio"]
