"""One stress-constrained design iteration against one compliance iteration on the same mesh.

Both loops use the same mesh, filter, solver and MMA; the stress iteration adds the point
stresses of every cell, the p-norm aggregate and one adjoint solve (sharing the factorization,
or the multigrid hierarchy, of the static solve). Their timed iterations alternate, each after
one untimed warm-up iteration (Numba compilation, solver setup), and the ratio is of the
medians. Cases: the MBB beam at 300 x 100 quads (multigrid) and the L-bracket of
examples/stress_lbracket.py at 100 x 100 (an unstructured quad mesh: direct solver).
The same for minimize_mass's default, local stress constraints by the augmented Lagrangian
(8 sampling points per quad), against a compliance-limited min-mass iteration.
Run: ``python -m pytest benchmarks/bench_stress.py -s`` (prints the ratios; README quotes them).
"""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.optimize.api import compliance_problem, make_loop
from lightweight.optimize.problem import Problem
from lightweight.optimize.responses import Compliance, Stress, VolumeFraction

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))

# a stress iteration may cost at most this many compliance iterations (measured: README)
MAX_RATIO = 4.0


def mbb(nelx, nely):
    mesh = lw.structured_grid((nelx, nely))
    mesh.add_node_set("load", lambda p: (p[:, 0] == 0) & (p[:, 1] == nely))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == nelx) & (p[:, 1] == 0))
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "x", "roller": "y"},
                    loads={"mbb": lw.PointLoad("load", (0.0, -1.0))})


def lbracket():
    from stress_lbracket import lbracket_model
    return lbracket_model(100)


def loops(model, radius):
    """(compliance loop, stress-constrained compliance loop), MMA both."""
    options = dict(initial=0.5, filter_radius=radius, filter="density", optimizer="mma", max_iterations=10_000,
                   tolerance=0.0, objective_tolerance=0.0, verbose=False)
    plain = make_loop(model, compliance_problem(model, 0.5), **options)
    stressed = Problem(Compliance(model, weights={c: 1.0 for c in model.load_cases}),
                       [VolumeFraction(model) <= 0.5, Stress(model) <= 1.0], name="min_compliance")
    return plain, make_loop(model, stressed, **options)


def median_seconds(loop_a, loop_b, rounds=5):
    loop_a.step()
    loop_b.step()                           # warm-up: compilation, solver setup
    a, b = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        loop_a.step()
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop_b.step()
        b.append(time.perf_counter() - t0)
    return float(np.median(a)), float(np.median(b))


def mass_loops(model, radius, limit):
    """(min-mass loop under a compliance limit, min-mass loop under local stress constraints (the
    default augmented Lagrangian of minimize_mass)), MMA both, no projection."""
    from lightweight.optimize.api import _stress_objective, mass_problem
    options = dict(initial=0.5, filter_radius=radius, filter="density", optimizer="mma", max_iterations=10_000,
                   tolerance=0.0, objective_tolerance=0.0, verbose=False)
    solid = lw.solve(model)
    plain = make_loop(model, mass_problem(model, {c: 2.0 * solid.compliance[c] for c in model.load_cases}), **options)
    objective = _stress_objective(model, VolumeFraction(model), {c: limit for c in model.load_cases}, None, radius)
    return plain, make_loop(model, mass_problem(model, {}, objective=objective), **options)


@pytest.mark.parametrize("name", ["mbb_300x100", "lbracket_100"])
def test_local_stress_iteration_cost_ratio(name):
    """One iteration of minimize_mass's default local stress constraints (8 sampling points per quad,
    the corner factor, one adjoint solve) against one compliance-limited min-mass iteration."""
    model, radius, limit = (mbb(300, 100), 4.0, 1.0) if name == "mbb_300x100" else (lbracket(), 3.0, 80.0)
    plain, stressed = mass_loops(model, radius, limit)
    compliance_s, stress_s = median_seconds(plain, stressed)
    ratio = stress_s / compliance_s
    print(f"\n{name} (local constraints): compliance-limited iteration {compliance_s * 1e3:.0f} ms, "
          f"stress-limited {stress_s * 1e3:.0f} ms, ratio {ratio:.2f} ({model.mesh.n_cells} cells)")
    assert ratio <= MAX_RATIO


@pytest.mark.parametrize("name", ["mbb_300x100", "lbracket_100"])
def test_stress_iteration_cost_ratio(name):
    model, radius = (mbb(300, 100), 4.0) if name == "mbb_300x100" else (lbracket(), 3.0)
    plain, stressed = loops(model, radius)
    compliance_s, stress_s = median_seconds(plain, stressed)
    ratio = stress_s / compliance_s
    print(f"\n{name}: compliance iteration {compliance_s * 1e3:.0f} ms, stress-constrained "
          f"{stress_s * 1e3:.0f} ms, ratio {ratio:.2f} ({model.mesh.n_cells} cells, "
          f"solver {plain.history[-1].get('solver')})")
    assert ratio <= MAX_RATIO
