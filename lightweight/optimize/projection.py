"""Smoothed Heaviside projection of filtered densities, with beta continuation.

Approach
--------
The tanh projection of Wang, Lazarov & Sigmund (2011)::

    x_bar = (tanh(beta eta) + tanh(beta (x_tilde - eta))) / (tanh(beta eta) + tanh(beta (1 - eta)))

maps 0 -> 0 and 1 -> 1 for every beta and eta (unlike the exponential Heaviside of Guest et
al., which moves the end points), tends to the identity as beta -> 0 and to a step at ``eta`` as
beta -> infinity. It is element-wise, so the chain rule is a product with
``dx_bar/dx_tilde = beta (1 - tanh^2(beta (x_tilde - eta))) / denominator``.

Continuation: a sharp projection from the start traps the optimizer in a poor local design, so
beta starts near 1 and is multiplied (typically doubled) every few iterations or on
convergence, up to a cap; :meth:`HeavisideProjection.continue_beta` does one such step and the
loop owns the schedule.

With a sharp projection the projected volume drifts from the filtered one; choosing eta by
bisection so that the two agree (:func:`volume_preserving_eta`, as in Xu et al. 2010 and
top99neo) keeps the volume constraint meaningful while beta grows. The projected volume is
monotone decreasing in eta, so bisection always converges.

Shapes: fields are (n_cells,); gradients in ``backward`` are (n,) or (k, n), one row per function.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OptimizationError

__all__ = ["HeavisideProjection", "volume_preserving_eta", "heaviside"]


def _check_beta_eta(beta, eta) -> tuple[float, float]:
    beta, eta = float(beta), float(eta)
    if not (math.isfinite(beta) and beta > 0):
        raise OptimizationError(f"projection sharpness beta must be positive and finite, got {beta!r}")
    if not (0.0 <= eta <= 1.0):
        raise OptimizationError(f"projection threshold eta must lie in [0, 1], got {eta!r}")
    return beta, eta


def heaviside(x_tilde: np.ndarray, beta: float, eta: float) -> np.ndarray:
    """tanh projection of x_tilde (any shape) with sharpness beta and threshold eta."""
    t_eta = math.tanh(beta * eta)
    denominator = t_eta + math.tanh(beta * (1.0 - eta))
    return (t_eta + np.tanh(beta * (np.asarray(x_tilde, dtype=np.float64) - eta))) / denominator


def _heaviside_derivative(x_tilde: np.ndarray, beta: float, eta: float) -> np.ndarray:
    denominator = math.tanh(beta * eta) + math.tanh(beta * (1.0 - eta))
    t = np.tanh(beta * (np.asarray(x_tilde, dtype=np.float64) - eta))
    return beta * (1.0 - t * t) / denominator


class HeavisideProjection:
    """Smoothed Heaviside (tanh) projection x_tilde -> x_bar; see the module docstring.

    beta: sharpness (> 0, dimensionless); eta: threshold in [0, 1]. Both are plain attributes the
    caller may set between iterations (e.g. eta from :func:`volume_preserving_eta`).
    """

    def __init__(self, beta: float = 1.0, eta: float = 0.5):
        self.beta, self.eta = _check_beta_eta(beta, eta)

    def __repr__(self) -> str:
        return f"HeavisideProjection(beta={self.beta:g}, eta={self.eta:g})"

    def forward(self, x_tilde: np.ndarray) -> np.ndarray:
        """Projected densities x_bar, same shape as x_tilde."""
        beta, eta = _check_beta_eta(self.beta, self.eta)
        return heaviside(x_tilde, beta, eta)

    def derivative(self, x_tilde: np.ndarray) -> np.ndarray:
        """Element-wise dx_bar/dx_tilde, same shape as x_tilde."""
        beta, eta = _check_beta_eta(self.beta, self.eta)
        return _heaviside_derivative(x_tilde, beta, eta)

    def backward(self, x_tilde: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Chain rule: dF/dx_tilde from dF/dx_bar; grad (n,) or (k, n), same shape out."""
        x_tilde = np.asarray(x_tilde, dtype=np.float64)
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape[-1:] != x_tilde.shape or grad.ndim not in (1, 2):
            raise OptimizationError(f"projection gradient must have shape {x_tilde.shape} or "
                                    f"(k, {x_tilde.shape[-1]}), got {grad.shape}")
        return grad * self.derivative(x_tilde)

    def continue_beta(self, factor: float = 2.0, max_beta: float = 32.0) -> bool:
        """Multiply beta by ``factor``, capped at ``max_beta``; True if beta changed."""
        if not (factor > 1.0 and max_beta > 0):
            raise OptimizationError(f"beta continuation needs factor > 1 and max_beta > 0, "
                                    f"got factor={factor!r}, max_beta={max_beta!r}")
        new_beta = min(self.beta * factor, float(max_beta))
        changed = new_beta > self.beta
        self.beta = max(self.beta, new_beta)
        return changed


def volume_preserving_eta(x_tilde: np.ndarray, beta: float, target_volume: float,
                          volumes: np.ndarray | None = None, tolerance: float = 1e-12,
                          max_iterations: int = 200) -> float:
    """Threshold eta in [0, 1] whose projection of x_tilde has volume fraction ``target_volume``.

    x_tilde: (n,) filtered densities; target_volume: volume fraction in (0, 1); volumes: (n,)
    cell volumes (default equal). Bisection on eta to ``tolerance`` in eta; if the target cannot
    be reached (e.g. beta tiny), the nearest end of [0, 1] is returned.
    """
    x_tilde = np.asarray(x_tilde, dtype=np.float64)
    target = float(target_volume)
    if not (0.0 < target < 1.0):
        raise OptimizationError(f"target volume fraction must lie in (0, 1), got {target_volume!r}")
    beta, _ = _check_beta_eta(beta, 0.5)
    if volumes is None:
        weights = np.full(x_tilde.shape, 1.0 / x_tilde.size)
    else:
        volumes = np.asarray(volumes, dtype=np.float64)
        if volumes.shape != x_tilde.shape:
            raise OptimizationError(f"volumes must have shape {x_tilde.shape}, got {volumes.shape}")
        weights = volumes / volumes.sum()

    def excess(eta: float) -> float:
        return float(weights @ heaviside(x_tilde, beta, eta)) - target

    low, high = 0.0, 1.0          # excess(low) >= excess(high): projection shrinks as eta grows
    if excess(low) <= 0:
        return low
    if excess(high) >= 0:
        return high
    for _ in range(max_iterations):
        mid = 0.5 * (low + high)
        if excess(mid) > 0:
            low = mid
        else:
            high = mid
        if high - low < tolerance:
            break
    return 0.5 * (low + high)
