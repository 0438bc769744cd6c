"""Serial 2D geometric multigrid-PCG whose whole solve is one compiled call (quad grids).

Same method as :class:`~lightweight.fem.multigrid.GridMultigrid` (Amir, Aage & Lazarov 2014;
Galerkin coarse operators from the fine cell scales, Chebyshev-Jacobi smoothing, a direct
solve on the coarsest grid, float32 V-cycle inside float64 CG), and the same hierarchy: the
coarse Galerkin element matrices come from GridMultigrid's tables (``lev.G``, ``lev.corr``),
so both build the same coarse operators and take the same number of CG iterations
(tests/test_multigrid_2d.py). What differs is how the work is laid out. In 2D the problem is
small (the MBB beam 300 x 100 has 60 802 DOFs; one fine matvec is ~2 MFlop) and the general
class spent most of its time outside arithmetic: per solve 5-8x the CPU time of this one
(the same 9-44 iterations on three designs at 300 x 100), more in wall time on a busy machine.

Why this layout (measured on the 2-core machine, CPU time at 300 x 100, load 9-14):

* One compiled call per solve. The general class runs CG and the V-cycle in Python and
  launches ~40 Numba kernels per CG iteration, parallel ones, each costing 0.1-0.4 ms of
  thread wake-up when the other core is busy (docs/performance.md). Here CG, the V-cycle,
  smoothing, transfers and the coarsest solve are one ``njit`` function without a parallel
  region: no dispatch, no thread hand-off, nothing that waits for a busy core. Threads
  cannot pay at this size: a whole V-cycle is ~1.5 ms of arithmetic.
* Component planes (structure of arrays). Vectors are (2, ny+1, nx+1) planes instead of
  the node-major interleaved layout. The nodes of a row of cells are then contiguous slices
  of the planes, so the matrix-free product of a cell row is 8 x 8 fused multiply-adds per
  cell over contiguous rows, vectorised across the row's cells with no gather and no
  colouring (serial code needs none): 0.13 ms per float32 apply (0.8 ms through a gathered
  (8, nx) copy, whose 9 pointers kept LLVM from vectorising). The 9-point coarse stencils
  are 36 coefficient planes, applied as 18 shifted-row products per row (0.06 ms at
  151 x 51 nodes). Indexing is done on row views from 0, so Numba emits no negative-index
  test and the loops vectorise (the same rule made the band solve 0.26 ms instead of 0.68).
* Coarsest level by banded Cholesky, factor and solves compiled here. With the nodes
  numbered along the shorter axis first a grid operator is a band of half-width
  2(min(nx, ny) + 1) + 1: 3 952 DOFs and half-width 55 on the MBB beam's 76 x 26-node
  coarsest grid, ~6 M multiply-adds, 3.6 ms (LAPACK's pbtrf: 4.3-5.1 ms). The general class
  calls PARDISO there, which compiled code cannot call. A hierarchy whose coarsest band
  would be costly (odd cell counts stop the coarsening early) is not built (:meth:`fits`,
  MAX_BAND_WORK); the system then uses GridMultigrid.
* float32 everywhere inside the V-cycle (fine and intermediate levels; the coarsest solve
  and CG are float64): GridMultigrid's mixed-precision pattern, extended to the coarse
  levels because here they are cheap to convert and iteration counts did not change.
* Coarse operators per update: every coarse cell's element matrix is sum_pos s_pos G_pos;
  it is summed for a whole row of coarse cells at once from per-position scale planes and
  added straight into the stencil planes (2.0 ms for two levels; 6 ms through element
  matrices and a scatter). One update is ~9 ms of CPU at 300 x 100, of which the band
  factorization is 3.6 ms and the two Lanczos estimates 1.5 ms.

What was not done: reusing an older coarsest factor across design iterations (an inexact
but fixed coarse solve keeps the V-cycle symmetric, so CG would still converge) would save
most of the factorization; not measured, so not used.

Shapes: grid ``shape`` = (nx, ny) cells; public vectors are (n_dofs,) or (n_cases, n_dofs)
with node-major DOFs (dof = node*2 + comp), nodes numbered x-fastest (:mod:`lightweight.mesh.grid`).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from ..errors import SingularStiffnessError, SolverError
from .multigrid import GridMultigrid, _grid_dims

# VTK quad corners (counter-clockwise): x and y offsets of local node a
_OX = np.array([0, 1, 1, 0], dtype=np.int64)
_OY = np.array([0, 0, 1, 1], dtype=np.int64)
# Largest n * half_width^2 of the coarsest band factorization this class accepts (~5-10 ms)
MAX_BAND_WORK = 6e7


def band_cost(nodes_x: int, nodes_y: int) -> float:
    """n * half_width^2 of the banded Cholesky of a 2D grid operator (the factorization's work)."""
    n = 2 * nodes_x * nodes_y
    half = 2 * (min(nodes_x, nodes_y) + 1) + 1
    return float(n) * half * half


def to_planes(u: np.ndarray, n_nodes: int) -> np.ndarray:
    """Node-major (n_dofs,) -> component planes, flat (2 * n_nodes,) (a copy)."""
    return np.ascontiguousarray(u.reshape(n_nodes, 2).T).reshape(-1)


def from_planes(v: np.ndarray, n_nodes: int) -> np.ndarray:
    """Component planes (2 * n_nodes,) -> node-major (n_dofs,) (a copy)."""
    return np.ascontiguousarray(v.reshape(2, n_nodes).T).reshape(-1)


# ---------------------------------------------------------------------------- compiled kernels
@numba.njit(cache=True, fastmath={"contract", "reassoc"})
def _fine_apply(Ke, scale, u, out, fixed):
    """out = K u on the fine grid, fixed rows set to 0. Planes u, out (2*px*py,).

    Ke (8, 8) and scale (cy, cx) of u's dtype; fixed: plane indices of the supported DOFs
    (u must be 0 there). A row of cells reads its 8 element vectors as contiguous slices of
    the planes, so the loop over cells is the vectorised one.
    """
    cy, cx = scale.shape
    px = cx + 1
    py = cy + 1
    u3 = u.reshape(2, py, px)
    o3 = out.reshape(2, py, px)
    out[:] = 0.0
    for cj in range(cy):
        # row views indexed from 0 by the loop counter: no negative-index wraparound test
        # and few distinct pointers, so LLVM vectorises the loop over the row's cells
        # (0.13 ms per float32 apply at 300 x 100 against 0.8 ms through a gathered copy)
        s = scale[cj]
        b0, b1, t0, t1 = u3[0, cj], u3[1, cj], u3[0, cj + 1], u3[1, cj + 1]
        for a in range(4):
            for p in range(2):
                r = 2 * a + p
                k0, k1, k2, k3 = Ke[r, 0], Ke[r, 1], Ke[r, 2], Ke[r, 3]
                k4, k5, k6, k7 = Ke[r, 4], Ke[r, 5], Ke[r, 6], Ke[r, 7]
                dst = o3[p, cj + _OY[a]][_OX[a]:]
                for ci in range(cx):
                    dst[ci] += s[ci] * (k0 * b0[ci] + k1 * b1[ci] + k2 * b0[ci + 1] + k3 * b1[ci + 1]
                                        + k4 * t0[ci + 1] + k5 * t1[ci + 1] + k6 * t0[ci] + k7 * t1[ci])
    for k in fixed:
        out[k] = 0.0


@numba.njit(cache=True, fastmath={"contract", "reassoc"})
def _stencil_apply(A, x, out, px, py):
    """out = A x for a 9-point grid operator stored as planes A (2, 2, 3, 3, py, px), flat.

    A[p, q, dy+1, dx+1, j, i] couples (p, node (i, j)) with (q, node (i+dx, j+dy)); entries
    reaching outside the grid are zero, so boundary rows read a clamped neighbour row.
    """
    a6 = A.reshape(2, 2, 3, 3, py, px)
    x3 = x.reshape(2, py, px)
    o3 = out.reshape(2, py, px)
    for p in range(2):
        for j in range(py):
            jm = max(j - 1, 0)
            jp = min(j + 1, py - 1)
            o = o3[p, j]
            xa, xb, xc = x3[0, jm], x3[0, j], x3[0, jp]
            xd, xe, xf = x3[1, jm], x3[1, j], x3[1, jp]
            a = a6[p]
            c00, c01, c02 = a[0, 0, 0, j], a[0, 0, 1, j], a[0, 0, 2, j]
            c10, c11, c12 = a[0, 1, 0, j], a[0, 1, 1, j], a[0, 1, 2, j]
            c20, c21, c22 = a[0, 2, 0, j], a[0, 2, 1, j], a[0, 2, 2, j]
            d00, d01, d02 = a[1, 0, 0, j], a[1, 0, 1, j], a[1, 0, 2, j]
            d10, d11, d12 = a[1, 1, 0, j], a[1, 1, 1, j], a[1, 1, 2, j]
            d20, d21, d22 = a[1, 2, 0, j], a[1, 2, 1, j], a[1, 2, 2, j]
            for i in range(1, px - 1):
                o[i] = (c00[i] * xa[i - 1] + c01[i] * xa[i] + c02[i] * xa[i + 1]
                        + c10[i] * xb[i - 1] + c11[i] * xb[i] + c12[i] * xb[i + 1]
                        + c20[i] * xc[i - 1] + c21[i] * xc[i] + c22[i] * xc[i + 1]
                        + d00[i] * xd[i - 1] + d01[i] * xd[i] + d02[i] * xd[i + 1]
                        + d10[i] * xe[i - 1] + d11[i] * xe[i] + d12[i] * xe[i + 1]
                        + d20[i] * xf[i - 1] + d21[i] * xf[i] + d22[i] * xf[i + 1])
            for i in (0, px - 1):
                t = 0.0
                for q in range(2):
                    for dy in range(3):
                        jj = min(max(j + dy - 1, 0), py - 1)
                        for dx in range(3):
                            ii = i + dx - 1
                            if 0 <= ii < px:
                                t += a[q, dy, dx, j, i] * x3[q, jj, ii]
                o[i] = t


@numba.njit(cache=True, fastmath={"contract"})
def _chebyshev_step(X, R, AD, Dk, inv_diag, a, b, first):
    """R -= AD (unless first); Dk = a Dk + b D^-1 R; X += Dk. One pass over flat arrays."""
    if first:
        for i in range(X.size):
            d = b * inv_diag[i] * R[i]
            Dk[i] = d
            X[i] += d
    else:
        for i in range(X.size):
            r = R[i] - AD[i]
            R[i] = r
            d = a * Dk[i] + b * inv_diag[i] * r
            Dk[i] = d
            X[i] += d


@numba.njit(cache=True, fastmath={"contract"})
def _restrict(f, c, fpx, fpy, cpx, cpy, t):
    """c = P^T f (bilinear interpolation's transpose), planes; t: work (fpx,)."""
    f3 = f.reshape(2, fpy, fpx)
    c3 = c.reshape(2, cpy, cpx)
    for q in range(2):
        for J in range(cpy):
            mid = f3[q, 2 * J]
            for i in range(fpx):
                t[i] = mid[i]
            if J > 0:
                lo = f3[q, 2 * J - 1]
                for i in range(fpx):
                    t[i] += 0.5 * lo[i]
            if J < cpy - 1:
                hi = f3[q, 2 * J + 1]
                for i in range(fpx):
                    t[i] += 0.5 * hi[i]
            row = c3[q, J]
            row[0] = t[0] + 0.5 * t[1]
            for I in range(1, cpx - 1):
                row[I] = t[2 * I] + 0.5 * (t[2 * I - 1] + t[2 * I + 1])
            row[cpx - 1] = t[2 * cpx - 2] + 0.5 * t[2 * cpx - 3]


@numba.njit(cache=True, fastmath={"contract"})
def _prolong_add(c, f, alive, fpx, fpy, cpx, cpy, t):
    """f += alive * (P c), P the bilinear interpolation, planes; t: work (cpx,)."""
    c3 = c.reshape(2, cpy, cpx)
    f3 = f.reshape(2, fpy, fpx)
    a3 = alive.reshape(2, fpy, fpx)
    for q in range(2):
        for j in range(fpy):
            J = j // 2
            if j % 2 == 0:
                src = c3[q, J]
                for I in range(cpx):
                    t[I] = src[I]
            else:
                s0 = c3[q, J]
                s1 = c3[q, J + 1]
                for I in range(cpx):
                    t[I] = 0.5 * (s0[I] + s1[I])
            row = f3[q, j]
            al = a3[q, j]
            for I in range(cpx):
                row[2 * I] += al[2 * I] * t[I]
            for I in range(cpx - 1):
                row[2 * I + 1] += al[2 * I + 1] * (0.5 * (t[I] + t[I + 1]))


@numba.njit(cache=True, fastmath={"contract"})
def _band_cholesky(L):
    """In-place Cholesky of an SPD band matrix stored as L[r, k] = A[r + k, r] (lower).

    Right-looking, by columns: each column's rank-1 update of the band below it runs on
    contiguous row views. Returns -1, or the first column with a non-positive pivot.
    Measured at 3 952 DOFs, half-width 55: 3.6 ms against 4.3-5.1 ms for LAPACK's pbtrf
    (scipy.linalg.cholesky_banded), whose blocking does not pay at this width.
    """
    n, w = L.shape
    for j in range(n):
        Lj = L[j]
        d = Lj[0]
        if not d > 0.0:
            return j
        d = np.sqrt(d)
        Lj[0] = d
        m = min(w, n - j)
        inv = 1.0 / d
        for k in range(1, m):
            Lj[k] *= inv
        for k in range(1, m):
            c = Lj[k]
            Li = L[j + k]
            src = Lj[k:m]
            for t in range(m - k):
                Li[t] -= c * src[t]
    return -1


@numba.njit(cache=True, fastmath={"contract", "reassoc"})
def _band_solve(L, perm, alive, b, x, y):
    """x = alive * A^-1 b with A = L L^T, L lower band stored as L[j, k] = L[j + k, j].

    perm: plane index -> band index; b, x float32 planes; y float64 work (n,).
    """
    n, w = L.shape
    for k in range(n):
        y[perm[k]] = b[k]
    # row views indexed from 0: no wraparound test, so both loops vectorise (0.26 ms against
    # 0.68 ms per solve with 2D indexing, 3 952 DOFs, half-width 55)
    for j in range(n):                      # L y = b, by columns
        Lj = L[j]
        yj = y[j] / Lj[0]
        y[j] = yj
        m = min(w, n - j)
        yv = y[j:j + m]
        for k in range(1, m):
            yv[k] -= Lj[k] * yj
    for j in range(n - 1, -1, -1):          # L^T x = y, by rows of L^T
        Lj = L[j]
        m = min(w, n - j)
        yv = y[j:j + m]
        s = 0.0
        for k in range(1, m):
            s += Lj[k] * yv[k]
        y[j] = (y[j] - s) / Lj[0]
    for k in range(n):
        x[k] = alive[k] * y[perm[k]]


@numba.njit(cache=True)
def _apply_level(l, x, out, Ke32, scale32, fixed, stencils, soff, dims):
    if l == 0:
        _fine_apply(Ke32, scale32, x, out, fixed)
    else:
        _stencil_apply(stencils[soff[l]:soff[l + 1]], x, out, dims[l, 0], dims[l, 1])


@numba.njit(cache=True)
def _smooth(l, zero_guess, B, X, R, Dk, T, inv_diag, upper, ratio, degree,
            Ke32, scale32, fixed, stencils, soff, dims):
    """Chebyshev-Jacobi smoothing of A X = B on level l, degree matvecs (X in place)."""
    lower = upper / ratio
    theta = 0.5 * (upper + lower)
    delta = 0.5 * (upper - lower)
    sigma = theta / delta
    rho = 1.0 / sigma
    if zero_guess:
        X[:] = 0.0
        R[:] = B
    else:
        _apply_level(l, X, T, Ke32, scale32, fixed, stencils, soff, dims)
        for i in range(B.size):
            R[i] = B[i] - T[i]
    _chebyshev_step(X, R, T, Dk, inv_diag, np.float32(0.0), np.float32(1.0 / theta), True)
    for _ in range(degree - 1):
        _apply_level(l, Dk, T, Ke32, scale32, fixed, stencils, soff, dims)
        rho_new = 1.0 / (2.0 * sigma - rho)
        _chebyshev_step(X, R, T, Dk, inv_diag, np.float32(rho_new * rho),
                        np.float32(2.0 * rho_new / delta), False)
        rho = rho_new


@numba.njit(cache=True)
def _vcycle(r, z, VB, VX, VR, VD, VT, voff, inv_diag, alive, upper, ratio, degree, dims,
            Ke32, scale32, fixed, stencils, soff, band, perm, band_work, row_work):
    """z = one V-cycle applied to r (float64 planes of the fine grid, 0 on fixed DOFs)."""
    n_levels = dims.shape[0]
    B0 = VB[voff[0]:voff[1]]
    for i in range(r.size):
        B0[i] = r[i]
    for l in range(n_levels - 1):
        s, e = voff[l], voff[l + 1]
        B, X, R, Dk, T = VB[s:e], VX[s:e], VR[s:e], VD[s:e], VT[s:e]
        _smooth(l, True, B, X, R, Dk, T, inv_diag[s:e], upper[l], ratio, degree,
                Ke32, scale32, fixed, stencils, soff, dims)
        _apply_level(l, X, T, Ke32, scale32, fixed, stencils, soff, dims)
        for i in range(B.size):
            R[i] = B[i] - T[i]
        _restrict(R, VB[e:voff[l + 2]], dims[l, 0], dims[l, 1], dims[l + 1, 0], dims[l + 1, 1],
                  row_work)
    c = n_levels - 1
    _band_solve(band, perm, alive[voff[c]:voff[c + 1]], VB[voff[c]:voff[c + 1]],
                VX[voff[c]:voff[c + 1]], band_work)
    for l in range(n_levels - 2, -1, -1):
        s, e = voff[l], voff[l + 1]
        X = VX[s:e]
        _prolong_add(VX[e:voff[l + 2]], X, alive[s:e], dims[l, 0], dims[l, 1],
                     dims[l + 1, 0], dims[l + 1, 1], row_work)
        _smooth(l, False, VB[s:e], X, VR[s:e], VD[s:e], VT[s:e], inv_diag[s:e], upper[l], ratio,
                degree, Ke32, scale32, fixed, stencils, soff, dims)
    X0 = VX[voff[0]:voff[1]]
    for i in range(z.size):
        z[i] = X0[i]


@numba.njit(cache=True, fastmath={"contract", "reassoc"})
def _dot(a, b):
    t = 0.0
    for i in range(a.size):
        t += a[i] * b[i]
    return t


@numba.njit(cache=True)
def _pcg(b, x, rtol, maxiter, Ke64, scale64, VB, VX, VR, VD, VT, voff, inv_diag, alive,
         upper, ratio, degree, dims, Ke32, scale32, fixed, stencils, soff, band, perm,
         band_work, row_work):
    """MG-preconditioned CG on K x = b (float64 planes, 0 on fixed DOFs); x: initial guess, in place.

    Returns (iterations, ||r|| / ||b||, converged).
    """
    n = b.size
    r = np.empty(n)
    ap = np.empty(n)
    z = np.empty(n)
    _fine_apply(Ke64, scale64, x, ap, fixed)
    for i in range(n):
        r[i] = b[i] - ap[i]
    bnorm = np.sqrt(_dot(b, b))
    if bnorm == 0.0:
        x[:] = 0.0
        return 0, 0.0, True
    rnorm = np.sqrt(_dot(r, r))
    if rnorm <= rtol * bnorm:
        return 0, rnorm / bnorm, True
    _vcycle(r, z, VB, VX, VR, VD, VT, voff, inv_diag, alive, upper, ratio, degree, dims,
            Ke32, scale32, fixed, stencils, soff, band, perm, band_work, row_work)
    p = z.copy()
    rz = _dot(r, z)
    for it in range(1, maxiter + 1):
        _fine_apply(Ke64, scale64, p, ap, fixed)
        pap = _dot(p, ap)
        alpha = rz / pap if pap != 0.0 else 0.0
        for i in range(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * ap[i]
        rnorm = np.sqrt(_dot(r, r))
        if rnorm <= rtol * bnorm:
            return it, rnorm / bnorm, True
        _vcycle(r, z, VB, VX, VR, VD, VT, voff, inv_diag, alive, upper, ratio, degree, dims,
                Ke32, scale32, fixed, stencils, soff, band, perm, band_work, row_work)
        rz_new = _dot(r, z)
        beta = rz_new / rz if rz != 0.0 else 0.0
        for i in range(n):
            p[i] = z[i] + beta * p[i]
        rz = rz_new
    return maxiter, rnorm / bnorm, False


@numba.njit(cache=True)
def _scatter_stencil(Ke_cells, cx, cy, A):
    """A (2, 2, 3, 3, py, px) += the element matrices Ke_cells (cx*cy, 8, 8) of the grid's cells."""
    for e in range(Ke_cells.shape[0]):
        ci = e % cx
        cj = e // cx
        for a in range(4):
            ia = ci + _OX[a]
            ja = cj + _OY[a]
            for b in range(4):
                dx = _OX[b] - _OX[a] + 1
                dy = _OY[b] - _OY[a] + 1
                for p in range(2):
                    for q in range(2):
                        A[p, q, dy, dx, ja, ia] += Ke_cells[e, 2 * a + p, 2 * b + q]


@numba.njit(cache=True, fastmath={"contract"})
def _galerkin_planes(S, G, A):
    """A (2, 2, 3, 3, py, px) = sum over coarse cells of their Galerkin element matrices.

    S: (f*f, ccy, ccx) the scales of the fine cell at position pos = x + f*y inside each
    coarse cell; G: (f*f, 64) the tables Q_pos^T Ke Q_pos (GridMultigrid's ``lev.G``). Entry
    t of the element matrix of every coarse cell of a row is sum_pos G[pos, t] S[pos] and is
    added straight into its stencil plane: contiguous rows, so the loops vectorise, and no
    element matrices are stored for the level.
    """
    n_pos, ccy, ccx = S.shape
    py, px = A.shape[4], A.shape[5]
    n_nodes = px * py
    # flat offset in A of entry t = (2a+p)*8 + 2b+q of the coarse cell at node (0, 0)
    where = np.empty(64, dtype=np.int64)
    for a in range(4):
        for b in range(4):
            dx = _OX[b] - _OX[a] + 1
            dy = _OY[b] - _OY[a] + 1
            for p in range(2):
                for q in range(2):
                    plane = ((p * 2 + q) * 3 + dy) * 3 + dx
                    where[(2 * a + p) * 8 + 2 * b + q] = plane * n_nodes + _OY[a] * px + _OX[a]
    flat = A.reshape(-1)
    flat[:] = 0.0
    for J in range(ccy):
        for t in range(64):
            start = where[t] + J * px
            dst = flat[start:start + ccx]
            for pos in range(n_pos):
                g = G[pos, t]
                src = S[pos, J]
                for I in range(ccx):
                    dst[I] += g * src[I]


@numba.njit(cache=True)
def _scatter_cells_planes(Ke_cells, cell_ids, cx, A):
    """A += the element matrices Ke_cells (m, 8, 8) of the coarse cells cell_ids (m,); cx cells per row."""
    for m in range(Ke_cells.shape[0]):
        e = cell_ids[m]
        ci = e % cx
        cj = e // cx
        for a in range(4):
            ia = ci + _OX[a]
            ja = cj + _OY[a]
            for b in range(4):
                dx = _OX[b] - _OX[a] + 1
                dy = _OY[b] - _OY[a] + 1
                for p in range(2):
                    for q in range(2):
                        A[p, q, dy, dx, ja, ia] += Ke_cells[m, 2 * a + p, 2 * b + q]


@numba.njit(cache=True)
def _lanczos_planes(A, sq, px, py, v, alphas, betas):
    """Lanczos on D^-1/2 A D^-1/2 (sq = D^-1/2, planes) from the unit vector v (overwritten).

    Fills alphas (steps,) and betas (steps,) of the tridiagonal matrix; returns its size.
    """
    n = v.size
    v_old = np.zeros(n)
    w = np.empty(n)
    x = np.empty(n)
    beta = 0.0
    k = 0
    for _ in range(alphas.size):
        for i in range(n):
            x[i] = sq[i] * v[i]
        _stencil_apply(A, x, w, px, py)
        alpha = 0.0
        for i in range(n):
            w[i] *= sq[i]
            alpha += v[i] * w[i]
        norm2 = 0.0
        for i in range(n):
            w[i] -= alpha * v[i] + beta * v_old[i]
            norm2 += w[i] * w[i]
        alphas[k] = alpha
        k += 1
        beta = np.sqrt(norm2)
        if beta < 1e-14 * abs(alpha):
            break
        betas[k - 1] = beta
        for i in range(n):
            v_old[i] = v[i]
            v[i] = w[i] / beta
    return k


@numba.njit(cache=True)
def _zero_dead_planes(A, alive, diag):
    """Zero the couplings of dead DOFs (alive == 0) in A (2,2,3,3,py,px); diag (2,py,px) out."""
    py, px = A.shape[4], A.shape[5]
    for p in range(2):
        for j in range(py):
            for i in range(px):
                diag[p, j, i] = A[p, p, 1, 1, j, i]
                for q in range(2):
                    for dy in range(3):
                        jj = j + dy - 1
                        for dx in range(3):
                            ii = i + dx - 1
                            if jj < 0 or jj >= py or ii < 0 or ii >= px:
                                A[p, q, dy, dx, j, i] = 0.0
                            elif alive[p, j, i] == 0.0 or alive[q, jj, ii] == 0.0:
                                A[p, q, dy, dx, j, i] = 0.0
                if alive[p, j, i] == 0.0:
                    diag[p, j, i] = 0.0


@numba.njit(cache=True)
def _fill_band(A, alive, order_y_first, half):
    """Lower band (n, half+1) with L[r, k] = A[r + k, r] in the band numbering, and perm.

    The band numbering runs along the shorter axis first; dead DOFs get a unit diagonal.
    """
    py, px = A.shape[4], A.shape[5]
    n = 2 * px * py
    band = np.zeros((n, half + 1))
    perm = np.empty(n, dtype=np.int64)
    for p in range(2):
        for j in range(py):
            for i in range(px):
                node = i * py + j if order_y_first else j * px + i
                perm[p * px * py + j * px + i] = 2 * node + p
    for p in range(2):
        for j in range(py):
            for i in range(px):
                r = perm[p * px * py + j * px + i]
                if alive[p, j, i] == 0.0:
                    band[r, 0] = 1.0
                    continue
                for q in range(2):
                    for dy in range(3):
                        jj = j + dy - 1
                        if jj < 0 or jj >= py:
                            continue
                        for dx in range(3):
                            ii = i + dx - 1
                            if ii < 0 or ii >= px:
                                continue
                            c = perm[q * px * py + jj * px + ii]
                            if c >= r:              # entry (c, r) of the lower triangle
                                band[r, c - r] += A[p, q, dy, dx, j, i]
    return band, perm


@numba.njit(cache=True)
def _fine_diagonal_planes(Ke, scale, diag):
    """Diagonal of K = sum_e s_e Ke as planes diag (2, py, px)."""
    cy, cx = scale.shape
    diag[:] = 0.0
    for cj in range(cy):
        for ci in range(cx):
            s = scale[cj, ci]
            for a in range(4):
                for p in range(2):
                    diag[p, cj + _OY[a], ci + _OX[a]] += s * Ke[2 * a + p, 2 * a + p]


# ---------------------------------------------------------------------------- the solver
class GridMultigrid2D(GridMultigrid):
    """GridMultigrid for 2D quad grids with the whole solve in one serial compiled call.

    Same arguments and methods as :class:`~lightweight.fem.multigrid.GridMultigrid` (shape
    (nx, ny) cells, element_matrix (8, 8), fixed_mask (n_dofs,) bool, ...), except that the
    V-cycle is float32 on every level, the smoother Chebyshev and the coarsest solve a banded
    Cholesky: other ``vcycle_dtype``, ``smoother`` or ``coarse_solver`` values raise SolverError
    (the system then builds GridMultigrid). Needs at least two levels and a coarsest band
    within MAX_BAND_WORK (:meth:`fits`); the caller falls back to GridMultigrid otherwise.
    """

    def __init__(self, shape, spacing=None, element_matrix=None, fixed_mask=None, **options):
        if len(tuple(shape)) != 2:
            raise SolverError(f"GridMultigrid2D needs a 2D grid shape (nx, ny), got {tuple(shape)}")
        # what this class does not implement is refused, so that the system falls back to
        # GridMultigrid instead of silently solving differently
        if options.get("smoother", "chebyshev") != "chebyshev":
            raise SolverError("GridMultigrid2D smooths with Chebyshev-Jacobi only (use GridMultigrid)")
        if np.dtype(options.pop("vcycle_dtype", np.float32)) != np.dtype(np.float32):
            raise SolverError("GridMultigrid2D runs its V-cycle in float32 only (use GridMultigrid)")
        if options.pop("coarse_solver", "direct") != "direct":
            raise SolverError("GridMultigrid2D solves its coarsest level by banded Cholesky only "
                              "(use GridMultigrid)")
        super().__init__(shape, spacing, element_matrix, fixed_mask, **options)
        if len(self.levels) < 2:
            raise SolverError(f"GridMultigrid2D needs at least two levels; grid {self.shape} "
                              f"gives one (use GridMultigrid)")
        coarsest = self.levels[-1]
        if band_cost(coarsest.nodes[0], coarsest.nodes[1]) > MAX_BAND_WORK:
            raise SolverError(f"GridMultigrid2D: the coarsest grid of {self.shape} has "
                              f"{coarsest.nodes[0]} x {coarsest.nodes[1]} nodes, too many for a "
                              f"banded factorization (use GridMultigrid)")
        cells, nodes = _grid_dims(self.shape)
        self._n_nodes = nodes[0] * nodes[1]
        self._dims = np.array([[lev.nodes[0], lev.nodes[1]] for lev in self.levels], dtype=np.int64)
        sizes = [2 * lev.nodes[0] * lev.nodes[1] for lev in self.levels]
        self._voff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self._voff[-1])
        self._work = [np.zeros(total, dtype=np.float32) for _ in range(5)]
        self._alive = np.zeros(total, dtype=np.float32)
        for lev, s, e in zip(self.levels, self._voff[:-1], self._voff[1:]):
            self._alive[s:e] = to_planes(lev.alive, (e - s) // 2)
        self._inv_diag = np.zeros(total, dtype=np.float32)
        stencil_sizes = [0] + [18 * s for s in sizes[1:-1]] + [0]
        self._soff = np.concatenate([[0], np.cumsum(stencil_sizes)]).astype(np.int64)
        self._stencils = np.zeros(int(self._soff[-1]), dtype=np.float32)
        self._upper = np.zeros(len(self.levels))
        self._fixed_planes = np.flatnonzero(to_planes(self.fixed_mask.astype(np.float64),
                                                      self._n_nodes)).astype(np.int64)
        self._row_work = np.empty(max(lev.nodes[0] for lev in self.levels), dtype=np.float32)
        self._Ke32 = self.Ke.astype(np.float32)
        for lev in self.levels[1:]:
            lev.planes = None
            lev.has_dead = bool(np.any(lev.alive == 0))
        self._band = None

    @staticmethod
    def fits(shape, coarse_max_dofs: int) -> bool:
        """True if a 2D grid of ``shape`` cells gets >= 2 levels and an affordable coarsest band."""
        nx, ny = (int(n) for n in shape)
        if nx % 2 or ny % 2 or nx < 2 or ny < 2 or 2 * (nx + 1) * (ny + 1) <= coarse_max_dofs:
            return False
        while 2 * (nx + 1) * (ny + 1) > coarse_max_dofs and nx % 2 == 0 and ny % 2 == 0 \
                and nx >= 2 and ny >= 2:
            nx, ny = nx // 2, ny // 2
        return band_cost(nx + 1, ny + 1) <= MAX_BAND_WORK

    def _level_planes(self, lev):
        """Galerkin operator of a coarse level as planes (2, 2, 3, 3, py, px) float64 and its diagonal.

        The same element matrices as GridMultigrid's ``_level_element_matrices`` (the tables
        ``lev.G`` and the support corrections ``lev.corr``), summed in one compiled pass.
        """
        px, py = lev.nodes[0], lev.nodes[1]
        if lev.planes is None:
            lev.planes = np.empty((2, 2, 3, 3, py, px))
        A = lev.planes
        f = lev.factor
        ccx, ccy = lev.cells[0], lev.cells[1]
        S = np.ascontiguousarray(self._scale64.reshape(ccy, f, ccx, f).transpose(1, 3, 0, 2)
                                 ).reshape(f * f, ccy, ccx)          # S[x + f*y, J, I]
        _galerkin_planes(S, lev.G, A)
        if lev.corr_cells.size:
            contrib = lev.corr[lev.corr_index] * self.scale[lev.corr_fine][:, None, None]
            _scatter_cells_planes(contrib, lev.corr_cells, lev.cells[0], A)
        diag = np.ascontiguousarray(A[[0, 1], [0, 1], 1, 1])          # (2, py, px)
        if lev.has_dead:
            _zero_dead_planes(A, lev.alive.reshape(py * px, 2).T.reshape(2, py, px), diag)
        return A, diag

    def update(self, stiffness_scale, fixed_diagonal: float | None = None) -> None:
        """Rebuild the level operators, smoother bounds and the coarsest band factor.

        stiffness_scale: (n_cells,) per-cell multipliers of the element matrix (> 0).
        fixed_diagonal: value of K_c[f, f] on fixed DOFs (None: mean |diagonal| of free DOFs).
        """
        t0 = time.perf_counter()
        s = self._checked_scale(stiffness_scale)
        self.scale = s
        nx, ny = self.shape
        self._scale64 = s.reshape(ny, nx)
        self._scale32 = self._scale64.astype(np.float32)
        fine = self.levels[0]
        diag = np.empty((2, ny + 1, nx + 1))
        _fine_diagonal_planes(self.Ke, self._scale64, diag)
        diag = diag.reshape(-1)
        free = to_planes(self.free, self._n_nodes)
        if fixed_diagonal is None:
            self.fixed_diagonal = float(np.mean(np.abs(diag[free > 0]))) if free.any() else 1.0
        else:
            self.fixed_diagonal = float(fixed_diagonal)
        diag *= free
        e0 = int(self._voff[1])
        self._inv_diag[:e0] = np.divide(1.0, diag, out=np.zeros_like(diag), where=diag > 0)
        self._upper[0] = fine.upper = fine.lmax = self.fine_lmax_bound
        last = len(self.levels) - 1
        for k, lev in enumerate(self.levels[1:], start=1):
            A, d = self._level_planes(lev)
            s0, s1 = int(self._voff[k]), int(self._voff[k + 1])
            self._inv_diag[s0:s1] = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0).reshape(-1)
            if k < last:
                self._stencils[self._soff[k]:self._soff[k + 1]] = A.reshape(-1)
                lev.lmax = self._estimate_lmax_planes(k)
                lev.upper = self._upper[k] = 1.1 * lev.lmax
            else:
                px, py = lev.nodes[0], lev.nodes[1]
                half = 2 * (min(px, py) + 1) + 1
                band, perm = _fill_band(A, lev.alive.reshape(py * px, 2).T.reshape(2, py, px),
                                        py <= px, half)
                failed = _band_cholesky(band)
                if failed >= 0:
                    raise SingularStiffnessError(
                        f"multigrid's coarsest level ({lev.n_dofs} DOFs) is not positive definite "
                        f"(pivot {failed}): the stiffness is singular (a mechanism) or not finite")
                self._band = band
                self._perm = perm
                self._band_work = np.empty(band.shape[0])
        self.setup_seconds = time.perf_counter() - t0

    def _estimate_lmax_planes(self, k, steps: int = 12) -> float:
        """Largest eigenvalue of D^-1 A on level k's live DOFs (Lanczos on D^-1/2 A D^-1/2).

        GridMultigrid's estimate (same start vector, steps and tridiagonal eigenvalue), run
        as one compiled call.
        """
        s0, s1 = int(self._voff[k]), int(self._voff[k + 1])
        sq = np.sqrt(self._inv_diag[s0:s1].astype(np.float64))
        lev = self.levels[k]
        if getattr(lev, "lanczos_start", None) is None:
            lev.lanczos_start = np.random.default_rng(12345).standard_normal(s1 - s0)
        v = lev.lanczos_start * (sq > 0)
        v /= np.linalg.norm(v)
        alphas = np.zeros(min(steps, int(np.count_nonzero(sq))))
        betas = np.zeros_like(alphas)
        n = _lanczos_planes(self._stencils[self._soff[k]:self._soff[k + 1]], sq,
                            int(self._dims[k, 0]), int(self._dims[k, 1]), v, alphas, betas)
        T = np.diag(alphas[:n]) + np.diag(betas[:n - 1], 1) + np.diag(betas[:n - 1], -1)
        return float(np.linalg.eigvalsh(T).max())

    def vcycle(self, r):
        """One V-cycle applied to residual(s) r (n_dofs,) or (n_cases, n_dofs); fixed DOFs -> 0."""
        self._check_ready()
        R = np.atleast_2d(np.asarray(r, dtype=np.float64)) * self.free[None, :]
        Z = np.empty_like(R)
        z = np.empty(self.n_dofs)
        for c in range(R.shape[0]):
            self._run_vcycle(to_planes(R[c], self._n_nodes), z)
            Z[c] = from_planes(z, self._n_nodes)
        return Z[0] if np.ndim(r) == 1 else Z

    def _run_vcycle(self, r, z):
        VB, VX, VR, VD, VT = self._work
        _vcycle(r, z, VB, VX, VR, VD, VT, self._voff, self._inv_diag, self._alive, self._upper,
                self.chebyshev_ratio, self.smoother_degree, self._dims, self._Ke32, self._scale32,
                self._fixed_planes, self._stencils, self._soff, self._band, self._perm,
                self._band_work, self._row_work)

    def solve(self, rhs, x0=None, overwrite_x0: bool = False, overwrite_rhs: bool = False):
        """Solve K_c U = rhs for all load cases by MG-preconditioned CG, one compiled call per case.

        rhs: (n_cases, n_dofs) or (n_dofs,); x0: initial guess of the same shape (free DOFs).
        overwrite_x0, overwrite_rhs: accepted for GridMultigrid's signature; this solver works
        in its own plane layout, so x0 and rhs are always read, never changed. Returns (U like rhs, info) with the keys of
        GridMultigrid.solve.
        """
        self._check_ready()
        t0 = time.perf_counter()
        B = np.atleast_2d(np.asarray(rhs, dtype=np.float64))
        if B.shape[1] != self.n_dofs:
            raise SolverError(f"rhs must have {self.n_dofs} DOFs per case, got {B.shape[1]}")
        X0 = None if x0 is None else np.atleast_2d(np.asarray(x0, dtype=np.float64))
        if X0 is not None and X0.shape != B.shape:
            raise SolverError(f"x0 must have the shape of rhs {B.shape}, got {X0.shape}")
        n_nodes = self._n_nodes
        fixed = self.fixed_dofs
        X = np.empty_like(B)
        iterations, residuals, converged = [], [], True
        VB, VX, VR, VD, VT = self._work
        for c in range(B.shape[0]):
            b = to_planes(B[c] * self.free, n_nodes)
            x = np.zeros_like(b) if X0 is None else to_planes(X0[c] * self.free, n_nodes)
            its, res, ok = _pcg(b, x, self.rtol, self.maxiter, self.Ke, self._scale64,
                                VB, VX, VR, VD, VT, self._voff, self._inv_diag, self._alive,
                                self._upper, self.chebyshev_ratio, self.smoother_degree, self._dims,
                                self._Ke32, self._scale32, self._fixed_planes,
                                self._stencils, self._soff, self._band, self._perm,
                                self._band_work, self._row_work)
            X[c] = from_planes(x, n_nodes)
            iterations.append(int(its))
            residuals.append(float(res))
            converged &= bool(ok)
        X[:, fixed] = B[:, fixed] / self.fixed_diagonal
        info = {"iterations": iterations, "residuals": residuals, "converged": converged,
                "seconds": time.perf_counter() - t0, "setup_seconds": self.setup_seconds,
                "levels": [lev.n_dofs for lev in self.levels], "coarse_solver": "banded cholesky"}
        return (X[0] if np.ndim(rhs) == 1 else X), info
