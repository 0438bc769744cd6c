"""Reference elements: node counts, boundary faces, shape functions and quadrature rules.

This is geometry, not physics: the FE layer (``lightweight.fem``) builds stiffness matrices
from these tables, the mesh layer uses them for volumes, centroids and boundary faces.
Node orders follow meshio/VTK (which equal Abaqus/CalculiX for every type here), so meshes
round-trip without renumbering.

Shapes: ``shape_functions(name, xi)`` takes natural coordinates ``xi`` of shape
``(n_points, ref_dim)`` and returns ``N`` of shape ``(n_points, n_nodes)`` and
``dN/dxi`` of shape ``(n_points, n_nodes, ref_dim)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellType:
    """Static description of one meshio cell type."""

    name: str
    dim: int                 # topological dimension of the reference element
    n_nodes: int
    n_corners: int
    face_type: str | None    # meshio name of the boundary faces
    faces: tuple[tuple[int, ...], ...]  # local node ids of each face, outward orientation


# Faces are listed so that the right-hand rule gives the outward normal for a
# positively oriented cell (VTK convention). Quadratic faces list corners first,
# then mid-edge nodes in the face's own VTK order.
CELL_TYPES: dict[str, CellType] = {
    "line": CellType("line", 1, 2, 2, "vertex", ((0,), (1,))),
    "line3": CellType("line3", 1, 3, 2, "vertex", ((0,), (1,))),
    "triangle": CellType("triangle", 2, 3, 3, "line", ((0, 1), (1, 2), (2, 0))),
    "triangle6": CellType("triangle6", 2, 6, 3, "line3", ((0, 1, 3), (1, 2, 4), (2, 0, 5))),
    "quad": CellType("quad", 2, 4, 4, "line", ((0, 1), (1, 2), (2, 3), (3, 0))),
    "tetra": CellType("tetra", 3, 4, 4, "triangle",
                      ((0, 2, 1), (0, 1, 3), (1, 2, 3), (0, 3, 2))),
    "tetra10": CellType("tetra10", 3, 10, 4, "triangle6",
                        ((0, 2, 1, 6, 5, 4), (0, 1, 3, 4, 8, 7),
                         (1, 2, 3, 5, 9, 8), (0, 3, 2, 7, 9, 6))),
    "hexahedron": CellType("hexahedron", 3, 8, 8, "quad",
                           ((0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4),
                            (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))),
}

# Element types the FE core can solve (volume cells of a 2D or 3D model).
SOLID_TYPES = ("triangle", "quad", "tetra", "tetra10", "hexahedron")
# Types that can be boundary faces (for tractions/pressure).
FACE_TYPES = ("line", "line3", "triangle", "triangle6", "quad")


def cell_type(name: str) -> CellType:
    """Look up a cell type by meshio name; raises KeyError for unknown names."""
    return CELL_TYPES[name]


_HEX_CORNERS = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                         [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=float)
_QUAD_CORNERS = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)


def shape_functions(name: str, xi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape functions and natural derivatives of cell type ``name`` at points ``xi``.

    xi: (n_points, ref_dim). Returns N (n_points, n_nodes), dN (n_points, n_nodes, ref_dim).
    """
    xi = np.atleast_2d(np.asarray(xi, dtype=float))
    n_pts = xi.shape[0]
    if name == "line":
        s = xi[:, 0]
        N = np.stack([(1 - s) / 2, (1 + s) / 2], axis=1)
        dN = np.zeros((n_pts, 2, 1))
        dN[:, 0, 0], dN[:, 1, 0] = -0.5, 0.5
        return N, dN
    if name == "line3":  # nodes at s = -1, +1, 0
        s = xi[:, 0]
        N = np.stack([s * (s - 1) / 2, s * (s + 1) / 2, 1 - s * s], axis=1)
        dN = np.stack([s - 0.5, s + 0.5, -2 * s], axis=1)[:, :, None]
        return N, dN
    if name == "quad":
        c = _QUAD_CORNERS
        a = 1 + xi[:, None, 0] * c[None, :, 0]
        b = 1 + xi[:, None, 1] * c[None, :, 1]
        N = a * b / 4
        dN = np.stack([c[None, :, 0] * b / 4, a * c[None, :, 1] / 4], axis=2)
        return N, dN
    if name == "hexahedron":
        c = _HEX_CORNERS
        a = 1 + xi[:, None, 0] * c[None, :, 0]
        b = 1 + xi[:, None, 1] * c[None, :, 1]
        d = 1 + xi[:, None, 2] * c[None, :, 2]
        N = a * b * d / 8
        dN = np.stack([c[None, :, 0] * b * d / 8, a * c[None, :, 1] * d / 8,
                       a * b * c[None, :, 2] / 8], axis=2)
        return N, dN
    if name in ("triangle", "tetra"):
        k = 2 if name == "triangle" else 3
        N = np.concatenate([1 - xi.sum(axis=1, keepdims=True), xi[:, :k]], axis=1)
        grad = np.vstack([-np.ones((1, k)), np.eye(k)])  # (n_nodes, k)
        dN = np.broadcast_to(grad, (n_pts, k + 1, k)).copy()
        return N, dN
    if name in ("triangle6", "tetra10"):
        k = 2 if name == "triangle6" else 3
        L = np.concatenate([1 - xi.sum(axis=1, keepdims=True), xi[:, :k]], axis=1)
        dL = np.vstack([-np.ones((1, k)), np.eye(k)])  # dL_i/dxi_j
        if k == 2:
            edges = [(0, 1), (1, 2), (2, 0)]
        else:
            edges = [(0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)]
        n_nodes = k + 1 + len(edges)
        N = np.empty((n_pts, n_nodes))
        dN = np.empty((n_pts, n_nodes, k))
        for i in range(k + 1):
            N[:, i] = L[:, i] * (2 * L[:, i] - 1)
            dN[:, i, :] = (4 * L[:, i] - 1)[:, None] * dL[i][None, :]
        for m, (i, j) in enumerate(edges):
            N[:, k + 1 + m] = 4 * L[:, i] * L[:, j]
            dN[:, k + 1 + m, :] = 4 * (L[:, j, None] * dL[i][None, :] + L[:, i, None] * dL[j][None, :])
        return N, dN
    raise KeyError(name)


def quadrature(name: str, degree: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gauss points and weights on the reference cell of ``name``.

    The default degree is the one of the standard (CalculiX) element: full integration of
    the linear elements' stiffness, 4 points for tetra10. Returns (points (n, ref_dim), weights (n,)).
    """
    g = 1 / np.sqrt(3)
    if name in ("line", "line3"):
        if name == "line3" or (degree or 1) > 3:
            p = np.sqrt(3 / 5)
            return np.array([[-p], [0.0], [p]]), np.array([5, 8, 5]) / 9
        return np.array([[-g], [g]]), np.array([1.0, 1.0])
    if name == "quad":
        pts = np.array([[-g, -g], [g, -g], [g, g], [-g, g]])
        return pts, np.ones(4)
    if name == "hexahedron":
        pts = np.array([[x, y, z] for z in (-g, g) for y in (-g, g) for x in (-g, g)])
        return pts, np.ones(8)
    if name == "triangle" and (degree or 1) <= 1:
        return np.array([[1 / 3, 1 / 3]]), np.array([0.5])
    if name in ("triangle", "triangle6"):
        pts = np.array([[1 / 6, 1 / 6], [2 / 3, 1 / 6], [1 / 6, 2 / 3]])
        return pts, np.full(3, 1 / 6)
    if name == "tetra" and (degree or 1) <= 1:
        return np.array([[0.25, 0.25, 0.25]]), np.array([1 / 6])
    if name in ("tetra", "tetra10"):
        a, b = 0.5854101966249685, 0.1381966011250105
        pts = np.array([[b, b, b], [a, b, b], [b, a, b], [b, b, a]])
        return pts, np.full(4, 1 / 24)
    raise KeyError(name)
