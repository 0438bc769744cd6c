"""What every response is: values and their gradients w.r.t. the physical densities ρ̄.

A :class:`Response` is built for one model (so it is validated when constructed: unknown sets
and load cases are named then, not after the first FE solve) and evaluated per design::

    values, gradients = response.evaluate(state)      # (k,), (k, n_cells)

``state`` is a :class:`~lightweight.optimize.analysis.DesignState`: it holds ρ̄ and solves the
static problem the first time any response asks for it, so all responses of an iteration
share one solve. ``labels()`` names the k values (e.g. one per load case). ``linear = True``
marks responses that are affine in ρ̄ (volume, mass): OC needs exactly one of them as its
constraint, and top88's sensitivity filter leaves their gradients alone.

``response <= limit`` makes a :class:`Constraint` (g = value / limit - 1 <= 0, normalised to
O(1) for MMA); :class:`~lightweight.optimize.problem.Problem` combines an objective with
constraints. Responses register under a name (:func:`register_response`) so case files and
the CLI can refer to them. Adding one: docs/architecture.md ("Adding a response"); its test is
:func:`lightweight.optimize.checks.check_response`.
"""

from __future__ import annotations

import numpy as np

from ..._registry import Registry
from ...errors import OptimizationError

RESPONSES = Registry("response")


def register_response(name: str):
    """Class decorator: make a Response available by ``name`` (case files, ``make_response``)."""
    return RESPONSES.register(name)


class Response:
    """Base class (see module docstring)."""

    name = "response"
    linear = False
    # True for signed quantities whose size is what a limit bounds (displacements):
    # `response <= limit` then bounds |value|
    bounds_magnitude = False

    def __init__(self, model):
        self.model = model

    def _case_names(self, cases, what: str) -> list[str]:
        """Load case names (None: every case of the model), unknown ones named in the error."""
        names = list(self.model.load_cases)
        if cases is None:
            return names
        cases = [cases] if isinstance(cases, str) else list(cases)
        unknown = [c for c in cases if c not in names]
        if unknown:
            raise OptimizationError(f"{what}: unknown load case{'s' if len(unknown) > 1 else ''} "
                                    f"{', '.join(map(repr, unknown))}; cases: {', '.join(names) or '(none)'}")
        return cases

    def labels(self) -> list[str]:
        """One label per value, e.g. ["compliance[brake]", "compliance[bump]"]."""
        return [self.name]

    @property
    def size(self) -> int:
        return len(self.labels())

    def evaluate(self, state) -> tuple[np.ndarray, np.ndarray]:
        """Values (k,) and gradients w.r.t. ρ̄ (k, n_cells) at ``state``."""
        raise NotImplementedError

    def __le__(self, limit) -> "Constraint":
        return Constraint(self, limit)

    def describe(self) -> dict:
        return {"response": self.name, "labels": self.labels()}


class Constraint:
    """response <= limit, written g = value / limit - 1 <= 0 (absolute: (value / limit)^2 - 1).

    limit: a positive number, or one per value of the response (k,). ``absolute=True`` bounds
    |value| smoothly; None takes the response's ``bounds_magnitude`` (True for displacements,
    which may have either sign).
    """

    def __init__(self, response: Response, limit, absolute: bool | None = None):
        if not isinstance(response, Response):
            raise OptimizationError(f"a constraint bounds a response, got {type(response).__name__}")
        limits = np.broadcast_to(np.asarray(limit, dtype=float), (response.size,)).copy() \
            if np.ndim(limit) == 0 else np.asarray(limit, dtype=float)
        if limits.shape != (response.size,):
            raise OptimizationError(f"constraint on {response.name}: {response.size} values "
                                    f"({', '.join(response.labels())}) but {limits.size} limits")
        bad = [label for label, v in zip(response.labels(), limits) if not (np.isfinite(v) and v > 0)]
        if bad:
            raise OptimizationError(f"constraint limits must be positive and finite; check {', '.join(bad)} "
                                    f"(limits {limits.tolist()})")
        self.response = response
        self.limits = limits
        self.absolute = response.bounds_magnitude if absolute is None else bool(absolute)

    @property
    def size(self) -> int:
        return self.response.size

    def labels(self) -> list[str]:
        return self.response.labels()

    @property
    def linear(self) -> bool:
        return self.response.linear and not self.absolute

    def normalise(self, values: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """g (k,) and dg/dρ̄ (k, n_cells) from the response's values and gradients."""
        if self.absolute:
            return (values / self.limits) ** 2 - 1.0, (2 * values / self.limits ** 2)[:, None] * grads
        return values / self.limits - 1.0, grads / self.limits[:, None]

    def describe(self) -> dict:
        return {**self.response.describe(), "limits": self.limits.tolist(), "absolute": self.absolute}


def make_response(name: str, model, **options) -> Response:
    """A registered response by name, e.g. ``make_response("compliance", model, cases=["brake"])``."""
    return RESPONSES.get(name)(model, **options)
