"""Material interpolation: SIMP and RAMP stiffness laws with derivatives and continuation.

SIMP (Bendsøe 1989): E(ρ) = E_min + ρ^p (1 - E_min), as in top88 (relative to E0 = 1).
RAMP (Stolpe & Svanberg 2001): E(ρ) = E_min + ρ / (1 + q (1 - ρ)) (1 - E_min), which has a
non-zero slope at ρ = 0 — the better choice with self-weight.

Self-weight makes load/stiffness = ρ / ρ^p blow up in void regions, so with gravity SIMP is
replaced below ρ0 = 0.1 by the linear law through (0, E_min) and (ρ0, E(ρ0)) (the modified
SIMP of Bruyneel & Duysinx 2005), unless the user picks RAMP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OptimizationError


@dataclass
class Interpolation:
    """Stiffness multiplier E(ρ)/E0 of the physical density ρ in [0, 1]."""

    kind: str = "simp"              # "simp" | "ramp"
    penalty: float = 3.0            # p (SIMP) or q (RAMP)
    min_stiffness: float = 1e-9     # E_min / E0
    linear_below: float = 0.0       # ρ0 > 0: linear law below ρ0 (self-weight fix)

    def __post_init__(self) -> None:
        if self.kind not in ("simp", "ramp"):
            raise OptimizationError(f"interpolation must be 'simp' or 'ramp', got {self.kind!r}")
        if not (self.penalty >= 0 and np.isfinite(self.penalty)):
            raise OptimizationError(f"penalty must be a non-negative number, got {self.penalty}")
        if not (0 <= self.min_stiffness < 1):
            raise OptimizationError(f"min_stiffness (E_min/E0) must be in [0, 1), got {self.min_stiffness}")

    def _law(self, rho):
        if self.kind == "simp":
            return rho ** self.penalty, self.penalty * rho ** (self.penalty - 1) if self.penalty else 0 * rho
        q = self.penalty
        denom = 1 + q * (1 - rho)
        return rho / denom, (1 + q) / denom ** 2

    def stiffness(self, rho: np.ndarray) -> np.ndarray:
        """E(ρ)/E0, same shape as rho."""
        value, _ = self._law(rho)
        if self.linear_below > 0:
            v0, _ = self._law(np.float64(self.linear_below))
            value = np.where(rho < self.linear_below, rho * v0 / self.linear_below, value)
        return self.min_stiffness + (1 - self.min_stiffness) * value

    def derivative(self, rho: np.ndarray) -> np.ndarray:
        """d(E/E0)/dρ, same shape as rho."""
        _, slope = self._law(rho)
        if self.linear_below > 0:
            v0, _ = self._law(np.float64(self.linear_below))
            slope = np.where(rho < self.linear_below, v0 / self.linear_below, slope)
        return (1 - self.min_stiffness) * slope
