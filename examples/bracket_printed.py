"""The lightest bracket that prints without supports: mass minimization with an overhang rule, on a tet mesh.

    python examples/bracket_printed.py [--factor 1.5] [--out out/bracket_printed.vtu] [--picture]

Units: mm, N, MPa, t. The sample bracket of examples/bracket_min_mass.py (meshes/bracket.msh,
12 254 tetrahedra, 120 x 40 x 10 mm) with the same requirement (compliance at most 1.5 x the solid
part's), printed standing on its lower face y = 0 and built along +y, with no overhang flatter
than 45 degrees (lw.Overhang("+y")). The tet mesh is mapped to a background grid of voxels
(twice the mean cell size) on which Langelaar's layer-by-layer filter runs
(lightweight/optimize/manufacturing/overhang.py).
"""

from __future__ import annotations

import lightweight as lw

try:
    from bracket_cast import run
except ImportError:          # run from the repository root as a module path
    from examples.bracket_cast import run


def main(argv=None) -> lw.OptimizationResult:
    return run(lw.Overhang("+y"), argv, "bracket_printed", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
