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
A primal-dual interior-point method in the spirit of Svanberg's ``subsolv``: the relaxed KKT
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
                 initial_asymptotes: str = "bounds"):
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

        # History (nan = not yet known; used from the third update on).
        self.iteration = 0
        self.xold1 = np.full(n, np.nan)
        self.xold2 = np.full(n, np.nan)
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
        _moving_asymptotes(x, self.xold1, self.xold2, self.low, self.upp, span_low,
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

        self.xold2 = self.xold1
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
            "move_box_asymptotes": self.initial_asymptotes == "move",   # plain types only
            "iteration": self.iteration,
            "xold1": self.xold1.copy(),
            "xold2": self.xold2.copy(),
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
                      initial_asymptotes="move" if state.get("move_box_asymptotes") else "bounds")
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
        self.auto_scale = bool(state["auto_scale"])
        self.iteration = int(state["iteration"])
        for name in ("xold1", "xold2", "low", "upp"):
            setattr(self, name, _vector(state[name], n, f"state {name}", broadcast=False).copy())


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
def _moving_asymptotes(x, xold1, xold2, low_old, upp_old, lower, upper, adapt, init, decrease,
                       increase, low, upp):
    """low, upp (n,) for design x: at s0 = init spans (adapt False) or moved by the trend."""
    for j in numba.prange(x.size):
        span = upper[j] - lower[j]
        if not adapt:
            low[j] = x[j] - init * span
            upp[j] = x[j] + init * span
            continue
        trend = (x[j] - xold1[j]) * (xold1[j] - xold2[j])
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
