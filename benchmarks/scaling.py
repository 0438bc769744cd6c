"""Time and memory of the multigrid solve and of whole design iterations against problem size.

Problem: the TopOpt_in_PETSc cantilever (Aage et al. 2015): box [0,2]x[0,1]x[0,1] of 2n x n x n
unit-aspect hexahedra, face x=0 clamped, force -0.001 in z on the nodes of the edge x=2, z=0
(half on its two end nodes), E=1, nu=0.3, SIMP p=3, Emin=1e-9, uniform density 0.12.
Per size: ``update`` (level operators + coarse factorization), ``solve`` (MG-PCG, rtol 1e-8) and
a design iteration's core (update + solve + element energies u_e^T Ke u_e). Memory: peak of
NumPy allocations (tracemalloc) per cell over the whole run_size (includes the element DOF
table of the energy kernel, 192 B/cell), and the growth of the process peak RSS.

    python benchmarks/scaling.py             # 16x8x8 .. 64x32x32, < 2 min on 2 cores
    python benchmarks/scaling.py --large     # adds 128x64x64 (524k hexes, 1.6M DOFs)
    python benchmarks/scaling.py --design random   # iid SIMP densities instead of uniform

Whole design iterations (``--iterations``): the same problem through the public loop
(``lw.minimize_compliance``'s parts: density filter of radius 0.08, MMA with move 0.2, volume
fraction 0.12, solver="multigrid"), i.e. filter + solve + element energies + chain rule + MMA
update, the TopOpt_in_PETSc default problem. Each size runs in a fresh subprocess; memory is
(a) the peak of traced NumPy allocations (tracemalloc) over building the model and the first
two iterations, per hexahedron (a second, traced pass), and (b) the growth of the process's
peak RSS over a warmed-up baseline (JIT caches loaded, a tiny problem solved), per hexahedron,
in a first pass without tracemalloc (its bookkeeping would inflate the RSS). Time per
iteration is the mean of the iterations after the second, of the untraced pass.

    python benchmarks/scaling.py --iterations              # 32x16x16 .. 128x64x64
    python benchmarks/scaling.py --iterations --large      # adds 160x80x80 (1.02M hexes)
    python benchmarks/scaling.py --iterations --petsc      # 64x32x32, 128x64x64, radius 0.08
    python benchmarks/scaling.py --iterations --petsc --mma-asymptotes move   # PETSc's first MMA step
    python benchmarks/scaling.py --iterations --petsc --vcycle-dtype float64  # the all-double V-cycle
    python benchmarks/scaling.py --tets --sizes 3.5 1.75 1.3   # unstructured tet4 parts, 63k..1M
                                                           # tets (benchmarks/tet_scaling.py)

The scaling series keeps the filter radius fixed in cells (2.56, PETSc's radius at 64x32x32):
with a radius fixed in length units the stencil grows like n and so does the filter's cost
per cell, which is the filter's property, not the solver's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from lightweight.fem.assembly import element_dofs
from lightweight.fem.elements import element_stiffness
from lightweight.fem.kernels import element_quadratic_forms
from lightweight.fem.material import elasticity_matrix
from lightweight.fem.multigrid import GridMultigrid

VOLUME_FRACTION = 0.12
E_MIN = 1e-9


def grid_cells(shape):
    """Cells (n_cells, 2^dim) of a structured grid in the numbering of lightweight.mesh.grid."""
    nx, ny, nz = shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    n0 = (i + (nx + 1) * (j + (ny + 1) * k)).ravel()
    layer = (nx + 1) * (ny + 1)
    bottom = [n0, n0 + 1, n0 + nx + 2, n0 + nx + 1]
    return np.stack(bottom + [b + layer for b in bottom], axis=1)


def petsc_cantilever(n: int):
    """(shape, unit element matrix, fixed mask, force vector) of the 2n x n x n problem."""
    shape = (2 * n, n, n)
    h = 1.0 / n
    corner = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                       [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=float) * h
    Ke, _ = element_stiffness("hexahedron", corner[None], elasticity_matrix(1.0, 0.3, 3))
    px, py, pz = 2 * n + 1, n + 1, n + 1
    n_nodes = px * py * pz
    fixed = np.zeros((n_nodes, 3), dtype=bool)
    fixed[np.arange(py * pz) * px] = True                   # i = 0 for every (j, k)
    force = np.zeros((n_nodes, 3))
    edge = (px - 1) + px * np.arange(py)                    # i = 2n, k = 0, all j
    force[edge, 2] = -0.001
    force[edge[[0, -1]], 2] = -0.0005
    return shape, Ke[0], fixed.ravel(), force.ravel()


def design_scale(n_cells: int, design: str = "uniform", seed: int = 0) -> np.ndarray:
    """SIMP stiffness multipliers (n_cells,) for the uniform 0.12 design or iid random densities."""
    if design == "uniform":
        rho = np.full(n_cells, VOLUME_FRACTION)
    else:
        rho = np.random.default_rng(seed).uniform(1e-3, 2 * VOLUME_FRACTION, n_cells)
    return E_MIN + rho ** 3 * (1 - E_MIN)


@contextlib.contextmanager
def numba_threads(n: int):
    """Run the block with n Numba threads (same-run ratios of kernels on one core), then restore."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _rss_mb() -> float:
    """This process's peak resident memory so far, MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory.
    ru_maxrss instead keeps the peak of the process before its exec: started from a large
    parent (pytest with everything loaded), it reported the parent's size and no growth.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_size(n: int, design: str = "uniform", repeats: int = 2) -> dict:
    """Measure one size; returns a dict of timings (s), iterations and memory (bytes/element)."""
    rss0 = _rss_mb()
    tracemalloc.start()
    shape, Ke, fixed, F = petsc_cantilever(n)
    n_cells = shape[0] * shape[1] * shape[2]
    scale = design_scale(n_cells, design)
    t = time.perf_counter()
    mg = GridMultigrid(shape, (1.0 / n,) * 3, Ke, fixed)
    t_init = time.perf_counter() - t
    cell_dofs = element_dofs(grid_cells(shape), 3)
    mg.update(scale)
    U, info = mg.solve(F)
    energies = element_quadratic_forms(Ke[None], cell_dofs, U[None]) * scale[None]
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()                # tracing slows allocation-heavy code: time without it
    del U, energies
    best = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        mg.update(scale)
        t1 = time.perf_counter()
        U, info = mg.solve(F)
        t2 = time.perf_counter()
        energies = element_quadratic_forms(Ke[None], cell_dofs, U[None]) * scale[None]
        t3 = time.perf_counter()
        for key, value in (("update", t1 - t0), ("solve", t2 - t1), ("energies", t3 - t2),
                           ("design_iteration", t3 - t0)):
            best[key] = min(best.get(key, np.inf), value)
    peak = _rss_mb() - rss0
    compliance = float(F @ U)
    assert abs(compliance - energies.sum()) <= 1e-6 * abs(compliance)
    return {"n": n, "shape": shape, "n_cells": n_cells, "n_dofs": mg.n_dofs,
            "levels": [lev.n_dofs for lev in mg.levels], "iterations": info["iterations"][0],
            "init": t_init, **best, "compliance": compliance,
            "peak_rss_mb": peak, "bytes_per_cell": numpy_peak / n_cells}


def fitted_exponent(n_cells, seconds) -> float:
    """Slope of log(seconds) against log(n_cells) by least squares."""
    return float(np.polyfit(np.log(n_cells), np.log(seconds), 1)[0])


# ---------------------------------------------------------------------------- design iterations
PETSC_FILTER_RADIUS = 0.08
PETSC_MOVE = 0.2


def petsc_model(n: int):
    """The TopOpt_in_PETSc cantilever as a lw.Model: 2n x n x n hexes on [0,2]x[0,1]x[0,1]."""
    import lightweight as lw
    mesh = lw.structured_grid((2 * n, n, n), size=(2.0, 1.0, 1.0))
    on_edge = lambda p: (p[:, 0] == 2.0) & (p[:, 2] == 0.0)                  # noqa: E731
    mesh.add_node_set("edge_inner", lambda p: on_edge(p) & (p[:, 1] > 0.0) & (p[:, 1] < 1.0))
    mesh.add_node_set("edge_ends", lambda p: on_edge(p) & ((p[:, 1] == 0.0) | (p[:, 1] == 1.0)))
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                    loads={"tip": [lw.PointLoad("edge_inner", (0.0, 0.0, -0.001)),
                                   lw.PointLoad("edge_ends", (0.0, 0.0, -0.0005))]})


def petsc_loop(model, solver: str = "multigrid", radius: float = PETSC_FILTER_RADIUS,
               mma_asymptotes: str = "bounds"):
    """A SimpLoop of minimize_compliance with the PETSc settings (MMA, density filter 0.08).

    mma_asymptotes="move" starts MMA's asymptotes from the move-limited box, as PETSc's MMA does.
    """
    from lightweight.optimize.api import compliance_problem, make_loop
    return make_loop(model, compliance_problem(model, VOLUME_FRACTION), initial=VOLUME_FRACTION,
                     filter_radius=radius, filter="density", optimizer="mma", penalty=3.0,
                     min_stiffness=E_MIN, max_iterations=10_000, tolerance=0.0, objective_tolerance=0.0,
                     move=PETSC_MOVE, verbose=False, solver=solver, mma_asymptotes=mma_asymptotes)


def run_design_iterations(n: int, iterations: int = 4, solver: str = "multigrid",
                          radius_cells: float | None = None, mma_asymptotes: str = "bounds",
                          vcycle_dtype: str = "float32") -> dict:
    """Measure whole design iterations of the 2n x n x n problem in this process (see docstring).

    radius_cells: filter radius in cell widths (None: PETSc's 0.08 length units, i.e. 0.08 n).
    mma_asymptotes: the loop option ("move": PETSc's first MMA step); vcycle_dtype: the
    GridMultigrid option (float64: the all-double V-cycle before 2026-12-02).
    """
    radius = PETSC_FILTER_RADIUS if radius_cells is None else radius_cells / n
    warm_model = petsc_model(8)                        # JIT caches, MKL loaded: the baseline
    # every level kind used: a bfloat16 first level, a half level above a coarsest product
    warm_model.system().multigrid_options = {"coarse_max_dofs": 100, "bfloat16_levels": 1}
    warm = petsc_loop(warm_model, solver)
    warm.step()
    warm.step()
    del warm, warm_model
    rss0 = _rss_mb()
    # pass 1, untraced: times and peak RSS (tracemalloc's own bookkeeping would inflate the RSS
    # by ~25 MiB at 64x32x32)
    t0 = time.perf_counter()
    model = petsc_model(n)
    model.system().multigrid_options = {"vcycle_dtype": vcycle_dtype}
    loop = petsc_loop(model, solver, radius, mma_asymptotes)
    t_build = time.perf_counter() - t0
    seconds, mg_iterations, compliance = [], [], []

    def step():
        t = time.perf_counter()
        loop.step()
        seconds.append(time.perf_counter() - t)
        info = loop.analysis.system.last_solve_info
        mg_iterations.append(int(max(info.get("iterations") or [0])))
        compliance.append(loop.history[-1]["objective"])

    for _ in range(max(2, iterations)):
        step()
    peak_rss = _rss_mb() - rss0
    system = loop.analysis.system
    solve_info, csr_built, n_dofs = dict(system.last_solve_info), system._pattern is not None, system.n_dofs
    del loop, model, system
    gc.collect()
    # pass 2, traced: peak of NumPy allocations over building the model and two iterations
    tracemalloc.start()
    model = petsc_model(n)
    model.system().multigrid_options = {"vcycle_dtype": vcycle_dtype}
    loop = petsc_loop(model, solver, radius, mma_asymptotes)
    loop.step()
    loop.step()
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n_cells = model.mesh.n_cells
    timed = seconds[2:] or seconds[1:]
    return {"n": n, "shape": list(model.mesh.grid), "n_cells": n_cells, "n_dofs": n_dofs,
            "filter_radius": radius, "filter_radius_cells": radius * n,
            "mma_asymptotes": mma_asymptotes, "vcycle_dtype": vcycle_dtype,
            "solver": solve_info.get("solver"),
            "levels": solve_info.get("levels"), "build_seconds": t_build,
            "iteration_seconds": seconds, "seconds_per_iteration": float(np.mean(timed)),
            "solver_iterations": mg_iterations, "compliance": compliance,
            "numpy_peak_bytes_per_cell": numpy_peak / n_cells,
            "peak_rss_mb": peak_rss, "rss_bytes_per_cell": peak_rss * 2 ** 20 / n_cells,
            "csr_pattern_built": csr_built}


def design_iterations_in_subprocess(n: int, iterations: int, solver: str = "multigrid",
                                    radius_cells: float | None = None, mma_asymptotes: str = "bounds",
                                    vcycle_dtype: str = "float32", env: dict | None = None) -> dict:
    """run_design_iterations in a fresh Python process (clean peak RSS); returns its dict.

    env: the process's environment (None: this one's), e.g. to pin its threads.
    """
    extra = [] if radius_cells is None else ["--radius-cells", str(radius_cells)]
    extra += ["--mma-asymptotes", mma_asymptotes, "--vcycle-dtype", vcycle_dtype]
    out = subprocess.run([sys.executable, __file__, "--one", str(n), "--iterations-per-size",
                          str(iterations), "--solver", solver, *extra],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main_iterations(args) -> int:
    if args.petsc:        # the two sizes of the TopOpt_in_PETSc comparison, its filter radius 0.08
        sizes, radius_cells = [32, 64], None
    else:                 # scaling series: filter radius fixed in cells (PETSc's at 64x32x32)
        sizes, radius_cells = [16, 24, 32, 48, 64] + ([80] if args.large else []), args.radius_cells
    rows = []
    print(f"{'grid':>12} {'cells':>8} {'dofs':>8} {'s/iter':>7} {'MG its':>16} "
          f"{'NumPy B/hex':>11} {'RSS B/hex':>9} {'RSS MiB':>8}")
    for n in sizes:
        r = design_iterations_in_subprocess(n, args.iterations_per_size, args.solver, radius_cells,
                                            args.mma_asymptotes, args.vcycle_dtype)
        rows.append(r)
        print(f"{'x'.join(map(str, r['shape'])):>12} {r['n_cells']:>8} {r['n_dofs']:>8} "
              f"{r['seconds_per_iteration']:>7.2f} {str(r['solver_iterations']):>16} "
              f"{r['numpy_peak_bytes_per_cell']:>11.0f} {r['rss_bytes_per_cell']:>9.0f} "
              f"{r['peak_rss_mb']:>8.0f}", flush=True)
    cells = np.array([r["n_cells"] for r in rows], dtype=float)
    secs = np.array([r["seconds_per_iteration"] for r in rows])
    big = cells >= 10_000
    exponent = fitted_exponent(cells[big], secs[big])
    print(f"fitted exponent of design-iteration time vs cells (>= 1e4 cells): {exponent:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "exponent": exponent}, indent=1))
    _plot(cells, {"design iteration": secs}, args.plot.replace(".png", "_iterations.png"),
          "design iterations, TopOpt_in_PETSc cantilever")
    return 0


def _plot(cells, series: dict, path: str, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, secs in series.items():
        ax.loglog(cells, secs, "o-", label=label)
    last = list(series.values())[0][-1]
    ax.loglog(cells, cells / cells[-1] * last, "k:", label="O(n)")
    ax.set_xlabel("hexahedra")
    ax.set_ylabel("seconds")
    ax.set_title(title)
    ax.legend()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--tets" in argv:
        # the unstructured mode: design iterations on Gmsh tet4 parts (benchmarks/tet_scaling.py)
        import tet_scaling
        return tet_scaling.main([a for a in argv if a != "--tets"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true",
                        help="add 128x64x64 (solver core) or 160x80x80 (--iterations)")
    parser.add_argument("--design", choices=["uniform", "random"], default="uniform")
    parser.add_argument("--plot", default="out/multigrid_scaling.png", help="PNG path")
    parser.add_argument("--iterations", action="store_true",
                        help="time whole design iterations (filter, solve, energies, MMA)")
    parser.add_argument("--iterations-per-size", type=int, default=4)
    parser.add_argument("--radius-cells", type=float, default=2.56,
                        help="filter radius in cells for the --iterations series (2.56 = PETSc's "
                             "0.08 at 64x32x32)")
    parser.add_argument("--petsc", action="store_true",
                        help="with --iterations: 64x32x32 and 128x64x64 with PETSc's radius 0.08")
    parser.add_argument("--solver", default="multigrid")
    parser.add_argument("--mma-asymptotes", choices=["bounds", "move"], default="bounds",
                        help="with --iterations: MMA's first asymptotes (move: PETSc's first step)")
    parser.add_argument("--vcycle-dtype", choices=["float32", "float64"], default="float32",
                        help="with --iterations: fine-level V-cycle precision (float64: the old path)")
    parser.add_argument("--json", default=None, help="write the rows of --iterations here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:           # child process of design_iterations_in_subprocess
        radius_cells = args.radius_cells if "--radius-cells" in (argv or sys.argv) else None
        print(json.dumps(run_design_iterations(args.one, args.iterations_per_size, args.solver,
                                               radius_cells, args.mma_asymptotes, args.vcycle_dtype)))
        return 0
    if args.iterations:
        return main_iterations(args)
    sizes = [8, 16, 24, 32] + ([64] if args.large else [])
    rows = []
    print(f"{'grid':>12} {'cells':>8} {'dofs':>9} {'levels':>26} {'its':>4} {'update s':>9} "
          f"{'solve s':>8} {'iter s':>8} {'rss+ MB':>8} {'B/cell':>7}")
    for n in sizes:
        r = run_size(n, args.design, repeats=1 if n >= 64 else 2)
        rows.append(r)
        print(f"{'x'.join(map(str, r['shape'])):>12} {r['n_cells']:>8} {r['n_dofs']:>9} "
              f"{str(r['levels']):>26} {r['iterations']:>4} {r['update']:>9.3f} {r['solve']:>8.3f} "
              f"{r['design_iteration']:>8.3f} {r['peak_rss_mb']:>8.0f} {r['bytes_per_cell']:>7.0f}",
              flush=True)
    cells = np.array([r["n_cells"] for r in rows], dtype=float)
    big = cells >= 10_000            # the smallest sizes are dominated by fixed overheads
    for key in ("solve", "design_iteration"):
        secs = np.array([r[key] for r in rows])
        print(f"fitted exponent of {key} time vs cells (>= 1e4 cells): "
              f"{fitted_exponent(cells[big], secs[big]):.2f}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 4))
        for key in ("solve", "design_iteration", "update"):
            ax.loglog(cells, [r[key] for r in rows], "o-", label=key)
        ax.loglog(cells, cells / cells[-1] * rows[-1]["design_iteration"], "k:", label="O(n)")
        ax.set_xlabel("hexahedra")
        ax.set_ylabel("seconds")
        ax.set_title("GridMultigrid, TopOpt_in_PETSc cantilever")
        ax.legend()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    except ImportError:
        print("matplotlib not installed: no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
