"""Volume fraction and mass of the material: V(ρ) = Σ v_e ρ_e / Σ v_e, m = density Σ v_e ρ_e.

Both are linear in ρ̄ (``linear = True``): their gradient is constant, which OC's closed-form
volume update uses, and top88's sensitivity filter leaves it alone.
"""

from __future__ import annotations

import numpy as np

from ...errors import OptimizationError
from .base import Response, register_response


def cell_volumes(model) -> np.ndarray:
    """Material volume per cell at ρ = 1 (n_cells,): 3D volume, or area x thickness in 2D."""
    return model.mesh.cell_volumes() * (model.thickness if model.dim == 2 else 1.0)


@register_response("volume_fraction")
class VolumeFraction(Response):
    """Σ v_e ρ_e / Σ v_e (dimensionless, 0..1)."""

    name = "volume_fraction"
    linear = True

    def __init__(self, model):
        super().__init__(model)
        volumes = cell_volumes(model)
        self.coefficients = volumes / volumes.sum()          # (n_cells,): value = coefficients · ρ

    def evaluate(self, state):
        return np.array([self.coefficients @ state.rho]), self.coefficients[None, :]


@register_response("mass")
class Mass(Response):
    """Material mass Σ density v_e ρ_e in the model's units (e.g. t with mm, N, MPa)."""

    name = "mass"
    linear = True

    def __init__(self, model):
        super().__init__(model)
        density = model.material.density
        if not density > 0:
            raise OptimizationError("mass needs a material density > 0 (lw.Material(..., density=...)); "
                                    "use the volume fraction otherwise")
        self.coefficients = density * cell_volumes(model)

    def evaluate(self, state):
        return np.array([self.coefficients @ state.rho]), self.coefficients[None, :]
