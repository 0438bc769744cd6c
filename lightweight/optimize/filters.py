"""Density and sensitivity filters of SIMP topology optimization, with exact adjoints.

Approach
--------
Filtering is a fixed linear map from design variables ``x`` (one per cell) to filtered
densities ``x_tilde``; every filter here exposes that map (:meth:`DensityFilter.forward`) and its
exact transpose (:meth:`DensityFilter.backward`), so gradients chain through it with no
approximation and the optimizer sees the true derivative of what was analysed.

*Convolution filters* follow the rules of top88 (Andreassen et al. 2011) exactly, so that a
structured MBB run reproduces the published one:

    w_ij  = max(0, r - |c_i - c_j|) * v_j        (v_j = cell volume; 1 on a structured grid)
    Hs_i  = sum_j w_ij                           (row sums; neighbours outside the domain do
                                                  not exist: no padding, no mirroring)
    density filter      x_tilde = (H x) / Hs,   dF/dx = H^T (dF/dx_tilde / Hs)
    sensitivity filter  dc_new  = H (x * dc) / Hs / max(1e-3, x)

The volume weight makes the filter a discrete version of the continuous convolution on a graded
mesh (a big cell pulls harder than a small one); on a uniform grid it cancels in the
normalisation and gives top88 bit for bit (to rounding).

- :class:`GridFilter` is the fast path for structured grids: a Numba stencil convolution over
  the (nz, ny, nx) raster, parallel over grid lines. The stencil holds the same weights as the
  matrix version (distance from integer offsets times spacing, per axis, so anisotropic
  spacing and full 3D balls come out right); edges are handled by clamping the loop ranges, so
  outside neighbours simply contribute nothing. Memory is O(n + stencil); ``Hs`` is one pass
  over a field of ones, computed once. The stencil is symmetric, so H^T = H.
- :class:`MatrixFilter` is the general twin. H = W diag(v) with W_ij = max(0, r - d_ij)
  symmetric, so it keeps W alone, and of W only the pattern of the strict upper triangle (its
  diagonal is r): CSR with 4-byte column indices, 4 bytes per stored entry, about 2 per
  nonzero of H. The weights are not stored: the product recomputes each w_ij from the two
  centres in float64 (one inlined Numba function defines a weight for the build, which keeps
  the pairs with w > 0, for ``W_data`` and ``H``, which give the formula bit for bit, and for
  the product, which may fuse its multiply-adds: equal to rounding). That trades 8 bytes per
  stored entry (~220 B/tet at r = 1.5 tet edges, 57 nonzeros of H per tet) for a subtraction
  per axis, a square root and a read of the neighbour's centre per entry. It applies
  H x = W (v x) and H^T y = v (W y) with one Numba kernel (each w_ij serves row i and column
  j); the row blocks run in parallel, each scattering into its own buffer, so the result is
  deterministic for a given thread count and changes with it only by rounding.

  *Cell order.* In the mesh's order (Gmsh's: a stored pair's median index gap was 61k of 222k
  cells) every entry read its neighbour's centre and field value from a random place, and
  the product took twice as long as with stored weights. The filter therefore works in its
  own order, computed once when built: the Morton (Z) order of the centres' boxes of edge
  r / 2 (a box holds ~2 cells at r = 1.5 edges; cells of a box stay in mesh order), 0.07 s at
  222k cells, from the centres alone. Centres, volumes, Hs and the pattern are kept in that
  order (median gap 55); fields are gathered into it and scattered back in the kernel's first
  and last loops (one random read and one random write per cell), so forward, backward and
  filter_sensitivity take and return the mesh's order. Reverse Cuthill-McKee of the pattern
  (scipy.sparse.csgraph) gave the same product time (all within noise: Morton boxes of r / 4,
  r / 2, r and the finest, RCM: 0.78-0.85x of the stored weights' time) but needs the pattern
  before the order: 4.9 s for the order and 10.5 s to build, against 2.7-3.0 s. In that order
  the product is bound by its arithmetic, not by memory (columns i+1, i+2, ... instead of the
  real ones took as long), so what made it fast was the instruction count: no negative-index
  wraparound (unsigned column indices), the scales read in the filter's order, fused
  multiply-adds (10-20%). 222k-tet bracket, forward + backward, alternated in one process:
  0.84x the stored weights' time on one thread, 0.71x on two, 0.45x / 0.39x of the mesh-order
  recomputation; building takes 0.5x the stored weights' time and 0.6x the mesh-order
  recomputation's (the KD-tree's blocks of rows are compact in space). The order costs 4
  B/cell (int32) and the filter's copy of the volumes 8 (the mesh-order volumes are not
  kept): 163 B/tet kept in all (centres 24, indptr 8, Hs 8). What the filter shows
  (``W_indptr``, ``W_indices``, ``W_data``, ``H``, ``Hs``, ``volumes``, ``centers``) is in the
  mesh's order, computed on each access.

  The pattern is built block of rows by block of rows, each block's own ``cKDTree`` searched
  against the whole mesh's (``sparse_distance_matrix``), and appended in place, so building
  peaks at ~1.2 x what is kept instead of holding the whole pair list and its copies. Storing
  H and H^T as scipy matrices kept 9x as much and peaked 20x higher (222k tets). Numbers:
  docs/performance.md ("Memory per tet").
- :class:`HelmholtzFilter` is the PDE filter of Lazarov & Sigmund (2011),
  ``-r_h^2 lap(x_tilde) + x_tilde = x`` with ``r_h = r / (2 sqrt 3)`` and natural boundary
  conditions, discretized with the mesh's own scalar shape functions. Its cost grows with the
  number of nodes, not with r^dim, which is what pays on large meshes with large radii.
  Element densities become nodal loads through ``T_ae = int_e N_a dV``; the nodal solution
  comes back to cells as the element mean ``(1/V_e) int_e x_tilde dV = (T^T x_n)_e / V_e``.
  Because ``sum_a N_a = 1``, ``M 1 = T 1`` and ``K 1 = 0`` (consistent mass and load built with
  the same quadrature), so a constant field stays constant exactly, for every cell type. The
  system matrix is factorized once by the solver factory (:func:`lightweight.fem.solvers.
  make_solver`, the fastest installed direct solver); forward and backward are then the two
  orders of the same linear products and transpose each other exactly.

Memory. A convolution matrix on an unstructured mesh holds about n_cells x (ball(r) / mean
cell volume) nonzeros: at 400k tets and r = 12 mm, 5.7e8 of them, and building it was
OOM-killed at 14.8 GB with no message. :func:`make_filter` therefore estimates it first
(:func:`matrix_filter_estimate`: the nonzeros of :func:`lightweight.fem.memory.
filter_matrix_nonzeros`, ~2.5 bytes per nonzero plus per-cell and per-block terms) and,
when it exceeds :data:`FILTER_MEMORY_FRACTION` of the available memory (or ``memory_budget``),
builds the Helmholtz filter instead for ``kind="density"``, with a warning saying so (its cost
grows with the node count, not with r^dim; it is the PDE version of the same smoothing, not
the same numbers), and refuses ``kind="sensitivity"`` (top88's heuristic has no PDE twin) with
an OptimizationError naming the estimate. :class:`MatrixFilter` built directly refuses when the
estimate exceeds the available memory. ``LIGHTWEIGHT_MEMORY_LIMIT`` fakes the available memory.

Why hand-written: the grid stencil is one of the product's hot kernels (docs/architecture.md); libraries
that filter (scipy.ndimage.convolve) pad or mirror at the edges instead of cutting off, which
breaks the top88 normalisation, and do not give the transpose. pyMOTO and top99neo were looked
at for structure (a filter as a linear module with a response and a sensitivity pass); the code
here is our own.

Shapes: design fields are (n_cells,) float64; ``backward`` also takes (k, n_cells), one row per
function (objective, constraints), and returns the same shape.
"""

from __future__ import annotations

import math
import warnings
import weakref

import numba
import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import MeshError, OptimizationError
from ..mesh.cell_types import CELL_TYPES, quadrature, shape_functions

__all__ = ["DensityFilter", "MatrixFilter", "GridFilter", "HelmholtzFilter", "make_filter",
           "FILTER_KINDS"]

FILTER_KINDS = ("density", "sensitivity", "helmholtz")

# top88 keeps the sensitivity filter away from dividing by (near) zero densities.
_SENSITIVITY_MIN_DENSITY = 1e-3


def _check_radius(radius) -> float:
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise OptimizationError(f"filter radius must be a number in length units, got {radius!r}") \
            from None
    if not math.isfinite(r) or r <= 0:
        raise OptimizationError(
            f"filter radius must be positive and finite (length units of the mesh), got {radius!r}; "
            f"use about 1.5-3 element sizes, or a radius below one element size for no filtering")
    return r


class DensityFilter:
    """A linear filter of per-cell design fields with its exact transpose (see module docstring).

    Subclasses implement :meth:`forward` and :meth:`backward`; ``n`` is the number of cells.
    """

    n: int
    radius: float
    kind: str = "density"   # how the optimization loop uses it: "density" | "sensitivity" | "helmholtz"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Filtered densities x_tilde (n,) from design variables x (n,)."""
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Chain rule: dF/dx from dF/dx_tilde; (n,) or (k, n) in, same shape out."""
        raise NotImplementedError

    def filter_sensitivity(self, x: np.ndarray, dc: np.ndarray) -> np.ndarray:
        """top88 sensitivity filter: H (x * dc) / Hs / max(1e-3, x); dc (n,) or (k, n)."""
        x = self._as_field(x, "x")
        dc = np.asarray(dc, dtype=np.float64)
        smoothed = self._apply_rows(self.forward, x * dc, "dc")
        return smoothed / np.maximum(_SENSITIVITY_MIN_DENSITY, x)

    # ------------------------------------------------------------------ helpers
    def _as_field(self, x, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n,):
            raise OptimizationError(f"{type(self).__name__}: {what} must have shape ({self.n},) "
                                    f"(one value per cell), got {x.shape}")
        return x

    def _apply_rows(self, op, values, what: str) -> np.ndarray:
        """Apply a (n,)->(n,) operator to a (n,) field or to each row of a (k, n) stack."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            return op(self._as_field(values, what))
        if values.ndim == 2 and values.shape[1] == self.n:
            return np.stack([op(row) for row in values]) if len(values) else values.copy()
        raise OptimizationError(f"{type(self).__name__}: {what} must have shape ({self.n},) or "
                                f"(k, {self.n}), got {values.shape}")


class _NormalisedConvolution(DensityFilter):
    """x_tilde = H x / Hs with H applied by a subclass (``_apply_H``, ``_apply_HT``)."""

    Hs: np.ndarray

    def _apply_H(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _apply_HT(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._apply_H(self._as_field(x, "x")) / self.Hs

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self._apply_rows(lambda g: self._apply_HT(g / self.Hs), grad, "grad")


# ====================================================================== general meshes
# Pair candidates (both directions, as the KD-tree returns them) one block of rows may hold
# while W is built: bounds the block's temporaries (~100 bytes each, ~26 MB) on any mesh.
# Smaller blocks cost time (more, smaller tree traversals: 2^17 took 3.1 s at 222k tets,
# 2^18 2.7 s, 2^19 2.4 s); this size keeps the temporaries below the weights from ~100k tets.
_BUILD_BLOCK_ENTRIES = 2 ** 18
# Growth factor of the weight arrays when a block does not fit their capacity.
_BUILD_GROWTH = 1.25


@numba.njit(inline="always")
def _centre(centers, i):
    """Cell i's first three coordinates (0.0 past the last axis), for :func:`_weight`: a row
    of the product loads them once, not once per entry."""
    dim = centers.shape[1]
    x0 = centers[i, 0]
    x1 = centers[i, 1] if dim > 1 else 0.0
    x2 = centers[i, 2] if dim > 2 else 0.0
    return x0, x1, x2


@numba.njit(inline="always")
def _weight(centers, ci, i, j, r):
    """w_ij = r - |c_i - c_j| in float64, ``ci = _centre(centers, i)``: squares of the
    coordinate differences summed in axis order, from 0.0, then the square root.

    The one definition of a weight: the build keeps the pairs where it is > 0 and
    :attr:`MatrixFilter.W_data` recomputes it, both with these bits, which are also those of
    NumPy's ``((c[rows] - c[cols]) ** 2).sum(axis=1)`` over 2 or 3 columns (what the build
    evaluated when the weights were stored). The product (:func:`_symmetric_product`) inlines
    it under ``fastmath={"contract"}``: where the CPU has fused multiply-adds the sum of
    squares is fused, so its weights equal these to rounding (~1e-16 of the squared distance),
    not bit for bit. The 2D and 3D cases are written out (the branch is the same for every
    pair, so it leaves the loop); ``0.0 + t * t == t * t`` since a square is never -0.0.
    (c_j - c_i)^2 == (c_i - c_j)^2 bit for bit, so w_ji == w_ij in any cell order.
    """
    dim = centers.shape[1]
    if dim == 3:
        t0 = ci[0] - centers[j, 0]
        t1 = ci[1] - centers[j, 1]
        t2 = ci[2] - centers[j, 2]
        s = t0 * t0 + t1 * t1 + t2 * t2
    elif dim == 2:
        t0 = ci[0] - centers[j, 0]
        t1 = ci[1] - centers[j, 1]
        s = t0 * t0 + t1 * t1
    else:
        s = 0.0
        for d in range(dim):
            t = centers[i, d] - centers[j, d]
            s += t * t
    return r - math.sqrt(s)


@numba.njit(cache=True)
def _pair_weights(centers, rows, cols, r):
    """_weight of each pair (rows[k], cols[k])."""
    out = np.empty(rows.shape[0])
    for k in range(rows.shape[0]):
        i = rows[k]
        out[k] = _weight(centers, _centre(centers, i), i, cols[k], r)
    return out


@numba.njit(cache=True, parallel=True)
def _upper_data(indptr, indices, centers, r):
    """The stored triangle's weights, entry by entry (``MatrixFilter.W_data``)."""
    n = indptr.shape[0] - 1
    data = np.empty(indices.shape[0])
    for i in numba.prange(n):
        ci = _centre(centers, i)
        for k in range(indptr[i], indptr[i + 1]):
            data[k] = _weight(centers, ci, i, indices[k], r)
    return data


# how _symmetric_product scales a value as it moves between the orders: not, times or over
# the cell's entry of an array in the filter's order
_AS_IS, _TIMES, _OVER = 0, 1, 2


@numba.njit(inline="always")
def _scaled(value, scale, k, how):
    if how == _TIMES:
        return value * scale[k]
    if how == _OVER:
        return value / scale[k]
    return value


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _symmetric_product(indptr, indices, centers, radius, order, x, before, how_before, after,
                       how_after, bounds, z, partial, out):
    """out = W x in mesh order, W = radius * I + U + U^T in the filter's order (``order[k]``
    is the mesh's cell at position k), U strictly upper triangular (CSR pattern).

    x is gathered into the filter's order (``z[k] = x[order[k]]``, scaled by ``before[k]``),
    the product made there and scattered back (``out[order[k]]``, scaled by ``after[k]``), in
    the same compiled call as the product's first and last loops: the orders cost one (n,)
    buffer and one random read and one random write per cell (the scales are kept in the
    filter's order; reading them in mesh order too took ~10% of an application at 222k cells).

    U's values are not stored: each w_ij is recomputed from the centres (:func:`_weight`,
    fused multiply-adds allowed: ``fastmath={"contract"}``, 10-20% of the time at 222k cells).
    Row block t (rows bounds[t]:bounds[t+1]) is one task; it adds both U z (its own rows) and
    U^T z (columns j > i, possibly in other blocks) into its own buffer ``partial[t]``, so no
    two tasks write the same memory. Only entries bounds[t] <= j < reach[t] of that buffer can
    be touched, reach[t] - 1 being the block's largest column (columns are sorted within a
    row, so it is the largest of its rows' last entries): only those are zeroed and summed (in
    the filter's order, at 222k cells on two threads, the first block's reach ends 48k entries
    past it, the Morton curve's longest jumps, instead of at the end of the mesh).
    """
    n = z.shape[0]
    for k in numba.prange(n):
        c = order[k]
        z[k] = _scaled(x[c], before, k, how_before)
    n_blocks = bounds.shape[0] - 1
    reach = np.empty(n_blocks, dtype=np.int64)
    for t in numba.prange(n_blocks):
        top = bounds[t + 1]
        for i in range(bounds[t], bounds[t + 1]):
            if indptr[i + 1] > indptr[i]:
                top = max(top, indices[indptr[i + 1] - 1] + 1)
        reach[t] = top
        acc = partial[t]
        for i in range(bounds[t], top):
            acc[i] = 0.0
        for i in range(bounds[t], bounds[t + 1]):
            zi = z[i]
            ci = _centre(centers, i)
            row_sum = 0.0
            # unsigned k and columns: no negative-index wraparound on either, which took a
            # third of the loop's instructions
            for k in range(numba.uint64(indptr[i]), numba.uint64(indptr[i + 1])):
                j = indices[k]
                w = _weight(centers, ci, i, j, radius)
                row_sum += w * z[j]
                acc[j] += w * zi
            acc[i] += row_sum
    for i in numba.prange(n):
        total = radius * z[i]
        for t in range(n_blocks):
            if bounds[t] > i:
                break
            if i < reach[t]:
                total += partial[t, i]
        out[order[i]] = _scaled(total, after, i, how_after)


@numba.njit(cache=True)
def _morton_codes(centers, lo, step, bits):
    """Z-order key of each centre: its box (c - lo) // step per axis, the boxes' bits
    interleaved from the most significant, axis 0 first."""
    n, dim = centers.shape
    codes = np.empty(n, dtype=np.uint64)
    box = np.empty(dim, dtype=np.int64)
    top = (1 << bits) - 1
    for i in range(n):
        for d in range(dim):
            box[d] = min(top, max(0, int((centers[i, d] - lo[d]) / step)))
        code = np.uint64(0)
        for b in range(bits - 1, -1, -1):
            for d in range(dim):
                code = (code << np.uint64(1)) | np.uint64((box[d] >> b) & 1)
        codes[i] = code
    return codes


def _spatial_order(centers: np.ndarray, radius: float) -> np.ndarray:
    """A permutation of the cells that keeps neighbours close: Morton (Z) order of boxes of
    edge radius / 2 (coarser where the mesh spans more boxes than 63 bits of key can number),
    cells of one box in mesh order (stable sort). int32 when the cells fit. Why this order and
    not reverse Cuthill-McKee: module docstring."""
    n, dim = centers.shape
    lo = centers.min(axis=0)
    extent = float(np.ptp(centers, axis=0).max()) if n else 0.0
    bits = max(1, min(62, 63 // dim))
    step = max(0.5 * radius, extent / 2.0 ** bits, np.finfo(np.float64).tiny)
    bits = min(bits, max(1, int(math.ceil(math.log2(extent / step + 1.0)))))
    order = np.argsort(_morton_codes(centers, lo, step, bits), kind="stable")
    return order.astype(np.int32) if n < 2 ** 31 else order


@numba.njit(cache=True)
def _mesh_order_pattern(indptr, indices, order):
    """The stored triangle in mesh order: pair (a, b) of the filter's order is the mesh's
    (order[a], order[b]), kept as (min, max); CSR with sorted columns (``W_indptr``,
    ``W_indices``)."""
    n = order.shape[0]
    out_indptr = np.zeros(n + 1, dtype=np.int64)
    for a in range(n):
        ca = order[a]
        for k in range(indptr[a], indptr[a + 1]):
            out_indptr[min(ca, order[indices[k]]) + 1] += 1
    for i in range(n):
        out_indptr[i + 1] += out_indptr[i]
    cursor = out_indptr[:-1].copy()
    out = np.empty(indices.shape[0], dtype=indices.dtype)
    for a in range(n):
        ca = order[a]
        for k in range(indptr[a], indptr[a + 1]):
            cb = order[indices[k]]
            row = min(ca, cb)
            out[cursor[row]] = max(ca, cb)
            cursor[row] += 1
    for i in range(n):
        out[out_indptr[i]:out_indptr[i + 1]].sort()
    return out_indptr, out


def _upper_pattern(centers: np.ndarray, r: float, block_rows: int):
    """CSR pattern (indptr int64, indices int32/int64) of the pairs j > i with _weight > 0.

    Built block of rows by block of rows: the block's own small KD-tree against the whole
    mesh's (``sparse_distance_matrix``), pairs with j <= i dropped (they belong to an earlier
    row), the weights of the rest computed (:func:`_weight`) to drop those <= 0, the others
    sorted by (row, column) and appended. Only the column indices are kept: the product
    recomputes the weights. The array grows by ``_BUILD_GROWTH`` (or to the projection of
    the rows done so far) and is cut to size at the end, in place.
    """
    n = len(centers)
    tree = cKDTree(centers)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(0, dtype=np.int32 if n < 2 ** 31 else np.int64)
    filled = 0
    found_pairs = 0         # both directions and the cell itself, as the tree returns them
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        found = cKDTree(centers[start:stop]).sparse_distance_matrix(tree, r, output_type="ndarray")
        found_pairs += len(found)
        rows = found["i"] + start
        cols = found["j"]
        del found
        upper = cols > rows
        rows, cols = rows[upper], cols[upper]
        del upper
        # the weight as the product recomputes it, not the tree's distance: which pairs are
        # kept must not depend on how the neighbours were found
        keep = _pair_weights(centers, rows, cols, r) > 0
        rows, cols = rows[keep], cols[keep]
        del keep
        order = np.argsort(rows * n + cols)
        m = len(order)
        if filled + m > len(indices):
            # Predicted from the full rows found so far: the upper triangle's own count per
            # row falls along the rows (row 0 has every neighbour after it, row n-1 none),
            # so it would predict twice too much. Growing by at least _BUILD_GROWTH bounds
            # the number of reallocations when the prediction runs low.
            projected = int(1.05 * (found_pairs / stop - 1.0) * n / 2) + 1
            capacity = max(filled + m, projected if stop < n else 0,
                           int(_BUILD_GROWTH * len(indices)) if stop < n else 0)
            # in place (realloc): the old array is not kept beside the new one
            indices.resize(capacity, refcheck=False)
        indices[filled:filled + m] = cols[order]
        indptr[start + 1:stop + 1] = filled + np.cumsum(np.bincount(rows - start,
                                                                     minlength=stop - start))
        filled += m
        del rows, cols, order
    indices.resize(filled, refcheck=False)
    return indptr, indices


class MatrixFilter(_NormalisedConvolution):
    """Convolution filter on any mesh: sparse distance weights from a KD-tree, volume weighted.

    centers: (n, dim) cell centroids; radius: length units; volumes: (n,) cell volumes (areas in
    2D), default all ones (plain top88 weights). memory_budget: bytes the matrix may take while
    being built (default: all available memory); a larger estimate raises OptimizationError.
    block_rows: rows searched per block while building (default: about
    ``_BUILD_BLOCK_ENTRIES`` neighbour candidates per block).

    H = W diag(volumes) is applied as W (v x) and v (W y); of the symmetric W only the
    pattern of the strict upper triangle is stored (its diagonal is the radius), with copies
    of the centres, from which the product recomputes each weight, and of the volumes. All of
    it is kept in the filter's own cell order, ``order`` (int32 or int64: position k holds
    the mesh's cell ``order[k]``; a Morton order, module docstring), in which neighbours are
    close in memory; forward, backward and filter_sensitivity take and return fields in the
    mesh's order, permuting them on the way in and out. What the filter shows is in the
    mesh's order and computed on each access: ``W_indptr``, ``W_indices`` (the strict upper
    triangle, columns sorted), :attr:`W_data` (its weights), :attr:`H` (the full scipy
    matrix), ``Hs``, ``volumes``, ``centers``.
    """

    def __init__(self, centers, radius, volumes=None, memory_budget: float | None = None,
                 block_rows: int | None = None):
        centers = np.asarray(centers, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[0] == 0:
            raise OptimizationError(f"MatrixFilter: centers must have shape (n_cells, dim), "
                                    f"got {centers.shape}")
        self.radius = r = _check_radius(radius)
        self.n = n = centers.shape[0]
        volumes_given = volumes
        if volumes is None:
            volumes = np.ones(n)
        volumes = np.asarray(volumes, dtype=np.float64)
        if volumes.shape != (n,):
            raise OptimizationError(f"MatrixFilter: volumes must have shape ({n},), got {volumes.shape}")
        if not np.all(volumes > 0):
            bad = np.flatnonzero(~(volumes > 0))
            raise MeshError(f"cells {bad[:10].tolist()} have non-positive volume; the filter weights "
                            f"neighbours by volume: fix inverted or degenerate cells")
        volumes_for_estimate = None if volumes_given is None else volumes
        check_matrix_filter_memory(centers, r, volumes_for_estimate, memory_budget,
                                   what="MatrixFilter")
        if block_rows is None:
            nnz, _ = matrix_filter_estimate(centers, r, volumes_for_estimate)
            block_rows = max(1, int(_BUILD_BLOCK_ENTRIES / max(nnz / n, 1.0)))
        elif int(block_rows) < 1:
            raise OptimizationError(f"MatrixFilter: block_rows must be a positive number of rows, "
                                    f"got {block_rows!r}")
        # the filter's own cell order: position k holds the mesh's cell order[k]
        self.order = _spatial_order(centers, r)
        # the filter's copies of the centres and volumes, in its order (the caller's arrays
        # may change later; the volumes in mesh order are not kept)
        self._centers = np.ascontiguousarray(centers[self.order])
        self._volumes = volumes[self.order]
        self._indptr, indices = _upper_pattern(self._centers, r, int(block_rows))
        # unsigned, the same bytes: the product indexes with them without wraparound checks
        self._indices = indices.view(np.dtype(f"u{indices.itemsize}"))
        del indices
        self._Hs = self._product(volumes, None, _AS_IS, None, _AS_IS)[self.order]

    @property
    def nnz(self) -> int:
        """Nonzeros of H (both triangles and the diagonal), not of what is stored."""
        return 2 * len(self._indices) + self.n

    def _in_mesh_order(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[self.order] = values
        return out

    @property
    def centers(self) -> np.ndarray:
        """The filter's copy of the cell centres, in mesh order (a new array on each access)."""
        return self._in_mesh_order(self._centers)

    @property
    def volumes(self) -> np.ndarray:
        """The cell volumes the filter weights by, in mesh order (a new array on each access)."""
        return self._in_mesh_order(self._volumes)

    @property
    def Hs(self) -> np.ndarray:
        """Row sums of H, in mesh order (a new array on each access)."""
        return self._in_mesh_order(self._Hs)

    def _mesh_pattern(self):
        signed = self._indices.view(np.dtype(f"i{self._indices.itemsize}"))
        return _mesh_order_pattern(self._indptr, signed, self.order)

    @property
    def W_indptr(self) -> np.ndarray:
        """Row pointers of the stored triangle in mesh order (strictly upper: j > i), computed
        on each access from the filter's own pattern; with :attr:`W_indices`."""
        return self._mesh_pattern()[0]

    @property
    def W_indices(self) -> np.ndarray:
        """Columns of the stored triangle in mesh order, sorted within each row, computed on
        each access (4 bytes per stored entry that are not kept twice); for inspection and
        tests."""
        return self._mesh_pattern()[1]

    @property
    def W_data(self) -> np.ndarray:
        """Weights of the stored triangle, aligned with ``W_indices``, computed on each access.

        8 bytes per stored entry that the filter does not keep; for inspection and tests.
        """
        indptr, indices = self._mesh_pattern()
        return _upper_data(indptr, indices, self.centers, self.radius)

    @property
    def H(self) -> sp.csr_matrix:
        """H = W diag(volumes) as a scipy CSR matrix in mesh order, built anew on each access.

        Costs what the filter itself avoids: 12 bytes per nonzero of H (the filter keeps about
        2) plus the temporaries of the scipy sum and conversions; for inspection and tests, not
        for loops.
        """
        n = self.n
        indptr, indices = self._mesh_pattern()
        data = _upper_data(indptr, indices, self.centers, self.radius)
        upper = sp.csr_matrix((data, indices, indptr), shape=(n, n))
        W = (upper + upper.T + sp.diags(np.full(n, self.radius))).tocsr()
        W.sort_indices()
        W.data *= self.volumes[W.indices]       # column j scaled by v_j: H = W diag(v)
        return W

    def _product(self, x, before, how_before, after, how_after) -> np.ndarray:
        """W x, x and the result in mesh order, x scaled entry by entry before and the result
        after (``_TIMES`` or ``_OVER`` an array in the filter's order, or ``_AS_IS``); see
        :func:`_symmetric_product`."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        n = self.n
        n_blocks = max(1, min(numba.get_num_threads(), n))
        # row blocks of equal stored entries, so the tasks take about the same time
        bounds = np.searchsorted(self._indptr, np.linspace(0, self._indptr[-1], n_blocks + 1))
        bounds[0], bounds[-1] = 0, n
        bounds = np.maximum.accumulate(bounds).astype(np.int64)
        out = np.empty(n)
        _symmetric_product(self._indptr, self._indices, self._centers, self.radius, self.order,
                           x, x if before is None else before, how_before,
                           out if after is None else after, how_after, bounds, np.empty(n),
                           np.empty((n_blocks, n)), out)
        return out

    def _apply_H(self, x):
        return self._product(x, self._volumes, _TIMES, None, _AS_IS)

    def _apply_HT(self, y):
        return self._product(y, None, _AS_IS, self._volumes, _TIMES)

    def forward(self, x: np.ndarray) -> np.ndarray:
        # (W (v x)) / Hs, the scalings fused into the order's gather and scatter
        return self._product(self._as_field(x, "x"), self._volumes, _TIMES, self._Hs, _OVER)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        # v (W (g / Hs))
        return self._apply_rows(
            lambda g: self._product(g, self._Hs, _OVER, self._volumes, _TIMES), grad, "grad")


def _mean_cell_volume(centers: np.ndarray, volumes: np.ndarray | None) -> float:
    """Mean cell volume (area in 2D); without volumes, the bounding box's over the cell count."""
    if volumes is not None:
        return float(np.mean(volumes))
    extent = np.ptp(centers, axis=0)
    extent = np.where(extent > 0, extent, max(float(extent.max()), 1.0) / max(len(centers), 1))
    return float(np.prod(extent)) / len(centers)


# Bytes of building a MatrixFilter, from tracemalloc on the 222k-tet bracket (docs/performance.md):
# 4 per stored entry of the upper triangle (its column index; the weights are recomputed),
# (nnz - n) / 2 of them, with up to _BUILD_GROWTH spare capacity while it grows; per cell the
# filter's copies of the centres (24) and volumes (8) and its order (4; the Morton keys and
# their argsort, 16 more, are gone before the pattern is built), indptr, Hs, the KD-tree's
# copy of the centres and its index (~50 together) and one buffer per thread of the product;
# per candidate of a block 60, measured 49 when the block also held its (pairs, 3) distance
# temporaries and 26-29 since the weights are computed pair by pair (kept as the margin).
_BUILD_BYTES_PER_NONZERO = 0.5 * 4.0 * _BUILD_GROWTH
_BUILD_BYTES_PER_CELL = 92.0
_BUILD_BYTES_PER_BLOCK_ENTRY = 60.0


def matrix_filter_estimate(centers: np.ndarray, radius: float, volumes=None) -> tuple[float, float]:
    """(nonzeros of H, peak bytes while building) of a MatrixFilter, estimated before building it."""
    from ..fem.memory import filter_matrix_nonzeros
    n, dim = centers.shape
    nnz = filter_matrix_nonzeros(n, dim, _mean_cell_volume(centers, volumes), radius)
    per_cell = _BUILD_BYTES_PER_CELL + 8.0 * numba.get_num_threads()
    block = _BUILD_BYTES_PER_BLOCK_ENTRY * min(nnz, _BUILD_BLOCK_ENTRIES)
    return nnz, _BUILD_BYTES_PER_NONZERO * nnz + per_cell * n + block


def check_matrix_filter_memory(centers, radius, volumes, memory_budget, what: str) -> None:
    """Raise OptimizationError when building a MatrixFilter would exceed the budget (bytes)."""
    from ..fem.memory import available_memory, format_bytes, memory_source
    nnz, need = matrix_filter_estimate(centers, radius, volumes)
    available = available_memory()
    budget = available if memory_budget is None else float(memory_budget)
    if need > budget:
        raise OptimizationError(
            f"{what}: the convolution filter matrix of {len(centers)} cells with radius {radius:g} "
            f"would hold about {nnz:.3g} nonzeros and need about {format_bytes(need)} to build, "
            f"more than its budget of {format_bytes(budget)} ({format_bytes(available)} available, "
            f"{memory_source()}); use filter='helmholtz' (memory grows with the nodes, not with "
            f"r^dim) or a smaller filter_radius")


# ====================================================================== structured grids
@numba.njit(cache=True, parallel=True)
def _stencil_kernel(x, weights, extent, out):
    """out[k,j,i] = sum of weights[dk,dj,di] * x[k+dk, j+dj, i+di] over in-grid neighbours.

    x, out: (nz, ny, nx); weights: (2cz+1, 2cy+1, 2cx+1), symmetric; extent[dk, dj]: largest
    |di| with a non-zero weight in that stencil row (-1 if none), to skip the zero corners.
    Each output line is accumulated as a sum of shifted input lines (one axpy per stencil
    weight over the whole line, which the compiler vectorizes), parallel over lines.
    """
    nz, ny, nx = x.shape
    cz = weights.shape[0] // 2
    cy = weights.shape[1] // 2
    cx = weights.shape[2] // 2
    for line in numba.prange(nz * ny):
        k = line // ny
        j = line - k * ny
        row = out[k, j]
        for i in range(nx):
            row[i] = 0.0
        for dk in range(max(-cz, -k), min(cz, nz - 1 - k) + 1):
            for dj in range(max(-cy, -j), min(cy, ny - 1 - j) + 1):
                e = extent[dk + cz, dj + cy]
                if e < 0:
                    continue
                src = x[k + dk, j + dj]
                for di in range(-e, e + 1):
                    w = weights[dk + cz, dj + cy, di + cx]
                    if w == 0.0:
                        continue
                    # row[i] += w * src[i + di] for the i with 0 <= i + di < nx, written on
                    # views indexed from 0 (no negative-index wraparound: the loop vectorizes)
                    if di >= 0:
                        n = nx - di
                        a = row[:n]
                        b = src[di:]
                    else:
                        n = nx + di
                        a = row[-di:]
                        b = src[:n]
                    for t in range(n):
                        a[t] += w * b[t]


def _row_sum_index(n: int, c: int, length: int) -> np.ndarray:
    """Index (n,) into an axis of ``length`` = min(n, 2c + 2) cells with the same distances to
    both ends, each clipped at c, as cell i of an axis of n cells."""
    i = np.arange(n)
    if length == n:
        return i
    index = np.full(n, c)
    index[:c] = i[:c]
    near_end = i > n - 1 - c
    index[near_end] = length - 1 - (n - 1 - i[near_end])
    return index


@numba.njit(cache=True, parallel=True)
def _scale_by_row_sums(values, row_sums, kz, ky, kx):
    """values[k, j, i] /= row_sums[kz[k], ky[j], kx[i]] in place; values (nz, ny, nx)."""
    nz, ny, nx = values.shape
    for line in numba.prange(nz * ny):
        k = line // ny
        j = line - k * ny
        sums = row_sums[kz[k], ky[j]]
        row = values[k, j]
        for i in range(nx):
            row[i] /= sums[kx[i]]


class GridFilter(_NormalisedConvolution):
    """Convolution filter on a structured grid by a Numba stencil (no n x n matrix).

    shape: (nx, ny[, nz]) cells; spacing: (hx, hy[, hz]) cell edge lengths; radius: length
    units. Cell (i, j[, k]) has id ``i + nx*(j + ny*k)`` as in :func:`lightweight.structured_grid`.
    """

    def __init__(self, shape, spacing, radius):
        shape = tuple(int(s) for s in shape)
        spacing = tuple(float(h) for h in spacing)
        if len(shape) not in (2, 3) or len(spacing) != len(shape) or min(shape) < 1 \
                or not all(h > 0 and math.isfinite(h) for h in spacing):
            raise OptimizationError(f"GridFilter needs 2 or 3 positive cell counts and as many positive "
                                    f"spacings, got shape {shape}, spacing {spacing}")
        self.radius = r = _check_radius(radius)
        self.shape = shape
        self.spacing = spacing
        self.n = int(np.prod(shape))
        # Work in 3D: a 2D grid is one layer with a flat stencil.
        nx, ny, nz = (shape + (1,))[:3]
        hx, hy, hz = (spacing + (1.0,))[:3]
        self._raster = (nz, ny, nx)
        half = [int(math.floor(r / h)) if d < len(shape) else 0
                for d, h in enumerate((hx, hy, hz))]
        cx, cy, cz = half
        dz = np.arange(-cz, cz + 1)[:, None, None] * hz
        dy = np.arange(-cy, cy + 1)[None, :, None] * hy
        dx = np.arange(-cx, cx + 1)[None, None, :] * hx
        weights = np.maximum(0.0, r - np.sqrt(dz * dz + dy * dy + dx * dx))
        self.weights = np.ascontiguousarray(weights)       # (2cz+1, 2cy+1, 2cx+1)
        nonzero = weights > 0
        offsets = np.abs(np.arange(-cx, cx + 1))
        self._extent = np.where(nonzero.any(axis=2),
                                np.where(nonzero, offsets[None, None, :], -1).max(axis=2),
                                -1).astype(np.int64)
        # Hs_i depends only on which neighbours lie inside the grid, i.e. on the cell's
        # distances to the grid's faces clipped at the stencil's half widths: the row sums of
        # a raster at most 2c + 2 cells long per axis hold every value, summed by the same
        # kernel in the same order (so equal to the bit), and each cell reads its value
        # through three index maps instead of a stored Hs (8 B per cell for the whole run).
        lengths = [min(n_axis, 2 * c + 2) for n_axis, c in zip(self._raster, (cz, cy, cx))]
        small = np.empty(lengths)
        _stencil_kernel(np.ones(lengths), self.weights, self._extent, small)
        self._row_sums = small
        self._row_sum_index = tuple(_row_sum_index(n_axis, c, length) for n_axis, c, length
                                    in zip(self._raster, (cz, cy, cx), lengths))

    @property
    def Hs(self) -> np.ndarray:
        """Row sums of H (n,), sum_j w_ij over the in-grid neighbours (built at each read)."""
        kz, ky, kx = self._row_sum_index
        return self._row_sums[np.ix_(kz, ky, kx)].reshape(-1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self._apply_H(self._as_field(x, "x"))
        _scale_by_row_sums(out.reshape(self._raster), self._row_sums, *self._row_sum_index)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        def transpose(g):
            scaled = np.array(g, dtype=np.float64)           # g / Hs, a new array
            _scale_by_row_sums(scaled.reshape(self._raster), self._row_sums,
                               *self._row_sum_index)
            return self._apply_HT(scaled)
        return self._apply_rows(transpose, grad, "grad")

    @property
    def stencil_size(self) -> int:
        """Number of non-zero weights in the stencil (neighbours of an interior cell, itself included)."""
        return int(np.count_nonzero(self.weights))

    def _apply_H(self, x):
        out = np.empty(self._raster)
        _stencil_kernel(np.ascontiguousarray(x).reshape(self._raster), self.weights, self._extent, out)
        return out.reshape(-1)

    def _apply_HT(self, y):
        return self._apply_H(y)   # symmetric stencil on a regular raster: H^T = H


# ====================================================================== PDE filter
# names the Helmholtz filter accepted before the solver factory: "splu" is SciPy's SuperLU
_HELMHOLTZ_SOLVER_ALIASES = {"auto": "direct", "splu": "superlu"}


def _helmholtz_solver(A: sp.csr_matrix, solver, n_cells: int, mesh_dim: int):
    """The factorized solver of the SPD filter matrix A (n_nodes, n_nodes), from the factory."""
    from ..errors import SolverError
    from ..fem.solvers import FactorizationMemoryError, make_solver
    name = _HELMHOLTZ_SOLVER_ALIASES.get(solver, solver) if isinstance(solver, str) else solver
    try:
        # AMG: one unknown per node, so its near-null space is the constant (dim=1); direct
        # solvers take the mesh's dimension for their fill estimate
        dim = 1 if name == "amg" else mesh_dim
        # one matrix for the whole run: weigh AMG's setup, not a design loop's refresh
        linear_solver = make_solver(name, n_dofs=A.shape[0], dim=dim, reused=False)
        linear_solver.factorize(A)
    except FactorizationMemoryError as exc:
        raise OptimizationError(f"HelmholtzFilter ({n_cells} cells, {A.shape[0]} nodes): {exc}; the "
                                f"filter takes solver='amg' too") from None
    except SolverError as exc:
        raise OptimizationError(f"HelmholtzFilter: {exc}") from None
    return linear_solver


def _scalar_element_integrals(cell_type: str, coords: np.ndarray):
    """Per-cell Laplacian K_e, mass M_e (e, a, a) and load vector T_e = int N_a dV (e, a).

    coords: (e, a, dim) node coordinates of a batch of cells.
    """
    # Linear simplices: the default one-point rule under-integrates the mass matrix.
    degree = 2 if cell_type in ("triangle", "tetra") else None
    xi, w = quadrature(cell_type, degree)
    N, dN = shape_functions(cell_type, xi)                     # (q, a), (q, a, r)
    J = np.einsum("ead,qar->eqdr", coords, dN, optimize=True)      # dx_d / dxi_r
    det = np.linalg.det(J)                                            # (e, q)
    Jinv = np.linalg.inv(J)                                           # (e, q, r, d)
    grad = np.einsum("qar,eqrd->eqad", dN, Jinv, optimize=True)      # dN_a / dx_d
    dV = det * w[None, :]                                             # (e, q)
    # two-operand einsums with optimize=True go through BLAS; batched tiny matmuls are 10x slower
    K = np.einsum("eqad,eqbd->eab", grad * dV[:, :, None, None], grad, optimize=True)
    a = N.shape[1]
    M = (dV @ (N[:, :, None] * N[:, None, :]).reshape(len(w), a * a)).reshape(-1, a, a)
    T = dV @ N                                                        # (e, a)
    return K, M, T, det


class HelmholtzFilter(DensityFilter):
    """PDE (Helmholtz) filter on the mesh nodes; see the module docstring.

    mesh: any solid :class:`~lightweight.mesh.Mesh`; radius: length units (the equivalent
    convolution radius, r_h = radius / (2 sqrt 3)); solver: a name of
    :func:`lightweight.fem.solvers.make_solver` ("auto" = "direct", the fastest installed
    direct solver; "splu" = "superlu"; "amg" for meshes whose factor would not fit) or a
    LinearSolver instance. ``self.solver`` is the name of the solver used.
    """

    kind = "helmholtz"

    def __init__(self, mesh, radius, solver: str = "auto", chunk: int = 100_000):
        self.radius = r = _check_radius(radius)
        self.length_scale = r_h = r / (2.0 * math.sqrt(3.0))
        self.n = n = mesh.n_cells
        n_nodes = mesh.n_nodes
        cells = mesh.cells
        a = cells.shape[1]
        A = sp.csr_matrix((n_nodes, n_nodes))
        t_data = np.empty((n, a))
        # Chunks bound the (e, a, a) temporaries on big meshes.
        for start in range(0, n, chunk):
            c = cells[start:start + chunk]
            K, M, T, det = _scalar_element_integrals(mesh.cell_type, mesh.points[c])
            if np.any(det <= 0):
                mesh.check_cells()   # names the bad cells
                raise MeshError("HelmholtzFilter: non-positive Jacobian in the mesh")
            rows = np.repeat(c, a, axis=1).ravel()
            cols = np.tile(c, (1, a)).ravel()
            A = A + sp.csr_matrix(((r_h * r_h * K + M).ravel(), (rows, cols)),
                                  shape=(n_nodes, n_nodes))
            t_data[start:start + chunk] = T
        # Nodes no cell uses would make A singular; give them an identity row (they stay 0).
        used = np.zeros(n_nodes, dtype=bool)
        used[cells.ravel()] = True
        if not used.all():
            A = A + sp.diags((~used).astype(np.float64))
        self.A = A.tocsr()
        self.T = sp.csr_matrix((t_data.ravel(), (cells.ravel(), np.repeat(np.arange(n), a))),
                               shape=(n_nodes, n))                 # nodes x cells, int N_a dV
        self._TT = self.T.T.tocsr()
        self.cell_volumes = np.asarray(self.T.sum(axis=0)).ravel()
        self.linear_solver = _helmholtz_solver(self.A, solver, n, mesh.points.shape[1])
        self.solver = self.linear_solver.name
        # free MKL's factor when the filter goes away, not when the collector gets to the solver
        weakref.finalize(self, self.linear_solver.release)

    def _solve(self, b: np.ndarray) -> np.ndarray:
        return self.linear_solver.solve(b)

    def forward(self, x):
        x = self._as_field(x, "x")
        nodal = self._solve(self.T @ x)
        return (self._TT @ nodal) / self.cell_volumes

    def backward(self, grad):
        # F = diag(1/V) T^T A^-1 T with A symmetric, so F^T = T^T A^-1 T diag(1/V).
        return self._apply_rows(lambda g: self._TT @ self._solve(self.T @ (g / self.cell_volumes)),
                                grad, "grad")


# ====================================================================== factory
# Share of the available memory a convolution filter matrix may take (make_filter's default).
FILTER_MEMORY_FRACTION = 0.25


def make_filter(mesh, radius, kind: str = "density", memory_budget: float | None = None,
                **options) -> DensityFilter:
    """The filter for ``mesh``: GridFilter on structured grids, MatrixFilter otherwise.

    kind: "density" | "sensitivity" (same operator, stored as ``.kind`` for the loop) or
    "helmholtz" (PDE filter; ``options`` go to :class:`HelmholtzFilter`). radius: length units.
    memory_budget: bytes the MatrixFilter of an unstructured mesh may take while being built
    (default :data:`FILTER_MEMORY_FRACTION` of the available memory). Above it, "density"
    switches to the Helmholtz filter with a warning and "sensitivity" raises OptimizationError
    (module docstring, "Memory").
    """
    if kind not in FILTER_KINDS:
        raise OptimizationError(f"unknown filter {kind!r}; choose one of {', '.join(FILTER_KINDS)}")
    if kind == "helmholtz":
        return HelmholtzFilter(mesh, radius, **options)
    if mesh.grid is not None:
        filt = GridFilter(mesh.grid, mesh.grid_spacing, radius)
    else:
        from ..fem.memory import available_memory, format_bytes, memory_source
        r = _check_radius(radius)
        centers, volumes = mesh.cell_centers(), mesh.cell_volumes()
        available = available_memory()
        budget = FILTER_MEMORY_FRACTION * available if memory_budget is None else float(memory_budget)
        nnz, need = matrix_filter_estimate(centers, r, volumes)
        if need > budget and kind == "density":
            warnings.warn(
                f"filter 'density' on {mesh.n_cells} cells with radius {r:g}: the filter matrix would "
                f"hold about {nnz:.3g} nonzeros and need about {format_bytes(need)} to build, more than "
                f"its budget of {format_bytes(budget)} ({format_bytes(available)} available, "
                f"{memory_source()}); using the Helmholtz (PDE) filter of the same radius instead",
                stacklevel=2)
            return HelmholtzFilter(mesh, r, **options)
        filt = MatrixFilter(centers, r, volumes=volumes, memory_budget=budget)
    filt.kind = kind
    return filt
