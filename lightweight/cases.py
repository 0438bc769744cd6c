"""Built-in standard load cases: the problems of the literature, ready to optimize.

Each function returns a ``Model`` on a structured grid, so it needs no file and runs on a fresh
install; ``lightweight demo`` and the examples use them. Units are unit-less (E = 1) as in the
papers they come from, unless a function says otherwise.

- ``mbb_beam``: the MBB half-beam of top88 (Andreassen et al. 2011): unit squares, load -1 in y
  at the top-left node, left edge fixed in x (symmetry plane), bottom-right node fixed in y.
- ``cantilever_3d``: the TopOpt_in_PETSc default (Aage et al. 2015): box [0,2]x[0,1]x[0,1] of
  2n x n x n cubes, face x = 0 clamped, force -0.001 in z on the nodes of the edge x = 2, z = 0
  (half on its two end nodes).
"""

from __future__ import annotations

import numpy as np

from .errors import LightweightError
from .fem import Material, Model, NodalForces, PointLoad
from .mesh import structured_grid


def mbb_beam(nelx: int = 60, nely: int = 20) -> Model:
    """The MBB half-beam on a nelx x nely grid of unit squares (plane stress, thickness 1)."""
    if int(nelx) < 1 or int(nely) < 1:
        raise LightweightError(f"mbb_beam needs positive element counts, got {nelx} x {nely}")
    mesh = structured_grid((int(nelx), int(nely)))
    mesh.add_node_set("load", lambda p: (p[:, 0] == 0) & (p[:, 1] == nely))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == nelx) & (p[:, 1] == 0))
    return Model(mesh, Material(E=1.0, nu=0.3), supports={"xmin": "x", "roller": "y"},
                 loads={"mbb": [PointLoad("load", (0.0, -1.0))]})


def cantilever_3d(n: int = 8) -> Model:
    """The TopOpt_in_PETSc cantilever with 2n x n x n unit-aspect hexahedra on [0,2]x[0,1]x[0,1]."""
    n = int(n)
    if n < 1:
        raise LightweightError(f"cantilever_3d needs n >= 1, got {n}")
    mesh = structured_grid((2 * n, n, n), size=(2.0, 1.0, 1.0))
    points = mesh.points
    edge = np.flatnonzero(np.isclose(points[:, 0], 2.0) & np.isclose(points[:, 2], 0.0))
    mesh.add_node_set("load_edge", edge)
    forces = np.zeros_like(points)
    forces[edge, 2] = -0.001
    ends = edge[np.isclose(points[edge, 1], 0.0) | np.isclose(points[edge, 1], 1.0)]
    forces[ends, 2] = -0.0005
    return Model(mesh, Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                 loads={"tip": [NodalForces(forces)]})


CASES = {"mbb": mbb_beam, "cantilever3d": cantilever_3d}
