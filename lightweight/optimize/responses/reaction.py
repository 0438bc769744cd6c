"""Reaction force of a support set in one direction, R = Σ_set (K u - f), with its adjoint gradient.

The worked example of docs/architecture.md ("Adding a response"). With r the 0/1 selector of
the set's DOFs in that direction (support DOFs only, where u is prescribed), R = r·(K u - f).
Differentiating K_ff u_f = f_f - K_fp u_p gives du_f = K_ff^-1 (df - dK u)_f, so with the
adjoint λ = K_ff^-1 (K r)_f (one solve with the static solve's factorization; zero on the
supports):

    dR/dρ_e = E'(ρ_e) (r - λ)_e^T K_e u_e - (r - λ) · df/dρ_e

(the second term only with self-weight). Units: the model's force units.
"""

from __future__ import annotations

import numpy as np

from ...errors import OptimizationError
from .base import Response, register_response


@register_response("reaction")
class Reaction(Response):
    """Sum of the support reactions of set ``set`` in direction ``component`` ("x" | "y" | "z").

    case: a load case name, or None for one value per case. The set must be a support of the
    model fixing that component.
    """

    name = "reaction"

    def __init__(self, model, set: str, component: str, case: str | None = None):
        super().__init__(model)
        dim = model.dim
        if not isinstance(component, str) or len(component) != 1 or component not in "xyz"[:dim]:
            raise OptimizationError(f"reaction of {set!r}: component must be one of "
                                    f"{', '.join('xyz'[:dim])}, got {component!r}")
        axis = "xyz".index(component)
        supports = model.supports
        if set not in supports or axis not in supports[set]:
            held = {name: "".join("xyz"[c] for c in comps) for name, comps in supports.items()}
            raise OptimizationError(f"reaction of {set!r} in {component}: that is not a support fixing "
                                    f"{component}; supports: {held or 'none'}")
        nodes = model.mesh.node_set(set)
        self.set, self.component = set, component
        self.cases = self._case_names(case, f"reaction of {set!r}")
        names = list(model.load_cases)
        self.index = [names.index(c) for c in self.cases]
        self.selector = np.zeros(model.mesh.n_nodes * dim)
        self.selector[nodes * dim + axis] = 1.0

    def labels(self):
        return [f"reaction[{self.set}.{self.component}, {c}]" for c in self.cases]

    def evaluate(self, state):
        static = state.static
        system = state.system
        U = static.U[self.index]
        F = static.F[self.index]
        values = (static.internal_forces(U) - F) @ self.selector
        # λ = K_ff^-1 (K r)_f; adjoint() zeroes the supported rows of its right-hand side
        # K r changes with the design: keyed by this response, its previous adjoint starts the next
        lam = static.adjoint(np.repeat(static.internal_forces(self.selector[None, :]), len(self.index), axis=0),
                             key=f"reaction-{id(self)}")
        weight = self.selector[None, :] - lam                        # (k, n_dofs): r - λ
        grads = state.stiffness_derivative[None, :] * system.element_cross_energies(U, weight)
        if system.has_body_loads:
            full = np.zeros((len(system.case_names), system.n_dofs))
            full[self.index] = weight
            grads -= system.body_load_gradient(full)[self.index]
        return values, grads
