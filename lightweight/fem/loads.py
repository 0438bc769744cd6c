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

- :class:`Force`: a total force vector on a face set, spread in proportion to area (a uniform
  traction of total / area), so the resultant is exactly the given vector on any mesh.
- :class:`Coupling`: a force and a moment at a reference point, distributed to the nodes of a
  set by weights without adding stiffness (Nastran's RBE3 idea; see :func:`coupling_forces`).
- :class:`Spring`: a bushing, springs from the nodes of a set to ground (a support, not a load:
  it goes in ``supports``); its stiffness (kx, ky, kz) is the whole set's, split over its nodes.

In 2D, areas are edge length times thickness and volumes are area times thickness.

Why RBE3 by the textbook formula: a reference point tied to the set with rigid links (RBE2)
would stiffen the bore it loads, which the optimizer would then exploit; the weighted
distribution keeps the structure's own stiffness and reproduces the resultant force and moment
exactly. The node forces are f_i = w_i F / W + w_i (J^-1 M_c) x r_i, with r_i the node's
offset from the weighted centroid c, M_c = M + (p - c) x F the moment about c, and
J = sum w_i (|r_i|^2 I - r_i r_i^T); summing gives F and, about p, M.
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


@dataclass(frozen=True)
class Force:
    """Total force vector (force units, (dim,)) on face set ``set``, spread over it by area."""

    set: str
    total: Sequence[float]

    def describe(self) -> dict:
        return {"type": "force", "set": self.set, "value": list(map(float, self.total))}


@dataclass(frozen=True)
class Coupling:
    """Force (dim,) and moment (3,; a scalar about z in 2D) at ``point`` (dim,), carried by the
    nodes of set ``set`` with weights (RBE3-like: no added stiffness).

    weights: "area" (a face set's tributary areas; nodes of a plain node set weigh equally) or
    "equal".
    """

    set: str
    point: Sequence[float]
    force: Sequence[float] = (0.0, 0.0, 0.0)
    moment: Sequence[float] | float = (0.0, 0.0, 0.0)
    weights: str = "area"

    def describe(self) -> dict:
        moment = self.moment
        moment = [float(m) for m in moment] if isinstance(moment, (list, tuple, np.ndarray)) else float(moment)
        return {"type": "coupling", "set": self.set, "point": list(map(float, self.point)),
                "force": list(map(float, self.force)), "moment": moment, "weights": self.weights}


@dataclass(frozen=True)
class Spring:
    """Springs to ground on the nodes of ``set`` (a bushing): total stiffness (kx, ky[, kz])
    (force / length) of the whole set, split equally over its nodes. A support: pass it in
    ``supports={"bushing": lw.Spring("bushing", (kx, ky, kz))}``."""

    set: str
    stiffness: Sequence[float]

    def describe(self) -> dict:
        return {"type": "spring", "set": self.set, "stiffness": list(map(float, self.stiffness))}

    def node_stiffness(self, mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
        """(DOF ids (k,), stiffness per DOF (k,)) this spring adds to K's diagonal."""
        nodes = mesh.node_set(self.set)
        k = np.asarray(self.stiffness, dtype=float).ravel()
        if mesh.dim == 2 and k.size == 3 and k[2] == 0.0:
            k = k[:2]
        if k.size != mesh.dim or not np.all(np.isfinite(k)) or np.any(k < 0):
            raise BoundaryConditionError(f"Spring({self.set!r}) stiffness must be {mesh.dim} finite numbers "
                                         f">= 0 (kx, ky{', kz' if mesh.dim == 3 else ''}), got "
                                         f"{self.stiffness!r}")
        dofs = (nodes[:, None] * mesh.dim + np.arange(mesh.dim)[None, :]).ravel()
        per_dof = np.tile(k / nodes.size, nodes.size)
        keep = per_dof > 0
        return dofs[keep], per_dof[keep]


Load = PointLoad | Traction | Pressure | BodyForce | Gravity | NodalForces | Force | Coupling


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
    if isinstance(load, Force):
        faces = mesh.face_set(load.set)
        weights, _ = _face_integrals(mesh, faces, thickness)
        vec = _vector(load.total, dim, f"Force({load.set!r}) total")
        area = float(weights.sum())
        if not area > 0:
            raise BoundaryConditionError(f"Force({load.set!r}): face set {load.set!r} has zero area")
        per_node = weights.sum(axis=1)[:, :, None] * (vec / area)[None, None, :]
        np.add.at(forces, faces.ravel(), per_node.reshape(-1, dim))
        return forces
    if isinstance(load, Coupling):
        nodes, node_forces = coupling_forces(mesh, load, thickness)
        forces[nodes] += node_forces
        return forces
    raise BoundaryConditionError(f"unknown load {load!r}: use PointLoad, Traction, Pressure, Force, "
                                 f"Coupling, BodyForce or Gravity")


def set_node_weights(mesh: Mesh, name: str, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(node ids (k,), tributary area of each (k,)) of a face set; equal weights 1 for a plain node set."""
    if name in mesh.face_sets:
        faces = mesh.face_sets[name]
        weights, _ = _face_integrals(mesh, faces, thickness)
        per_node = np.zeros(mesh.n_nodes)
        np.add.at(per_node, faces.ravel(), weights.sum(axis=1).ravel())
        nodes = np.unique(faces)
        return nodes, per_node[nodes]
    nodes = mesh.node_set(name)
    return nodes, np.ones(nodes.size)


def coupling_forces(mesh: Mesh, load: Coupling, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Node ids (k,) and forces (k, dim) that carry a Coupling's force and moment (module docstring).

    Their sum is the force; their moment about the reference point is the moment.
    """
    dim = mesh.dim
    if load.weights == "area":
        nodes, w = set_node_weights(mesh, load.set, thickness)
    elif load.weights == "equal":
        nodes = mesh.node_set(load.set)
        w = np.ones(nodes.size)
    else:
        raise BoundaryConditionError(f"Coupling({load.set!r}): weights must be 'area' or 'equal', "
                                     f"got {load.weights!r}")
    if not (w.sum() > 0):
        raise BoundaryConditionError(f"Coupling({load.set!r}): the set's weights sum to zero")
    point = _vector(load.point, dim, f"Coupling({load.set!r}) point")
    force = _vector(load.force, dim, f"Coupling({load.set!r}) force")
    x = mesh.points[nodes]
    centroid = (w[:, None] * x).sum(axis=0) / w.sum()
    r = x - centroid
    out = w[:, None] * force[None, :] / w.sum()
    if dim == 2:
        moment = np.asarray(load.moment, dtype=float).ravel()
        moment = float(moment[-1]) if moment.size in (1, 3) else np.nan
        if not np.isfinite(moment):
            raise BoundaryConditionError(f"Coupling({load.set!r}): the 2D moment is one number (about z), "
                                         f"got {load.moment!r}")
        arm = centroid - point
        m_c = moment - (arm[0] * force[1] - arm[1] * force[0])
        polar = float((w * (r ** 2).sum(axis=1)).sum())
        if m_c != 0.0:
            if not polar > 0:
                raise BoundaryConditionError(f"Coupling({load.set!r}): a single node cannot carry a moment")
            out += (m_c / polar) * w[:, None] * np.column_stack([-r[:, 1], r[:, 0]])
        return nodes, out
    moment = _vector(load.moment, 3, f"Coupling({load.set!r}) moment")
    m_c = moment + np.cross(point - centroid, force)
    if np.any(m_c != 0.0):
        inertia = (w[:, None, None] * ((r ** 2).sum(axis=1)[:, None, None] * np.eye(3)[None]
                                       - r[:, :, None] * r[:, None, :])).sum(axis=0)
        scale = max(np.trace(inertia), 1e-300)
        if np.linalg.cond(inertia / scale) > 1e10:
            # collinear nodes: no moment about their line can be carried by forces on them
            raise BoundaryConditionError(f"Coupling({load.set!r}): the set's nodes lie on a line (or are "
                                         f"one node) and cannot carry the moment about that line; "
                                         f"couple to a face set around the point")
        a = np.linalg.solve(inertia, m_c)
        out += w[:, None] * np.cross(a[None, :], r)
    return nodes, out


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
