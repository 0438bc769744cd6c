"""Design iterations on unstructured tet4 parts from 50k to 1M tets (the tet mode of scaling.py).

Problem: the bracket of ``tet_parts.py`` (bolt bores clamped, three load cases on the load bore),
``lw.minimize_compliance`` with volume fraction 0.3, a density filter of radius 1.5 tet edges, MMA,
``solver`` "amg-reuse" (default) or "amg" (pyamg rebuilt on every refill). Each size runs in a
fresh subprocess: the time per design iteration is the median of the iterations after the
first (which builds the hierarchy), the memory is the growth of the peak RSS over a warmed-up
baseline (JIT caches loaded) per tet, and a cProfile pass over the same run splits an
iteration into assembly (refill + constraints), solver refresh, PCG, filter, element
energies and MMA.

    python benchmarks/tet_scaling.py                        # sizes 3.5 1.75 (63k, 422k tets)
    python benchmarks/tet_scaling.py --sizes 3.5 2.2 1.75 1.3 --plot out/tet_scaling.png
    python benchmarks/tet_scaling.py --sizes 1.75 --solver amg --iterations 3
    python benchmarks/tet_scaling.py --sizes 2.2 --memory      # + the arrays kept, B/tet by owner
    python benchmarks/tet_scaling.py --sizes 1.75 --problem mass   # the issue's trial (below)
    python benchmarks/scaling.py --tets ...                 # the same, through scaling.py

``--problem mass``: the trial of issue 14 instead, ``lw.minimize_mass`` with a compliance limit
per load case (``max_compliance_factor=3``: three MMA constraints) and Heaviside projection
(beta 1 -> 8, ``projection={"beta": 1.0, "beta_max": 8.0}``), same filter and solver.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# function name (file suffix, function) -> phase of the design iteration (cProfile); assembly,
# solver setup and PCG come from the system's own timings (LinearElasticSystem.last_solve_info)
PHASES = {
    "filter": [("filters.py", "forward"), ("filters.py", "backward")],
    "energies": [("kernels.py", "element_quadratic_forms"), ("kernels.py", "packed_element_forms"),
                 ("kernels.py", "tet4_element_bilinear_forms")],
    "mma": [("mma.py", "update")],
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _array_bytes(obj, seen: set, depth: int = 0) -> int:
    """Bytes of the NumPy arrays (and SciPy sparse matrices) reachable from ``obj``, each buffer
    counted once (views count as their base); walks lightweight/pyamg objects, lists, dicts."""
    import scipy.sparse as sp
    if depth > 8 or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root is not obj:
            if id(root) in seen:
                return 0
            seen.add(id(root))
        return root.nbytes
    if sp.issparse(obj):
        return sum(_array_bytes(getattr(obj, name), seen, depth + 1)
                   for name in ("data", "indices", "indptr") if hasattr(obj, name))
    if isinstance(obj, (list, tuple)):
        return sum(_array_bytes(item, seen, depth + 1) for item in obj)
    if isinstance(obj, dict):
        return sum(_array_bytes(item, seen, depth + 1) for item in obj.values())
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("lightweight"):
        return sum(_array_bytes(item, seen, depth + 1) for item in vars(obj).values())
    return 0


def memory_inventory(system, n_cells: int) -> dict:
    """What a solved LinearElasticSystem keeps, bytes per cell by owner (each buffer once,
    in this order): mesh, pattern, solver's fine matrix, hierarchy levels, the rest."""
    seen: set = set()
    out = {"mesh": _array_bytes(system.mesh, seen), "pattern": _array_bytes(system._pattern, seen)}
    solver = system.solver
    hierarchy = getattr(solver, "_hierarchy", None)
    out["solver K"] = _array_bytes(getattr(solver, "K", None), seen)
    if hierarchy is not None and hasattr(hierarchy, "levels"):
        for l, level in enumerate(hierarchy.levels):
            for name, value in vars(level).items():
                b = _array_bytes(value, seen)
                if b:
                    out[f"level {l} {name}"] = b
    out["solver other"] = _array_bytes(solver, seen)
    out["system other"] = _array_bytes(system, seen)
    return {k: round(v / n_cells, 1) for k, v in out.items() if v}


def optimize(model, problem: str, radius: float, iterations: int, solver: str):
    """The benchmark's run: minimize_compliance (volume 0.3) or the min-mass trial."""
    import lightweight as lw
    common = dict(filter="density", filter_radius=radius, max_iterations=iterations,
                  tolerance=0.0, solver=solver, verbose=False)
    if problem == "mass":
        return lw.minimize_mass(model, max_compliance_factor=3.0,
                                projection={"beta": 1.0, "beta_max": 8.0}, **common)
    return lw.minimize_compliance(model, volume_fraction=0.3, optimizer="mma", **common)


def run_one(size: float, solver: str, iterations: int, profile: bool, memory: bool = False,
            problem: str = "compliance") -> dict:
    """One size in this process: seconds per iteration, solver iterations, memory, phases."""
    import lightweight as lw
    from tet_parts import part_mesh, part_model
    warm = part_model(5.0)          # JIT caches and imports in the baseline, not in the growth
    optimize(warm, problem, 7.5, 2, solver)
    del warm
    rss0 = _rss_mb()
    mesh = part_mesh(size)
    model = part_model(size, mesh=mesh)
    from lightweight.fem.system import LinearElasticSystem
    solves = []
    analyse = LinearElasticSystem.analyse

    def recorded(self, *args, **kwargs):
        state = analyse(self, *args, **kwargs)
        solves.append(dict(self.last_solve_info))
        return state

    LinearElasticSystem.analyse = recorded
    systems = []
    init = LinearElasticSystem.__init__

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        systems.append(self)

    LinearElasticSystem.__init__ = keep
    # the loop frees its solver before building the result: take the inventory just before
    inventory = {}
    release = LinearElasticSystem.release_solver

    def inventoried(self):
        if memory and self.solver is not None:
            inventory.update(memory_inventory(self, mesh.n_cells))
        return release(self)

    LinearElasticSystem.release_solver = inventoried
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    res = optimize(model, problem, 1.5 * size, iterations, solver)
    if profiler:
        profiler.disable()
    total = time.perf_counter() - t0
    LinearElasticSystem.analyse = analyse
    LinearElasticSystem.__init__ = init
    LinearElasticSystem.release_solver = release
    later = solves[1:] or solves        # the first iteration builds the hierarchy
    system_phases = {
        "assembly": float(np.median([s["assembly_seconds"] for s in later])),
        "solver_setup": float(np.median([s.get("setup_seconds", 0.0) for s in later])),
        "pcg": float(np.median([s["solve_seconds"] for s in later])),   # the solver's own solve time
        "first_setup": solves[0].get("setup_seconds", 0.0) if solves else 0.0}
    seconds = [rec["seconds"] for rec in res.history]
    row = {"size": size, "solver": solver, "problem": problem, "n_cells": int(mesh.n_cells),
           "n_dofs": int(3 * mesh.n_nodes),
           "seconds_per_iteration": float(np.median(seconds[1:])) if len(seconds) > 1 else seconds[0],
           "first_iteration": seconds[0], "seconds": seconds, "total": total,
           "solver_iterations": [rec.get("solver_iterations") for rec in res.history],
           "peak_rss_growth_mb": _rss_mb() - rss0,
           "compliance": res.history[-1]["objective"]}
    row["bytes_per_tet"] = row["peak_rss_growth_mb"] * 2**20 / mesh.n_cells
    if memory and systems:
        row["kept_bytes_per_tet"] = inventory or memory_inventory(systems[-1], mesh.n_cells)
    if profiler:
        stats = pstats.Stats(profiler).stats
        phases = {}
        for phase, names in PHASES.items():
            phases[phase] = sum(v[3] for (path, _, fn), v in stats.items()
                                if any(path.endswith(f) and fn == name for f, name in names))
        n = max(1, len(seconds))
        row["phases_per_iteration"] = {**system_phases, **{k: v / n for k, v in phases.items()}}
    else:
        row["phases_per_iteration"] = system_phases
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[3.5, 1.75],
                        help="tet edge lengths in mm (3.5: 63k tets, 1.75: 422k, 1.3: ~1M)")
    parser.add_argument("--solver", default="amg-reuse")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="phase split (cProfile: ~5 %% slower)")
    parser.add_argument("--memory", action="store_true",
                        help="also list the arrays the system and solver keep (B/tet by owner)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None, help="PNG of seconds per iteration against tets")
    parser.add_argument("--problem", choices=("compliance", "mass"), default="compliance",
                        help="minimize_compliance (volume 0.3) or the issue's min-mass trial")
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.solver, args.iterations, args.profile, args.memory,
                                 args.problem)))
        return 0
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--solver", args.solver,
               "--iterations", str(args.iterations), "--problem", args.problem] \
            + (["--profile"] if args.profile else []) \
            + (["--memory"] if args.memory else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['n_cells']:>9,d} tets {row['n_dofs']:>9,d} DOFs  {row['seconds_per_iteration']:6.2f} s/it "
              f"(first {row['first_iteration']:.1f} s)  PCG its {row['solver_iterations']}  "
              f"{row['bytes_per_tet']:.0f} B/tet  " +
              " ".join(f"{k} {v:.2f}" for k, v in row.get("phases_per_iteration", {}).items()),
              flush=True)
        if "kept_bytes_per_tet" in row:
            print("    kept B/tet: " + ", ".join(f"{k} {v:.0f}" for k, v in row["kept_bytes_per_tet"].items()),
                  flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot and rows:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        n = np.array([r["n_cells"] for r in rows], float)
        t = np.array([r["seconds_per_iteration"] for r in rows])
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.loglog(n, t, "o-", label=f"{args.solver}, 3 load cases")
        ax.loglog(n, t[0] * n / n[0], "k:", label="linear in tets")
        ax.set_xlabel("tets")
        ax.set_ylabel("seconds per design iteration")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
