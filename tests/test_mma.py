"""Tests of lightweight.optimize.mma: analytic optima, KKT points, nlopt as reference, resume."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

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


@pytest.mark.parametrize("seed", [0, 1])
def test_single_constraint_kernels_give_the_general_kernels_numbers_bit_for_bit(seed):
    """m = 1 runs vectorised kernels: the same x, multipliers and Newton steps, not just close."""
    n = 3 * 4096 + 123           # several blocks and a partial one
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, n)
    span = rng.choice([0.5, 0.05], n)        # wide and tight asymptotes
    low, upp = x - span, x + span
    alpha = np.maximum.reduce([np.zeros(n), low + 0.1 * (x - low), x - 0.2])
    beta = np.minimum.reduce([np.ones(n), upp - 0.1 * (upp - x), x + 0.2])
    # a compliance-like objective over three decades and a volume constraint
    grads = np.vstack([-rng.uniform(0, 2, n) * 10.0 ** rng.uniform(-3, 0, n) / n,
                       np.full(n, 1.0 / n)])
    p = (upp - x) ** 2 * (1.001 * np.maximum(grads, 0) + 0.001 * np.maximum(-grads, 0) + 1e-5)
    q = (x - low) ** 2 * (0.001 * np.maximum(grads, 0) + 1.001 * np.maximum(-grads, 0) + 1e-5)
    b = p[1:] @ (1 / (upp - x)) + q[1:] @ (1 / (x - low)) - np.array([x.mean() - 0.5])
    args = (p[0], q[0], p[1:], q[1:], b, low, upp, alpha, beta, 1.0, np.zeros(1),
            np.full(1, 1000.0), np.ones(1), 1e-9)
    fast = _solve_subproblem(*args, single_kernels=True)
    general = _solve_subproblem(*args, single_kernels=False)
    assert fast.iterations == general.iterations > 10
    np.testing.assert_array_equal(fast.x, general.x)
    np.testing.assert_array_equal(fast.lam, general.lam)
    np.testing.assert_array_equal(fast.y, general.y)
    assert fast.z == general.z
    assert fast.lam[0] > 0.01                     # the constraint is active
    near_bounds = np.minimum(fast.x - alpha, beta - fast.x) < 1e-2 * (beta - alpha)
    assert 0.005 * n < np.count_nonzero(near_bounds) < 0.5 * n


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
    assert all(isinstance(v, (np.ndarray, int, float, bool, str)) for v in saved.values())
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


def test_history_keeps_the_sign_of_the_last_step_and_reads_states_with_xold2():
    """The design two updates back matters only through sign(xold1 - xold2): the optimizer
    keeps that sign (int8), and a state written with xold2 itself continues identically."""
    x0 = np.array([4.0, 3.0, 2.0])
    _, _, iterates = run_mma(svanberg_toy, x0, MMA(3, 2, 0.0, 5.0, move_limit=0.3),
                             max_iterations=8, step_tolerance=0.0)
    first = MMA(3, 2, 0.0, 5.0, move_limit=0.3)
    _, _, head = run_mma(svanberg_toy, x0, first, max_iterations=4, step_tolerance=0.0)
    assert first.step_sign.dtype == np.int8
    np.testing.assert_array_equal(first.step_sign, np.sign(head[-2] - head[-3]))
    old_style = first.state()
    del old_style["step_sign"]
    old_style["xold2"] = head[-3]            # what states held before: the design itself
    resumed = MMA.from_state(old_style)
    _, _, tail = run_mma(svanberg_toy, head[-1], resumed, max_iterations=4, step_tolerance=0.0)
    for a, b in zip(head + tail[1:], iterates):
        assert np.array_equal(a, b)
    bad = first.state()
    bad["step_sign"] = np.array([2, 0, 1])
    with pytest.raises(OptimizationError, match="step_sign"):
        MMA.from_state(bad)


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
def _load_kernels():
    """One tiny update, so that compiling or loading the Numba kernels is not traced below."""
    MMA(4, 1, 0.0, 1.0).update(np.full(4, 0.5), 1.0, -np.ones(4), [0.1], np.full((1, 4), 0.25))


def test_large_problem_runs_in_memory_linear_in_n():
    n = 200_000
    rng = np.random.default_rng(11)
    weights = rng.uniform(0.5, 2.0, n)
    x = np.full(n, 0.5)
    mma = MMA(n, 1, 1e-3, 1.0)
    _load_kernels()
    tracemalloc.start()
    try:
        for _ in range(2):
            x = mma.update(x, np.sum(weights / x), -weights / x**2,
                           np.array([x.mean() / 0.4 - 1.0]), np.full((1, n), 1.0 / (0.4 * n)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 19 vectors of length n measured: the update's 13 plus the gradients built here and the
    # state and design kept from the first update; n x n would be 320 GB.
    assert peak < 25 * 8 * n
    # The convex approximation of the linear constraint is conservative: feasible, nearly active.
    assert 0.39 < x.mean() <= 0.4


def test_update_holds_about_a_dozen_vectors_of_length_n():
    n = 200_000
    rng = np.random.default_rng(12)
    objective_gradient = -rng.uniform(0.5, 2.0, n)
    constraint_gradient = np.full((1, n), 1.0 / n)
    x = np.full(n, 0.5)
    mma = MMA(n, 1, 0.0, 1.0)
    for _ in range(2):   # loads the kernels; the third update moves the asymptotes adaptively
        x = mma.update(x, 1.0, objective_gradient, [x.mean() - 0.4], constraint_gradient)
    constraint = np.array([x.mean() - 0.4])
    tracemalloc.start()
    try:
        mma.update(x, 1.0, objective_gradient, constraint, constraint_gradient)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 11 + 2m = 13 vectors measured (see the module docstring); the element-wise NumPy solver
    # it replaced peaked at 45.
    assert peak < 20 * 8 * n


# --- the fused kernels against a plain NumPy version of the same update -----------------------
def reference_update(state, x, f0, df0, g, dg, max_newton=200, max_halvings=50):
    """One MMA update written with whole-array NumPy operations only, from ``MMA.state()``
    taken before the update: returns (new x, multipliers in caller units, Newton steps)."""
    n, m = x.size, g.size
    scale = state["objective_scale"]
    if np.isnan(scale):
        scale = 1.0 / abs(f0)
    lower, upper = state["lower_bound"], state["upper_bound"]
    span = upper - lower
    if state["iteration"] < 2:
        low = x - state["asymptote_init"] * span
        upp = x + state["asymptote_init"] * span
    else:
        xold1 = state["xold1"]
        trend = np.sign((x - xold1) * state["step_sign"])
        factor = np.select([trend > 0, trend < 0],
                           [state["asymptote_increase"], state["asymptote_decrease"]], 1.0)
        low = np.clip(x - factor * (xold1 - state["low"]), x - 10 * span, x - 0.01 * span)
        upp = np.clip(x + factor * (state["upp"] - xold1), x + 0.01 * span, x + 10 * span)
    margin, move = state["asymptote_margin"], state["move_limit"]
    alpha = np.max([lower, low + margin * (x - low), x - move * span], axis=0)
    beta = np.min([upper, upp - margin * (upp - x), x + move * span], axis=0)
    grads = np.vstack([scale * df0, dg])
    regular = 1e-5 / np.maximum(span, 1e-5)
    p = (upp - x) ** 2 * (1.001 * np.maximum(grads, 0) + 0.001 * np.maximum(-grads, 0) + regular)
    q = (x - low) ** 2 * (0.001 * np.maximum(grads, 0) + 1.001 * np.maximum(-grads, 0) + regular)
    b = p[1:] @ (1 / (upp - x)) + q[1:] @ (1 / (x - low)) - g
    a0, a = state["a0"], state["a"]
    c, d = state["constraint_penalty"], state["constraint_penalty_quadratic"]

    # Primal-dual interior point on the subproblem, Newton steps on the (m+1) multiplier system.
    xs = 0.5 * (alpha + beta)
    xsi, eta = np.maximum(1 / (xs - alpha), 1.0), np.maximum(1 / (beta - xs), 1.0)
    y, z, lam, mu, zet, s = np.ones(m), 1.0, np.ones(m), np.maximum(1.0, 0.5 * c), 1.0, np.ones(m)

    def residual(point, eps):
        xs, xsi, eta, y, z, lam, mu, zet, s = point
        r = np.concatenate([
            (p[0] + lam @ p[1:]) / (upp - xs) ** 2 - (q[0] + lam @ q[1:]) / (xs - low) ** 2
            - xsi + eta,
            c + d * y - lam - mu, [a0 - zet - a @ lam],
            p[1:] @ (1 / (upp - xs)) + q[1:] @ (1 / (xs - low)) - a * z - y + s - b,
            xsi * (xs - alpha) - eps, eta * (beta - xs) - eps, mu * y - eps, [zet * z - eps],
            lam * s - eps])
        return np.linalg.norm(r), np.max(np.abs(r))

    point = (xs, xsi, eta, y, z, lam, mu, zet, s)
    newton_steps = 0
    for eps in 10.0 ** -np.arange(10):
        if eps <= 0.5 * state["subproblem_tolerance"]:
            break
        norm2, normmax = residual(point, eps)
        newton = 0
        while normmax > 0.9 * eps and newton < max_newton:
            newton += 1
            xs, xsi, eta, y, z, lam, mu, zet, s = point
            plam, qlam = p[0] + lam @ p[1:], q[0] + lam @ q[1:]
            G = p[1:] / (upp - xs) ** 2 - q[1:] / (xs - low) ** 2
            rx = plam / (upp - xs) ** 2 - qlam / (xs - low) ** 2 - eps / (xs - alpha) \
                + eps / (beta - xs)
            diag_x = 2 * (plam / (upp - xs) ** 3 + qlam / (xs - low) ** 3) \
                + xsi / (xs - alpha) + eta / (beta - xs)
            ry = c + d * y - lam - eps / y
            diag_y = d + mu / y
            rlamy = (p[1:] @ (1 / (upp - xs)) + q[1:] @ (1 / (xs - low)) - a * z - y - b
                     + eps / lam + ry / diag_y)
            A = np.block([[(G / diag_x) @ G.T + np.diag(s / lam + 1 / diag_y), a[:, None]],
                          [a[None, :], np.array([[-zet / z]])]])
            rhs = np.concatenate([rlamy - (G / diag_x) @ rx, [a0 - a @ lam - eps / z]])
            solution = np.linalg.solve(A, rhs)
            dlam, dz = solution[:m], solution[m]
            dx = -(rx + G.T @ dlam) / diag_x
            dy = (dlam - ry) / diag_y
            direction = (dx, -xsi + (eps - xsi * dx) / (xs - alpha),
                         -eta + (eps + eta * dx) / (beta - xs), dy, dz, dlam,
                         -mu + (eps - mu * dy) / y, -zet + (eps - zet * dz) / z,
                         -s + (eps - s * dlam) / lam)
            # fraction to the boundary: every positive unknown, and x within (alpha, beta)
            ratios = [np.max(np.atleast_1d(-1.01 * dv / v)) for dv, v in
                      zip(direction[1:], point[1:]) if np.size(v)]
            ratios += [np.max(-1.01 * dx / (xs - alpha)), np.max(1.01 * dx / (beta - xs))]
            step = 1.0 / max(1.0, *ratios)
            for _ in range(max_halvings):
                trial = tuple(v + step * dv for v, dv in zip(point, direction))
                trial_norm2, trial_max = residual(trial, eps)
                if trial_norm2 < norm2:
                    break
                step *= 0.5
            point, norm2, normmax = trial, trial_norm2, trial_max
        newton_steps += newton
    return np.clip(point[0], alpha, beta), point[5] / scale, newton_steps


def test_fused_update_matches_plain_numpy_reference():
    n, m = 2000, 2
    rng = np.random.default_rng(21)
    mma = MMA(n, m, 0.0, 1.0)
    x = rng.uniform(0.2, 0.8, n)
    for _ in range(4):   # iterations 1, 2 with fixed asymptotes, then adaptive ones
        df0 = -rng.uniform(0.1, 2.0, n) / (x + 0.1) ** 2 + 0.3 * rng.normal(size=n)
        g = rng.uniform(-0.2, 0.2, m)
        dg = rng.uniform(0.5, 1.5, (m, n)) / n * np.where(rng.uniform(size=(m, n)) < 0.2, -1, 1)
        f0 = rng.uniform(1.0, 10.0)
        x_ref, lam_ref, newton_ref = reference_update(mma.state(), x, f0, df0, g, dg)
        x = mma.update(x, f0, df0, g, dg)
        np.testing.assert_allclose(x, x_ref, rtol=1e-9, atol=0)
        np.testing.assert_allclose(mma.constraint_multipliers, lam_ref, rtol=1e-9, atol=1e-12)
        # Same algorithm: the same Newton steps (a round-off tie in a stopping test may flip one)
        assert abs(mma.subproblem_iterations - newton_ref) <= 1


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


@pytest.mark.parametrize("subproblem, solver", [("interior-point", "_solve_subproblem"),
                                                 ("dual", "_solve_single_dual")])
def test_non_finite_subproblem_solution_raises_and_keeps_the_state(monkeypatch, subproblem, solver):
    import lightweight.optimize.mma as mma_module
    mma = MMA(4, 1, 0.0, 1.0, subproblem=subproblem)
    x = np.full(4, 0.5)
    args = (x, 1.0, -np.ones(4), [0.0], np.full((1, 4), 0.25))
    mma.update(*args)
    solve = getattr(mma_module, solver)

    def broken(*a, **k):
        sub = solve(*a, **k)
        sub.x[2] = np.nan
        return sub

    monkeypatch.setattr(mma_module, solver, broken)
    with pytest.raises(OptimizationError, match=r"non-finite new design at 1 variable\(s\), first \[2\]"):
        mma.update(*args)
    assert mma.iteration == 1


def test_a_constraint_violated_by_orders_of_magnitude_still_gives_a_finite_step(data_dir):
    """Issue 13: the collapsed stress-constrained L-bracket (f = 3.1e4, gradients up to 8e4, x down
    to 3e-15) made the subproblem stall at the bounds until the step was NaN. Replayed from the
    saved MMA state and inputs of that iteration: the step is finite, in the box, and lowers the
    linearized constraint."""
    saved = np.load(data_dir / "mma_collapsed_stress_step.npz")
    state = {key[len("state_"):]: (saved[key].item() if saved[key].ndim == 0 else saved[key])
             for key in saved.files if key.startswith("state_")}
    optimizer = MMA.from_state(state)
    x = saved["x"]
    x_new = optimizer.update(x, float(saved["objective"]), saved["objective_gradient"],
                             saved["constraints"], saved["constraint_gradients"])
    assert np.all(np.isfinite(x_new))
    assert np.all((x_new >= 0.0) & (x_new <= 1.0))
    assert np.abs(x_new - x).max() <= 0.05 + 1e-12                      # the move limit
    assert float(saved["constraint_gradients"][0] @ (x_new - x)) < 0.0
    assert np.all(np.isfinite(optimizer.constraint_multipliers))


def _single_constraint_subproblem(n, seed, violated=False):
    """Random coefficients of a one-constraint MMA subproblem as MMA.update forms them."""
    from lightweight.optimize import mma as mma_module
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, n)
    low, upp = x - rng.uniform(0.1, 0.5, n), x + rng.uniform(0.1, 0.5, n)
    df0 = rng.standard_normal(n) * rng.uniform(0.01, 10.0, n)
    dfdx = np.abs(rng.standard_normal((1, n)))
    alpha, beta, p0, q0 = (np.empty(n) for _ in range(4))
    P, Q = np.empty((1, n)), np.empty((1, n))
    value = 0.5 if violated else -0.01
    b = mma_module._approximations(x, low, upp, np.zeros(n), np.ones(n), df0, 1.0, dfdx, 0.2, 0.1,
                                   alpha, beta, p0, q0, P, Q) - np.array([value])
    return p0, q0, P, Q, b, low, upp, alpha, beta


@pytest.mark.parametrize("seed, violated, d", [(0, False, 1.0), (1, True, 1.0), (2, True, 0.0),
                                               (3, False, 0.0), (4, True, 1.0)])
def test_single_constraint_dual_solves_the_subproblem_of_the_interior_point(seed, violated, d):
    """The exact dual solution against the interior point's (barrier 1e-12): the same x, y and
    multiplier to the interior point's accuracy; the dual's point satisfies the KKT conditions
    of the subproblem: x minimises the Lagrangian in its box, complementarity holds."""
    from lightweight.optimize import mma as mma_module
    n = 5000
    data = _single_constraint_subproblem(n, seed, violated)
    p0, q0, P, Q, b, low, upp, alpha, beta = data
    c, dq = np.array([1000.0]), np.array([d])
    dual = mma_module._solve_single_dual(*data, c, dq, 1e-9)
    interior = mma_module._solve_subproblem(*data, 1.0, np.zeros(1), c, dq, 1e-9)
    assert dual.iterations < 80
    # the interior point stops within ~0.9 eps of its KKT residual: x agrees to a few 1e-7..1e-6
    np.testing.assert_allclose(dual.x, interior.x, rtol=0, atol=3e-6)
    np.testing.assert_allclose(dual.lam, interior.lam, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dual.y, interior.y, rtol=1e-6, atol=1e-7)
    assert dual.z == 0.0
    # stationarity in x: a zero gradient of the Lagrangian where its minimiser lies in the box,
    # and where it lies beyond a face, the barrier's eps / distance (eps 1e-9) balancing the
    # slope that presses x against it (to the rounding of distances ~1e-9 from faces ~0.5)
    lam = dual.lam[0]
    x = dual.x
    assert np.all((x > alpha) & (x < beta))
    gradient = (p0 + lam * P[0]) / (upp - x) ** 2 - (q0 + lam * Q[0]) / (x - low) ** 2
    barrier = gradient - 1e-9 / (x - alpha) + 1e-9 / (beta - x)
    scale = (p0 + lam * P[0]) / (upp - x) ** 2 + 1e-9 / (x - alpha) + 1e-9 / (beta - x)
    free = np.abs(gradient) <= 1e-8 * scale
    pressed = np.abs(barrier) <= 1e-5 * scale
    assert np.all(free | pressed)
    assert np.all(np.minimum(x - alpha, beta - x)[~free] < 1e-4)
    assert np.any(~free) and np.any(free)
    # the constraint: met with equality when priced, slack when lam = 0
    g = np.sum(P[0] / (upp - x) + Q[0] / (x - low)) - dual.y[0] - b[0]
    assert g <= 1e-9 * np.abs(b[0]) + 1e-9
    if lam > 0:
        assert abs(g) <= 1e-8 * (np.abs(b[0]) + np.sum(P[0] / (upp - x)))
    else:
        assert not violated


def test_subproblem_option_is_checked_and_survives_a_checkpoint():
    with pytest.raises(OptimizationError, match="subproblem must be one of"):
        MMA(3, 1, 0.0, 1.0, subproblem="newton")
    with pytest.raises(OptimizationError, match="needs a = 0"):
        MMA(3, 2, 0.0, 1.0, a=[0.0, 1.0], subproblem="dual")
    with pytest.raises(OptimizationError, match="needs a = 0"):
        MMA(3, 1, 0.0, 1.0, a=1.0, subproblem="dual")
    assert MMA(3, 2, 0.0, 1.0, subproblem="dual").subproblem == "dual"
    mma = MMA(3, 1, 0.0, 1.0, subproblem="interior-point")
    assert MMA.from_state(mma.state()).subproblem == "interior-point"
    old = mma.state()
    del old["subproblem"]                          # a checkpoint written before the option
    assert MMA.from_state(old).subproblem == "auto"


def test_dual_and_interior_point_runs_reach_the_same_design():
    """Whole runs of the compliance-like problem: the exact dual and the interior point (1e-9)
    give the same iterates to the interior point's accuracy."""
    designs = {}
    for subproblem in ("dual", "interior-point"):          # 200 variables: "auto" is the latter
        rng = np.random.default_rng(5)
        weights = rng.uniform(0.5, 2.0, 200)
        mma = MMA(200, 1, 0.001, 1.0, subproblem=subproblem)
        x = np.full(200, 0.5)
        for _ in range(25):
            objective = float(np.sum(weights / x))
            volume = float(np.mean(x) - 0.3)
            x = mma.update(x, objective, -weights / x ** 2, [volume], np.full((1, 200), 1 / 200))
        designs[subproblem] = x
    np.testing.assert_allclose(designs["dual"], designs["interior-point"], rtol=0, atol=1e-6)


def test_auto_takes_the_dual_from_dual_from_variables_on(monkeypatch):
    from lightweight.optimize import mma as mma_module
    used = []
    for name in ("_solve_single_dual", "_solve_subproblem"):
        solve = getattr(mma_module, name)
        monkeypatch.setattr(mma_module, name, lambda *a, _s=solve, _n=name, **k: (used.append(_n), _s(*a, **k))[1])
    for n in (mma_module.DUAL_FROM_VARIABLES - 1, mma_module.DUAL_FROM_VARIABLES):
        for subproblem in ("auto", "dual", "interior-point"):
            mma = MMA(n, 1, 0.0, 1.0, subproblem=subproblem)
            mma.update(np.full(n, 0.5), 1.0, np.ones(n), [0.1], np.full((1, n), 1.0 / n))
    assert used == ["_solve_subproblem", "_solve_single_dual", "_solve_subproblem",
                    "_solve_single_dual", "_solve_single_dual", "_solve_subproblem"]
    # several constraints or none: the projected Newton dual; with z in a constraint: the
    # interior point whatever the size
    used.clear()
    monkeypatch.setattr(mma_module, "_solve_multi_dual", lambda *a, _s=mma_module._solve_multi_dual,
                        **k: (used.append("_solve_multi_dual"), _s(*a, **k))[1])
    n = mma_module.DUAL_FROM_VARIABLES
    for m, a in ((2, 0.0), (0, 0.0), (2, 1.0)):
        mma = MMA(n, m, 0.0, 1.0, a=a)
        mma.update(np.full(n, 0.5), 1.0, np.ones(n), np.full(m, 0.1), np.full((m, n), 1.0 / n))
    assert used == ["_solve_multi_dual", "_solve_multi_dual", "_solve_subproblem"]


def _constraints_subproblem(n, m, seed, values, scale=1.0):
    """Random coefficients of an m-constraint MMA subproblem as MMA.update forms them; values:
    the constraints' values f_i(x) (m,)."""
    from lightweight.optimize import mma as mma_module
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, n)
    low, upp = x - rng.uniform(0.1, 0.5, n), x + rng.uniform(0.1, 0.5, n)
    df0 = rng.standard_normal(n) * rng.uniform(0.01, 10.0, n)
    dfdx = (rng.standard_normal((m, n)) + 0.5) * scale
    alpha, beta, p0, q0 = (np.empty(n) for _ in range(4))
    P, Q = np.empty((m, n)), np.empty((m, n))
    b = mma_module._approximations(x, low, upp, np.zeros(n), np.ones(n), df0, 1.0, dfdx, 0.2, 0.1,
                                   alpha, beta, p0, q0, P, Q) - np.asarray(values, dtype=float)
    return p0, q0, P, Q, b, low, upp, alpha, beta


@pytest.mark.parametrize("m, values, c, d", [
    (2, [-0.01, 0.3], 1000.0, 1.0),              # both priced
    (3, [0.01, -2000.0, 0.5], 1000.0, 1.0),      # one far from active: its multiplier 0
    (2, [5000.0, 0.1], 0.1, 1.0),                # a cheap y: y > 0 with a quadratic price
    (2, [5000.0, 0.1], 0.1, 0.0),                # linear price: lam at c, y takes the rest
    (8, np.linspace(-0.1, 1.0, 8), 1000.0, 1.0),
    (0, [], 1000.0, 1.0),
])
def test_multi_constraint_dual_solves_the_subproblem_of_the_interior_point(m, values, c, d):
    """The dual's projected Newton solution against the interior point's: x, multipliers and y
    to the interior point's accuracy, the dual's own KKT conditions (stationarity in lam: each
    priced constraint met with equality, each unpriced one slack) to 1e-10 of its terms, in
    a few passes over the variables."""
    from lightweight.optimize import mma as mma_module
    data = _constraints_subproblem(5000, m, 20 + m, values)
    p0, q0, P, Q, b, low, upp, alpha, beta = data
    cs, ds = np.full(m, c), np.full(m, d)
    dual = mma_module._solve_multi_dual(*data, cs, ds, 1e-9)
    interior = mma_module._solve_subproblem(*data, 1.0, np.zeros(m), cs, ds, 1e-9)
    assert dual.iterations <= 15
    # without constraints the Lagrangian of some variables is flat (terms ~1e-3), where the
    # interior point stops at its absolute residual a few 1e-6 short; the dual's x is exact
    np.testing.assert_allclose(dual.x, interior.x, rtol=0, atol=3e-6 if m else 1e-5)
    slope = (p0 + lam_p(dual.lam, P)) / (upp - dual.x) ** 2 \
        - (q0 + lam_p(dual.lam, Q)) / (dual.x - low) ** 2
    # each x_j: a zero slope of the Lagrangian, or a hair inside the face its slope presses it
    # against (the barrier distance: eps / slope, at most sqrt(eps / curvature))
    scale = (p0 + lam_p(dual.lam, P)) / (upp - dual.x) ** 2
    free = np.abs(slope) <= 1e-9 * scale
    pressed = ((slope > 0) & (dual.x - alpha < 1e-3)) | ((slope < 0) & (beta - dual.x < 1e-3))
    assert np.all(free | pressed) and np.any(free) and np.any(pressed)
    np.testing.assert_allclose(dual.lam, interior.lam, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dual.y, interior.y, rtol=1e-6, atol=1e-7)
    x, lam = dual.x, dual.lam
    assert np.all((x > alpha) & (x < beta))
    terms = P / (upp - x) + Q / (x - low)
    g = terms.sum(axis=1) - dual.y - b
    size = np.abs(terms).sum(axis=1) + np.abs(b) + dual.y
    assert np.all(g <= 1e-10 * size)
    priced = lam > 0
    assert np.all(np.abs(g[priced]) <= 1e-10 * size[priced])
    if m == 3:
        assert lam[1] == 0.0 and g[1] < -1.0 and np.all(lam[[0, 2]] > 0)
    if c == 0.1:
        assert np.all(dual.y > 100.0)
        if d == 0.0:
            np.testing.assert_array_equal(lam, [0.1, 0.1])


def lam_p(lam, P):
    """sum_i lam_i P_i (n,), also for m = 0."""
    return lam @ P if lam.size else np.zeros(P.shape[1])


def test_multi_constraint_dual_with_one_constraint_is_the_single_dual():
    """m = 1 through the projected Newton solver: the regula falsi's multiplier to 1e-9 and its
    x to 1e-9 away from the faces; within a barrier distance of a face the Newton solver keeps x
    continuous in lam (clipped at the barrier distance) where the regula falsi's jumps."""
    from lightweight.optimize import mma as mma_module
    data = _constraints_subproblem(5000, 1, 3, [0.3])
    alpha, beta = data[7], data[8]
    c, d = np.array([1000.0]), np.array([1.0])
    multi = mma_module._solve_multi_dual(*data, c, d, 1e-9)
    single = mma_module._solve_single_dual(*data, c, d, 1e-9)
    np.testing.assert_allclose(multi.lam, single.lam, rtol=1e-9)
    inside = np.minimum(single.x - alpha, beta - single.x) > 1e-3
    assert inside.sum() > 1000
    np.testing.assert_allclose(multi.x[inside], single.x[inside], rtol=0, atol=1e-9)
    np.testing.assert_allclose(multi.x, single.x, rtol=0, atol=1e-5)


def test_multi_constraint_dual_runs_reach_the_interior_points_design():
    """Whole runs with three constraints (two competing resources, one never active): the dual
    and the interior point (1e-9) give the same iterates to 1e-6; the dual prices the slack
    constraint at exactly 0. (Without constraints, the interior point's absolute stopping test
    leaves x ~1e-4 short where the approximations are flat, p, q ~ raa0, and MMA's iterates
    amplify that: the subproblem test above compares a single step there.)"""
    n = 300
    rng = np.random.default_rng(7)
    weights = rng.uniform(0.5, 2.0, n)
    resource = np.vstack([rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n), np.ones(n)]) / n
    limits = np.array([0.3, 0.29, 0.9])
    designs, multipliers = {}, {}
    for subproblem in ("dual", "interior-point"):
        mma = MMA(n, 3, 0.001, 1.0, subproblem=subproblem)
        x = np.full(n, 0.5)
        for _ in range(25):
            x = mma.update(x, float(np.sum(weights / x)), -weights / x ** 2, resource @ x - limits,
                           resource)
        designs[subproblem] = x
        multipliers[subproblem] = mma.constraint_multipliers
    np.testing.assert_allclose(designs["dual"], designs["interior-point"], rtol=0, atol=1e-6)
    assert np.all(resource[:2] @ designs["dual"] <= limits[:2] + 1e-9)
    assert multipliers["dual"][2] == 0.0 and np.all(multipliers["dual"][:2] > 0.0)
    np.testing.assert_allclose(multipliers["dual"][:2], multipliers["interior-point"][:2],
                               rtol=1e-5)


def test_multi_constraint_dual_on_a_min_mass_run_of_a_tet_part(monkeypatch):
    """The Gmsh bracket (12k tets), three load cases, minimize_mass with a compliance limit per
    case (three MMA constraints) and Heaviside projection: the projected Newton dual and the
    interior point give the same objective history to 1e-3 (they place variables pressed
    against a face differently, within a barrier distance) and the dual needs at most 22 passes
    per update. On the 63k-tet version of this run a line search that mixed W and |h| cycled
    between two points until its pass limit (51 passes, multipliers 0, constraints violated)."""
    import lightweight as lw
    from lightweight.optimize import mma as mma_module
    mesh = lw.read_mesh(Path(__file__).parent.parent / "meshes" / "bracket.msh")
    loads = {"down": [lw.Traction("load_face", (0.0, 0.0, -10.0))],
             "side": [lw.Traction("load_face", (0.0, 10.0, 0.0))],
             "pull": [lw.Traction("load_face", (10.0, 0.0, -5.0))]}
    model = lw.Model(mesh, lw.Material(E=70e3, nu=0.33, density=2.7e-9),
                     supports={"bolt_holes": "xyz"}, loads=loads)
    passes = []
    solve = mma_module._solve_multi_dual

    def counted(*args, **kwargs):
        solution = solve(*args, **kwargs)
        passes.append(solution.iterations)
        return solution

    monkeypatch.setattr(mma_module, "_solve_multi_dual", counted)
    histories = {}
    for name, threshold in (("dual", 0), ("interior-point", 10**12)):
        monkeypatch.setattr(mma_module, "DUAL_FROM_VARIABLES", threshold)
        result = lw.minimize_mass(model, max_compliance_factor=3.0, filter_radius=6.0,
                                  projection={"beta": 1.0, "beta_max": 8.0}, max_iterations=12,
                                  tolerance=0.0, verbose=False)
        histories[name] = np.array([record["objective"] for record in result.history])
    assert len(passes) == 12 and max(passes) <= 22
    np.testing.assert_allclose(histories["dual"], histories["interior-point"], rtol=1e-3)
    assert histories["dual"][-1] < 0.9 * histories["dual"][1]          # it did lighten the part


def test_multi_constraint_dual_when_every_variable_is_pressed_against_a_face():
    """Constraints that the move limit cannot meet, every variable at its lower face: the dual
    has no curvature from x (W linear in lam) until y enters at lam = c. The steps go the whole
    reach up the gradient (a unit step crawled: 51 passes and multipliers 0.7 and 5.7 instead
    of c + y); the answer is the interior point's: lam = c + y, y = what each constraint lacks."""
    n = 30000
    x0 = np.full(n, 0.5)
    gradients = np.ones((3, n)) / n
    results = {}
    for subproblem in ("dual", "interior-point"):
        mma = MMA(n, 3, 0.0, 1.0, subproblem=subproblem)
        x = mma.update(x0, 1.0, np.ones(n), [0.1, 0.2, -0.1], gradients)
        results[subproblem] = (x, mma.constraint_multipliers, mma.artificial_y,
                               mma.subproblem_iterations)
    x, lam, y, passes = results["dual"]
    assert passes <= 12
    np.testing.assert_allclose(x, results["interior-point"][0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(lam[:2], results["interior-point"][1][:2], rtol=1e-7)
    np.testing.assert_allclose(y[:2], results["interior-point"][2][:2], rtol=1e-5)
    assert lam[2] == 0.0 and np.all(lam[:2] > 1000.0)
