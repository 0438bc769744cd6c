"""The lightest bracket that can be cast: mass minimization with a draw direction, on a tet mesh.

    python examples/bracket_cast.py [--factor 1.5] [--direction +z] [--one-sided] [--out out/bracket_cast.vtu]

Units: mm, N, MPa, t. The sample bracket of examples/bracket_min_mass.py (meshes/bracket.msh,
12 254 tetrahedra, 120 x 40 x 10 mm, bolted at its holes, 1 kN down on its end face) with the
same requirement (compliance at most 1.5 x the solid part's), cast in a two-part mould that
parts at the bracket's mid-plane z = 5 and opens along z: every pocket must open towards one
mould half (lw.DrawDirection("+z", two_sided=True)). The unstructured mesh's columns along z
are found geometrically (lightweight/optimize/manufacturing/draw.py). The picture goes to
docs/gallery/manufacturing_bracket_cast.png with --picture.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightweight as lw

ROOT = Path(__file__).resolve().parent.parent


def bracket_model(path) -> lw.Model:
    mesh = lw.read_mesh(path)
    return lw.Model(mesh, material=lw.Material(E=210e3, nu=0.3, density=7.85e-9),
                    supports={"bolt_holes": "xyz"},
                    loads={"brake": [lw.Traction("load_face", (0.0, -2.5, 0.0))]})


def run(rule, argv, name: str, what: str):
    parser = argparse.ArgumentParser(description=what)
    parser.add_argument("--mesh", default=str(ROOT / "meshes" / "bracket.msh"))
    parser.add_argument("--factor", type=float, default=1.5, help="compliance limit / solid compliance")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--out", default=f"out/{name}.vtu")
    parser.add_argument("--picture", action="store_true", help=f"write docs/gallery/manufacturing_{name}.png")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--rule", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model = bracket_model(args.mesh)
    checks = [lw.DrawDirection("+z", two_sided=True), lw.DrawDirection("-y"), lw.Overhang("+z"), lw.Overhang("-y")]
    t0 = time.perf_counter()
    result = lw.minimize_mass(model, max_compliance_factor=args.factor, filter_radius=3.0,
                              non_design=["bolt_holes", "load_face"], projection="heaviside",
                              manufacturing=[rule], max_iterations=args.iterations, verbose=not args.quiet)
    seconds = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result.save(args.out)
    limit = result.parameters["compliance_limits"]["brake"]
    print(f"{result.message}\n{result.iterations} iterations in {seconds:.1f} s, mass {result.mass * 1e3:.4f} kg "
          f"(volume fraction {result.volume_fraction:.3f}), compliance {result.compliance['brake']:.4g} <= "
          f"limit {limit:.4g} N mm; wrote {args.out}")
    for label, fraction in lw.check_manufacturing(result, [rule] + [c for c in checks if c.label() != rule.label()]).items():
        print(f"  {label}: {100 * fraction:.2f} % of the solid violates it")
    if args.picture:
        lw.plot(result, field="density", filename=ROOT / "docs" / "gallery" / f"manufacturing_{name}.png",
                window_size=(640, 400), title=f"{rule.label()}: {result.mass * 1e3:.3f} kg")
    return result


def main(argv=None) -> lw.OptimizationResult:
    return run(lw.DrawDirection("+z", two_sided=True), argv, "bracket_cast", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
