"""Optimization layer: SIMP design parametrization, filters, projection, OC/MMA, the loop."""

from .api import minimize_compliance, minimize_mass
from .problems import DisplacementLimit
from .result import OptimizationResult

__all__ = ["minimize_compliance", "minimize_mass", "DisplacementLimit", "OptimizationResult"]
