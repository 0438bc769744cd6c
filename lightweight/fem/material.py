"""Isotropic linear-elastic material and its elasticity matrices (Voigt notation).

Voigt order: 2D ``[xx, yy, xy]``; 3D ``[xx, yy, zz, xy, yz, zx]``, engineering shear strains
(gamma = 2 epsilon), the convention of Abaqus/CalculiX, so stresses compare one to one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import MaterialError


@dataclass(frozen=True)
class Material:
    """Isotropic elastic material in the user's units.

    E: Young's modulus (> 0); nu: Poisson's ratio in (-1, 0.5); density: mass per volume
    (>= 0, used for mass and gravity); yield_strength: for safety factors (optional).
    """

    E: float
    nu: float
    density: float = 0.0
    yield_strength: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        for field_name in ("E", "nu", "density"):
            value = getattr(self, field_name)
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
                raise MaterialError(f"material {field_name} must be a finite number, got {value!r}")
        if self.E <= 0:
            raise MaterialError(f"material E (Young's modulus) must be positive, got {self.E}")
        if not -1.0 < self.nu < 0.5:
            raise MaterialError(f"material nu (Poisson's ratio) must lie in (-1, 0.5), got {self.nu}; "
                                f"0.5 is incompressible and cannot be modelled with displacement elements")
        if self.density < 0:
            raise MaterialError(f"material density must be >= 0, got {self.density}")
        if self.yield_strength is not None and not (self.yield_strength > 0):
            raise MaterialError(f"material yield_strength must be positive, got {self.yield_strength}")

    def to_dict(self) -> dict:
        return asdict(self)

    def elasticity_matrix(self, dim: int, plane: str = "stress") -> np.ndarray:
        """Elasticity matrix D (3x3 in 2D, 6x6 in 3D) with stress = D @ strain."""
        return elasticity_matrix(self.E, self.nu, dim, plane)


def elasticity_matrix(E: float, nu: float, dim: int, plane: str = "stress") -> np.ndarray:
    """Isotropic D for plane stress/strain (dim 2) or 3D solids, (3, 3) or (6, 6)."""
    if dim == 2:
        if plane == "stress":
            c = E / (1 - nu * nu)
            return c * np.array([[1, nu, 0], [nu, 1, 0], [0, 0, (1 - nu) / 2]])
        if plane == "strain":
            c = E / ((1 + nu) * (1 - 2 * nu))
            return c * np.array([[1 - nu, nu, 0], [nu, 1 - nu, 0], [0, 0, (1 - 2 * nu) / 2]])
        raise MaterialError(f"plane must be 'stress' or 'strain', got {plane!r}")
    lam = E * nu / ((1 + nu) * (1 - 2 * nu))
    mu = E / (2 * (1 + nu))
    D = np.zeros((6, 6))
    D[:3, :3] = lam
    D[np.arange(3), np.arange(3)] += 2 * mu
    D[np.arange(3, 6), np.arange(3, 6)] = mu
    return D


def safety_factor(yield_strength: float | None, max_von_mises: float) -> float | None:
    """yield_strength / max von Mises (inf for an unstressed part), None without a yield strength."""
    if yield_strength is None:
        return None
    return float(yield_strength) / float(max_von_mises) if max_von_mises > 0 else float("inf")
