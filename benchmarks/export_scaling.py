"""Export and re-evaluation of a big part, phase by phase (issue 14, item 4).

The design: the bracket of ``tet_parts.py`` (Gmsh tets, edge ``size`` mm; 1.75 -> 422k tets,
1.6 -> 550k) with a synthetic density instead of an optimization run: a projected smooth field
(logistic in the distance to a frame of round bars of radius 9 mm linking the bolt bores and
the load bore, plus bosses around the bores), so the part is connected, held and loaded like
an optimized one, and the case is reproducible in seconds. The closed loop then runs as
``lightweight optimize --export`` does it: ``export_solid`` (default mesh size, or ``--part-size``),
then ``verify_export`` with compliance limits the part misses by 1 %, so the mesh-error
estimate runs too (the expensive branch), unless ``--no-refine``.

    python benchmarks/export_scaling.py --size 1.75                # 422k-tet design
    python benchmarks/export_scaling.py --size 1.75 --profile      # + cProfile top entries
    python benchmarks/export_scaling.py --size 4 --part-size 2     # small case

Prints one JSON line with seconds per phase and the figures of the part.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

# bars of the synthetic frame (x, y) at mid thickness, and bosses (x, y, outer radius)
FRAME = [((20.0, 18.0), (100.0, 10.0)), ((100.0, 10.0), (180.0, 40.0)),
         ((20.0, 62.0), (100.0, 70.0)), ((100.0, 70.0), (180.0, 40.0)),
         ((20.0, 18.0), (20.0, 62.0))]
BOSSES = [(20.0, 18.0, 15.0), (20.0, 62.0, 15.0), (180.0, 40.0, 18.0)]
BAR_RADIUS = 9.0


def synthetic_density(centres: np.ndarray, width: float) -> np.ndarray:
    """Projected smooth density (n,) in [1e-3, 1] at cell centres (n, 3) mm; ``width``: the
    0.1-0.9 transition length (mm)."""
    distance = np.full(len(centres), np.inf)
    for (x0, y0), (x1, y1) in FRAME:
        a = np.array([x0, y0, 20.0])
        d = np.array([x1, y1, 20.0]) - a
        t = np.clip((centres - a) @ d / (d @ d), 0.0, 1.0)
        distance = np.minimum(distance, np.linalg.norm(centres - (a + t[:, None] * d), axis=1) - BAR_RADIUS)
    for x, y, r in BOSSES:
        distance = np.minimum(distance, np.hypot(centres[:, 0] - x, centres[:, 1] - y) - r)
    rho = 1.0 / (1.0 + np.exp(np.clip(distance * (4.4 / width), -50, 50)))
    return np.clip(rho, 1e-3, 1.0)


def synthetic_result(size: float, solver: str = "auto", solve: bool = True):
    """An OptimizationResult of the bracket at edge ``size`` with the synthetic density (solved
    unless ``solve=False``: export needs only the density)."""
    import lightweight as lw
    from lightweight.optimize.result import OptimizationResult
    from tet_parts import part_model
    model = part_model(size)
    density = synthetic_density(model.mesh.cell_centers(), width=2.0 * size)
    solution = lw.solve(model, density=density, solver=solver) if solve else None
    volume = float(np.abs(model.mesh.cell_volumes()) @ density)
    return OptimizationResult(model=model, density=density, design_variables=density, history=[],
                              problem="synthetic", compliance=dict(solution.compliance) if solve else {},
                              volume_fraction=volume / float(np.abs(model.mesh.cell_volumes()).sum()),
                              volume=volume, mass=volume * model.material.density, solution=solution)


def run(size: float, part_size: float | None = None, refine: bool = True, profile: bool = False,
        solver: str = "auto", out: Path | None = None) -> dict:
    """Seconds of export_solid and verify_export on the synthetic design at edge ``size`` mm."""
    import lightweight as lw
    t0 = time.perf_counter()
    result = synthetic_result(size)
    record = {"design_tets": result.model.mesh.n_cells, "design_setup_s": time.perf_counter() - t0,
              "volume_fraction": result.volume_fraction}
    with tempfile.TemporaryDirectory() as tmp:
        part_path = (out or Path(tmp)) / "part.msh"
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        part = lw.export_solid(result, part_path, mesh_size=part_size)
        if prof:
            prof.disable()
        record["export_s"] = time.perf_counter() - t0
        record["part_tets"] = part.n_cells
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
        # limits the part misses by a little: the explanation branch (mesh error) runs
        limits = {"max_compliance": {c: 0.99 * v for c, v in result.compliance.items()}}
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        check = lw.verify_export(result, part_path, limits, refine=refine, solver=solver)
        if prof:
            prof.disable()
        record["verify_s"] = time.perf_counter() - t0
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    record["part_compliance"] = check.part["compliance"]
    record["design_compliance"] = result.compliance
    record["mesh_error"] = check.mesh_error
    record["part_mesh_error"] = check.part_mesh_error
    record["part_solver"] = getattr(check.part_solution, "solver_info", None)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1.75, help="design tet edge (mm): 1.75 -> 422k tets")
    parser.add_argument("--part-size", type=float, default=None, help="part tet edge (mm); default: export_solid's")
    parser.add_argument("--no-refine", action="store_true", help="skip the mesh-error estimate")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--solver", default="auto")
    args = parser.parse_args()
    rec = run(args.size, args.part_size, refine=not args.no_refine, profile=args.profile, solver=args.solver)
    print(json.dumps(rec, default=str))
