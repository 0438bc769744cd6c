"""Export and re-evaluation of a big part, phase by phase (issue 14, item 4).

The design: the bracket of ``tet_parts.py`` (Gmsh tets, edge ``size`` mm; 1.75 -> 422k tets,
1.6 -> 550k) with a synthetic density instead of an optimization run: a projected smooth field
(logistic in the distance to a frame of round bars of radius 9 mm linking the bolt bores and
the load bore, plus bosses around the bores), so the part is connected, held and loaded like
an optimized one, and the case is reproducible in seconds.

Export: ``export_solid`` with its defaults (mesh size = the design's mean edge, or
``--part-size``), no design solve. Re-evaluation: ``verify_export`` of a big part (the whole
bracket meshed at 1.6 mm, 550k tets, with its named bore faces) against the synthetic design at
4 mm, read from a binary and from an ASCII .msh in the same run (what export_solid writes now and
wrote before).

    python benchmarks/export_scaling.py --export 1.75              # 422k-tet design
    python benchmarks/export_scaling.py --export 1.75 --profile    # + cProfile top entries
    python benchmarks/export_scaling.py --reevaluate 1.6           # 550k-tet part

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
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

# bars of the synthetic frame (x, y) at mid thickness, and bosses (x, y, outer radius)
FRAME = [((20.0, 18.0), (100.0, 10.0)), ((100.0, 10.0), (180.0, 40.0)),
         ((20.0, 62.0), (100.0, 70.0)), ((100.0, 70.0), (180.0, 40.0)),
         ((20.0, 18.0), (20.0, 62.0))]
BOSSES = [(20.0, 18.0, 15.0), (20.0, 62.0, 15.0), (180.0, 40.0, 18.0)]
BAR_RADIUS = 9.0


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the Gmsh runs of export_solid)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def export_case(size: float, part_size: float | None = None, profile: bool = False,
                level_field: str | None = None) -> dict:
    """Seconds of export_solid on the synthetic design at edge ``size`` mm (no design solve);
    level_field: export_solid's (None: its default)."""
    import lightweight as lw
    result = synthetic_result(size, solve=False)
    record = {"design_tets": result.model.mesh.n_cells, "volume_fraction": result.volume_fraction}
    with tempfile.TemporaryDirectory() as tmp:
        prof = cProfile.Profile() if profile else None
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        if prof:
            prof.enable()
        options = {} if level_field is None else {"level_field": level_field}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            part = lw.export_solid(result, Path(tmp) / "part.msh", mesh_size=part_size, **options)
        if prof:
            prof.disable()
        record.update(export_s=time.perf_counter() - t0, export_cpu_s=time.process_time() - c0,
                      export_gmsh_child_cpu_s=_children_cpu() - k0,
                      part_tets=part.n_cells, part_sets=sorted(part.face_sets),
                      level_field=level_field or "default", warnings=[str(w.message)[:160] for w in caught])
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
    return record


def part_file_io(mesh, path: Path, binary: bool) -> tuple[float, object]:
    """(seconds to write ``mesh`` to ``path`` and read it back, the mesh read)."""
    from lightweight.mesh.io import read_mesh, write_mesh
    t0 = time.perf_counter()
    write_mesh(path, mesh, binary=binary)
    again = read_mesh(path)
    return time.perf_counter() - t0, again


def reevaluate_case(part_size: float = 1.6, design_size: float = 4.0, solver: str = "auto") -> dict:
    """Seconds of verify_export of a big part written as ASCII (before) and binary (now) .msh.

    The part is the whole bracket meshed at edge ``part_size`` (1.6 mm: 550k tets) with its named
    faces; the design it is judged against is the synthetic one at ``design_size`` (solved).
    Compliance limits 10x the design's (met: no mesh-error branch). Binary first, then ASCII.
    """
    import lightweight as lw
    from tet_parts import part_mesh
    result = synthetic_result(design_size, solver=solver)
    limits = {"max_compliance": {c: 10 * v for c, v in result.compliance.items()}}
    part = part_mesh(part_size)
    record = {"part_tets": part.n_cells, "part_nodes": part.n_nodes}
    with tempfile.TemporaryDirectory() as tmp:
        for binary in (True, False):
            path = Path(tmp) / f"part_{'binary' if binary else 'ascii'}.msh"
            lw.write_mesh(path, part, binary=binary)
            t0, c0 = time.perf_counter(), time.process_time()
            check = lw.verify_export(result, path, limits, refine=False, solver=solver)
            key = "binary" if binary else "ascii"
            record[f"verify_{key}_s"] = time.perf_counter() - t0
            record[f"verify_{key}_cpu_s"] = time.process_time() - c0
            record[f"solve_{key}_s"] = {k: check.part_solution.solver_info.get(k) for k in
                                         ("solver", "setup_seconds", "solve_seconds", "assembly_seconds")}
            record["part_compliance"] = check.part["compliance"]
    return record


def closed_loop_case(size: float = 1.6, solver: str = "auto") -> dict:
    """Seconds of the engineer's closed loop on a design of edge ``size`` (1.6 mm: 550k tets):
    export_solid with its defaults, then verify_export of the part it wrote against the design
    (compliance limits 10x the design's, so no mesh-error branch). The design's own solve is
    not timed (it is the optimization's last solve)."""
    import lightweight as lw
    result = synthetic_result(size, solver=solver)
    limits = {"max_compliance": {c: 10 * v for c, v in result.compliance.items()}}
    record = {"design_tets": result.model.mesh.n_cells}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.msh"
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            part = lw.export_solid(result, path)
        t1 = time.perf_counter()
        check = lw.verify_export(result, path, limits, refine=False, solver=solver)
        t2 = time.perf_counter()
    record.update(export_s=t1 - t0, verify_s=t2 - t1, closed_loop_s=t2 - t0, part_tets=part.n_cells,
                  part_sets=sorted(part.face_sets), part_compliance=check.part["compliance"],
                  design_compliance=result.compliance,
                  solver={k: check.part_solution.solver_info.get(k) for k in
                          ("solver", "setup_seconds", "solve_seconds", "assembly_seconds")},
                  warnings=[str(w.message)[:160] for w in caught])
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=float, default=None, metavar="SIZE",
                        help="export the synthetic design at tet edge SIZE mm (1.75 -> 422k tets)")
    parser.add_argument("--part-size", type=float, default=None, help="part tet edge (mm); default: export_solid's")
    parser.add_argument("--reevaluate", type=float, default=None, metavar="SIZE",
                        help="verify_export of the whole bracket meshed at SIZE mm (1.6 -> 550k tets)")
    parser.add_argument("--level-field", default=None, help="export_solid's level_field (default: its own)")
    parser.add_argument("--closed-loop", type=float, default=None, metavar="SIZE",
                        help="export_solid then verify_export of its part, design edge SIZE mm (1.6: 550k tets)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--solver", default="auto")
    args = parser.parse_args()
    if args.export is not None:
        print(json.dumps(export_case(args.export, args.part_size, args.profile, args.level_field), default=str), flush=True)
    if args.closed_loop is not None:
        print(json.dumps(closed_loop_case(args.closed_loop, solver=args.solver), default=str), flush=True)
    if args.reevaluate is not None:
        print(json.dumps(reevaluate_case(args.reevaluate, solver=args.solver), default=str), flush=True)
