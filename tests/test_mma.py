"""Tests of lightweight.optimize.mma: analytic optima, KKT points, nlopt as reference, resume."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightweight.errors import OptimizationError
from lightweight.optimize.mma import MMA, _solve_subproblem, kkt_residual


def run_mma(problem, x0, optimizer, max_iterations=300, step_tolerance=1e-9):
    """Outer loop: returns (final x, iterations used, list of iterates)."""
    x = np.asarray(x0, float).copy()
    iterates = [x]
    for k in range(max_iterations):
        f0, df0, g, dg = problem(x)
        x_new = optimizer.update(x, f0, df0, g, dg)
        iterates.append(x_new)
        converged = np.max(np.abs(x_new - x)) < step_tolerance
        x = x_new
        if converged:
            break
    return x, k + 1, iterates


# --- Svanberg's 5-segment cantilever (1987): min C sum(x) s.t. sum(a_j / x_j^3) <= 1 ----------
CANTILEVER_A = np.array([61.0, 37.0, 19.0, 7.0, 1.0])
CANTILEVER_C = 0.0624


def cantilever(x, scale=1.0):
    return (scale * CANTILEVER_C * x.sum(), np.full(x.size, scale * CANTILEVER_C),
            np.array([np.sum(CANTILEVER_A / x**3) - 1.0]), (-3.0 * CANTILEVER_A / x**4)[None, :])


def cantilever_optimum():
    """Stationarity C = 3 lam a_j / x_j^4 gives x_j = k a_j^(1/4); the active constraint fixes k."""
    k = np.sum(CANTILEVER_A**0.25) ** (1.0 / 3.0)
    x = k * CANTILEVER_A**0.25
    lam = CANTILEVER_C * x**4 / (3.0 * CANTILEVER_A)
    return x, CANTILEVER_C * x.sum(), lam[0]


def test_cantilever_reaches_analytic_optimum():
    x_star, f_star, lam_star = cantilever_optimum()
    # The values printed in Svanberg (1987):
    np.testing.assert_allclose(x_star, [6.016, 5.309, 4.494, 3.502, 2.153], atol=1e-3)
    assert f_star == pytest.approx(1.340, abs=1e-3)
    mma = MMA(5, 1, 1.0, 10.0)
    x, iterations, _ = run_mma(cantilever, np.full(5, 5.0), mma)
    assert iterations < 100
    np.testing.assert_allclose(x, x_star, rtol=1e-6)
    assert CANTILEVER_C * x.sum() == pytest.approx(f_star, rel=1e-7)
    assert mma.constraint_multipliers[0] == pytest.approx(lam_star, rel=1e-5)


@pytest.mark.parametrize("scale", [1e-3, 1e3, 1e6])
def test_cantilever_objective_scale_does_not_matter_with_auto_scaling(scale):
    x_star, _, lam_star = cantilever_optimum()
    mma = MMA(5, 1, 1.0, 10.0)
    x, _, _ = run_mma(lambda x: cantilever(x, scale), np.full(5, 5.0), mma)
    np.testing.assert_allclose(x, x_star, rtol=1e-6)
    assert mma.constraint_multipliers[0] == pytest.approx(scale * lam_star, rel=1e-5)


def test_unscaled_objective_too_large_for_the_constraint_penalty_stays_infeasible():
    # Documents why the automatic scale exists: multipliers above c_i = 1000 leave y_i > 0.
    mma = MMA(5, 1, 1.0, 10.0, objective_scale=1.0)
    x, _, _ = run_mma(lambda x: cantilever(x, 1e6), np.full(5, 5.0), mma, max_iterations=60)
    assert cantilever(x)[2][0] > 1e-2
    assert mma.artificial_y[0] > 1.0


# --- two active constraints with a closed-form KKT point -------------------------------------
LQ_A = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]])
LQ_B = np.array([3.0, -1.0])


def two_active(x):
    """min |x - 3|^2 s.t. x1+x2+x3 <= 3, x1-x2 <= -1: x* = (0.5, 1.5, 1), lambda* = (4, 1)."""
    return np.sum((x - 3.0) ** 2), 2.0 * (x - 3.0), LQ_A @ x - LQ_B, LQ_A


def test_two_active_constraints_kkt_point():
    mma = MMA(3, 2, 0.0, 5.0)
    x, _, _ = run_mma(two_active, np.full(3, 2.0), mma)
    f0, df0, g, dg = two_active(x)
    np.testing.assert_allclose(x, [0.5, 1.5, 1.0], atol=1e-7)
    assert np.all(g <= 1e-6)
    assert np.all(g >= -1e-6)  # both active
    np.testing.assert_allclose(mma.constraint_multipliers, [4.0, 1.0], rtol=1e-6)
    # Independent multipliers from stationarity alone (least squares on the active set).
    lam_ls = np.linalg.lstsq(dg.T, -df0, rcond=None)[0]
    np.testing.assert_allclose(lam_ls, [4.0, 1.0], rtol=1e-6)
    assert kkt_residual(x, 0.0, 5.0, df0, g, dg, mma.constraint_multipliers) < 1e-6
    # The residual is not trivially small: wrong multipliers give a large one.
    assert kkt_residual(x, 0.0, 5.0, df0, g, dg, [1.0, 1.0]) > 1.0


def test_more_constraints_than_variables_uses_primal_system():
    # n = 2 <= m = 3: min |x - 2|^2 s.t. x1+x2 <= 1, x1-x2 <= 0.5, x1 >= 0.1
    # optimum (0.5, 0.5) with multipliers (3, 0, 0)
    A = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]])
    b = np.array([1.0, 0.5, -0.1])
    mma = MMA(2, 3, 0.0, 3.0)
    x, _, _ = run_mma(lambda x: (np.sum((x - 2) ** 2), 2 * (x - 2), A @ x - b, A),
                      np.array([0.2, 0.2]), mma)
    np.testing.assert_allclose(x, [0.5, 0.5], atol=1e-7)
    np.testing.assert_allclose(mma.constraint_multipliers, [3.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("n, m", [(6, 2), (3, 5)])
def test_dual_and_primal_newton_systems_agree(n, m):
    rng = np.random.default_rng(7)
    x = rng.uniform(0.3, 0.7, n)
    low, upp = x - 0.5, x + 0.5
    alpha, beta = np.maximum(0.0, x - 0.2), np.minimum(1.0, x + 0.2)
    grads = rng.normal(size=(m + 1, n))
    p = (upp - x) ** 2 * (1.001 * np.maximum(grads, 0) + 0.001 * np.maximum(-grads, 0) + 1e-5)
    q = (x - low) ** 2 * (0.001 * np.maximum(grads, 0) + 1.001 * np.maximum(-grads, 0) + 1e-5)
    b = p[1:] @ (1 / (upp - x)) + q[1:] @ (1 / (x - low)) - rng.uniform(-0.5, 0.5, m)
    args = (p[0], q[0], p[1:], q[1:], b, low, upp, alpha, beta, 1.0, np.zeros(m),
            np.full(m, 1000.0), np.ones(m), 1e-9)
    dual = _solve_subproblem(*args, use_dual_system=True)
    primal = _solve_subproblem(*args, use_dual_system=False)
    np.testing.assert_allclose(dual.x, primal.x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dual.lam, primal.lam, rtol=1e-7, atol=1e-10)
    assert np.all((dual.x > alpha) & (dual.x < beta))


# --- nlopt's LD_MMA as the reference ----------------------------------------------------------
def svanberg_toy(x):
    """min |x|^2 s.t. |x - (5,2,1)|^2 <= 9, |x - (3,4,3)|^2 <= 9, 0 <= x <= 5 (both active)."""
    c1, c2 = np.array([5.0, 2.0, 1.0]), np.array([3.0, 4.0, 3.0])
    g = np.array([np.sum((x - c1) ** 2) - 9.0, np.sum((x - c2) ** 2) - 9.0])
    return x @ x, 2 * x, g, np.vstack([2 * (x - c1), 2 * (x - c2)])


def test_same_optimum_as_nlopt_mma():
    nlopt = pytest.importorskip("nlopt")
    x0 = np.array([4.0, 3.0, 2.0])
    reference = nlopt.opt(nlopt.LD_MMA, 3)
    reference.set_lower_bounds([0.0] * 3)
    reference.set_upper_bounds([5.0] * 3)

    def objective(x, grad):
        f0, df0, _, _ = svanberg_toy(x)
        if grad.size:
            grad[:] = df0
        return f0

    def constraints(result, x, grad):
        _, _, g, dg = svanberg_toy(x)
        if grad.size:
            grad[:] = dg
        result[:] = g

    reference.set_min_objective(objective)
    reference.add_inequality_mconstraint(constraints, [1e-10, 1e-10])
    reference.set_xtol_rel(1e-12)
    reference.set_maxeval(2000)
    x_ref = reference.optimize(x0)
    assert reference.last_optimize_result() > 0

    x, _, _ = run_mma(svanberg_toy, x0, MMA(3, 2, 0.0, 5.0))
    np.testing.assert_allclose(x, x_ref, rtol=1e-4)
    assert svanberg_toy(x)[0] == pytest.approx(svanberg_toy(x_ref)[0], rel=1e-4)
    assert np.all(svanberg_toy(x)[2] <= 1e-6)


# --- checkpoint / resume ---------------------------------------------------------------------
def test_resume_from_state_is_bit_identical():
    x0 = np.array([4.0, 3.0, 2.0])
    whole, _, iterates = run_mma(svanberg_toy, x0, MMA(3, 2, 0.0, 5.0, move_limit=0.3),
                                 max_iterations=10, step_tolerance=0.0)
    assert len(iterates) == 11

    first = MMA(3, 2, 0.0, 5.0, move_limit=0.3)
    _, _, head = run_mma(svanberg_toy, x0, first, max_iterations=5, step_tolerance=0.0)
    saved = first.state()
    # state is plain numpy / python values (what a checkpoint writer can store)
    assert all(isinstance(v, (np.ndarray, int, float, bool)) for v in saved.values())
    assert saved["iteration"] == 5

    resumed = MMA.from_state(saved)
    _, _, tail = run_mma(svanberg_toy, head[-1], resumed, max_iterations=5, step_tolerance=0.0)
    for a, b in zip(head + tail[1:], iterates):
        assert np.array_equal(a, b)

    # load_state into an optimizer built with other options gives the same again
    other = MMA(3, 2, 0.0, 5.0, move_limit=0.05, asymptote_init=0.1)
    other.load_state(saved)
    _, _, tail2 = run_mma(svanberg_toy, head[-1], other, max_iterations=5, step_tolerance=0.0)
    for a, b in zip(tail2, tail):
        assert np.array_equal(a, b)

    # Without the saved history the continuation differs: the test above can fail.
    fresh = MMA(3, 2, 0.0, 5.0, move_limit=0.3)
    _, _, tail3 = run_mma(svanberg_toy, head[-1], fresh, max_iterations=5, step_tolerance=0.0)
    assert not np.array_equal(tail3[-1], iterates[-1])


def test_load_state_rejects_other_sizes():
    state = MMA(3, 2, 0.0, 1.0).state()
    with pytest.raises(OptimizationError, match="n=3, m=2"):
        MMA(4, 2, 0.0, 1.0).load_state(state)
    del state["xold1"]
    with pytest.raises(OptimizationError, match="xold1"):
        MMA.from_state(state)


# --- bounds and move limit -------------------------------------------------------------------
@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 12), m=st.integers(0, 3), move=st.floats(0.01, 0.5),
       seed=st.integers(0, 2**32 - 1))
def test_bounds_and_move_limit_hold(n, m, move, seed):
    rng = np.random.default_rng(seed)
    lower = rng.uniform(-2.0, 1.0, n)
    upper = lower + rng.uniform(0.1, 3.0, n)
    span = upper - lower
    mma = MMA(n, m, lower, upper, move_limit=move)
    x = lower + rng.uniform(0, 1, n) * span
    x[0] = lower[0]  # start on a bound
    for _ in range(6):
        df0 = rng.normal(scale=10.0 ** rng.uniform(-3, 3), size=n)
        g = rng.uniform(-1.0, 1.0, m)
        dg = rng.normal(size=(m, n))
        x_new = mma.update(x, rng.uniform(0.1, 10.0), df0, g, dg)
        assert x_new.shape == (n,)
        assert np.all(x_new >= lower) and np.all(x_new <= upper)
        assert np.all(np.abs(x_new - x) <= move * span + 1e-12)
        x = x_new


def test_move_limit_is_reached_for_a_strong_gradient():
    # A linear objective pushes every variable as far as allowed: exactly the move limit.
    mma = MMA(4, 0, 0.0, 10.0, move_limit=0.1)
    x_new = mma.update(np.full(4, 5.0), 1.0, -np.ones(4))
    np.testing.assert_allclose(x_new, 6.0, atol=1e-6)


# --- compliance-like separable problem --------------------------------------------------------
def test_compliance_like_problem_matches_closed_form():
    """min sum c_j/x_j s.t. sum v_j x_j <= V: x_j = V sqrt(c_j/v_j) / sum sqrt(c_j v_j)."""
    n = 1000
    rng = np.random.default_rng(3)
    c = rng.uniform(1.0, 2.0, n)
    v = rng.uniform(1.0, 2.0, n)
    V = 0.4 * v.sum()
    x_star = V * np.sqrt(c / v) / np.sum(np.sqrt(c * v))
    assert 0.01 < x_star.min() and x_star.max() < 1.0

    def problem(x):
        return (np.sum(c / x), -c / x**2, np.array([v @ x / V - 1.0]), (v / V)[None, :])

    mma = MMA(n, 1, 1e-3, 1.0)
    x, iterations, _ = run_mma(problem, np.full(n, 0.5), mma, max_iterations=200,
                               step_tolerance=1e-9)
    assert iterations < 200
    np.testing.assert_allclose(x, x_star, rtol=1e-5)
    assert problem(x)[2][0] <= 1e-6


# --- large n, small m -------------------------------------------------------------------------
def test_large_problem_runs_in_memory_linear_in_n():
    n = 200_000
    rng = np.random.default_rng(11)
    weights = rng.uniform(0.5, 2.0, n)
    x = np.full(n, 0.5)
    mma = MMA(n, 1, 1e-3, 1.0)
    tracemalloc.start()
    try:
        for _ in range(2):
            x = mma.update(x, np.sum(weights / x), -weights / x**2,
                           np.array([x.mean() / 0.4 - 1.0]), np.full((1, n), 1.0 / (0.4 * n)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 8 * n  # about 50 vectors of length n are used; n x n would be 320 GB
    # The convex approximation of the linear constraint is conservative: feasible, nearly active.
    assert 0.39 < x.mean() <= 0.4


# --- input checks -----------------------------------------------------------------------------
def test_bad_inputs_raise_optimization_error():
    with pytest.raises(OptimizationError, match="variable 1"):
        MMA(3, 1, [0.0, 1.0, 0.0], 1.0)
    mma = MMA(3, 1, 0.0, 1.0)
    with pytest.raises(OptimizationError, match="outside its bounds"):
        mma.update(np.array([0.5, 1.5, 0.5]), 1.0, np.ones(3), [0.0], np.ones((1, 3)))
    with pytest.raises(OptimizationError, match="constraint_gradients"):
        mma.update(np.full(3, 0.5), 1.0, np.ones(3), [0.0], np.ones((2, 3)))
    with pytest.raises(OptimizationError, match="objective_gradient"):
        mma.update(np.full(3, 0.5), 1.0, np.ones(4), [0.0], np.ones((1, 3)))
    with pytest.raises(OptimizationError, match="non-finite"):
        mma.update(np.full(3, 0.5), 1.0, np.array([1.0, np.nan, 1.0]), [0.0], np.ones((1, 3)))
    assert mma.iteration == 0  # failed calls leave the state untouched
