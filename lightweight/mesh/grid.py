"""Structured quad (2D) and hexahedral (3D) box grids with named faces.

Numbering (the same as the CalculiX reference decks and a natural x-fastest raster):
node (i, j[, k]) has id ``i + (nx+1)*(j + (ny+1)*k)``; cell (i, j[, k]) has id
``i + nx*(j + ny*k)``; cell nodes follow VTK order (counter-clockwise bottom, then top).
Boundary faces are named ``xmin, xmax, ymin, ymax[, zmin, zmax]``; each is also a node set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import MeshError
from .mesh import Mesh


def structured_grid(shape: Sequence[int], size: Sequence[float] | None = None,
                    origin: Sequence[float] | None = None) -> Mesh:
    """Box of ``shape`` = (nx, ny) quads or (nx, ny, nz) hexahedra.

    size: edge lengths of the box in user units (default: unit-size elements).
    origin: coordinates of the minimum corner (default: zeros).
    """
    shape = tuple(int(n) for n in shape)
    dim = len(shape)
    if dim not in (2, 3) or min(shape) < 1:
        raise MeshError(f"grid shape must be 2 or 3 positive integers, got {shape}")
    size = tuple(float(s) for s in (shape if size is None else size))
    origin = tuple(float(o) for o in ((0.0,) * dim if origin is None else origin))
    if len(size) != dim or len(origin) != dim or min(size) <= 0:
        raise MeshError(f"grid size {size} and origin {origin} must have {dim} entries, size > 0")
    spacing = tuple(s / n for s, n in zip(size, shape))
    axes = [origin[d] + spacing[d] * np.arange(shape[d] + 1) for d in range(dim)]
    # x fastest: meshgrid with indexing="ij" over reversed axes, then reverse columns.
    mesh_axes = np.meshgrid(*axes[::-1], indexing="ij")
    points = np.stack([a.ravel() for a in mesh_axes[::-1]], axis=1)
    # Snap the far faces exactly onto origin + size so predicates like x == L hold.
    for d in range(dim):
        points[np.isclose(points[:, d], origin[d] + size[d]), d] = origin[d] + size[d]
    nx = shape[0]
    ny = shape[1]
    if dim == 2:
        j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        n0 = (i + (nx + 1) * j).ravel()
        cells = np.stack([n0, n0 + 1, n0 + nx + 2, n0 + nx + 1], axis=1)
        cell_type = "quad"
    else:
        nz = shape[2]
        k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        n0 = (i + (nx + 1) * (j + (ny + 1) * k)).ravel()
        layer = (nx + 1) * (ny + 1)
        bottom = [n0, n0 + 1, n0 + nx + 2, n0 + nx + 1]
        cells = np.stack(bottom + [b + layer for b in bottom], axis=1)
        cell_type = "hexahedron"
    mesh = Mesh(points, cells, cell_type, grid=shape, grid_spacing=spacing, grid_origin=origin)
    names = ("x", "y", "z")
    for d in range(dim):
        lo, hi = origin[d], origin[d] + size[d]
        mesh.add_face_set(f"{names[d]}min", lambda p, d=d, lo=lo: p[:, d] == lo)
        mesh.add_face_set(f"{names[d]}max", lambda p, d=d, hi=hi: p[:, d] == hi)
    return mesh


def grid_node_index(mesh: Mesh, *ijk: int) -> int:
    """Node id of grid node (i, j[, k]) of a structured grid mesh."""
    if mesh.grid is None:
        raise MeshError("grid_node_index needs a structured grid mesh")
    nid, stride = 0, 1
    for idx, n in zip(ijk, mesh.grid):
        nid += idx * stride
        stride *= n + 1
    return nid
