"""Optimality-criteria update of top88 (Andreassen et al. 2011), for volume-constrained compliance.

x_new = clip(x * sqrt(-dc / (λ dv)), x - move, x + move, 0, 1), with the Lagrange multiplier λ
found by bisection on (0, 1e9) until (l2 - l1)/(l1 + l2) < 1e-3, checking the volume of the
*physical* design the new x produces (filtered/projected when a density filter is used), exactly
the published rule, so an MBB run reproduces top88's iteration history.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import OptimizationError


def oc_update(x: np.ndarray, dc: np.ndarray, dv: np.ndarray, volume_of: Callable[[np.ndarray], float],
              target_volume: float, move: float = 0.2, damping: float = 0.5,
              lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    """One OC step. x, dc, dv: (n,); volume_of(x_new) -> the physical volume to compare with target."""
    if np.any(dc > 0):
        # OC needs a monotone objective; positive sensitivities (self-weight, displacement
        # objectives) are clipped as in common OC ports, which is only a heuristic.
        dc = np.minimum(dc, 0.0)
    if np.any(dv <= 0):
        raise OptimizationError("OC needs positive volume sensitivities (dv > 0)")
    l1, l2 = 0.0, 1e9
    ratio = -dc / dv
    x_new = x
    while (l2 - l1) / (l1 + l2) > 1e-3:
        lmid = 0.5 * (l2 + l1)
        x_new = np.maximum(lower, np.maximum(x - move, np.minimum(upper, np.minimum(
            x + move, x * (ratio / lmid) ** damping))))
        if volume_of(x_new) > target_volume:
            l1 = lmid
        else:
            l2 = lmid
    return x_new
