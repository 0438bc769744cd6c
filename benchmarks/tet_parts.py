"""Unstructured test parts for the benchmarks: a bracket-like design space meshed with Gmsh.

The part (units mm, N, MPa): a 200 x 80 x 40 block with two bolt bores (radius 8) through its
thickness at the x = 0 end, one load bore (radius 10) at the x = 200 end and a lightening slot
through the middle; the bolt bores are clamped, three load cases (braking, cornering, bump)
push on the load bore's wall along x, y and z. Linear tets (``order=1``) or tetra10; the
number of tets is set by ``size`` (target edge length, mm): about 1.7e6 / size^3 tet4
(size 3.3: ~50k, 1.6: ~400k, 1.2: ~1M).

Meshes are cached under ``$LIGHTWEIGHT_BENCH_CACHE`` (default /tmp/lightweight_bench) by
size and order, because meshing 1M tets takes minutes on one core.

    python benchmarks/tet_parts.py 1.6        # mesh (or reuse) and print the tet count
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

L, W, T = 200.0, 80.0, 40.0
BOLT_X, BOLT_Y, BOLT_R = 20.0, (18.0, 62.0), 8.0
LOAD_X, LOAD_Y, LOAD_R = 180.0, 40.0, 10.0
SLOT = (70.0, 25.0, 130.0, 55.0)            # x0, y0, x1, y1 of the rounded lightening slot
LOADS = {"braking": (-1.0, 0.0, 0.0), "cornering": (0.0, 1.0, 0.0), "bump": (0.0, 0.0, -1.0)}


def cache_dir() -> Path:
    path = Path(os.environ.get("LIGHTWEIGHT_BENCH_CACHE", "/tmp/lightweight_bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def mesh_part(path: Path, size: float, order: int = 1) -> Path:
    """Mesh the bracket with Gmsh (edge ~``size`` mm, tet4 or tet10) into ``path`` (.msh 4.1)."""
    import gmsh
    gmsh.initialize(["-noenv"], readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.option.setNumber("Mesh.RandomSeed", 1)
        gmsh.option.setNumber("Mesh.Algorithm3D", 10 if size < 2.5 else 1)   # HXT is faster when big
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("Mesh.Binary", 1)
        gmsh.option.setNumber("Mesh.SaveAll", 0)
        gmsh.model.add("bench_bracket")
        occ = gmsh.model.occ
        block = occ.addBox(0, 0, 0, L, W, T)
        tools = [(3, occ.addCylinder(BOLT_X, y, -1, 0, 0, T + 2, BOLT_R)) for y in BOLT_Y]
        tools.append((3, occ.addCylinder(LOAD_X, LOAD_Y, -1, 0, 0, T + 2, LOAD_R)))
        x0, y0, x1, y1 = SLOT
        r = 0.5 * (y1 - y0)
        slot = occ.addBox(x0 + r, y0, -1, x1 - x0 - 2 * r, y1 - y0, T + 2)
        ends = [occ.addCylinder(x, y0 + r, -1, 0, 0, T + 2, r) for x in (x0 + r, x1 - r)]
        slot_tool, _ = occ.fuse([(3, slot)], [(3, e) for e in ends])
        occ.cut([(3, block)], tools + slot_tool)
        occ.synchronize()
        volumes = [tag for _, tag in gmsh.model.getEntities(3)]
        eps = 1e-3

        def walls(cx, cy, radius):
            return [tag for _, tag in gmsh.model.getEntitiesInBoundingBox(
                cx - radius - eps, cy - radius - eps, -eps, cx + radius + eps, cy + radius + eps,
                T + eps, 2)]

        bolts = sorted(walls(BOLT_X, BOLT_Y[0], BOLT_R) + walls(BOLT_X, BOLT_Y[1], BOLT_R))
        load = walls(LOAD_X, LOAD_Y, LOAD_R)
        gmsh.model.addPhysicalGroup(3, volumes, name="solid")
        gmsh.model.addPhysicalGroup(2, bolts, name="bolts")
        gmsh.model.addPhysicalGroup(2, load, name="load_bore")
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", 0.5 * size)
        gmsh.model.mesh.generate(3)
        if order == 2:
            gmsh.model.mesh.setOrder(2)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()
    return path


def part_mesh(size: float, order: int = 1):
    """The bracket's :class:`lightweight.Mesh` at edge ``size`` (cached .msh file)."""
    import lightweight as lw
    path = cache_dir() / f"bracket_s{size:g}_o{order}.msh"
    if not path.exists():
        tmp = path.with_suffix(".tmp.msh")
        mesh_part(tmp, size, order)
        tmp.replace(path)
    return lw.read_mesh(path)


def part_model(size: float, order: int = 1, mesh=None):
    """The bracket's Model: bolts clamped, three traction load cases on the load bore."""
    import lightweight as lw
    mesh = part_mesh(size, order) if mesh is None else mesh
    loads = {name: [lw.Traction("load_bore", tuple(10.0 * np.array(v)))] for name, v in LOADS.items()}
    return lw.Model(mesh, material=lw.Material(E=70e3, nu=0.33, density=2.7e-9),
                    supports={"bolts": "xyz"}, loads=loads)


if __name__ == "__main__":
    m = part_mesh(float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(m.cell_type, m.n_cells, "cells", m.n_nodes, "nodes")
