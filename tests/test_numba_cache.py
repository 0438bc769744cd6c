"""A second process finds every compiled kernel of the 3D grid loop in Numba's disk cache.

A kernel whose cache key changes from one process to the next (a closure over a dispatcher
did) is compiled again at every start: seconds on each run of the CLI or of a batch worker,
invisible in timings taken inside one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import lightweight as lw
mesh = lw.structured_grid((16, 8, 8), size=(2.0, 1.0, 1.0))
model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                 loads={"tip": lw.PointLoad("xmax", (0.0, 0.0, -1e-3))})
lw.minimize_compliance(model, volume_fraction=0.3, filter_radius=0.2, optimizer="mma",
                       solver="multigrid", max_iterations=3, verbose=False,
                       mma_asymptotes="move")
"""


def _run(tmp_path: Path) -> str:
    env = dict(os.environ, NUMBA_DEBUG_CACHE="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_second_process_compiles_no_kernel_of_the_grid_loop(tmp_path):
    package = str(Path(__import__("lightweight").__file__).parent)
    _run(tmp_path)                               # fills the cache where it was cold
    log = _run(tmp_path)
    saved = [line for line in log.splitlines() if "data saved" in line and package in line]
    assert "data loaded" in log                  # the debug output is there at all
    assert not saved, "compiled again in a second process:\n" + "\n".join(saved)
