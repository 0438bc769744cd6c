"""FE core benchmarks: assembly (pattern, refill), element energies and solves on 2D/3D grids.

Run: ``python -m pytest benchmarks/bench_fem.py --benchmark-enable``. The ratio test measures
the Numba refill against SciPy's COO->CSR assembly of the same matrix in the same process, so
the comparison holds on a noisy machine; its threshold lives in benchmarks/thresholds.json.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.fem.assembly import build_pattern, coo_assembly, refill

THRESHOLDS = json.loads((Path(__file__).parent / "thresholds.json").read_text())

GRIDS = {"2d_320x320": (320, 320), "3d_48x48x48": (48, 48, 48)}   # 102k and 111k elements


def grid_system(shape):
    mesh = lw.structured_grid(shape)
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"[:mesh.dim]},
                     loads={"tip": lw.Traction("xmax", np.r_[np.zeros(mesh.dim - 1), -1.0])})
    return mesh, model.system()


@pytest.fixture(scope="module", params=list(GRIDS))
def grid(request):
    mesh, system = grid_system(GRIDS[request.param])
    scale = np.random.default_rng(0).uniform(1e-3, 1.0, mesh.n_cells)
    return request.param, mesh, system, scale


def test_pattern(benchmark, grid):
    _, mesh, _, _ = grid
    benchmark(build_pattern, mesh.cells, mesh.n_nodes, mesh.dim)


def test_refill(benchmark, grid):
    _, _, system, scale = grid
    data = np.empty(system.pattern.nnz)
    benchmark(refill, system.pattern, system.element_matrices, scale, data)


def test_coo_assembly(benchmark, grid):
    _, mesh, system, scale = grid
    benchmark.pedantic(coo_assembly, args=(mesh.cells, mesh.n_nodes, mesh.dim, system.element_matrices, scale),
                       rounds=3, iterations=1)


def test_element_energies(benchmark, grid):
    _, mesh, system, _ = grid
    U = np.random.default_rng(1).standard_normal((1, system.n_dofs))
    benchmark(system.element_energies, U)


def test_solve(benchmark, grid):
    _, _, system, scale = grid
    benchmark.pedantic(system.solve, args=(scale,), rounds=2, iterations=1)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.mark.parametrize("name", list(GRIDS))
def test_refill_speedup_over_scipy_coo(name):
    """Numba refill vs SciPy COO assembly of the same matrix, measured back to back."""
    mesh, system = grid_system(GRIDS[name])
    scale = np.random.default_rng(0).uniform(1e-3, 1.0, mesh.n_cells)
    data = np.empty(system.pattern.nnz)
    refill(system.pattern, system.element_matrices, scale, data)          # compile/warm
    fast = best_of(lambda: refill(system.pattern, system.element_matrices, scale, data), 5)
    slow = best_of(lambda: coo_assembly(mesh.cells, mesh.n_nodes, mesh.dim, system.element_matrices, scale), 3)
    ratio = slow / fast
    print(f"\n{name}: refill {fast * 1e3:.1f} ms, scipy COO {slow * 1e3:.1f} ms, ratio {ratio:.1f}x")
    assert ratio >= THRESHOLDS["refill_vs_coo"]["min_ratio"], ratio
