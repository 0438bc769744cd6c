"""What every manufacturing rule is, and the pieces the rules share.

A rule is a small object built by the user (``lw.Overhang("+y")``) and turned into parts of the
density chain when an optimization is set up, through four optional hooks that
:mod:`lightweight.optimize.api` calls:

``stage(model, design)``
    a :class:`~lightweight.optimize.stages.Stage` inserted after the projection (overhang,
    draw direction, minimum member size), or None when the rule acts elsewhere;
``ties(mesh)``
    pairs of cells (rows, cols) that share one design variable (symmetry, extrusion,
    patterns): :class:`~lightweight.optimize.design.DesignSpace` turns them into its map;
``constraints(model)``
    extra :class:`~lightweight.optimize.responses.Constraint` objects (maximum member size);
``violation(model, density)``
    the fraction of solid material (cells with ρ > 0.5, by volume) that breaks the rule, for
    :func:`~lightweight.optimize.manufacturing.check_manufacturing` and batch reports.

Rules register under a name (``MANUFACTURING``) so a case file's ``[[optimize.manufacturing]]``
table with ``type = "overhang"`` builds ``Overhang(**rest)``.

Directions are written "+x", "-y", "z" (= "+z"), or as a vector for the rules that accept any
direction (draw direction on unstructured meshes).
"""

from __future__ import annotations

import numpy as np

from ..._registry import Registry
from ...errors import OptimizationError

MANUFACTURING = Registry("manufacturing rule")
AXES = {"x": 0, "y": 1, "z": 2}
SOLID = 0.5           # threshold of the checks: a cell with ρ > SOLID is material


def register_rule(name: str):
    """Class decorator: make a rule available by ``name`` to case files (``make_rule``)."""
    return MANUFACTURING.register(name)


class Rule:
    """Base class of the manufacturing rules (see module docstring)."""

    name = "rule"

    def stage(self, model, design):
        return None

    def ties(self, mesh):
        return None

    def constraints(self, model) -> list:
        return []

    def violation(self, model, density: np.ndarray) -> float:
        raise NotImplementedError

    def label(self) -> str:
        """Short text naming the rule and its settings, the key of check reports."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "type")
        return f"{self.name}({args})"

    def describe(self) -> dict:
        return {"type": self.name}

    def __repr__(self) -> str:
        return f"lw.{type(self).__name__}: {self.label()}"


def parse_axis_direction(direction, dim: int, what: str) -> tuple[int, int]:
    """(axis, sign) of "+y" | "-z" | "x"; an OptimizationError naming ``what`` otherwise."""
    if isinstance(direction, str):
        text = direction.strip().lower()
        sign = -1 if text.startswith("-") else 1
        axis_name = text.lstrip("+-")
        if axis_name in AXES and AXES[axis_name] < dim:
            return AXES[axis_name], sign
    raise OptimizationError(f"{what}: direction must be one of "
                            f"{', '.join(s + a for a in 'xyz'[:dim] for s in '+-')}, got {direction!r}")


def direction_vector(direction, dim: int, what: str) -> np.ndarray:
    """Unit vector (dim,) of "+y"-style text or of a vector of dim numbers."""
    if isinstance(direction, str):
        axis, sign = parse_axis_direction(direction, dim, what)
        vector = np.zeros(dim)
        vector[axis] = sign
        return vector
    vector = np.asarray(direction, dtype=float).ravel()
    if vector.shape != (dim,) or not np.all(np.isfinite(vector)) or not np.linalg.norm(vector) > 0:
        raise OptimizationError(f"{what}: direction must be '+x'-style text or {dim} numbers (not all "
                                f"zero), got {direction!r}")
    return vector / np.linalg.norm(vector)


def model_mesh(model):
    """The mesh of a model (or a mesh itself)."""
    return getattr(model, "mesh", model)


def check_density(mesh, density, what: str) -> np.ndarray:
    density = np.asarray(density, dtype=float).ravel()
    if density.shape != (mesh.n_cells,):
        raise OptimizationError(f"{what}: the density field has {density.size} values but the mesh has "
                                f"{mesh.n_cells} cells")
    return density


def solid_fraction(mesh, violating: np.ndarray, solid: np.ndarray) -> float:
    """Volume of violating cells / volume of solid cells (0 when nothing is solid)."""
    volumes = mesh.cell_volumes()
    total = float(volumes[solid].sum())
    return float(volumes[violating & solid].sum()) / total if total > 0 else 0.0


def cell_size(mesh) -> np.ndarray:
    """Edge length of a cube (square in 2D) of each cell's volume (area), (n_cells,)."""
    return mesh.cell_volumes() ** (1.0 / mesh.dim)


def smooth_min(a: np.ndarray, b: np.ndarray, epsilon: float):
    """Langelaar's smooth minimum 0.5 (a + b - sqrt((a - b)^2 + ε) + sqrt ε) and its partials (d/da, d/db).

    Exact at a = b, within sqrt(ε)/2 of min(a, b) elsewhere, and 0 at a = b = 0.
    """
    root = np.sqrt((a - b) ** 2 + epsilon)
    value = 0.5 * (a + b - root + np.sqrt(epsilon))
    slope = (a - b) / root
    return value, 0.5 * (1.0 - slope), 0.5 * (1.0 + slope)
