"""Smoothed-aggregation setup of our own: the prolongators pyamg's ``smoothed_aggregation_solver``
would build, without its copies of the matrix (issue 14).

Why. :class:`~lightweight.fem.amg.ReusedHierarchy` needs the prolongators P_l only (the Galerkin
products, smoothers and coarse factor are its own). pyamg's setup held, beside our K, a zero-free
copy of K, the strength matrix (a full CSR copy with float values) and D^-1 A (another full copy,
scaled) in ``jacobi_prolongation_smoother``, plus its own R A P: ~288 B per tet4 each, and this
was the design loop's memory peak. Here nothing of size nnz(A) is allocated: every step reads A's
CSR arrays in place.

What (defaults chosen to match pyamg 5.4's for ``smoothed_aggregation_solver``):

1. strength of connection on the node graph (``block`` DOFs per node, node-major DOFs; 3 in 3D
   when 6 rigid-body modes are given, 2 in 2D with 3 modes): node J is a strong neighbour of
   node I when ||A_IJ||_F >= theta sqrt(||A_II||_F ||A_JJ||_F), pyamg's symmetric measure on
   the blocks' Frobenius norms, with pyamg's default theta = 0: every block holding a nonzero
   (explicit zeros, e.g. of eliminated DOFs, connect nothing). Only the int32 node graph is
   stored (~1/9 of A's entries), no values. Note that pyamg, handed the CSR K as we did, worked
   on the scalar DOF graph (DOF aggregates of ~47 DOFs on the bracket); node aggregates keep a
   node's three components together, the usual choice for elasticity.
2. standard (greedy, three-pass) aggregation of the nodes, the algorithm of pyamg's
   ``standard_aggregation`` (Vanek, Mandel, Brezina 1996): a node all of whose neighbours are
   free seeds an aggregate with them; leftovers join a neighbouring aggregate; what is still
   left seeds aggregates with its free neighbours. Nodes without neighbours (all components
   fixed) join none: their rows of P are empty.
3. near-null space improved as pyamg does by default (4 symmetric Gauss-Seidel sweeps on
   A B = 0, pointwise, in place on a copy of the modes), then the tentative prolongator: per
   aggregate a thin QR of the modes' rows (modified Gram-Schmidt, applied twice; a column whose
   norm falls below 1e-10 of its norm before orthogonalization is dropped, pyamg's tolerance;
   pyamg zeroes it instead, which would leave zero rows in the coarse operator). T's columns are
   orthonormal per aggregate; the coarse modes are the R factors.
4. one Jacobi step P = (I - omega D^-1 A) T, omega = (4/3) / rho(D^-1 A), rho from 30 Lanczos
   steps (full reorthogonalization) on D^-1/2 A D^-1/2 (pyamg: 15 Arnoldi/Lanczos steps with
   restarts; both estimate the top of the spectrum from below, to ~1 %). P is computed node
   by node in two Numba passes (count, fill) from A's rows and T's node blocks, so D^-1 A and
   A T never exist; P's pattern is that of |A| |T| (stored zeros only in rows of fixed DOFs of
   partly fixed nodes).
5. on large parts, aggregates matched in pairs (``pair_above``, :func:`pair_aggregates`): the
   two-level hierarchy's coarse level is solved directly, and its factor grows faster than its
   size (3D nested dissection: flops ~ n^2). Each aggregate, in turn, joins the unmatched
   neighbouring aggregate it shares the most node-graph edges with, as in the pairwise
   aggregation of Notay's AGMG (there on single unknowns with strength weights; here on the
   standard aggregates, so the rigid modes still fit each aggregate). Chosen over a
   second aggregation pass on the aggregate graph (which divides the count by ~10, too coarse
   for two levels) and over a third level (whose smoothing of a 250-entries-per-row operator
   cost more than the factor it saved at 422k tets). Measured on the 422k-tet bracket's
   optimizer iterate: coarse DOFs 22 824 -> 11 424, factor 22.7M -> 7.4M entries (30 -> 6
   GFlop), refresh 1.35 -> 0.69 s, V-cycle 164 -> 116 ms, PCG 15 -> 19 iterations (2.95 ->
   2.81 s); at 222k tets a wash (1.76 s both), at 63k a loss, hence a threshold on the coarse
   size (:data:`lightweight.fem.amg.PAIR_AGGREGATES_ABOVE_DOFS`).

Measured (docs/performance.md, "2026-12-02, fourth pass"): on the 63k-tet bracket the same
aggregates and coarse size as pyamg's, P equal to pyamg's up to the spectral estimate (0.3 %
on the 12k bracket with 20 Lanczos steps, hence 30), PCG iterations of the 4-iteration loop
[15, 16, 21, 33] both, at 222k [15, 15, 15, 15] both. Traced peak of the first analysis
(``benchmarks/tet_memory.py 3.5``) 1 968 -> 1 550 B/tet, its RSS peak growth 1 476 -> 947; the
build is no longer the solver's peak (the refresh's 1 727 is). The whole loop's RSS peak
(``tet_scaling.py --memory``) did not move (63k 3 219-3 224 -> 3 280-3 288, 222k 2 931 -> 2 905,
one run each): its peak lies elsewhere now.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

# pyamg's defaults for smoothed_aggregation_solver
THETA = 0.0
OMEGA = 4.0 / 3.0
IMPROVE_SWEEPS = 4
FIT_TOLERANCE = 1e-10
SPECTRAL_STEPS = 30


def node_rows(order: np.ndarray, b: int) -> np.ndarray:
    """The DOF rows (len(order) * b,) int64 of the nodes in ``order``, b node-major DOFs each."""
    return (b * np.asarray(order, dtype=np.int64)[:, None] + np.arange(b)).ravel()


def inverse_diagonal(A: sp.csr_matrix) -> np.ndarray:
    """1 / a_ii (n,), 0 where a_ii <= 0 (rows the Jacobi steps leave alone)."""
    diag = A.diagonal()
    return np.where(diag > 0, 1.0 / np.where(diag > 0, diag, 1.0), 0.0)


def block_size_for(modes: np.ndarray | None) -> int:
    """DOFs per node implied by the near-null space: 6 rigid modes -> 3, 3 -> 2, else 1."""
    if modes is None:
        return 1
    return {6: 3, 3: 2}.get(int(np.shape(modes)[1]), 1)


# ---------------------------------------------------------------- strength / node graph
@numba.njit(cache=True, inline="always")
def _room_for_one_more(buffer, used):
    """buffer, or a copy twice as long when its ``used`` entries fill it (an int64 list that grows)."""
    if used < buffer.shape[0]:
        return buffer
    bigger = np.empty(max(2 * used, 16), dtype=np.int64)
    bigger[:used] = buffer[:used]
    return bigger


@numba.njit(cache=True)
def _diagonal_block_norms(indptr, indices, data, b, out):
    n_nodes = out.shape[0]
    for I in range(n_nodes):
        s = 0.0
        for r in range(I * b, I * b + b):
            for p in range(indptr[r], indptr[r + 1]):
                if indices[p] // b == I:
                    s += data[p] * data[p]
        out[I] = np.sqrt(s)


@numba.njit(cache=True, parallel=True)
def _node_graph_pass(indptr, indices, data, b, theta2, dnorm, n_chunks, counts, g_ptr, g_idx, fill):
    """Neighbours J != I of each node I whose block holds a nonzero (theta2 = 0) or is strong:
    ||A_IJ||_F^2 >= theta2 ||A_II||_F ||A_JJ||_F. fill=False: counts[I + 1]; fill=True: the
    sorted neighbours into g_idx[g_ptr[I]:g_ptr[I + 1]]."""
    n_nodes = dnorm.shape[0]
    chunk = (n_nodes + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        mark = np.full(n_nodes, -1, dtype=np.int64)
        acc = np.zeros(n_nodes)
        seen = np.empty(n_nodes if n_nodes < 4096 else 4096, dtype=np.int64)
        for I in range(t * chunk, min(n_nodes, (t + 1) * chunk)):
            m = 0
            for r in range(I * b, I * b + b):
                for p in range(indptr[r], indptr[r + 1]):
                    v = data[p]
                    if v == 0.0:
                        continue
                    J = indices[p] // b
                    if J == I:
                        continue
                    if mark[J] != I:
                        mark[J] = I
                        acc[J] = 0.0
                        seen = _room_for_one_more(seen, m)
                        seen[m] = J
                        m += 1
                    acc[J] += v * v
            c = 0
            q = g_ptr[I] if fill else 0
            for s in range(m):
                J = seen[s]
                if theta2 > 0.0 and acc[J] < theta2 * dnorm[I] * dnorm[J]:
                    continue
                if fill:
                    g_idx[q + c] = J
                c += 1
            if fill:
                g_idx[q:q + c].sort()
            else:
                counts[I + 1] = c


def node_graph(A: sp.csr_matrix, b: int, theta: float = THETA):
    """(indptr, indices) of the node graph of A (b DOFs per node, node-major): strong
    neighbours per node, no diagonal, sorted, int32 indices (int64 pointers)."""
    n_nodes = A.shape[0] // b
    dnorm = np.zeros(n_nodes)
    theta2 = float(theta) ** 2
    if theta2 > 0.0:
        _diagonal_block_norms(A.indptr, A.indices, A.data, b, dnorm)
    n_chunks = max(1, min(64, n_nodes // 256))
    counts = np.zeros(n_nodes + 1, dtype=np.int64)
    dummy = np.zeros(1, dtype=np.int32)
    _node_graph_pass(A.indptr, A.indices, A.data, b, theta2, dnorm, n_chunks, counts,
                     counts, dummy, False)
    g_ptr = np.cumsum(counts)
    g_idx = np.empty(int(g_ptr[-1]), dtype=np.int32)
    _node_graph_pass(A.indptr, A.indices, A.data, b, theta2, dnorm, n_chunks, counts,
                     g_ptr, g_idx, True)
    return g_ptr, g_idx


# ---------------------------------------------------------------- aggregation
@numba.njit(cache=True)
def _standard_aggregation(g_ptr, g_idx, order, agg):
    """Greedy three-pass aggregation of a graph (no diagonal entries), visiting the nodes in
    ``order`` (a permutation). agg[i] = aggregate of node i, -1 for nodes without neighbours.
    Returns the number of aggregates."""
    n = agg.shape[0]
    FREE = -2
    ISOLATED = -1
    state = np.full(n, FREE, dtype=np.int64)      # >= 0: aggregate of pass 1 / 3
    joined = np.full(n, -1, dtype=np.int64)       # pass 2: aggregate joined
    n_agg = 0
    # pass 1: a node whose neighbours are all free seeds an aggregate with them
    for v in range(n):
        i = order[v]
        if state[i] != FREE:
            continue
        if g_ptr[i] == g_ptr[i + 1]:
            state[i] = ISOLATED
            continue
        ok = True
        for p in range(g_ptr[i], g_ptr[i + 1]):
            if state[g_idx[p]] != FREE:
                ok = False
                break
        if ok:
            state[i] = n_agg
            for p in range(g_ptr[i], g_ptr[i + 1]):
                state[g_idx[p]] = n_agg
            n_agg += 1
    # pass 2: a free node joins the first neighbour's pass-1 aggregate
    for v in range(n):
        i = order[v]
        if state[i] != FREE:
            continue
        for p in range(g_ptr[i], g_ptr[i + 1]):
            a = state[g_idx[p]]
            if a >= 0:
                joined[i] = a
                break
    for i in range(n):
        if joined[i] >= 0:
            state[i] = joined[i]
    # pass 3: what is still free seeds an aggregate with its free neighbours
    for v in range(n):
        i = order[v]
        if state[i] != FREE:
            continue
        state[i] = n_agg
        for p in range(g_ptr[i], g_ptr[i + 1]):
            j = g_idx[p]
            if state[j] == FREE:
                state[j] = n_agg
        n_agg += 1
    for i in range(n):
        agg[i] = state[i]
    return n_agg


def standard_aggregation(g_ptr: np.ndarray, g_idx: np.ndarray,
                         order: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(aggregate per node, -1 for isolated nodes; number of aggregates).

    ``order``: the nodes' visiting order (a permutation, default 0, 1, ...). Aggregates are
    numbered by their lowest node, so that coarse DOFs follow the fine ones whatever the order.
    """
    n = g_ptr.shape[0] - 1
    visit = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    if visit.shape != (n,):
        raise ValueError(f"aggregation order must have {n} entries, got {visit.shape}")
    agg = np.empty(n, dtype=np.int32)
    n_agg = int(_standard_aggregation(g_ptr, g_idx, visit, agg))
    if order is not None and n_agg:
        lowest = np.full(n_agg, n, dtype=np.int64)
        member = agg >= 0
        np.minimum.at(lowest, agg[member], np.flatnonzero(member))
        rank = np.empty(n_agg, dtype=np.int32)
        rank[np.argsort(lowest, kind="stable")] = np.arange(n_agg, dtype=np.int32)
        agg[member] = rank[agg[member]]
    return agg, n_agg


@numba.njit(cache=True)
def _pair_aggregates(g_ptr, g_idx, agg, n_agg, merged):
    """One greedy pairwise matching of the aggregates ``agg`` (per node, -1 for none) of the
    node graph (g_ptr, g_idx): each aggregate, in increasing number, joins the unmatched
    neighbouring aggregate it shares the most graph edges with (ties: the lowest number), or
    stays alone when none is left. merged[i] = the new aggregate of node i; pairs are
    numbered by their lower aggregate. Returns the number of new aggregates."""
    n = agg.shape[0]
    counts = np.zeros(n_agg + 1, dtype=np.int64)
    for i in range(n):
        if agg[i] >= 0:
            counts[agg[i] + 1] += 1
    for a in range(n_agg):
        counts[a + 1] += counts[a]
    members = np.empty(counts[n_agg], dtype=np.int64)
    fill = counts[:-1].copy()
    for i in range(n):
        a = agg[i]
        if a >= 0:
            members[fill[a]] = i
            fill[a] += 1
    mate = np.full(n_agg, -1, dtype=np.int64)
    shared = np.zeros(n_agg, dtype=np.int64)     # edges to each neighbour (reset after use)
    touched = np.empty(n_agg, dtype=np.int64)
    for a in range(n_agg):
        if mate[a] >= 0:
            continue
        n_touched = 0
        for q in range(counts[a], counts[a + 1]):
            i = members[q]
            for p in range(g_ptr[i], g_ptr[i + 1]):
                b = agg[g_idx[p]]
                if b < 0 or b == a or mate[b] >= 0:
                    continue
                if shared[b] == 0:
                    touched[n_touched] = b
                    n_touched += 1
                shared[b] += 1
        best = -1
        for t in range(n_touched):
            b = touched[t]
            if best < 0 or shared[b] > shared[best] or (shared[b] == shared[best] and b < best):
                best = b
        for t in range(n_touched):
            shared[touched[t]] = 0
        if best >= 0:
            mate[a] = best
            mate[best] = a
        else:
            mate[a] = a
    number = np.full(n_agg, -1, dtype=np.int64)
    n_new = 0
    for a in range(n_agg):
        if number[a] < 0:
            number[a] = n_new
            number[mate[a]] = n_new
            n_new += 1
    for i in range(n):
        merged[i] = number[agg[i]] if agg[i] >= 0 else -1
    return n_new


def pair_aggregates(g_ptr: np.ndarray, g_idx: np.ndarray, agg: np.ndarray,
                    n_agg: int) -> tuple[np.ndarray, int]:
    """Aggregates twice the size: neighbouring aggregates matched in pairs by the number of
    node-graph edges between them (:func:`_pair_aggregates`). (aggregate per node, count)."""
    merged = np.empty(agg.shape[0], dtype=np.int32)
    n_new = int(_pair_aggregates(g_ptr, g_idx, np.asarray(agg, dtype=np.int32), int(n_agg), merged))
    return merged, n_new


# ---------------------------------------------------------------- near-null space
@numba.njit(cache=True)
def _symmetric_gauss_seidel_zero_rhs(indptr, indices, data, rows, X, sweeps):
    """``sweeps`` symmetric (forward, backward) Gauss-Seidel sweeps on A X = 0, in place,
    forward through the rows in the order ``rows`` (a permutation), backward in reverse."""
    n, k = X.shape
    acc = np.zeros(k)
    for _ in range(sweeps):
        for direction in range(2):
            for t in range(n):
                i = rows[t] if direction == 0 else rows[n - 1 - t]
                diag = 0.0
                for j in range(k):
                    acc[j] = 0.0
                for p in range(indptr[i], indptr[i + 1]):
                    c = indices[p]
                    a = data[p]
                    if c == i:
                        diag += a
                    else:
                        for j in range(k):
                            acc[j] += a * X[c, j]
                if diag != 0.0:
                    for j in range(k):
                        X[i, j] = -acc[j] / diag


def improve_modes(A: sp.csr_matrix, modes: np.ndarray, sweeps: int = IMPROVE_SWEEPS,
                  order: np.ndarray | None = None, b: int = 1) -> np.ndarray:
    """A copy of ``modes`` after ``sweeps`` symmetric Gauss-Seidel sweeps on A B = 0 (pyamg's
    default ``improve_candidates`` on the finest level). ``order``: the nodes' visiting order
    (b DOFs per node; default the row order). Gauss-Seidel depends on it: sweeping in the
    aggregation's order makes the improved modes, and so P, those of the mesh-ordered matrix."""
    X = np.array(modes, dtype=np.float64, order="C")
    if sweeps > 0:
        n = A.shape[0]
        rows = np.arange(n, dtype=np.int64) if order is None else node_rows(order, b)
        _symmetric_gauss_seidel_zero_rhs(A.indptr, A.indices, A.data, rows, X, int(sweeps))
    return X


# ---------------------------------------------------------------- tentative prolongator
@numba.njit(cache=True, parallel=True)
def _fit_aggregates(agg_ptr, agg_nodes, B, b, tol, Q, R, rank):
    """Per aggregate a: rows of B of its nodes (b DOFs each) -> Q (orthonormal columns, in the
    node blocks Q[node] (b, k)), R[a] (k, k) with B_a = Q_a R[a]; columns whose norm drops
    below tol x their norm before orthogonalization are zero in Q and R (rank[a] counts the rest).
    Modified Gram-Schmidt applied twice."""
    n_agg = agg_ptr.shape[0] - 1
    k = B.shape[1]
    for a in numba.prange(n_agg):
        m = (agg_ptr[a + 1] - agg_ptr[a]) * b
        V = np.empty((m, k))
        for s in range(agg_ptr[a], agg_ptr[a + 1]):
            node = agg_nodes[s]
            for r in range(b):
                for j in range(k):
                    V[(s - agg_ptr[a]) * b + r, j] = B[node * b + r, j]
        Ra = np.zeros((k, k))
        keep = np.zeros(k, dtype=np.bool_)
        for j in range(k):
            norm0 = 0.0
            for r in range(m):
                norm0 += V[r, j] * V[r, j]
            norm0 = np.sqrt(norm0)
            for _ in range(2):
                for i in range(j):
                    if not keep[i]:
                        continue
                    d = 0.0
                    for r in range(m):
                        d += V[r, i] * V[r, j]
                    Ra[i, j] += d
                    for r in range(m):
                        V[r, j] -= d * V[r, i]
            norm = 0.0
            for r in range(m):
                norm += V[r, j] * V[r, j]
            norm = np.sqrt(norm)
            if norm > tol * norm0 and norm > 0.0:
                keep[j] = True
                Ra[j, j] = norm
                for r in range(m):
                    V[r, j] /= norm
            else:
                for i in range(k):
                    Ra[i, j] = 0.0 if not keep[i] else Ra[i, j]
                for r in range(m):
                    V[r, j] = 0.0
        c = 0
        for j in range(k):
            if keep[j]:
                c += 1
        rank[a] = c
        for s in range(agg_ptr[a], agg_ptr[a + 1]):
            node = agg_nodes[s]
            for r in range(b):
                for j in range(k):
                    Q[node, r, j] = V[(s - agg_ptr[a]) * b + r, j]
        for i in range(k):
            for j in range(k):
                R[a, i, j] = Ra[i, j]


def tentative(agg: np.ndarray, n_agg: int, B: np.ndarray, b: int, tol: float = FIT_TOLERANCE):
    """Tentative prolongator of aggregates ``agg`` (per node) fitted to B (n, k).

    Returns Q (n_nodes, b, k) (node blocks of T: T[node*b + r, agg[node]*k + j] = Q[node, r, j]),
    R (n_agg, k, k) (the coarse modes, T R = B on aggregated nodes) and keep (n_agg, k) bool,
    the columns kept (rank-deficient aggregates lose the dependent ones)."""
    n_nodes = agg.shape[0]
    k = B.shape[1]
    aggregated = agg >= 0
    counts = np.bincount(agg[aggregated], minlength=n_agg)
    agg_ptr = np.zeros(n_agg + 1, dtype=np.int64)
    np.cumsum(counts, out=agg_ptr[1:])
    agg_nodes = np.argsort(agg, kind="stable")[n_nodes - int(aggregated.sum()):]
    Q = np.zeros((n_nodes, b, k))
    R = np.zeros((n_agg, k, k))
    rank = np.zeros(n_agg, dtype=np.int64)
    _fit_aggregates(agg_ptr, agg_nodes.astype(np.int64), np.ascontiguousarray(B, dtype=np.float64),
                    b, tol, Q, R, rank)
    keep = np.abs(R[:, np.arange(k), np.arange(k)]) > 0
    return Q, R, keep


# ---------------------------------------------------------------- smoothed prolongator
@numba.njit(cache=True, parallel=True)
def _prolongator_pass(indptr, indices, data, b, agg, col_start, col_count, Q, column_of, scale,
                      g_ptr, g_idx, n_agg, n_chunks, counts, p_ptr, p_idx, p_val, fill):
    """P = T - scale_r (A T)_r per row r (scale_r = omega / (rho a_rr)), node by node.

    A node's rows share one pattern: the kept columns of the aggregates of the node and of its
    graph neighbours (sorted). fill=False: counts[r + 1] = entries of row r; fill=True: indices
    and values into p_ptr[r]:p_ptr[r + 1].
    """
    n_nodes = agg.shape[0]
    k = Q.shape[2]
    chunk = (n_nodes + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        pos = np.full(n_agg, -1, dtype=np.int64)        # aggregate -> its offset in the row
        aggs = np.empty(64, dtype=np.int64)
        for I in range(t * chunk, min(n_nodes, (t + 1) * chunk)):
            m = 0
            for s in range(-1, g_ptr[I + 1] - g_ptr[I]):
                J = I if s < 0 else g_idx[g_ptr[I] + s]
                a = agg[J]
                if a < 0 or pos[a] == -2:
                    continue
                pos[a] = -2
                aggs = _room_for_one_more(aggs, m)
                aggs[m] = a
                m += 1
            sel = aggs[:m]
            sel.sort()
            width = 0
            for s in range(m):
                pos[sel[s]] = width
                width += col_count[sel[s]]
            if not fill:
                for r in range(I * b, I * b + b):
                    counts[r + 1] = width
            else:
                for r in range(I * b, I * b + b):
                    q0 = p_ptr[r]
                    for s in range(m):
                        a = sel[s]
                        for j in range(col_count[a]):
                            p_idx[q0 + pos[a] + j] = col_start[a] + j
                            p_val[q0 + pos[a] + j] = 0.0
                    # - scale (A T)_r
                    for p in range(indptr[r], indptr[r + 1]):
                        v = data[p]
                        if v == 0.0:
                            continue
                        c = indices[p]
                        J = c // b
                        a = agg[J]
                        if a < 0:
                            continue
                        o = pos[a]
                        if o < 0:
                            continue                   # a block outside the graph (theta > 0)
                        w = -scale[r] * v
                        rr = c - J * b
                        for j in range(k):
                            cj = column_of[a, j]
                            if cj >= 0:
                                p_val[q0 + o + cj] += w * Q[J, rr, j]
                    # + T_r
                    a = agg[I]
                    if a >= 0:
                        o = pos[a]
                        rr = r - I * b
                        for j in range(k):
                            cj = column_of[a, j]
                            if cj >= 0:
                                p_val[q0 + o + cj] += Q[I, rr, j]
            for s in range(m):
                pos[sel[s]] = -1


def smoothed_prolongator(A: sp.csr_matrix, modes: np.ndarray, b: int, theta: float = THETA,
                         omega: float = OMEGA, improve_sweeps: int = IMPROVE_SWEEPS,
                         spectral_steps: int = SPECTRAL_STEPS, graph=None, order=None,
                         pair_above: int | None = None, max_pairings: int = 2):
    """Smoothed-aggregation prolongator of A (n, n) CSR, node-major with b DOFs per node, for
    the near-null space ``modes`` (n, k).

    Returns (P, coarse_modes, info): P (n, n_coarse) CSR with sorted int32 indices,
    coarse_modes (n_coarse, k) (T coarse_modes = improved modes on aggregated nodes), info a
    dict (aggregates ``agg`` per node, ``n_aggregates``, ``rho`` = the estimate of
    rho(D^-1 A), ``eigvec`` its Ritz vector of D^-1/2 A D^-1/2, ``uniform``: every aggregate
    kept all k columns, ``improved_modes``, ``graph`` the node graph (g_ptr, g_idx),
    ``pairings`` the pairwise matchings done). ``pair_above``: while the coarse level would
    have more than this many DOFs (k per aggregate), neighbouring aggregates are matched in
    pairs (:func:`pair_aggregates`), at most ``max_pairings`` times: a smaller coarse level for
    its direct solver."""
    from .amg import POWER_STEPS_BUILD, _lanczos_max, random_start
    n = A.shape[0]
    if n % b:
        raise ValueError(f"{n} DOFs are not a multiple of the block size {b}")
    modes = np.asarray(modes, dtype=np.float64).reshape(n, -1)
    k = modes.shape[1]
    g_ptr, g_idx = node_graph(A, b, theta) if graph is None else graph
    agg, n_agg = standard_aggregation(g_ptr, g_idx, order)
    pairings = 0
    while pair_above is not None and n_agg * k > pair_above and pairings < max_pairings:
        merged, n_merged = pair_aggregates(g_ptr, g_idx, agg, n_agg)
        if n_merged >= n_agg:           # no neighbouring aggregates left to match
            break
        agg, n_agg = merged, n_merged
        pairings += 1
    improved = improve_modes(A, modes, improve_sweeps, order, b)
    Q, R, keep = tentative(agg, n_agg, improved, b)
    coarse_modes = R[keep]                               # (n_coarse, k): kept rows of each R
    # rho(D^-1 A) by Lanczos on D^-1/2 A D^-1/2 (the same spectrum)
    dinv = inverse_diagonal(A)
    start = None
    if order is not None:
        # the random start of the mesh-ordered matrix, moved to this matrix's rows
        start = random_start(n, order)
        spectral_steps = max(spectral_steps, POWER_STEPS_BUILD)
    rho, eigvec = _lanczos_max(A, np.sqrt(dinv), start, spectral_steps)
    P = _smoothed(A, b, agg, n_agg, Q, keep, (g_ptr, g_idx), (omega / rho) * dinv)
    info = {"agg": agg, "n_aggregates": n_agg, "rho": rho, "eigvec": eigvec,
            "uniform": bool(np.all(keep)), "improved_modes": improved, "Q": Q,
            "keep": keep, "graph": (g_ptr, g_idx), "pairings": pairings}
    return P, coarse_modes, info


def _smoothed(A: sp.csr_matrix, b: int, agg: np.ndarray, n_agg: int, Q: np.ndarray,
              keep: np.ndarray, graph, scale: np.ndarray, pattern: sp.csr_matrix | None = None):
    """P = T - diag(scale) A T (CSR, sorted int32 indices) for the tentative prolongator's node
    blocks Q and kept columns ``keep`` (n_agg, k); with ``pattern`` (a P built before) its
    values only, on that pattern, or None where the rows' widths differ from it."""
    g_ptr, g_idx = graph
    n = A.shape[0]
    col_count = keep.sum(axis=1).astype(np.int64)        # columns kept per aggregate,
    col_start = np.zeros(n_agg + 1, dtype=np.int64)      # numbered consecutively
    np.cumsum(col_count, out=col_start[1:])
    column_of = np.where(keep, np.cumsum(keep, axis=1) - 1, -1).astype(np.int64)
    n_coarse = int(col_start[-1])
    n_nodes = n // b
    n_chunks = max(1, min(64, n_nodes // 256))
    counts = np.zeros(n + 1, dtype=np.int64)
    empty_i, empty_f = np.zeros(1, dtype=np.int32), np.zeros(1)
    _prolongator_pass(A.indptr, A.indices, A.data, b, agg, col_start, col_count, Q, column_of,
                      scale, g_ptr, g_idx, n_agg, n_chunks, counts, counts, empty_i, empty_f, False)
    p_ptr = np.cumsum(counts)
    if pattern is not None and (pattern.shape != (n, n_coarse)
                                or not np.array_equal(p_ptr, pattern.indptr)):
        return None          # the fill pass below writes rows at pattern's offsets: must match
    nnz = int(p_ptr[-1])
    index_type = np.int32 if max(nnz, n_coarse) < 2**31 - 1 else np.int64
    p_idx = np.empty(nnz, dtype=index_type)
    p_val = np.empty(nnz)
    _prolongator_pass(A.indptr, A.indices, A.data, b, agg, col_start, col_count, Q, column_of,
                      scale, g_ptr, g_idx, n_agg, n_chunks, counts, p_ptr, p_idx, p_val, True)
    if pattern is not None:
        return p_val if np.array_equal(p_idx, pattern.indices) else None
    P = sp.csr_matrix((p_val, p_idx, p_ptr.astype(index_type)), shape=(n, n_coarse), copy=False)
    P.has_sorted_indices = True
    return P


def resmoothed_values(A: sp.csr_matrix, P: sp.csr_matrix, agg: np.ndarray, n_agg: int,
                      modes: np.ndarray, b: int, rho: float, theta: float = THETA,
                      omega: float = OMEGA, graph=None) -> np.ndarray | None:
    """The values (P.nnz,) of the prolongator smoothed with a new matrix A (same pattern as the
    one P was built from) on the build's aggregates ``agg`` (per node, n_agg of them): the
    tentative prolongator of ``modes`` (n, k) (not improved again), one Jacobi step with
    omega / ``rho`` (rho(D^-1 A), e.g. the smoother's bound). None where the result would not
    have P's pattern (an aggregate keeping other columns). ``graph``: the build's node graph
    (g_ptr, g_idx), fixed with A's pattern at theta = 0 (else computed from A)."""
    n = A.shape[0]
    Q, _, keep = tentative(agg, n_agg, np.asarray(modes, dtype=np.float64).reshape(n, -1), b)
    dinv = inverse_diagonal(A)
    return _smoothed(A, b, agg, n_agg, Q, keep, node_graph(A, b, theta) if graph is None else graph,
                     (omega / rho) * dinv, pattern=P)
