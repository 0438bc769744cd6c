"""Compliance c_k = f_k · u_k per load case, or a weighted sum, with its adjoint gradient.

With design-independent loads the problem is self-adjoint: dc_k/dρ_e = -E'(ρ_e) u_e^T K_e u_e
(element energies of the unit-modulus element matrices, one fused kernel for all cases). With
self-weight f depends on ρ, c = f^T K^-1 f, and the adjoint adds 2 u · df/dρ_e.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...errors import OptimizationError
from .base import Response, register_response


@register_response("compliance")
class Compliance(Response):
    """Compliance of load cases (force x length, the model's units).

    cases: names (None: all) -> one value per case; weights: {case: w} -> one value Σ w_k c_k
    (cases not named weigh 0).
    """

    name = "compliance"

    def __init__(self, model, cases=None, weights: Mapping[str, float] | None = None):
        super().__init__(model)
        if weights is not None:
            if cases is not None:
                raise OptimizationError("compliance: give cases or weights, not both")
            if not isinstance(weights, Mapping):
                raise OptimizationError(f"compliance weights must be {{case: weight}}, got {weights!r}")
            self._case_names(list(weights), "compliance weights")
            names = list(model.load_cases)
            self.weights = np.array([float(weights.get(c, 0.0)) for c in names])
            if not np.all(np.isfinite(self.weights)) or np.any(self.weights < 0):
                raise OptimizationError(f"compliance weights must be finite and >= 0, got {dict(weights)}")
            self.cases = names
        else:
            self.weights = None
            self.cases = self._case_names(cases, "compliance")
        if not self.cases:
            raise OptimizationError("compliance needs a load case; the model has none")
        names = list(model.load_cases)
        self.index = [names.index(c) for c in self.cases]

    def labels(self):
        if self.weights is not None:
            return ["compliance"]
        return [f"compliance[{c}]" for c in self.cases]

    def all_cases(self, state) -> tuple[np.ndarray, np.ndarray]:
        """Compliance of every load case (n_cases,) and gradients (n_cases, n_cells), cached per state."""
        if "compliance" not in state.cache or "compliance.gradients" not in state.cache:
            static = state.static
            system = state.system
            values = static.load_work()
            grads = -state.stiffness_derivative[None, :] * system.element_energies(static.U)
            if system.has_body_loads:
                grads += 2.0 * system.body_load_gradient(static.U)
            state.cache["compliance"] = values
            state.cache["compliance.gradients"] = grads
            state.gradient_keys.add("compliance.gradients")
        return state.cache["compliance"], state.cache["compliance.gradients"]

    def evaluate(self, state):
        values, grads = self.all_cases(state)
        if self.weights is not None:
            return np.array([self.weights @ values]), (self.weights @ grads)[None, :]
        return values[self.index], grads[self.index]
