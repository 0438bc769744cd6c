"""The MBB half-beam of top88 (Andreassen et al. 2011), run by lightweight with the same rules.

    python examples/mbb_top88.py [--filter sensitivity|density] [--out out/mbb.vtu] [--png out/mbb.png]

60 x 20 unit square elements, volume fraction 0.5, penalty 3, filter radius 1.5, OC, E0 = 1,
Emin = 1e-9, nu = 0.3; unit load down at the top-left node, left edge fixed in x (symmetry),
bottom-right node fixed in y. With filter="sensitivity" this is top88's default run (ft = 1):
94 iterations, final compliance 203.18 (tests/test_optimize.py compares every iteration with
a plain port of the published code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightweight as lw
from lightweight.cases import mbb_beam


def main(argv=None) -> lw.OptimizationResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", choices=("sensitivity", "density"), default="sensitivity")
    parser.add_argument("--nelx", type=int, default=60)
    parser.add_argument("--nely", type=int, default=20)
    parser.add_argument("--out", default="out/mbb.vtu")
    parser.add_argument("--png", default=None, help="also render the design (needs the viz extra)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    result = lw.minimize_compliance(mbb_beam(args.nelx, args.nely), volume_fraction=0.5,
                                    filter_radius=1.5, filter=args.filter, optimizer="oc",
                                    penalty=3.0, tolerance=0.01, verbose=not args.quiet)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result.save(args.out)
    print(f"{result.iterations} iterations, compliance {result.compliance['mbb']:.4f}, "
          f"volume fraction {result.volume_fraction:.4f}; wrote {args.out}")
    if args.png:
        lw.plot(result, field="density", filename=args.png)
        print(f"wrote {args.png}")
    return result


if __name__ == "__main__":
    main()
