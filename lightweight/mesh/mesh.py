"""The mesh data model: node coordinates, one type of solid cells, and named sets.

A :class:`Mesh` holds what every layer above needs and nothing about physics:

- ``points`` (n_nodes, dim) float64, ``dim`` is 2 or 3;
- ``cells`` (n_cells, nodes_per_cell) int64 in meshio/VTK node order, one ``cell_type``;
- ``node_sets`` {name: (k,) node ids}, ``cell_sets`` {name: (k,) cell ids},
  ``face_sets`` {name: (n_faces, nodes_per_face) node ids} of boundary faces. Every face set
  is also a node set of the same name (its nodes), so supports can name a face set.
- ``grid`` (nx, ny[, nz]) for structured grids (with ``grid_spacing`` and ``grid_origin``),
  which unlocks fast paths higher up; ``None`` for general meshes.

A grid made by :func:`~lightweight.mesh.grid.structured_grid` does not store ``points`` and
``cells``: they follow from the grid's axes, and a design iteration on a grid never reads them
(the multigrid, filter and responses work on the grid's shape), so keeping them cost 89 bytes per
hex (int64 cells 64, float64 points 25) for nothing. Reading either builds it, read-only (an
in-place change raises instead of being lost), and the same array is handed out again as long
as someone still holds it (a weak reference); ``n_nodes``, ``n_cells`` and ``dim`` never build
them. Assigning ``mesh.points`` or ``mesh.cells`` stores the new array as for any mesh.

Set lookups go through :meth:`Mesh.node_set`, :meth:`Mesh.face_set` and :meth:`Mesh.cell_set`,
which raise :class:`~lightweight.errors.UnknownSetError` listing the sets that do exist.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import MeshError, UnknownSetError
from .cell_types import CELL_TYPES, SOLID_TYPES, quadrature, shape_functions

Predicate = Callable[[np.ndarray], np.ndarray]


def _known(sets: dict) -> str:
    return ", ".join(repr(k) for k in sorted(sets)) or "(none)"


@dataclass(eq=False)
class Mesh:
    """A finite-element mesh of one solid cell type with named sets (see module docstring)."""

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    node_sets: dict[str, np.ndarray] = field(default_factory=dict)
    face_sets: dict[str, np.ndarray] = field(default_factory=dict)
    cell_sets: dict[str, np.ndarray] = field(default_factory=dict)
    grid: tuple[int, ...] | None = None
    grid_spacing: tuple[float, ...] | None = None
    grid_origin: tuple[float, ...] | None = None
    source: str | None = None   # file the mesh was read from, for messages and provenance

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if self.cell_type not in SOLID_TYPES:
            raise MeshError(f"unsupported cell type {self.cell_type!r}{where}; "
                            f"supported: {', '.join(SOLID_TYPES)}")
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise MeshError(f"points{where} must have shape (n_nodes, 2|3), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            bad = np.flatnonzero(~np.isfinite(pts).all(axis=1))
            raise MeshError(f"non-finite node coordinates{where} at nodes {bad[:10].tolist()}")
        ct = CELL_TYPES[self.cell_type]
        if ct.dim != pts.shape[1]:
            raise MeshError(f"{self.cell_type!r} cells need {ct.dim}D points{where}, "
                            f"got {pts.shape[1]}D")
        cells = np.asarray(self.cells)
        if cells.ndim != 2 or cells.shape[1] != ct.n_nodes:
            raise MeshError(f"cells{where} must have shape (n_cells, {ct.n_nodes}) for "
                            f"{self.cell_type!r}, got {cells.shape}")
        if cells.shape[0] == 0:
            raise MeshError(f"mesh{where} has no {self.cell_type!r} cells")
        cells = cells.astype(np.int64, copy=False)
        if cells.min() < 0 or cells.max() >= pts.shape[0]:
            bad = np.flatnonzero((cells < 0).any(axis=1) | (cells >= pts.shape[0]).any(axis=1))
            raise MeshError(f"cells {bad[:10].tolist()}{where} refer to nodes outside "
                            f"0..{pts.shape[0] - 1}")
        self.points = np.ascontiguousarray(pts)
        self.cells = np.ascontiguousarray(cells)
        self.node_sets = {str(k): self._check_ids(k, v, pts.shape[0], "node")
                          for k, v in self.node_sets.items()}
        self.cell_sets = {str(k): self._check_ids(k, v, cells.shape[0], "cell")
                          for k, v in self.cell_sets.items()}
        faces = dict(self.face_sets)
        self.face_sets = {}
        for name, f in faces.items():
            self.add_face_set(name, f)

    # ------------------------------------------------------------------ basic facts
    @property
    def dim(self) -> int:
        """Spatial dimension (2 or 3)."""
        axes = self.__dict__.get("_grid_axes")
        return len(axes) if axes is not None else self.points.shape[1]

    @property
    def n_nodes(self) -> int:
        axes = self.__dict__.get("_grid_axes")
        return int(np.prod([a.size for a in axes])) if axes is not None else self.points.shape[0]

    @property
    def n_cells(self) -> int:
        axes = self.__dict__.get("_grid_axes")
        return int(np.prod(self.grid)) if axes is not None else self.cells.shape[0]

    # ------------------------------------------------------------------ implicit grid arrays
    @property
    def stores_grid_arrays(self) -> bool:
        """False for a grid whose points and cells are built on reading (module docstring)."""
        return self.__dict__.get("_grid_axes") is None

    def drop_grid_arrays(self, axes: Sequence[np.ndarray]) -> None:
        """Stop storing points and cells of a quad/hex grid: rebuild them from ``axes`` on reading.

        axes: the node coordinates along each axis, (nx+1,), (ny+1,)[, (nz+1,)]. They must
        give back exactly the stored points, and the cells must be the grid numbering of
        :mod:`lightweight.mesh.grid`; a mesh that does not is a MeshError and keeps its arrays.
        """
        axes = tuple(np.array(a, dtype=np.float64) for a in axes)
        if (self.grid is None or self.cell_type not in ("quad", "hexahedron")
                or tuple(a.size - 1 for a in axes) != tuple(self.grid)):
            raise MeshError(f"drop_grid_arrays needs a quad/hex grid and one axis of n + 1 "
                            f"coordinates per grid direction, got grid {self.grid} and axes of "
                            f"{[a.size for a in axes]} values")
        if not (np.array_equal(grid_node_coordinates(axes), self.points)
                and np.array_equal(grid_cell_nodes(self.grid), self.cells)):
            raise MeshError(f"mesh{self._src()} is not the grid its axes and shape describe: "
                            f"its points and cells are kept")
        for a in axes:
            a.flags.writeable = False     # copies of the mesh share them
        self.__dict__.update(_grid_axes=axes, _points=None, _cells=None,
                             _points_ref=None, _cells_ref=None)

    def _built_on_reading(self, name: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        """The grid's array ``name`` as still held by someone, else built anew, read-only."""
        held = self.__dict__.get(f"_{name}_ref")
        value = held() if held is not None else None
        if value is None:
            value = build()
            value.flags.writeable = False
            self.__dict__[f"_{name}_ref"] = weakref.ref(value)
        return value

    def __getstate__(self) -> dict:
        # weak references do not pickle (Dask sends meshes to workers): drop them
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_ref")}

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        for name in ("points", "cells"):           # pickles from before the implicit arrays
            if name in state:
                state[f"_{name}"] = state.pop(name)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        g = f", grid={self.grid}" if self.grid else ""
        return (f"Mesh({self.n_cells} {self.cell_type} cells, {self.n_nodes} nodes, {self.dim}D{g}; "
                f"node sets [{_known(self.node_sets)}], face sets [{_known(self.face_sets)}], "
                f"cell sets [{_known(self.cell_sets)}])")

    def _check_ids(self, name, ids, n, what) -> np.ndarray:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        if ids.size and (ids[0] < 0 or ids[-1] >= n):
            raise MeshError(f"{what} set {name!r} refers to {what}s outside 0..{n - 1}")
        return ids

    # ------------------------------------------------------------------ named sets
    def add_node_set(self, name: str, ids_or_predicate) -> np.ndarray:
        """Add (or replace) a node set from node ids or a predicate ``f(points) -> bool mask``.

        Returns the node ids (sorted, unique). An empty result is an error: a predicate that
        selects nothing is almost always a wrong coordinate or tolerance.
        """
        if callable(ids_or_predicate):
            mask = np.asarray(ids_or_predicate(self.points), dtype=bool).ravel()
            if mask.shape != (self.n_nodes,):
                raise MeshError(f"predicate for node set {name!r} must return one bool per node "
                                f"({self.n_nodes}), got shape {mask.shape}")
            ids = np.flatnonzero(mask)
        else:
            ids = ids_or_predicate
        ids = self._check_ids(name, ids, self.n_nodes, "node")
        if ids.size == 0:
            raise MeshError(f"node set {name!r} is empty: the predicate or id list selects no node")
        self.node_sets[name] = ids
        return ids

    def add_cell_set(self, name: str, ids_or_predicate) -> np.ndarray:
        """Add a cell set from cell ids or a predicate ``f(cell_centers) -> bool mask``."""
        if callable(ids_or_predicate):
            mask = np.asarray(ids_or_predicate(self.cell_centers()), dtype=bool).ravel()
            if mask.shape != (self.n_cells,):
                raise MeshError(f"predicate for cell set {name!r} must return one bool per cell")
            ids = np.flatnonzero(mask)
        else:
            ids = ids_or_predicate
        ids = self._check_ids(name, ids, self.n_cells, "cell")
        if ids.size == 0:
            raise MeshError(f"cell set {name!r} is empty")
        self.cell_sets[name] = ids
        return ids

    def add_face_set(self, name: str, faces_or_predicate) -> np.ndarray:
        """Add a boundary face set from face connectivity or a node predicate.

        A predicate ``f(points) -> bool mask`` selects every boundary face whose nodes all
        satisfy it. The face set is also registered as a node set of the same name.
        """
        face_type = CELL_TYPES[self.cell_type].face_type
        n_face_nodes = CELL_TYPES[face_type].n_nodes
        if callable(faces_or_predicate):
            mask = np.asarray(faces_or_predicate(self.points), dtype=bool).ravel()
            bf = self.boundary_faces()
            faces = bf[mask[bf].all(axis=1)]
        else:
            faces = np.asarray(faces_or_predicate, dtype=np.int64)
            if faces.ndim == 1 and faces.size == 0:
                faces = faces.reshape(0, n_face_nodes)
        if faces.ndim != 2 or faces.shape[1] != n_face_nodes:
            raise MeshError(f"face set {name!r} must have shape (n_faces, {n_face_nodes}) "
                            f"({face_type} faces of {self.cell_type} cells), got {faces.shape}")
        if faces.shape[0] == 0:
            raise MeshError(f"face set {name!r} is empty")
        if faces.min() < 0 or faces.max() >= self.n_nodes:
            raise MeshError(f"face set {name!r} refers to nodes outside 0..{self.n_nodes - 1}")
        self.face_sets[name] = np.ascontiguousarray(faces)
        self.node_sets[name] = np.unique(faces)
        return faces

    def node_set(self, name: str) -> np.ndarray:
        """Node ids of a named node set (face sets count too)."""
        try:
            return self.node_sets[name]
        except KeyError:
            raise UnknownSetError(f"no node set {name!r} in the mesh{self._src()}; known node sets: "
                                  f"{_known(self.node_sets)}") from None

    def face_set(self, name: str) -> np.ndarray:
        """Face connectivity (n_faces, nodes_per_face) of a named boundary face set."""
        try:
            return self.face_sets[name]
        except KeyError:
            hint = (" (it is a node set: use PointLoad for forces on its nodes)"
                    if name in self.node_sets else "")
            raise UnknownSetError(f"no face set {name!r} in the mesh{self._src()}{hint}; known face "
                                  f"sets: {_known(self.face_sets)}") from None

    def cell_set(self, name: str) -> np.ndarray:
        """Cell ids of a named cell set."""
        try:
            return self.cell_sets[name]
        except KeyError:
            raise UnknownSetError(f"no cell set {name!r} in the mesh{self._src()}; known cell sets: "
                                  f"{_known(self.cell_sets)}") from None

    def cells_touching(self, name: str) -> np.ndarray:
        """Cell ids in a cell set, or of the cells having a node in a node/face set."""
        if name in self.cell_sets:
            return self.cell_sets[name]
        if name not in self.node_sets:
            raise UnknownSetError(f"no cell set or node/face set {name!r} in the mesh{self._src()}; known "
                                  f"cell sets: {_known(self.cell_sets)}; known node/face sets: "
                                  f"{_known(self.node_sets)}")
        nodes = self.node_set(name)
        mask = np.zeros(self.n_nodes, dtype=bool)
        mask[nodes] = True
        return np.flatnonzero(mask[self.cells].any(axis=1))

    def _src(self) -> str:
        return f" read from {self.source}" if self.source else ""

    # ------------------------------------------------------------------ geometry
    def cell_centers(self) -> np.ndarray:
        """Centroid of each cell's corner nodes, (n_cells, dim)."""
        n_corners = CELL_TYPES[self.cell_type].n_corners
        return self.points[self.cells[:, :n_corners]].mean(axis=1)

    def jacobian_determinants(self) -> np.ndarray:
        """det(dx/dxi) at each quadrature point, (n_cells, n_quadrature_points)."""
        xi, _ = quadrature(self.cell_type)
        _, dN = shape_functions(self.cell_type, xi)          # (q, a, r)
        simplex_dim = {"tetra": 3, "triangle": 2}.get(self.cell_type)
        if simplex_dim is not None and simplex_dim == self.points.shape[1] and len(xi) == 1:
            # linear simplex: dN is -1 for the first corner, 1 for corner r + 1, 0 else, so
            # J[d, r] = x[r + 1, d] - x[0, d]; the same numbers as the product below (the other
            # terms are exact zeros) without the (e, a, d) gather and the einsum (5x faster)
            corners = self.cells[:, :simplex_dim + 1]
            J = np.empty((self.n_cells, 1, simplex_dim, simplex_dim))
            for r in range(simplex_dim):
                J[:, 0, :, r] = self.points[corners[:, r + 1]] - self.points[corners[:, 0]]
            return np.linalg.det(J)
        coords = self.points[self.cells]                       # (e, a, d)
        J = np.einsum("ead,qar->eqdr", coords, dN)             # (e, q, d, r)
        return np.linalg.det(J)

    def uniform_cell_volume(self) -> float | None:
        """The volume (area in 2D) every cell has on a structured quad/hex grid (the product of
        the spacings), else None. Lets callers that keep per-cell volumes hold one number (or a
        stride-0 view) instead of an (n_cells,) vector: 8 B per cell each."""
        if self.grid is not None and self.cell_type in ("quad", "hexahedron") and self.grid_spacing:
            return float(np.prod(self.grid_spacing))
        return None

    def cell_volumes(self) -> np.ndarray:
        """Volume (3D) or area (2D) of each cell, (n_cells,), by Gauss quadrature.

        Structured quad/hex grids: every cell is the same box, the product of the spacings
        (no (n_cells, n_quadrature, dim, dim) Jacobians, ~0.8 kB per hex). Always a new,
        writable array (see :meth:`uniform_cell_volume` for the one number).
        """
        uniform = self.uniform_cell_volume()
        if uniform is not None:
            return np.full(self.n_cells, uniform)
        _, w = quadrature(self.cell_type)
        return self.jacobian_determinants() @ w

    def check_cells(self) -> None:
        """Raise MeshError naming inverted or degenerate cells (non-positive Jacobian)."""
        if self.grid is not None and self.cell_type in ("quad", "hexahedron") and self.grid_spacing:
            # every cell of a structured grid is the same box (the analysis uses cell 0's
            # element matrix for all): check that one. The whole-mesh Jacobians peaked at
            # ~0.9 kB per hex, the high-water mark of a grid run's memory.
            xi, _ = quadrature(self.cell_type)
            _, dN = shape_functions(self.cell_type, xi)
            detJ = np.linalg.det(np.einsum("ead,qar->eqdr", self.points[self.cells[:1]], dN))
        else:
            detJ = self.jacobian_determinants()
        scale = np.abs(detJ).max()
        bad = np.flatnonzero((detJ <= 1e-12 * scale).any(axis=1))
        if bad.size:
            raise MeshError(
                f"{bad.size} inverted or degenerate {self.cell_type} cell(s){self._src()}: "
                f"non-positive Jacobian in cells {bad[:20].tolist()}"
                f"{' ...' if bad.size > 20 else ''}; check their node order (meshio/VTK) and "
                f"for duplicate nodes")

    def boundary_faces(self) -> np.ndarray:
        """All boundary faces (faces owned by exactly one cell), (n_faces, nodes_per_face)."""
        if self.grid is not None and self.cell_type in ("quad", "hexahedron"):
            return self._grid_boundary_faces()
        faces, owners = self._all_faces()
        key = np.sort(faces[:, :CELL_TYPES[CELL_TYPES[self.cell_type].face_type].n_corners], axis=1)
        if self.n_nodes ** key.shape[1] < 2 ** 62:
            # the sorted corners as one int64 (base n_nodes): a 1D unique is ~10x faster than the
            # row-wise one (550k tets: 1.9 s against 19.9 s on a busy machine), same faces
            code = np.zeros(len(key), dtype=np.int64)
            for column in key.T:
                code = code * self.n_nodes + column
            key = code
        _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        return faces[counts[inverse.ravel()] == 1]

    def _grid_boundary_faces(self) -> np.ndarray:
        """boundary_faces of a structured box grid in O(surface): same faces, same order.

        Only cells touching the box surface can own a boundary face, and a face of such a cell is
        on the boundary iff all its nodes lie on one side of the box (grid numbering of
        :mod:`lightweight.mesh.grid`). Avoids sorting all faces of all cells (seconds and ~0.5 kB
        per cell at 10^6 hexes).
        """
        shape = tuple(self.grid)
        dim = len(shape)
        slabs = []
        for d in range(dim):
            for side in sorted({0, shape[d] - 1}):
                ranges = [np.arange(n) if e != d else np.array([side]) for e, n in enumerate(shape)]
                idx = np.meshgrid(*ranges, indexing="ij")
                ids, stride = 0, 1
                for e in range(dim):
                    ids = ids + idx[e] * stride
                    stride *= shape[e]
                slabs.append(np.ravel(ids))
        surface_cells = np.unique(np.concatenate(slabs))        # sorted: cell order kept
        local = np.array(CELL_TYPES[self.cell_type].faces)
        # the surface cells' nodes from the numbering alone: reading self.cells of a grid that
        # does not store them would build all n_cells rows for each face set
        faces = grid_cell_nodes(shape, surface_cells)[:, local].reshape(-1, local.shape[1])
        on_boundary = np.zeros(len(faces), dtype=bool)
        rest = faces
        for d in range(dim):
            index = rest % (shape[d] + 1)                      # node index along axis d
            rest = rest // (shape[d] + 1)
            for side in (0, shape[d]):
                on_boundary |= (index == side).all(axis=1)
        return faces[on_boundary]

    def _all_faces(self) -> tuple[np.ndarray, np.ndarray]:
        ct = CELL_TYPES[self.cell_type]
        local = np.array(ct.faces)                   # (n_faces_per_cell, nodes_per_face)
        faces = self.cells[:, local].reshape(-1, local.shape[1])
        owners = np.repeat(np.arange(self.n_cells), local.shape[0])
        return faces, owners

    def face_owners(self, faces: np.ndarray) -> np.ndarray:
        """The cell owning each given boundary face (matched by corner nodes), (n_faces,).

        Raises MeshError if a face is not a face of any cell.
        """
        all_faces, owners = self._all_faces()
        n_corners = CELL_TYPES[CELL_TYPES[self.cell_type].face_type].n_corners
        table = {tuple(k): o for k, o in zip(np.sort(all_faces[:, :n_corners], axis=1).tolist(),
                                               owners.tolist())}
        result = np.empty(len(faces), dtype=np.int64)
        for i, key in enumerate(np.sort(np.asarray(faces)[:, :n_corners], axis=1).tolist()):
            owner = table.get(tuple(key))
            if owner is None:
                raise MeshError(f"face {np.asarray(faces)[i].tolist()} is not a face of any "
                                f"{self.cell_type} cell{self._src()}")
            result[i] = owner
        return result

    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        """(min corner, max corner) of the node coordinates, each (dim,)."""
        return self.points.min(axis=0), self.points.max(axis=0)


def nodal_average(mesh: Mesh, cell_values: np.ndarray) -> np.ndarray:
    """Volume-weighted average of a cell field over the cells around each node, (n_nodes,).

    The one cell-to-node averaging of the package (pictures, iso-surfaces, export); stresses
    are extrapolated from integration points instead (fem/stress.py). Nodes no cell uses get 0.
    """
    vols = np.abs(mesh.cell_volumes())
    cells = mesh.cells
    values = np.asarray(cell_values, dtype=float)
    weight = np.bincount(cells.ravel(), weights=np.repeat(vols, cells.shape[1]), minlength=mesh.n_nodes)
    total = np.bincount(cells.ravel(), weights=np.repeat(vols * values, cells.shape[1]),
                        minlength=mesh.n_nodes)
    return total / np.where(weight > 0, weight, 1.0)


def _get_points(mesh: Mesh) -> np.ndarray:
    stored = mesh.__dict__.get("_points")
    if stored is not None or mesh.__dict__.get("_grid_axes") is None:
        return stored
    return mesh._built_on_reading("points", lambda: grid_node_coordinates(mesh._grid_axes))


def _get_cells(mesh: Mesh) -> np.ndarray:
    stored = mesh.__dict__.get("_cells")
    if stored is not None or mesh.__dict__.get("_grid_axes") is None:
        return stored
    return mesh._built_on_reading("cells", lambda: grid_cell_nodes(mesh.grid))


def _setter(name: str):
    other = "cells" if name == "points" else "points"

    def store(mesh: Mesh, value) -> None:
        # an assigned array is stored as for any mesh; on a grid that stored neither, the other
        # array is stored too (a writable copy), from then on the mesh keeps both
        if mesh.__dict__.get("_grid_axes") is not None:
            mesh.__dict__[f"_{other}"] = np.array(getattr(mesh, other))
            mesh.__dict__.pop("_grid_axes")
        mesh.__dict__[f"_{name}"] = value
    return store


# Properties over the dataclass fields (assigned after the decorator, which would otherwise
# take them for the fields' defaults): the dataclass __init__ stores through the setters.
Mesh.points = property(_get_points, _setter("points"),
                       doc="Node coordinates (n_nodes, dim) float64 (built on reading for grids).")
Mesh.cells = property(_get_cells, _setter("cells"),
                      doc="Cell node ids (n_cells, nodes_per_cell) int64 (built on reading for grids).")


def grid_node_coordinates(axes: Sequence[np.ndarray]) -> np.ndarray:
    """Node coordinates (n_nodes, dim) of a grid from its per-axis coordinates, x fastest.

    axes: (nx+1,), (ny+1,)[, (nz+1,)] float64. Node (i, j[, k]) is row i + (nx+1)(j + (ny+1)k).
    """
    # meshgrid with indexing="ij" over the reversed axes makes x the fastest index
    mesh_axes = np.meshgrid(*axes[::-1], indexing="ij")
    return np.stack([a.ravel() for a in mesh_axes[::-1]], axis=1)


def grid_cell_nodes(shape: Sequence[int], cell_ids: np.ndarray | None = None) -> np.ndarray:
    """Cells (n_cells, 4 or 8) int64 of a (nx, ny[, nz]) grid in VTK order, x fastest.

    Cell (i, j[, k]) is row i + nx(j + ny k); its nodes go counter-clockwise around the bottom
    face, then the top face, starting at node (i, j[, k]). cell_ids: only these rows, (k,).
    """
    nx, ny = int(shape[0]), int(shape[1])
    ids = (np.arange(int(np.prod(shape)), dtype=np.int64) if cell_ids is None
           else np.asarray(cell_ids, dtype=np.int64))
    i, j = ids % nx, (ids // nx) % ny
    if len(shape) == 2:
        n0 = i + (nx + 1) * j
        return np.stack([n0, n0 + 1, n0 + nx + 2, n0 + nx + 1], axis=1)
    k = ids // (nx * ny)
    n0 = i + (nx + 1) * (j + (ny + 1) * k)
    layer = (nx + 1) * (ny + 1)
    bottom = [n0, n0 + 1, n0 + nx + 2, n0 + nx + 1]
    return np.stack(bottom + [b + layer for b in bottom], axis=1)
