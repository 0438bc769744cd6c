"""The engineer's closed loop on a suspension control arm: optimize -> export -> evaluate.

The part: an aluminium A-arm plate 25 mm thick with three bores (two chassis bushings, one
ball joint), meshed with Gmsh's Python API as linear tets, with physical groups naming the
bores. Three load cases at the ball joint (braking, cornering, bump) enter through a coupling
(RBE3-like) to the joint's centre; the front bushing is held, the rear one is a spring.
Units: mm, N, t, s (stress in MPa), declared in examples/cases/control_arm.toml.

    python examples/control_arm.py                 # builds meshes/control_arm.msh if missing,
                                                   # then the whole loop into out/control_arm/
    python examples/control_arm.py --mesh-only --size 12

The same loop from the command line:

    lightweight optimize examples/cases/control_arm.toml --export --out out/control_arm
    lightweight evaluate examples/cases/control_arm.toml out/control_arm/control_arm_solid.msh \
        --out out/control_arm/part.csv
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / "meshes" / "control_arm.msh"
CASE = ROOT / "examples" / "cases" / "control_arm.toml"

# bore centres (x, y) in mm, bore radius, boss radius around each bore, plate thickness
BORES = {"bore_front": (0.0, 0.0), "bore_rear": (220.0, 0.0), "bore_ball": (80.0, 250.0)}
BORE_RADIUS, BOSS_RADIUS, THICKNESS = 12.0, 30.0, 25.0


def build_mesh(path=MESH, size: float = 15.0) -> Path:
    """Mesh the arm with Gmsh (linear tets of edge ~``size`` mm) and write it with named bores."""
    import gmsh
    path = Path(path)
    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("control_arm")
        occ = gmsh.model.occ
        centres = list(BORES.values())
        # the plate: the triangle of the bore centres grown by the boss radius (its convex hull
        # with the bosses): triangle + a disk per bore + a strip along each side
        pieces = [(2, occ.addDisk(x, y, 0.0, BOSS_RADIUS, BOSS_RADIUS)) for x, y in centres]
        points = [occ.addPoint(x, y, 0.0) for x, y in centres]
        lines = [occ.addLine(points[i], points[(i + 1) % 3]) for i in range(3)]
        pieces.append((2, occ.addPlaneSurface([occ.addCurveLoop(lines)])))
        for (x0, y0), (x1, y1) in zip(centres, centres[1:] + centres[:1]):
            length = math.hypot(x1 - x0, y1 - y0)
            strip = occ.addRectangle(0.0, -BOSS_RADIUS, 0.0, length, 2 * BOSS_RADIUS)
            occ.rotate([(2, strip)], 0, 0, 0, 0, 0, 1, math.atan2(y1 - y0, x1 - x0))
            occ.translate([(2, strip)], x0, y0, 0.0)
            pieces.append((2, strip))
        plate, _ = occ.fuse(pieces[:1], pieces[1:])
        solid = occ.extrude(plate, 0, 0, THICKNESS)
        volumes = [e for e in solid if e[0] == 3]
        holes = [(3, occ.addCylinder(x, y, -1.0, 0, 0, THICKNESS + 2.0, BORE_RADIUS)) for x, y in centres]
        arm, _ = occ.cut(volumes, holes)
        occ.synchronize()
        gmsh.model.addPhysicalGroup(3, [tag for _, tag in arm], name="arm")
        for name, (x, y) in BORES.items():
            eps = BORE_RADIUS + 0.1
            faces = gmsh.model.getEntitiesInBoundingBox(x - eps, y - eps, -0.1, x + eps, y + eps,
                                                        THICKNESS + 0.1, dim=2)
            gmsh.model.addPhysicalGroup(2, [tag for _, tag in faces], name=name)
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", 0.5 * size)
        gmsh.model.mesh.generate(3)
        path.parent.mkdir(parents=True, exist_ok=True)
        gmsh.option.setNumber("Mesh.MshFileVersion", 2.2)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=15.0, help="tet edge length of the design mesh (mm)")
    parser.add_argument("--mesh-only", action="store_true", help="only (re)build meshes/control_arm.msh")
    parser.add_argument("--out", default="out/control_arm")
    args = parser.parse_args(argv)
    if args.mesh_only or not MESH.is_file():
        print(f"wrote {build_mesh(MESH, args.size)}")
        if args.mesh_only:
            return
    import lightweight as lw
    from lightweight.cli import main as cli
    print(lw.read_mesh(MESH))
    cli(["optimize", str(CASE), "--export", "--out", args.out, "--quiet"])


if __name__ == "__main__":
    main()
