"""Volume fraction and mass of the material: V(ρ) = Σ v_e ρ_e / Σ v_e, m = density Σ v_e ρ_e.

Both are linear in ρ̄ (``linear = True``): their gradient is constant, which OC's closed-form
volume update uses, and top88's sensitivity filter leaves it alone.

On a structured grid every cell has the same volume, so ``coefficients`` (the constant
gradient) is a read-only stride-0 view of one number instead of an (n_cells,) vector (8 B
per cell for the whole run) and the value is that number times Σ ρ_e (pairwise summation;
a dot product with a stride-0 vector would run NumPy's sequential loop, 3x slower and less
accurate). Each entry is the number the full vector held; the value differs from the BLAS
dot product only in the order of the additions (~1e-16 relative).
"""

from __future__ import annotations

import numpy as np

from ...errors import OptimizationError
from .base import Response, register_response


def cell_volumes(model) -> np.ndarray:
    """Material volume per cell at ρ = 1 (n_cells,): 3D volume, or area x thickness in 2D."""
    return model.mesh.cell_volumes() * (model.thickness if model.dim == 2 else 1.0)


def uniform_cell_volume(model) -> float | None:
    """Material volume of every cell at ρ = 1 on a structured grid (entries of
    :func:`cell_volumes`), else None."""
    volume = model.mesh.uniform_cell_volume()
    return None if volume is None else volume * (model.thickness if model.dim == 2 else 1.0)


class _LinearInDensity(Response):
    """A response coefficients · ρ̄ with coefficients fixed at construction (see module doc)."""

    linear = True

    def _set_coefficients(self, per_cell: float | None, full=None):
        """Either one number per cell (a uniform grid: a stride-0 view) or the full vector."""
        if per_cell is None:
            self.coefficients = full
        else:
            self.coefficients = np.broadcast_to(np.float64(per_cell), (self.model.mesh.n_cells,))

    def evaluate(self, state):
        c = self.coefficients
        if c.ndim == 1 and c.size and c.strides[0] == 0:     # one number for every cell
            value = c[0] * np.sum(state.rho)
        else:
            value = c @ state.rho
        return np.array([value]), c[None, :]


@register_response("volume_fraction")
class VolumeFraction(_LinearInDensity):
    """Σ v_e ρ_e / Σ v_e (dimensionless, 0..1)."""

    name = "volume_fraction"

    def __init__(self, model):
        super().__init__(model)
        uniform = uniform_cell_volume(model)
        if uniform is None:
            volumes = cell_volumes(model)
            self._set_coefficients(None, volumes / volumes.sum())   # value = coefficients · ρ
        else:
            # the same numbers as the full vector's: v / (pairwise sum of n copies of v)
            total = float(np.broadcast_to(np.float64(uniform), (model.mesh.n_cells,)).sum())
            self._set_coefficients(uniform / total)


@register_response("mass")
class Mass(_LinearInDensity):
    """Material mass Σ density v_e ρ_e in the model's units (e.g. t with mm, N, MPa)."""

    name = "mass"

    def __init__(self, model):
        super().__init__(model)
        density = model.material.density
        if not density > 0:
            raise OptimizationError("mass needs a material density > 0 (lw.Material(..., density=...)); "
                                    "use the volume fraction otherwise")
        uniform = uniform_cell_volume(model)
        if uniform is None:
            self._set_coefficients(None, density * cell_volumes(model))
        else:
            self._set_coefficients(density * uniform)
