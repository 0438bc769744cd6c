"""Finite-difference checks of stages and responses: one helper for every part of the chain.

Every stage's ``backward`` and every response's gradient is checked the same way: central
differences ``(F(x + h e_j) - F(x - h e_j)) / 2h`` at a few random coordinates j, compared with
the analytic row, relative to the largest entry of that row (absolute errors of small entries
are meaningless next to the large ones). For a stage the scalar is ``w · forward(x)`` with a
random weight vector w, whose gradient is ``backward(x, w)``: one check covers the whole
Jacobian transpose (pyMOTO checks its modules the same way).

Used by the test suite for each stage and response, and available to anyone adding one::

    from lightweight.optimize.checks import check_response
    check_response(MyResponse(model), model)          # raises AssertionError with the worst entry
"""

from __future__ import annotations

import numpy as np


def _pick(n: int, count: int, rng) -> np.ndarray:
    return rng.choice(n, size=min(count, n), replace=False)


def _compare(analytic: np.ndarray, numeric: np.ndarray, coords, rtol: float, what: str) -> float:
    """Worst error relative to each row's largest analytic entry; raises AssertionError over rtol."""
    worst = 0.0
    for k in range(analytic.shape[0]):
        scale = max(float(np.abs(analytic[k]).max()), 1e-30)
        errors = np.abs(analytic[k, coords] - numeric[k]) / scale
        j = int(np.argmax(errors))
        worst = max(worst, float(errors[j]))
        if errors[j] > rtol:
            raise AssertionError(f"{what}: row {k}, coordinate {coords[j]}: analytic {analytic[k, coords[j]]:.8g}, "
                                 f"finite difference {numeric[k, j]:.8g} (error {errors[j]:.2g} of the row's "
                                 f"largest entry {scale:.3g}; allowed {rtol:g})")
    return worst


def check_stage(stage, x: np.ndarray, n_checks: int = 8, step: float = 1e-6, rtol: float = 1e-5,
                seed: int = 0) -> float:
    """Check ``stage.backward`` against central differences of ``stage.forward`` at x (n_in,).

    Returns the worst relative error; raises AssertionError naming the worst coordinate.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    y = stage.forward(x)
    weights = rng.uniform(-1.0, 1.0, (2, y.size))
    analytic = np.asarray(stage.backward(x, weights))
    coords = _pick(x.size, n_checks, rng)
    numeric = np.zeros((2, coords.size))
    for i, j in enumerate(coords):
        xp, xm = x.copy(), x.copy()
        xp[j] += step
        xm[j] -= step
        numeric[:, i] = weights @ (stage.forward(xp) - stage.forward(xm)) / (2 * step)
    return _compare(analytic, numeric, coords, rtol, f"stage {stage.name}")


def check_response(response, model, rho: np.ndarray | None = None, interpolation=None,
                   n_checks: int = 6, step: float = 1e-6, rtol: float = 1e-5, seed: int = 0,
                   solver: str = "direct") -> float:
    """Check a response's gradient w.r.t. ρ̄ against central differences at ρ̄ (n_cells,).

    rho: densities (default: uniform random in [0.3, 0.9]); interpolation: the stiffness law
    (default SIMP p = 3, E_min = 1e-3, which keeps the FD well conditioned). Each evaluation
    uses a fresh design state, so nothing is cached across the perturbations.
    """
    from ..fem.interpolation import Interpolation
    from .analysis import Analysis
    rng = np.random.default_rng(seed)
    n = model.mesh.n_cells
    rho = rng.uniform(0.3, 0.9, n) if rho is None else np.asarray(rho, dtype=float)
    law = Interpolation("simp", 3.0, 1e-3) if interpolation is None else interpolation
    # the solver's own tolerance: differences of loose solves would measure the solver, not the gradient
    analysis = Analysis(model, law, solver=solver, solver_rtol=None)

    def values(r):
        analysis.last_displacements = None
        return np.asarray(response.evaluate(analysis.state(r))[0], dtype=float)

    analysis.last_displacements = None
    _, analytic = response.evaluate(analysis.state(rho))
    analytic = np.atleast_2d(np.asarray(analytic, dtype=float))
    coords = _pick(n, n_checks, rng)
    numeric = np.zeros((analytic.shape[0], coords.size))
    for i, j in enumerate(coords):
        rp, rm = rho.copy(), rho.copy()
        rp[j] += step
        rm[j] -= step
        numeric[:, i] = (values(rp) - values(rm)) / (2 * step)
    return _compare(analytic, numeric, coords, rtol, f"response {response.name}")
