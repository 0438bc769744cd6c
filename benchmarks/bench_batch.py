"""Batch evaluation throughput and worker memory: 200 small 3D designs with --jobs 1 and 2.

Run: ``python -m pytest benchmarks/bench_batch.py -s`` (prints designs per second and each
worker's resident memory at its first and last design), or ``python benchmarks/bench_batch.py
[N] [--no-recycle]`` for a longer run.

What it found (issue 12: a worker grew from 170 MB to 1.36 GB over 500 designs). Every design
builds a new Model, LinearElasticSystem and factorization and frees them again; glibc keeps the
freed blocks of those many short-lived arrays in its arenas instead of returning them, so the
resident memory climbs with every design until fragmentation levels off. Measured here in one
process with 16x8x8-hex designs: 253 -> 587 MiB over 60 designs; with ``gc.collect()`` and
``malloc_trim(0)`` after each design it stays at 221 MiB. So a worker now trims after every
design (lightweight.batch._release_memory), and as a backstop it is replaced after
``DESIGNS_PER_WORKER`` designs or when its resident memory passes ``WORKER_RSS_MB``. The
printed lines give designs per second and each worker's resident memory at its first and last
design (``--no-recycle`` turns the backstop off to show the trimming alone).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

CASE3D = """
[mesh]
grid = [6, 3, 3]
size = [6.0, 3.0, 3.0]

[material]
E = 1.0
nu = 0.3
density = 1.0
yield_strength = 5.0

[supports]
xmin = "xyz"

[[loads.tip]]
type = "traction"
set = "xmax"
value = [0.0, 0.0, -0.1]

[requirements]
max_compliance = 50.0
"""


def rss_probe(case_path, design_path, limits=None):
    """evaluate_design plus the worker's resident memory after it (MiB) and its pid."""
    import os
    from lightweight.batch import _rss_mb, evaluate_design
    row = evaluate_design(case_path, design_path, limits)
    row["worker_rss_mb"] = round(_rss_mb(), 1)
    row["worker_pid"] = os.getpid()
    return row


def make_designs(folder: Path, n: int) -> tuple[Path, list[str]]:
    """The 3D case and ``n`` SIMP designs of 54 hexes with random densities (seeded)."""
    import lightweight as lw
    folder.mkdir(parents=True, exist_ok=True)
    case = folder / "case3d.toml"
    case.write_text(CASE3D)
    grid = lw.structured_grid((6, 3, 3), size=(6.0, 3.0, 3.0))
    rng = np.random.default_rng(7)
    files = []
    for k in range(n):
        path = folder / f"design{k:04d}.vtu"
        lw.write_mesh(path, grid, cell_data={"density": rng.uniform(0.3, 1.0, grid.n_cells)})
        files.append(str(path))
    return case, files


def run(case, files, out: Path, jobs: int, recycle: bool = True) -> dict:
    """Evaluate ``files`` with ``jobs`` workers; designs per second and per-worker memory."""
    from lightweight.batch import evaluate_designs
    options = {} if recycle else {"designs_per_worker": 10**9, "worker_rss_mb": 1e12}
    t0 = time.perf_counter()
    rows = evaluate_designs(case, files, out / f"jobs{jobs}.csv", jobs=jobs, evaluate=rss_probe,
                            resume=False, store=out / f"jobs{jobs}_{recycle}.sqlite", **options)
    seconds = time.perf_counter() - t0
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"][:3]
    workers: dict[int, list[float]] = {}
    for row in rows:
        workers.setdefault(row["worker_pid"], []).append(row["worker_rss_mb"])
    return {"jobs": jobs, "designs": len(rows), "seconds": seconds, "per_second": len(rows) / seconds,
            "workers": len(workers), "rss_first": [v[0] for v in workers.values()],
            "rss_last": [v[-1] for v in workers.values()],
            "rss_max": max(max(v) for v in workers.values())}


def report(result: dict) -> str:
    return (f"jobs {result['jobs']}: {result['designs']} designs in {result['seconds']:.1f} s = "
            f"{result['per_second']:.1f} designs/s; {result['workers']} worker process(es); RSS at a "
            f"worker's first design {min(result['rss_first']):.0f}-{max(result['rss_first']):.0f} MiB, at its "
            f"last {min(result['rss_last']):.0f}-{max(result['rss_last']):.0f} MiB, max {result['rss_max']:.0f} MiB")


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_throughput_and_worker_memory(tmp_path, jobs):
    from lightweight.batch import WORKER_RSS_MB
    case, files = make_designs(tmp_path / "designs", 200)
    result = run(case, files, tmp_path, jobs)
    print("\n" + report(result))
    assert result["rss_max"] <= WORKER_RSS_MB + 200          # bounded by recycling
    assert result["per_second"] > 2.0                          # tiny designs: far from this floor


if __name__ == "__main__":
    import tempfile
    count = int(next((a for a in sys.argv[1:] if a.isdigit()), 200))
    recycle = "--no-recycle" not in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        case, files = make_designs(Path(tmp) / "designs", count)
        for jobs in (1, 2):
            print(report(run(case, files, Path(tmp), jobs, recycle=recycle)), flush=True)
