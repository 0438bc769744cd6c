"""Build the sample meshes in this folder with the Gmsh Python API (units: mm).

Run ``python meshes/make_meshes.py`` to rebuild them. The output is deterministic for a given
Gmsh version: fixed mesh sizes, fixed meshing algorithms, one thread and a fixed random seed.
All files are Gmsh 4.1 ASCII with physical groups, which ``lightweight.read_mesh`` turns into
named sets:

- ``bracket.msh``: 120 x 40 x 10 mm plate-like cantilever bracket, two bolt holes (radius 4.5)
  at the x = 0 end, load face at x = 120; linear tetrahedra. Groups: volume ``solid``,
  surfaces ``bolt_holes`` (the two cylindrical hole walls) and ``load_face``.
- ``bracket_tet10.msh``: the same geometry, coarser, second-order tetrahedra (tetra10).
- ``plate_with_hole.msh``: 100 x 50 mm plane-stress plate with a central hole of radius 10;
  linear triangles. Groups: surface ``solid``, curves ``left``, ``right`` and ``hole``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gmsh

HERE = Path(__file__).resolve().parent

# Bracket geometry (mm): plate L x W x T, bolt holes at x = HOLE_X, y = HOLE_Y, radius HOLE_R.
L, W, T = 120.0, 40.0, 10.0
HOLE_X, HOLE_Y, HOLE_R = 15.0, (10.0, 30.0), 4.5
# Plate with hole (mm).
PL, PW, PR = 100.0, 50.0, 10.0


def _start(name: str) -> None:
    gmsh.initialize(["-noenv"], readConfigFiles=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.option.setNumber("General.NumThreads", 1)      # threads change the element order
    gmsh.option.setNumber("Mesh.RandomSeed", 1)
    gmsh.option.setNumber("Mesh.Algorithm", 6)          # Frontal-Delaunay (2D)
    gmsh.option.setNumber("Mesh.Algorithm3D", 1)        # Delaunay (3D)
    gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
    gmsh.option.setNumber("Mesh.Binary", 0)
    gmsh.option.setNumber("Mesh.SaveAll", 0)            # only elements of physical groups
    gmsh.model.add(name)


def _bracket(path: Path, size: float, order: int) -> None:
    """Plate with two bolt holes at x = 0 end and the load face at x = L."""
    _start(path.stem)
    occ = gmsh.model.occ
    plate = occ.addBox(0, 0, 0, L, W, T)
    holes = [occ.addCylinder(HOLE_X, y, 0, 0, 0, T, HOLE_R) for y in HOLE_Y]
    occ.cut([(3, plate)], [(3, h) for h in holes])
    occ.synchronize()
    volumes = [tag for _, tag in gmsh.model.getEntities(3)]
    assert len(volumes) == 1
    eps = 1e-6
    load = [tag for _, tag in gmsh.model.getEntitiesInBoundingBox(
        L - eps, -eps, -eps, L + eps, W + eps, T + eps, 2)]
    bolt = []
    for y in HOLE_Y:
        bolt += [tag for _, tag in gmsh.model.getEntitiesInBoundingBox(
            HOLE_X - HOLE_R - eps, y - HOLE_R - eps, -eps, HOLE_X + HOLE_R + eps,
            y + HOLE_R + eps, T + eps, 2)]
    assert len(load) == 1 and len(bolt) >= 2, (load, bolt)
    gmsh.model.addPhysicalGroup(3, volumes, name="solid")
    gmsh.model.addPhysicalGroup(2, sorted(bolt), name="bolt_holes")
    gmsh.model.addPhysicalGroup(2, load, name="load_face")
    gmsh.option.setNumber("Mesh.MeshSizeMax", size)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 16)   # elements per 2*pi on the holes
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 1)
    gmsh.option.setNumber("Mesh.MeshSizeMin", 0.5 * size)
    gmsh.model.mesh.generate(3)
    if order == 2:
        gmsh.model.mesh.setOrder(2)
    gmsh.write(str(path))
    gmsh.finalize()


def _plate_with_hole(path: Path, size: float) -> None:
    _start(path.stem)
    occ = gmsh.model.occ
    rect = occ.addRectangle(0, 0, 0, PL, PW)
    disk = occ.addDisk(PL / 2, PW / 2, 0, PR, PR)
    occ.cut([(2, rect)], [(2, disk)])
    occ.synchronize()
    surfaces = [tag for _, tag in gmsh.model.getEntities(2)]
    eps = 1e-6

    def curves_in(x0, y0, x1, y1):
        return [tag for _, tag in gmsh.model.getEntitiesInBoundingBox(
            x0 - eps, y0 - eps, -eps, x1 + eps, y1 + eps, eps, 1)]

    left = curves_in(0, 0, 0, PW)
    right = curves_in(PL, 0, PL, PW)
    hole = curves_in(PL / 2 - PR, PW / 2 - PR, PL / 2 + PR, PW / 2 + PR)
    assert len(left) == 1 and len(right) == 1 and hole, (left, right, hole)
    gmsh.model.addPhysicalGroup(2, surfaces, name="solid")
    gmsh.model.addPhysicalGroup(1, left, name="left")
    gmsh.model.addPhysicalGroup(1, right, name="right")
    gmsh.model.addPhysicalGroup(1, sorted(hole), name="hole")
    gmsh.option.setNumber("Mesh.MeshSizeMax", size)
    gmsh.option.setNumber("Mesh.MeshSizeMin", 0.5 * size)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 32)
    gmsh.model.mesh.generate(2)
    gmsh.write(str(path))
    gmsh.finalize()


def main(out_dir: Path = HERE) -> None:
    _bracket(out_dir / "bracket.msh", size=3.0, order=1)
    _bracket(out_dir / "bracket_tet10.msh", size=6.0, order=2)
    _plate_with_hole(out_dir / "plate_with_hole.msh", size=2.5)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
