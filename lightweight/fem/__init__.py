"""FE layer: linear elasticity (elements, assembly, loads, solvers, results).

Knows nothing about design variables: it takes one stiffness multiplier per cell.
"""

from .loads import BodyForce, Gravity, NodalForces, PointLoad, Pressure, Traction
from .material import Material
from .model import Model
from .results import Solution
from .static import simp_scale, solve
from .modal import Modes, modes

__all__ = ["Modes", "modes", "Material", "Model", "PointLoad", "Traction", "Pressure", "BodyForce", "Gravity", "NodalForces",
           "Solution", "solve", "simp_scale"]
