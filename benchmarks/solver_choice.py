"""Measurements behind the "auto" solver choice and the factor-memory estimates.

For a few small meshes of each kind (2D quad/triangle, 3D hex8/tet4/tet10) this prints, per
mesh: DOFs, nonzeros per row of K, what PARDISO's analysis reports (factor nonzeros, MFlop,
memory peak from iparm 15-17), the seconds of one numeric factorization on one MKL thread, and
AMG-PCG (smoothed aggregation, rigid-body modes) setup and per-right-hand-side solve seconds
with their iteration count, on random SIMP-like element scales in [1e-3, 1]. Times are the
minimum of ``--repeat`` runs (the machine is shared). Keep sizes small: seconds each.

    python benchmarks/solver_choice.py [--repeat 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import lightweight as lw
from lightweight import _threads
from lightweight.fem.solvers import AMGSolver, PardisoSolver, SuperLUSolver
from lightweight.mesh import Mesh
from lightweight.mesh.grid import to_quadratic

# Kuhn split of a cube (VTK hexahedron corner order) into 6 positively oriented tets
_HEX_TO_TETS = np.array([[0, 1, 2, 6], [0, 2, 3, 6], [0, 3, 7, 6], [0, 7, 4, 6], [0, 4, 5, 6],
                         [0, 5, 1, 6]])
_QUAD_TO_TRIS = np.array([[0, 1, 2], [0, 2, 3]])


def _oriented_tets(points, tets):
    e = points[tets]
    vol = np.einsum("ij,ij->i", np.cross(e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]), e[:, 3] - e[:, 0])
    tets = tets.copy()
    tets[vol < 0] = tets[vol < 0][:, [0, 2, 1, 3]]
    return tets


def make_mesh(kind: str, n: int) -> Mesh:
    """kind: quad | triangle (n x n cells) or hexahedron | tetra | tetra10 (n x n x n cubes)."""
    if kind in ("quad", "triangle"):
        grid = lw.structured_grid((n, n), size=(1.0, 1.0))
        if kind == "quad":
            return Mesh(grid.points, grid.cells, "quad")
        return Mesh(grid.points, grid.cells[:, _QUAD_TO_TRIS].reshape(-1, 3), "triangle")
    grid = lw.structured_grid((n, n, n), size=(1.0, 1.0, 1.0))
    if kind == "hexahedron":
        return Mesh(grid.points, grid.cells, "hexahedron")
    tets = _oriented_tets(grid.points, grid.cells[:, _HEX_TO_TETS].reshape(-1, 4))
    mesh = Mesh(grid.points, tets, "tetra")
    return to_quadratic(mesh) if kind == "tetra10" else mesh


def system_matrix(mesh: Mesh, seed: int = 0):
    dim = mesh.points.shape[1]
    mesh.add_node_set("clamp", lambda p: p[:, 0] <= 1e-9)
    mesh.add_node_set("tip", lambda p: p[:, 0] >= 1.0 - 1e-9)
    load = (0.0, -1.0) if dim == 2 else (0.0, 0.0, -1.0)
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"clamp": "xyz"[:dim]},
                     loads={"tip": lw.PointLoad("tip", load)})
    system = model.system()
    scale = np.random.default_rng(seed).uniform(1e-3, 1.0, mesh.n_cells)
    constrained, _ = system.dirichlet.apply(system.stiffness_data(scale))
    K = system.pattern.matrix(constrained)
    return K, mesh.points, system.load_vectors()[0]


def measure(kind: str, n: int, repeat: int) -> dict:
    mesh = make_mesh(kind, n)
    K, points, b = system_matrix(mesh)
    row = {"kind": kind, "n": n, "dofs": K.shape[0], "nnz_per_row": K.nnz / K.shape[0]}
    _threads.set_pardiso_threads(1)
    try:
        factor, analysis = [], []
        for _ in range(repeat):
            solver = PardisoSolver()
            t0 = time.perf_counter()
            solver.factorize(K)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            solver.factorize(K)                       # numeric phase only (same pattern)
            factor.append(time.perf_counter() - t0)
            analysis.append(first - factor[-1])
        row.update(pardiso_factor_s=min(factor), pardiso_analysis_s=max(0.0, min(analysis)),
                   **solver.analysis_report())
    finally:
        _threads.set_pardiso_threads(None)
    if K.shape[0] <= 40_000:
        times = []
        for _ in range(repeat):
            lu = SuperLUSolver()
            t0 = time.perf_counter()
            lu.factorize(K)
            times.append(time.perf_counter() - t0)
        row.update(superlu_factor_s=min(times), superlu_factor_nnz=int(lu._lu.L.nnz + lu._lu.U.nnz))
    setups, solves = [], []
    for _ in range(repeat):
        amg = AMGSolver(points=points, rtol=1e-8)
        t0 = time.perf_counter()
        amg.factorize(K)
        setups.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        amg.solve(b)
        solves.append(time.perf_counter() - t0)
    row.update(amg_setup_s=min(setups), amg_solve_s=min(solves), amg_iterations=amg.info["iterations"][0])
    return row


CASES = [("quad", 60), ("quad", 120), ("quad", 240), ("triangle", 60), ("triangle", 120),
         ("triangle", 240), ("hexahedron", 12), ("hexahedron", 18), ("hexahedron", 24),
         ("tetra", 12), ("tetra", 18), ("tetra", 24), ("tetra10", 7), ("tetra10", 10),
         ("tetra10", 13)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="one kind (quad, triangle, hexahedron, tetra, tetra10)")
    args = parser.parse_args(argv)
    rows = []
    for kind, n in CASES:
        if args.only and kind != args.only:
            continue
        row = measure(kind, n, args.repeat)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
              flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
