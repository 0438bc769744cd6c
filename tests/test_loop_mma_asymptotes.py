"""The loop/preset option mma_asymptotes: MMA's first step bounded by the move-limited box
(TopOpt_in_PETSc's) against Svanberg's bound-based first asymptotes (the default, unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import OptimizationError
from lightweight.optimize.api import compliance_problem, make_loop


def _petsc_cantilever(n: int = 4):
    """TopOpt_in_PETSc's cantilever, 2n x n x n hexes: x=0 clamped, line load on the edge x=2, z=0."""
    mesh = lw.structured_grid((2 * n, n, n), size=(2.0, 1.0, 1.0))
    mesh.add_node_set("edge", lambda p: (p[:, 0] == 2.0) & (p[:, 2] == 0.0))
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                    loads={"tip": [lw.PointLoad("edge", (0.0, 0.0, -0.001))]})


def _loop(model, asymptotes):
    return make_loop(model, compliance_problem(model, 0.12), initial=0.12, filter_radius=0.3,
                     filter="density", optimizer="mma", min_stiffness=1e-9, max_iterations=50,
                     tolerance=0.0, objective_tolerance=0.0, move=0.2, verbose=False,
                     solver="direct", mma_asymptotes=asymptotes)


def test_move_asymptotes_reach_the_mma_and_avoid_the_first_jump():
    """With "move" the loop's MMA starts from the move box: iteration 2's compliance stays near
    iteration 1's (PETSc's history), while the default's bold first step raises it several-fold."""
    histories = {}
    for asymptotes in ("bounds", "move"):
        loop = _loop(_petsc_cantilever(), asymptotes)
        assert loop.mma.initial_asymptotes == asymptotes
        for _ in range(3):
            loop.step()
        histories[asymptotes] = [h["objective"] for h in loop.history]
    bounds, move = histories["bounds"], histories["move"]
    assert bounds[0] == pytest.approx(move[0], rel=1e-12)            # same start
    assert move[1] < bounds[1]
    assert move[1] < 1.5 * move[0] and bounds[1] > 2.0 * bounds[0], histories


def test_default_is_unchanged_and_not_recorded():
    loop = _loop(_petsc_cantilever(2), "bounds")
    assert loop.settings.mma_asymptotes == "bounds" and loop.mma.initial_asymptotes == "bounds"
    assert "mma_asymptotes" not in loop.parameters           # earlier checkpoints keep their key
    moved = _loop(_petsc_cantilever(2), "move")
    assert moved.parameters["mma_asymptotes"] == "move"


def test_presets_take_the_option():
    model = _petsc_cantilever(2)
    res = lw.minimize_compliance(model, volume_fraction=0.3, filter_radius=0.6, optimizer="mma",
                                 max_iterations=2, verbose=False, mma_asymptotes="move")
    assert res.parameters["mma_asymptotes"] == "move"
    assert np.all(np.isfinite(res.density))
    res = lw.minimize_mass(model, max_compliance_factor=3.0, filter_radius=0.6, max_iterations=2,
                           verbose=False, mma_asymptotes="move")
    assert res.parameters["mma_asymptotes"] == "move"


def test_bad_option_names_itself():
    with pytest.raises(OptimizationError, match="mma_asymptotes"):
        _loop(_petsc_cantilever(2), "petsc")
