"""The lightest bracket that is stiff enough: mass minimization on a tet mesh from a file.

    python examples/bracket_min_mass.py [--factor 1.5] [--out out/bracket_optimized.vtu]

Units: mm, N, MPa, t. The sample bracket (meshes/bracket.msh, 12 254 tetrahedra) is bolted at
its holes and loaded with 1 kN down on its end face. We ask for the least mass whose compliance
is at most `factor` times the fully solid bracket's, keeping the bolt holes and the load face
solid. The design opens in ParaView (cell field "density").

Heaviside projection (beta 1 -> 32, doubled every 25 iterations or when settled) makes the part
crisp, and lighter at the same compliance: measured here, volume fraction 0.458 and grayness
0.002 after 139 iterations (converged: the objective moved less than 0.1 % in each of the last
10 iterations at beta 32, while a few boundary elements keep flipping), against 0.558 and 0.26
with the density filter alone (still creeping at 300 iterations). `--no-projection` shows the latter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightweight as lw

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> lw.OptimizationResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default=str(ROOT / "meshes" / "bracket.msh"))
    parser.add_argument("--factor", type=float, default=1.5, help="compliance limit / solid compliance")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--no-projection", action="store_true", help="density filter only (gray design)")
    parser.add_argument("--out", default="out/bracket_optimized.vtu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    mesh = lw.read_mesh(args.mesh)
    model = lw.Model(mesh, material=lw.Material(E=210e3, nu=0.3, density=7.85e-9),
                     supports={"bolt_holes": "xyz"},
                     loads={"brake": [lw.Traction("load_face", (0.0, -2.5, 0.0))]})
    result = lw.minimize_mass(model, max_compliance_factor=args.factor, filter_radius=3.0,
                              non_design=["bolt_holes", "load_face"],
                              projection=None if args.no_projection else "heaviside",
                              max_iterations=args.iterations, verbose=not args.quiet)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result.save(args.out)
    limit = result.parameters["compliance_limits"]["brake"]
    print(f"{result.message}\n{result.iterations} iterations, mass {result.mass * 1e3:.4f} kg "
          f"(volume fraction {result.volume_fraction:.3f}), compliance "
          f"{result.compliance['brake']:.4g} <= limit {limit:.4g} N mm; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
