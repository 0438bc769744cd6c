"""Bytes per tet, phase by phase, of the unstructured solve on the bracket of ``tet_parts.py``.

Phases: mesh and model, LinearElasticSystem, CSR pattern, a first amg-reuse analysis (pyamg
build), a second one (refresh) on another SIMP field, element energies. After each: NumPy's
traced allocations (tracemalloc: current and the peak within the phase) and the process RSS
(current, and the growth of its peak) above a baseline taken after a warm-up (JIT caches and
imports loaded), all divided by the number of tets. Traced memory misses MKL (the coarse
PARDISO factor) and Numba's internal temporaries; RSS sees them. Then the arrays the system
keeps, by owner. To compare with an older checkout, run it with PYTHONPATH pointing there.

    python benchmarks/tet_memory.py 2.2       # 222k tets
"""

from __future__ import annotations

import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main(size: float) -> None:
    import lightweight as lw
    from lightweight.fem.system import LinearElasticSystem
    from tet_parts import part_model
    from tet_scaling import memory_inventory
    warm = part_model(5.0)
    lw.minimize_compliance(warm, volume_fraction=0.3, filter="density", filter_radius=7.5,
                           optimizer="mma", max_iterations=2, solver="amg-reuse", verbose=False)
    del warm
    gc.collect()
    tracemalloc.start()
    peak0, rss0 = _peak_rss_mb(), _rss_mb()
    model = part_model(size)
    n = model.mesh.n_cells
    print(f"{n} tets, {model.mesh.n_nodes * 3} DOFs ({lw.__file__})")

    def mark(phase: str, seconds: float | None = None) -> None:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        timing = "" if seconds is None else f"  ({seconds:.1f} s)"
        print(f"{phase:22s} traced {current / n:6.0f} (peak {peak / n:6.0f})   RSS "
              f"{(_rss_mb() - rss0) * 2**20 / n:6.0f} (peak growth {(_peak_rss_mb() - peak0) * 2**20 / n:6.0f})"
              f" B/tet{timing}", flush=True)

    mark("mesh + model")
    t = time.perf_counter()
    system = LinearElasticSystem(model)
    mark("system", time.perf_counter() - t)
    t = time.perf_counter()
    system.pattern
    mark("pattern", time.perf_counter() - t)
    t = time.perf_counter()
    state = system.analyse(np.ones(n), solver="amg-reuse")
    mark(f"analyse 1 (build) {state.info.get('iterations')}", time.perf_counter() - t)
    del state
    t = time.perf_counter()
    state = system.analyse(np.full(n, 1e-9 + 0.125), solver="amg-reuse")
    mark(f"analyse 2 (refresh) {state.info.get('iterations')}", time.perf_counter() - t)
    system.element_energies(state.U)
    mark("energies")
    print("kept B/tet: " + ", ".join(f"{k} {v:.0f}" for k, v in memory_inventory(system, n).items()))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.2)
