"""A 3D cantilever on a hex grid: the stiffest layout with a quarter of the material.

    python examples/cantilever_3d.py [--grid 48 16 16] [--out out/cantilever3d.vtu] [--stl out/cantilever3d.stl]

Units: mm, N, MPa. Box 96 x 32 x 32 mm of 2 mm hexahedra (48 x 16 x 16 = 12 288 elements),
clamped at x = 0, 500 N downwards spread over the free face x = 96 (traction on its area).
Density filter of radius 3 mm, OC, 25 % of the box's volume. The optional STL is the
volume-preserving smoothed iso-surface of the design (needs the viz extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightweight as lw


def main(argv=None) -> lw.OptimizationResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs=3, default=(48, 16, 16), metavar=("NX", "NY", "NZ"))
    parser.add_argument("--element-size", type=float, default=2.0, help="mm")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--out", default="out/cantilever3d.vtu")
    parser.add_argument("--stl", default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    nx, ny, nz = args.grid
    h = args.element_size
    mesh = lw.structured_grid((nx, ny, nz), size=(nx * h, ny * h, nz * h))
    end_area = ny * h * nz * h
    model = lw.Model(mesh, lw.Material(E=210e3, nu=0.3, density=7.85e-9),
                     supports={"xmin": "xyz"},
                     loads={"tip": [lw.Traction("xmax", (0.0, 0.0, -500.0 / end_area))]})
    result = lw.minimize_compliance(model, volume_fraction=0.25, filter_radius=1.5 * h,
                                    filter="density", max_iterations=args.iterations,
                                    verbose=not args.quiet)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result.save(args.out)
    print(f"{result.iterations} iterations, compliance {result.compliance['tip']:.4g} N mm, "
          f"volume fraction {result.volume_fraction:.3f}, mass {result.mass * 1e3:.3f} kg; wrote {args.out}")
    if args.stl:
        lw.export_surface(result, args.stl)
        print(f"wrote {args.stl}")
    return result


if __name__ == "__main__":
    main()
