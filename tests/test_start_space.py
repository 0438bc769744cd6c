"""PCG's start from earlier solutions (lightweight.fem.amg.projected_start, amg-reuse's
``start_space``): the projection's optimality and its residual, and on a drifting sequence of
SIMP designs the same solutions as from the warm start alone, in fewer PCG iterations.

System: the 12k-tet bracket of meshes/bracket.msh, clamped at its bolt holes, three load
cases; SIMP multipliers of a smooth density field that drifts a little from design to design,
as an optimizer's iterates do.
"""

from __future__ import annotations

import numpy as np
import pytest

from lightweight.errors import SolverError
from lightweight.fem.amg import projected_start
from lightweight.fem.solvers import ReusedAMGSolver, available_solvers, make_solver
from lightweight.fem.system import LinearElasticSystem

pytestmark = pytest.mark.skipif("amg" not in available_solvers(), reason="no pyamg")


@pytest.fixture(scope="module")
def bracket(bracket_model):
    return LinearElasticSystem(bracket_model("down", "side", "pull"))


def _matrix(system, scale):
    constrained, _ = system.dirichlet.apply(system.stiffness_data(scale))
    return system.pattern.matrix(constrained).copy()


def _rhs(system):
    F = system.to_matrix_order(system.load_vectors()).T.copy()     # K's numbering
    F[system.dirichlet.fixed_dofs] = 0.0
    return F


def _drifting(system, count):
    centres = system.mesh.points[system.mesh.cells].mean(axis=1)
    scales = []
    for t in range(count):
        rho = 0.5 + 0.5 * np.sin(centres[:, 0] / 9.0 + 0.15 * t) * np.cos(centres[:, 1] / 7.0)
        scales.append(1e-3 + (1 - 1e-3) * np.clip(rho, 0, 1) ** 3)
    return scales


def _energy_error(K, X, X_exact):
    E = X - X_exact
    return np.einsum("ij,ij->j", E, K @ E)


def test_projected_start_is_the_energy_best_in_the_span_and_its_residual_is_exact(bracket):
    scales = _drifting(bracket, 3)
    F = _rhs(bracket)
    solutions = []
    direct = make_solver("direct")
    for scale in scales:
        direct.factorize(_matrix(bracket, scale))
        solutions.append(direct.solve(F))
    K = _matrix(bracket, scales[2])
    exact = solutions[2]
    X0, R0 = projected_start(K, F, [solutions[1], solutions[0]])
    # the residual returned is B - K X0 (formed from K V, not by another product)
    np.testing.assert_allclose(R0, F - K @ X0, atol=1e-9 * np.abs(F).max())
    # never worse than the warm start in the energy norm, and here clearly better
    warm = _energy_error(K, solutions[1], exact)
    projected = _energy_error(K, X0, exact)
    assert np.all(projected <= warm)
    assert np.all(projected < 0.5 * warm)
    # optimal: the energy error is orthogonal (in K) to every column of the span
    V = np.hstack([solutions[1], solutions[0]])
    orthogonality = V.T @ (K @ (X0 - exact))
    assert np.abs(orthogonality).max() <= 1e-6 * np.abs(V.T @ (K @ exact)).max()
    # a block the others already span is dropped, not inverted
    X0_again, _ = projected_start(K, F, [solutions[1], solutions[0], solutions[1].copy()])
    np.testing.assert_allclose(X0_again, X0, rtol=1e-6, atol=1e-9 * np.abs(X0).max())


def test_start_space_gives_the_same_solutions_in_fewer_pcg_iterations(bracket):
    """A sequence of drifting designs, each warm-started from the last solution: keeping two
    solutions (default) against the warm start alone."""
    F = _rhs(bracket)
    scales = _drifting(bracket, 6)
    direct = make_solver("direct")
    runs = {}
    for space in (0, 2):
        solver = make_solver("amg-reuse", points=bracket.matrix_points, rtol=1e-6,
                             start_space=space)
        X, iterations, spans = None, [], []
        for scale in scales:
            K = _matrix(bracket, scale)
            solver.factorize(K)
            X = solver.solve(F, x0=X)
            iterations.append(max(solver.info["iterations"]))
            spans.append(solver.info["start_space"])
            direct.factorize(K)
            exact = direct.solve(F)
            compliance = np.einsum("ij,ij->j", F, exact)
            np.testing.assert_allclose(np.einsum("ij,ij->j", F, X), compliance, rtol=1e-8)
        runs[space] = iterations, spans
    assert runs[0][1] == [0, 1, 1, 1, 1, 1]
    assert runs[2][1] == [0, 1, 2, 2, 2, 2]
    # the first two solves are the same; from the third on the projected start saves iterations
    assert runs[2][0][:2] == runs[0][0][:2]
    assert sum(runs[2][0][2:]) < sum(runs[0][0][2:]), runs


def test_start_space_keeps_its_solutions_per_number_of_right_hand_sides(bracket):
    F = _rhs(bracket)
    K = _matrix(bracket, _drifting(bracket, 1)[0])
    solver = make_solver("amg-reuse", points=bracket.matrix_points, rtol=1e-6)
    solver.factorize(K)
    X = solver.solve(F)
    single = solver.solve(F[:, 0], x0=X[:, 0])       # one column: no earlier one-column solution
    assert solver.info["start_space"] == 1
    solver.solve(F, x0=X)
    assert solver.info["start_space"] == 1           # X itself is the only kept 3-column one
    assert set(solver._earlier_solutions) == {1, 3}
    assert np.all(np.isfinite(single))
    solver.drop_factorization()
    assert solver._earlier_solutions == {}


@pytest.mark.parametrize("bad", [-1, 9, 1.5, True, "2"])
def test_bad_start_space_is_a_solver_error(bad):
    with pytest.raises(SolverError, match="start_space"):
        ReusedAMGSolver(start_space=bad)


def test_adjoints_stay_out_of_the_history_of_static_solutions(bracket_model):
    """amg-reuse adjoints through StaticState.adjoint: the answers equal the direct solver's,
    and the solver's history of static solutions (from which it projects the next static
    start) holds static solutions only; before, an adjoint with as many right-hand sides as
    load cases took the place of the previous design's displacements there."""
    system = LinearElasticSystem(bracket_model("down", "side", "pull"))
    direct_system = LinearElasticSystem(bracket_model("down", "side", "pull"))
    solver = make_solver("amg-reuse", rtol=1e-8)
    U = None
    statics = []
    for step, scale in enumerate(_drifting(system, 3)):
        state = system.analyse(scale, solver=solver, x0=U)
        U = state.U
        statics.append(system.to_matrix_order(state.U).T)
        rhs = state.F[::-1] * (1.0 + 0.05 * step) + 0.1 * step * state.F     # 3 rows, drifting
        lam = state.adjoint(rhs, key="stress-like")
        reference = direct_system.analyse(scale, solver="direct").adjoint(rhs)
        np.testing.assert_allclose(lam, reference, rtol=0, atol=1e-6 * np.abs(reference).max())
        history = solver._earlier_solutions[3]
        assert len(history) == min(len(statics), solver.start_space)
        for kept, static in zip(history[::-1], statics[::-1]):
            np.testing.assert_array_equal(kept, static)
    assert system._adjoint_guesses == {}                      # no cache off the grid path
