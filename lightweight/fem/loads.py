"""Loads and supports: what a user applies, and their consistent nodal vectors.

- :class:`PointLoad`: a force vector on every node of a node set (or split over them).
- :class:`Traction`: force per area on a boundary face set, consistent nodal loads
  ``f_a = ∫ N_a t dA`` by Gauss quadrature on the faces (so quadratic faces get the
  corner/mid-edge split of the element, not an equal share).
- :class:`Pressure`: a normal pressure on a face set; positive pushes into the body
  (force = -p * outward normal), with the outward side found from the face's owner cell,
  so the face's node order in the file does not matter.
- :class:`BodyForce` (force per volume) and :class:`Gravity` (acceleration, times the
  material's mass density): per-cell consistent vectors ``∫ N_a b dV``, kept per cell so the
  optimizer can scale self-weight with the design's density.

In 2D, areas are edge length times thickness and volumes are area times thickness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import BoundaryConditionError
from ..mesh.cell_types import CELL_TYPES, quadrature, shape_functions
from ..mesh.mesh import Mesh

COMPONENTS = "xyz"


def _vector(value, dim: int, what: str) -> np.ndarray:
    vec = np.asarray(value, dtype=float).ravel()
    # Allow a 3-vector with zero z in 2D (users copy vectors between 2D and 3D scripts).
    if dim == 2 and vec.size == 3 and vec[2] == 0.0:
        vec = vec[:2]
    if vec.size != dim or not np.all(np.isfinite(vec)):
        raise BoundaryConditionError(f"{what} must be {dim} finite numbers for a {dim}D model, "
                                     f"got {value!r}")
    return vec


@dataclass(frozen=True)
class PointLoad:
    """Force on each node of node set ``set`` (``distribute="total"``: split equally)."""

    set: str
    force: Sequence[float]
    distribute: str = "each"

    def describe(self) -> dict:
        return {"type": "point", "set": self.set, "value": list(map(float, self.force)),
                "distribute": self.distribute}


@dataclass(frozen=True)
class Traction:
    """Force per area (vector) on the boundary faces of face set ``set``."""

    set: str
    traction: Sequence[float]

    def describe(self) -> dict:
        return {"type": "traction", "set": self.set, "value": list(map(float, self.traction))}


@dataclass(frozen=True)
class Pressure:
    """Normal pressure on face set ``set``; positive pushes into the body."""

    set: str
    pressure: float

    def describe(self) -> dict:
        return {"type": "pressure", "set": self.set, "value": float(self.pressure)}


@dataclass(frozen=True)
class BodyForce:
    """Force per volume on every cell (or the cells of cell set ``set``)."""

    force_per_volume: Sequence[float]
    set: str | None = None

    def describe(self) -> dict:
        return {"type": "body", "set": self.set, "value": list(map(float, self.force_per_volume))}


@dataclass(frozen=True)
class Gravity:
    """Gravitational acceleration vector; the body force is material density times it."""

    acceleration: Sequence[float]
    set: str | None = None

    def describe(self) -> dict:
        return {"type": "gravity", "set": self.set, "value": list(map(float, self.acceleration))}


@dataclass(frozen=True, eq=False)
class NodalForces:
    """An explicit nodal force array (n_nodes, dim), e.g. imported from another FE code."""

    forces: np.ndarray

    def describe(self) -> dict:
        arr = np.asarray(self.forces, dtype=float)
        return {"type": "nodal", "total": arr.sum(axis=0).tolist(), "n_loaded_nodes":
                int(np.count_nonzero(np.any(arr != 0, axis=1)))}


Load = PointLoad | Traction | Pressure | BodyForce | Gravity | NodalForces


def _face_integrals(mesh: Mesh, faces: np.ndarray, thickness: float):
    """Shape-function integrals on faces: (n_faces, n_q, nodes_per_face) N*w*dA and normals.

    Returns (weights N_a * w_q * |dA| (n_faces, n_q, n_per), unit normals (n_faces, n_q, dim)
    oriented by the right-hand rule of the face's node order).
    """
    face_type = CELL_TYPES[mesh.cell_type].face_type
    xi, w = quadrature(face_type, degree=4 if face_type in ("triangle6", "line3") else 2)
    N, dN = shape_functions(face_type, xi)                 # (q, a), (q, a, r)
    coords = mesh.points[faces]                             # (f, a, d)
    tangents = np.einsum("fad,qar->fqdr", coords, dN)       # (f, q, d, r)
    if mesh.dim == 2:
        t = tangents[..., 0]
        normal = np.stack([t[..., 1], -t[..., 0]], axis=-1)  # outward for CCW cells
        measure = np.linalg.norm(t, axis=-1) * thickness
    else:
        normal = np.cross(tangents[..., 0], tangents[..., 1])
        measure = np.linalg.norm(normal, axis=-1)
    unit = normal / np.where(measure > 0, np.linalg.norm(normal, axis=-1), 1.0)[..., None]
    weights = N[None, :, :] * (w[None, :] * measure)[:, :, None]
    return weights, unit


def _outward_sign(mesh: Mesh, faces: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """+1/-1 per face so that sign * normal points out of the owner cell."""
    owners = mesh.face_owners(faces)
    face_center = mesh.points[faces].mean(axis=1)
    cell_center = mesh.cell_centers()[owners]
    direction = np.einsum("fd,fd->f", normals.mean(axis=1), face_center - cell_center)
    return np.where(direction >= 0, 1.0, -1.0)


def nodal_forces(mesh: Mesh, load, thickness: float = 1.0) -> np.ndarray:
    """Consistent nodal force array (n_nodes, dim) of a design-independent load."""
    dim = mesh.dim
    forces = np.zeros((mesh.n_nodes, dim))
    if isinstance(load, PointLoad):
        nodes = mesh.node_set(load.set)
        vec = _vector(load.force, dim, f"PointLoad({load.set!r}) force")
        if load.distribute == "total":
            vec = vec / nodes.size
        elif load.distribute != "each":
            raise BoundaryConditionError(f"PointLoad({load.set!r}): distribute must be 'each' or "
                                         f"'total', got {load.distribute!r}")
        forces[nodes] += vec
        return forces
    if isinstance(load, NodalForces):
        arr = np.asarray(load.forces, dtype=float)
        if arr.shape != forces.shape or not np.all(np.isfinite(arr)):
            raise BoundaryConditionError(f"NodalForces must be a finite array of shape {forces.shape}, "
                                         f"got {arr.shape}")
        return arr.copy()
    if isinstance(load, (Traction, Pressure)):
        faces = mesh.face_set(load.set)
        weights, normals = _face_integrals(mesh, faces, thickness)
        if isinstance(load, Traction):
            vec = _vector(load.traction, dim, f"Traction({load.set!r}) traction")
            per_node = weights.sum(axis=1)[:, :, None] * vec[None, None, :]   # (f, a, d)
        else:
            p = float(load.pressure)
            if not np.isfinite(p):
                raise BoundaryConditionError(f"Pressure({load.set!r}) must be finite, got {p}")
            sign = _outward_sign(mesh, faces, normals)
            # force = -p n_out at each Gauss point, integrated against N_a
            per_node = -p * sign[:, None, None] * np.einsum("fqa,fqd->fad", weights, normals)
        np.add.at(forces, faces.ravel(), per_node.reshape(-1, dim))
        return forces
    raise BoundaryConditionError(f"unknown load {load!r}: use PointLoad, Traction, Pressure, "
                                 f"BodyForce or Gravity")


def cell_shape_integrals(mesh: Mesh, thickness: float = 1.0) -> np.ndarray:
    """∫ N_a dV for each cell's nodes, (n_cells, nodes_per_cell): body-force lumping weights."""
    xi, w = quadrature(mesh.cell_type)
    if mesh.cell_type in ("tetra", "triangle"):
        xi, w = quadrature(mesh.cell_type, degree=2)     # exact for linear N on straight cells
    N, dN = shape_functions(mesh.cell_type, xi)
    coords = mesh.points[mesh.cells]
    J = np.einsum("ead,qar->eqdr", coords, dN)
    detJ = np.linalg.det(J)
    t = thickness if mesh.dim == 2 else 1.0
    return np.einsum("eq,q,qa->ea", detJ, w, N) * t


def body_force_density(mesh: Mesh, load, material_density: float) -> tuple[np.ndarray, np.ndarray]:
    """Force per volume vector (dim,) and the cells it acts on (ids) for BodyForce/Gravity."""
    if isinstance(load, Gravity):
        vec = _vector(load.acceleration, mesh.dim, "Gravity acceleration") * material_density
        if material_density == 0.0:
            raise BoundaryConditionError("Gravity needs a material density > 0 (Material(density=...))")
    else:
        vec = _vector(load.force_per_volume, mesh.dim, "BodyForce force_per_volume")
    cells = mesh.cell_set(load.set) if load.set is not None else np.arange(mesh.n_cells)
    return vec, cells
