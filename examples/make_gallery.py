"""Make the pictures of docs/gallery/ from small optimizations (units: unit-less, E = 1).

    python examples/make_gallery.py [--out docs/gallery] [--quick]

A 2D cantilever (60 x 20 quads, top88 style) and a 3D cantilever (30 x 10 x 10 hexes), each
optimized for stiffness at 40 % / 25 % volume, and the sample bracket (tets from
meshes/bracket.msh) at least mass, then pictured: design, von Mises stress, deformed shape and
convergence. Each PNG is kept small (< 150 kB) for the documentation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightweight as lw
from lightweight.viz import convergence_plot, plot

MAX_BYTES = 150_000


def cantilever_2d(quick: bool):
    nx, ny = (40, 14) if quick else (60, 20)
    mesh = lw.structured_grid((nx, ny), size=(float(nx), float(ny)))
    mesh.add_node_set("tip", lambda p: (p[:, 0] == nx) & (abs(p[:, 1] - ny / 2) <= 1.0))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3, density=1.0), supports={"xmin": "xy"},
                     loads={"tip": [lw.PointLoad("tip", (0.0, -1.0), distribute="total")]})
    return model, dict(volume_fraction=0.4, filter_radius=1.5, max_iterations=40 if quick else 120)


def cantilever_3d(quick: bool):
    nx, ny, nz = (20, 6, 6) if quick else (30, 10, 10)
    mesh = lw.structured_grid((nx, ny, nz), size=(float(nx), float(ny), float(nz)))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3, density=1.0), supports={"xmin": "xyz"},
                     loads={"tip": [lw.Traction("xmax", (0.0, 0.0, -1.0))]})
    return model, dict(volume_fraction=0.25, filter_radius=1.5, max_iterations=25 if quick else 60)


def bracket(quick: bool):
    """The sample steel bracket (12 254 tets, mm/N/MPa/t): least mass at 1.5 x the solid compliance."""
    mesh = lw.read_mesh(Path(__file__).resolve().parent.parent / "meshes" / "bracket.msh")
    model = lw.Model(mesh, material=lw.Material(E=210e3, nu=0.3, density=7.85e-9),
                     supports={"bolt_holes": "xyz"},
                     loads={"brake": [lw.Traction("load_face", (0.0, -2.5, 0.0))]})
    return model, dict(problem="min_mass", max_compliance_factor=1.5, filter_radius=3.0,
                       non_design=["bolt_holes", "load_face"],
                       projection=None if quick else "heaviside", max_iterations=30 if quick else 300)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "gallery"))
    parser.add_argument("--quick", action="store_true", help="smaller meshes, fewer iterations")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, build, size in (("cantilever2d", cantilever_2d, (640, 300)),
                              ("cantilever3d", cantilever_3d, (640, 480)),
                              ("bracket", bracket, (640, 480))):
        model, options = build(args.quick)
        t0 = time.perf_counter()
        optimize = lw.minimize_mass if options.pop("problem", None) == "min_mass" else lw.minimize_compliance
        result = optimize(model, verbose=False, **options)
        print(f"{name}: {result.iterations} iterations in {time.perf_counter() - t0:.1f} s, "
              f"compliance {result.compliance}, volume fraction {result.volume_fraction:.3f}")
        files = [out / f"{name}_{field}.png" for field in ("density", "von_mises", "displacement")]
        for field, path in zip(("density", "von_mises", "displacement"), files):
            plot(result, field, filename=path, window_size=size)
        files.append(convergence_plot(result, out / f"{name}_convergence.png", dpi=70))
        for path in files:
            kib = path.stat().st_size
            print(f"  {path.name}: {kib / 1000:.0f} kB")
            if kib > MAX_BYTES:
                print(f"  warning: {path.name} is larger than {MAX_BYTES // 1000} kB")


if __name__ == "__main__":
    main()
