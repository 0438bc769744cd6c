"""lightweight: structural optimization with Numba finite elements and SIMP.

The public names (DESIGN.md) live here; everything else may move.
"""

from ._version import __version__
from .errors import (BoundaryConditionError, CaseFileError, LightweightError, MaterialError,
                     MeshError, MeshFileError, OptimizationError, SingularStiffnessError,
                     SolverError, UnknownSetError)
from .fem import (BodyForce, Gravity, Material, Model, NodalForces, PointLoad, Pressure, Solution,
                  Traction,
                  solve)
from .mesh import Mesh, read_mesh, structured_grid, write_mesh
from .optimize import DisplacementLimit, OptimizationResult, minimize_compliance, minimize_mass

__all__ = [
    "__version__", "LightweightError", "MeshError", "MeshFileError", "UnknownSetError",
    "MaterialError", "BoundaryConditionError", "SingularStiffnessError", "SolverError",
    "OptimizationError", "CaseFileError",
    "Mesh", "read_mesh", "write_mesh", "structured_grid",
    "Material", "Model", "PointLoad", "Traction", "Pressure", "BodyForce", "Gravity", "NodalForces",
    "Solution", "solve",
    "minimize_compliance", "minimize_mass", "DisplacementLimit", "OptimizationResult",
]
