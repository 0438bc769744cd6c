"""Mean displacement of a node set in one direction, δ = l · u, with its adjoint gradient.

l averages one component over the set's nodes. Adjoint K λ = l (one solve for all selected
cases, sharing the factorization of the static solve) gives
dδ/dρ_e = -E'(ρ_e) λ_e^T K_e u_e + λ · df/dρ_e (the second term with self-weight).
"""

from __future__ import annotations

import numpy as np

from ...errors import OptimizationError
from .base import Response, register_response


@register_response("displacement")
class Displacement(Response):
    """Mean of displacement component ``component`` ("x" | "y" | "z") over node set ``set``.

    case: a load case name, or None for one value per case. Length units of the model.
    """

    name = "displacement"
    bounds_magnitude = True          # `Displacement(...) <= 0.5` bounds |δ|

    def __init__(self, model, set: str, component: str, case: str | None = None):
        super().__init__(model)
        dim = model.dim
        if not isinstance(component, str) or len(component) != 1 or component not in "xyz"[:dim]:
            raise OptimizationError(f"displacement of {set!r}: component must be one of "
                                    f"{', '.join('xyz'[:dim])}, got {component!r}")
        nodes = model.mesh.node_set(set)           # raises UnknownSetError naming the set
        self.set, self.component = set, component
        self.cases = self._case_names(case, f"displacement of {set!r}")
        names = list(model.load_cases)
        self.index = [names.index(c) for c in self.cases]
        self.selector = np.zeros(model.mesh.n_nodes * dim)
        self.selector[nodes * dim + "xyz".index(component)] = 1.0 / nodes.size

    def labels(self):
        return [f"displacement[{self.set}.{self.component}, {c}]" for c in self.cases]

    def evaluate(self, state):
        static = state.static
        system = state.system
        U = static.U[self.index]
        values = U @ self.selector
        lam = static.adjoint(np.repeat(self.selector[None, :], len(self.index), axis=0))
        grads = -state.stiffness_derivative[None, :] * system.element_cross_energies(U, lam)
        if system.has_body_loads:
            full = np.zeros((len(system.case_names), system.n_dofs))
            full[self.index] = lam
            grads += system.body_load_gradient(full)[self.index]
        return values, grads
