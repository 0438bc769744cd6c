"""Bytes per tet and apply time of the unstructured density filter (``MatrixFilter``).

One filter per process (the RSS peak is per process): the bracket of ``tet_parts.py`` at tet
edge ``size`` mm, radius 1.5 edges (what tet_scaling.py runs), volume weights. Printed, per
tet: ``kept`` (NumPy allocations the built filter holds, tracemalloc), ``build_peak``
(tracemalloc's peak while building, above what was allocated before), ``rss_peak_growth``
(growth of the process's peak RSS over the build, after a warm-up that loads the JIT caches),
and the milliseconds of one forward (H) and one backward (H^T) application, median of 20.

    python benchmarks/bench_filter_memory.py 2.2                # this checkout, 222k tets
    git show <commit>:lightweight/optimize/filters.py > /tmp/old_filters.py
    python benchmarks/bench_filter_memory.py 2.2 --module /tmp/old_filters.py   # an older version
    python -m pytest benchmarks/bench_filter_memory.py      # ceilings at 23k tets, ~3 s

``--module`` loads that file as a module of the installed package (its relative imports
resolve against this checkout), so two versions are compared on the same mesh. The test
checks the traced bytes per tet (counts of arrays, not timings: they hold on a busy machine)
against ``matrix_filter_bytes_per_tet:bracket_23k`` of thresholds.json; at 23k tets the build
peak is mostly the fixed temporaries of one block of rows (~11 MB), hence its higher ceiling.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

THRESHOLDS = json.loads((Path(__file__).parent / "thresholds.json").read_text())


def load_filters(module_path: str | None):
    """The filters module: this checkout's, or the file at ``module_path``."""
    if module_path is None:
        from lightweight.optimize import filters
        return filters
    spec = importlib.util.spec_from_file_location("lightweight.optimize._compared_filters",
                                                  module_path)
    module = importlib.util.module_from_spec(spec)
    # registered before it runs: Numba's cache of its kernels, once written, is loaded back
    # by importing the module's name
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _median_ms(fn, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def measure(filters, centers: np.ndarray, volumes: np.ndarray, radius: float) -> dict:
    """Memory per cell and apply times of ``filters.MatrixFilter`` on these cells."""
    n = len(centers)
    rng = np.random.default_rng(0)
    warm = filters.MatrixFilter(rng.random((2000, 3)), 0.15, rng.uniform(0.5, 2.0, 2000))
    warm.backward(warm.forward(rng.random(2000)))
    del warm
    gc.collect()
    rss0 = _peak_rss()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    t0 = time.perf_counter()
    filt = filters.MatrixFilter(centers, radius, volumes)
    build_s = time.perf_counter() - t0
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = _peak_rss() - rss0
    x = rng.random(n)
    result = {"n_cells": n, "radius": radius, "H_nonzeros_per_cell": round(filt.H.nnz / n, 2),
              "kept": round((current - before) / n), "build_peak": round((peak - before) / n),
              "rss_peak_growth": round(rss_growth / n), "build_s": round(build_s, 2)}
    for _ in range(2):       # the first round pays page faults and thread start-up
        result["forward_ms"] = round(_median_ms(lambda: filt.forward(x)), 2)
        result["backward_ms"] = round(_median_ms(lambda: filt.backward(x)), 2)
    return result


def bracket_cells(size: float):
    """Cell centres and volumes of the bracket at tet edge ``size`` (mm)."""
    from tet_parts import part_mesh
    mesh = part_mesh(size)
    return mesh.cell_centers(), mesh.cell_volumes()


def test_matrix_filter_memory_per_tet_small():
    """Ceiling on the bytes per tet the density filter keeps and peaks at (23k-tet bracket)."""
    import pytest
    pytest.importorskip("gmsh")
    centers, volumes = bracket_cells(5.0)
    result = measure(load_filters(None), centers, volumes, 1.5 * 5.0)
    print(json.dumps(result))
    limits = THRESHOLDS["matrix_filter_bytes_per_tet:bracket_23k"]
    assert result["kept"] <= limits["max_kept"], result
    assert result["build_peak"] <= limits["max_build_peak"], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", type=float, help="tet edge length of the bracket (mm); 2.2: 222k tets")
    parser.add_argument("--module", default=None, help="another filters.py to measure instead")
    parser.add_argument("--radius-edges", type=float, default=1.5)
    args = parser.parse_args()
    centers, volumes = bracket_cells(args.size)
    gc.collect()
    filters = load_filters(args.module)
    result = measure(filters, centers, volumes, args.radius_edges * args.size)
    result["module"] = str(Path(filters.__file__))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
