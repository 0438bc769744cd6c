"""Static analysis of the sample steel bracket: mesh file in, stresses and reactions out.

    python examples/solve_bracket.py [--mesh meshes/bracket.msh] [--out out/bracket_solution.vtu]

Units: mm, N, MPa, t (tonne). The bracket (120 x 40 x 10 mm, meshes/README.md) is bolted at its
two holes and carries 1 kN downwards spread over its free end face (traction 2.5 MPa on 400 mm2).
Open the .vtu in ParaView: displacement, von Mises stress and strain energy per element.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import lightweight as lw

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> lw.Solution:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default=str(ROOT / "meshes" / "bracket.msh"))
    parser.add_argument("--out", default="out/bracket_solution.vtu")
    args = parser.parse_args(argv)

    mesh = lw.read_mesh(args.mesh)                 # Gmsh physical groups -> named sets
    model = lw.Model(mesh, material=lw.Material(E=210e3, nu=0.3, density=7.85e-9, yield_strength=355.0),
                     supports={"bolt_holes": "xyz"},
                     loads={"brake": [lw.Traction("load_face", (0.0, -2.5, 0.0))]})
    solution = lw.solve(model)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    solution.save(args.out)

    tip = np.abs(solution.displacement["brake"][mesh.node_set("load_face"), 1]).max()
    reaction = solution.reactions["brake"]["bolt_holes"]
    print(f"compliance {solution.compliance['brake']:.4g} N mm, tip deflection {tip:.4g} mm, "
          f"max von Mises {solution.von_mises['brake'].max():.4g} MPa, "
          f"bolt reaction {np.array2string(reaction, precision=4)} N")
    print(f"wrote {args.out}")
    return solution


if __name__ == "__main__":
    main()
