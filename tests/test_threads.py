"""Thread settings (lightweight/_threads.py) and PARDISO's thread choice give the same answers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import lightweight as lw
from lightweight import _threads
from lightweight.fem import solvers


def grid_matrix(shape=(40, 30), seed=0):
    mesh = lw.structured_grid(shape)
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xy"},
                     loads={"tip": lw.PointLoad("xmax", (0.0, -1.0))})
    system = model.system()
    scale = np.random.default_rng(seed).uniform(1e-3, 1.0, mesh.n_cells)
    constrained, _ = system.dirichlet.apply(system.stiffness_data(scale))
    return system, system.pattern.matrix(constrained)


def test_import_sets_environment_defaults():
    assert "KMP_BLOCKTIME" in os.environ
    user_set = any(v in os.environ for v in ("OMP_NUM_THREADS", "GOTO_NUM_THREADS"))
    if not user_set:
        assert "OPENBLAS_NUM_THREADS" in os.environ


def test_thread_count_rule_and_overrides(monkeypatch):
    monkeypatch.delenv("LIGHTWEIGHT_PARDISO_THREADS", raising=False)
    assert _threads.pardiso_threads(10.0, 8) == 1
    assert _threads.pardiso_threads(1e6, 8) == 8
    assert _threads.pardiso_threads(None, 8) == 8
    monkeypatch.setenv("LIGHTWEIGHT_PARDISO_THREADS", "3")
    assert _threads.pardiso_threads(10.0, 8) == 3
    assert _threads.pardiso_threads_fixed() == 3
    _threads.set_pardiso_threads(2)
    try:
        assert _threads.pardiso_threads(1e6, 8) == 2
    finally:
        _threads.set_pardiso_threads("auto")
    monkeypatch.setenv("LIGHTWEIGHT_PARDISO_THREADS", "auto")
    assert _threads.pardiso_threads_fixed() is None
    with pytest.raises(ValueError):
        _threads.set_pardiso_threads(0)


def test_blas_threads_context_restores():
    with _threads.blas_threads(1):
        x = np.arange(50_000.0)
        assert float(x @ x) == pytest.approx((x * x).sum())


needs_pardiso = pytest.mark.skipif("pardiso" not in solvers.available_solvers(),
                                   reason="pypardiso is not installed")


@needs_pardiso
@pytest.mark.parametrize("threads", [1, 2])
def test_pardiso_fixed_threads_same_solution(threads):
    system, K = grid_matrix()
    b = np.random.default_rng(1).standard_normal(K.shape[0])
    _threads.set_pardiso_threads(threads)
    try:
        solver = solvers.PardisoSolver()
        solver.factorize(K)
        x = solver.solve(b)
    finally:
        _threads.set_pardiso_threads(None)
    assert solver.threads == threads
    assert solver.mflops is not None and solver.mflops > 0
    assert np.allclose(x, spla.spsolve(K.tocsc(), b), rtol=0, atol=1e-8 * np.abs(x).max())


@needs_pardiso
def test_pardiso_timed_thread_choice_keeps_working_factors(monkeypatch):
    """Force the serial-vs-parallel timing and frequent probes on a small matrix: every refill
    is solved by the factor of that refill, whichever thread mode factorized it."""
    monkeypatch.setattr(solvers, "PARDISO_TRY_PARALLEL_MFLOPS", 0.0)
    monkeypatch.setattr(solvers, "THREAD_PROBE_EVERY", 2)
    monkeypatch.delenv("LIGHTWEIGHT_PARDISO_THREADS", raising=False)
    solver = solvers.PardisoSolver()
    if solver._mkl_threads.max_threads < 2:
        pytest.skip("MKL has one thread here: nothing to choose")
    system, K = grid_matrix()
    b = np.random.default_rng(2).standard_normal(K.shape[0])
    solver.factorize(K)
    assert solver.thread_timings is None          # one factorization: nothing timed yet
    x = solver.solve(b)
    assert np.allclose(x, spla.spsolve(K.tocsc(), b), rtol=0, atol=1e-8 * np.abs(x).max())
    solver.factorize(K)                            # reused: now both modes are timed
    assert set(solver.thread_timings) == {"serial", "parallel"}
    assert solver.thread_mode in ("serial", "parallel")
    x = solver.solve(b)
    assert np.allclose(x, spla.spsolve(K.tocsc(), b), rtol=0, atol=1e-8 * np.abs(x).max())
    threads_used = set()
    for seed in range(5, 10):
        _, K2 = grid_matrix(seed=seed)
        K2.indptr, K2.indices = K.indptr, K.indices     # the FE core refills data only
        solver.factorize(K2)
        assert solver.info["symbolic"] is False
        threads_used.add(solver.threads)
        x2 = solver.solve(b)
        assert np.allclose(x2, spla.spsolve(K2.tocsc(), b), rtol=0, atol=1e-8 * np.abs(x2).max())
    assert threads_used == {1, solver._mkl_threads.max_threads}     # the probes ran
    # a new pattern releases both analyses and starts again
    _, K3 = grid_matrix(shape=(30, 20), seed=11)
    solver.factorize(K3)
    assert solver.info["symbolic"] is True
    x3 = solver.solve(np.ones(K3.shape[0]))
    assert np.allclose(x3, spla.spsolve(K3.tocsc(), np.ones(K3.shape[0])), rtol=0,
                       atol=1e-8 * np.abs(x3).max())


@needs_pardiso
@pytest.mark.parametrize("preload_gomp", [False, True])
def test_mkl_threading_layer_does_not_depend_on_an_earlier_libgomp(preload_gomp):
    """Issue 13: ``import gmsh`` loads libgomp, and mkl_rt then chose GNU OpenMP instead of Intel,
    so PARDISO's roundoff differed between a test run alone and inside the suite. In a fresh
    process, with or without libgomp loaded first, MKL must run on the Intel layer."""
    import ctypes.util
    import subprocess
    import sys
    pytest.importorskip("threadpoolctl")
    gomp = ctypes.util.find_library("gomp")
    if preload_gomp and gomp is None:
        pytest.skip("no libgomp on this system")
    script = ("import ctypes, sys\n"
              + (f"ctypes.CDLL({gomp!r})\n" if preload_gomp else "")
              + "import lightweight\n"
                "from lightweight.fem import mkl\n"
                "runtime = mkl.load_mkl()\n"
                "import threadpoolctl\n"
                "layers = [i.get('threading_layer') for i in threadpoolctl.threadpool_info()"
                " if i['internal_api'] == 'mkl']\n"
                "print(runtime.threading_layer, layers)\n")
    env = {k: v for k, v in os.environ.items() if k != "MKL_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["INTEL", "['intel']"], out.stdout


@needs_pardiso
def test_mkl_threading_layer_set_by_the_user_is_kept():
    import subprocess
    import sys
    pytest.importorskip("threadpoolctl")
    script = ("from lightweight.fem import mkl\n"
              "import threadpoolctl\n"
              "runtime = mkl.load_mkl()\n"
              "print(runtime.threading_layer, [i.get('threading_layer') for i in "
              "threadpoolctl.threadpool_info() if i['internal_api'] == 'mkl'])\n")
    env = dict(os.environ, MKL_THREADING_LAYER="sequential")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SEQUENTIAL", "['sequential']"], out.stdout
