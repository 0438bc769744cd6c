"""Pluggable linear solvers for the SPD stiffness systems K U = B of the FE core.

Approach. The optimization loop refills the values of one K (fixed CSR pattern, Dirichlet
DOFs eliminated symmetrically) hundreds of times and solves all load cases at once, so every
backend splits the work like CHOLMOD/PARDISO do: a symbolic phase (fill-reducing ordering,
elimination tree) done once per sparsity pattern, and a numeric phase per refill. Backends:

- :class:`PardisoSolver` -- Intel MKL PARDISO through our own ctypes binding of mkl_rt
  (:mod:`lightweight.fem.mkl`; pypardiso only installs MKL). We drive the
  phases ourselves (11 analysis once per pattern, 22 numeric factorization per refill, 33 solve)
  because ``pypardiso.PyPardisoSolver.factorize`` always redoes the analysis and recognizes a
  factorized matrix by comparing (or hashing) all of indptr/indices/data on every solve.
  Matrix type 2 (real SPD, Cholesky) on the upper triangle; its entries are picked out of the
  full CSR with an index map computed once per pattern. Threads: every call runs with an MKL
  thread count set thread-locally, one thread for factorizations below
  ``lightweight._threads.PARDISO_SERIAL_MFLOPS`` (the analysis reports the flop count; PARDISO
  needs one thread count for all phases, so a large problem is analysed a second time with
  more threads, unless "auto"'s low bound of the flops, ``mflops_hint``, already says large;
  mid-size ones keep both analyses and use the faster, see
  :meth:`PardisoSolver._start_thread_timing`). On 2 shared cores this took the MBB 300 x 100
  iteration from 0.4 - 1.2 s to 50 - 85 ms; the module docstring of ``lightweight._threads``
  has the measurements and overrides.
- :class:`CholmodSolver` -- scikit-sparse's CHOLMOD: ``analyze`` once, ``cholesky_inplace`` per
  refill (supernodal, fast with a good BLAS). Optional: used only when importable.
- :class:`SuperLUSolver` -- SciPy's SuperLU, the fallback that always exists. It has no
  refactorization entry point, so we reuse what can be reused: the column ordering of the
  first factorization (MMD on A^T+A) is kept and later refills are factorized with
  ``permc_spec="NATURAL"`` on the symmetrically permuted matrix; symmetric mode with a small
  diagonal pivot threshold keeps the pivots on the diagonal (SPD needs no pivoting).
- :class:`AMGSolver` -- conjugate gradients preconditioned by one V-cycle of pyamg's smoothed
  aggregation with the rigid-body modes as near-null space (the approach of ML/GAMG for
  elasticity; Jacobi-PCG collapses under SIMP's 1e9 stiffness contrast, docs/architecture.md). The
  hierarchy can be kept over several refills (``reuse_hierarchy_for``): a slightly stale
  preconditioner is still a good one while densities change slowly, and it is rebuilt as
  soon as CG needs more than ``iteration_budget`` iterations.
- :class:`ReusedAMGSolver` ("amg-reuse", what "auto" builds when it chooses AMG) -- the same
  smoothed aggregation, but the aggregates and prolongators are built once per mesh and each
  refill refreshes only the Galerkin products, Chebyshev smoothers and the coarse factor
  (:mod:`lightweight.fem.amg`, whose docstring has the approach and the measurements). On
  optimizer iterates of a 422k-tet bracket: 17 - 20 PCG iterations (pyamg rebuilt: 25), about a
  quarter of the time per design iteration of rebuilding (docs/performance.md).

Singular systems (mechanisms) raise :class:`~lightweight.errors.SingularStiffnessError`: the
direct solvers check their pivots (tiny or non-positive factor diagonal) and the relative
residual of every solve; AMG checks whether a rigid-body mode lies in the null space of K and
whether CG converged. The layer above checks supports before solving; this is the last line.

SuperLU's symmetric mode is as accurate as its default and not reliably faster; it is on by
default because it keeps the diagonal pivots that the ordering reuse relies on. What each
backend costs (first factorization, refill, solves, AMG iterations) is measured in
docs/performance.md ("The linear solvers side by side").

Choosing ("auto", :func:`make_solver`). A fixed DOF limit picked AMG for tet10 at 229k DOFs
where PARDISO was 3.2x faster (45 vs 13.8 s per iteration): what a factorization costs depends
on the dimension and on the nonzeros per row of K (tet10 80, hex8 75, tet4 42, quad 18,
triangle 14), and what AMG costs on its nonzeros and on the element order (PCG iterations to
1e-8: 14 - 25 for linear elements, 31 - 33 for tet10). So "auto" compares two measured time
models per design iteration (direct: factorization MFlop / rate; AMG: setup + one solve per
load case, per nonzero of K) and the factor's memory with what is available; with K's pattern
and PARDISO it decides on PARDISO's own analysis (flops, memory peak), kept for the first
factorization. Measurements and crossovers: docs/performance.md, "Choosing the linear solver".

Memory. Every direct factorization checks, before the numeric phase, that its factor fits
:data:`FACTOR_MEMORY_FRACTION` of the available memory (:mod:`lightweight.fem.memory`):
PARDISO from its analysis (iparm 15-17, before MKL allocates the factor), CHOLMOD and SuperLU
from the fitted estimate; otherwise :class:`FactorizationMemoryError` (a SolverError) names the
DOFs, the need, the memory and the alternative. "auto" falls back to AMG already when the factor
would take more than :data:`AUTO_FACTOR_MEMORY_FRACTION`, with a warning.
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._threads import (PARDISO_TRY_PARALLEL_MFLOPS, MKLThreads, pardiso_threads,
                        pardiso_threads_fixed)
from ..errors import SingularStiffnessError, SolverError
from .memory import available_memory, format_bytes, memory_source
from .mkl import load_mkl

# Mid-size PARDISO problems keep a serial and a parallel analysis; every this-many-th
# factorization uses the non-preferred one to see whether it has become the faster.
THREAD_PROBE_EVERY = 10

# A direct factorization may take at most this fraction of the available memory
# (lightweight.fem.memory.available_memory); the rest is for K, the loads and the caller.
FACTOR_MEMORY_FRACTION = 0.8
# "auto" picks a direct solver only when its factor fits this fraction (AMG otherwise).
AUTO_FACTOR_MEMORY_FRACTION = 0.5

# A solve whose relative residual ||K x - b|| / ||b|| exceeds this is treated as singular.
RESIDUAL_LIMIT = 1e-6
# A factor pivot below this fraction of the matching diagonal entry of K means (numerically)
# singular: a Cholesky pivot d_i / K_ii is the fraction of stiffness DOF i keeps once all
# earlier DOFs are held; SIMP voids (1e-9) give ~1e-9 but never ~1e-13.
PIVOT_LIMIT = 1e-13

_SINGULAR_MESSAGE = ("the stiffness matrix is singular ({detail}): the structure is not fully "
                     "supported and can move as a mechanism; add supports that stop every "
                     "rigid-body motion of every connected part")


class FactorizationMemoryError(SolverError):
    """A direct factorization would need more memory than is available."""


def _singular(detail: str) -> SingularStiffnessError:
    return SingularStiffnessError(_SINGULAR_MESSAGE.format(detail=detail))


def _check_pcg(name: str, X, res, iters, broke, rtol: float, maxiter) -> None:
    """Raise if block PCG broke down (SingularStiffnessError) or missed rtol (SolverError) for a column."""
    if np.any(broke) or not np.all(np.isfinite(X)):
        j = int(np.flatnonzero(broke | ~np.all(np.isfinite(X), axis=0))[0])
        raise _singular(f"{name}: conjugate gradients broke down (p^T K p <= 0) for right-hand "
                        f"side {j} after {int(iters[j])} iterations")
    if np.any(res > rtol):
        worst = int(np.argmax(np.where(np.isfinite(res), res, np.inf)))
        raise SolverError(f"{name}: preconditioned CG did not converge for right-hand side {worst}: "
                          f"relative residual {res[worst]:.2e} > rtol {rtol:g} after "
                          f"{int(iters[worst])} iterations (maxiter={maxiter}); raise maxiter, "
                          "loosen rtol or use a direct solver")


@functools.lru_cache(maxsize=None)
def _is_pardiso_available() -> bool:
    try:
        load_mkl()
    except OSError:    # the mkl wheel exists only on x86-64; mkl_rt may be absent or unloadable
        return False
    return True


@functools.lru_cache(maxsize=None)
def _is_cholmod_available() -> bool:
    try:
        from sksparse import cholmod  # noqa: F401
    except Exception:
        return False
    return True


def rigid_body_modes(points: np.ndarray) -> np.ndarray:
    """Rigid-body motions of a node cloud, node-major DOFs: (n_nodes*dim, 3 in 2D | 6 in 3D).

    Columns: translations along each axis, then rotations about the centroid (2D: about z;
    3D: about x, y, z). Coordinates are taken relative to the centroid and divided by the
    bounding-box size so all columns have comparable norms (units are the user's).
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (n_nodes, 2|3), got {points.shape}")
    n, dim = points.shape
    rel = points - points.mean(axis=0)
    size = float(np.ptp(points, axis=0).max()) if n else 1.0
    rel = rel / (size if size > 0 else 1.0)
    n_modes = 3 if dim == 2 else 6
    modes = np.zeros((n, dim, n_modes))
    for axis in range(dim):
        modes[:, axis, axis] = 1.0
    if dim == 2:
        x, y = rel.T
        modes[:, 0, 2], modes[:, 1, 2] = -y, x
    else:
        x, y, z = rel.T
        modes[:, 1, 3], modes[:, 2, 3] = -z, y           # about x: (0, -z, y)
        modes[:, 0, 4], modes[:, 2, 4] = z, -x           # about y: (z, 0, -x)
        modes[:, 0, 5], modes[:, 1, 5] = -y, x           # about z: (-y, x, 0)
    return modes.reshape(n * dim, n_modes)


def _check_matrix(K) -> sp.csr_matrix:
    if not sp.issparse(K):
        raise SolverError(f"the stiffness matrix must be a scipy.sparse matrix, got {type(K).__name__}")
    if K.shape[0] != K.shape[1]:
        raise SolverError(f"the stiffness matrix must be square, got shape {K.shape}")
    K = K.tocsr()
    if K.dtype != np.float64:
        K = K.astype(np.float64)
    if not K.has_sorted_indices:
        K = K.copy()
        K.sort_indices()
    if not np.all(np.isfinite(K.data)):
        bad = np.flatnonzero(~np.isfinite(K.data))
        row = int(np.searchsorted(K.indptr, bad[0], side="right") - 1)
        raise SolverError(f"the stiffness matrix has {bad.size} non-finite entries (first in row {row}, "
                          "i.e. DOF node*dim + component); check the material constants and the "
                          "element scale factors (densities)")
    return K


def _check_rhs(B: np.ndarray, n: int) -> np.ndarray:
    B = np.asarray(B, dtype=float)
    if B.ndim not in (1, 2) or B.shape[0] != n:
        raise SolverError(f"the right-hand side must have shape ({n},) or ({n}, k), got {B.shape}")
    if not np.all(np.isfinite(B)):
        raise SolverError("the right-hand side (load vector) has non-finite entries; check the loads")
    return B


def _same_pattern(K: sp.csr_matrix, indptr: np.ndarray | None, indices: np.ndarray | None) -> bool:
    if indptr is None or K.indptr.shape != indptr.shape or K.indices.shape != indices.shape:
        return False
    # Same arrays (the FE core keeps them) short-circuits the O(nnz) comparison.
    if K.indptr is indptr and K.indices is indices:
        return True
    return bool(np.array_equal(K.indptr, indptr) and np.array_equal(K.indices, indices))


class LinearSolver:
    """Base class: ``factorize(K)`` then any number of ``solve(B)``.

    ``info`` holds the last call's facts: ``setup_seconds``, ``solve_seconds``,
    ``symbolic`` (True if the symbolic phase ran), ``iterations`` (per rhs, iterative solvers),
    ``residuals`` (relative residual ||K x - b|| / ||b|| per rhs).
    """

    name = "base"
    direct = True
    #: check ||K x - b|| / ||b|| after every solve (a direct solver raises above RESIDUAL_LIMIT);
    #: off for inner solves that are checked elsewhere (multigrid's coarsest level)
    check_residuals = True

    def __init__(self):
        self.K: sp.csr_matrix | None = None
        self.info: dict = {}
        self._indptr = None
        self._indices = None

    def factorize(self, K) -> None:
        """Numeric factorization of K (n, n) SPD CSR; symbolic analysis when the pattern is new."""
        t0 = time.perf_counter()
        K = _check_matrix(K)
        symbolic = not _same_pattern(K, self._indptr, self._indices)
        if symbolic:
            self._symbolic(K)
            self._indptr, self._indices = K.indptr, K.indices
        self.K = K
        self._numeric(K)
        self.info = {"solver": self.name, "n_dofs": K.shape[0], "symbolic": symbolic,
                     "setup_seconds": time.perf_counter() - t0}

    def __repr__(self) -> str:       # what provenance records for solver=<instance>
        return f"{type(self).__name__}(name={self.name!r})"

    def analyse(self, K) -> None:
        """Symbolic phase only, for K's sparsity pattern (n, n) CSR; its values are not used.

        A later :meth:`factorize` of a matrix with this pattern (the same arrays, or equal
        ones) does the numeric phase only. PARDISO checks here that its factor will fit.
        """
        K = _check_matrix(K)
        self._symbolic(K)
        self._indptr, self._indices = K.indptr, K.indices

    def release(self) -> None:
        """Free what the backend holds outside Python (a no-op for most backends)."""

    def drop_factorization(self) -> bool:
        """Free the factorization (or preconditioner) but keep K for products: the end of a
        design loop, whose last K still serves reaction forces. The next :meth:`factorize`
        starts over, symbolic phase included. True if something was freed."""
        return False

    def drop_matrix(self) -> None:
        """Let go of the last K's values before the caller assembles the next one (the next
        :meth:`factorize` brings it): K and its successor are then never alive together
        (~200 B per tet4 at the design loop's peak). The factorization and the symbolic
        analysis stay; :meth:`solve` needs a :meth:`factorize` first."""
        self.K = None

    def solve(self, B: np.ndarray, x0: np.ndarray | None = None,
              remember: bool = True) -> np.ndarray:
        """Solution X of K X = B; B (n,) or (n, k) -> same shape. ``x0``: warm start (iterative).
        ``remember=False``: not a solve of the sequence the solver learns its next starts from
        (an adjoint between static solves; only ``amg-reuse`` keeps such a history)."""
        if self.K is None:
            raise SolverError(f"{self.name}: solve() called before factorize(K)")
        t0 = time.perf_counter()
        B = _check_rhs(B, self.K.shape[0])
        B2 = B.reshape(B.shape[0], -1)
        self._remember = bool(remember)
        try:
            X = self._solve(B2, x0)
        finally:
            self._remember = True
        if self.direct and self.check_residuals:
            X, residuals = self._refine(B2, X)
        elif not self.direct:
            residuals = self._check_solution(B2, X)
        else:
            residuals = np.full(B2.shape[1], np.nan)
        self.info.update(solve_seconds=time.perf_counter() - t0, n_rhs=B2.shape[1],
                         residuals=residuals.tolist())
        return X.reshape(B.shape)

    def _refine(self, B: np.ndarray, X: np.ndarray, steps: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Check a direct solve's residual, refining with the factorization while it is too large.

        Under SIMP's 1e9 stiffness contrast a sound factorization can leave a relative residual
        of ~1e-6 (seen on a triangle-mesh design and a near-void stress design with another MKL
        build); a step x += K^-1 (b - K x) removes that, while a singular K stays above
        RESIDUAL_LIMIT and is refused. Returns X and the relative residuals (k,).
        """
        norms = np.linalg.norm(B, axis=0)
        norms = np.where(norms > 0, norms, 1.0)
        for step in range(steps + 1):
            if not np.all(np.isfinite(X)):
                raise _singular(f"{self.name} returned non-finite displacements")
            R = B - self._apply_K(X)
            res = np.linalg.norm(R, axis=0) / norms
            if np.all(res <= RESIDUAL_LIMIT):
                return X, res
            if step < steps:
                X = X + self._solve(R, None)
        raise _singular(f"{self.name}: relative residual {res.max():.2e} > {RESIDUAL_LIMIT:g} "
                        f"after {steps} refinement steps")

    def _check_solution(self, B: np.ndarray, X: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(X)):
            raise _singular(f"{self.name} returned non-finite displacements")
        norms = np.linalg.norm(B, axis=0)
        res = np.linalg.norm(self._apply_K(X) - B, axis=0) / np.where(norms > 0, norms, 1.0)
        if self.direct and np.any(res > RESIDUAL_LIMIT):
            raise _singular(f"{self.name}: relative residual {res.max():.2e} > {RESIDUAL_LIMIT:g}")
        return res

    def _apply_K(self, X: np.ndarray) -> np.ndarray:
        """K X for the matrix factorized (a K given as its upper triangle acts as the whole)."""
        if getattr(self, "_upper_input", False):
            strict = sp.triu(self.K, k=1, format="csr")
            return self.K @ X + strict.T @ X
        return self.K @ X

    # hooks
    def _symbolic(self, K: sp.csr_matrix) -> None:
        pass

    def _numeric(self, K: sp.csr_matrix) -> None:
        raise NotImplementedError

    def _solve(self, B: np.ndarray, x0) -> np.ndarray:
        raise NotImplementedError


def _check_factor_estimate(backend: str, K: sp.csr_matrix, dim: int | None) -> None:
    """Raise FactorizationMemoryError when the estimated factor of K would not fit.

    For backends that report nothing before factorizing (CHOLMOD, SuperLU): the estimate of
    :func:`lightweight.fem.memory.factor_bytes`. ``dim`` None: 2 below 30 nonzeros per row of
    K (bilinear 2D elements have 14 - 18, linear tets 40), else 3; also when not 2 or 3.
    """
    from .memory import factor_bytes
    n = K.shape[0]
    per_row = K.nnz / max(n, 1)
    if dim not in (2, 3):
        dim = 2 if per_row < 30 else 3
    need = factor_bytes(n, dim, per_row, backend=backend)
    budget = available_memory()
    if need > FACTOR_MEMORY_FRACTION * budget:
        raise FactorizationMemoryError(
            f"{backend}: factorizing K ({n} DOFs, {per_row:.0f} nonzeros per row, {dim}D) would need "
            f"about {format_bytes(need)} (estimate), more than {FACTOR_MEMORY_FRACTION:.0%} of the "
            f"{format_bytes(budget)} available ({memory_source()}); use solver='amg' (iterative, "
            f"memory linear in the DOFs), solver='pardiso' if installed, or a coarser mesh")


# ---------------------------------------------------------------------------------- PARDISO
class PardisoSolver(LinearSolver):
    """MKL PARDISO, real SPD (mtype 2) Cholesky on the upper triangle, symbolic phase reused.

    ``matrix_type=11`` (real unsymmetric LU on the full matrix) is kept as an option for
    comparison; it is slower and silently perturbs zero pivots. ``single=True``: PARDISO's
    single-precision factorization and solves (iparm(28) = 1; inputs and outputs stay float64
    for the caller): two thirds of the factor memory and 1.2-1.4x faster, for inner solves
    whose accuracy is set elsewhere (the AMG coarse level: relative residual ~3e-5 there).
    ``tune_threads=False``: never time one thread against all of MKL's at the first
    refactorization, so never keep the two factors that timing needs (the grid multigrid's
    coarsest level, refactorized every design iteration: its second factor was 28 B per hex
    of the whole 128x64x64 run); the thread count then follows the flop rule alone.
    """

    name = "pardiso"

    def __init__(self, matrix_type: int = 2, check_pivots: bool = True, single: bool = False,
                 tune_threads: bool = True):
        super().__init__()
        for option, value in (("single", single), ("tune_threads", tune_threads)):
            if not isinstance(value, (bool, np.bool_)):
                raise SolverError(f"pardiso {option} must be True or False, got {value!r}")
        self.single = bool(single)
        self.tune_threads = bool(tune_threads)
        self._dtype = np.float32 if self.single else np.float64
        import ctypes

        if matrix_type not in (2, 11):
            raise SolverError(f"pardiso matrix_type must be 2 (SPD) or 11 (unsymmetric), got {matrix_type}")
        self._ctypes = ctypes
        try:
            runtime = load_mkl()
        except OSError as exc:
            raise SolverError(f"pardiso is not available: {exc}") from None
        self._call = runtime.pardiso
        self._getdiag = runtime.pardiso_getdiag
        self.matrix_type = matrix_type
        self.check_pivots = check_pivots
        self.pt = np.zeros(64, dtype=np.int64)
        self.iparm = np.zeros(64, dtype=np.int32)
        self._analysed = False
        self._mkl_threads = MKLThreads(runtime)
        self.threads = None          # MKL threads of the numeric phases, set after the analysis
        self._tune = False           # time serial against parallel at the next refactorization
        self._numeric_phases = 0     # numeric phases since the last analysis
        self._modes = None           # {"serial": handle state, "parallel": ...} when both are kept
        self.thread_mode = None      # "serial" | "parallel" when both are kept
        self.mflops = None           # PARDISO's flop count of the factorization (MFlop)
        # a low bound of that count known before the analysis ("auto": its estimate over the most it
        # over-counts); from PARDISO_SERIAL_MFLOPS on the analysis runs on all threads at once
        # instead of once on one thread and again on all (1.4 of 2.7 s at 181k tet4 DOFs)
        self.mflops_hint = None
        self.report = None           # analysis_report() of the current analysis
        self.thread_timings = None   # {"serial": s, "parallel": s} (recent medians) when both are kept

    def _set_iparm(self) -> None:
        ip = self.iparm
        ip[:] = 0
        ip[0] = 1            # we set the parameters below; the rest keep their 0 default
        ip[1] = 2            # METIS nested dissection ordering
        ip[9] = 13 if self.matrix_type == 11 else 8   # pivot perturbation 1e-13 / 1e-8
        ip[10] = 1 if self.matrix_type == 11 else 0   # scaling for the unsymmetric solver
        ip[12] = 1 if self.matrix_type == 11 else 0   # weighted matching
        ip[17] = -1          # report the factor's non-zeros (iparm[17]) ...
        ip[18] = -1          # ... and its MFlop count (iparm[18]), which sets the thread count
        ip[27] = 1 if self.single else 0   # single-precision factor and solves
        ip[34] = 1           # zero-based indices: pass SciPy's arrays without a +1 copy
        ip[55] = 1 if (self._getdiag is not None and self.check_pivots) else 0   # keep the factor diagonal for pivot checks

    def _pardiso(self, phase: int, data: np.ndarray, b: np.ndarray | None = None) -> np.ndarray | None:
        ct = self._ctypes
        n = self._n
        nrhs = 1 if b is None else b.shape[1]
        if b is None:
            b = np.zeros((n, 1), dtype=self._dtype, order="F")
        x = np.zeros_like(b, order="F")
        error = ct.c_int32(0)
        threads = self.threads if self.threads is not None else self._mkl_threads.max_threads
        with self._mkl_threads.limit(threads):
            self._pardiso_call(phase, data, b, x, nrhs, error)
        if error.value == -4 and phase in (12, 13, 22, 23):
            raise _singular(f"pardiso found a zero or negative pivot at equation {int(self.iparm[29])}")
        if error.value != 0:
            raise SolverError(f"pardiso failed in phase {phase} with error code {error.value} "
                              "(MKL PARDISO documentation: -2 out of memory, -3 reordering problem, "
                              "-4 zero pivot, -11 read/write problem)")
        return x

    def _pardiso_call(self, phase, data, b, x, nrhs, error) -> None:
        ct = self._ctypes
        n = self._n
        i32p = ct.POINTER(ct.c_int32)
        # the value arrays are float32 in single precision (iparm(28)); the pointer type is only
        # the declaration's
        f64p = ct.POINTER(ct.c_double)
        self._call(self.pt.ctypes.data_as(ct.POINTER(ct.c_int64)), ct.byref(ct.c_int32(1)),
                   ct.byref(ct.c_int32(1)), ct.byref(ct.c_int32(self.matrix_type)),
                   ct.byref(ct.c_int32(phase)), ct.byref(ct.c_int32(n)),
                   data.ctypes.data_as(f64p), self._ia.ctypes.data_as(i32p),
                   self._ja.ctypes.data_as(i32p), self._perm.ctypes.data_as(i32p),
                   ct.byref(ct.c_int32(nrhs)), self.iparm.ctypes.data_as(i32p),
                   ct.byref(ct.c_int32(0)), b.ctypes.data_as(f64p), x.ctypes.data_as(f64p),
                   ct.byref(error))

    def _release(self) -> None:
        if self._analysed:
            self._pardiso(-1, np.zeros(1))
            self._analysed = False

    def _release_all(self) -> None:
        """Release the active analysis and, when two thread modes are kept, the other one."""
        modes, self._modes = self._modes, None
        if modes:
            for state in modes.values():
                self._set_handle_state(state)
                self._release()
        else:
            self._release()

    def release(self) -> None:
        """Free MKL's factors and analyses now (also done when the solver is collected)."""
        self._release_all()
        self._indptr = self._indices = None
        self.K = None

    def __del__(self):
        try:
            self._release_all()
        except Exception:
            pass

    def _symbolic(self, K: sp.csr_matrix) -> None:
        self._release_all()
        n = K.shape[0]
        if np.any(np.diff(K.indptr) == 0):       # PARDISO segfaults on empty rows
            row = int(np.flatnonzero(np.diff(K.indptr) == 0)[0])
            raise _singular(f"row {row} of K is empty")
        self._n = n
        if self.matrix_type == 2:
            rows = np.repeat(np.arange(n), np.diff(K.indptr))
            if K.nnz < 2**31 - 1 and bool(np.all(K.indices >= rows)):
                # K holds its upper triangle only (the AMG coarse level): PARDISO reads K's own
                # arrays, no copies of its values, indices and positions (~135 B per tet4)
                self._upper = None
                self._upper_input = True
                self._ia = K.indptr.astype(np.int32, copy=False)
                self._ja = K.indices.astype(np.int32, copy=False)
            else:
                self._upper_input = False
                self._upper = np.flatnonzero(K.indices >= rows)
                if K.nnz < 2**31 - 1:
                    # kept for every refactorization: int32 halves it
                    self._upper = self._upper.astype(np.int32)
                counts = np.bincount(rows[self._upper], minlength=n)
                self._ia = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
                self._ja = K.indices[self._upper].astype(np.int32)
            del rows
            if np.any(self._ja[self._ia[:-1]] != np.arange(n)):
                raise _singular("a diagonal entry of K is missing from its sparsity pattern")
        else:
            self._upper = None
            self._ia = K.indptr.astype(np.int32)
            self._ja = K.indices.astype(np.int32)
        self._perm = np.zeros(n, dtype=np.int32)
        self.pt = np.zeros(64, dtype=np.int64)       # a fresh handle for every analysis
        # PARDISO needs the same thread count in every phase of one analysis. The rule of
        # lightweight/_threads.py depends on the factorization's flop count, which the analysis
        # reports: analyse on one thread, and analyse again only if the rule wants more.
        data = self._values(K)
        hint = 0.0 if self.mflops_hint is None else float(self.mflops_hint)
        self.threads = pardiso_threads(hint, self._mkl_threads.max_threads)   # 1 unless overridden or big
        self._set_iparm()
        self._pardiso(11, data)
        self._analysed = True
        self.report = self.analysis_report()
        self._check_memory(K)
        mflops = float(self.iparm[18]) if self.iparm[18] > 0 else None
        max_threads = self._mkl_threads.max_threads
        wanted = pardiso_threads(mflops, max_threads)
        if wanted != self.threads:
            self._release()
            self.threads = wanted
            self._set_iparm()
            self._pardiso(11, data)
            self._analysed = True
        # Mid-size factorizations: whether more threads pay depends on how busy the other
        # cores are, so the first refactorization times both (see _start_thread_timing). Not
        # the first factorization: a one-off solve (lw.solve, a batch evaluation) would pay six
        # factorizations for one (0.18 of a bracket evaluation's 0.32 s).
        self._numeric_phases = 0
        # the timing keeps two factors: only when both fit (the analysis said what one needs)
        self._tune = (self.tune_threads and self.threads == 1 and max_threads > 1
                      and pardiso_threads_fixed() is None
                      and mflops is not None and mflops >= PARDISO_TRY_PARALLEL_MFLOPS
                      and 2 * self.report["memory_bytes"] <= available_memory())
        self.mflops = mflops

    def analysis_report(self) -> dict:
        """What PARDISO's analysis (phase 11) reported about the factorization to come.

        ``factor_nnz`` nonzeros of L (iparm(18)), ``mflops`` its flop count (iparm(19)),
        ``memory_bytes`` the peak memory of factorization and solve: max(iparm(15),
        iparm(16) + iparm(17)) KiB (MKL PARDISO reference, "iparm parameter").
        """
        ip = self.iparm
        peak_kib = max(int(ip[14]), int(ip[15]) + int(ip[16]))
        return {"factor_nnz": int(ip[17]), "mflops": float(ip[18]),
                "analysis_peak_bytes": int(ip[14]) * 1024, "memory_bytes": peak_kib * 1024}

    @property
    def reads_upper_triangle(self) -> bool:
        """True if a K holding only its upper triangle (diagonal included) may be factorized as
        the symmetric matrix it stands for (the symmetric matrix type reads no more)."""
        return self.matrix_type == 2

    def _check_memory(self, K: sp.csr_matrix) -> None:
        """Refuse a factorization that would not fit, before MKL allocates it."""
        need = self.report["memory_bytes"]
        budget = available_memory()
        if need > FACTOR_MEMORY_FRACTION * budget:
            self._release()
            raise FactorizationMemoryError(
                f"pardiso: factorizing K ({K.shape[0]} DOFs, {K.nnz / K.shape[0]:.0f} nonzeros per "
                f"row) needs {format_bytes(need)} (PARDISO's analysis, {self.report['factor_nnz']:.3g} "
                f"factor nonzeros), more than {FACTOR_MEMORY_FRACTION:.0%} of the "
                f"{format_bytes(budget)} available ({memory_source()}); use solver='amg' "
                f"(iterative, memory linear in the DOFs) or a coarser mesh")

    def _handle_state(self):
        return self.pt, self.iparm, self.threads, self._analysed

    def _set_handle_state(self, state) -> None:
        self.pt, self.iparm, self.threads, self._analysed = state

    def _start_thread_timing(self, data: np.ndarray) -> None:
        """Analyse a second time for MKL's maximum thread count and keep both analyses.

        The two are first timed alternately, three factorizations each (the fastest counts,
        so a burst of load elsewhere does not decide). Later factorizations use the faster
        mode; every :data:`THREAD_PROBE_EVERY`-th one uses the other mode instead (a
        factorization of the current matrix all the same) and switches if that was more than
        10 % faster than the recent median of the preferred mode: the answer changes when
        other work starts or stops on the other cores. Memory: two factors of a mid-size
        problem (below PARDISO_SERIAL_MFLOPS) instead of one.
        """
        serial = self._handle_state()
        self.pt = np.zeros(64, dtype=np.int64)
        self.iparm = np.zeros(64, dtype=np.int32)
        self.threads = self._mkl_threads.max_threads
        self._set_iparm()
        self._pardiso(11, data)
        self._analysed = True
        self._modes = {"serial": serial, "parallel": self._handle_state()}
        self._recent = {"serial": [], "parallel": []}
        for _ in range(3):
            for mode in ("serial", "parallel"):
                self._factorize_in(mode, data)
        best = {mode: min(times) for mode, times in self._recent.items()}
        self.thread_mode = min(best, key=best.get)
        self._set_handle_state(self._modes[self.thread_mode])   # its factor is of this K too
        self._factorizations = 0
        self.thread_timings = best

    def _factorize_in(self, mode: str, data: np.ndarray) -> float:
        self._set_handle_state(self._modes[mode])
        t0 = time.perf_counter()
        self._pardiso(22, data)
        seconds = time.perf_counter() - t0
        recent = self._recent[mode]
        recent.append(seconds)
        del recent[:-5]
        return seconds

    def _factorize_adaptive(self, data: np.ndarray) -> None:
        self._factorizations += 1
        preferred = self.thread_mode
        if self._factorizations % THREAD_PROBE_EVERY:
            self._factorize_in(preferred, data)
            return
        other = "parallel" if preferred == "serial" else "serial"
        seconds = self._factorize_in(other, data)
        if seconds < 0.9 * float(np.median(self._recent[preferred])):
            self.thread_mode = other
        self.thread_timings = {mode: float(np.median(times)) for mode, times in self._recent.items()}

    def _values(self, K: sp.csr_matrix) -> np.ndarray:
        values = K.data[self._upper] if self._upper is not None else K.data
        return np.ascontiguousarray(values, dtype=self._dtype)

    def _numeric(self, K: sp.csr_matrix) -> None:
        self._data = self._values(K)
        self._numeric_phases += 1
        if self._tune and self._numeric_phases > 1:
            self._tune = False
            self._start_thread_timing(self._data)
        elif self._modes:
            self._factorize_adaptive(self._data)
        else:
            self._pardiso(22, self._data)
        if self.matrix_type == 11 and int(self.iparm[13]) > 0:
            raise _singular(f"pardiso perturbed {int(self.iparm[13])} pivots")
        self._check_pivots(K)

    def _check_pivots(self, K: sp.csr_matrix) -> None:
        if self._getdiag is None or self.iparm[55] != 1:
            return
        ct = self._ctypes
        n = self._n
        df, da = np.zeros(n, dtype=self._dtype), np.zeros(n, dtype=self._dtype)
        err = ct.c_int32(0)
        f64p = ct.POINTER(ct.c_double)
        self._getdiag(self.pt.ctypes.data_as(ct.POINTER(ct.c_int64)), df.ctypes.data_as(f64p),
                      da.ctypes.data_as(f64p), ct.byref(ct.c_int32(1)), ct.byref(err))
        if err.value != 0:
            return
        # df: pivots (diagonal of D in L D L^T), da: diagonal of K, both in PARDISO's order.
        diag = np.abs(da)
        ratio = df / np.where(diag > 0, diag, 1.0)
        worst = float(np.min(np.abs(ratio)))
        if not worst > PIVOT_LIMIT:
            raise _singular(f"pardiso: smallest pivot is {worst:.1e} of its diagonal entry")

    def drop_factorization(self) -> bool:
        freed = bool(self._analysed or self._modes)
        self._release_all()
        self._indptr = self._indices = None       # the next factorize analyses again
        self._data = None
        return freed

    def _solve(self, B: np.ndarray, x0) -> np.ndarray:
        if not self._analysed:
            raise SolverError("pardiso: the factorization was freed (drop_factorization); "
                              "factorize K again before solving")
        b = np.asfortranarray(B, dtype=self._dtype)
        return np.ascontiguousarray(self._pardiso(33, self._data, b), dtype=np.float64)


# ---------------------------------------------------------------------------------- CHOLMOD
class CholmodSolver(LinearSolver):
    """CHOLMOD supernodal Cholesky (scikit-sparse): analyze once per pattern, refactor in place."""

    name = "cholmod"

    def __init__(self, ordering_method: str = "default", check_pivots: bool = True,
                 dim: int | None = None):
        super().__init__()
        from sksparse import cholmod
        self._cholmod = cholmod
        self.ordering_method = ordering_method
        self.check_pivots = check_pivots
        self.dim = dim
        self._factor = None

    def _symbolic(self, K: sp.csr_matrix) -> None:
        _check_factor_estimate(self.name, K, self.dim)
        # CHOLMOD wants CSC; the matrix is symmetric, so the CSR arrays read as CSC are K itself.
        self._factor = self._cholmod.analyze(self._csc(K), mode="supernodal",
                                             ordering_method=self.ordering_method)

    @staticmethod
    def _csc(K: sp.csr_matrix) -> sp.csc_matrix:
        return sp.csc_matrix((K.data, K.indices, K.indptr), shape=K.shape)

    def _numeric(self, K: sp.csr_matrix) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")     # CHOLMOD warns (not raises) on some failures
                self._factor.cholesky_inplace(self._csc(K))
        except (self._cholmod.CholmodNotPositiveDefiniteError, self._cholmod.CholmodError, Warning) as exc:
            raise _singular(f"cholmod: {exc}") from exc
        if not self.check_pivots:
            return
        try:
            d = self._factor.D()                    # LDL^T diagonal (L's squared diagonal for LL^T)
        except Exception:
            d = self._factor.L().diagonal() ** 2
        diag = K.diagonal()[self._factor.P()]
        ratio = d / np.where(diag > 0, diag, 1.0)
        if not np.min(ratio) > PIVOT_LIMIT:
            raise _singular(f"cholmod pivot {np.min(ratio):.1e} of the diagonal")

    def _solve(self, B: np.ndarray, x0) -> np.ndarray:
        return np.asarray(self._factor(B)).reshape(B.shape)


# ---------------------------------------------------------------------------------- SuperLU
class SuperLUSolver(LinearSolver):
    """SciPy SuperLU with an MMD(A^T+A) ordering computed once per pattern and reused.

    ``symmetric=True`` tells SuperLU to pivot on the diagonal (SymmetricMode, small
    ``diag_pivot_thresh``), which is exact for SPD K and keeps L and U's pattern symmetric.
    ``check_pivots=False`` skips the probe solve for near-singular factors.
    """

    name = "superlu"

    def __init__(self, permc_spec: str = "MMD_AT_PLUS_A", symmetric: bool = True,
                 diag_pivot_thresh: float = 0.0, reuse_ordering: bool = True,
                 check_pivots: bool = True, dim: int | None = None):
        super().__init__()
        self.check_pivots = check_pivots
        self.dim = dim
        self.permc_spec = permc_spec
        self.symmetric = symmetric
        self.diag_pivot_thresh = diag_pivot_thresh
        self.reuse_ordering = reuse_ordering
        self._perm = None
        self._lu = None

    def _options(self) -> dict:
        if self.symmetric:
            return {"SymmetricMode": True, "DiagPivotThresh": self.diag_pivot_thresh}
        return {}

    def _factor(self, A: sp.spmatrix, permc_spec: str):
        try:
            return spla.splu(A.tocsc(), permc_spec=permc_spec, options=self._options())
        except RuntimeError as exc:   # "Factor is exactly singular"
            raise _singular(f"superlu: {exc}") from exc

    def _symbolic(self, K: sp.csr_matrix) -> None:
        _check_factor_estimate(self.name, K, self.dim)
        self._perm = None
        self._perm_map = None

    def _numeric(self, K: sp.csr_matrix) -> None:
        if self._perm is None or not self.reuse_ordering:
            lu = self._factor(K, self.permc_spec)
            if self.reuse_ordering and self.symmetric:
                # In symmetric mode the rows follow the columns. lu.perm_c maps an original
                # column to its new position; the matrix to refactor takes columns in new order.
                self._perm = np.argsort(lu.perm_c)
                Kp = K[self._perm][:, self._perm].tocsc()
                Kp.sort_indices()
                # Positions of the permuted matrix's entries in K.data, for later refills.
                marker = sp.csr_matrix((np.arange(K.nnz, dtype=float) + 1, K.indices, K.indptr),
                                       shape=K.shape)
                mp = marker[self._perm][:, self._perm].tocsc()
                mp.sort_indices()
                self._perm_map = (mp.data - 1).astype(np.int64)
                self._perm_csc = (Kp.indptr, Kp.indices)
            self._lu = lu
        else:
            self._lu = self._refactor(K)
        if self.check_pivots:
            self._check_pivots(K)

    def _refactor(self, K: sp.csr_matrix):
        indptr, indices = self._perm_csc
        Kp = sp.csc_matrix((K.data[self._perm_map], indices, indptr), shape=K.shape)
        return _PermutedLU(self._factor(Kp, "NATURAL"), self._perm)

    def _check_pivots(self, K: sp.csr_matrix) -> None:
        # SuperLU exposes its pivots only through a full copy of U (as large as the factor), so
        # probe instead: a near-singular factor turns a generic right-hand side into a solution
        # whose residual is of the order of the rhs itself. One solve costs a few % of a factor.
        probe = np.random.default_rng(0).standard_normal(K.shape[0])
        x = self._lu.solve(probe)
        res = np.linalg.norm(K @ x - probe) / np.linalg.norm(probe) if np.all(np.isfinite(x)) else np.inf
        if not res < RESIDUAL_LIMIT:
            raise _singular(f"superlu: a generic right-hand side leaves relative residual {res:.1e}")

    def _solve(self, B: np.ndarray, x0) -> np.ndarray:
        return np.asarray(self._lu.solve(np.asarray(B, order="F"))).reshape(B.shape)


class _PermutedLU:
    """SuperLU factors of P K P^T presented as factors of K (solve and pivot access)."""

    def __init__(self, lu, perm: np.ndarray):
        self._lu = lu
        self._perm = perm

    def solve(self, B: np.ndarray) -> np.ndarray:
        X = np.empty_like(B)
        X[self._perm] = self._lu.solve(np.asarray(B[self._perm], order="F"))
        return X


# ---------------------------------------------------------------------------------- AMG-PCG
class AMGSolver(LinearSolver):
    """CG preconditioned by a smoothed-aggregation V-cycle (pyamg), rigid-body near-null space.

    Parameters: ``points`` (n_nodes, dim) node coordinates for the rigid-body modes (without
    them only the ``dim`` translations are used); ``rtol`` relative residual ||K x - b|| / ||b||
    to reach; ``maxiter`` per rhs; ``reuse_hierarchy_for`` how many refills may reuse one
    hierarchy (0 = rebuild on every factorize); ``iteration_budget`` iterations above which a
    reused hierarchy is rebuilt (default: twice the fresh hierarchy's count plus 5);
    ``zero_fixed_modes`` zeroes the modes on eliminated DOFs; other keyword arguments go to
    ``pyamg.smoothed_aggregation_solver`` (default ``max_coarse=500``).
    Several right-hand sides run as independent CG iterations sharing one sparse
    matrix-block product per step.
    """

    name = "amg"
    direct = False

    def __init__(self, points: np.ndarray | None = None, dim: int | None = None, rtol: float = 1e-8,
                 maxiter: int = 500, reuse_hierarchy_for: int = 0, iteration_budget: int | None = None,
                 zero_fixed_modes: bool = True, **amg_options):
        super().__init__()
        import pyamg
        self._pyamg = pyamg
        self.points = None if points is None else np.asarray(points, dtype=float)
        self.dim = dim if dim is not None else (None if points is None else self.points.shape[1])
        self.rtol = float(rtol)
        self.maxiter = int(maxiter)
        self.reuse_hierarchy_for = int(reuse_hierarchy_for)
        self.iteration_budget = iteration_budget
        self.zero_fixed_modes = zero_fixed_modes
        self.amg_options = amg_options
        self._hierarchy = None
        self._refills_on_hierarchy = 0
        self._fresh_iterations = None
        self._last_iterations = 0
        self.hierarchies_built = 0

    def _near_null_space(self, n: int) -> np.ndarray | None:
        """Rigid-body modes (n, 3|6) of the points, translations only without points, or None."""
        if self.points is not None and self.points.size and self.points.shape[0] * self.points.shape[1] == n:
            return rigid_body_modes(self.points)
        if self.dim and n % self.dim == 0:
            return np.kron(np.ones((n // self.dim, 1)), np.eye(self.dim))
        return None

    @property
    def _modes(self) -> np.ndarray | None:
        """The near-null space of the analysed pattern, formed when asked (hierarchy builds,
        re-smoothing): the points are kept, not the modes (6 float64 per DOF, ~28 B per tet4)."""
        n = getattr(self, "_null_space_rows", None)
        return None if n is None else self._near_null_space(n)

    def _symbolic(self, K: sp.csr_matrix) -> None:
        self._hierarchy = None
        self._null_space_rows = K.shape[0]
        modes = self._modes
        if modes is not None:
            self._mode_norms = np.linalg.norm(modes, axis=0)

    def _check_rigid_modes(self, K: sp.csr_matrix) -> None:
        """Raise if a rigid-body mode is (numerically) a null vector of K: an unsupported motion."""
        modes = self._modes
        if modes is None:
            return
        from .amg import spmm
        KR = spmm(K, modes)      # parallel Numba block product (SciPy's is serial)
        del modes
        scale = np.abs(K.diagonal()).max() * self._mode_norms
        ratio = np.linalg.norm(KR, axis=0) / np.where(scale > 0, scale, 1.0)
        free = np.flatnonzero(ratio < 1e-10)
        if free.size:
            raise _singular(f"amg: rigid-body mode(s) {free.tolist()} (translations first, then "
                            f"rotations) are not resisted")

    def _build(self, K: sp.csr_matrix) -> None:
        options = {"max_coarse": 500}
        options.update(self.amg_options)
        # The eliminated DOFs keep explicit zeros in the pattern; aggregation should not see them.
        A = K.copy()
        A.eliminate_zeros()
        modes = B = self._modes
        if B is not None and self.zero_fixed_modes:
            # Eliminated (Dirichlet) rows carry no motion: zero the modes there.
            fixed = np.diff(A.indptr) == 1
            if np.any(fixed):
                B = B.copy()
                B[fixed] = 0.0
                if np.any(np.linalg.norm(B, axis=0) == 0):
                    B = modes
        self._hierarchy = self._pyamg.smoothed_aggregation_solver(A, B=B, **options)
        self._preconditioner = self._hierarchy.aspreconditioner(cycle="V")
        self._refills_on_hierarchy = 0
        self._fresh_iterations = None
        self.hierarchies_built += 1

    def set_rtol(self, rtol: float) -> None:
        """Stop at the relative residual ``rtol`` from the next solve on (0 < rtol < 1).

        The iteration counts seen at the old tolerance no longer measure the hierarchy (they
        decide rebuilds and re-smoothing), so they are forgotten: the next solve's count is
        the new reference.
        """
        rtol = float(rtol)
        if not 0.0 < rtol < 1.0:
            raise SolverError(f"{self.name}: rtol must lie in (0, 1), got {rtol!r}")
        if rtol != self.rtol:
            self.rtol = rtol
            self._fresh_iterations = None
            self._last_iterations = 0

    def _numeric(self, K: sp.csr_matrix) -> None:
        self._check_rigid_modes(K)
        reuse = (self._hierarchy is not None and self._refills_on_hierarchy < self.reuse_hierarchy_for
                 and self._last_iterations <= self._budget())
        if reuse:
            self._refills_on_hierarchy += 1
        else:
            self._build(K)
        self.info_rebuilt = not reuse

    def _budget(self) -> int:
        if self.iteration_budget is not None:
            return int(self.iteration_budget)
        if self._fresh_iterations is None:
            return self.maxiter
        return 2 * self._fresh_iterations + 5

    def factorize(self, K) -> None:
        super().factorize(K)
        self.info["hierarchy_rebuilt"] = self.info_rebuilt
        self.info["hierarchies_built"] = self.hierarchies_built

    def _solve(self, B: np.ndarray, x0) -> np.ndarray:
        X0 = None
        if x0 is not None:
            X0 = np.asarray(x0, dtype=float).reshape(B.shape[0], -1)
            if X0.shape != B.shape or not np.all(np.isfinite(X0)):
                X0 = None
        stale = self._refills_on_hierarchy > 0
        limit = min(self.maxiter, self._budget()) if stale else self.maxiter
        X, iters, res, broke = _block_pcg(self.K, B, X0, self._preconditioner.matvec, self.rtol, limit)
        if stale and np.any(res > self.rtol):
            # The reused hierarchy stopped being a good preconditioner: rebuild and go on from X.
            self._build(self.K)
            self.info["hierarchy_rebuilt"] = True
            self.info["hierarchies_built"] = self.hierarchies_built
            X, more, res, broke = _block_pcg(self.K, B, X, self._preconditioner.matvec, self.rtol,
                                             self.maxiter)
            iters = iters + more
        self._last_iterations = int(iters.max()) if iters.size else 0
        if not stale and self._fresh_iterations is None:
            self._fresh_iterations = self._last_iterations
        self.info["iterations"] = iters.tolist()
        _check_pcg("amg", X, res, iters, broke, self.rtol, self.maxiter)
        return X


#: amg-reuse smooths its finest prolongator again with the current K (same aggregates, same
#: pattern: ReusedHierarchy.resmooth) when the last solve took more than this times the PCG
#: iterations of the freshly built hierarchy
RESMOOTH_GROWTH = 1.25


#: amg-reuse keeps this many of its last solutions per number of right-hand sides and starts
#: PCG from the energy-best combination of them and the warm start (``start_space``)
START_SPACE = 2


class ReusedAMGSolver(AMGSolver):
    """Smoothed-aggregation PCG whose aggregates and prolongators are built once per mesh.

    The unstructured path of the SIMP loop (:mod:`lightweight.fem.amg`): the first
    ``factorize`` runs pyamg's setup (rigid-body modes, zeroed on eliminated DOFs); every later
    one refreshes only the Galerkin products, the Chebyshev smoothers' diagonals and spectral
    bounds and the coarsest factor. All right-hand sides run through one block PCG whose
    matrix and V-cycle products are Numba kernels over (n, k) blocks.

    Parameters as :class:`AMGSolver` (``points``, ``dim``, ``maxiter``; ``rtol`` defaults to 1e-6,
    the geometric multigrid's: on optimizer iterates of a 63k-tet bracket it gave the same
    compliances as PARDISO to 3e-13, like 1e-8, in 5 - 20 % fewer iterations) plus
    ``single`` (V-cycle in float32), ``degree`` (Chebyshev degree), ``max_coarse``,
    ``start_space`` (the solver keeps the last ``start_space`` solutions it returned for each
    number of right-hand sides (None: :data:`START_SPACE`), one of which is usually the next
    warm start; PCG starts from the best combination, in the energy norm, of the warm start
    and the others: :func:`~lightweight.fem.amg.projected_start`; 0 or 1: from the warm start
    alone, and nothing is kept),
    ``max_levels`` (None: two, or three when the first coarse level exceeds
    :data:`~lightweight.fem.amg.THIRD_LEVEL_ABOVE_DOFS` DOFs), ``pair_above`` ("auto": the
    finest aggregates are matched in pairs while the coarse level would exceed
    :data:`~lightweight.fem.amg.PAIR_AGGREGATES_ABOVE_DOFS` DOFs; a number of DOFs; None:
    never; a rebuild after a stalled solve drops the pairing) and ``rebuild_factor``: a solve
    needing more than ``rebuild_factor`` times the iterations of
    the freshly built hierarchy (plus 10) rebuilds the aggregates on the current matrix and
    continues from where it stopped (the SIMP contrast moved the strong connections too far).
    Other keyword arguments go to ``pyamg.smoothed_aggregation_solver``.
    """

    name = "amg-reuse"

    def __init__(self, points: np.ndarray | None = None, dim: int | None = None, rtol: float = 1e-6,
                 maxiter: int = 500, single: bool = False, degree: int = 2, max_coarse: int = 500,
                 max_levels: int | None = None, rebuild_factor: float = 3.0,
                 zero_fixed_modes: bool = True, pair_above: int | str | None = "auto",
                 start_space: int | None = None, **amg_options):
        super().__init__(points=points, dim=dim, rtol=rtol, maxiter=maxiter,
                         zero_fixed_modes=zero_fixed_modes, **amg_options)
        start_space = START_SPACE if start_space is None else start_space
        whole = isinstance(start_space, (int, np.integer)) and not isinstance(start_space, bool)
        if not (whole and 0 <= start_space <= 8):
            raise SolverError(f"amg-reuse: start_space must be a whole number of earlier solutions "
                              f"from 0 to 8, got {start_space!r}")
        self.start_space = int(start_space)
        # the last start_space solutions per number of right-hand sides (copies)
        self._earlier_solutions: dict[int, list[np.ndarray]] = {}
        self.single = bool(single)
        self.degree = int(degree)
        self.max_coarse = int(max_coarse)
        # None: two levels, three for a large first coarse level (amg.THIRD_LEVEL_ABOVE_DOFS)
        whole = isinstance(max_levels, (int, np.integer)) and not isinstance(max_levels, bool)
        if max_levels is not None and not (whole and max_levels >= 1):
            raise SolverError(f"amg-reuse: max_levels must be None (two levels, three for a large "
                              f"coarse level) or a whole number >= 1, got {max_levels!r}")
        self.max_levels = None if max_levels is None else int(max_levels)
        whole = isinstance(pair_above, (int, np.integer)) and not isinstance(pair_above, bool)
        if not (pair_above is None or pair_above == "auto" or (whole and pair_above >= 0)):
            raise SolverError(f"amg-reuse: pair_above must be 'auto', None (never pair the "
                              f"aggregates) or a number of coarse DOFs >= 0, got {pair_above!r}")
        self.pair_above = pair_above if pair_above is None or pair_above == "auto" else int(pair_above)
        self._unpaired = False          # set when a stalled solve rebuilt the hierarchy
        self.rebuild_factor = float(rebuild_factor)
        # the nodes' visiting order of the finest aggregation (None: K's row order); the system
        # sets the mesh's order when K's rows are renumbered (fem/assembly.py, NodeOrder)
        self.aggregation_order: np.ndarray | None = None

    def _supported_modes(self, K: sp.csr_matrix) -> np.ndarray | None:
        """The rigid-body modes with K's eliminated DOFs zeroed (unless that zeroes a mode)."""
        from .amg import fixed_rows
        B = self._modes
        if B is not None and self.zero_fixed_modes:
            fixed = fixed_rows(K)
            if np.any(fixed):
                B[fixed] = 0.0          # B is formed for this call: no copy
                if np.any(np.linalg.norm(B, axis=0) == 0):
                    B = self._modes
        return B

    def _build(self, K: sp.csr_matrix) -> None:
        from .amg import ReusedHierarchy
        B = self._supported_modes(K)
        # after a stalled solve the aggregates are rebuilt unpaired: the coarser coarse space
        # of paired aggregates is the less robust one on hard SIMP iterates
        pair_above = None if self._unpaired else self.pair_above
        hierarchy = ReusedHierarchy(max_coarse=self.max_coarse, max_levels=self.max_levels,
                                    single=self.single, pair_above=pair_above,
                                    degree=self.degree, **self.amg_options)
        hierarchy.aggregation_order = self.aggregation_order
        # pyamg aggregates K without its explicit zeros (those of the eliminated DOFs would join
        # aggregates); the cycle works on K's own pattern from the first refresh on
        hierarchy.build(K, B, drop_zeros=True)
        self._hierarchy = hierarchy
        self._fresh_iterations = None
        self.hierarchies_built += 1

    def _numeric(self, K: sp.csr_matrix) -> None:
        rebuilt = self._hierarchy is None
        resmooth = False
        if rebuilt:
            # Whether a rigid-body motion is resisted depends on the supports (the pattern's
            # eliminated rows, fixed with it), not on positive SIMP multipliers of the same
            # elements: checked when the hierarchy is built (a K X with six columns and a pass
            # for the diagonal, ~70 ms per refill at 422k tets); a later refill that is singular
            # anyway stops PCG, which then raises.
            self._check_rigid_modes(K)
            self._build(K)
        else:
            # P smoothed again with this K once PCG needs clearly more iterations than on the
            # freshly built hierarchy (judged by the last solve: designs change gradually)
            last, fresh = getattr(self, "_last_iterations", None), self._fresh_iterations
            resmooth = (fresh is not None and last is not None
                        and last > RESMOOTH_GROWTH * max(fresh, 1))
            before = self._hierarchy.resmoothed
            self._hierarchy.refresh(K, modes=self._supported_modes(K) if resmooth else None)
            resmooth = self._hierarchy.resmoothed > before
        self._resmoothed = bool(resmooth)
        self.info_rebuilt = rebuilt

    def drop_factorization(self) -> bool:
        """Free the hierarchy (prolongators, Galerkin patterns, coarse factor); K stays. The
        next :meth:`factorize` builds a new one."""
        freed = self._hierarchy is not None
        if freed and self._hierarchy.coarse_factor is not None and \
                self._hierarchy.coarse_factor[0] == "sparse":
            self._hierarchy.coarse_factor[1].release()
        self._hierarchy = None
        self._fresh_iterations = None
        self._last_iterations = None
        self._indptr = self._indices = None
        self._earlier_solutions = {}
        return freed

    def drop_matrix(self) -> None:
        """As :meth:`LinearSolver.drop_matrix`; the hierarchy's finest level lets go of K too
        (the next refresh brings the new one; prolongators and coarse factor stay)."""
        super().drop_matrix()
        if self._hierarchy is not None and self._hierarchy.levels:
            self._hierarchy.levels[0].A = None
            self._hierarchy.levels[0].A_cycle = None

    def _budget(self) -> int:
        fresh = self._fresh_iterations
        return self.maxiter if fresh is None else int(self.rebuild_factor * fresh) + 10

    def _solve(self, B: np.ndarray, x0) -> np.ndarray:
        from .amg import block_pcg, projected_start
        X0 = None
        if x0 is not None:
            X0 = np.asarray(x0, dtype=float).reshape(B.shape[0], -1)
            if X0.shape != B.shape or not np.all(np.isfinite(X0)):
                X0 = None
        t0 = time.perf_counter()
        R0 = None
        remember = getattr(self, "_remember", True)      # False: an adjoint, no projection
        earlier = [E for E in self._earlier_solutions.get(B.shape[1], [])
                   if remember and E.shape == B.shape and X0 is not None
                   and not np.array_equal(E, X0)]
        if earlier:
            # Successive SIMP designs change gradually: the energy-norm best combination of the
            # warm start and the solutions before it starts PCG closer than the warm start alone
            # (Fischer 1998). 63k-tet bracket, 30 MMA iterations at rtol 1e-4: 1-2 fewer PCG
            # iterations from the third on (9 -> 8, 13 -> 11), for one block product more.
            X0, R0 = projected_start(self.K, B, [X0] + earlier[::-1])
        self.info["start_space"] = 1 + len(earlier) if X0 is not None else 0
        X, iters, res, broke = block_pcg(self.K, B, X0, self._hierarchy.cycle, self.rtol,
                                         min(self.maxiter, self._budget()), R0=R0)
        if np.any(res > self.rtol) and not np.all(broke) and self._fresh_iterations is not None:
            # The aggregates of an earlier design stopped fitting this one: rebuild, go on from X.
            if getattr(self._hierarchy, "pairings", 0):
                self._unpaired = True
            self._build(self.K)
            self.info["hierarchy_rebuilt"] = True
            X, more, res, broke = block_pcg(self.K, B, X, self._hierarchy.cycle, self.rtol, self.maxiter)
            iters = iters + more
        if self._fresh_iterations is None:
            self._fresh_iterations = int(iters.max()) if iters.size else 0
        self._last_iterations = int(iters.max()) if iters.size else 0
        if self.start_space > 1 and remember:
            # one kept solution would only repeat the warm start; adjoints are not kept
            kept = self._earlier_solutions.setdefault(B.shape[1], [])
            kept.append(np.array(X, dtype=float, order="C"))
            del kept[:-self.start_space]
        self.info["iterations"] = iters.tolist()
        self.info["hierarchies_built"] = self.hierarchies_built
        self.info["aggregate_pairings"] = int(getattr(self._hierarchy, "pairings", 0))
        self.info["prolongator_resmoothed"] = bool(getattr(self, "_resmoothed", False))
        self.info["pcg_seconds"] = time.perf_counter() - t0
        _check_pcg("amg-reuse", X, res, iters, broke, self.rtol, self.maxiter)
        self._true_residuals = (X, res)
        return X

    def _check_solution(self, B: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The relative residuals ||K X - B|| / ||B|| block PCG computed from this very X at
        its end (a product with K, and SciPy's serial one at that, saved per solve)."""
        kept, self._true_residuals = getattr(self, "_true_residuals", None), None
        if kept is not None and kept[0] is X:
            if not np.all(np.isfinite(X)):
                raise _singular(f"{self.name} returned non-finite displacements")
            return np.asarray(kept[1], dtype=float)
        return super()._check_solution(B, X)


def _block_pcg(A: sp.csr_matrix, B: np.ndarray, X0: np.ndarray | None, precondition, rtol: float,
               maxiter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent PCG runs for the columns of B (n, k) sharing one A @ P per step.

    Returns X (n, k), iterations (k,), relative residuals ||b - A x|| / ||b|| (k,), and a mask
    (k,) of columns that broke down (p^T A p <= 0: A is singular or indefinite along p).
    """
    n, k = B.shape
    X = np.zeros((n, k)) if X0 is None else np.array(X0, dtype=float)
    b_norm = np.linalg.norm(B, axis=0)
    b_norm_safe = np.where(b_norm > 0, b_norm, 1.0)
    R = B - A @ X if X0 is not None else B.copy()
    iters = np.zeros(k, dtype=np.int64)
    breakdown = np.zeros(k, dtype=bool)
    res = np.linalg.norm(R, axis=0) / b_norm_safe
    res[b_norm == 0] = 0.0
    X[:, b_norm == 0] = 0.0
    active = np.flatnonzero(res > rtol)
    if active.size == 0 or maxiter <= 0:
        return X, iters, res, breakdown
    Z = np.column_stack([precondition(R[:, j]) for j in active])
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R[:, active], Z)
    for _ in range(maxiter):
        AP = A @ P
        pap = np.einsum("ij,ij->j", P, AP)
        # pap <= 0 only for an indefinite/singular K; leave those columns unconverged.
        ok = pap > 0
        breakdown[active[~ok]] = True
        alpha = np.where(ok, rz / np.where(ok, pap, 1.0), 0.0)
        X[:, active] += P * alpha
        R[:, active] -= AP * alpha
        iters[active] += 1
        res[active] = np.linalg.norm(R[:, active], axis=0) / b_norm_safe[active]
        keep = (res[active] > rtol) & ok & np.isfinite(res[active])
        if not np.any(keep):
            break
        active, P, rz = active[keep], P[:, keep], rz[keep]
        Z = np.column_stack([precondition(R[:, j]) for j in active])
        rz_new = np.einsum("ij,ij->j", R[:, active], Z)
        P = Z + P * (rz_new / rz)
        rz = rz_new
    # Report the true residual (the recursive one drifts over many iterations).
    res = np.linalg.norm(B - A @ X, axis=0) / b_norm_safe
    res[b_norm == 0] = 0.0
    return X, iters, res, breakdown


# ---------------------------------------------------------------------------------- choosing
_DIRECT_ORDER = ("pardiso", "cholmod", "superlu")
_CLASSES = {"pardiso": PardisoSolver, "cholmod": CholmodSolver, "superlu": SuperLUSolver,
            "amg": AMGSolver, "amg-reuse": ReusedAMGSolver}
# The time model of "auto" (benchmarks/solver_choice.py, docs/performance.md; one MKL thread,
# 2 shared cores, min of 2 runs). Direct: PARDISO's flop count over its rate (25 - 48 GFlop/s
# from 2e4 DOFs on); SuperLU's rate is in PARDISO-equivalent flops (it does more, slower).
# CHOLMOD is not installed here: taken as PARDISO. AMG: setup and one PCG iteration per
# nonzero of K (0.16 - 0.34 us, 0.010 - 0.021 us), iterations to 1e-8 by element order
# (linear 14 - 25, tet10 31 - 33 at 1e4 - 6e4 DOFs).
DIRECT_MFLOP_PER_SECOND = {"pardiso": 30e3, "cholmod": 30e3, "superlu": 1.8e3}
AMG_SETUP_SECONDS_PER_NONZERO = 0.25e-6
AMG_ITERATION_SECONDS_PER_NONZERO = 0.02e-6
AMG_ITERATIONS = {1: 20, 2: 35}
# What "auto" builds when it picks AMG is "amg-reuse": per design only the refresh (Galerkin
# products, smoother bounds, coarse factor) and one block PCG for all load cases. Measured per
# analysis on the Gmsh bracket (2026-12-03, 2-core AMD EPYC, alternated with PARDISO in one
# process, docs/performance.md "solver='auto' after amg-reuse"): 0.37 - 0.57 us per nonzero of
# K with 3 load cases (tet4 41k - 240k DOFs, 15-16 PCG iterations; tet10 369k DOFs 0.50 us),
# 3 - 5x below the rebuilt model above; fitted as refresh + cases x iterations x product.
AMG_REUSE_REFRESH_SECONDS_PER_NONZERO = 0.15e-6
AMG_REUSE_ITERATION_SECONDS_PER_NONZERO = 0.0075e-6
AMG_REUSE_ITERATIONS = {1: 16, 2: 20}
# With a sparsity pattern, "auto" lets PARDISO analyse it (the analysis is kept for the first
# factorization) and decides on the analysis's own flop count and memory, but only where the
# direct solve can still win: the estimate over-counts PARDISO's flops (METIS ordering) by up to
# AUTO_ESTIMATE_OVERSHOOT, and the analysis itself costs about ANALYSIS_SECONDS_SCALE x n^1.25 s.
# Measured on Gmsh tet brackets (2026-12-02, quiet machine): over-count 2.65-2.8 (tet4, 41k-309k
# DOFs) and 2.9-3.2 (tet10, 68k-195k DOFs); analysis 0.46-0.55 s at 41k DOFs, 2.0-2.2 s at 131k,
# 6.1 s at 309k (the n^1.25 fit), 1.4 s and 4.7 s for tet10 at 68k and 195k (above the fit:
# analyses that could be skipped still run). At 309k tet4 DOFs (550k tets, 3 load cases) the
# analysis always ended in choosing AMG: it is now skipped.
AUTO_ESTIMATE_OVERSHOOT = 3.2
ANALYSIS_SECONDS_SCALE = 8.5e-7


def available_solvers() -> list[str]:
    """Names of the installed backends, fastest first (direct ones, then "amg")."""
    names = []
    if _is_pardiso_available():
        names.append("pardiso")
    if _is_cholmod_available():
        names.append("cholmod")
    names.append("superlu")
    try:
        import pyamg  # noqa: F401
        names.append("amg")      # "amg-reuse" (ReusedAMGSolver) exists wherever "amg" does
    except Exception:
        pass
    return names


def direct_seconds(backend: str, mflops: float) -> float:
    """Model seconds of one numeric factorization of ``mflops`` MFlop (PARDISO's count)."""
    return mflops / DIRECT_MFLOP_PER_SECOND.get(backend, DIRECT_MFLOP_PER_SECOND["superlu"])


def amg_seconds(n_dofs: int, nnz_per_row: float, n_rhs: int = 1, element_order: int = 1) -> float:
    """Model seconds of one AMG-PCG setup plus ``n_rhs`` solves to 1e-8."""
    iterations = AMG_ITERATIONS.get(int(element_order), AMG_ITERATIONS[2])
    nnz = float(n_dofs) * float(nnz_per_row)
    return nnz * (AMG_SETUP_SECONDS_PER_NONZERO + n_rhs * iterations * AMG_ITERATION_SECONDS_PER_NONZERO)


def amg_reuse_seconds(n_dofs: int, nnz_per_row: float, n_rhs: int = 1, element_order: int = 1) -> float:
    """Model seconds of one design iteration of "amg-reuse": the hierarchy's refresh plus one
    block PCG of ``n_rhs`` load cases to 1e-6 (the build, once per mesh, is not counted)."""
    iterations = AMG_REUSE_ITERATIONS.get(int(element_order), AMG_REUSE_ITERATIONS[2])
    nnz = float(n_dofs) * float(nnz_per_row)
    return nnz * (AMG_REUSE_REFRESH_SECONDS_PER_NONZERO
                  + n_rhs * iterations * AMG_REUSE_ITERATION_SECONDS_PER_NONZERO)


def _pattern_matrix(pattern, n_dofs: int | None) -> sp.csr_matrix:
    """A CSR matrix (values 1) on a sparsity pattern given as a matrix or with indptr/indices."""
    if sp.issparse(pattern):
        indptr, indices = pattern.tocsr().indptr, pattern.tocsr().indices
    else:
        indptr, indices = pattern.indptr, pattern.indices
    n = len(indptr) - 1
    if n_dofs is not None and n != n_dofs:
        raise SolverError(f"the sparsity pattern has {n} rows but n_dofs is {n_dofs}")
    A = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, n), copy=False)
    A.has_sorted_indices = True
    return A


def _auto_choice(direct: str, n_dofs: int, dim: int, nnz_per_row: float | None, n_rhs: int,
                 element_order: int, pattern, direct_options: dict, reused: bool = True):
    """(name, solver or None, reason): the backend "auto" picks; see :func:`make_solver`."""
    from .memory import DEFAULT_NNZ_PER_ROW, factor_bytes, factor_mflops
    z = DEFAULT_NNZ_PER_ROW.get(dim, 81.0) if nnz_per_row is None else float(nnz_per_row)
    # "auto" builds the reusing AMG (make_solver): its cost per design iteration; a caller that
    # sets AMG up once for one matrix (modal LOBPCG) weighs the rebuilt model instead
    t_amg = (amg_reuse_seconds if reused else amg_seconds)(n_dofs, z, n_rhs, element_order)
    t_direct = direct_seconds(direct, factor_mflops(n_dofs, dim, z))
    need = factor_bytes(n_dofs, dim, z, backend=direct)
    budget = AUTO_FACTOR_MEMORY_FRACTION * available_memory()
    # analyse only where the direct solve can still win at its most optimistic, analysis included
    could_win = t_direct / AUTO_ESTIMATE_OVERSHOOT + ANALYSIS_SECONDS_SCALE * float(n_dofs) ** 1.25 <= t_amg
    if pattern is not None and direct == "pardiso" and could_win and need <= 4 * budget:
        solver = PardisoSolver(**direct_options)
        solver.mflops_hint = factor_mflops(n_dofs, dim, z) / AUTO_ESTIMATE_OVERSHOOT
        try:
            solver.analyse(_pattern_matrix(pattern, n_dofs))
        except FactorizationMemoryError as exc:
            return "amg", None, str(exc)
        report = solver.report
        t_direct = direct_seconds("pardiso", report["mflops"])
        need = report["memory_bytes"]
        if need > budget:
            solver.release()
            return "amg", None, (f"PARDISO's analysis: the factor needs {format_bytes(need)}, more than "
                                 f"{AUTO_FACTOR_MEMORY_FRACTION:.0%} of the {format_bytes(available_memory())} "
                                 f"available ({memory_source()})")
        if t_direct > t_amg:
            solver.release()
            return "amg", None, None
        return "pardiso", solver, None
    if need > budget:
        return "amg", None, (f"the {direct} factor of {n_dofs} DOFs would need about {format_bytes(need)} "
                             f"(estimate), more than {AUTO_FACTOR_MEMORY_FRACTION:.0%} of the "
                             f"{format_bytes(available_memory())} available ({memory_source()})")
    return (direct if t_direct <= t_amg else "amg"), None, None


def make_solver(method="auto", n_dofs: int | None = None, dim: int | None = None,
                points: np.ndarray | None = None, *, nnz_per_row: float | None = None,
                n_rhs: int = 1, element_order: int = 1, pattern=None,
                check_residuals: bool = True, reused: bool = True, **options) -> LinearSolver:
    """The one place where linear solvers are made: from a name, or an instance passed through.

    method: a :class:`LinearSolver` instance (returned as is; the other arguments are for
    building one) or a name: "auto", "direct" (the fastest installed of "pardiso", "cholmod",
    "superlu"), one of those, or "amg" (AMG-PCG, ``points`` (n_nodes, dim) give its rigid-body
    modes). ``options`` go to the backend's constructor (for "auto"/"direct", only those it
    accepts); ``check_residuals=False`` skips the residual check after each solve (inner
    solves checked elsewhere, e.g. multigrid's coarsest level).

    "auto" (needs ``n_dofs``; without it: "direct") compares a time model of one design
    iteration, measured on this machine (module constants :data:`DIRECT_MFLOP_PER_SECOND`,
    :data:`AMG_REUSE_REFRESH_SECONDS_PER_NONZERO`, :data:`AMG_REUSE_ITERATION_SECONDS_PER_NONZERO`,
    :data:`AMG_REUSE_ITERATIONS`): direct = factorization flops / rate, where the flops grow with
    ``dim`` and ``nnz_per_row`` of K (:func:`lightweight.fem.memory.factor_mflops`); AMG = the
    reused hierarchy's refresh + one block PCG of ``n_rhs`` load cases, each proportional to K's
    nonzeros, with more iterations for quadratic elements (``element_order`` 2)
    (:func:`amg_reuse_seconds`); ``reused=False`` (one matrix, one AMG setup: e.g. modal
    LOBPCG) weighs pyamg's setup and solves instead (:data:`AMG_SETUP_SECONDS_PER_NONZERO`,
    :data:`AMG_ITERATION_SECONDS_PER_NONZERO`, :data:`AMG_ITERATIONS`, :func:`amg_seconds`). It picks AMG when the factor would not fit
    :data:`AUTO_FACTOR_MEMORY_FRACTION` of the available memory, with a warning saying so.
    Given the sparsity ``pattern`` of K (a CSR matrix or an object with ``indptr``/``indices``)
    and PARDISO, it decides on PARDISO's own analysis (flops and memory peak), which the returned
    solver keeps for its first factorization when K has that pattern. A pattern whose rows are
    renumbered (a ``node_order``, :class:`~lightweight.fem.assembly.NodeOrder`) gives the
    reusing AMG its aggregation order: the mesh's, whose aggregates it was tuned on.
    """
    if isinstance(method, LinearSolver):
        return method
    if not isinstance(method, str):
        raise SolverError(f"solver must be a name ('auto', 'direct', {', '.join(_CLASSES)}) or a "
                          f"LinearSolver instance, got {type(method).__name__}")
    available = available_solvers()
    key = method.lower()
    if dim is None and points is not None:
        dim = np.asarray(points).shape[1]
    direct = next(name for name in _DIRECT_ORDER if name in available)
    built = None
    if key == "auto":
        if n_dofs is None or "amg" not in available:
            key = direct
        else:
            options_direct = _accepted(_CLASSES[direct], options)
            geometric_dim = dim if dim in (2, 3) else 3
            key, built, reason = _auto_choice(direct, int(n_dofs), geometric_dim, nnz_per_row,
                                              max(1, int(n_rhs)), element_order, pattern,
                                              options_direct, reused)
            if reason:
                warnings.warn(f"solver 'auto' chose AMG-PCG instead of {direct}: {reason}",
                              stacklevel=2)
    elif key == "direct":
        key = direct
    if key == "amg" and method.lower() == "auto":
        # AMG for a design loop: the hierarchy reused across refills (same PCG iterations as
        # a fresh pyamg setup on optimizer iterates, without the per-refill setup; measured in
        # docs/performance.md, "Unstructured meshes"); "amg" by name keeps the old solver
        key = "amg-reuse"
    if "amg" in available:
        available = available + ["amg-reuse"]      # wherever pyamg is (listed in errors too)
    if key not in _CLASSES or key not in available:
        why = "is not installed" if key in _CLASSES else "is unknown"
        raise SolverError(f"linear solver {method!r} {why}; available: "
                          f"{', '.join(['auto', 'direct'] + available)}")
    cls = _CLASSES[key]
    if key != method.lower():
        # Options meant for the backend "auto" did not pick (e.g. rtol for AMG) are dropped.
        options = _accepted(cls, options)
    if built is None and key not in ("amg", "amg-reuse"):     # AMG passes the rest to pyamg
        unknown = sorted(set(options) - set(_accepted(cls, options)))
        if unknown:
            takes = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
            raise SolverError(f"linear solver {key!r} has no option {', '.join(map(repr, unknown))}; "
                              f"it takes: {', '.join(takes) or 'none'}")
    if built is not None:
        solver = built
    elif key in ("amg", "amg-reuse"):
        solver = cls(points=points, dim=dim, **options)
    else:
        if key in ("superlu", "cholmod") and dim is not None and "dim" not in options:
            options["dim"] = dim
        solver = cls(**options)
    if not check_residuals:
        solver.check_residuals = False
    order = getattr(pattern, "node_order", None)
    if order is not None and hasattr(solver, "aggregation_order"):
        # aggregate in the mesh's node order: the aggregates of the mesh-ordered K (a
        # generator's order, boundary nodes first, aggregates well; RCM's wavefront order
        # built a 16 % larger coarse level on the 63k bracket, a random order an 11 % smaller
        # one with up to 1.8x the PCG iterations)
        solver.aggregation_order = order.rank
    return solver


def _accepted(cls, options: dict) -> dict:
    """The options that ``cls.__init__`` names (AMG's pass-through to pyamg is not a name)."""
    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items()
            if k in accepted and accepted[k].kind != inspect.Parameter.VAR_KEYWORD}
