"""A problem: one objective response, constraints ``response <= limit``, and a continuation schedule.

:class:`Problem` evaluates everything at one design state in one pass (one static solve
shared by all responses) and returns the objective, the constraint values g (m,), normalised
so that g <= 0 holds, and their gradients w.r.t. ρ̄ as rows. It knows nothing of filters or
optimizers: the loop chains the rows back through the stage pipeline.

:class:`Schedule` is the continuation of top88-style runs: the SIMP penalty rises from its start
to its end value in steps, then the projection sharpness β doubles, each ``interval``
iterations or as soon as the design has settled at the current level. Convergence is only
declared at the final level. It drives the interpolation and any stage carrying ``beta``.

A user problem from the public pieces (docs/architecture.md has more)::

    from lightweight.optimize import Problem, responses as r
    problem = Problem(r.Mass(model), [r.Compliance(model) <= 40.0,
                                      r.Displacement(model, "tip", "y") <= 0.5])
    result = lw.optimize_problem(model, problem, filter_radius=2.0)
"""

from __future__ import annotations

import numpy as np

from ..errors import OptimizationError
from .responses.base import Constraint, Response


class Problem:
    """minimize objective(ρ̄) subject to every constraint (see module docstring).

    objective: a Response with one value (e.g. ``Compliance(model, weights=...)``, ``Mass``);
    constraints: Constraint objects (``response <= limit``).
    """

    def __init__(self, objective: Response, constraints=(), name: str = "custom"):
        if not isinstance(objective, Response):
            raise OptimizationError(f"the objective must be a response (lightweight.optimize.responses), "
                                    f"got {type(objective).__name__}")
        if objective.size != 1:
            raise OptimizationError(f"the objective must have one value; {objective.name} has "
                                    f"{objective.size} ({', '.join(objective.labels())}): give weights")
        constraints = list(constraints)
        for con in constraints:
            if not isinstance(con, Constraint):
                raise OptimizationError(f"constraints are written `response <= limit`, got {con!r}")
            if con.response.model is not objective.model:
                raise OptimizationError(f"constraint on {con.response.name} was built for another model")
        self.objective = objective
        self.constraints = constraints
        self.model = objective.model
        self.name = name

    @property
    def n_constraints(self) -> int:
        return sum(c.size for c in self.constraints)

    def constraint_names(self) -> list[str]:
        return [label for c in self.constraints for label in c.labels()]

    def linear_rows(self) -> np.ndarray:
        """(1 + m,) booleans: objective then constraints that are affine in ρ̄."""
        return np.array([self.objective.linear] + [c.linear for c in self.constraints for _ in range(c.size)])

    def evaluate(self, state):
        """(objective, g (m,), d_objective (n_cells,), dg (m, n_cells), values {label: raw value})."""
        f_values, f_grads = self.objective.evaluate(state)
        values = {label: float(v) for label, v in zip(self.objective.labels(), f_values)}
        g_rows, dg_rows = [], []
        for con in self.constraints:
            raw, grads = con.response.evaluate(state)
            values.update({label: float(v) for label, v in zip(con.labels(), raw)})
            g, dg = con.normalise(np.asarray(raw, dtype=float), np.asarray(grads, dtype=float))
            g_rows.append(g)
            dg_rows.append(dg)
        n = state.rho.size
        g = np.concatenate(g_rows) if g_rows else np.zeros(0)
        dg = np.vstack(dg_rows) if dg_rows else np.zeros((0, n))
        return float(f_values[0]), g, np.asarray(f_grads[0], dtype=float), dg, values

    def describe(self) -> dict:
        return {"name": self.name, "objective": self.objective.describe(),
                "constraints": [c.describe() for c in self.constraints]}


class Schedule:
    """Continuation of the penalty, then of β (see module docstring).

    penalty: (start, end, step); beta: (start, end) doubling, or None without projection;
    interval: iterations per level unless the design settles sooner.
    """

    def __init__(self, penalty=(3.0, 3.0, 0.5), beta=None, interval: int = 25):
        self.penalty_start, self.penalty_end, self.penalty_step = map(float, penalty)
        self.beta_start, self.beta_end = (None, 0.0) if beta is None else map(float, beta)
        self.interval = int(interval)
        self.level_start = 0           # iteration at which the current level began
        self.interpolation = None
        self.pipeline = None

    def attach(self, interpolation, pipeline) -> None:
        """Drive this interpolation's penalty and the pipeline's β; set their start values."""
        self.interpolation = interpolation
        self.pipeline = pipeline
        interpolation.penalty = self.penalty_start
        if self.beta_start is not None:
            pipeline.set_parameter("beta", self.beta_start)

    @property
    def penalty(self) -> float:
        return float(self.interpolation.penalty)

    @property
    def beta(self) -> float | None:
        return None if self.beta_start is None else float(self.pipeline.parameters()["beta"])

    def at_final_level(self) -> bool:
        penalty_done = self.interpolation.penalty >= self.penalty_end
        beta_done = self.beta_start is None or self.beta >= self.beta_end
        return penalty_done and beta_done

    def advance(self, iteration: int, settled: bool) -> bool:
        """Move to the next level if due; True if the problem changed."""
        if self.at_final_level():
            return False
        if not settled and iteration - self.level_start < self.interval:
            return False
        if self.interpolation.penalty < self.penalty_end:
            self.interpolation.penalty = min(self.penalty_end, self.interpolation.penalty + self.penalty_step)
        else:
            self.pipeline.set_parameter("beta", min(self.beta_end, 2 * self.beta))
        self.level_start = iteration
        return True

    def state(self) -> dict:
        return {"penalty": self.penalty, "beta": self.beta, "level_start": self.level_start}

    def load_state(self, state: dict) -> None:
        self.interpolation.penalty = state["penalty"]
        if self.beta_start is not None:
            self.pipeline.set_parameter("beta", state["beta"])
        self.level_start = state["level_start"]
