"""Native thread pools of one design iteration, kept from fighting over the cores.

One SIMP iteration hands the cores back and forth between three native thread pools: Numba's
parallel kernels (TBB, OpenMP or workqueue), MKL PARDISO (Intel OpenMP) and the BLAS of
NumPy/SciPy (OpenBLAS pthreads). With the libraries' defaults each pool keeps its workers
spinning after a parallel region (Intel OpenMP for 200 ms, ``KMP_BLOCKTIME``; OpenBLAS for
about 2^28 cycles) and MKL runs PARDISO on every core, so the workers of one pool steal the
cores that the next Numba kernel, factorization or BLAS call wants. Our BLAS calls are
vector operations on one value per cell (the OC bisection alone does ~40 dot products of
that size per iteration): threads cannot speed them up, but they wake OpenBLAS workers.

What these settings are worth, measured per design iteration of the MBB beam 300 x 100 (library
defaults 340 - 720 ms, these settings 49 - 93 ms): docs/performance.md ("Thread settings").

What this module does (each step overridable):

- At ``import lightweight`` (this module is imported first): ``KMP_BLOCKTIME=0`` is put into
  the environment if not set, before MKL's OpenMP runtime starts, so MKL's workers sleep as
  soon as a parallel region ends. Set ``KMP_BLOCKTIME`` yourself to keep your value.
- At the same time the BLAS of NumPy/SciPy is limited to :data:`BLAS_THREADS` (1) threads:
  ``OPENBLAS_NUM_THREADS`` for libraries loaded later, threadpoolctl for those already
  loaded. Skipped if you set ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` or
  ``GOTO_NUM_THREADS``; ``LIGHTWEIGHT_BLAS_THREADS=n`` sets another count and
  ``LIGHTWEIGHT_BLAS_THREADS=keep`` leaves BLAS alone. To run a large threaded dense product
  in the same process, wrap it in ``threadpoolctl.threadpool_limits(None)``.
- When mkl_rt is loaded, its threading layer is set to Intel OpenMP (or to the user's
  ``MKL_THREADING_LAYER``), so PARDISO's OpenMP runtime, its roundoff and whether
  ``KMP_BLOCKTIME`` applies do not depend on whether ``import gmsh`` (libgomp) came first;
  see :mod:`lightweight.fem.mkl`.
- PARDISO runs each call with a thread count set thread-locally
  (``MKL_Set_Num_Threads_Local``, restored afterwards, so MKL elsewhere in the process keeps
  its setting). PARDISO's analysis reports the factorization's flop count; below
  :data:`PARDISO_TRY_PARALLEL_MFLOPS` one thread is used (waking and synchronising workers
  costs more than it gains), from :data:`PARDISO_SERIAL_MFLOPS` on MKL's maximum (which
  honours ``MKL_NUM_THREADS``). In between, whether a second thread pays depends on how busy
  the other cores are (MBB 300 x 100, 0.88 GFlop: 30 ms on two threads against 46 ms on one
  with the other core idle, 60 - 116 ms against 47 - 56 ms with it busy), so the solver keeps
  a serial and a parallel analysis, times both on the first factorization, uses the faster
  and tries the other every ``THREAD_PROBE_EVERY``-th factorization (switching when it is
  more than 10 % faster); see ``lightweight.fem.solvers.PardisoSolver``. ``LIGHTWEIGHT_PARDISO_THREADS=n``
  in the environment, or :func:`set_pardiso_threads` at run time, fixes the count for every
  later analysis (``"auto"`` restores the rule).
- :func:`blas_threads` limits the BLAS pools inside a ``with`` block (threadpoolctl; a no-op
  without it); the OC bisection uses it, so it stays serial whatever the process setting.
"""

from __future__ import annotations

import contextlib
import os

# Factorizations cheaper than this (MFlop, PARDISO's own count) run on one MKL thread ...
PARDISO_SERIAL_MFLOPS = 5000.0
# ... except that from this size on one thread and MKL's maximum are both kept and timed, and
# the faster used (the answer depends on how busy the other cores are).
PARDISO_TRY_PARALLEL_MFLOPS = 300.0
# BLAS threads set at import unless the user chose (see the module docstring).
BLAS_THREADS = 1

_ENV_PARDISO = "LIGHTWEIGHT_PARDISO_THREADS"
_ENV_BLAS = "LIGHTWEIGHT_BLAS_THREADS"
_USER_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS")
_pardiso_override: int | None = None
_controller = None


def _parse(value) -> int | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "auto", "none", "keep"):
        return None
    n = int(text)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, 'auto' or 'keep', got {value!r}")
    return n


def _threadpool_controller():
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        except Exception:       # not installed, or a platform it cannot inspect
            _controller = False
    return _controller


def configure_environment() -> None:
    """The process-wide defaults described in the module docstring (run once at import)."""
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    if any(v in os.environ for v in _USER_BLAS_ENV):
        return
    try:
        n = _parse(os.environ.get(_ENV_BLAS, BLAS_THREADS))
    except ValueError:
        n = BLAS_THREADS
    if n is None:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)       # for BLAS libraries loaded from now on
    import sys
    if "numpy" in sys.modules:                         # already loaded: set it directly
        controller = _threadpool_controller()
        if controller:
            try:
                controller.limit(limits=n, user_api="blas")    # kept: not used as a context
            except Exception:
                pass


configure_environment()


def set_pardiso_threads(n: int | str | None) -> None:
    """Fix the MKL thread count of every later PARDISO analysis (``None``/``"auto"``: the size rule)."""
    global _pardiso_override
    _pardiso_override = _parse(n)


def pardiso_threads_fixed() -> int | None:
    """The thread count fixed by :func:`set_pardiso_threads` or the environment, else None."""
    if _pardiso_override is not None:
        return _pardiso_override
    try:
        return _parse(os.environ.get(_ENV_PARDISO))
    except ValueError:
        return None


def pardiso_threads(mflops: float | None, mkl_max_threads: int) -> int:
    """Thread count for a PARDISO factorization of ``mflops`` MFlop (None: unknown)."""
    n = pardiso_threads_fixed()
    if n is not None:
        return n
    if mflops is not None and mflops < PARDISO_SERIAL_MFLOPS:
        return 1
    return max(1, int(mkl_max_threads))


class MKLThreads:
    """Thread-local MKL thread count around a call: ``with MKLThreads(runtime).limit(n): ...``.

    runtime: :class:`lightweight.fem.mkl.MKLRuntime` (its ``set_num_threads_local`` and
    ``get_max_threads`` are MKL's C functions with their argtypes declared; either may be None
    in an old MKL, then the count is left alone and taken as 1).
    """

    def __init__(self, runtime):
        self._set = runtime.set_num_threads_local
        get_max = runtime.get_max_threads
        self.max_threads = int(get_max()) if get_max is not None else 1

    @contextlib.contextmanager
    def limit(self, n: int):
        if self._set is None:
            yield
            return
        previous = self._set(int(n))
        try:
            yield
        finally:
            self._set(previous)     # 0 = back to the global setting


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Limit the BLAS thread pools (OpenBLAS, MKL BLAS) to ``n`` threads inside the block."""
    controller = _threadpool_controller()
    if not controller:
        yield
        return
    with controller.limit(limits=n, user_api="blas"):
        yield
