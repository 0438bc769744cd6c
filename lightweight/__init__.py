"""lightweight: structural optimization with Numba finite elements and SIMP.

The public names (docs/architecture.md, "Public surface") live here; everything else may move.
"""

from . import _threads  # noqa: F401  (first: sets thread defaults before MKL starts)
from ._version import __version__
from .errors import (BoundaryConditionError, CaseFileError, LightweightError, MaterialError,
                     MeshError, MeshFileError, OptimizationError, SingularStiffnessError,
                     SolverError, UnknownSetError)
from .fem import (BodyForce, Gravity, Material, Model, NodalForces, PointLoad, Pressure, Solution,
                  Traction,
                  solve, Modes, modes)
from .fem.loads import Coupling, Force, Spring
from .mesh import Mesh, read_mesh, read_mesh_fields, read_metadata, structured_grid, write_mesh
from .optimize import (DisplacementLimit, OptimizationResult, Problem, minimize_compliance, minimize_mass,
                       optimize_problem)
from .optimize import maximize_frequency
from .optimize.manufacturing import (DrawDirection, Extrusion, MemberSize, Overhang, Pattern, Symmetry,
                                     check_manufacturing)
# viz/export/report import pyvista lazily: these names work without the viz extra installed
from .export import evaluate_exported, export_solid, export_surface
from .report import write_report
from .verify import ExportCheck, verify_export
from .viz import SnapshotWriter, convergence_plot, plot, snapshot_writer
# the platform's layer: case files, built-in cases, batch evaluation
from . import cases
from .batch import evaluate_design, evaluate_designs
from .casefile import Case, evaluate_requirements, read_case

__all__ = [
    "__version__", "LightweightError", "MeshError", "MeshFileError", "UnknownSetError",
    "MaterialError", "BoundaryConditionError", "SingularStiffnessError", "SolverError",
    "OptimizationError", "CaseFileError",
    "Mesh", "read_mesh", "read_mesh_fields", "read_metadata", "write_mesh", "structured_grid",
    "Material", "Model", "PointLoad", "Traction", "Pressure", "BodyForce", "Gravity", "NodalForces",
    "Force", "Coupling", "Spring",
    "Solution", "solve", "Modes", "modes",
    "minimize_compliance", "minimize_mass", "optimize_problem", "Problem", "DisplacementLimit",
    "maximize_frequency",
    "OptimizationResult",
    "Overhang", "DrawDirection", "MemberSize", "Pattern", "Symmetry", "Extrusion", "check_manufacturing",
    "plot", "convergence_plot", "SnapshotWriter", "snapshot_writer",
    "export_surface", "export_solid", "evaluate_exported", "write_report", "verify_export", "ExportCheck",
    "cases", "Case", "read_case", "evaluate_requirements", "evaluate_design", "evaluate_designs",
]
