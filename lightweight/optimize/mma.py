"""Method of Moving Asymptotes (MMA): one call to :meth:`MMA.update` is one design update.

Problem solved
--------------
::

    minimise   f0(x)
    subject to f_i(x) <= 0,          i = 1..m
               xmin_j <= x_j <= xmax_j, j = 1..n

Every outer iteration replaces f0 and f_i by separable convex approximations built from the
current values and gradients, around two *moving asymptotes* ``low_j < x_j < upp_j``::

    f~_i(x) = r_i + sum_j ( p_ij / (upp_j - x_j) + q_ij / (x_j - low_j) ),   i = 0..m

    p_ij = (upp_j - x_j)^2 * (1.001 * max(df_i/dx_j, 0) + 0.001 * max(-df_i/dx_j, 0) + raa0 / dx_j)
    q_ij = (x_j - low_j)^2 * (0.001 * max(df_i/dx_j, 0) + 1.001 * max(-df_i/dx_j, 0) + raa0 / dx_j)

with ``raa0 = 1e-5`` and ``dx_j = max(xmax_j - xmin_j, 1e-5)``; the small terms make every
approximation strictly convex, so the subproblem has a unique solution. The subproblem is
Svanberg's (2007) form with artificial variables y (m,) and z (scalar), which keep it feasible
even when the linearised constraints cannot all be met::

    minimise   f~_0(x) + a0 z + sum_i ( c_i y_i + d_i y_i^2 / 2 )
    subject to f~_i(x) - a_i z - y_i <= 0,   alpha_j <= x_j <= beta_j,   y >= 0,  z >= 0

``a0 = 1, a_i = 0`` gives the standard problem; ``c_i`` (``constraint_penalty``, default 1000)
must exceed the Lagrange multipliers of the real problem, otherwise the optimum of the subproblem
has y_i > 0 and constraint i stays violated.

Asymptotes (Svanberg 1987, 2007): in the first two iterations ``low = x - s0 (xmax - xmin)``,
``upp = x + s0 (xmax - xmin)`` with ``s0 = asymptote_init``. Later, for each variable, if the last
two steps went the same way the asymptotes are pushed out by ``asymptote_increase`` (the
approximation was too careful), if they oscillated they are pulled in by ``asymptote_decrease``,
otherwise they keep their distance; they are then kept between 0.01 and 10 times
``xmax - xmin`` from x. The box of the subproblem is::

    alpha = max(xmin, low + 0.1 (x - low), x - move (xmax - xmin))
    beta  = min(xmax, upp - 0.1 (upp - x), x + move (xmax - xmin))

so the new design stays inside the bounds, away from the asymptotes, and within the move limit.

Subproblem solver
-----------------
With one constraint and a = 0 (the standard problem, and every ``minimize_compliance`` run)
the subproblem can be solved through its dual, as Svanberg (1987) solved the original MMA
subproblems: for a multiplier lam the Lagrangian separates into n one-variable problems with a
closed-form minimiser (``_solve_single_dual``), and lam is the root of the dual's derivative, a
continuous non-increasing function of one variable, found by bracketing and the Illinois
variant of regula falsi to the last bits. A variable whose minimiser lies outside its box is
placed where the interior point's last barrier (eps = ``subproblem_tolerance``) puts it, a hair
inside the face, not on it: on the face exactly, densities of exactly 0 froze a Heaviside /
overhang chain (the small MBB printed along y ended at 2.2x the free design's compliance,
against 1.1-1.2x). Each trial is one pass over the variables (8 arrays read); 13-22 trials on
random subproblems, against the interior point's 36-53 Newton steps of three passes over about
twelve arrays: 40-57 ms against 760-808 ms at 422k variables (two threads); x agrees with the
interior point's to 3e-7 at 5 000 variables, to 2.5e-5 at 422k (near the faces, where the
interior point stops before its barrier's exact point).

With several constraints (a min-mass run's compliance limit per load case, a stress and a
volume constraint) or none, and a = 0, the dual is a concave function of m multipliers with a
continuous gradient (``_solve_multi_dual``): it is maximised over lam >= 0 by projected Newton
steps (Bertsekas 1982) with a backtracking line search, the Hessian's m x m sums and the
gradient coming from the same single pass over the variables. 8-10 passes on random
subproblems; at 422k variables and three constraints 0.15 s against the interior point's
2.44 s (60 Newton steps). Why not a general-purpose bound-constrained solver on the dual
(SciPy's L-BFGS-B, as some MMA codes do): on the 18 random subproblems of 5 000 variables we
tried (2-8 constraints, some slack, some with y > 0 or lam at a linear price) it took 3-74
evaluations (median ~30) and stopped with multipliers 1e-7-1e-9 from the root, where Newton
with the exact curvature took 3-14 passes to the last bits; each evaluation is the pass over n
variables that costs, and the curvature's m x m sums add little to it.
``subproblem="interior-point"`` keeps the interior point for every problem; "auto", the
default, takes the dual where it applies (a = 0) from ``DUAL_FROM_VARIABLES`` (20 000)
variables on, where the interior point costs time.

Otherwise, a primal-dual interior-point method in the spirit of Svanberg's ``subsolv``: the relaxed KKT
conditions (complementarity = eps) are solved by damped Newton steps (step cut back to stay in the
interior, then halved until the residual norm drops), for eps = 1, 0.1, ..., 1e-7 (``1e-9`` is the
default floor here: tighter subproblem solves make the outer iterates smoother). The bound, slack
and artificial-variable unknowns are eliminated analytically, which leaves one dense linear
system of size ``m + 1`` (for m < n: the Schur complement on the multipliers,
``G D_x^-1 G^T + D``, with G the (m, n) gradient of the approximations) or ``n + 1`` (for n <= m,
assembled with NumPy; n is small then). Nothing n x n is ever formed.

For large n the work per variable is what costs, so it is fused into Numba kernels that each make
one pass over the variables, in parallel over fixed blocks of 4096 variables whose partial sums
are added in a fixed order (so the result does not depend on the number of threads). Per Newton
step one pass sums ``G D_x^-1 G^T``, ``G D_x^-1 r_x`` and the approximations (O(m^2) per
variable), one forms dx and the longest step that stays interior, one evaluates the KKT residual
for each line-search trial (for the next eps as well, which saves the pass that would open the
next barrier level), and one takes the step. The steps of the bound multipliers xsi and eta are
recomputed from dx where needed instead of stored; only the algebra of size m (the (m+1) system,
y, z, mu, s) stays in NumPy. With one constraint (minimize_compliance's volume) the three passes
per Newton step run kernels written for m = 1 whose per-variable work vectorises: the same
numbers bit for bit, 1.2-2.3x faster per pass at 524k variables on one core. One pass before the solver builds the asymptotes, another the box
and the approximations. An update therefore holds 11 + 2m vectors of length n: x (kept as
``xold1``), low and upp (kept), alpha and beta, p0 and q0, the (m, n) P and Q, and the solver's
x, xsi, eta and dx. The Newton steps, step lengths and stopping tests are those of the
element-wise NumPy version this replaced; the results differ from it by round-off only (about
1e-13 relative here: sums are taken in another order and reciprocals are formed once and
multiplied). Time and memory per update against the element-wise version: docs/performance.md
("The MMA update"); the first call compiles the kernels (about 8 s), later runs load them from
Numba's disk cache.

Scaling
-------
MMA is invariant to scaling f0 except through two absolute numbers: ``raa0`` (which dominates
when gradients are tiny, making steps needlessly timid) and ``c_i`` (which must exceed the
multipliers, which grow with f0). Callers should normalise (f0 ~ 1..100, e.g. compliance divided
by its initial value; constraints as ``g/g_max - 1``). To stay usable without that, the objective
is by default multiplied internally by ``1/|f0|`` of the first update (``objective_scale=None``);
pass ``objective_scale=1.0`` for the unscaled, textbook behaviour. Constraints are not rescaled:
their size sets the size of the multipliers relative to ``c_i``, so normalise them.

Behaviour worth knowing
-----------------------
* The interior-point solution keeps a slack ``s_i = eps / lambda_i`` (eps = subproblem_tolerance)
  in active constraints, so converged designs sit on the feasible side by about that much.
* The minimiser of ``p/(upp - x) + q/(x - low)`` depends on the *sign* of the gradient and on the
  asymptotes, not on the gradient's size. A variable whose optimum is interior and not held there
  by a constraint (e.g. an unconstrained quadratic) therefore oscillates around it while the
  asymptotes shrink to their floor of 0.01 (xmax - xmin); it ends within about that distance
  instead of converging. Compliance-type objectives with an active resource constraint, the
  case MMA is made for, converge normally; GCMMA (Svanberg 2002) would fix the rest at the cost of
  inner iterations with extra function evaluations.
* ``constraint_multipliers`` (after an update) are the subproblem's multipliers in units of the
  caller's objective, a good estimate of the Lagrange multipliers near convergence;
  :func:`kkt_residual` turns them into a stopping test.

Why our own MMA
---------------
What we looked at:

* nlopt ``LD_MMA`` (pip wheel, 2.11): the CCSA variant of Svanberg (2002) with inner
  conservative-approximation loops, and nlopt owns the optimisation loop (it calls our function).
  That fights what the SIMP loop needs: continuation of the penalty/projection sharpness between
  iterations, per-iteration filtering and history records, and checkpoint/resume (nlopt's
  asymptotes and internal state are not reachable, so a restart loses them). We keep nlopt as the
  reference in the tests.
* mmapy 0.3.1 (pure Python, ``mmasub``/``subsolv``): a direct port of Svanberg's MATLAB routines
  with a functional API of some twenty positional (n, 1) column-vector arguments, the state
  (xold1, xold2, low, upp) carried by the caller, and a GPL-3.0 licence, which this MIT package
  cannot vendor. We did not use or copy its code.

So this module writes the classic method itself: a small object that holds the state between
calls (``state()`` / ``from_state()`` give a bit-identical resume), takes arrays in and returns the
new design, and whose subproblem solver is fused into Numba kernels for large n. Randomness:
none.

References
----------
* K. Svanberg, "The method of moving asymptotes - a new method for structural optimization",
  Int. J. Numer. Meth. Engng 24 (1987) 359-373.
* K. Svanberg, "A class of globally convergent optimization methods based on conservative convex
  separable approximations", SIAM J. Optim. 12 (2002) 555-573.
* K. Svanberg, "MMA and GCMMA - two methods for nonlinear optimization", lecture notes (2007):
  the subproblem with a0, a, c, d and the primal-dual interior-point solution used here.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..errors import OptimizationError

__all__ = ["MMA", "kkt_residual"]

_STATE_VERSION = 1
_RAA0 = 1e-5                 # convexity regularisation of the approximations (Svanberg's raa0)
_MIN_RANGE = 1e-5            # floor of xmax - xmin in the raa0 term
_ASYMPTOTE_MIN_DISTANCE = 0.01   # asymptotes at least this * (xmax - xmin) from x ...
_ASYMPTOTE_MAX_DISTANCE = 10.0   # ... and at most this much
_SCALE_LIMITS = (1e-12, 1e12)    # clamp of the automatic objective scale
_EPS_FACTOR = 0.1            # barrier parameter of the subproblem solver: 1, 0.1, 0.01, ...
_SUBPROBLEM_SOLVERS = ("auto", "dual", "interior-point")


class MMA:
    """Method of Moving Asymptotes for ``min f0(x)  s.t.  f_i(x) <= 0, i=1..m,  xmin <= x <= xmax``.

    n_variables: n; n_constraints: m (0 is allowed).
    lower_bound, upper_bound: xmin, xmax, scalars or (n,) arrays, xmax > xmin everywhere.
    move_limit: largest change of x_j per update, as a fraction of (xmax_j - xmin_j).
    asymptote_init: initial distance of the asymptotes from x, as a fraction of (xmax - xmin).
    asymptote_decrease / asymptote_increase: factors on the asymptote distance after an
        oscillating / a monotone pair of steps (Svanberg: 0.7 / 1.2).
    asymptote_margin: alpha/beta keep this fraction of the distance to the asymptotes (0.1).
    constraint_penalty: c_i, linear price of the artificial variables y_i (scalar or (m,));
        must exceed the constraint multipliers.
    constraint_penalty_quadratic: d_i, quadratic price of y_i (scalar or (m,)).
    a0, a: coefficients of the artificial variable z (1 and zeros give the standard MMA).
    objective_scale: factor on f0 and its gradient inside MMA; None = 1/|f0| of the first update.
    subproblem_tolerance: final barrier parameter eps of the interior-point subproblem solver.
    subproblem: "auto" (the default: the dual where it applies, i.e. a = 0, from
        :data:`DUAL_FROM_VARIABLES` variables on, else the interior point), "dual" or
        "interior-point".
    initial_asymptotes: "bounds" (Svanberg's, the default): the first two iterations' asymptotes
        lie s0 (xmax - xmin) from x; "move": s0 times the move-limited box
        [max(xmin, x - move (xmax - xmin)), min(xmax, x + move (xmax - xmin))] (TopOpt_in_PETSc's
        choice, which hands MMA that box as its bounds): a more careful first step.
    """

    def __init__(self, n_variables: int, n_constraints: int, lower_bound, upper_bound,
                 move_limit: float = 0.2, asymptote_init: float = 0.5,
                 asymptote_decrease: float = 0.7, asymptote_increase: float = 1.2,
                 asymptote_margin: float = 0.1, constraint_penalty=1000.0,
                 constraint_penalty_quadratic=1.0, a0: float = 1.0, a=0.0,
                 objective_scale: float | None = None, subproblem_tolerance: float = 1e-9,
                 initial_asymptotes: str = "bounds", subproblem: str = "auto"):
        n, m = int(n_variables), int(n_constraints)
        if initial_asymptotes not in ("bounds", "move"):
            raise OptimizationError(f"MMA initial_asymptotes must be 'bounds' or 'move', got "
                                    f"{initial_asymptotes!r}")
        self.initial_asymptotes = initial_asymptotes
        if n < 1 or m < 0:
            raise OptimizationError(
                f"MMA needs n_variables >= 1 and n_constraints >= 0, got {n_variables} and "
                f"{n_constraints}")
        self.n_variables, self.n_constraints = n, m
        self.lower_bound = _bound(lower_bound, n, "lower_bound")
        self.upper_bound = _bound(upper_bound, n, "upper_bound")
        narrow = np.flatnonzero(~(self.upper_bound > self.lower_bound))
        if narrow.size:
            j = int(narrow[0])
            raise OptimizationError(
                f"MMA needs upper_bound > lower_bound for every variable; variable {j} has "
                f"[{self.lower_bound[j]}, {self.upper_bound[j]}] ({narrow.size} such variables). "
                "Remove fixed variables from the design vector instead of pinning their bounds.")
        for name, value, low, high in (("move_limit", move_limit, 0.0, 1.0),
                                       ("asymptote_init", asymptote_init, 0.0, 10.0),
                                       ("asymptote_decrease", asymptote_decrease, 0.0, 1.0),
                                       ("asymptote_margin", asymptote_margin, 0.0, 1.0)):
            if not (low < float(value) <= high):
                raise OptimizationError(f"MMA {name} must lie in ({low}, {high}], got {value}")
        if not float(asymptote_increase) >= 1.0:
            raise OptimizationError(
                f"MMA asymptote_increase must be >= 1, got {asymptote_increase}")
        self.move_limit = float(move_limit)
        self.asymptote_init = float(asymptote_init)
        self.asymptote_decrease = float(asymptote_decrease)
        self.asymptote_increase = float(asymptote_increase)
        self.asymptote_margin = float(asymptote_margin)
        self.constraint_penalty = _vector(constraint_penalty, m, "constraint_penalty")
        self.constraint_penalty_quadratic = _vector(constraint_penalty_quadratic, m,
                                                    "constraint_penalty_quadratic")
        self.a = _vector(a, m, "a")
        self.a0 = float(a0)
        if self.a0 <= 0 or np.any(self.a < 0) or np.any(self.constraint_penalty < 0) \
                or np.any(self.constraint_penalty_quadratic < 0):
            raise OptimizationError(
                "MMA needs a0 > 0 and a, constraint_penalty, constraint_penalty_quadratic >= 0")
        if np.any(self.constraint_penalty + self.constraint_penalty_quadratic <= 0):
            raise OptimizationError("MMA needs constraint_penalty + "
                                    "constraint_penalty_quadratic > 0 for every constraint")
        if objective_scale is not None and not (np.isfinite(objective_scale)
                                                and objective_scale > 0):
            raise OptimizationError(
                f"MMA objective_scale must be a positive number or None, got {objective_scale}")
        self.auto_scale = objective_scale is None
        # nan until the first update fixes the automatic scale
        self.objective_scale = np.nan if objective_scale is None else float(objective_scale)
        if not (0 < float(subproblem_tolerance) < 1):
            raise OptimizationError(
                f"MMA subproblem_tolerance must lie in (0, 1), got {subproblem_tolerance}")
        self.subproblem_tolerance = float(subproblem_tolerance)
        if subproblem not in _SUBPROBLEM_SOLVERS:
            raise OptimizationError(f"MMA subproblem must be one of {_SUBPROBLEM_SOLVERS}, got "
                                    f"{subproblem!r}")
        if subproblem == "dual" and not _dual_applies(m, self.a):
            raise OptimizationError(
                f"MMA subproblem='dual' needs a = 0 (the standard problem, no z in the "
                f"constraints); this one has a = {self.a.tolist()}: use 'auto' or "
                "'interior-point'")
        self.subproblem = subproblem

        # History (nan = not yet known; used from the third update on).
        self.iteration = 0
        self.xold1 = np.full(n, np.nan)
        # The design two updates back enters the asymptotes only through the sign of
        # xold1 - xold2 (the trend test), so that sign is kept (int8: +1, -1, 0 also for not
        # known yet) instead of xold2 itself (7 B per variable less for the whole run)
        self.step_sign = np.zeros(n, dtype=np.int8)
        self.low = np.full(n, np.nan)
        self.upp = np.full(n, np.nan)
        # Diagnostics of the last update (not needed to resume).
        self.constraint_multipliers = np.zeros(m)
        self.artificial_y = np.zeros(m)
        self.artificial_z = 0.0
        self.subproblem_iterations = 0

    # ------------------------------------------------------------------ the update
    def update(self, x, objective, objective_gradient, constraints=None,
               constraint_gradients=None) -> np.ndarray:
        """One MMA step from design x: returns the new design (n,).

        x: current design (n,), within [lower_bound, upper_bound].
        objective: f0(x), float; objective_gradient: df0/dx (n,).
        constraints: f_i(x) (m,), feasible when <= 0; constraint_gradients: df_i/dx (m, n).
        """
        n, m = self.n_variables, self.n_constraints
        x = self._check_design(x)
        f0 = float(objective)
        df0 = _vector(objective_gradient, n, "objective_gradient", broadcast=False, copy=False)
        fval = np.zeros(0) if constraints is None and m == 0 else \
            _vector(constraints, m, "constraints", broadcast=False)
        if constraint_gradients is None and m == 0:
            dfdx = np.zeros((0, n))
        else:
            dfdx = np.asarray(constraint_gradients, dtype=float)
            if dfdx.ndim == 1 and m == 1:
                dfdx = dfdx[None, :]
            if dfdx.shape != (m, n):
                raise OptimizationError(
                    f"MMA constraint_gradients must have shape (m, n) = ({m}, {n}), got "
                    f"{dfdx.shape}")
            dfdx = np.ascontiguousarray(dfdx)
        if not np.isfinite(f0):
            raise OptimizationError(f"MMA objective is not finite: {objective}")
        for name, arr in (("objective_gradient", df0), ("constraints", fval),
                          ("constraint_gradients", dfdx)):
            if not np.all(np.isfinite(arr)):
                raise OptimizationError(
                    f"MMA {name} has {np.count_nonzero(~np.isfinite(arr))} non-finite entries; "
                    "check the analysis (singular stiffness?) before the update")

        if self.auto_scale and self.iteration == 0:
            scale = 1.0 / abs(f0) if f0 != 0 else 1.0
            self.objective_scale = float(np.clip(scale, *_SCALE_LIMITS))

        # Asymptotes, box and approximations in two passes over the variables: p, q for the
        # objective (p0, q0) and the constraints (P, Q); the objective gradient is scaled on
        # the fly. f0 itself only shifts the subproblem's objective.
        k = self.iteration + 1
        low, upp = np.empty(n), np.empty(n)
        span_low, span_upp = self.lower_bound, self.upper_bound
        if k <= 2 and self.initial_asymptotes == "move":
            reach = self.move_limit * (self.upper_bound - self.lower_bound)
            span_low = np.maximum(self.lower_bound, x - reach)
            span_upp = np.minimum(self.upper_bound, np.add(x, reach, out=reach), out=reach)
        _moving_asymptotes(x, self.xold1, self.step_sign, self.low, self.upp, span_low,
                           span_upp, k > 2, self.asymptote_init, self.asymptote_decrease,
                           self.asymptote_increase, low, upp)
        # the move-limited spans (2 vectors of n, first two updates) would otherwise stay
        # alive through the subproblem solve, the update's memory peak
        span_low = span_upp = reach = None
        alpha, beta, p0, q0 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        P, Q = np.empty((m, n)), np.empty((m, n))
        # b_i: constant part of constraint i moved to the right-hand side, f~_i(x) = f_i(x).
        b = _approximations(x, low, upp, self.lower_bound, self.upper_bound, df0,
                            self.objective_scale, dfdx, self.move_limit, self.asymptote_margin,
                            alpha, beta, p0, q0, P, Q) - fval

        if _dual_applies(m, self.a) and (self.subproblem == "dual" or (
                self.subproblem == "auto" and n >= DUAL_FROM_VARIABLES)):
            solve_dual = _solve_single_dual if m == 1 else _solve_multi_dual
            sub = solve_dual(p0, q0, P, Q, b, low, upp, alpha, beta, self.constraint_penalty,
                             self.constraint_penalty_quadratic, self.subproblem_tolerance)
        else:
            sub = _solve_subproblem(p0, q0, P, Q, b, low, upp, alpha, beta,
                                    self.a0, self.a, self.constraint_penalty,
                                    self.constraint_penalty_quadratic, self.subproblem_tolerance)
        row_scale = np.maximum(1.0, np.abs(fval))
        if not np.all(np.isfinite(sub.x)) and np.any(row_scale > 1.0):
            # A constraint violated by orders of magnitude (a collapsed stress design: f = 3.1e4,
            # gradients to 8e4, issue 13) asks for y ~ 1e4 against lam ~ c: the interior point
            # stalls with every x pressed to alpha or beta (steps ~1e-15) until x - alpha rounds
            # to 0 and the step is NaN. f_i / s_i <= 0 with s_i = max(1, |f_i|) is the same
            # constraint; its subproblem is well scaled (y 0.09 there) and gives a finite step
            # towards feasibility. Only as a retry: runs that never fail keep their digits.
            sub = _solve_subproblem(p0, q0, P / row_scale[:, None], Q / row_scale[:, None],
                                    b / row_scale, low, upp, alpha, beta, self.a0, self.a,
                                    self.constraint_penalty, self.constraint_penalty_quadratic,
                                    self.subproblem_tolerance)
            sub.lam = sub.lam / row_scale        # multipliers of the unscaled constraints
        # guard against round-off at the box edges
        x_new = np.clip(sub.x, alpha, beta, out=sub.x)
        if not np.all(np.isfinite(x_new)):
            # seen only with gradients spanning ~15 orders of magnitude (an iterate lands on
            # alpha exactly); refuse rather than hand back a NaN design. The state is untouched,
            # so the caller's last design stays valid.
            bad = np.flatnonzero(~np.isfinite(x_new))
            raise OptimizationError(
                f"MMA subproblem failed: non-finite new design at {bad.size} variable(s), first "
                f"{bad[:5].tolist()}; objective gradient spans |df0| = {np.abs(df0).min():.3g} to "
                f"{np.abs(df0).max():.3g}: scale the objective and constraints to order 1")

        _step_signs(x, self.xold1, self.step_sign)     # sign(x - xold1): the next trend test
        self.xold1 = x            # _check_design returned a private copy
        self.low, self.upp = low, upp
        self.iteration = k
        self.constraint_multipliers = sub.lam / self.objective_scale
        self.artificial_y = sub.y
        self.artificial_z = sub.z
        self.subproblem_iterations = sub.iterations
        return x_new

    def _check_design(self, x) -> np.ndarray:
        x = _vector(x, self.n_variables, "x", broadcast=False)
        if not np.all(np.isfinite(x)):
            raise OptimizationError("MMA design x has non-finite entries")
        slack = 1e-9 * (self.upper_bound - self.lower_bound)
        outside = np.flatnonzero((x < self.lower_bound - slack) | (x > self.upper_bound + slack))
        if outside.size:
            j = int(outside[0])
            raise OptimizationError(
                f"MMA design x lies outside its bounds at {outside.size} variables, e.g. "
                f"x[{j}] = {x[j]} not in [{self.lower_bound[j]}, {self.upper_bound[j]}]; "
                "start from (and keep) a design inside lower_bound..upper_bound")
        return np.clip(x, self.lower_bound, self.upper_bound)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to resume: options and history as numpy arrays / python scalars."""
        return {
            "version": _STATE_VERSION,
            "n_variables": self.n_variables,
            "n_constraints": self.n_constraints,
            "lower_bound": self.lower_bound.copy(),
            "upper_bound": self.upper_bound.copy(),
            "move_limit": self.move_limit,
            "asymptote_init": self.asymptote_init,
            "asymptote_decrease": self.asymptote_decrease,
            "asymptote_increase": self.asymptote_increase,
            "asymptote_margin": self.asymptote_margin,
            "constraint_penalty": self.constraint_penalty.copy(),
            "constraint_penalty_quadratic": self.constraint_penalty_quadratic.copy(),
            "a0": self.a0,
            "a": self.a.copy(),
            "auto_scale": self.auto_scale,
            "objective_scale": self.objective_scale,
            "subproblem_tolerance": self.subproblem_tolerance,
            "subproblem": self.subproblem,
            "move_box_asymptotes": self.initial_asymptotes == "move",   # plain types only
            "iteration": self.iteration,
            "xold1": self.xold1.copy(),
            "step_sign": self.step_sign.copy(),
            "low": self.low.copy(),
            "upp": self.upp.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "MMA":
        """A new optimizer that continues exactly where the one that wrote ``state`` stopped."""
        try:
            mma = cls(int(state["n_variables"]), int(state["n_constraints"]),
                      state["lower_bound"], state["upper_bound"],
                      move_limit=state["move_limit"], asymptote_init=state["asymptote_init"],
                      asymptote_decrease=state["asymptote_decrease"],
                      asymptote_increase=state["asymptote_increase"],
                      asymptote_margin=state["asymptote_margin"],
                      constraint_penalty=state["constraint_penalty"],
                      constraint_penalty_quadratic=state["constraint_penalty_quadratic"],
                      a0=state["a0"], a=state["a"],
                      subproblem_tolerance=state["subproblem_tolerance"],
                      initial_asymptotes="move" if state.get("move_box_asymptotes") else "bounds",
                      subproblem=str(state.get("subproblem", "auto")))
        except KeyError as err:
            raise OptimizationError(f"MMA state lacks the entry {err}; it was not written by "
                                    "MMA.state()") from None
        mma.load_state(state)
        return mma

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the history (and options) from ``state()`` of an optimizer of the same size."""
        if int(state.get("version", -1)) != _STATE_VERSION:
            raise OptimizationError(
                f"MMA state has version {state.get('version')}, this code reads {_STATE_VERSION}")
        try:
            self._load_state(state)
        except KeyError as err:
            raise OptimizationError(f"MMA state lacks the entry {err}; it was not written by "
                                    "MMA.state()") from None

    def _load_state(self, state: dict[str, Any]) -> None:
        n, m = self.n_variables, self.n_constraints
        if int(state["n_variables"]) != n or int(state["n_constraints"]) != m:
            raise OptimizationError(
                f"MMA state is for n={state['n_variables']}, m={state['n_constraints']} but this "
                f"optimizer has n={n}, m={m}; build it with MMA.from_state(state) instead")
        self.lower_bound = _bound(state["lower_bound"], n, "state lower_bound")
        self.upper_bound = _bound(state["upper_bound"], n, "state upper_bound")
        for name in ("move_limit", "asymptote_init", "asymptote_decrease", "asymptote_increase",
                     "asymptote_margin", "a0", "objective_scale", "subproblem_tolerance"):
            setattr(self, name, float(state[name]))
        for name in ("constraint_penalty", "constraint_penalty_quadratic", "a"):
            setattr(self, name, _vector(state[name], m, f"state {name}").copy())
        self.initial_asymptotes = "move" if state.get("move_box_asymptotes") else "bounds"
        subproblem = str(state.get("subproblem", "auto"))     # states before it: "auto"
        if subproblem not in _SUBPROBLEM_SOLVERS:
            raise OptimizationError(f"MMA state has subproblem {subproblem!r}, not one of "
                                    f"{_SUBPROBLEM_SOLVERS}")
        self.subproblem = subproblem
        self.auto_scale = bool(state["auto_scale"])
        self.iteration = int(state["iteration"])
        for name in ("xold1", "low", "upp"):
            setattr(self, name, _vector(state[name], n, f"state {name}", broadcast=False).copy())
        if "step_sign" in state:
            sign = np.asarray(state["step_sign"])
            if sign.shape != (n,) or not np.all(np.isin(sign, (-1, 0, 1))):
                raise OptimizationError(f"MMA state step_sign must be {n} values of -1, 0 or 1")
            self.step_sign = sign.astype(np.int8)
        else:       # a state written before the sign replaced xold2 (same version otherwise)
            xold2 = _vector(state["xold2"], n, "state xold2", broadcast=False)
            self.step_sign = np.zeros(n, dtype=np.int8)
            _step_signs(self.xold1, xold2, self.step_sign)


# ---------------------------------------------------------------------- subproblem solver
class _SubproblemSolution:
    """Primal-dual point of the MMA subproblem (see ``_solve_subproblem``)."""

    __slots__ = ("x", "y", "z", "lam", "iterations")

    def __init__(self, x, y, z, lam, iterations):
        self.x, self.y, self.z, self.lam, self.iterations = x, y, z, lam, iterations


def _solve_subproblem(p0, q0, P, Q, b, low, upp, alpha, beta, a0, a, c, d, eps_min,
                      max_newton=200, max_halvings=50, use_dual_system: bool | None = None,
                      single_kernels: bool = True) -> _SubproblemSolution:
    """Primal-dual interior-point solution of the MMA subproblem.

    p0, q0: (n,) objective coefficients; P, Q: (m, n) constraint coefficients; b: (m,) right-hand
    sides (constraint i reads sum_j P_ij/(upp_j-x_j) + Q_ij/(x_j-low_j) - a_i z - y_i <= b_i);
    low, upp, alpha, beta: (n,); a0 scalar; a, c, d: (m,).
    Unknowns: x (n,), y (m,), z; multipliers lam (m,) of the constraints, xsi/eta (n,) of
    x >= alpha / x <= beta, mu (m,) of y >= 0, zet of z >= 0, and slacks s (m,).
    use_dual_system: solve the (m+1) multiplier system (True) or the (n+1) primal one (False);
    None picks the smaller. Both give the same Newton step.
    single_kernels: with one constraint, use the vectorised m = 1 kernels (bit-identical results;
    False runs the general ones, for tests and timing).

    The per-variable unknowns x, xsi, eta and the step dx live in four (n,) arrays that the
    Numba kernels below update in place; the steps of xsi and eta are recomputed from dx where
    needed rather than stored. Everything of size m stays in NumPy here.
    """
    n = p0.size
    m = b.size
    if use_dual_system is None:
        use_dual_system = m < n
    x, xsi, eta, dx = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    _interior_start(alpha, beta, x, xsi, eta, dx)
    y = np.ones(m)
    z = 1.0
    lam = np.ones(m)
    mu = np.maximum(1.0, 0.5 * c)
    zet = 1.0
    s = np.ones(m)
    data = (p0, q0, P, Q, low, upp, alpha, beta)     # what every kernel reads
    total = 0
    # one constraint: kernels whose per-variable work vectorises (the same numbers, faster)
    single = m == 1 and use_dual_system and single_kernels
    schur_sums = _schur_sums_single if single else _schur_sums
    residual_sums = _residual_sums_single if single else _residual_sums

    def residual(step, y, z, lam, mu, zet, s, eps):
        """(2-norm, max-norm) of the relaxed KKT residual at x + step dx (xsi, eta alike), for
        the barrier parameter eps and for the next one, eps / 10."""
        sums = residual_sums(x, xsi, eta, dx, step, lam, *data, eps, eps * _EPS_FACTOR)
        constraint_values = sums[4:]
        eps_free_parts = (c + d * y - lam - mu,                                # d/dy
                       np.array([a0 - zet - a @ lam]),                      # d/dz
                       constraint_values - a * z - y + s - b)               # constraints + slack
        norms = []
        for barrier, squares_x, largest_x in ((eps, sums[0], sums[1]),
                                              (eps * _EPS_FACTOR, sums[2], sums[3])):
            parts = eps_free_parts + (mu * y - barrier, np.array([zet * z - barrier]),
                                   lam * s - barrier)                       # complementarity
            sq = squares_x + sum(float(r @ r) for r in parts)
            norms += [np.sqrt(sq), max([largest_x] + [float(np.max(np.abs(r)))
                                                      for r in parts if r.size])]
        return norms

    eps = 1.0
    norm2, normmax, next_norm2, next_normmax = residual(0.0, y, z, lam, mu, zet, s, eps)
    while eps > 0.5 * eps_min:
        newton = 0
        while normmax > 0.9 * eps and newton < max_newton:
            newton += 1
            # Right-hand sides with xsi, eta, mu, zet, s eliminated.
            ry = c + d * y - lam - eps / y
            rz = a0 - a @ lam - eps / z
            diag_y = d + mu / y
            diag_lamy = s / lam + 1.0 / diag_y
            if use_dual_system:
                # (m+1) system on (dlam, dz): Schur complement of the x block, whose sums over
                # the variables one kernel pass accumulates.
                sums = schur_sums(x, xsi, eta, lam, *data, eps)
                gvec, g_rx = sums[:m], sums[m:2 * m]
                upper = sums[2 * m:].reshape(m, m)          # upper triangle of G D_x^-1 G^T
                rlamy = gvec - a * z - y - b + eps / lam + ry / diag_y
                A = np.empty((m + 1, m + 1))
                A[:m, :m] = np.triu(upper) + np.triu(upper, 1).T
                A[:m, :m][np.diag_indices(m)] += diag_lamy
                A[:m, m] = a
                A[m, :m] = a
                A[m, m] = -zet / z
                sol = np.linalg.solve(A, np.concatenate([rlamy - g_rx, [rz]]))
                dlam, dz = sol[:m], sol[m]
                ratio_x = (_newton_dx_single(x, xsi, eta, lam, dlam, *data, eps, dx) if single
                           else _newton_dx(x, xsi, eta, lam, dlam, *data, eps, dx, True))
            else:
                # (n+1) system on (dx, dz): Schur complement of the lam block (n <= m: small).
                G, rx, diag_x = np.empty((m, n)), np.empty(n), np.empty(n)
                gvec = _x_block_arrays(x, xsi, eta, lam, *data, eps, G, rx, diag_x)
                rlamy = gvec - a * z - y - b + eps / lam + ry / diag_y
                G_over_l = G / diag_lamy[:, None]
                a_over_l = a / diag_lamy
                A = np.empty((n + 1, n + 1))
                A[:n, :n] = G.T @ G_over_l
                A[:n, :n][np.diag_indices(n)] += diag_x
                A[:n, n] = -G_over_l.T @ a
                A[n, :n] = A[:n, n]
                A[n, n] = zet / z + a @ a_over_l
                rhs = np.concatenate([-rx - G_over_l.T @ rlamy, [-rz + a_over_l @ rlamy]])
                sol = np.linalg.solve(A, rhs)
                dx[:] = sol[:n]
                dz = sol[n]
                dlam = (G @ dx - a * dz + rlamy) / diag_lamy
                ratio_x = _newton_dx(x, xsi, eta, lam, dlam, *data, eps, dx, False)
            dy = (dlam - ry) / diag_y
            dmu = -mu + (eps - mu * dy) / y
            dzet = -zet + (eps - zet * dz) / z
            ds = -s + (eps - s * dlam) / lam

            # Longest step that keeps every positive unknown positive and x inside (alpha, beta)
            # (ratio_x covers x, xsi and eta).
            ratio = max(1.0, _max_ratio(-1.01 * dy, y), -1.01 * dz / z,
                        _max_ratio(-1.01 * dlam, lam), ratio_x, _max_ratio(-1.01 * dmu, mu),
                        -1.01 * dzet / zet, _max_ratio(-1.01 * ds, s))
            step = 1.0 / ratio
            for _ in range(max_halvings):
                tried = step       # the step evaluated last: taken even if the halvings run out
                trial = (y + step * dy, z + step * dz, lam + step * dlam, mu + step * dmu,
                         zet + step * dzet, s + step * ds)
                norms = residual(step, *trial, eps)
                if norms[0] < norm2:
                    break
                step *= 0.5
            _advance(x, xsi, eta, dx, tried, alpha, beta, eps)
            y, z, lam, mu, zet, s = trial
            norm2, normmax, next_norm2, next_normmax = norms
        total += newton
        eps *= _EPS_FACTOR
        norm2, normmax = next_norm2, next_normmax
    return _SubproblemSolution(x, y, float(z), lam, total)


def _dual_applies(m: int, a: np.ndarray) -> bool:
    """Whether the subproblem can be solved through its dual: no z in the constraints (a = 0,
    the standard MMA), so z = 0 at the optimum (a0 > 0); any number of constraints."""
    return bool(np.all(a == 0.0))


#: the multi-constraint dual stops where every projected gradient component is below this
#: fraction of the sum of its constraint's terms (the interior point's last barrier leaves
#: slacks of eps / lam ~ 1e-9 in the constraints)
_DUAL_TOLERANCE = 1e-11
#: ... and its line search switches from W to |h| below this fraction (Newton's own region)
_DUAL_NEAR = 1e-4

#: subproblem="auto" takes the dual from this many variables on (where the interior point's
#: passes cost tenths of seconds to seconds per update); below, the interior point, whose cost
#: is negligible there. Both solve the same subproblem to the barrier eps, but runs whose
#: outcome hinges on the last digits (Heaviside continuation with manufacturing rules on a
#: small MBB: the minimum member size ended at 195, 291 or 504 for eps 1e-9, 1e-8, 1e-10 with
#: the interior point, at 554, 194, 198 with the dual) keep the results they had.
DUAL_FROM_VARIABLES = 20_000


def _solve_single_dual(p0, q0, P, Q, b, low, upp, alpha, beta, c, d, eps,
                       max_evaluations: int = 200) -> _SubproblemSolution:
    """The MMA subproblem with one constraint and a = 0, solved through its dual.

    For a multiplier lam >= 0 the Lagrangian separates: each x_j minimises
    (p0_j + lam P_j) / (upp_j - x) + (q0_j + lam Q_j) / (x - low_j) over [alpha_j, beta_j], in
    closed form (the unconstrained minimiser (sqrt(p) low + sqrt(q) upp) / (sqrt(p) + sqrt(q)),
    or a barrier distance ~eps inside the face it lies beyond: :func:`_dual_x`), and y
    minimises c y + d y^2 / 2 - lam y over y >= 0. The dual's derivative
    h(lam) = sum_j P_j / (upp_j - x_j) + Q_j / (x_j - low_j) - y - b is continuous and
    non-increasing, so lam* is its root on [0, inf) (or 0 where h(0) <= 0): bracketed by
    quadrupling, then found by the Illinois variant of regula falsi to the last bits of lam.
    Each evaluation of h is one pass over the variables reading 8 arrays; the interior-point
    method needs ~30 Newton steps of three passes over about twelve. Returns the same kind of
    solution as :func:`_solve_subproblem` (z = 0; iterations = evaluations of h).
    """
    p1, q1 = P[0], Q[0]
    c0, d0, b0 = float(c[0]), float(d[0]), float(b[0])
    x = np.empty(p0.size)
    evaluations = 0

    def h(lam):
        nonlocal evaluations
        evaluations += 1
        g = _dual_constraint_sum(lam, p0, q0, p1, q1, low, upp, alpha, beta, eps)
        return g - _artificial_y(lam, c0, d0) - b0

    def solution(lam, y):
        _dual_primal_x(lam, p0, q0, p1, q1, low, upp, alpha, beta, eps, x)
        return _SubproblemSolution(x, np.array([y]), 0.0, np.array([lam]), evaluations)

    h_low = h(0.0)
    if not h_low > 0.0:                   # the constraint holds without a price
        return solution(0.0, 0.0)
    if d0 == 0.0:
        # y is free at lam = c (linear price): the dual lives on [0, c]; if the constraint
        # still cannot be met there, y takes up what is left
        h_c = h(c0)
        if h_c >= 0.0:
            return solution(c0, h_c)
        lam_low, lam_high, h_high = 0.0, c0, h_c
    else:
        lam_low, lam_high = 0.0, 1.0
        h_high = h(lam_high)
        while h_high > 0.0 and evaluations < max_evaluations:
            lam_low, h_low = lam_high, h_high
            lam_high *= 4.0
            h_high = h(lam_high)
    # Illinois regula falsi on [lam_low, lam_high], h(lam_low) > 0 >= h(lam_high): the root
    # to the last bits of lam; the constraint's own side (h <= 0) is returned
    side = 0
    while evaluations < max_evaluations and h_high != 0.0 \
            and lam_high - lam_low > 4.0 * np.finfo(float).eps * lam_high:
        lam = (lam_low * h_high - lam_high * h_low) / (h_high - h_low)
        if not lam_low < lam < lam_high:
            lam = 0.5 * (lam_low + lam_high)
        value = h(lam)
        if value > 0.0:
            lam_low, h_low = lam, value
            if side == 1:
                h_high *= 0.5
            side = 1
        else:
            lam_high, h_high = lam, value
            if side == -1:
                h_low *= 0.5
            side = -1
    return solution(lam_high, _artificial_y(lam_high, c0, d0))


def _solve_multi_dual(p0, q0, P, Q, b, low, upp, alpha, beta, c, d, eps,
                      max_newton: int = 50) -> _SubproblemSolution:
    """The MMA subproblem with a = 0 and any number m of constraints, solved through its dual.

    As in :func:`_solve_single_dual`, for multipliers lam >= 0 (m,) the Lagrangian separates:
    x_j(lam) in closed form, kept a barrier distance off the faces
    (:func:`_continuous_minimiser`), y_i = max(0, (lam_i - c_i) / d_i) (with d_i = 0,
    lam_i <= c_i and y_i = 0 below it). The dual
    W(lam) = sum_j (p0_j + lam P_j) / (upp_j - x_j) + (q0_j + lam Q_j) / (x_j - low_j)
    + sum_i (c_i y_i + d_i y_i^2 / 2 - lam_i y_i) - lam b
    is concave with the continuous gradient h(lam) = g(x(lam)) - y - b and the Hessian
    -sum_j G_j G_j^T / L''_j over the variables free in their box (G_j: the constraints'
    slopes in x_j, L''_j: the Lagrangian's curvature) minus diag(1 / d_i) from lam_i = c_i on.
    It is maximised over 0 <= lam (<= c_i where d_i = 0) by projected Newton steps (Bertsekas
    1982: multipliers at a bound whose gradient points out of the box are held there, the
    others take the Newton step of their block), steps capped at four times the largest
    multiplier (or 1) and stopped at lam_i = c_i, with a backtracking line search on W far from
    the root and on |h| near it, to a projected gradient of ``_DUAL_TOLERANCE`` (1e-11) of the
    constraint's terms. One pass over the variables per trial gives W, h and the Hessian
    (1 + 2m + m^2 sums): 6-18 passes on the subproblems of 12k- and 63k-tet min-mass runs with
    three compliance limits and on random ones (the interior point: 27-64 Newton steps of three
    passes). m = 0: one pass.
    Returns the same kind of solution as :func:`_solve_subproblem` (z = 0; iterations = passes).
    """
    m = b.size
    upper = np.where(d > 0.0, np.inf, c)              # d_i = 0: W is -inf beyond lam_i = c_i
    x = np.empty(p0.size)
    passes = 0

    def evaluate(lam):
        nonlocal passes
        passes += 1
        sums = _dual_sums(lam, p0, q0, P, Q, low, upp, alpha, beta, eps)
        y = np.where(d > 0.0, np.maximum(0.0, (lam - c) / np.where(d > 0.0, d, 1.0)), 0.0)
        value = sums[0] + float(c @ y + 0.5 * (d * y) @ y - lam @ y - lam @ b)
        gradient = sums[1:1 + m] - y - b
        scale = sums[1 + m:1 + 2 * m] + y + np.abs(b)
        curvature = sums[1 + 2 * m:].reshape(m, m)       # upper triangle of -Hessian
        curvature = np.triu(curvature) + np.triu(curvature, 1).T
        # y's curvature from lam_i = c_i on (at c_i itself too: the step that leaves it upwards
        # needs it)
        curvature[np.diag_indices(m)] += np.where((d > 0.0) & (lam >= c),
                                                  1.0 / np.where(d > 0.0, d, 1.0), 0.0)
        return value, gradient, scale, curvature, y

    def projected_gradient(lam, gradient):
        """h with the components of multipliers held at a bound (h pointing out) set to 0."""
        held = ((lam <= 0.0) & (gradient <= 0.0)) | ((lam >= upper) & (gradient >= 0.0))
        return np.where(held, 0.0, gradient), held

    lam = np.zeros(m)
    value, gradient, scale, curvature, y = evaluate(lam)
    # Far from the root the line search asks W to rise (Armijo); near it (projected gradient
    # below _DUAL_NEAR of its terms) it asks the projected gradient to shrink: there W's
    # changes, ~|h| |step|, fall below what x(lam) - continuous, but a barrier's stand-in for
    # the Lagrangian's exact minimiser at the faces - makes W differ from the function whose
    # gradient h is (~1e-11 to 1e-10 seen on the 12k and 63k brackets: W rejected Newton steps
    # that took |h| from 4e-6 to 4e-9 of its terms), while h itself stays exact. Never back:
    # mixing the two tests let a step accepted by one be undone by the other.
    near = False
    for _ in range(max_newton):
        projected, held = projected_gradient(lam, gradient)
        relative = np.abs(projected) / scale
        if np.all(relative <= _DUAL_TOLERANCE):
            break
        near = near or bool(np.all(relative <= _DUAL_NEAR))
        free = ~held
        step = np.zeros(m)
        block = curvature[np.ix_(free, free)]
        largest = float(np.max(np.abs(np.diag(block)), initial=0.0))
        # where few variables are free (at lam = 0 often none) the curvature says little: no
        # multiplier moves by more than four times the largest one (or 1) in one step, as the
        # one-constraint dual brackets its root by quadrupling from 1
        reach = max(1.0, 4.0 * float(np.max(lam, initial=0.0)))
        if largest > 0.0:
            # a multiplier whose constraint no free variable feels has no curvature: the
            # regularisation makes its step long, the reach and the line search cut it back
            step[free] = np.linalg.solve(block + 1e-12 * largest * np.eye(block.shape[0]),
                                         gradient[free])
        else:
            # no free variable at all (every x pressed against a face): W is linear here, so
            # go the whole reach up its gradient (a unit Newton-like step would crawl)
            step[free] = gradient[free] * (reach / float(np.max(np.abs(gradient[free]))))
        longest = float(np.max(np.abs(step), initial=0.0)) / reach
        if longest > 1.0:
            step /= longest
        # W's curvature jumps at lam_i = c_i (y_i enters): a step from below stops there, and
        # the next one continues with y's curvature (from far below, the little curvature of
        # the x part would throw it far beyond)
        box = np.where((d > 0.0) & (lam < c), c, upper)
        merit = float(np.sum(relative ** 2))
        t = 1.0
        accepted = False
        while True:
            trial = np.clip(lam + t * step, 0.0, box)
            trial_value, trial_gradient, trial_scale, trial_curvature, trial_y = evaluate(trial)
            if near:
                trial_projected = projected_gradient(trial, trial_gradient)[0]
                accepted = float(np.sum((trial_projected / trial_scale) ** 2)) \
                    <= (1.0 - 1e-4 * t) * merit
            else:
                accepted = trial_value >= value + 1e-4 * float(gradient @ (trial - lam))
            if accepted:
                break
            t *= 0.5
            if t < (1.0 / 256.0 if near else 1e-3):
                break
        if not accepted:
            if near:
                # h no longer falls along the Newton step: the curvature misses the variables
                # kept off the faces, whose share of h is at this level (seen: 4e-9 of the
                # terms on the 12k bracket, where 20 more halvings won 2 digits)
                break
            # W's line search crawls: its changes are down to W's inconsistency (or rounding),
            # where it could accept steps of no use; go on with h alone
            near = True
            continue
        if np.array_equal(trial, lam):
            break
        lam = trial
        value, gradient, scale, curvature, y = (trial_value, trial_gradient, trial_scale,
                                                trial_curvature, trial_y)
    _dual_primal_x_multi(lam, p0, q0, P, Q, low, upp, alpha, beta, eps, x)
    # a linear price (d_i = 0) reached: y_i takes up what the constraint still lacks there
    short = (d == 0.0) & (lam >= upper) & (gradient > 0.0)
    y = np.where(short, y + gradient, y)
    return _SubproblemSolution(x, y, 0.0, lam, passes)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _dual_sums(lam, p0, q0, P, Q, low, upp, alpha, beta, eps):
    """(1 + 2m + m^2,) sums over the variables at the Lagrangian's minimiser x(lam): the
    Lagrangian's x part, the constraint terms g_i, their absolute sizes, and the upper triangle
    (row-major, m x m) of sum over free variables of G_ij G_kj / L''_j; by fixed blocks."""
    n = p0.size
    m = lam.size
    width = 1 + 2 * m + m * m
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros((n_blocks, width))
    for block in numba.prange(n_blocks):
        slopes = np.empty(m)
        for j in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            plam = p0[j]
            qlam = q0[j]
            for i in range(m):
                plam += lam[i] * P[i, j]
                qlam += lam[i] * Q[i, j]
            xj, free = _continuous_minimiser(plam, qlam, low[j], upp[j], alpha[j], beta[j], eps)
            ux = 1.0 / (upp[j] - xj)
            xl = 1.0 / (xj - low[j])
            partial[block, 0] += plam * ux + qlam * xl
            for i in range(m):
                term_p = P[i, j] * ux
                term_q = Q[i, j] * xl
                partial[block, 1 + i] += term_p + term_q
                partial[block, 1 + m + i] += abs(term_p) + abs(term_q)
                slopes[i] = term_p * ux - term_q * xl
            if free:
                inverse = 1.0 / (2.0 * (plam * ux * ux * ux + qlam * xl * xl * xl))
                for i in range(m):
                    for k in range(i, m):
                        partial[block, 1 + 2 * m + i * m + k] += slopes[i] * slopes[k] * inverse
    result = np.zeros(width)
    for block in range(n_blocks):
        for k in range(width):
            result[k] += partial[block, k]
    return result


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _dual_primal_x_multi(lam, p0, q0, P, Q, low, upp, alpha, beta, eps, x):
    """x (n,) = the Lagrangian's minimiser for multipliers lam (m,)."""
    m = lam.size
    for j in numba.prange(p0.size):
        plam = p0[j]
        qlam = q0[j]
        for i in range(m):
            plam += lam[i] * P[i, j]
            qlam += lam[i] * Q[i, j]
        x[j] = _continuous_minimiser(plam, qlam, low[j], upp[j], alpha[j], beta[j], eps)[0]


def _artificial_y(lam: float, c: float, d: float) -> float:
    """argmin over y >= 0 of c y + d y^2 / 2 - lam y (d = 0: 0 below the price c)."""
    if d > 0.0:
        return max(0.0, (lam - c) / d)
    return 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _lagrangian_minimiser(plam, qlam, low, upp, alpha, beta, eps):
    """(x, free): the x in [alpha, beta] minimising plam / (upp - x) + qlam / (x - low), kept off
    the box's faces as the interior point's last barrier (eps) keeps it; free is True where the
    closed-form minimiser lies inside the box.

    Inside the box this is the closed-form minimiser. Where that lies outside, the exact
    answer is the face; the interior point's is the root of psi + psi' d - eps / d = 0 for the
    distance d from the face (psi, psi': the Lagrangian's slope, pointing into the box, and its
    curvature there; the barrier of the face, eps / d, to the order that matters):
    d = 2 eps / (psi + sqrt(psi^2 + 4 psi' eps)), at most sqrt(eps / psi'). We return that: a
    variable at exactly 0 froze some design chains (the MBB under an overhang filter ended at
    2.2x the free design's compliance instead of 1.1-1.2x); a hair inside it can come back."""
    sp = np.sqrt(plam)
    sq = np.sqrt(qlam)
    xj = (sp * low + sq * upp) / (sp + sq)
    if alpha < xj < beta:
        return xj, True
    face = alpha if xj <= alpha else beta
    distance = _barrier_distance(plam, qlam, face, low, upp, alpha, beta, eps)
    return (face + distance if xj <= alpha else face - distance), False


@numba.njit(cache=True, error_model="numpy", inline="always")
def _barrier_distance(plam, qlam, face, low, upp, alpha, beta, eps):
    """Distance from ``face`` (alpha or beta) at which the barrier eps balances the slope of
    plam / (upp - x) + qlam / (x - low) there: 2 eps / (psi + sqrt(psi^2 + 4 psi' eps)), at most
    half the box (psi, psi': the slope's size and the curvature at the face)."""
    ux = upp - face
    xl = face - low
    slope = plam / (ux * ux) - qlam / (xl * xl)
    curvature = 2.0 * (plam / (ux * ux * ux) + qlam / (xl * xl * xl))
    inward = abs(slope)
    return min(2.0 * eps / (inward + np.sqrt(inward * inward + 4.0 * curvature * eps)),
               0.5 * (beta - alpha))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _continuous_minimiser(plam, qlam, low, upp, alpha, beta, eps):
    """(x, free): as :func:`_lagrangian_minimiser`, but continuous in plam, qlam: the closed-form
    minimiser clipped to [alpha + d, beta - d], d the barrier distance at the nearer face
    (a continuous function of the Lagrangian's slope and curvature there, at most
    sqrt(eps / curvature)). :func:`_lagrangian_minimiser` jumps by up to that distance where
    the closed form crosses a face; regula falsi on one multiplier does not mind, the Newton
    steps on several need a continuous gradient of the dual. free: x is the closed form."""
    sp = np.sqrt(plam)
    sq = np.sqrt(qlam)
    xj = (sp * low + sq * upp) / (sp + sq)
    lower_face = xj <= 0.5 * (alpha + beta)
    face = alpha if lower_face else beta
    distance = _barrier_distance(plam, qlam, face, low, upp, alpha, beta, eps)
    if lower_face:
        if xj > alpha + distance:
            return xj, True
        return alpha + distance, False
    if xj < beta - distance:
        return xj, True
    return beta - distance, False


@numba.njit(cache=True, error_model="numpy", inline="always")
def _dual_x(j, lam, p0, q0, p1, q1, low, upp, alpha, beta, eps):
    """x_j minimising the Lagrangian of the one-constraint subproblem for multiplier lam
    (:func:`_lagrangian_minimiser`)."""
    return _lagrangian_minimiser(p0[j] + lam * p1[j], q0[j] + lam * q1[j], low[j], upp[j],
                                 alpha[j], beta[j], eps)[0]


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _dual_constraint_sum(lam, p0, q0, p1, q1, low, upp, alpha, beta, eps):
    """sum_j p1_j / (upp_j - x_j) + q1_j / (x_j - low_j) at the Lagrangian's minimiser x(lam),
    summed over fixed blocks of variables (the same number whatever the thread count)."""
    n = p0.size
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros(n_blocks)
    for block in numba.prange(n_blocks):
        total = 0.0
        for j in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            xj = _dual_x(j, lam, p0, q0, p1, q1, low, upp, alpha, beta, eps)
            total += p1[j] / (upp[j] - xj) + q1[j] / (xj - low[j])
        partial[block] = total
    result = 0.0
    for block in range(n_blocks):
        result += partial[block]
    return result


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _dual_primal_x(lam, p0, q0, p1, q1, low, upp, alpha, beta, eps, x):
    """x (n,) = the Lagrangian's minimiser for multiplier lam (:func:`_dual_x`)."""
    for j in numba.prange(p0.size):
        x[j] = _dual_x(j, lam, p0, q0, p1, q1, low, upp, alpha, beta, eps)


def _max_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """max(num / den) or 0 for empty arrays."""
    return float(np.max(num / den)) if num.size else 0.0


# ---------------------------------------------------------------------- kernels
# Every length-n array is allocated by NumPy outside the kernels (so tracemalloc sees it); the
# kernels only allocate per-block partial sums of size O(m^2). Sums over the variables go
# block by block with a fixed block size, so the result does not depend on the thread count.
# error_model="numpy": a division by zero gives inf/nan as in NumPy instead of raising, and
# keeps the loops free of checks. The per-variable helpers are inlined (inline="always"): a
# called function takes reference counts on its array arguments at every call, and those
# atomic updates from both threads made the kernels four times slower.
_BLOCK = 4096


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _moving_asymptotes(x, xold1, step_sign, low_old, upp_old, lower, upper, adapt, init,
                       decrease, increase, low, upp):
    """low, upp (n,) for design x: at s0 = init spans (adapt False) or moved by the trend.

    step_sign (n,) int8: sign(xold1 - xold2); the trend is the sign of (x - xold1) times it."""
    for j in numba.prange(x.size):
        span = upper[j] - lower[j]
        if not adapt:
            low[j] = x[j] - init * span
            upp[j] = x[j] + init * span
            continue
        trend = (x[j] - xold1[j]) * step_sign[j]
        factor = 1.0
        if trend > 0.0:
            factor = increase
        elif trend < 0.0:
            factor = decrease
        moved_low = x[j] - factor * (xold1[j] - low_old[j])
        moved_upp = x[j] + factor * (upp_old[j] - xold1[j])
        low[j] = min(max(moved_low, x[j] - _ASYMPTOTE_MAX_DISTANCE * span),
                     x[j] - _ASYMPTOTE_MIN_DISTANCE * span)
        upp[j] = min(max(moved_upp, x[j] + _ASYMPTOTE_MIN_DISTANCE * span),
                     x[j] + _ASYMPTOTE_MAX_DISTANCE * span)


@numba.njit(cache=True, parallel=True)
def _step_signs(x, xold, out):
    """out = sign(x - xold) as int8 (+1, -1; 0 for equal or not a number), in place."""
    for j in numba.prange(x.size):
        d = x[j] - xold[j]
        out[j] = 1 if d > 0.0 else (-1 if d < 0.0 else 0)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _approximations(x, low, upp, lower, upper, df0, objective_scale, dfdx, move, margin,
                    alpha, beta, p0, q0, P, Q):
    """Fill the subproblem box alpha, beta and the coefficients p0, q0 (n,), P, Q (m, n);
    return sum_j P_ij / (upp_j - x_j) + Q_ij / (x_j - low_j), the approximations at x (m,)."""
    n, m = x.size, dfdx.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros((n_blocks, m))
    for block in numba.prange(n_blocks):
        for j in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            span = upper[j] - lower[j]
            alpha[j] = max(max(lower[j], low[j] + margin * (x[j] - low[j])), x[j] - move * span)
            beta[j] = min(min(upper[j], upp[j] - margin * (upp[j] - x[j])), x[j] + move * span)
            ux = upp[j] - x[j]
            xl = x[j] - low[j]
            ux2 = ux * ux
            xl2 = xl * xl
            regular = _RAA0 / max(span, _MIN_RANGE)
            gradient = df0[j] * objective_scale
            positive, negative = max(gradient, 0.0), max(-gradient, 0.0)
            p0[j] = ux2 * (1.001 * positive + 0.001 * negative + regular)
            q0[j] = xl2 * (0.001 * positive + 1.001 * negative + regular)
            uxinv = 1.0 / ux
            xlinv = 1.0 / xl
            for i in range(m):
                positive, negative = max(dfdx[i, j], 0.0), max(-dfdx[i, j], 0.0)
                P[i, j] = ux2 * (1.001 * positive + 0.001 * negative + regular)
                Q[i, j] = xl2 * (0.001 * positive + 1.001 * negative + regular)
                partial[block, i] += P[i, j] * uxinv + Q[i, j] * xlinv
    return _sum_rows(partial)


@numba.njit(cache=True)
def _sum_rows(partial):
    """Column sums of the per-block partials, block after block."""
    total = np.zeros(partial.shape[1])
    for block in range(partial.shape[0]):
        total += partial[block]
    return total


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _interior_start(alpha, beta, x, xsi, eta, dx):
    """Starting point: x mid-box, bound multipliers at least 1, no step yet."""
    for j in numba.prange(x.size):
        x[j] = 0.5 * (alpha[j] + beta[j])
        xsi[j] = max(1.0 / (x[j] - alpha[j]), 1.0)
        eta[j] = max(1.0 / (beta[j] - x[j]), 1.0)
        dx[j] = 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _lagrangian_coefficients(j, lam, p0, q0, P, Q):
    """p0_j + sum_i lam_i P_ij and q0_j + sum_i lam_i Q_ij."""
    weighted_p = 0.0
    weighted_q = 0.0
    for i in range(P.shape[0]):
        weighted_p += lam[i] * P[i, j]
        weighted_q += lam[i] * Q[i, j]
    return p0[j] + weighted_p, q0[j] + weighted_q


@numba.njit(cache=True, error_model="numpy", inline="always")
def _x_block(j, x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps):
    """Variable j's row of the Newton system: 1/(upp-x), 1/(x-low), their squares,
    1/(x-alpha), 1/(beta-x), the right-hand side rx and the diagonal D_x (xsi, eta eliminated).
    Each reciprocal is formed once and multiplied (divisions bound the speed of these loops)."""
    uxinv1 = 1.0 / (upp[j] - x[j])
    xlinv1 = 1.0 / (x[j] - low[j])
    uxinv2 = uxinv1 * uxinv1
    xlinv2 = xlinv1 * xlinv1
    dxa_inv = 1.0 / (x[j] - alpha[j])
    dbx_inv = 1.0 / (beta[j] - x[j])
    plam, qlam = _lagrangian_coefficients(j, lam, p0, q0, P, Q)
    rx = plam * uxinv2 - qlam * xlinv2 - eps * dxa_inv + eps * dbx_inv
    diag_x = (2.0 * (plam * uxinv2 * uxinv1 + qlam * xlinv2 * xlinv1)
              + xsi[j] * dxa_inv + eta[j] * dbx_inv)
    return uxinv1, xlinv1, uxinv2, xlinv2, dxa_inv, dbx_inv, rx, diag_x


@numba.njit(cache=True, error_model="numpy", inline="always")
def _bound_multiplier_steps(xsij, etaj, dxj, dxa_inv, dbx_inv, eps):
    """Steps of xsi_j and eta_j implied by the step dx_j (from the complementarity rows)."""
    return -xsij + (eps - xsij * dxj) * dxa_inv, -etaj + (eps + etaj * dxj) * dbx_inv


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _schur_sums(x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps):
    """Sums over the variables for the (m+1) Newton system, concatenated: the approximations
    sum_j P_ij/(upp-x) + Q_ij/(x-low) (m,), G D_x^-1 rx (m,) and G D_x^-1 G^T (m, m, upper
    triangle filled), with G_ij = P_ij/(upp-x)^2 - Q_ij/(x-low)^2."""
    n, m = x.size, P.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros((n_blocks, 2 * m + m * m))
    for block in numba.prange(n_blocks):
        g = np.empty(m)
        acc = partial[block]
        for j in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            uxinv1, xlinv1, uxinv2, xlinv2, _, _, rx, diag_x = _x_block(
                j, x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps)
            diag_x_inv = 1.0 / diag_x
            for i in range(m):
                g[i] = P[i, j] * uxinv2 - Q[i, j] * xlinv2
                acc[i] += P[i, j] * uxinv1 + Q[i, j] * xlinv1
            for i in range(m):
                g_over_d = g[i] * diag_x_inv
                acc[m + i] += g_over_d * rx
                for k in range(i, m):
                    acc[2 * m + i * m + k] += g_over_d * g[k]
    return _sum_rows(partial)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _newton_dx(x, xsi, eta, lam, dlam, p0, q0, P, Q, low, upp, alpha, beta, eps, dx, solve):
    """Step of x from dlam, dx = -(rx + G^T dlam) / D_x, written into dx (only when solve; the
    (n+1) system gives dx itself). Returns the largest fraction-to-boundary ratio of the steps
    of x (towards alpha and beta), xsi and eta: a step longer than 1/ratio leaves the interior."""
    n, m = x.size, P.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.full(n_blocks, -np.inf)
    for block in numba.prange(n_blocks):
        largest = -np.inf
        for j in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            uxinv1, xlinv1, uxinv2, xlinv2, dxa_inv, dbx_inv, rx, diag_x = _x_block(
                j, x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps)
            if solve:
                gt_dlam = 0.0
                for i in range(m):
                    gt_dlam += (P[i, j] * uxinv2 - Q[i, j] * xlinv2) * dlam[i]
                dx[j] = -(rx + gt_dlam) / diag_x
            dxsi, deta = _bound_multiplier_steps(xsi[j], eta[j], dx[j], dxa_inv, dbx_inv, eps)
            largest = max(largest, (-1.01 * dxsi) / xsi[j], (-1.01 * deta) / eta[j],
                          (-1.01 * dx[j]) * dxa_inv, (1.01 * dx[j]) * dbx_inv)
        partial[block] = largest
    return partial.max()


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _residual_sums(x, xsi, eta, dx, step, lam, p0, q0, P, Q, low, upp, alpha, beta, eps,
                   eps_next):
    """The per-variable part of the relaxed KKT residual at x + step dx (xsi and eta moved by
    their implied steps; step 0 is the current point): [sum of squares, largest magnitude,
    the same two for the barrier parameter eps_next, then the approximations
    sum_j P_ij/(upp-x) + Q_ij/(x-low) (m)]. The eps_next pair is the residual the next
    barrier level starts from if this point ends the current one, at the cost of a few
    multiplications instead of another pass."""
    n, m = x.size, P.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros((n_blocks, 4 + m))
    for block in numba.prange(n_blocks):
        acc = partial[block]
        squares = 0.0
        largest = 0.0
        squares_next = 0.0
        largest_next = 0.0
        for j in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            xj, xsij, etaj = x[j], xsi[j], eta[j]
            if step != 0.0:
                dxsi, deta = _bound_multiplier_steps(xsij, etaj, dx[j], 1.0 / (xj - alpha[j]),
                                                     1.0 / (beta[j] - xj), eps)
                xj = xj + step * dx[j]
                xsij = xsij + step * dxsi
                etaj = etaj + step * deta
            uxinv = 1.0 / (upp[j] - xj)
            xlinv = 1.0 / (xj - low[j])
            plam, qlam = _lagrangian_coefficients(j, lam, p0, q0, P, Q)
            r_x = plam * (uxinv * uxinv) - qlam * (xlinv * xlinv) - xsij + etaj   # d/dx of L
            xsi_gap = xsij * (xj - alpha[j])                                      # complementarity
            eta_gap = etaj * (beta[j] - xj)
            r_xsi, r_eta = xsi_gap - eps, eta_gap - eps
            squares += r_x * r_x + r_xsi * r_xsi + r_eta * r_eta
            largest = max(largest, abs(r_x), abs(r_xsi), abs(r_eta))
            r_xsi, r_eta = xsi_gap - eps_next, eta_gap - eps_next
            squares_next += r_x * r_x + r_xsi * r_xsi + r_eta * r_eta
            largest_next = max(largest_next, abs(r_x), abs(r_xsi), abs(r_eta))
            for i in range(m):
                acc[4 + i] += P[i, j] * uxinv + Q[i, j] * xlinv
        acc[0] = squares
        acc[1] = largest
        acc[2] = squares_next
        acc[3] = largest_next
    total = _sum_rows(partial)
    total[1] = partial[:, 1].max()
    total[3] = partial[:, 3].max()
    return total


# ---- one constraint (m = 1, minimize_compliance's volume): the same sums, vectorised.
# The general kernels above loop over the constraints inside the loop over the variables, and
# their running sums are loop-carried: LLVM keeps both scalar (it may not reorder floating-point
# additions), so a pass costs ~23 ns per variable on one core, divisions one at a time. For m = 1
# each block below first forms every variable's terms in a loop with no carried value, which the
# loop vectoriser turns into SIMD divisions and products, then adds the stored terms in variable
# order: the same operations in the same order as the general kernels, so the sums, the Newton
# steps and every design are bit for bit those of the general path (tests/test_mma.py).


@numba.njit(cache=True, error_model="numpy", inline="always")
def _x_block_single(j, x, xsi, eta, lam0, p0, q0, p, q, low, upp, alpha, beta, eps):
    """_x_block for one constraint (p, q: the constraint's rows of P, Q), same operations."""
    uxinv1 = 1.0 / (upp[j] - x[j])
    xlinv1 = 1.0 / (x[j] - low[j])
    uxinv2 = uxinv1 * uxinv1
    xlinv2 = xlinv1 * xlinv1
    dxa_inv = 1.0 / (x[j] - alpha[j])
    dbx_inv = 1.0 / (beta[j] - x[j])
    # 0.0 + ...: the general kernel's sum starts from 0.0 (it turns -0.0 into +0.0)
    plam = p0[j] + (0.0 + lam0 * p[j])
    qlam = q0[j] + (0.0 + lam0 * q[j])
    rx = plam * uxinv2 - qlam * xlinv2 - eps * dxa_inv + eps * dbx_inv
    diag_x = (2.0 * (plam * uxinv2 * uxinv1 + qlam * xlinv2 * xlinv1)
              + xsi[j] * dxa_inv + eta[j] * dbx_inv)
    return uxinv1, xlinv1, uxinv2, xlinv2, dxa_inv, dbx_inv, rx, diag_x


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _schur_sums_single(x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps):
    """_schur_sums for m = 1, bit for bit: [approximation, G D_x^-1 rx, G D_x^-1 G^T]."""
    n = x.size
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros((n_blocks, 3))
    lam0 = lam[0]
    p = P[0]
    q = Q[0]
    for block in numba.prange(n_blocks):
        start = block * _BLOCK
        size = min(n, start + _BLOCK) - start
        approx = np.empty(size)
        g_rx = np.empty(size)
        g_g = np.empty(size)
        for k in range(size):
            j = start + k
            uxinv1, xlinv1, uxinv2, xlinv2, _, _, rx, diag_x = _x_block_single(
                j, x, xsi, eta, lam0, p0, q0, p, q, low, upp, alpha, beta, eps)
            diag_x_inv = 1.0 / diag_x
            g = p[j] * uxinv2 - q[j] * xlinv2
            approx[k] = p[j] * uxinv1 + q[j] * xlinv1
            g_over_d = g * diag_x_inv
            g_rx[k] = g_over_d * rx
            g_g[k] = g_over_d * g
        acc0 = 0.0
        acc1 = 0.0
        acc2 = 0.0
        for k in range(size):
            acc0 += approx[k]
            acc1 += g_rx[k]
            acc2 += g_g[k]
        partial[block, 0] = acc0
        partial[block, 1] = acc1
        partial[block, 2] = acc2
    return _sum_rows(partial)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _newton_dx_single(x, xsi, eta, lam, dlam, p0, q0, P, Q, low, upp, alpha, beta, eps, dx):
    """_newton_dx(..., solve=True) for m = 1, bit for bit: dx written, the largest ratio back."""
    n = x.size
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.full(n_blocks, -np.inf)
    lam0 = lam[0]
    dlam0 = dlam[0]
    p = P[0]
    q = Q[0]
    for block in numba.prange(n_blocks):
        start = block * _BLOCK
        size = min(n, start + _BLOCK) - start
        ratios = np.empty(size)
        for k in range(size):
            j = start + k
            uxinv1, xlinv1, uxinv2, xlinv2, dxa_inv, dbx_inv, rx, diag_x = _x_block_single(
                j, x, xsi, eta, lam0, p0, q0, p, q, low, upp, alpha, beta, eps)
            gt_dlam = 0.0 + (p[j] * uxinv2 - q[j] * xlinv2) * dlam0
            step = -(rx + gt_dlam) / diag_x
            dx[j] = step
            dxsi, deta = _bound_multiplier_steps(xsi[j], eta[j], step, dxa_inv, dbx_inv, eps)
            ratios[k] = max((-1.01 * dxsi) / xsi[j], (-1.01 * deta) / eta[j],
                            (-1.01 * step) * dxa_inv, (1.01 * step) * dbx_inv)
        largest = -np.inf
        for k in range(size):
            largest = max(largest, ratios[k])
        partial[block] = largest
    return partial.max()


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _residual_sums_single(x, xsi, eta, dx, step, lam, p0, q0, P, Q, low, upp, alpha, beta, eps,
                          eps_next):
    """_residual_sums for m = 1, bit for bit (the squares, largest terms and the approximation)."""
    n = x.size
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.zeros((n_blocks, 5))
    lam0 = lam[0]
    p = P[0]
    q = Q[0]
    moved = step != 0.0
    for block in numba.prange(n_blocks):
        start = block * _BLOCK
        size = min(n, start + _BLOCK) - start
        sq = np.empty(size)
        big = np.empty(size)
        sq_next = np.empty(size)
        big_next = np.empty(size)
        approx = np.empty(size)
        for k in range(size):
            j = start + k
            xj, xsij, etaj = x[j], xsi[j], eta[j]
            if moved:
                dxsi, deta = _bound_multiplier_steps(xsij, etaj, dx[j], 1.0 / (xj - alpha[j]),
                                                     1.0 / (beta[j] - xj), eps)
                xj = xj + step * dx[j]
                xsij = xsij + step * dxsi
                etaj = etaj + step * deta
            uxinv = 1.0 / (upp[j] - xj)
            xlinv = 1.0 / (xj - low[j])
            plam = p0[j] + (0.0 + lam0 * p[j])
            qlam = q0[j] + (0.0 + lam0 * q[j])
            r_x = plam * (uxinv * uxinv) - qlam * (xlinv * xlinv) - xsij + etaj
            xsi_gap = xsij * (xj - alpha[j])
            eta_gap = etaj * (beta[j] - xj)
            r_xsi, r_eta = xsi_gap - eps, eta_gap - eps
            sq[k] = r_x * r_x + r_xsi * r_xsi + r_eta * r_eta
            big[k] = max(abs(r_x), abs(r_xsi), abs(r_eta))
            r_xsi, r_eta = xsi_gap - eps_next, eta_gap - eps_next
            sq_next[k] = r_x * r_x + r_xsi * r_xsi + r_eta * r_eta
            big_next[k] = max(abs(r_x), abs(r_xsi), abs(r_eta))
            approx[k] = p[j] * uxinv + q[j] * xlinv
        squares = 0.0
        largest = 0.0
        squares_next = 0.0
        largest_next = 0.0
        acc = 0.0
        for k in range(size):
            squares += sq[k]
            largest = max(largest, big[k])
            squares_next += sq_next[k]
            largest_next = max(largest_next, big_next[k])
            acc += approx[k]
        partial[block, 0] = squares
        partial[block, 1] = largest
        partial[block, 2] = squares_next
        partial[block, 3] = largest_next
        partial[block, 4] = acc
    total = _sum_rows(partial)
    total[1] = partial[:, 1].max()
    total[3] = partial[:, 3].max()
    return total


@numba.njit(cache=True, error_model="numpy")
def _x_block_arrays(x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps, G, rx, diag_x):
    """G (m, n), rx, D_x (n,) as arrays for the (n+1) system; returns the approximations (m,)."""
    n, m = x.size, P.shape[0]
    approximations = np.zeros(m)
    for j in range(n):
        uxinv1, xlinv1, uxinv2, xlinv2, _, _, rx[j], diag_x[j] = _x_block(
            j, x, xsi, eta, lam, p0, q0, P, Q, low, upp, alpha, beta, eps)
        for i in range(m):
            G[i, j] = P[i, j] * uxinv2 - Q[i, j] * xlinv2
            approximations[i] += P[i, j] * uxinv1 + Q[i, j] * xlinv1
    return approximations


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _advance(x, xsi, eta, dx, step, alpha, beta, eps):
    """Take the accepted step in place: the same trial point _residual_sums evaluated."""
    for j in numba.prange(x.size):
        dxsi, deta = _bound_multiplier_steps(xsi[j], eta[j], dx[j], 1.0 / (x[j] - alpha[j]),
                                             1.0 / (beta[j] - x[j]), eps)
        x[j] = x[j] + step * dx[j]
        xsi[j] = xsi[j] + step * dxsi
        eta[j] = eta[j] + step * deta


# ---------------------------------------------------------------------- helpers
def _bound(value, size: int, name: str) -> np.ndarray:
    """A bound as a float64 (size,) array; a scalar or a constant array becomes a read-only
    stride-0 view of one number. Topology optimization's bounds are 0 and 1 for every
    variable: two full vectors were 16 B per variable (per hex) kept for the whole run, and the
    kernels read the same values either way."""
    arr = _vector(value, size, name, broadcast=False) if np.ndim(value) else None
    if arr is None or (arr.size and arr.min() == arr.max()):
        one = float(value) if arr is None else float(arr[0])
        return np.broadcast_to(np.float64(one), (size,))
    return arr


def _vector(value, size: int, name: str, broadcast: bool = True,
            copy: bool = True) -> np.ndarray:
    """value as a float64 (size,) array; scalars broadcast when allowed. copy=False returns
    a contiguous float64 input itself (read-only use)."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0 and broadcast:
        return np.full(size, float(arr))
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.shape != (size,):
        raise OptimizationError(f"MMA {name} must have shape ({size},), got {np.shape(value)}")
    return np.array(arr, dtype=float) if copy else np.ascontiguousarray(arr, dtype=float)


def kkt_residual(x, lower_bound, upper_bound, objective_gradient, constraints,
                 constraint_gradients, multipliers) -> float:
    """Max-norm of the KKT residual of the original problem at design x.

    x, lower_bound, upper_bound, objective_gradient: (n,); constraints: (m,) values f_i(x);
    constraint_gradients: (m, n); multipliers: (m,) estimates (e.g. ``MMA.constraint_multipliers``,
    which refer to the unscaled objective). Bound multipliers are taken as the parts of the
    Lagrangian gradient that push against an active bound. Combines stationarity, primal
    feasibility, dual feasibility and complementarity; 0 at a KKT point.
    """
    x = np.asarray(x, float)
    lam = np.asarray(multipliers, float).reshape(-1)
    fval = np.asarray(constraints, float).reshape(-1)
    jac = np.asarray(constraint_gradients, float).reshape(lam.size, x.size)
    grad = np.asarray(objective_gradient, float) + lam @ jac
    at_lower = x <= np.asarray(lower_bound, float)
    at_upper = x >= np.asarray(upper_bound, float)
    # At a lower bound a positive gradient is balanced by the bound multiplier, at an upper
    # bound a negative one.
    stationarity = np.where(at_lower, np.minimum(grad, 0.0),
                            np.where(at_upper, np.maximum(grad, 0.0), grad))
    parts = [np.abs(stationarity), np.maximum(fval, 0.0), np.maximum(-lam, 0.0),
             np.abs(lam * fval)]
    return float(max(np.max(p) if p.size else 0.0 for p in parts))
