"""lightweight: structural optimization with Numba finite elements and SIMP."""

from ._version import __version__
from .errors import (BoundaryConditionError, CaseFileError, LightweightError, MaterialError,
                     MeshError, MeshFileError, OptimizationError, SingularStiffnessError,
                     SolverError, UnknownSetError)
from .mesh import Mesh, read_mesh, structured_grid, write_mesh
