"""Smoothed-aggregation AMG kept across design iterations: aggregates and prolongators built once.

Approach. In a SIMP loop K changes its values hundreds of times on one mesh, but pyamg's
smoothed-aggregation setup (strength of connection, aggregation, fitting the rigid-body modes,
smoothing the prolongator, Galerkin products) is rebuilt from scratch every time: 3.5 - 16 s at
240k DOFs on this shared machine (quiet / busy), and its Gauss-Seidel V-cycle runs once per load
case (34-41 PCG iterations, 20 s for three). What the design changes is
only the matrix values, so :class:`ReusedHierarchy` splits the work like a direct solver's
symbolic/numeric phases:

- once per mesh (``build``): the smoothed-aggregation prolongators of the first matrix (the
  uniform start design, i.e. a scaled solid), rigid-body modes as near-null space, by our own
  setup (:mod:`lightweight.fem.aggregation`, ``setup="lean"``, the default since issue 14:
  node aggregates, pyamg's defaults, no copy of A; pyamg's setup held the strength matrix and
  D^-1 A, two full copies of A, and was the design loop's memory peak) or by pyamg's
  ``smoothed_aggregation_solver`` (``setup="pyamg"``, or any pyamg option given; also the
  environment variable LIGHTWEIGHT_AMG_SETUP). On the brackets both give the same aggregates
  and coarse size and the same PCG iterations. We keep P_l and R_l = P_l^T and drop the rest.
- per design iteration (``refresh``): the Galerkin products A_{l+1} = R_l A_l P_l (a Numba
  numeric SpGEMM on patterns computed once; R (A P) is symmetric, so only its upper triangle
  is multiplied out and the lower one mirrored: 31 % less time for that product, and the
  coarse direct solver reads the upper triangle only), the Jacobi diagonals, each level's spectral bound
  (a few Lanczos steps warm-started from the last Ritz vector) and the coarsest level's factor.
  SIMP's contrast changes the strength of connection, so aggregates built on the solid are not
  those pyamg would pick on a later iterate; measured on real optimizer iterates (63k-tet
  bracket, iterations 1-12) the reused hierarchy needs as many PCG iterations as a fresh pyamg
  setup, so rebuilding is left as a safety net (:class:`~lightweight.fem.solvers.ReusedAMGSolver`
  rebuilds when a solve needs 3x the first count plus 10). Keeping the coarse operators of an earlier
  design and refreshing only the fine smoother (``galerkin=False``) was measured too: 110-500
  iterations against 31-50, so the Galerkin product is refreshed every time.
- two levels by default: the coarse level (about n/10 DOFs, 6 per aggregate) is factorized by
  the fastest installed sparse direct solver (symbolic phase kept). pyamg's third level (120
  DOFs at 40k fine DOFs) took PCG from 15-17 to 40-46 iterations on an iterate; with the
  block-Jacobi smoother coarse levels get here (each aggregate's six rigid-mode coefficients
  coupled) still 33-38. The coarse factor is the part that grows fastest (422k tets: 23M
  nonzeros, 0.45 s per refresh, 33 ms per solve of 3 right-hand sides).
- the V-cycle uses Chebyshev smoothing of D^-1 A (degree 2 before and after, interval
  [lambda_max / 30, 1.1 lambda_max], the choice of Adams et al. 2003 and pyamg for
  elasticity; degrees 1 / 3 took 22-24 / 13-14 iterations against 15-17 and were not faster):
  unlike Gauss-Seidel it needs only matrix products, which we do for all load cases at once
  with a Numba CSR kernel over (n, k) blocks, parallel over rows. Optionally the cycle runs in
  float32 (``single=True``); the outer PCG stays float64, so the final accuracy is unchanged.
  It was not faster here (the products' gathers, not their bytes, set the pace).

- node triples: the FE core numbers DOFs node by node and stores whole 3 x 3 node blocks, so
  rows 3i, 3i+1, 3i+2 of K share their columns, which come as whole triples; the smoothed
  prolongator P, R = P^T and A P inherit that. The products and the Galerkin products detect
  it once per pattern (:func:`rows_in_triples`) and then work on three rows at a time: one
  column index and one X row serve three rows (SpMM, 1.3-1.7x), one column lookup serves the
  nine products of a 3 x 3 block with a B node's three rows (Galerkin, 2.4-3.7x at 422k tets).
  We chose this over a BSR copy of K (pyamg and PETSc's BAIJ store blocks; a BSR SpMM was
  1.46x faster here too) because the CSR arrays are read as they are: no second copy of K
  (+194 B per tet) and no change for the direct solvers and the FE core that share them.
  Every entry receives its products in the same order as the row-by-row kernels, so the
  results are bit for bit the same.

Arrays: vectors are (n, k) blocks, k = number of right-hand sides, C order.
"""

from __future__ import annotations

import os
import warnings
import weakref

import numba
from numba.extending import overload
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .indexing import unsigned as _uidx

# Chebyshev interval [LOWER_FRACTION * lambda_max, UPPER_FACTOR * lambda_max] of D^-1 A.
CHEBYSHEV_LOWER_FRACTION = 1.0 / 30.0
CHEBYSHEV_UPPER_FACTOR = 1.1
CHEBYSHEV_DEGREE = 2
# Coarsest levels up to this many DOFs are solved by a dense Cholesky factor, larger ones by the
# fastest installed sparse direct solver.
DENSE_COARSE_MAX = 1500
# max_levels=None (amg-reuse's default): a third level when the first coarse level (after the
# pairings below) has more DOFs than this. 1.02M tets without pairing (49k coarse DOFs at two
# levels, 1k at three): per design iteration solver setup 2.6 s against 6.1 s (the coarse
# factorization), PCG 8.0 against 7.9 s (20 against 15 iterations, each with a cheaper coarse
# solve), 1 805 against 2 042 B per tet. With one pairing, parts up to ~1.6M tets stay at two levels.
THIRD_LEVEL_ABOVE_DOFS = 40_000
# The lean setup matches neighbouring finest aggregates in pairs while the coarse level would
# have more DOFs than this, at most PAIRINGS_AT_MOST times (ReusedHierarchy's
# ``pair_above="auto"``; aggregation.py, item 5): its direct factor costs ~n^2 flops.
# 422k-tet bracket (22 824 -> 11 424 coarse DOFs): refresh 1.35 -> 0.69 s, PCG 2.95 -> 2.81 s
# (15 -> 19 iterations of a cheaper V-cycle; a second pairing, 5 736 DOFs: 25 iterations, 3.13 s);
# 222k (12 834): a wash, 63k: a loss. 1.02M (49 158 -> 24 576, two levels): 12.9 s per design
# iteration on a quiet machine (19.7 s against 23.1 s with three levels, loaded). A second pairing (aggregates of
# ~84 nodes) was faster at 1M in the first iterations (14.5 s) but not robust: on the 63k
# bracket's hard fourth iterate PCG took 202 iterations against 51 with one pairing and 25
# with none, so one pairing at most (docs/performance.md).
PAIR_AGGREGATES_ABOVE_DOFS = 16_000
PAIRINGS_AT_MOST = 1
# Galerkin products R A P computed as symmetric (upper triangle multiplied out, lower mirrored)
SYMMETRIC_GALERKIN = True
# The coarse level's sparse factor in single precision (PARDISO's iparm(28)): 1.4x faster to
# factorize, 1.2x to solve, a third less memory (422k-tet bracket: 0.45 vs 0.63 s, 37 vs 44 ms,
# 189 vs 293 MB), but under SIMP contrast float32 cannot hold the coarse operator's range: over
# 60 iterations of the 63k bracket PCG took 4-8 more iterations on the six hardest iterates
# (25 -> 32, 28 -> 36), the same elsewhere. Off by default; taken automatically when the
# double-precision factor would not fit the memory (refresh: a warning, not a stop).
COARSE_SINGLE = False
# The refresh forms A P in this many blocks of rows, each multiplied into R (A P) before the
# next: A P's values (~280 B per tet4) were the design loop's memory peak
GALERKIN_ROW_BLOCKS = 4
# Lanczos steps per refresh for lambda_max(D^-1 A); the first build (no start vector) does more.
POWER_STEPS_REFRESH = 5
LANCZOS_SEED = 7          # the random start of the spectral estimates (reproducible setups)
POWER_STEPS_BUILD = 20
# Who builds the aggregates and prolongators: "lean" (lightweight.fem.aggregation, no copies of
# A) or "pyamg" (smoothed_aggregation_solver, kept for comparison; also used whenever pyamg
# options are passed)
DEFAULT_SETUP = os.environ.get("LIGHTWEIGHT_AMG_SETUP", "lean")


@numba.njit(cache=True, inline="always")
def _first_at_least(indices, left, right, value):
    """First position p in [left, right) of the sorted ``indices`` with indices[p] >= value
    (right if there is none)."""
    while left < right:
        mid = (left + right) // 2
        if indices[mid] < value:
            left = mid + 1
        else:
            right = mid
    return left


@numba.njit(cache=True, parallel=True)
def _csr_block(indptr, indices, data, X, B, Y, mode):
    """Y = A X (mode 0), Y = B - A X (mode 1) or Y = Y - A X (mode 2) for CSR A, blocks (n, k).

    The row sums are kept in scalars for k <= 3 (the load cases of one part): writing into Y
    inside the nonzero loop would make every product a load and a store (3 - 4x slower here).
    """
    n = indptr.shape[0] - 1
    k = X.shape[1]
    for i in numba.prange(n):
        if k <= 3:
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for p in range(_uidx(indptr[i]), _uidx(indptr[i + 1])):
                a = data[p]
                c = _uidx(indices[p])
                s0 += a * X[c, 0]
                if k > 1:
                    s1 += a * X[c, 1]
                if k > 2:
                    s2 += a * X[c, 2]
            _store_row(Y, B, i, mode, k, s0, s1, s2)
        else:
            if mode == 0:
                for j in range(k):
                    Y[i, j] = 0.0
            elif mode == 1:
                for j in range(k):
                    Y[i, j] = B[i, j]
            sign = 1.0 if mode == 0 else -1.0
            for p in range(indptr[i], indptr[i + 1]):
                a = sign * data[p]
                c = indices[p]
                for j in range(k):
                    Y[i, j] += a * X[c, j]


_NINE_ZEROS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_F32 = np.float32(0.0)
_NINE_ZEROS_F32 = (_F32, _F32, _F32, _F32, _F32, _F32, _F32, _F32, _F32)


def _nine_zeros(values, X):
    """The three-row kernels' nine zero sums: float32 where both the matrix values and the
    block are float32 (the single-precision V-cycle: float64 sums there made every product a
    conversion, and the kernel no faster than in float64), else float64."""
    return _NINE_ZEROS


@overload(_nine_zeros, inline="always")
def _nine_zeros_typed(values, X):
    if values.dtype == numba.types.float32 and X.dtype == numba.types.float32:
        return lambda values, X: _NINE_ZEROS_F32
    return lambda values, X: _NINE_ZEROS


@numba.njit(cache=True, inline="always")
def _add_row_times(s, a0, a1, a2, X, c, k):
    """Three rows' sums s = (s00, s01, s02, s10, ..., s22) (row r, column j at 3 r + j) plus
    a0, a1, a2 times row c of X (its first k <= 3 columns), one rounding per product added."""
    s00, s01, s02, s10, s11, s12, s20, s21, s22 = s
    x = X[c, 0]
    s00 += a0 * x
    s10 += a1 * x
    s20 += a2 * x
    if k > 1:
        x = X[c, 1]
        s01 += a0 * x
        s11 += a1 * x
        s21 += a2 * x
    if k > 2:
        x = X[c, 2]
        s02 += a0 * x
        s12 += a1 * x
        s22 += a2 * x
    return (s00, s01, s02, s10, s11, s12, s20, s21, s22)


@numba.njit(cache=True, parallel=True)
def _csr_block_triples(indptr, indices, data, X, B, Y, mode):
    """:func:`_csr_block` for k <= 3 when rows 3i, 3i+1, 3i+2 have the same columns (the three
    displacement rows of a node; the prolongator's and its transpose's rows likewise).

    The three rows are multiplied together: each column index and each X row is read once for
    three rows instead of three times, their values in three contiguous streams; every row's
    products are added in its own order, so Y equals :func:`_csr_block`'s bit for bit.
    1.5-1.7x faster on the 422k-tet bracket (K, P, P^T; node CSR without a block copy).
    """
    n_groups = (indptr.shape[0] - 1) // 3
    k = X.shape[1]
    for g in numba.prange(n_groups):
        i = 3 * g
        p0 = _uidx(indptr[i])
        p1 = _uidx(indptr[i + 1])
        p2 = _uidx(indptr[i + 2])
        s = _nine_zeros(data, X)
        for q in range(p1 - p0):
            s = _add_row_times(s, data[p0 + q], data[p1 + q], data[p2 + q], X,
                               _uidx(indices[p0 + q]), k)
        _store_row(Y, B, i, mode, k, s[0], s[1], s[2])
        _store_row(Y, B, i + 1, mode, k, s[3], s[4], s[5])
        _store_row(Y, B, i + 2, mode, k, s[6], s[7], s[8])


@numba.njit(cache=True, inline="always")
def _store_row(Y, B, i, mode, k, s0, s1, s2):
    """Row i of Y = A X (mode 0), B - A X (1) or Y - A X (2) from its row sums s0..s(k-1)."""
    if mode == 0:
        Y[i, 0] = s0
        if k > 1:
            Y[i, 1] = s1
        if k > 2:
            Y[i, 2] = s2
    elif mode == 1:
        Y[i, 0] = B[i, 0] - s0
        if k > 1:
            Y[i, 1] = B[i, 1] - s1
        if k > 2:
            Y[i, 2] = B[i, 2] - s2
    else:
        Y[i, 0] -= s0
        if k > 1:
            Y[i, 1] -= s1
        if k > 2:
            Y[i, 2] -= s2


@numba.njit(cache=True, parallel=True)
def _triples_kernel(indptr, indices, out):
    """For each group g of rows 3g, 3g+1, 3g+2: bit 0 of out[g] set if the three rows have the
    same column indices, bit 1 if row 3g's columns come as whole triples 3J, 3J+1, 3J+2."""
    n_groups = (indptr.shape[0] - 1) // 3
    for g in numba.prange(n_groups):
        p0, p1, p2, p3 = indptr[3 * g], indptr[3 * g + 1], indptr[3 * g + 2], indptr[3 * g + 3]
        same = p1 - p0 == p2 - p1 and p2 - p1 == p3 - p2
        if same:
            for q in range(p1 - p0):
                if indices[p1 + q] != indices[p0 + q] or indices[p2 + q] != indices[p0 + q]:
                    same = False
                    break
        whole = (p1 - p0) % 3 == 0
        if whole:
            for q in range(p0, p1, 3):
                c = indices[q]
                if c % 3 != 0 or indices[q + 1] != c + 1 or indices[q + 2] != c + 2:
                    whole = False
                    break
        out[g] = (1 if same else 0) + (2 if whole else 0)


# facts of a pattern (its triple structure, its diagonal's positions), keyed by the memory of
# its index arrays (SciPy wraps the same arrays in new view objects for every matrix built on a
# pattern) and holding weak references to the arrays that own that memory: while they live, no
# other pattern can sit there, and an entry goes with its pattern. The FE core keeps one
# pattern per mesh, so each O(nnz) pass runs once per mesh (and once per Galerkin pattern).
_PATTERN_CACHE: dict = {}


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _pattern_fact(A: sp.csr_matrix, what: str, compute):
    """``compute(A)`` for A's pattern, once per pattern (see _PATTERN_CACHE)."""
    indices, indptr = A.indices, A.indptr
    key = (indices.__array_interface__["data"][0], indices.shape, indices.strides, indices.dtype.str,
           indptr.__array_interface__["data"][0], indptr.shape, indptr.strides, indptr.dtype.str)
    owners = (_owner(indices), _owner(indptr))
    entry = _PATTERN_CACHE.get(key)
    if entry is None or entry[0]() is not owners[0] or entry[1]() is not owners[1]:
        for dead in [k for k, v in _PATTERN_CACHE.items() if v[0]() is None or v[1]() is None]:
            del _PATTERN_CACHE[dead]
        try:
            entry = (weakref.ref(owners[0]), weakref.ref(owners[1]), {})
        except TypeError:       # an owner that takes no weak reference: nothing is cached
            return compute(A)
        _PATTERN_CACHE[key] = entry
    facts = entry[2]
    if what not in facts:
        facts[what] = compute(A)
    return facts[what]


def _triple_structure(A: sp.csr_matrix) -> tuple[bool, bool]:
    """(rows in triples: rows 3g, 3g+1, 3g+2 have equal column indices; columns in triples:
    besides, every row's columns come as whole node triples 3J, 3J+1, 3J+2) of CSR A."""
    n = A.shape[0]
    if n % 3 or n == 0:
        return False, False

    def compute(A):
        flags = np.empty(n // 3, dtype=np.uint8)
        _triples_kernel(A.indptr, A.indices, flags)
        rows = bool(np.all(flags & 1))
        return rows, rows and bool(np.all(flags & 2))
    return _pattern_fact(A, "triples", compute)


@numba.njit(cache=True, parallel=True)
def _diagonal_kernel(indptr, indices, out):
    """out[i] = position of entry (i, i) in sorted CSR rows, -1 where it is not stored."""
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        left = _first_at_least(indices, indptr[i], indptr[i + 1], i)
        out[i] = left if left < indptr[i + 1] and indices[left] == i else -1


def csr_diagonal(A: sp.csr_matrix) -> np.ndarray:
    """A's diagonal (n,) through the diagonal positions of its pattern, found once per pattern
    (SciPy's ``diagonal()`` searches every row on every call, serially: 30 ms at 422k tets)."""
    if not A.has_sorted_indices or A.shape[0] != A.shape[1]:
        return A.diagonal()

    def compute(A):
        positions = np.empty(A.shape[0], dtype=np.int64)
        _diagonal_kernel(A.indptr, A.indices, positions)
        return positions
    positions = _pattern_fact(A, "diagonal", compute)
    return np.where(positions >= 0, A.data[positions], 0.0).astype(A.dtype, copy=False)


def rows_in_triples(A: sp.csr_matrix) -> bool:
    """Whether CSR A's rows come in triples with equal column indices (node-major DOFs whose
    node blocks are stored whole: K of the FE core, smoothed-aggregation P and P^T)."""
    return _triple_structure(A)[0]


def _product(A: sp.csr_matrix, X: np.ndarray, B: np.ndarray, Y: np.ndarray, mode: int) -> None:
    """Y = A X, B - A X or Y - A X (mode 0, 1, 2) for CSR A and (n, k) blocks: the triple-row
    kernel where A's rows allow it and k <= 3, else the row kernel (same numbers either way)."""
    if X.shape[1] <= 3 and rows_in_triples(A):
        _csr_block_triples(A.indptr, A.indices, A.data, X, B, Y, mode)
    else:
        _csr_block(A.indptr, A.indices, A.data, X, B, Y, mode)


def _spmm(A: sp.csr_matrix, X, Y):
    """Y = A X (CSR A, blocks (n, k))."""
    _product(A, X, X, Y, 0)


def _residual(A: sp.csr_matrix, X, B, R):
    """R = B - A X (all (n, k))."""
    _product(A, X, B, R, 1)


def _sub_product(A: sp.csr_matrix, D, R):
    """R -= A D (all (n, k))."""
    _product(A, D, D, R, 2)


@numba.njit(cache=True, parallel=True)
def _cheb_step(dinv, R, D, X, c_old, c_new):
    """D = c_old * D + c_new * dinv * R; X += D (the Chebyshev update, in place)."""
    n, k = R.shape
    for i in numba.prange(n):
        s = dinv[i]
        for j in range(k):
            d = c_old * D[i, j] + c_new * s * R[i, j]
            D[i, j] = d
            X[i, j] += d


# fixed row chunks of the fused PCG update's sums of squares: the same partial sums (so the
# same iteration counts) whatever the thread count
PCG_SUM_CHUNKS = 64


@numba.njit(cache=True, parallel=True)
def _pcg_update(X, R, P, AP, alpha, squares):
    """X += alpha P, R -= alpha AP column by column (the products rounded as NumPy's ``X += P *
    alpha``), and squares[j] = sum of R[:, j]^2 after the update, in one pass over the blocks
    (n, k); the squares summed over :data:`PCG_SUM_CHUNKS` fixed row chunks, then in order."""
    n, k = R.shape
    chunk = (n + PCG_SUM_CHUNKS - 1) // PCG_SUM_CHUNKS
    partial = np.zeros((PCG_SUM_CHUNKS, k))
    for c in numba.prange(PCG_SUM_CHUNKS):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            for j in range(k):
                a = alpha[j]
                X[i, j] += P[i, j] * a
                r = R[i, j] - AP[i, j] * a
                R[i, j] = r
                partial[c, j] += r * r
    for j in range(k):
        total = 0.0
        for c in range(PCG_SUM_CHUNKS):
            total += partial[c, j]
        squares[j] = total


@numba.njit(cache=True, parallel=True)
def _pcg_direction(P, Z, beta):
    """P = beta P + Z column by column, in place (rounded as NumPy's ``P *= beta; P += Z``)."""
    n, k = P.shape
    for i in numba.prange(n):
        for j in range(k):
            P[i, j] = P[i, j] * beta[j] + Z[i, j]


@numba.njit(cache=True, parallel=True)
def _spgemm_numeric(a_ptr, a_idx, a_val, b_ptr, b_idx, b_val, c_ptr, c_idx, c_val, n_cols, n_chunks):
    """C = A B on C's known pattern (CSR, sorted): the numeric half of Gustavson's product.

    Rows are split into ``n_chunks`` chunks, each with its own dense column -> position map.
    """
    n = a_ptr.shape[0] - 1
    chunk = (n + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        pos = np.full(n_cols, -1, dtype=np.int64)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            for q in range(c_ptr[i], c_ptr[i + 1]):
                pos[c_idx[q]] = q
                c_val[q] = 0.0
            for p in range(a_ptr[i], a_ptr[i + 1]):
                a = a_val[p]
                k = a_idx[p]
                for r in range(b_ptr[k], b_ptr[k + 1]):
                    c_val[pos[b_idx[r]]] += a * b_val[r]     # pos >= 0: C holds |A||B|'s pattern
            for q in range(c_ptr[i], c_ptr[i + 1]):
                pos[c_idx[q]] = -1


@numba.njit(cache=True, parallel=True)
def _spgemm_numeric_symmetric(a_ptr, a_idx, a_val, b_ptr, b_idx, b_val, c_ptr, c_idx, c_val,
                              mirror_from, n_cols, n_chunks):
    """C = A B on C's known pattern when C is symmetric (C = P^T A P): the entries on and above
    the diagonal by Gustavson's product, each starting its B row at the first column >= i
    (binary search; B's rows are sorted), then c_val[q] = c_val[mirror_from[q]] below it.
    About half the multiply-adds of :func:`_spgemm_numeric`; the sums of the upper triangle are
    the same products in the same order, so those entries are bit-identical to it.
    """
    n = a_ptr.shape[0] - 1
    chunk = (n + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        pos = np.full(n_cols, -1, dtype=np.int64)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            for q in range(c_ptr[i], c_ptr[i + 1]):
                pos[c_idx[q]] = q
                c_val[q] = 0.0
            for p in range(a_ptr[i], a_ptr[i + 1]):
                a = a_val[p]
                k = a_idx[p]
                left = _first_at_least(b_idx, b_ptr[k], b_ptr[k + 1], i)
                for r in range(left, b_ptr[k + 1]):
                    c_val[pos[b_idx[r]]] += a * b_val[r]
            for q in range(c_ptr[i], c_ptr[i + 1]):
                pos[c_idx[q]] = -1
    m = mirror_from.shape[0]       # 0: an upper-only C, nothing to mirror
    for q in numba.prange(m):
        src = mirror_from[q]
        if src >= 0:
            c_val[q] = c_val[src]


_NO_INDEX = np.empty(0, dtype=np.int32)     # the unused index arrays of a kernel's other mode


@numba.njit(cache=True, parallel=True)
def _spgemm_numeric_triples(a_first, a_last, a_idx, a_val, b_ptr, b_ip, b_idx, b_val, b_row_offset,
                            c_ptr, c_ip, c_idx, c_val, mirror_from, symmetric, upper, accumulate,
                            n_cols, n_chunks, transposed, a_pos, p_ptr):
    """:func:`_spgemm_numeric` (``symmetric``: :func:`_spgemm_numeric_symmetric`) when A's rows
    come in triples with equal columns that are whole node triples and B's rows in triples with
    equal columns (K, P, P^T and A P of the FE core's node-major DOFs; C's rows then too).
    ``upper``: C holds only its entries on and above the diagonal (a symmetric product, no
    mirror): row i + r of a triple then lacks the first r columns of row i.

    Row i of A is read from a_first[i] to a_last[i] (CSR: indptr[:-1], indptr[1:]); B's row
    k is row k - ``b_row_offset`` of the b arrays. Only the first row of each triple of B and
    C has its column indices read: they start at b_idx[b_ip[k // 3]] (c_idx[c_ip[i // 3]]);
    a plain CSR passes ip = indptr[::3], a pattern storing first rows only
    (:class:`_Product` ``compress``) its own pointers. ``accumulate``: add to C's values instead of
    overwriting them, and leave the mirror to the caller's last call: so C = A B can be summed
    over blocks of B's rows (A's rows cut to those columns) in B's row order, one block of B
    alive at a time, each entry of C receiving the same products in the same order.

    ``transposed``: A = R = P^T given by P's values (see :class:`TransposedTriples`):
    a_first / a_last per group of three rows of R, a_idx the fine nodes, a_pos where their
    3 x 3 blocks start in P's values ``a_val``, p_ptr P's indptr (for the row strides).

    A 3 x 3 block of A meets the three rows of one B node together: one column lookup serves
    nine multiply-adds instead of one. Each entry of C still receives its products in A's
    column order, one rounding each, so C equals the row-by-row kernels' bit for bit.
    """
    n_groups = a_first.shape[0] if transposed else a_first.shape[0] // 3
    shift = 1 if upper else 0
    for t in numba.prange(n_chunks):
        offset = np.full(n_cols, -1, dtype=np.int64)      # column -> offset within row i
        # chunk t takes every n_chunks-th group: a block of B's rows (a slab of the part)
        # meets a range of C's rows, which contiguous chunks would leave to one thread
        for g in range(t, n_groups, n_chunks):
            i = 3 * g
            # row i + r's entry at row i's offset o sits at c_ptr[i + r] + o (- r if upper)
            c0, c1, c2 = c_ptr[i], c_ptr[i + 1] - shift, c_ptr[i + 2] - 2 * shift
            ci = c_ip[g]
            for q in range(c_ptr[i + 1] - c0):
                offset[c_idx[ci + q]] = q
                if not accumulate:
                    c_val[c0 + q] = 0.0
                    if q >= shift:
                        c_val[c1 + q] = 0.0
                    if q >= 2 * shift:
                        c_val[c2 + q] = 0.0
            if transposed:
                p0, p1, p2 = 0, 0, 0
                q_lo, q_hi, q_step = a_first[g], a_last[g], 1
            else:
                p0, p1, p2 = a_first[i], a_first[i + 1], a_first[i + 2]
                q_lo, q_hi, q_step = 0, a_last[i] - a_first[i], 3
            for q in range(q_lo, q_hi, q_step):
                if transposed:
                    # R[i + r, 3 node + c] = P[3 node + c, i + r]: rows of P L apart
                    node = a_idx[q]
                    k = 3 * node - b_row_offset
                    pos = a_pos[q]
                    L = p_ptr[3 * node + 1] - p_ptr[3 * node]
                    u00, u01, u02 = a_val[pos], a_val[pos + L], a_val[pos + 2 * L]
                    u10, u11, u12 = a_val[pos + 1], a_val[pos + 1 + L], a_val[pos + 1 + 2 * L]
                    u20, u21, u22 = a_val[pos + 2], a_val[pos + 2 + L], a_val[pos + 2 + 2 * L]
                else:
                    k = a_idx[p0 + q] - b_row_offset          # B rows k, k + 1, k + 2
                    u00, u01, u02 = a_val[p0 + q], a_val[p0 + q + 1], a_val[p0 + q + 2]
                    u10, u11, u12 = a_val[p1 + q], a_val[p1 + q + 1], a_val[p1 + q + 2]
                    u20, u21, u22 = a_val[p2 + q], a_val[p2 + q + 1], a_val[p2 + q + 2]
                left, end = b_ptr[k], b_ptr[k + 1]
                shift_b = b_ip[k // 3] - left             # index position - value position
                if symmetric:
                    # the group's first row bounds all three; the few entries below the
                    # diagonal of rows i + 1, i + 2 this adds are overwritten by the mirror
                    # (upper: not stored, skipped below)
                    left = _first_at_least(b_idx, left + shift_b, end + shift_b, i) - shift_b
                # unsigned positions (lightweight.fem.indexing): every one below is >= 0
                d1 = _uidx(b_ptr[k + 1] - b_ptr[k])
                d2 = _uidx(b_ptr[k + 2] - b_ptr[k])
                first, last = _uidx(left), _uidx(end)
                at_index = _uidx(left + shift_b)
                uc0, uc1, uc2 = _uidx(c0), _uidx(c1), _uidx(c2)
                shift1, shift2 = _uidx(shift), _uidx(2 * shift)
                for r in range(first, last):
                    o = _uidx(offset[b_idx[at_index + (r - first)]])
                    b0, b1, b2 = b_val[r], b_val[r + d1], b_val[r + d2]
                    v = c_val[uc0 + o]
                    v += u00 * b0
                    v += u01 * b1
                    v += u02 * b2
                    c_val[uc0 + o] = v
                    if o >= shift1:
                        v = c_val[uc1 + o]
                        v += u10 * b0
                        v += u11 * b1
                        v += u12 * b2
                        c_val[uc1 + o] = v
                    if o >= shift2:
                        v = c_val[uc2 + o]
                        v += u20 * b0
                        v += u21 * b1
                        v += u22 * b2
                        c_val[uc2 + o] = v
    if symmetric and not upper and not accumulate:
        for q in numba.prange(mirror_from.shape[0]):
            src = mirror_from[q]
            if src >= 0:
                c_val[q] = c_val[src]


@numba.njit(cache=True, parallel=True)
def _mirror_values(c_val, mirror_from):
    """c_val[q] = c_val[mirror_from[q]] where mirror_from[q] >= 0 (the lower triangle)."""
    for q in numba.prange(mirror_from.shape[0]):
        src = mirror_from[q]
        if src >= 0:
            c_val[q] = c_val[src]


@numba.njit(cache=True, parallel=True)
def _row_starts_at_least(indptr, indices, first, value, out):
    """out[i] = first position p >= first[i] in row i of sorted CSR (indptr, indices) with
    indices[p] >= value (the row's end if none)."""
    for i in numba.prange(indptr.shape[0] - 1):
        out[i] = _first_at_least(indices, first[i], indptr[i + 1], value)


@numba.njit(cache=True, parallel=True)
def _spgemm_symbolic(a_ptr, a_idx, b_ptr, b_idx, n_cols, n_chunks, fill, upper, c_ptr, c_idx):
    """Pattern of |A| |B| (Gustavson, symbolic), in two passes over the same loops: without fill,
    c_ptr[i + 1] = number of distinct columns of row i; with fill (c_ptr the prefix sums), the
    columns of each row into c_idx[c_ptr[i]:c_ptr[i + 1]], sorted. ``upper``: only the columns
    j >= i of row i (B's rows are sorted: each starts at its first such column)."""
    n = a_ptr.shape[0] - 1
    chunk = (n + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        last_row = np.full(n_cols, -1, dtype=np.int64)     # column -> last row that met it
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            q = c_ptr[i] if fill else 0
            for p in range(a_ptr[i], a_ptr[i + 1]):
                k = a_idx[p]
                left = b_ptr[k]
                if upper:
                    left = _first_at_least(b_idx, left, b_ptr[k + 1], i)
                for r in range(left, b_ptr[k + 1]):
                    j = b_idx[r]
                    if last_row[j] != i:
                        last_row[j] = i
                        if fill:
                            c_idx[q] = j
                        q += 1
            if fill:
                c_idx[c_ptr[i]:q].sort()
            else:
                c_ptr[i + 1] = q


def _product_pattern(A: sp.csr_matrix, B: sp.csr_matrix, n_chunks: int,
                     upper: bool = False) -> sp.csr_matrix:
    """The pattern of A B (every structural product, no cancellation; ``upper``: its entries on
    and above the diagonal only), sorted int32 CSR whose values are a read-only zero view.
    Built by two Numba passes (count, fill) straight into int32: SciPy's product of all-ones
    copies wanted (nnz(A) + nnz(B)) ones and returned int64 indices with float64 values, ~650 B
    per tet4 at the moment of the first build's peak."""
    n, n_cols = A.shape[0], B.shape[1]
    counts = np.zeros(n + 1, dtype=np.int64)
    _spgemm_symbolic(A.indptr, A.indices, B.indptr, B.indices, n_cols, n_chunks, False, upper,
                     counts, np.empty(0, dtype=np.int64))
    indptr = np.cumsum(counts)
    nnz = int(indptr[-1])
    index_type = np.int32 if max(nnz, n_cols) < 2**31 - 1 else np.int64
    indptr = indptr.astype(index_type)
    indices = np.empty(nnz, dtype=index_type)
    _spgemm_symbolic(A.indptr, A.indices, B.indptr, B.indices, n_cols, n_chunks, True, upper,
                     indptr, indices)
    C = sp.csr_matrix((np.broadcast_to(np.zeros(1), (nnz,)), indices, indptr), shape=(n, n_cols),
                      copy=False)
    C.has_sorted_indices = True
    return C


@numba.njit(cache=True, parallel=True)
def _mirror_kernel(indptr, indices, out):
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        for q in range(indptr[i], indptr[i + 1]):
            j = indices[q]
            if j >= i:
                out[q] = -1
                continue
            out[q] = _first_at_least(indices, indptr[j], indptr[j + 1], i)   # column i in row j


def _mirror_positions(C: sp.csr_matrix) -> np.ndarray:
    """For each entry q of C (symmetric pattern, sorted rows) below the diagonal, the position of
    its transpose entry; -1 on and above the diagonal. (nnz,) int32 (int64 if nnz needs it);
    a binary search per entry, no (nnz,) temporaries (the coarse pattern has ~14 entries/tet)."""
    out = np.empty(C.nnz, dtype=np.int32 if C.nnz < 2**31 - 1 else np.int64)
    _mirror_kernel(C.indptr, C.indices, out)
    return out


@numba.njit(cache=True, parallel=True)
def _first_rows_kernel(indptr, indices, index_ptr, out):
    """out[index_ptr[g]:index_ptr[g + 1]] = the column indices of row 3g."""
    for g in numba.prange(index_ptr.shape[0] - 1):
        start = indptr[3 * g]
        for q in range(index_ptr[g + 1] - index_ptr[g]):
            out[index_ptr[g] + q] = indices[start + q]


@numba.njit(cache=True, parallel=True)
def _expand_rows_kernel(indptr, index_ptr, first, out):
    """The whole CSR indices of a pattern whose triples of rows share the first row's."""
    for g in numba.prange(index_ptr.shape[0] - 1):
        for r in range(3):
            start = indptr[3 * g + r]
            for q in range(index_ptr[g + 1] - index_ptr[g]):
                out[start + q] = first[index_ptr[g] + q]


class _Product:
    """C = A B for a fixed pair of patterns: symbolic once (SciPy), numeric per call (Numba).

    ``symmetric``: C is known to be symmetric (the Galerkin R (A P) with R = P^T): only its upper
    triangle is multiplied out, the lower one copied from it. ``upper`` (implies symmetric): C
    keeps only its upper triangle (the diagonal included; for the coarsest level, whose direct
    solver reads no more: half of C's bytes and no mirror positions). ``keep_values=False``:
    each call returns a new C with its own values and the product keeps only the pattern (``self.C``'s
    values are then a read-only zero view), for an intermediate like A P that is dead between
    refreshes (its values are 2/3 of its bytes: ~280 B per tet4).
    """

    def __init__(self, A: sp.csr_matrix, B: sp.csr_matrix, symmetric: bool = False,
                 keep_values: bool = True, upper: bool = False):
        # The symbolic product keeps every structural product: a cancellation to exactly zero
        # on this design need not be one on the next.
        self.n_chunks = max(1, min(64, A.shape[0] // 256))
        self.upper = bool(upper)
        self.first_rows = None          # (index_ptr, indices) once compressed
        self._C = None
        pattern = _product_pattern(A, B, self.n_chunks, upper=self.upper)
        self.mirror_from = _mirror_positions(pattern) if symmetric and not self.upper else None
        self.keep_values = bool(keep_values)
        if self.keep_values:
            pattern = sp.csr_matrix((np.zeros(pattern.nnz), pattern.indices, pattern.indptr),
                                    shape=pattern.shape, copy=False)
            pattern.has_sorted_indices = True
        self.C = pattern

    def in_triples(self) -> bool:
        """Whether C's rows come in triples with equal columns (then :meth:`compress` applies)."""
        return self.first_rows is not None or rows_in_triples(self.C)

    def compress(self) -> None:
        """Keep only the first row's column indices of each triple of C's rows (the others are
        equal): 1/3 of the pattern's indices (A P: ~95 B per tet4 less). Only for a pattern
        whose values are not kept and whose rows come in triples; the node-triple kernels read
        it through :meth:`pattern_arrays`; :attr:`C` is then expanded when asked for."""
        if self.first_rows is not None or self.keep_values or not rows_in_triples(self.C):
            return
        C = self.C
        widths = np.diff(C.indptr)[::3].astype(np.int64)
        index_ptr = np.zeros(len(widths) + 1, dtype=np.int64)
        np.cumsum(widths, out=index_ptr[1:])
        first = np.empty(int(index_ptr[-1]), dtype=C.indices.dtype)
        _first_rows_kernel(C.indptr, C.indices, index_ptr, first)
        self.first_rows = (index_ptr, first)
        self._shape, self._indptr = C.shape, C.indptr
        self._C = None

    @property
    def C(self) -> sp.csr_matrix:
        if self._C is not None:
            return self._C
        index_ptr, first = self.first_rows       # compressed: the whole pattern on demand
        indices = np.empty(int(self._indptr[-1]), dtype=first.dtype)
        _expand_rows_kernel(self._indptr, index_ptr, first, indices)
        C = sp.csr_matrix((np.broadcast_to(np.zeros(1), (len(indices),)), indices, self._indptr),
                          shape=self._shape, copy=False)
        C.has_sorted_indices = True
        return C

    @C.setter
    def C(self, value: sp.csr_matrix) -> None:
        self._C = value

    @property
    def shape(self) -> tuple:
        """C's shape."""
        return self._shape if self.first_rows is not None else self._C.shape

    def pattern_arrays(self):
        """(indptr per row, where each triple's first-row indices start, those indices)."""
        if self.first_rows is not None:
            return self._indptr, self.first_rows[0], self.first_rows[1]
        return self._C.indptr, self._C.indptr[::3], self._C.indices

    def __call__(self, A: sp.csr_matrix, B: sp.csr_matrix) -> sp.csr_matrix:
        C = self.C
        if not self.keep_values:
            C = sp.csr_matrix((np.empty(C.nnz), C.indices, C.indptr), shape=C.shape, copy=False)
            C.has_sorted_indices = True
        symmetric = self.upper or self.mirror_from is not None
        mirror_from = np.empty(0, np.int32) if self.mirror_from is None else self.mirror_from
        if _triple_structure(A)[1] and rows_in_triples(B):
            _spgemm_numeric_triples(A.indptr[:-1], A.indptr[1:], A.indices, A.data, B.indptr,
                                    B.indptr[::3], B.indices, B.data, 0, C.indptr, C.indptr[::3],
                                    C.indices, C.data, mirror_from, symmetric, self.upper, False,
                                    C.shape[1], self.n_chunks, False, _NO_INDEX, _NO_INDEX)
            return C
        if symmetric:
            # upper: C's rows hold exactly the columns >= i this kernel visits; nothing to mirror
            _spgemm_numeric_symmetric(A.indptr, A.indices, A.data, B.indptr, B.indices, B.data,
                                      C.indptr, C.indices, C.data, mirror_from, C.shape[1],
                                      self.n_chunks)
            return C
        _spgemm_numeric(A.indptr, A.indices, A.data, B.indptr, B.indices, B.data,
                        C.indptr, C.indices, C.data, C.shape[1], self.n_chunks)
        return C


def galerkin_in_row_blocks(AP_product: "_Product", RAP_product: "_Product", A: sp.csr_matrix,
                           P: sp.csr_matrix, R, blocks: int) -> sp.csr_matrix | None:
    """C = R (A P) on RAP_product's pattern (R: P^T as CSR or a :class:`TransposedTriples`)
    with A P formed block of fine rows by block, each block consumed before the next is formed:
    A P's values (~280 B per tet4, the refresh's peak) are alive one block at a time. Bit for
    bit the unblocked product (each entry of C receives the same products in the same order). None where the node-triple kernels do not
    apply (the caller then multiplies unblocked). C is RAP_product's own array."""
    C = RAP_product.C
    transposed = isinstance(R, TransposedTriples)
    if not (RAP_product.keep_values and _triple_structure(A)[1] and rows_in_triples(P)
            and (transposed or _triple_structure(R)[1]) and AP_product.in_triples()):
        return None
    ap_ptr, ap_ip, ap_idx = AP_product.pattern_arrays()
    n = A.shape[0]
    # cuts at node triples, splitting A P's nonzeros evenly
    cuts = np.searchsorted(ap_ptr, ap_ptr[-1] * np.arange(1, blocks) / blocks)
    bounds = np.unique(np.concatenate([[0], 3 * (cuts // 3), [n]]).astype(np.int64))
    sizes = ap_ptr[bounds[1:]] - ap_ptr[bounds[:-1]]
    values = np.empty(int(sizes.max()))
    # where each row of R (each group of three, transposed) enters the block
    r_ptr, r_idx = (R.ptr, R.node) if transposed else (R.indptr, R.indices)
    first = r_ptr[:-1].astype(np.int64)
    last = np.empty_like(first)
    symmetric = RAP_product.upper or RAP_product.mirror_from is not None
    no_mirror = np.empty(0, np.int32)
    for b in range(len(bounds) - 1):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        start, stop = int(ap_ptr[lo]), int(ap_ptr[hi])
        ptr = (ap_ptr[lo:hi + 1] - start).astype(np.int64)
        istart = int(ap_ip[lo // 3])
        ip = (ap_ip[lo // 3:hi // 3 + 1] - istart).astype(np.int64)
        idx = ap_idx[istart:int(ap_ip[hi // 3])]
        block = values[:stop - start]
        _spgemm_numeric_triples(A.indptr[lo:hi], A.indptr[lo + 1:hi + 1], A.indices, A.data,
                                P.indptr, P.indptr[::3], P.indices, P.data, 0, ptr, ip, idx,
                                block, no_mirror, False, False, False, P.shape[1],
                                AP_product.n_chunks, False, _NO_INDEX, _NO_INDEX)
        _row_starts_at_least(r_ptr, r_idx, first, hi // 3 if transposed else hi, last)
        if transposed:
            a_idx, a_val, a_pos, p_ptr = R.node, P.data, R.pos, P.indptr
        else:
            a_idx, a_val, a_pos, p_ptr = R.indices, R.data, _NO_INDEX, _NO_INDEX
        _spgemm_numeric_triples(first, last, a_idx, a_val, ptr, ip, idx, block, lo,
                                C.indptr, C.indptr[::3], C.indices, C.data, no_mirror, symmetric,
                                RAP_product.upper, b > 0, C.shape[1], RAP_product.n_chunks,
                                transposed, a_pos, p_ptr)
        first, last = last, first
    if RAP_product.mirror_from is not None:
        _mirror_values(C.data, RAP_product.mirror_from)
    return C


def spmm(A: sp.csr_matrix, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A @ X for CSR A (n, m) and a C-ordered block X (m, k) -> (n, k), Numba, parallel rows."""
    X = np.ascontiguousarray(X)
    if out is None:
        out = np.empty((A.shape[0], X.shape[1]), dtype=np.result_type(A.dtype, X.dtype))
    _spmm(A, X, out)
    return out


@numba.njit(cache=True)
def _transpose_triples_kernel(p_ptr, p_idx, n_groups, fill, t_ptr, t_node, t_pos):
    """Count (fill False: t_ptr[g + 1] += 1) or list (fill True, t_ptr the prefix sums) the
    fine nodes of each column triple g of P, in node order, with the position of their block."""
    n_nodes = (p_ptr.shape[0] - 1) // 3
    if fill:
        cursor = t_ptr[:-1].copy()
    for node in range(n_nodes):
        for p in range(p_ptr[3 * node], p_ptr[3 * node + 1], 3):
            g = p_idx[p] // 3
            if fill:
                q = cursor[g]
                t_node[q] = node
                t_pos[q] = p
                cursor[g] = q + 1
            else:
                t_ptr[g + 1] += 1


@numba.njit(cache=True, parallel=True)
def _restrict_triples(t_ptr, t_node, t_pos, p_ptr, p_val, X, Y):
    """Y = P^T X for blocks X (n_fine, k), Y (n_coarse, k) from P's values through the
    transposed index (:class:`TransposedTriples`): rows 3g..3g+2 of Y together, each row's
    products added in P^T's column order (as the CSR kernels do with an explicit P^T)."""
    n_groups = t_ptr.shape[0] - 1
    k = X.shape[1]
    for g in numba.prange(n_groups):
        i = 3 * g
        if k <= 3:
            s = _nine_zeros(p_val, X)
            for q in range(_uidx(t_ptr[g]), _uidx(t_ptr[g + 1])):
                node = _uidx(3 * t_node[q])
                pos = _uidx(t_pos[q])
                L = _uidx(p_ptr[node + _uidx(1)] - p_ptr[node])
                for r in range(_uidx(3)):
                    # P^T[i + c, 3 node + r] = P[3 node + r, i + c] for c = 0, 1, 2
                    at = pos + r * L
                    s = _add_row_times(s, p_val[at], p_val[at + _uidx(1)], p_val[at + _uidx(2)],
                                       X, node + r, k)
            _store_row(Y, X, i, 0, k, s[0], s[1], s[2])
            _store_row(Y, X, i + 1, 0, k, s[3], s[4], s[5])
            _store_row(Y, X, i + 2, 0, k, s[6], s[7], s[8])
        else:
            for c in range(3):
                for j in range(k):
                    Y[i + c, j] = 0.0
            for q in range(t_ptr[g], t_ptr[g + 1]):
                node = t_node[q]
                pos = t_pos[q]
                L = p_ptr[3 * node + 1] - p_ptr[3 * node]
                for c in range(3):
                    for r in range(3):
                        a = p_val[pos + r * L + c]
                        for j in range(k):
                            Y[i + c, j] += a * X[3 * node + r, j]


class TransposedTriples:
    """R = P^T without a copy of P's values: for each column triple g of P (rows 3g..3g+2 of
    R), the fine nodes whose 3 x 3 block of P sits in those columns, in node order, and where
    that block starts in P's values (its row 3 node; the next rows lie one row length apart).

    Applies where P's rows come in node triples with equal columns that are whole triples
    (the smoothed-aggregation P of the FE core's node-major DOFs). ``ptr`` (n_groups + 1,)
    int64, ``node`` and ``pos`` (nnz(P) / 9,) int32 (int64 if P needs it): 8 bytes per 3 x 3
    block where an explicit R held 12 per entry (~158 B per tet4 on the bracket, ~12 now).
    It holds P's pattern only: P's values may change in place (re-smoothing)."""

    def __init__(self, P: sp.csr_matrix):
        n_groups = P.shape[1] // 3
        self.shape = (P.shape[1], P.shape[0])
        self.n_groups = n_groups
        counts = np.zeros(n_groups + 1, dtype=np.int64)
        _transpose_triples_kernel(P.indptr, P.indices, n_groups, False, counts,
                                  np.empty(0, np.int32), np.empty(0, np.int32))
        self.ptr = np.cumsum(counts)
        m = int(self.ptr[-1])
        index_type = np.int32 if max(P.nnz, P.shape[0]) < 2**31 - 1 else np.int64
        self.node = np.empty(m, dtype=index_type)
        self.pos = np.empty(m, dtype=index_type)
        _transpose_triples_kernel(P.indptr, P.indices, n_groups, True, self.ptr, self.node,
                                  self.pos)

    @staticmethod
    def applies(P: sp.csr_matrix) -> bool:
        """Whether P has the node-triple structure this index needs."""
        return P.shape[1] % 3 == 0 and P.shape[0] % 3 == 0 and _triple_structure(P) == (True, True)

    def restrict(self, P: sp.csr_matrix, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """P^T X for a C-ordered block X (n_fine, k) -> (n_coarse, k)."""
        X = np.ascontiguousarray(X)
        if out is None:
            out = np.empty((self.shape[0], X.shape[1]), dtype=np.result_type(P.dtype, X.dtype))
        _restrict_triples(self.ptr, self.node, self.pos, P.indptr, P.data, X, out)
        return out

    def csr(self, P: sp.csr_matrix) -> sp.csr_matrix:
        """The explicit R = P^T (sorted int32 CSR): for symbolic products and inspection."""
        R = P.T.tocsr()
        R.sort_indices()
        return _index32(R)


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are the same memory (SciPy wraps its index arrays in new views)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.ctypes.data == b.ctypes.data


class _Level:
    """One level: operator A (CSR), prolongator P to it from the next coarser level, R = P^T
    (kept explicitly only where P lacks the node-triple structure of :class:`TransposedTriples`,
    which otherwise restricts and multiplies with P's own values)."""

    def __init__(self, A, P=None, R=None):
        self.A = A
        self.P = P
        self.transposed = None
        self._R = None
        if P is not None:
            if TransposedTriples.applies(P):
                self.transposed = TransposedTriples(P)
            else:
                self._R = R if R is not None else _index32(P.T.tocsr().sorted_indices())
        self.dinv = None
        self.lam = None
        self.eigvec = None
        self.A_cycle = None      # A in the cycle's precision (float32 copy or A itself)
        self.block_inverse = None   # block-Jacobi D^-1 (CSR) on coarse levels, else dinv
        self.AP_product = None   # symbolic A P and R (A P) of the Galerkin product, kept
        self.RAP_product = None
        self.A_pattern_nnz = -1
        # A holds its upper triangle only (the coarsest level of a symmetric Galerkin product:
        # its direct solver reads no more); :meth:`full` gives the whole matrix
        self.upper = False

    def full(self) -> sp.csr_matrix:
        """This level's operator A with both triangles (a copy if only the upper one is kept)."""
        return symmetric_from_upper(self.A) if self.upper else self.A

    @property
    def R(self) -> sp.csr_matrix | None:
        """R = P^T as CSR (built on demand where only the transposed index is kept)."""
        if self._R is not None or self.P is None:
            return self._R
        return self.transposed.csr(self.P)

    def restrict(self, X: np.ndarray) -> np.ndarray:
        """R X = P^T X for a block X (n, k)."""
        if self.transposed is not None:
            return self.transposed.restrict(self.P, X)
        return spmm(self._R, X)


class ReusedHierarchy:
    """A smoothed-aggregation hierarchy whose prolongators are built once and reused.

    ``build(A, modes)``: A (n, n) SPD CSR with eliminated Dirichlet rows (unit rows), modes
    (n, 3|6) near-null space (rigid-body modes, zero on fixed DOFs). ``refresh(A, galerkin)``
    for a new matrix on the same pattern. ``cycle(B)``: one V-cycle applied to B (n, k).
    ``single``: run the cycle in float32. ``setup``: "lean" (lightweight.fem.aggregation) or
    "pyamg"; default :data:`DEFAULT_SETUP`; pyamg options (``**pyamg_options``) imply "pyamg".
    ``pair_above`` (lean setup): match the finest aggregates in pairs while the coarse level
    would have more DOFs than this; "auto": :data:`PAIR_AGGREGATES_ABOVE_DOFS`; None: never.
    """

    def __init__(self, max_coarse: int = 500, max_levels: int | None = 2, single: bool = False,
                 degree: int = CHEBYSHEV_DEGREE, setup: str | None = None,
                 pair_above: int | str | None = None, **pyamg_options):
        self.max_coarse = int(max_coarse)
        # the lean setup's pairing of the finest aggregates: "auto" (above
        # PAIR_AGGREGATES_ABOVE_DOFS coarse DOFs), a number of DOFs, or None (never)
        self.pair_above = pair_above
        self.pairings = 0
        # None: two levels, three when the first coarse level has more than
        # THIRD_LEVEL_ABOVE_DOFS DOFs (the lean setup; pyamg's takes two)
        self.max_levels = None if max_levels is None else int(max_levels)
        self.single = bool(single)
        self.degree = int(degree)
        self.pyamg_options = pyamg_options
        setup = DEFAULT_SETUP if setup is None else setup
        if setup not in ("lean", "pyamg"):
            raise ValueError(f"setup must be 'lean' or 'pyamg', got {setup!r}")
        # pyamg's own options (strength=..., smooth=...) only mean something to pyamg's setup
        self.setup = "pyamg" if pyamg_options else setup
        self.levels: list[_Level] = []
        self.coarse_factor = None
        self.coarse_block = 1           # set by build: near-null-space columns per aggregate
        # the finest level's node visiting order for the greedy aggregation (None: 0, 1, ...;
        # the lean setup only)
        self.aggregation_order = None
        # the lean setup's finest aggregates (per node, int32, and their count), node graph
        # and DOFs per node, kept for smoothing P again with a later matrix (:meth:`resmooth`;
        # ~70 B per node, 13 B per tet4: the graph is most of it, a pass over A to rebuild)
        self.fine_aggregates = None
        self.fine_graph = None
        self.fine_block = 1
        self.resmoothed = 0

    # ------------------------------------------------------------------ setup
    def build(self, A: sp.csr_matrix, modes: np.ndarray | None,
              operator: sp.csr_matrix | None = None, drop_zeros: bool = False) -> None:
        """Aggregation and prolongators of A with near-null space ``modes`` (``self.setup``:
        ours, reading ``operator`` in place and skipping its explicit zeros, or pyamg's), then
        the first refresh with ``operator`` (default A; e.g. A with its explicit zeros kept, the
        pattern every later refill has). ``drop_zeros`` (pyamg setup): pyamg aggregates a copy of A without
        its explicit zeros (eliminated DOFs would join aggregates through them); the copy
        (~300 B per tet4) is made here and freed before the first refresh, whose coarse
        factorization is the other large allocation of the build."""
        if operator is None:
            operator = A
        if self.setup == "lean":
            self._build_lean(operator, modes)
            return
        import pyamg
        options = {"max_coarse": self.max_coarse, "max_levels": self.max_levels or 2}
        options.update(self.pyamg_options)
        if operator is None:
            operator = A
        aggregated = without_explicit_zeros(A) if drop_zeros else A
        ml = pyamg.smoothed_aggregation_solver(aggregated, B=modes, **options)
        del aggregated
        self.coarse_block = 1 if modes is None else int(np.shape(modes)[1])
        self.levels = []
        for lev in ml.levels:
            P = getattr(lev, "P", None)
            if P is not None:
                P = P.tocsr()
                P.sort_indices()
                P = _index32(P)
            self.levels.append(_Level(None, P))
        del ml
        self._single_prolongators()
        self.refresh(operator, galerkin=True, power_steps=POWER_STEPS_BUILD)

    def _build_lean(self, A: sp.csr_matrix, modes: np.ndarray | None) -> None:
        """Our own smoothed-aggregation setup (lightweight.fem.aggregation): node aggregates,
        rigid-mode tentative prolongator, one Jacobi step; no copy of A (explicit zeros are
        skipped in place, so no zero-free copy either). Coarser levels aggregate the Galerkin
        operator with the coarse modes' blocks."""
        from . import aggregation
        n = A.shape[0]
        if modes is None:
            modes = np.ones((n, 1))
        modes = np.asarray(modes, dtype=np.float64).reshape(n, -1)
        block = aggregation.block_size_for(modes)
        self.coarse_block = int(modes.shape[1])
        self.levels = []
        A_l = _index32(A)
        # pyamg's stopping rule: the finest level counts DOFs (it was handed CSR), coarser ones
        # count aggregates (its coarse operators are BSR with the modes' block size)
        limit = self.max_levels or 2
        while len(self.levels) < limit - 1 and \
                A_l.shape[0] // (block if self.levels else 1) > self.max_coarse:
            order = self.aggregation_order
            if self.levels or order is None or np.shape(order) != (A_l.shape[0] // block,):
                order = None          # node orders of the finest level only
            pair_above = None
            if not self.levels:
                pair_above = PAIR_AGGREGATES_ABOVE_DOFS if self.pair_above == "auto" \
                    else self.pair_above
            P, modes, info = aggregation.smoothed_prolongator(
                A_l, modes, block, improve_sweeps=aggregation.IMPROVE_SWEEPS if not self.levels else 0,
                order=order, pair_above=pair_above, max_pairings=PAIRINGS_AT_MOST)
            uniform = info["uniform"]
            if not self.levels:
                self.pairings = int(info["pairings"])
                self.fine_aggregates = (info["agg"], int(info["n_aggregates"]))
                self.fine_graph = info["graph"]
                self.fine_block = block
            del info
            P = _index32(P)
            lv = _Level(None, P)
            self.levels.append(lv)
            if self.max_levels is None and len(self.levels) == 1 \
                    and P.shape[1] > THIRD_LEVEL_ABOVE_DOFS:
                limit = 3      # a coarse level this large costs more to factorize than to smooth
            if len(self.levels) == limit - 1 or P.shape[1] == 0:
                break
            # the next level's operator through the refresh's own products (kept for it)
            lv.AP_product = _Product(A_l, P, keep_values=False)
            lv.A_pattern_nnz = A_l.nnz
            R = lv.R                      # explicit for the build's products only
            lv.RAP_product = _Product(R, lv.AP_product.C, symmetric=SYMMETRIC_GALERKIN)
            AP = lv.AP_product(A_l, P)
            A_l = lv.RAP_product(R, AP).copy()
            del AP, R
            lv.AP_product.compress()      # the refreshes multiply in row blocks
            if not uniform:
                block, self.coarse_block = 1, 1
            else:
                block = modes.shape[1]
        self.levels.append(_Level(None))
        # the smoother's bound from a fresh random start, as after pyamg's setup: starting it
        # from the prolongator's converged Ritz vector changed the later warm-started bounds
        # and took PCG on the 63k bracket's third iterate from 21 to 35 iterations
        self._single_prolongators()
        self.refresh(A, galerkin=True, power_steps=POWER_STEPS_BUILD)

    def _mesh_ordered_start(self, n: int) -> np.ndarray | None:
        """The finest level's Lanczos start in the aggregation's node order (None without one):
        a renumbered K then gets the smoother bounds, and so the PCG iterations, of the mesh's
        order (the estimate after 20 steps moved by 8 % with the start on a 1e-9-contrast
        random design of the 12k bracket)."""
        if self.aggregation_order is None or n % len(self.aggregation_order):
            return None
        return random_start(n, self.aggregation_order)

    @property
    def operator_complexity(self) -> float:
        """Sum of the levels' nonzeros over the finest level's (an upper-only level counted whole)."""
        return sum(2 * lv.A.nnz - lv.A.shape[0] if lv.upper else lv.A.nnz
                   for lv in self.levels) / self.levels[0].A.nnz

    def refresh(self, A: sp.csr_matrix, galerkin: bool = True,
                power_steps: int = POWER_STEPS_REFRESH, modes: np.ndarray | None = None) -> None:
        """New finest matrix A (same pattern as built); recompute the coarse operators if
        ``galerkin``; given the near-null space ``modes`` (n, k), smooth the finest prolongator
        again with A first (:meth:`resmooth`)."""
        fine = self.levels[0]
        fine.A = _index32(A)
        self._smoother_data(fine, power_steps)
        if modes is not None and galerkin:
            self.resmooth(fine.A, modes)
        if not galerkin and self.levels[-1].A is not None:
            return
        for l in range(len(self.levels) - 1):
            lv, nxt = self.levels[l], self.levels[l + 1]
            # the coarsest operator only feeds its direct solver, which reads the upper triangle
            # (PARDISO): only that is kept (the full one and PARDISO's copy of its upper half,
            # its positions and the mirror map were ~265 B per tet4)
            upper = SYMMETRIC_GALERKIN and l + 1 == len(self.levels) - 1
            # Galerkin product R A P on patterns fixed since the build: numeric phases only
            if lv.AP_product is None or lv.AP_product.shape[0] != lv.A.shape[0] \
                    or lv.A_pattern_nnz != lv.A.nnz or lv.RAP_product.upper != upper:
                lv.AP_product = _Product(lv.A, lv.P, keep_values=False)
                lv.A_pattern_nnz = lv.A.nnz
                # R A P is symmetric: half its multiply-adds (the upper triangle), mirrored
                R = lv.R                  # explicit for the symbolic product only
                lv.RAP_product = _Product(R, lv.AP_product.C, symmetric=SYMMETRIC_GALERKIN,
                                          upper=upper)
                del R
                # A P's rows come in triples: its first rows' indices serve (blocked product)
                lv.AP_product.compress()
            # the product's own array, not a copy: every refresh overwrites it in place and
            # refactorizes the coarse level from it; A P formed in blocks of rows (its values
            # were the refresh's memory peak)
            C = galerkin_in_row_blocks(lv.AP_product, lv.RAP_product, lv.A, lv.P,
                                       lv.transposed if lv.transposed is not None else lv.R,
                                       GALERKIN_ROW_BLOCKS)
            if C is None:
                AP = lv.AP_product(lv.A, lv.P)         # fresh values, freed below
                C = lv.RAP_product(lv.R, AP)
                del AP
            nxt.A = C
            nxt.upper = upper
            if l + 1 < len(self.levels) - 1:
                self._smoother_data(nxt, power_steps, block=self.coarse_block)
        coarsest = self.levels[-1].A
        if coarsest.shape[0] > DENSE_COARSE_MAX:
            self._factorize_coarsest(coarsest)
            return
        coarse = self.levels[-1].full().toarray()
        coarse = 0.5 * (coarse + coarse.T)
        try:
            self.coarse_factor = ("cholesky", sla.cho_factor(coarse, lower=True, check_finite=False))
        except np.linalg.LinAlgError:
            # a singular coarsest operator (a part with too few supports at that resolution)
            self.coarse_factor = ("pinv", np.linalg.pinv(coarse, hermitian=True))

    def _factorize_coarsest(self, coarsest: sp.csr_matrix) -> None:
        """The sparse direct factor of the coarsest operator (its upper triangle where the
        solver reads only that, else the whole matrix)."""
        # a sparse direct solver, its symbolic phase kept (the Galerkin pattern is fixed)
        from .memory import format_bytes
        from .solvers import FactorizationMemoryError, make_solver
        if self.coarse_factor is None or self.coarse_factor[0] != "sparse":
            self.coarse_factor = ("sparse", make_solver("direct", check_residuals=False,
                                                        single=COARSE_SINGLE))
        if self.levels[-1].upper and \
                not getattr(self.coarse_factor[1], "reads_upper_triangle", False):
            coarsest = symmetric_from_upper(coarsest)      # SuperLU, CHOLMOD: the whole matrix
        try:
            self.coarse_factor[1].factorize(coarsest)
        except FactorizationMemoryError:
            # A coarse factor that does not fit in double precision may in single (two
            # thirds of PARDISO's memory): a few more PCG iterations on hard iterates
            # (COARSE_SINGLE) beat stopping the run; otherwise the error stands.
            if getattr(self.coarse_factor[1], "single", True):
                raise
            report = getattr(self.coarse_factor[1], "report", None) or {}
            need = report.get("memory_bytes")
            warnings.warn(f"amg-reuse: the coarse level's factor ({coarsest.shape[0]} DOFs) "
                          f"needs {format_bytes(need) if need else 'more memory'} in double "
                          f"precision, more than is available; factorizing it in single "
                          f"precision instead (a few more PCG iterations on hard designs)",
                          stacklevel=2)
            self.coarse_factor[1].release()
            self.coarse_factor = ("sparse", make_solver("direct", check_residuals=False,
                                                        single=True))
            self.coarse_factor[1].factorize(coarsest)

    def resmooth(self, A: sp.csr_matrix, modes: np.ndarray) -> bool:
        """Smooth the finest prolongator again with A (same pattern as built): P = (I - omega
        D^-1 A) T on the build's aggregates, T from ``modes`` (n, k) (not improved again), rho
        from the smoother's current bound (call after a refresh of level 0's smoother data,
        before the Galerkin products: :meth:`refresh` with ``modes``). P's pattern is that of
        |A| |T|, fixed with A's pattern and the aggregates: its values change in place, R = P^T
        is rebuilt, the kept Galerkin patterns stay valid. False (nothing changed) without the
        lean setup's aggregates or where the new P would have another pattern."""
        if self.fine_aggregates is None or len(self.levels) < 2 or self.levels[0].lam is None:
            return False
        from . import aggregation
        lv = self.levels[0]
        agg, n_agg = self.fine_aggregates
        values = aggregation.resmoothed_values(A, lv.P, agg, n_agg, modes, self.fine_block,
                                               float(lv.lam), graph=self.fine_graph)
        if values is None:
            return False
        lv.P.data[:] = values
        del values
        if lv._R is not None:
            lv._R = _index32(lv.P.T.tocsr().sorted_indices())
        # (a transposed index reads P's new values in place: P's pattern is unchanged)
        self.resmoothed += 1
        return True

    def _single_prolongators(self) -> None:
        """In a float32 cycle the prolongators' values are kept in float32 (half their bytes,
        and the transfers run float32 sums): the Galerkin products are then those of the
        rounded P, exact for it, so the coarse operators stay SPD and consistent."""
        if not self.single:
            return
        for lv in self.levels:
            if lv.P is not None and lv.P.dtype != np.float32:
                lv.P.data = lv.P.data.astype(np.float32)
                if lv._R is not None:
                    lv._R.data = lv._R.data.astype(np.float32)

    def _smoother_data(self, lv: _Level, power_steps: int, block: int = 1) -> None:
        A = lv.A
        if self.single:
            # a float32 copy of the values on A's own index arrays (A.astype would copy those
            # too: ~100 B per tet4), refilled in place at every refresh
            kept = lv.A_cycle if lv.A_cycle is not None and lv.A_cycle is not A else None
            if kept is not None and kept.data.dtype == np.float32 and kept.nnz == A.nnz \
                    and _same_buffer(kept.indices, A.indices) and _same_buffer(kept.indptr, A.indptr):
                np.copyto(kept.data, A.data, casting="same_kind")
            else:
                lv.A_cycle = None
                kept = sp.csr_matrix((A.data.astype(np.float32), A.indices, A.indptr),
                                     shape=A.shape, copy=False)
                kept.has_sorted_indices = A.has_sorted_indices
                lv.A_cycle = kept
        else:
            lv.A_cycle = A
        lv.block_inverse = None
        if block > 1 and A.shape[0] % block == 0:
            blocks = _diagonal_blocks(A, block)
            try:
                L = np.linalg.cholesky(blocks)
            except np.linalg.LinAlgError:
                L = None
            if L is not None:
                # block Jacobi: on coarse levels each aggregate's rigid-mode coefficients (three
                # translations, three rotations of different scale) are coupled; pointwise
                # Jacobi smooths them poorly (PCG 41-49 iterations with a third level, docs)
                inv_L = np.linalg.inv(L)
                D_inv = np.einsum("bki,bkj->bij", inv_L, inv_L)        # (L L^T)^-1
                lv.block_inverse = _block_diagonal(D_inv.astype(np.float32) if self.single else D_inv)
                S = _block_diagonal(np.ascontiguousarray(np.transpose(inv_L, (0, 2, 1))))   # L^-T
                lv.dinv = np.ones(A.shape[0], dtype=np.float32 if self.single else np.float64)
                lv.lam, lv.eigvec = _lanczos_max(A, S, lv.eigvec, power_steps)
                return
        diag = csr_diagonal(A)
        dinv = np.where(diag > 0, 1.0 / np.where(diag > 0, diag, 1.0), 0.0)
        lv.dinv = dinv.astype(np.float32) if self.single else dinv
        if lv.eigvec is None and lv is self.levels[0]:
            lv.eigvec = self._mesh_ordered_start(A.shape[0])
        # lambda_max(D^-1 A): Lanczos on the symmetric D^-1/2 A D^-1/2, warm-started from the
        # last estimate's Ritz vector. Power steps underestimate it badly after a few steps
        # (2.35 against 2.60 after 12 on a solid bracket), and a Chebyshev interval below the
        # top of the spectrum amplifies those modes instead of damping them.
        lv.lam, lv.eigvec = _lanczos_max(A, np.sqrt(dinv), lv.eigvec, power_steps)

    # ------------------------------------------------------------------ cycle
    def cycle(self, B: np.ndarray) -> np.ndarray:
        """One V-cycle on B (n, k) from a zero guess -> (n, k) float64."""
        dtype = np.float32 if self.single else np.float64
        X = self._vcycle(0, np.ascontiguousarray(B, dtype=dtype))
        return X.astype(np.float64, copy=False)

    def _vcycle(self, l: int, B: np.ndarray) -> np.ndarray:
        lv = self.levels[l]
        if l == len(self.levels) - 1:
            kind, factor = self.coarse_factor
            rhs = B.astype(np.float64)
            if kind == "sparse":
                X = factor.solve(rhs)
            elif kind == "cholesky":
                X = sla.cho_solve(factor, rhs, check_finite=False)
            else:
                X = factor @ rhs
            return X.astype(B.dtype)
        A = lv.A_cycle
        X = np.zeros_like(B)
        Rr = B.copy()
        D = np.zeros_like(B)
        self._chebyshev(lv, A, X, Rr, D)
        coarse_rhs = lv.restrict(Rr).astype(B.dtype, copy=False)
        E = self._vcycle(l + 1, coarse_rhs)
        X += spmm(lv.P, E).astype(B.dtype, copy=False)
        _residual(A, X, B, Rr)
        self._chebyshev(lv, A, X, Rr, D, last_residual=False)
        return X

    def _chebyshev(self, lv, A, X, Rr, D, last_residual: bool = True) -> None:
        """``degree`` Chebyshev steps on A X = B; Rr holds B - A X on entry (and on exit if
        ``last_residual``: the pre-smoother's residual is restricted, the post-smoother's is not used)."""
        hi = CHEBYSHEV_UPPER_FACTOR * lv.lam
        lo = CHEBYSHEV_LOWER_FRACTION * lv.lam
        theta, delta = 0.5 * (hi + lo), 0.5 * (hi - lo)
        sigma = theta / delta
        rho = 1.0 / sigma
        def preconditioned(R):
            return R if lv.block_inverse is None else spmm(lv.block_inverse, R).astype(R.dtype, copy=False)

        scalar = X.dtype.type            # float32 coefficients in a float32 cycle
        _cheb_step(lv.dinv, preconditioned(Rr), D, X, scalar(0.0), scalar(1.0 / theta))
        for step in range(1, self.degree + 1):
            if step == self.degree and not last_residual:
                break
            _sub_product(A, D, Rr)   # Rr = B - A X after the last update
            if step == self.degree:
                break
            rho_new = 1.0 / (2.0 * sigma - rho)
            _cheb_step(lv.dinv, preconditioned(Rr), D, X, scalar(rho_new * rho),
                       scalar(2.0 * rho_new / delta))
            rho = rho_new


def _diagonal_blocks(A: sp.csr_matrix, b: int) -> np.ndarray:
    """The (n / b, b, b) diagonal blocks of A."""
    nb = A.shape[0] // b
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    cols = A.indices
    inside = rows // b == cols // b
    blocks = np.zeros((nb, b, b))
    blocks[rows[inside] // b, rows[inside] % b, cols[inside] % b] = A.data[inside]
    return blocks


def _block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    """CSR matrix of the block-diagonal matrix with ``blocks`` (nb, b, b)."""
    nb, b, _ = blocks.shape
    M = sp.bsr_matrix((blocks, np.arange(nb), np.arange(nb + 1)), shape=(nb * b, nb * b)).tocsr()
    M.sort_indices()
    return _index32(M)


def random_start(n: int, order: np.ndarray | None = None) -> np.ndarray:
    """The spectral estimates' reproducible random start (n,): drawn in the node visiting order
    ``order`` (node-major DOFs, n / len(order) per node) and moved to the rows it names, so a
    renumbered matrix starts from the vector its mesh-ordered twin would."""
    draw = np.random.default_rng(LANCZOS_SEED).standard_normal(n)
    if order is None:
        return draw
    b = n // len(order)
    start = np.empty(n)
    from .aggregation import node_rows
    start[node_rows(order, b)] = draw
    return start


def _lanczos_max(A: sp.csr_matrix, s, start: np.ndarray | None, steps: int):
    """(largest Ritz value, its Ritz vector) of S^T A S after ``steps`` Lanczos steps; S = diag(s)
    for a vector s, or a sparse matrix (block Jacobi: S = L^-T of the diagonal blocks' L L^T)."""
    if sp.issparse(s):
        S, ST = s, s.T.tocsr()

        def operator(v):
            return spmm(ST, spmm(A, spmm(S, v[:, None])))[:, 0]
    else:
        def operator(v):
            return s * spmm(A, (s * v)[:, None])[:, 0]
    n = A.shape[0]
    if start is None or start.shape[0] != n:
        start = random_start(n)
        steps = max(steps, POWER_STEPS_BUILD)
    steps = min(steps, n)
    V = np.empty((steps, n))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    v = start / np.linalg.norm(start)
    v_old = np.zeros(n)
    b = 0.0
    m = 0
    for j in range(steps):
        V[j] = v
        w = operator(v) - b * v_old
        alpha[j] = a = float(v @ w)
        w -= a * v
        w -= V[:j + 1].T @ (V[:j + 1] @ w)          # full reorthogonalization (few steps)
        b = float(np.linalg.norm(w))
        m = j + 1
        if b <= 1e-12 * abs(a) or j == steps - 1:
            break
        beta[j] = b
        v_old, v = v, w / b
    theta, Y = sla.eigh_tridiagonal(alpha[:m], beta[:m - 1])
    vec = V[:m].T @ Y[:, -1]
    return float(theta[-1]), vec / np.linalg.norm(vec)


def symmetric_from_upper(U: sp.csr_matrix) -> sp.csr_matrix:
    """The symmetric matrix (n, n) CSR whose upper triangle (diagonal included) is U's."""
    strict = sp.triu(U, k=1, format="csr")
    full = (U + strict.T).tocsr()
    full.sort_indices()
    return full


def without_explicit_zeros(A: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of CSR A without its stored zeros, indices as A's (int32 where A has them).

    Selected straight from A (a boolean mask and the kept entries) rather than a full copy
    compacted by SciPy's ``eliminate_zeros``, whose arrays keep their full length."""
    keep = A.data != 0
    per_row = _count_per_row(A, keep)
    indptr = np.zeros(A.shape[0] + 1, dtype=A.indptr.dtype)
    np.cumsum(per_row, out=indptr[1:])
    B = sp.csr_matrix((A.data[keep], A.indices[keep], indptr), shape=A.shape, copy=False)
    B.has_sorted_indices = A.has_sorted_indices
    return B


def fixed_rows(A: sp.csr_matrix) -> np.ndarray:
    """Boolean mask of the rows of A whose only nonzero is on the diagonal (eliminated DOFs)."""
    return _count_per_row(A, A.data != 0) == 1


def _count_per_row(A: sp.csr_matrix, mask: np.ndarray) -> np.ndarray:
    """Number of True entries of ``mask`` (A.nnz,) in each row of A, (n,) int64."""
    if A.nnz == 0:
        return np.zeros(A.shape[0], dtype=np.int64)
    starts = np.minimum(A.indptr[:-1], A.nnz - 1).astype(np.intp)
    per_row = np.add.reduceat(mask, starts, dtype=np.int64)
    per_row[np.diff(A.indptr) == 0] = 0          # reduceat gives the next entry for empty rows
    return per_row


def _index32(A: sp.csr_matrix) -> sp.csr_matrix:
    """A with int32 indices (half the index traffic of int64) when they fit."""
    if A.indices.dtype != np.int32 and A.nnz < 2**31 - 1:
        A = sp.csr_matrix((A.data, A.indices.astype(np.int32), A.indptr.astype(np.int32)),
                          shape=A.shape, copy=False)
        A.has_sorted_indices = True
    return A


def block_pcg(A: sp.csr_matrix, B: np.ndarray, X0: np.ndarray | None, precondition, rtol: float,
              maxiter: int, restarts: int = 2, R0: np.ndarray | None = None):
    """PCG for the columns of B (n, k) at once: one A @ P block product and one preconditioner
    call on the block of active columns per step.

    precondition: (n, j) block -> (n, j) block. Returns X (n, k), iterations (k,), relative
    residuals ||b - A x|| / ||b|| (k,) and a mask (k,) of columns that broke down (p^T A p <= 0).
    When the recursive residual says converged but the true one does not (rounding drift, a
    float32 preconditioner), PCG restarts from X up to ``restarts`` times. R0: B - A X0 where
    the caller has it (:func:`projected_start`), which saves the first product.
    """
    X, iters, res, broke = _block_pcg_run(A, B, X0, precondition, rtol, maxiter, R0)
    for _ in range(restarts):
        again = (res > rtol) & ~broke & np.isfinite(res)
        if not np.any(again) or iters.max() >= maxiter:
            break
        X, more, res, broke_more = _block_pcg_run(A, B, X, precondition, rtol,
                                                  maxiter - int(iters.max()))
        iters, broke = iters + more, broke | broke_more
    return X, iters, res, broke


def _block_pcg_run(A, B, X0, precondition, rtol, maxiter, R0=None):
    n, k = B.shape
    A = _index32(A)
    B = np.ascontiguousarray(B, dtype=np.float64)
    X = np.zeros((n, k)) if X0 is None else np.array(X0, dtype=float, order="C")
    b_norm = np.linalg.norm(B, axis=0)
    b_safe = np.where(b_norm > 0, b_norm, 1.0)
    R = np.empty_like(B)
    if X0 is None:
        R[:] = B
    elif R0 is not None:
        R[:] = R0
    else:
        _residual(A, X, B, R)
    iters = np.zeros(k, dtype=np.int64)
    broke = np.zeros(k, dtype=bool)
    res = np.linalg.norm(R, axis=0) / b_safe
    res[b_norm == 0] = 0.0
    X[:, b_norm == 0] = 0.0
    active = np.flatnonzero(res > rtol)
    if active.size == 0 or maxiter <= 0:
        return X, iters, res, broke
    Ra = np.ascontiguousarray(R[:, active])
    Xa = np.ascontiguousarray(X[:, active])
    Z = precondition(Ra)
    P = Z.copy()
    rz = np.einsum("ij,ij->j", Ra, Z)
    AP = np.empty_like(P)
    for _ in range(maxiter):
        _spmm(A, P, AP)
        pap = np.einsum("ij,ij->j", P, AP)
        ok = pap > 0
        broke[active[~ok]] = True
        alpha = np.where(ok, rz / np.where(ok, pap, 1.0), 0.0)
        squares = np.empty(alpha.shape[0])
        _pcg_update(Xa, Ra, P, AP, alpha, squares)      # one pass instead of five, no temporaries
        iters[active] += 1
        res[active] = np.sqrt(squares) / b_safe[active]
        keep = (res[active] > rtol) & ok & np.isfinite(res[active])
        if not np.all(keep):
            X[:, active] = Xa
            if not np.any(keep):
                break
            active = active[keep]
            Xa, Ra, P, rz = (np.ascontiguousarray(Xa[:, keep]), np.ascontiguousarray(Ra[:, keep]),
                             np.ascontiguousarray(P[:, keep]), rz[keep])
            AP = np.empty_like(P)
        Z = precondition(Ra)
        rz_new = np.einsum("ij,ij->j", Ra, Z)
        _pcg_direction(P, Z, rz_new / rz)
        rz = rz_new
    else:
        X[:, active] = Xa
    # the true residual (the recursive one drifts over many iterations)
    _residual(A, X, B, R)
    res = np.linalg.norm(R, axis=0) / b_safe
    res[b_norm == 0] = 0.0
    return X, iters, res, broke


#: relative size below which a direction of the start space counts as dependent (eigenvalues
#: of its Gram matrix V^T A V against the largest)
START_SPACE_DROP = 1e-10


def projected_start(A: sp.csr_matrix, B: np.ndarray, blocks: list) -> tuple[np.ndarray, np.ndarray]:
    """The best start for A X = B in the span of earlier solutions: X0 = V c with c minimising
    the A-norm error of every column, V = [blocks] (n, sum of their columns).

    Returns X0 (n, k) and its residual R0 = B - A X0 (n, k), formed from A V (one block
    product per block, k <= 3 columns each) without another product. Directions of V that
    the others already span (Gram eigenvalue < START_SPACE_DROP of the largest) are dropped.
    Because the first block (the caller's warm start) lies in the span, X0 is never farther
    from the solution in the A-norm than that warm start.
    """
    A = _index32(A)
    products = []
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float64)
        products.append(np.empty_like(block))
        _spmm(A, block, products[-1])
    V, W = np.hstack(blocks), np.hstack(products)
    del products
    gram = V.T @ W
    gram = 0.5 * (gram + gram.T)
    values, vectors = np.linalg.eigh(gram)
    keep = values > START_SPACE_DROP * max(values.max(initial=0.0), 0.0)
    if not np.any(keep):
        return np.ascontiguousarray(blocks[0], dtype=float), None
    basis = vectors[:, keep]
    coefficients = basis @ ((basis.T @ (V.T @ B)) / values[keep][:, None])
    X0 = V @ coefficients
    R0 = B - W @ coefficients
    return np.ascontiguousarray(X0), np.ascontiguousarray(R0)
