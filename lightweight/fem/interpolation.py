"""Material interpolation: the one definition of the SIMP and RAMP stiffness laws.

SIMP (Bendsøe 1989): E(ρ) = E_min + ρ^p (1 - E_min), as in top88 (relative to E0 = 1).
RAMP (Stolpe & Svanberg 2001): E(ρ) = E_min + ρ / (1 + q (1 - ρ)) (1 - E_min), which has a
non-zero slope at ρ = 0 — the better choice with self-weight.

Self-weight makes load/stiffness = ρ / ρ^p blow up in void regions, so with gravity SIMP is
replaced below ρ0 = 0.1 by the linear law through (0, E_min) and (ρ0, E(ρ0)) (the modified
SIMP of Bruyneel & Duysinx 2005), unless the user picks RAMP.

Densities below 0 are evaluated at 0 (slope 0 there): a PDE (Helmholtz) filter with a
consistent mass matrix is not monotone on general tet meshes and can undershoot 0 by a little
(as can the tanh projection of such a value), and ρ^p of a negative ρ would be a negative
modulus, which made the stiffness matrix indefinite (a "negative pivot" on the Gmsh bracket at
iteration 3). Above 1 the law continues smoothly: smooth-max stages (Langelaar's overhang
filter) overshoot 1 slightly, and a zero slope there stalled the printed MBB beam (compliance
992 instead of 208). Volume and mass stay linear in ρ, so they see the field as is.

The law lives in fem/ because analysing a given density field needs it as much as optimizing
one does: ``lw.solve(model, density)``, the optimization loop and the batch evaluation of a
submitted design all call :class:`Interpolation`, and a saved design records its law in its
provenance (:meth:`Interpolation.to_parameters`) so that it is re-evaluated under the same
law it was optimized with (:meth:`Interpolation.from_parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import OptimizationError

# the law of a density field that says nothing about its own (top88's defaults)
DEFAULT_PENALTY = 3.0
DEFAULT_MIN_STIFFNESS = 1e-9
# below this density the self-weight variant of SIMP is linear (Bruyneel & Duysinx 2005)
SELF_WEIGHT_LINEAR_BELOW = 0.1


@dataclass
class Interpolation:
    """Stiffness multiplier E(ρ)/E0 of the physical density ρ in [0, 1]."""

    kind: str = "simp"              # "simp" | "ramp"
    penalty: float = DEFAULT_PENALTY            # p (SIMP) or q (RAMP)
    min_stiffness: float = DEFAULT_MIN_STIFFNESS  # E_min / E0
    linear_below: float = 0.0       # ρ0 > 0: linear law below ρ0 (self-weight fix)

    def __post_init__(self) -> None:
        if self.kind not in ("simp", "ramp"):
            raise OptimizationError(f"interpolation must be 'simp' or 'ramp', got {self.kind!r}")
        if not (self.penalty >= 0 and np.isfinite(self.penalty)):
            raise OptimizationError(f"penalty must be a non-negative number, got {self.penalty}")
        if not (0 <= self.min_stiffness < 1):
            raise OptimizationError(f"min_stiffness (E_min/E0) must be in [0, 1), got {self.min_stiffness}")
        if not (0 <= self.linear_below < 1):
            raise OptimizationError(f"linear_below must be in [0, 1), got {self.linear_below}")

    def _law(self, rho):
        if self.kind == "simp":
            return rho ** self.penalty, self.penalty * rho ** (self.penalty - 1) if self.penalty else 0 * rho
        q = self.penalty
        denom = 1 + q * (1 - rho)
        return rho / denom, (1 + q) / denom ** 2

    def stiffness(self, rho: np.ndarray) -> np.ndarray:
        """E(ρ)/E0, same shape as rho (ρ < 0 taken as 0)."""
        rho = np.maximum(rho, 0.0)
        value, _ = self._law(rho)
        if self.linear_below > 0:
            v0, _ = self._law(np.float64(self.linear_below))
            value = np.where(rho < self.linear_below, rho * v0 / self.linear_below, value)
        return self.min_stiffness + (1 - self.min_stiffness) * value

    def derivative(self, rho: np.ndarray) -> np.ndarray:
        """d(E/E0)/dρ, same shape as rho (0 below ρ = 0, where the law is constant)."""
        rho = np.asarray(rho, dtype=float)
        inside = rho >= 0.0
        clipped = np.maximum(rho, 0.0)
        _, slope = self._law(clipped)
        if self.linear_below > 0:
            v0, _ = self._law(np.float64(self.linear_below))
            slope = np.where(clipped < self.linear_below, v0 / self.linear_below, slope)
        return (1 - self.min_stiffness) * np.where(inside, slope, 0.0)

    # ------------------------------------------------------------------ provenance
    def to_parameters(self) -> dict:
        """The law as JSON-able parameters (the keys :meth:`from_parameters` reads)."""
        return {"interpolation": self.kind, "penalty": float(self.penalty),
                "min_stiffness": float(self.min_stiffness), "linear_below": float(self.linear_below)}

    @classmethod
    def from_parameters(cls, parameters: Mapping | None) -> "Interpolation":
        """The law recorded in a design's provenance parameters; top88's SIMP where silent.

        Reads ``interpolation`` ("simp" | "ramp"), ``penalty`` (a number, or [start, end] of a
        continuation: the end value is the law the design was finished with), ``min_stiffness``
        and ``linear_below``. Written by optimization results and :meth:`to_parameters`.
        """
        params = dict(parameters or {})
        penalty = params.get("final_penalty", params.get("penalty", DEFAULT_PENALTY))
        if isinstance(penalty, (list, tuple)):
            penalty = penalty[-1]
        try:
            return cls(kind=str(params.get("interpolation") or "simp"),
                       penalty=float(DEFAULT_PENALTY if penalty is None else penalty),
                       min_stiffness=float(params.get("min_stiffness", DEFAULT_MIN_STIFFNESS)),
                       linear_below=float(params.get("linear_below", 0.0) or 0.0))
        except (TypeError, ValueError) as exc:
            raise OptimizationError(f"the design's recorded interpolation {params!r} is not valid: {exc}") from None


def simp(penalty: float = DEFAULT_PENALTY, min_stiffness: float = DEFAULT_MIN_STIFFNESS) -> Interpolation:
    """top88's SIMP law E_min + ρ^p (1 - E_min)."""
    return Interpolation("simp", penalty, min_stiffness)
