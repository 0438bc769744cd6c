"""Geometric multigrid-preconditioned CG for structured quad (2D) and hex (3D) grids.

Approach (after Amir, Aage & Lazarov 2014, "On multigrid-CG for efficient topology
optimization", and TopOpt_in_PETSc, Aage et al. 2015): conjugate gradients preconditioned by
one V-cycle of a geometric hierarchy with factor-2 coarsening per axis, trilinear (bilinear)
prolongation P, Galerkin coarse operators A_c = P^T A P, Chebyshev-Jacobi smoothing and a
sparse direct solve on the coarsest grid. Galerkin coarsening keeps the 1e9 stiffness contrast
of SIMP designs on every level (rediscretising with averaged densities smears thin members
into the void and loses robustness, as Amir et al. report); Chebyshev with Jacobi scaling is
what PETSc's GAMG/MG use as the default smoother and, being a fixed polynomial in D^-1 A, it
is insensitive to the local scaling and keeps the V-cycle symmetric for CG.

How each piece is built, and why:

* Fine level, matrix-free: all cells of a grid are translated copies, so K = sum_e s_e Ke with
  one element matrix Ke and a scale per cell. The matvec is a Numba kernel, element by element
  in 2^dim colours (cells of one colour share no node), parallel over rows of cells, so no two
  threads write to the same entry. Memory: the scale field plus vectors (no fine CSR).
  In 3D the cells of one row are multiplied as a block, (24 x 24) @ (24 x m), so the loop over
  cells is the vectorised one (the per-cell 24-term dot products stayed scalar in Numba), and
  grids of 4 or more cell layers go layer by layer (even layers in parallel, then odd ones)
  instead of colour by colour, so the vectors are streamed twice per apply instead of 8 times.
* Mixed precision: inside the V-cycle the fine level (smoothing, residual, the fine side of
  the transfers) runs in float32 (``vcycle_dtype``; the common mixed-precision pattern of a
  single-precision preconditioner inside a double-precision Krylov loop, whose residuals
  keep the double-precision accuracy): twice the SIMD lanes of the fine kernel and half the
  bytes of its vectors, while PCG, its matvec and the coarse levels stay float64. The
  preconditioner is then symmetric only to single rounding (~1e-7 relative), which CG
  tolerates: iteration counts were identical on the PETSc problem's iterates at 64x32x32 and
  128x64x64.
* Intermediate levels (symmetric half storage, no indices): each node keeps only its blocks
  with the neighbours that follow it in node order (3D: itself and 13 of its 26 neighbours,
  42 values per row instead of 81; :func:`_half_stencil_apply`), since the Galerkin operator
  is symmetric. The matvec is out = U X (per node, a gather of 42 X values and constant-length
  dot products, which LLVM vectorises) plus U^T X, accumulated in the same pass over the
  row's values and scattered to the neighbours, which lie in the node's own k-plane or the
  next one: even k-planes run in parallel, then odd ones. Half the bytes of the largest item
  of the hierarchy (level 1 of 128x64x64: 131 -> 68 B per fine hex) and of its matvec's
  traffic; a gather of the transposed blocks instead would have broken the constant-length
  rows. Level 1 of 128x64x64 (1 or 2 threads): 0.6-0.9x the time of the full-row kernel; at
  64x32x32, where it fits in the cache, about the same; V-cycles within noise of before.
* Coarse element matrices straight from the fine scales: a level-l coarse cell covers
  f^dim fine cells (f = 2^l), and for nested grids trilinear interpolation restricted to one
  coarse cell maps its nodal values to each fine cell's nodal values through a fixed matrix
  Q_pos (pos = position of the fine cell inside the coarse one). Hence the Galerkin product is
  element-wise and exact:  Ke_l[E] = sum_{c in E} s_c Q_pos^T Ke Q_pos,  i.e. one dense
  (n_l, f^dim) @ (f^dim, n_e^2) matrix product with the tables G_pos = Q_pos^T Ke Q_pos
  precomputed once. Coarse cells are processed in slabs and scattered into a CSR matrix whose
  structured 27-point (9-point) pattern we compute directly, so no (n_cells, 24, 24) array or
  element->CSR map is ever held for the whole grid. Intermediate levels keep only the upper
  half's values (columns are implied by the grid, :func:`_half_stencil_apply`) and store them
  in float32 (``coarse_dtype``; arithmetic stays float64): the first coarse level is the
  largest item of the hierarchy (~70 B per fine hex so stored, ~400 B as float64 CSR), and
  PCG iteration counts on optimizer iterates were the same as with float64. The coarsest
  level is float64 CSR with indices (the direct solver needs them).
* Supports: we take Galerkin of the *constrained* fine operator, A_1 = (D P)^T A (D P) with D
  zeroing fixed fine DOFs. Element-wise this means fine cells touching a fixed DOF use
  D_e Ke D_e; their (few, boundary) corrections s_c Q^T (D_e Ke D_e - Ke) Q are added on top.
  This works for any fixed mask (clamped faces, single components, points). A coarse DOF whose
  whole interpolation support is fixed has an all-zero row/column: it is marked "dead", held
  at zero by the transfers and given a unit diagonal in the coarsest direct solve.
* Coarsening stops when a level has at most ``coarse_max_dofs`` DOFs or a cell count per axis
  is odd (such a grid cannot be halved; its coarsest level is then larger and the direct
  solve dearer, so prefer even counts, ideally multiples of 2^(levels-1)). By default 20 000
  DOFs; 3D grids of a million DOFs or more go on to at most 1 000 (the deep hierarchy below).
* Deep hierarchy of large 3D grids (memory; docs/performance.md, "Memory per hex, sixth
  pass"): a direct coarsest of 4 131 DOFs holds a ~21 MB factor (40 B per hex of 128x64x64,
  beyond its float64 fine vector), so such grids coarsen once more, to 675 DOFs. That level
  is the Galerkin product P^T A P of the level above, read off 3^dim * dim probes (one
  displacement component of the nodes of one colour (i % 3, j % 3, k % 3): no two of them
  share a stencil, so prolonging, multiplying and restricting the probe gives each row's
  coefficient with its probed neighbour; :meth:`GridMultigrid._assemble_by_product`): no
  factor-16 table (18.9 MB). A Galerkin product of products is the product with the composed
  interpolation, so this is the operator the tables would give, within the level above's
  float32 rounding (tested against scipy's). The level above, no longer solved exactly,
  smooths with ``coarse_smoother_degree`` (12) Chebyshev steps: the PETSc problem's MG-PCG
  iterations at 128x64x64 stay those of the direct 4 131-DOF solve but one in ten design
  iterations; at 64x32x32 the same change cost up to 7 iterations late in a run, which is why
  it starts at a million DOFs. Their first coarse level is also stored in bfloat16
  (``bfloat16_levels``): the upper 16 bits of each float32 value, rounded to nearest even
  (68 -> 34 B per fine hex), summed in float32 in a window of node layers and rounded layer
  by layer, read by a bitcast (same speed as float32). Never the level a coarsest product is
  read from: its rounding reached the direct solve as an indefinite matrix.
* Smoother: Chebyshev of degree ``smoother_degree`` on [lambda_max/ratio, lambda_max] of
  D^-1 A (each step one fused Numba pass, no vector temporaries); or damped Jacobi. Degrees 3
  and 4 cut PCG iterations by only 10-15 % on optimizer iterates, so 2 is the cheapest. On the fine level lambda_max is bounded exactly by that of the
  Jacobi-scaled element matrix (whatever the cell scales), on coarse levels estimated by a
  short Lanczos run at every update (times 1.1).
* Coarsest level: the fastest installed direct solver from
  :func:`~lightweight.fem.solvers.make_solver` (PARDISO, else CHOLMOD, else SuperLU; any name
  or LinearSolver instance through ``coarse_solver``), re-using its symbolic analysis across
  updates and calling it without per-solve residual checks (pypardiso's own ``solve``
  compared the whole matrix with the factorized one on every call: 5-7 ms per V-cycle on a
  4k-15k DOF coarse grid against 1.5 ms).
* Outer: block PCG over all load cases at once (each case its own step lengths), stopping per
  case on ||r|| / ||b|| <= rtol over the free DOFs.

Constrained system (the convention of :mod:`lightweight.fem.system`): fixed DOFs f have
K_c[f, f] = fixed_diagonal and zero off-diagonals, so x[f] = rhs[f] / fixed_diagonal, and the
free DOFs solve K_ff x_free = rhs_free (the caller has already moved K_fp u_p to the rhs).
``fixed_diagonal`` defaults to the mean |diagonal| of the free DOFs, the value
:class:`~lightweight.fem.assembly.DirichletMask` uses, so :meth:`GridMultigrid.matvec` equals
the CSR matrix that system.py builds.

Shapes: grid ``shape`` = (nx, ny) or (nx, ny, nz) cells; vectors are (n_dofs,) or
(n_cases, n_dofs) with node-major DOFs (dof = node*dim + comp) and the grid numbering of
:mod:`lightweight.mesh.grid`.
"""

from __future__ import annotations

import time

import numba
import numpy as np
import scipy.sparse as sp
from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic

from ..errors import SolverError
from .memory import map_large_allocations
from .solvers import make_solver

# Element-matrix values per chunk of a level's assembly (float64: ~4 MB; at least one slab)
ASSEMBLY_CHUNK_VALUES = 500_000
# Largest coarsest level (DOFs) by default; 3D grids of DEEP_HIERARCHY_MIN_DOFS or more coarsen
# further, to DEEP_COARSE_MAX_DOFS (128x64x64: 4 131 -> 675 DOFs, 21 MB of direct factor less).
COARSE_MAX_DOFS = 20_000
DEEP_HIERARCHY_MIN_DOFS = 1_000_000
DEEP_COARSE_MAX_DOFS = 1_000
# The coarsest level is the Galerkin product of the level above, read off by probing, when
# that level has at most this many DOFs (81 probes in 3D cost ~1 ms each there); larger ones
# (grids that cannot be halved further) keep the factor^dim tables.
PRODUCT_ABOVE_MAX_DOFS = 40_000

# Local node offsets of a cell in VTK order (quad: ccw; hex: ccw bottom, then top).
_OFFSETS_2D = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.int64)
_OFFSETS_3D = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                        [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=np.int64)


def _cell_offsets(dim: int) -> np.ndarray:
    return _OFFSETS_2D if dim == 2 else _OFFSETS_3D


def _local_index_table(offsets: np.ndarray) -> np.ndarray:
    """local[ox, oy, oz] = local node number of the node at offset (ox, oy, oz) of a cell."""
    table = -np.ones((2, 2, 2), dtype=np.int64)
    for a, (ox, oy, oz) in enumerate(offsets):
        table[ox, oy, oz] = a
    return table


def _grid_dims(shape) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(cells per axis, nodes per axis), both padded to 3 entries; a 2D grid has 1 z-layer."""
    if len(shape) == 2:
        return (shape[0], shape[1], 1), (shape[0] + 1, shape[1] + 1, 1)
    return tuple(shape), (shape[0] + 1, shape[1] + 1, shape[2] + 1)


# ---------------------------------------------------------------------------- fine level kernels
def _make_fine_apply_cellwise(dim: int, dtype=np.float64):
    """Fine matvec kernel, one cell at a time (2D: faster than the blocked kernel, measured
    2.0 vs 2.5 ms per apply at 600x200 quads; the 8-term products are short anyway).

    dtype: the type of Ke, scale, free, U, out and of every product and sum.
    """
    NPC = 2 ** dim          # nodes per cell
    ND = NPC * dim          # DOFs per cell
    DIM = dim
    DT = dtype
    ZERO = dtype(0.0)       # a typed zero: a literal 0.0 accumulator would promote to float64

    # reassociation lets LLVM vectorize the row . u_e reductions (~20 % faster in 3D)
    @numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
    def fine_apply(nodes, cells, offsets, Ke, scale, free, U, out, fixed_diag):
        px, py, pz = nodes
        cx, cy, cz = cells
        n_cases = U.shape[0]
        out[:, :] = 0.0
        node_offset = np.empty(NPC, dtype=np.int64)
        for b in range(NPC):
            node_offset[b] = offsets[b, 0] + px * (offsets[b, 1] + py * offsets[b, 2])
        n_colours = 8 if cz > 1 else 4
        for colour in range(n_colours):
            oi = colour % 2
            oj = (colour // 2) % 2
            ok = colour // 4
            rows_j = (cy - oj + 1) // 2
            rows_k = (cz - ok + 1) // 2
            for row in numba.prange(rows_j * rows_k):
                cj = oj + 2 * (row % rows_j)
                ck = ok + 2 * (row // rows_j)
                ue = np.empty(ND, dtype=DT)
                dofs = np.empty(ND, dtype=np.int64)
                for ci in range(oi, cx, 2):
                    s = DT(scale[ci + cx * (cj + cy * ck)])      # as a copy in DT would hold it
                    base = ci + px * (cj + py * ck)
                    for b in range(NPC):
                        for q in range(DIM):
                            dofs[b * DIM + q] = (base + node_offset[b]) * DIM + q
                    for c in range(n_cases):
                        for r in range(ND):
                            ue[r] = U[c, dofs[r]] * free[dofs[r]]
                        for r in range(ND):
                            t = ZERO
                            for q in range(ND):
                                t += Ke[r, q] * ue[q]
                            out[c, dofs[r]] += s * t
        for d in numba.prange(U.shape[1]):
            if free[d] == 0.0:
                for c in range(n_cases):
                    out[c, d] = fixed_diag * U[c, d]

    return fine_apply


_HEX_NODES = 8        # compile-time sizes of _hex_row_apply (module globals are constants to
_HEX_DOFS = 24        # Numba; sizes read from the arrays made the kernel twice as slow)


@numba.njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _hex_row_apply(U, out, c, free, scale, Ke, node_offset, first_cell, first_node, stride, m,
                   UE, TE):
    """out += K_row (free * U) for m hexahedra of one row of a 3D grid, as one block (case c).

    The cells first_cell + stride * e (e < m) with first nodes first_node + stride * e are
    gathered into UE (n_e, >= m), multiplied as one (n_e x n_e) @ (n_e x m) product whose
    innermost loop runs over the cells (contiguous, so LLVM's loop vectoriser uses full SIMD
    registers; per cell the 24-term dot products stayed scalar: Numba leaves the SLP vectoriser
    off and the constant-trip loops are unrolled before the loop vectoriser), then added to out.
    Within one call cells may share nodes (the scatter is sequential). A module-level function,
    not one made in the kernels' factories: a kernel that closes over a dispatcher gets a new
    cache key in every process, so Numba recompiled it at every start (~5 s).
    """
    npc = _HEX_NODES
    nd = _HEX_DOFS
    dim = 3
    for e in range(m):
        # in UE's type: a float64 scale read by a float32 kernel rounds as a float32 copy would
        s = UE.dtype.type(scale[first_cell + stride * e])
        base = first_node + stride * e
        for b in range(npc):
            nb = (base + node_offset[b]) * dim
            for q in range(dim):
                UE[b * dim + q, e] = U[c, nb + q] * free[nb + q] * s
    for r in range(nd):
        for e in range(m):
            TE[r, e] = 0
    for q in range(nd):
        for r in range(nd):
            k = Ke[r, q]
            for e in range(m):
                TE[r, e] += k * UE[q, e]
    for e in range(m):
        base = first_node + stride * e
        for b in range(npc):
            nb = (base + node_offset[b]) * dim
            for q in range(dim):
                out[c, nb + q] += TE[b * dim + q, e]


@numba.njit(cache=True, inline="always")
def _hex_node_offsets(offsets, px, py):
    """Offsets (8,) of a hexahedron's nodes from its first node, in node ids of the grid."""
    node_offset = np.empty(_HEX_NODES, dtype=np.int64)
    for b in range(_HEX_NODES):
        node_offset[b] = offsets[b, 0] + px * (offsets[b, 1] + py * offsets[b, 2])
    return node_offset


@numba.njit(cache=True, inline="always")
def _fixed_rows(U, out, free, fixed_diag):
    """out = fixed_diag * U on the fixed rows (free == 0) of (n_cases, n_dofs) arrays."""
    for d in numba.prange(U.shape[1]):
        if free[d] == 0.0:
            for c in range(U.shape[0]):
                out[c, d] = fixed_diag * U[c, d]


def _make_fine_apply_blocked(dtype=np.float64):
    """Numba kernel of the constrained 3D fine matvec, cells in 8 colours (grids of < 4 layers).

    dtype: the type of Ke, scale, free, U, out and of every product and sum (float32: twice
    the SIMD lanes in the blocked product and half the bytes per vector entry). Cells of one
    colour share no node, so the rows of a colour run in parallel. Each colour's pass reads and
    writes (nearly) all of U and out: 8 passes over the vectors per apply, which is why
    grids of 4 or more cell layers take the layered kernel below.
    Measured at 64x32x32 on one thread: 8.8 ms per cell-by-cell float64 apply, 6.4 ms
    blocked float64, 4.3 ms blocked float32.
    """
    ND = _HEX_DOFS
    DT = dtype

    @numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
    def fine_apply(nodes, cells, offsets, Ke, scale, free, U, out, fixed_diag):
        px, py, pz = nodes
        cx, cy, cz = cells
        n_cases = U.shape[0]
        out[:, :] = 0.0
        node_offset = _hex_node_offsets(offsets, px, py)
        n_colours = 8 if cz > 1 else 4
        for colour in range(n_colours):
            oi = colour % 2
            oj = (colour // 2) % 2
            ok = colour // 4
            rows_j = (cy - oj + 1) // 2
            rows_k = (cz - ok + 1) // 2
            m = (cx - oi + 1) // 2                  # cells of this colour in one row
            if m == 0:
                continue
            for row in numba.prange(rows_j * rows_k):
                cj = oj + 2 * (row % rows_j)
                ck = ok + 2 * (row // rows_j)
                UE = np.empty((ND, m), dtype=DT)    # scaled element vectors, one column per cell
                TE = np.empty((ND, m), dtype=DT)    # their products with Ke
                for c in range(n_cases):
                    _hex_row_apply(U, out, c, free, scale, Ke, node_offset,
                                   oi + cx * (cj + cy * ck), oi + px * (cj + py * ck), 2, m, UE, TE)
        _fixed_rows(U, out, free, fixed_diag)

    return fine_apply


def _make_fine_apply_layered(dtype=np.float64):
    """The same matvec as :func:`_make_fine_apply_blocked`, by layers of cells (3D grids).

    A layer of cells (fixed k) touches node planes k and k + 1 only, so layers two apart share
    no node: the even layers run in parallel, then the odd ones, each layer by one thread, row
    after row with all cells of a row in one block. A layer's two node planes (~200 kB at
    128 x 64 cells) stay in cache while it is worked, so U and out are streamed about twice per
    apply instead of once per colour (8 times). Measured at 128x64x64 on one thread (AMD EPYC
    Zen 4, best of 7): float32 58 -> 40 ms, float64 76 -> 58-61 ms, the same products summed in
    another order (1.4e-7 relative in float32, 1.8e-16 in float64). Two threads: about equal.
    """
    ND = _HEX_DOFS
    DT = dtype

    @numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
    def fine_apply(nodes, cells, offsets, Ke, scale, free, U, out, fixed_diag):
        px, py, pz = nodes
        cx, cy, cz = cells
        n_cases = U.shape[0]
        out[:, :] = 0.0
        node_offset = _hex_node_offsets(offsets, px, py)
        for parity in range(2):
            for layer in numba.prange((cz - parity + 1) // 2):
                ck = parity + 2 * layer
                UE = np.empty((ND, cx), dtype=DT)
                TE = np.empty((ND, cx), dtype=DT)
                for cj in range(cy):
                    for c in range(n_cases):
                        _hex_row_apply(U, out, c, free, scale, Ke, node_offset,
                                       cx * (cj + cy * ck), px * (cj + py * ck), 1, cx, UE, TE)
        _fixed_rows(U, out, free, fixed_diag)

    return fine_apply


# fewer cell layers than this: the colour kernel (a layer per thread would leave threads idle)
_LAYERED_MIN_LAYERS = 4
_FINE_APPLY = {2: _make_fine_apply_cellwise(2), 3: _make_fine_apply_blocked()}
# float32 twins, used only inside the V-cycle (the outer PCG keeps its float64 matvec)
_FINE_APPLY_F32 = {2: _make_fine_apply_cellwise(2, np.float32), 3: _make_fine_apply_blocked(np.float32)}
_FINE_APPLY_LAYERED = {np.dtype(np.float64): _make_fine_apply_layered(),
                       np.dtype(np.float32): _make_fine_apply_layered(np.float32)}


def _fine_apply(nodes, cells, dim, offsets, Ke, scale, free, U, out, fixed_diag):
    """out = K (free * U) on free rows, fixed_diag * U on fixed rows; U, out (n_cases, n_dofs).

    Element by element in 2^dim colours (parity of the cell index per axis): cells of one
    colour share no node, so threads working on different rows of one colour never write to
    the same entry. Measured 3-4x faster than a per-node gather of the same products, which
    re-reads each element vector 2^dim times. One kernel per dimension and dtype, so the
    element loops have constant trip counts; the cells of a row are multiplied as one block
    (see :func:`_make_fine_apply`). out's dtype (float64 or float32) picks the kernel's
    arithmetic; Ke and scale must have that dtype; U may be float32 in a float64 kernel (the
    PCG's float32 search direction: its values are read exactly).
    """
    if dim == 3 and cells[2] >= _LAYERED_MIN_LAYERS:
        _FINE_APPLY_LAYERED[out.dtype](nodes, cells, offsets, Ke, scale, free, U, out, fixed_diag)
        return
    kernels = _FINE_APPLY_F32 if out.dtype == np.float32 else _FINE_APPLY
    kernels[dim](nodes, cells, offsets, Ke, scale, free, U, out, fixed_diag)


@numba.njit(cache=True, parallel=True)
def _fine_diagonal(nodes, cells, dim, local, Ke, scale, out):
    """Diagonal of the unconstrained K = sum_e s_e Ke, (n_dofs,)."""
    px, py, pz = nodes
    cx, cy, cz = cells
    for row in numba.prange(py * pz):
        j = row % py
        k = row // py
        for i in range(px):
            n = i + px * row
            for p in range(dim):
                out[n * dim + p] = 0.0
            for ck in range(max(k - 1, 0), min(k, cz - 1) + 1):
                for cj in range(max(j - 1, 0), min(j, cy - 1) + 1):
                    for ci in range(max(i - 1, 0), min(i, cx - 1) + 1):
                        s = scale[ci + cx * (cj + cy * ck)]
                        a = local[i - ci, j - cj, k - ck]
                        for p in range(dim):
                            out[n * dim + p] += s * Ke[a * dim + p, a * dim + p]


# ---------------------------------------------------------------------------- transfers
@numba.njit(cache=True, inline="always")
def _parent(i):
    """Coarse parents of fine index i: (first, second, weight of each, count)."""
    if i % 2 == 0:
        return i // 2, i // 2, 1.0, 1
    return (i - 1) // 2, (i + 1) // 2, 0.5, 2


# Both transfers work line by line (a line: the nodes of fixed j, k, contiguous in memory): the
# (bi/tri)linear weights in j and k combine up to 4 (prolongation) or 9 (restriction) whole
# lines with one weight each, a loop over a line's values that vectorises, and only the weights
# along i are applied node by node. The weights are powers of two, so every product is exact
# and only the order of the additions differs from the node-by-node form this replaced
# (1 ulp). From 128x64x64 to its first coarse level, one thread: prolongation 29 -> 4.8 ms,
# restriction 27 -> 5.6 ms.
@numba.njit(cache=True, parallel=True)
def _prolong_add(cnodes, fnodes, dim, Xc, Xf, free_f):
    """Xf += free_f * (P Xc), P the (bi/tri)linear interpolation; (n_cases, n_dofs) arrays."""
    cpx, cpy, cpz = cnodes
    fpx, fpy, fpz = fnodes
    n_cases = Xc.shape[0]
    width = cpx * dim
    for row in numba.prange(fpy * fpz):
        j = row % fpy
        k = row // fpy
        j0, j1, wj, nj = _parent(j)
        k0, k1, wk, nk = _parent(k)
        line = np.empty(width)           # the coarse line interpolated to this (j, k)
        fine0 = row * fpx * dim
        for c in range(n_cases):
            coarse = Xc[c]
            fine = Xf[c]
            for t in range(width):
                line[t] = 0.0
            for kk in range(nk):
                K = k0 if kk == 0 else k1
                for jj in range(nj):
                    J = j0 if jj == 0 else j1
                    w = wj * wk
                    first = (cpx * (J + cpy * K)) * dim
                    for t in range(width):
                        line[t] += w * coarse[first + t]
            for I in range(cpx):
                for p in range(dim):
                    dof = fine0 + 2 * I * dim + p
                    fine[dof] += free_f[dof] * line[I * dim + p]
            for I in range(cpx - 1):         # odd fine nodes: halfway between two coarse ones
                for p in range(dim):
                    dof = fine0 + (2 * I + 1) * dim + p
                    fine[dof] += free_f[dof] * (0.5 * line[I * dim + p]
                                                + 0.5 * line[(I + 1) * dim + p])


@numba.njit(cache=True, parallel=True)
def _restrict(cnodes, fnodes, dim, Xf, Xc, free_f):
    """Xc = P^T (free_f * Xf); (n_cases, n_dofs) arrays."""
    cpx, cpy, cpz = cnodes
    fpx, fpy, fpz = fnodes
    n_cases = Xf.shape[0]
    width = fpx * dim
    for row in numba.prange(cpy * cpz):
        J = row % cpy
        K = row // cpy
        line = np.empty(width)           # the fine lines around (J, K), weighted and summed
        coarse0 = row * cpx * dim
        for c in range(n_cases):
            fine = Xf[c]
            coarse = Xc[c]
            for t in range(width):
                line[t] = 0.0
            for dk in range(-1, 2):
                k = 2 * K + dk
                if k < 0 or k >= fpz:
                    continue
                wk = 1.0 if dk == 0 else 0.5
                for dj in range(-1, 2):
                    j = 2 * J + dj
                    if j < 0 or j >= fpy:
                        continue
                    w = wk * (1.0 if dj == 0 else 0.5)
                    first = (fpx * (j + fpy * k)) * dim
                    for t in range(width):
                        line[t] += w * (free_f[first + t] * fine[first + t])
            for I in range(cpx):
                for p in range(dim):
                    value = line[2 * I * dim + p]
                    if I > 0:
                        value += 0.5 * line[(2 * I - 1) * dim + p]
                    if I < cpx - 1:
                        value += 0.5 * line[(2 * I + 1) * dim + p]
                    coarse[coarse0 + I * dim + p] = value


# ---------------------------------------------------------------------------- coarse CSR levels
@numba.njit(cache=True)
def _grid_pattern(nodes, dim, index_dtype):
    """CSR structure (indptr, indices) of a grid operator: sorted 3^dim node stencil, node-major."""
    px, py, pz = nodes
    n_nodes = px * py * pz
    indptr = np.zeros(n_nodes * dim + 1, dtype=np.int64)
    for n in range(n_nodes):
        i = n % px
        j = (n // px) % py
        k = n // (px * py)
        cnt = ((min(i + 1, px - 1) - max(i - 1, 0) + 1) * (min(j + 1, py - 1) - max(j - 1, 0) + 1)
               * (min(k + 1, pz - 1) - max(k - 1, 0) + 1))
        for p in range(dim):
            indptr[n * dim + p + 1] = indptr[n * dim + p] + cnt * dim
    indices = np.empty(indptr[-1], dtype=index_dtype)
    for n in range(n_nodes):
        i = n % px
        j = (n // px) % py
        k = n // (px * py)
        for p in range(dim):
            pos = indptr[n * dim + p]
            for kk in range(max(k - 1, 0), min(k + 1, pz - 1) + 1):
                for jj in range(max(j - 1, 0), min(j + 1, py - 1) + 1):
                    for ii in range(max(i - 1, 0), min(i + 1, px - 1) + 1):
                        m = ii + px * (jj + py * kk)
                        for q in range(dim):
                            indices[pos] = m * dim + q
                            pos += 1
    return indptr, indices


@numba.njit(cache=True, inline="always")
def _cell_ijk(e, cx, cy):
    """(i, j, k) of cell e of a grid with cx x cy cells per layer (i fastest)."""
    return e % cx, (e // cx) % cy, e // (cx * cy)


@numba.njit(cache=True)
def _scatter_cells(Ke_chunk, first_cell, cells, nodes, offsets, dim, indptr, data):
    """data += element matrices Ke_chunk (m, nd, nd) of cells first_cell.. first_cell+m-1."""
    cx, cy, cz = cells
    px, py, pz = nodes
    npc = offsets.shape[0]
    for m in range(Ke_chunk.shape[0]):
        ci, cj, ck = _cell_ijk(first_cell + m, cx, cy)
        for a in range(npc):
            ia = ci + offsets[a, 0]
            ja = cj + offsets[a, 1]
            ka = ck + offsets[a, 2]
            na = ia + px * (ja + py * ka)
            ilo = -1 if ia > 0 else 0
            jlo = -1 if ja > 0 else 0
            klo = -1 if ka > 0 else 0
            ni = (1 if ia < px - 1 else 0) - ilo + 1
            nj = (1 if ja < py - 1 else 0) - jlo + 1
            for b in range(npc):
                di = offsets[b, 0] - offsets[a, 0]
                dj = offsets[b, 1] - offsets[a, 1]
                dk = offsets[b, 2] - offsets[a, 2]
                slot = ((dk - klo) * nj + (dj - jlo)) * ni + (di - ilo)
                for p in range(dim):
                    start = indptr[na * dim + p] + slot * dim
                    for q in range(dim):
                        data[start + q] += Ke_chunk[m, a * dim + p, b * dim + q]


@numba.njit(cache=True)
def _zero_dead(indptr, indices, data, alive, diag_out):
    """Zero rows/columns of dead DOFs (alive == 0) and write the diagonal into diag_out."""
    n = indptr.shape[0] - 1
    for r in range(n):
        diag_out[r] = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            c = indices[k]
            if alive[r] == 0.0 or alive[c] == 0.0:
                data[k] = 0.0
            elif c == r:
                diag_out[r] = data[k]


@numba.njit(cache=True)
def _colour_probe(nodes, dim, colour, comp, out):
    """out[0] = 1 at DOF comp of the nodes with (i % 3) + 3 (j % 3) + 9 (k % 3) == colour, else 0.

    No two nodes of one colour lie in each other's 3^dim neighbourhood, so a grid operator
    applied to this vector gives each row's coefficient with that colour's one neighbour.
    """
    px, py, pz = nodes
    for n in range(px * py * pz):
        i = n % px
        j = (n // px) % py
        k = n // (px * py)
        hit = (i % 3) + 3 * ((j % 3) + 3 * (k % 3)) == colour
        for p in range(dim):
            out[0, n * dim + p] = 1.0 if hit and p == comp else 0.0


@numba.njit(cache=True)
def _fill_probed(nodes, dim, indptr, indices, colour, comp, product, data):
    """data[e] = product[0, r] for the entries (r, col) whose column is a probed DOF."""
    px, py, pz = nodes
    for r in range(indptr.shape[0] - 1):
        for e in range(indptr[r], indptr[r + 1]):
            col = indices[e]
            if col % dim != comp:
                continue
            m = col // dim
            i = m % px
            j = (m // px) % py
            k = m // (px * py)
            if (i % 3) + 3 * ((j % 3) + 3 * (k % 3)) == colour:
                data[e] = product[0, r]


@numba.njit(cache=True, parallel=True)
def _csr_apply(indptr, indices, data, X, out):
    """out = A X for CSR A and X (n_cases, n)."""
    n = indptr.shape[0] - 1
    n_cases = X.shape[0]
    for r in numba.prange(n):
        for c in range(n_cases):
            t = 0.0
            for k in range(indptr[r], indptr[r + 1]):
                t += data[k] * X[c, indices[k]]
            out[c, r] = t


# ---------------------------------------------------------------------------- intermediate levels
# Symmetric half storage of the intermediate Galerkin levels. Row (n, p) of node n keeps its
# coefficients with the nodes m >= n of its 3^dim neighbourhood only, in a fixed layout of
# HALF_ROW values (no column indices, every node padded to the same length):
#   * run 0: node n itself and node n + 1 (the i + 1 neighbour): 2 * dim values; node n's own
#     block is kept whole (its dim x dim values), so the gather below needs no special case;
#   * then the lines of 3 nodes (i - 1, i, i + 1) at (j + dj, k + dk) for the (dj, dk) above
#     n in node order: (1, 0) in 2D; (1, 0), (-1, 1), (0, 1), (1, 1) in 3D: 3 * dim values each.
# 3D: 42 values per row (14 blocks of 3 x 3) instead of 81 (27 blocks): 131 -> 68 B per fine
# hex for the first coarse level of a 128x64x64 grid. Neighbours outside the grid keep zeros.
# The blocks K_mn with m < n are the transposes of stored ones (the operator is symmetric).


def _half_stencil_lines(dim: int) -> int:
    """Lines of 3 nodes above a node in node order: (3^(dim-1) - 1) / 2 (1 in 2D, 4 in 3D)."""
    return (3 ** (dim - 1) - 1) // 2


@numba.njit(cache=True)
def _half_row_length(dim: int) -> int:
    """Values stored per row of the half layout: 2 dim + lines * 3 dim (10 in 2D, 42 in 3D)."""
    return 2 * dim + ((3 ** (dim - 1) - 1) // 2) * 3 * dim


@numba.njit(cache=True, parallel=True)
def _round_to_bfloat16(values, out):
    """out = the upper 16 bits of float32 ``values``, rounded to nearest even (bfloat16).

    values: float32 (n,); out: uint16 (n,). Finite values only (Galerkin coefficients).
    """
    bits = values.view(np.uint32)
    for t in numba.prange(bits.shape[0]):
        u = bits[t]
        out[t] = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits`` (an LLVM bitcast: no memory)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())
    return types.float32(types.uint32), codegen


@numba.njit(cache=True, inline="always")
def _bfloat16_value(row, t):
    """Value t of a bfloat16 (uint16) layout row as float32: its bits are the upper half."""
    return _float32_from_bits(np.uint32(row[t]) << np.uint32(16))


@numba.njit(cache=True, inline="always")
def _half_line_offset(line):
    """(dj, dk) of line ``line`` of the half layout: (1, 0), then (-1, 1), (0, 1), (1, 1)."""
    if line == 0:
        return 1, 0
    return line - 2, 1


@numba.njit(cache=True, inline="always")
def _half_column(t, i, j, k, px, py, pz, dim):
    """DOF of value t of a half-layout row of node (i, j, k), or -1 if outside the grid."""
    if t < 2 * dim:
        ii, jj, kk, q = i + t // dim, j, k, t % dim
    else:
        u = t - 2 * dim
        dj, dk = _half_line_offset(u // (3 * dim))
        u = u % (3 * dim)
        ii, jj, kk, q = i - 1 + u // dim, j + dj, k + dk, u % dim
    if ii < 0 or ii >= px or jj < 0 or jj >= py or kk >= pz:
        return -1
    return (ii + px * (jj + py * kk)) * dim + q


@numba.njit(cache=True)
def _scatter_cells_half(Ke_chunk, first_cell, cells, nodes, offsets, dim, data, first_node=0):
    """data += the blocks (n, m >= n) of element matrices Ke_chunk (m, nd, nd) of cells
    first_cell.. in the half layout (each entry gets the same additions in the same order as
    in the full CSR layout, so the stored values are those of its upper half).

    first_node: data holds the rows of nodes first_node.. only (a window of node layers)."""
    cx, cy, cz = cells
    px, py, pz = nodes
    npc = offsets.shape[0]
    line = 3 * dim
    half = 2 * dim + ((3 ** (dim - 1) - 1) // 2) * line
    for m in range(Ke_chunk.shape[0]):
        ci, cj, ck = _cell_ijk(first_cell + m, cx, cy)
        for a in range(npc):
            na = (ci + offsets[a, 0]) + px * ((cj + offsets[a, 1]) + py * (ck + offsets[a, 2]))
            for b in range(npc):
                di = offsets[b, 0] - offsets[a, 0]
                dj = offsets[b, 1] - offsets[a, 1]
                dk = offsets[b, 2] - offsets[a, 2]
                if dk < 0 or (dk == 0 and (dj < 0 or (dj == 0 and di < 0))):
                    continue                          # m < n: the transpose of a stored block
                if dj == 0 and dk == 0:
                    slot = di * dim
                else:
                    slot = 2 * dim + (0 if dk == 0 else 2 + dj) * line + (di + 1) * dim
                for p in range(dim):
                    start = ((na - first_node) * dim + p) * half + slot
                    for q in range(dim):
                        data[start + q] += Ke_chunk[m, a * dim + p, b * dim + q]


@numba.njit(cache=True)
def _zero_dead_half(nodes, dim, data, alive, diag_out, first_node=0, last_node=-1):
    """_zero_dead for the half layout: zero the values whose row or column DOF is dead (or
    outside the grid) and write the diagonal into diag_out.

    first_node, last_node: only the rows of nodes [first_node, last_node) (-1: to the end),
    which data holds from its start (a window of node layers)."""
    px, py, pz = nodes
    half = _half_row_length(dim)
    if last_node < 0:
        last_node = px * py * pz
    for n in range(first_node, last_node):
        i = n % px
        j = (n // px) % py
        k = n // (px * py)
        for p in range(dim):
            r = n * dim + p
            diag_out[r] = 0.0
            for t in range(half):
                col = _half_column(t, i, j, k, px, py, pz, dim)
                pos = (r - first_node * dim) * half + t
                if col < 0 or alive[r] == 0.0 or alive[col] == 0.0:
                    data[pos] = 0.0
                elif col == r:
                    diag_out[r] = data[pos]


def _make_half_stencil_apply(dim: int, bfloat16: bool = False):
    """Numba kernel of :func:`_half_stencil_apply` for one dimension (lengths compile-time);
    bfloat16: the values are stored as uint16 upper halves of float32 (decoded per row)."""
    BF16 = bool(bfloat16)          # a constant: LLVM drops the other branch (a captured
    DIM = dim                      # function instead would stop Numba caching the kernel)
    LINE = 3 * dim
    N_LINES = _half_stencil_lines(dim)
    HALF = _half_row_length(dim)

    # out = U X + U^T X - D X with U the stored upper half (D: the diagonal blocks): per node,
    # gather its HALF X values (run 0 and the lines) once, then per row one pass over the row's
    # values that both sums the row's dot product (U X) and accumulates row value * X[n, p]
    # into a buffer (U^T X), which is added to the neighbours' entries afterwards. Both loops
    # have the constant length HALF, so LLVM vectorises them. The scatter writes into the
    # node's own slab (k-plane in 3D, j-row in 2D) and the next one: even slabs run in
    # parallel, then odd ones; an even slab first zeroes out on itself and the next slab.
    @numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
    def half_stencil_apply(nodes, data, X, out):
        px, py, pz = nodes
        n_cases, n_dofs = X.shape
        plane = px * py
        n_slabs = pz if DIM == 3 else py
        rows_per_slab = py if DIM == 3 else 1
        slab_dofs = rows_per_slab * px * DIM
        for parity in range(2):
            for s in numba.prange((n_slabs - parity + 1) // 2):
                slab = parity + 2 * s
                if parity == 0:
                    for c in range(n_cases):
                        for d in range(slab * slab_dofs, min((slab + 2) * slab_dofs, n_dofs)):
                            out[c, d] = 0.0
                xb = np.empty(HALF)           # X of the row's columns
                yb = np.empty(HALF)           # U^T X contributions to those columns
                for row in range(slab * rows_per_slab, (slab + 1) * rows_per_slab):
                    j = row % py
                    k = row // py
                    lines_inside = j + 1 < py and (DIM == 2 or (j > 0 and k + 1 < pz))
                    for i in range(px):
                        n = i + px * row
                        inside = lines_inside and i > 0 and i + 1 < px
                        for c in range(n_cases):
                            Xc = X[c]
                            Oc = out[c]
                            if inside:
                                for q in range(2 * DIM):
                                    xb[q] = Xc[n * DIM + q]
                                for L in range(N_LINES):
                                    dj, dk = _half_line_offset(L)
                                    col = (n - 1 + px * dj + plane * dk) * DIM
                                    for q in range(LINE):
                                        xb[2 * DIM + L * LINE + q] = Xc[col + q]
                            else:
                                for t in range(HALF):
                                    col = _half_column(t, i, j, k, px, py, pz, DIM)
                                    xb[t] = Xc[col] if col >= 0 else 0.0
                            for t in range(HALF):
                                yb[t] = 0.0
                            for p in range(DIM):
                                r = n * DIM + p
                                row_data = data[r * HALF:(r + 1) * HALF]
                                xp = xb[p]
                                acc = 0.0
                                for t in range(HALF):
                                    if BF16:
                                        v = _bfloat16_value(row_data, t)
                                    else:
                                        v = row_data[t]
                                    acc += v * xb[t]
                                    yb[t] += v * xp
                                Oc[r] += acc
                            # U^T X: every stored column except node n's own block
                            if inside:
                                for q in range(DIM):
                                    Oc[(n + 1) * DIM + q] += yb[DIM + q]
                                for L in range(N_LINES):
                                    dj, dk = _half_line_offset(L)
                                    col = (n - 1 + px * dj + plane * dk) * DIM
                                    for q in range(LINE):
                                        Oc[col + q] += yb[2 * DIM + L * LINE + q]
                            else:
                                for t in range(DIM, HALF):
                                    col = _half_column(t, i, j, k, px, py, pz, DIM)
                                    if col >= 0:
                                        Oc[col] += yb[t]

    return half_stencil_apply


_HALF_STENCIL_APPLY = {(dim, bf16): _make_half_stencil_apply(dim, bf16)
                       for dim in (2, 3) for bf16 in (False, True)}


def _half_stencil_apply(nodes, dim, data, X, out):
    """out = A X for a symmetric grid operator stored in the half layout above.

    data: (n_nodes * dim * HALF_ROW,) float32, float64 or uint16 (bfloat16: the upper halves
    of float32 values); arithmetic in float64; X, out: (n_cases, n_dofs) float64. Sums in
    another order than a full-row product.
    """
    _HALF_STENCIL_APPLY[dim, data.dtype == np.uint16](nodes, data, X, out)


@numba.njit(cache=True, parallel=True)
def _chebyshev_update(X, R, AD, Dk, inv_diag, a, b):
    """One fused Chebyshev step: R -= AD (if AD is not None); Dk = a Dk + b D^-1 R; X += Dk.

    X, R, AD, Dk: (n_cases, n); inv_diag: (n,). One pass per case, no temporaries; the loop
    over the entries is the inner one (rows of one case, contiguous), so it vectorises: at 1.6M
    float32 entries, one thread, 7.9 -> 0.85 ms per call (first step) and 10.8 -> 1.45 ms (with
    the residual update); the same operations, so the same numbers bit for bit.
    """
    n_cases, n = X.shape
    for c in range(n_cases):
        # one view per statement: a tuple assignment of views (and a scalar) in the loop around
        # a prange left the arrays unchanged (Numba 0.68, _pcg_step: X, R untouched)
        x_c = X[c]
        r_c = R[c]
        d_c = Dk[c]
        if AD is None:
            if a != 0.0:
                for i in numba.prange(n):
                    d = b * inv_diag[i] * r_c[i] + a * d_c[i]
                    d_c[i] = d
                    x_c[i] += d
            else:
                for i in numba.prange(n):
                    d = b * inv_diag[i] * r_c[i]
                    d_c[i] = d
                    x_c[i] += d
        else:
            ad_c = AD[c]
            for i in numba.prange(n):
                r = r_c[i] - ad_c[i]
                r_c[i] = r
                d = b * inv_diag[i] * r
                if a != 0.0:
                    d += a * d_c[i]
                d_c[i] = d
                x_c[i] += d


@numba.njit(cache=True, parallel=True)
def _pcg_step(X, R, P, AP, alpha):
    """X += alpha P; R -= alpha AP, per case (alpha (n_cases,)); in place, no temporaries.

    The same two roundings per entry as NumPy's ``X += alpha[:, None] * P`` (no fastmath, so
    no fused multiply-add): results equal to the bit, without the two (n_cases, n) products.
    """
    n_cases, n = X.shape
    for c in range(n_cases):          # entries innermost: the loop vectorises
        x_c = X[c]
        r_c = R[c]
        p_c = P[c]
        ap_c = AP[c]
        step = alpha[c]
        for i in numba.prange(n):
            x_c[i] += step * p_c[i]
            r_c[i] -= step * ap_c[i]


@numba.njit(cache=True, parallel=True)
def _pcg_direction(P, Z, beta):
    """P = Z + beta P per case (beta (n_cases,)); Z float32 or float64; in place."""
    n_cases, n = P.shape
    for c in range(n_cases):          # entries innermost: the loop vectorises
        p_c = P[c]
        z_c = Z[c]
        factor = beta[c]
        for i in numba.prange(n):
            p_c[i] = factor * p_c[i] + z_c[i]


@numba.njit(cache=True)
def _mean_over_free(diag, free):
    """Mean of |diag| over the DOFs with free != 0 (1.0 if there are none), without copies."""
    total = 0.0
    count = 0
    for i in range(diag.size):
        if free[i] != 0:
            total += abs(diag[i])
            count += 1
    return total / count if count else 1.0


@numba.njit(cache=True, parallel=True)
def _inverse_diagonal(diag, out):
    """out = 1 / diag where diag > 0, else 0 (out float32 or float64, may be diag itself).

    1/d is formed in float64 and rounded once to out's type: the float32 inverse of a float64
    inverse, without the float64 array."""
    for i in numba.prange(diag.size):
        d = diag[i]
        out[i] = 1.0 / d if d > 0.0 else 0.0
    return out


@numba.njit(cache=True, parallel=True)
def _residual_single(B, AX, out):
    """out = float32(B) - AX per entry, in float32 (B float64, AX and out float32 (n_cases, n)).

    The fine float32 V-cycle reads the PCG's float64 residual as its right-hand side: each
    entry rounded to float32, then subtracted in float32, exactly what a float32 copy of B
    would give, without that copy (one float32 DOF vector per case of the solve's peak).
    """
    n_cases, n = B.shape
    for c in range(n_cases):
        b_c = B[c]
        ax_c = AX[c]
        out_c = out[c]
        for i in numba.prange(n):
            out_c[i] = np.float32(b_c[i]) - ax_c[i]


def _residual(B, AX, out):
    """out = B - AX in out's type (B may be the float64 right-hand side of a float32 level)."""
    if B.dtype == out.dtype:
        return np.subtract(B, AX, out=out)
    _residual_single(B, AX, out)
    return out


def _borrowed_like(B, scratch, count):
    """``count`` arrays shaped and typed like B, C-ordered, carved from ``scratch`` when it has
    room for all of them (two float32 fine-level vectors fit in one float64 one), else new.

    The fine V-cycle's smoother product and direction in the PCG's dead product A P: one
    float64 DOF vector per case less at the solve's peak (25 B/hex at 128x64x64), the same
    arithmetic on other memory.
    """
    if (scratch is None or not scratch.flags.c_contiguous or not scratch.flags.writeable
            or scratch.nbytes < count * B.nbytes):
        return tuple(np.empty_like(B) for _ in range(count))
    flat = scratch.reshape(-1).view(np.uint8)
    return tuple(flat[i * B.nbytes:(i + 1) * B.nbytes].view(B.dtype).reshape(B.shape)
                 for i in range(count))


def _row_dots(A, B):
    """Per-case dot products (n_cases,) of (n_cases, n) arrays, without an (n_cases, n) temporary."""
    return np.einsum("ij,ij->i", A, B)


def _interpolation_tables(dim: int, f: int) -> np.ndarray:
    """Q (f^dim, n_e, n_e): coarse-cell nodal values -> nodal values of each fine sub-cell.

    Sub-cell pos = px + f*(py + f*pz); rows: fine local DOFs, columns: coarse local DOFs.
    """
    offsets = _cell_offsets(dim)
    npc = offsets.shape[0]
    fz = f if dim == 3 else 1
    Q = np.zeros((fz * f * f, npc * dim, npc * dim))
    for pz in range(fz):
        for py in range(f):
            for px in range(f):
                pos = px + f * (py + f * pz)
                for b in range(npc):
                    xi = (np.array([px, py, pz]) + offsets[b]) / f
                    for a in range(npc):
                        w = 1.0
                        for d in range(dim):
                            w *= xi[d] if offsets[a, d] else 1.0 - xi[d]
                        for q in range(dim):
                            Q[pos, b * dim + q, a * dim + q] = w
    return Q


class _Level:
    """One grid of the hierarchy: sizes, operator, diagonal and smoother data."""

    def __init__(self, cells, nodes, dim, factor):
        self.cells = cells                  # cells per axis (z = 1 in 2D)
        self.nodes = nodes                  # nodes per axis (z = 1 in 2D)
        self.factor = factor                # fine cells per coarse cell per axis (2^level)
        self.n_dofs = nodes[0] * nodes[1] * nodes[2] * dim
        self.alive = None                   # (n_dofs,) 1.0 where the DOF takes part, else 0.0
        self.indptr = self.indices = self.data = None
        self.inv_diag = None
        self.lmax = 1.0                     # (estimate of) the largest eigenvalue of D^-1 A
        self.upper = 1.1                    # upper end of the Chebyshev interval
        self.Q = self.G = None              # interpolation / Galerkin tables from the fine grid
        self.from_level_above = False       # Galerkin product of the level above (the coarsest)
        self.degree = 2                     # smoother matvecs per pre-/post-smoothing
        self.bfloat16 = False               # half layout stored as bfloat16 (uint16)


class GridMultigrid:
    """Multigrid-preconditioned CG for K = sum_e s_e Ke on a structured quad/hex grid.

    shape: cells per axis (nx, ny[, nz]); spacing: cell edge lengths (informative only: the
    Galerkin hierarchy is built from ``element_matrix`` and needs no geometry);
    element_matrix: (n_e, n_e) stiffness of one cell at unit scale (8x8 quad, 24x24 hex,
    node-major VTK local order); fixed_mask: (n_dofs,) bool, True for supported DOFs.
    n_levels: levels including the fine grid (None: coarsen until <= coarse_max_dofs).
    smoother: "chebyshev" or "jacobi"; smoother_degree: matvecs per pre-/post-smoothing.
    coarse_dtype: storage of intermediate level operators (float32 halves their memory; all
    arithmetic is float64; the fine level is matrix-free and the coarsest stays float64).
    vcycle_dtype: type of the fine-level smoothing and residual inside the V-cycle. float32
    (default): twice the SIMD lanes in the fine kernel and half the bytes of the fine work
    vectors, diagonal and scale copy; the outer PCG, its matvec and the coarse levels stay
    float64, so the solution still meets rtol in float64 (same PCG iteration counts measured
    on PETSc-problem iterates). float64: the previous, all-double V-cycle.
    coarse_solver: solver of the coarsest level, a name of
    :func:`~lightweight.fem.solvers.make_solver` or a LinearSolver instance (default "direct").
    coarse_max_dofs: None (20 000; 1 000 for 3D grids of DEEP_HIERARCHY_MIN_DOFS or more) or a
    number. coarse_smoother_degree: Chebyshev steps on a level of at most 20 000 DOFs above a
    coarsest Galerkin product (it stands in for an exact solve). bfloat16_levels: how many
    intermediate levels from the first are stored as bfloat16 (None: 1 for 3D grids of
    DEEP_HIERARCHY_MIN_DOFS or more, else 0; never the level above a coarsest product).
    Building a 3D GridMultigrid calls :func:`~lightweight.fem.memory.map_large_allocations`.
    Call :meth:`update` with the per-cell scale before :meth:`solve`, :meth:`vcycle`.
    """

    def __init__(self, shape, spacing=None, element_matrix=None, fixed_mask=None, n_levels=None,
                 smoother: str = "chebyshev", coarse_max_dofs: int | None = None, rtol: float = 1e-8,
                 maxiter: int = 500, smoother_degree: int = 2, chebyshev_ratio: float = 10.0,
                 jacobi_weight: float = 0.6, coarse_dtype=np.float32, coarse_solver="direct",
                 vcycle_dtype=np.float32, coarse_smoother_degree: int = 12,
                 bfloat16_levels: int | None = None):
        shape = tuple(int(n) for n in shape)
        self.dim = dim = len(shape)
        if dim not in (2, 3) or min(shape) < 1:
            raise SolverError(f"GridMultigrid needs 2 or 3 positive cell counts, got shape {shape}")
        self.shape = shape
        self.spacing = None if spacing is None else tuple(float(h) for h in spacing)
        Ke = np.ascontiguousarray(element_matrix, dtype=np.float64)
        nd = 2 ** dim * dim
        if Ke.shape != (nd, nd):
            raise SolverError(f"element_matrix must be ({nd}, {nd}) for a {dim}D grid, got {Ke.shape}")
        self.Ke = Ke
        # lambda_max(D^-1 A) <= lambda_max(diag(Ke)^-1/2 Ke diag(Ke)^-1/2) for A = sum s_e Ke,
        # D = sum s_e diag(Ke), any s_e >= 0 (x^T A x = sum s_e x_e^T Ke x_e), also with
        # fixed DOFs removed: an exact Chebyshev bound for the fine level without Lanczos.
        d = 1.0 / np.sqrt(np.diag(Ke))
        self.fine_lmax_bound = float(np.linalg.eigvalsh(d[:, None] * Ke * d[None, :]).max())
        self.offsets = _cell_offsets(dim)
        self.local = _local_index_table(self.offsets)
        cells, nodes = _grid_dims(shape)
        self.n_cells = cells[0] * cells[1] * cells[2]
        self.n_dofs = nodes[0] * nodes[1] * nodes[2] * dim
        fixed = np.zeros(self.n_dofs, dtype=bool) if fixed_mask is None else np.asarray(fixed_mask, bool)
        if fixed.shape != (self.n_dofs,):
            raise SolverError(f"fixed_mask must have one entry per DOF ({self.n_dofs}), got {fixed.shape}")
        # the supported DOFs as indices (few: a face or some nodes), not a mask per DOF
        self.fixed_dofs = np.flatnonzero(fixed)
        # 1/0 mask of free DOFs; bytes in 3D (exact for 0/1; the float32 and float64 kernels
        # multiply by it in their own type: a quarter of a float32 mask, 9 B per hex at
        # 128x64x64)
        self.free = (~fixed).astype(np.uint8 if dim == 3 else np.float64)
        if smoother not in ("chebyshev", "jacobi"):
            raise SolverError(f"smoother must be 'chebyshev' or 'jacobi', got {smoother!r}")
        self.smoother = smoother
        for name, value in (("smoother_degree", smoother_degree),
                            ("coarse_smoother_degree", coarse_smoother_degree),
                            ("bfloat16_levels", 0 if bfloat16_levels is None else bfloat16_levels),
                            ("coarse_max_dofs", 1 if coarse_max_dofs is None else coarse_max_dofs)):
            if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                    or value < (0 if name == "bfloat16_levels" else 1)):
                raise SolverError(f"{name} must be a whole number >= "
                                  f"{0 if name == 'bfloat16_levels' else 1}, got {value!r}")
        self.smoother_degree = int(smoother_degree)
        self.chebyshev_ratio = float(chebyshev_ratio)
        self.jacobi_weight = float(jacobi_weight)
        self.rtol = float(rtol)
        self.maxiter = int(maxiter)
        if coarse_max_dofs is None:
            # a direct coarsest of up to 20 000 DOFs, except on 3D grids of a million DOFs or
            # more, where its factor (~21 MB at 4 131 DOFs) outweighs a fine vector and the
            # smoothing that replaces it costs little against the fine level (see the module
            # docstring, "Deep hierarchy of large 3D grids")
            coarse_max_dofs = (DEEP_COARSE_MAX_DOFS if dim == 3 and self.n_dofs >= DEEP_HIERARCHY_MIN_DOFS
                               else COARSE_MAX_DOFS)
        self.coarse_max_dofs = int(coarse_max_dofs)
        self.coarse_dtype = np.dtype(coarse_dtype)
        if np.dtype(vcycle_dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise SolverError(f"vcycle_dtype must be float32 or float64, got {vcycle_dtype!r}")
        self.vcycle_dtype = np.dtype(vcycle_dtype)
        if dim == 3:
            # the solve's and the optimizer's big work vectors go back to the system when
            # freed instead of fragmenting the heap (lightweight.fem.memory)
            map_large_allocations()
        self._fine32 = None                 # (Ke, scale, free) in float32 for the V-cycle
        self.fixed_diagonal = 1.0
        self.scale = None
        self.levels = self._build_levels(cells, nodes, n_levels)
        for lev in self.levels:
            lev.degree = self.smoother_degree
        if self.levels[-1].from_level_above and self.levels[-2].n_dofs <= COARSE_MAX_DOFS:
            # The level above a coarsest Galerkin product is small enough to have been the
            # direct coarsest by default (the deep hierarchy of large 3D grids coarsens past
            # it): more smoothing there keeps most of that solve's effect for little time
            # (the module docstring, "Deep hierarchy of large 3D grids").
            self.levels[-2].degree = max(self.smoother_degree, int(coarse_smoother_degree))
        if bfloat16_levels is None:
            bfloat16_levels = 1 if dim == 3 and self.n_dofs >= DEEP_HIERARCHY_MIN_DOFS else 0
        # intermediate levels only, and never the level a coarsest product is read from (its
        # rounding would reach the direct solve: an indefinite coarsest was seen)
        last = len(self.levels) - (2 if self.levels[-1].from_level_above else 1)
        for lev in self.levels[1:min(last, 1 + int(bfloat16_levels))]:
            lev.bfloat16 = True
        self._setup_boundary_corrections()
        for lev in self.levels:
            # the interpolation tables served the Galerkin tables G and the support
            # corrections, both built now (2.7 MB at factor 8: 5 B per hex of 128x64x64)
            lev.Q = None
        # intermediate levels: the half layout (no row pointers, no column indices)
        coarsest = self.levels[-1]
        # the direct solver needs column indices (int32 when they fit: half the memory)
        small = coarsest.n_dofs * 3 ** dim * dim < np.iinfo(np.int32).max
        coarsest.indptr, coarsest.indices = _grid_pattern(coarsest.nodes, dim,
                                                          np.int32 if small else np.int64)
        # Through the one solver factory: the fastest installed direct solver, its symbolic
        # analysis kept across updates. Pivot checks off: Galerkin operators of SIMP designs
        # legitimately have pivots 1e-9 times their diagonal; no residual check per V-cycle
        # (a sparse product as large as the coarse solve itself).
        # No serial-against-parallel timing of PARDISO: it keeps a second factor for good (28
        # B/hex at 128x64x64, a third of the solver's memory beyond its vectors).
        self._direct = make_solver(coarse_solver, check_pivots=False, check_residuals=False)
        if isinstance(coarse_solver, str) and hasattr(self._direct, "tune_threads"):
            self._direct.tune_threads = False
        self.setup_seconds = 0.0

    @property
    def fixed_mask(self) -> np.ndarray:
        """(n_dofs,) bool, True for supported DOFs (built at each read from ``free``)."""
        return self.free == 0

    # ------------------------------------------------------------------ hierarchy
    def _build_levels(self, cells, nodes, n_levels):
        dim = self.dim
        levels = [_Level(cells, nodes, dim, 1)]
        levels[0].alive = self.free
        max_levels = 30 if n_levels is None else int(n_levels)
        while len(levels) < max_levels:
            lev = levels[-1]
            if n_levels is None and lev.n_dofs <= self.coarse_max_dofs:
                break
            axes = lev.cells[:dim]
            if any(c % 2 or c < 2 for c in axes):
                break
            f = lev.factor * 2
            if f ** dim * (2 ** dim * dim) ** 2 > 8_000_000:   # Galerkin table G_l too large
                break
            c_cells = tuple(c // 2 for c in axes) + ((1,) if dim == 2 else ())
            c_nodes = tuple(c + 1 for c in c_cells[:dim]) + ((1,) if dim == 2 else ())
            coarse = _Level(c_cells, c_nodes, dim, f)
            weight = np.empty((1, coarse.n_dofs))
            _restrict(coarse.nodes, lev.nodes, dim, lev.alive[None, :], weight, np.ones(lev.n_dofs))
            # bytes in 3D (the kernels multiply by it in their own type); 2D's plane kernels
            # keep their float64 copy
            coarse.alive = (weight[0] > 0).astype(np.uint8 if dim == 3 else np.float64)
            levels.append(coarse)
        for index, lev in enumerate(levels[1:], start=1):
            if (dim == 3 and index >= 2 and index == len(levels) - 1 and lev.factor >= 8
                    and levels[index - 1].n_dofs <= PRODUCT_ABOVE_MAX_DOFS):
                # The coarsest level of a 3D grid below a small intermediate one: P^T A P of
                # that level by probing instead of a table of factor^3 Galerkin blocks (2.4 MB
                # at factor 8, 18.9 MB at 16; factor 4's 0.3 MB table stays, being cheaper to
                # use than 81 probes). 2D keeps its tables (f^2 blocks: small), which the
                # serial 2D solver's banded coarsest reads too.
                lev.from_level_above = True
                continue
            Q = _interpolation_tables(dim, lev.factor)
            lev.Q = Q
            lev.G = np.einsum("pba,bc,pcd->pad", Q, self.Ke, Q).reshape(Q.shape[0], -1)
        if len(levels) == 1:                      # the fine grid itself is the coarsest level
            levels[0].Q = np.eye(self.Ke.shape[0])[None]
            levels[0].G = self.Ke.reshape(1, -1).copy()
        return levels

    def _setup_boundary_corrections(self):
        """Fine cells touching fixed DOFs and their Galerkin corrections per level."""
        dim = self.dim
        cx, cy, cz = _grid_dims(self.shape)[0]
        px, py, _ = _grid_dims(self.shape)[1]
        ci, cj, ck = np.meshgrid(np.arange(cx), np.arange(cy), np.arange(cz), indexing="ij")
        ci, cj, ck = (a.transpose(2, 1, 0).ravel() for a in (ci, cj, ck))   # cell id order
        fixed_nodes = self.fixed_mask.reshape(-1, dim)          # built here once
        touched = np.zeros(self.n_cells, dtype=bool)
        for o in self.offsets:
            nid = (ci + o[0]) + px * ((cj + o[1]) + py * (ck + o[2]))
            touched |= fixed_nodes[nid].any(axis=1)
        t = np.flatnonzero(touched)
        local_free = np.empty((t.size, len(self.offsets) * dim))
        for a, o in enumerate(self.offsets):
            nid = (ci[t] + o[0]) + px * ((cj[t] + o[1]) + py * (ck[t] + o[2]))
            local_free[:, a * dim:(a + 1) * dim] = ~fixed_nodes[nid]
        # Few distinct local fixed patterns exist (a clamped face has one or two): compute
        # D_e Ke D_e - Ke and its Galerkin images once per (pattern, sub-cell position), not per
        # touched cell; a touched cell stores an index into that table.
        patterns, pattern_of = np.unique(local_free, axis=0, return_inverse=True)
        pattern_of = pattern_of.reshape(-1)
        M = patterns[:, :, None] * self.Ke[None] * patterns[:, None, :] - self.Ke[None]
        ci, cj, ck = ci[t], cj[t], ck[t]
        self._touched = t
        for lev in self.levels:
            if lev.Q is None:
                continue
            f = lev.factor
            fz = f if dim == 3 else 1
            pos = (ci % f) + f * ((cj % f) + f * (ck % fz))
            key = pattern_of * lev.Q.shape[0] + pos
            keys, key_of = np.unique(key, return_inverse=True)
            Qp = lev.Q[keys % lev.Q.shape[0]]
            lev.corr_cells = (ci // f) + lev.cells[0] * ((cj // f) + lev.cells[1] * (ck // fz))
            lev.corr = np.einsum("tba,tbc,tcd->tad", Qp, M[keys // lev.Q.shape[0]], Qp)
            lev.corr_index = key_of.reshape(-1)
            lev.corr_fine = t

    def _level_element_matrices(self, lev, first_slab, last_slab, out=None):
        """Galerkin element matrices of coarse cells in slabs [first, last) (z in 3D, y in 2D).

        out: a float64 buffer of at least (cells, n_e * n_e) values to hold them (the caller
        reuses one for all chunks of a level), else they are allocated.
        """
        dim = self.dim
        f = lev.factor
        cx, cy, cz = lev.cells
        s = self.scale
        if dim == 3:
            block = s.reshape(cz * f, cy * f, cx * f)[first_slab * f:last_slab * f]
            S = block.reshape(-1, f, cy, f, cx, f).transpose(0, 2, 4, 1, 3, 5).reshape(-1, f ** 3)
            per_slab = cx * cy
        else:
            block = s.reshape(cy * f, cx * f)[first_slab * f:last_slab * f]
            S = block.reshape(-1, f, cx, f).transpose(0, 2, 1, 3).reshape(-1, f * f)
            per_slab = cx
        nd = self.Ke.shape[0]
        if out is None:
            Ke = (S @ lev.G).reshape(-1, nd, nd)
        else:
            Ke = np.matmul(S, lev.G, out=out[:S.shape[0] * nd * nd].reshape(-1, nd * nd))
            Ke = Ke.reshape(-1, nd, nd)
        lo, hi = first_slab * per_slab, last_slab * per_slab
        sel = (lev.corr_cells >= lo) & (lev.corr_cells < hi)
        if np.any(sel):
            contrib = lev.corr[lev.corr_index[sel]] * s[lev.corr_fine[sel]][:, None, None]
            np.add.at(Ke, lev.corr_cells[sel] - lo, contrib)
        return Ke, lo

    def _assemble_level(self, lev):
        nd = self.Ke.shape[0]
        n_slabs = lev.cells[2] if self.dim == 3 else lev.cells[1]
        per_slab = lev.cells[0] * (lev.cells[1] if self.dim == 3 else 1)
        step = max(1, int(ASSEMBLY_CHUNK_VALUES // max(1, per_slab * nd * nd)))   # ~4 MB chunks
        half = lev.indices is None              # an intermediate level: the half layout
        if lev.data is None:
            # intermediate levels store float32 values (computed in float64) of their upper
            # half: a quarter of the memory of the full float64 rows of the largest item of the
            # hierarchy (the first coarse level, ~280 -> ~70 B per fine hex) and of the
            # bandwidth of its matvec; only the smoother sees them
            size = lev.n_dofs * _half_row_length(self.dim) if half else lev.indptr[-1]
            dtype = (np.uint16 if lev.bfloat16 else self.coarse_dtype) if half else np.float64
            lev.data = np.zeros(size, dtype=dtype)
        data = lev.data                                     # refilled in place: no second copy
        # one buffer for every chunk's element matrices (a fresh 9 MB block per slab of the
        # first level of 128x64x64 was 32 allocations per update)
        chunk = np.empty(min(n_slabs, step) * per_slab * nd * nd)
        if lev.bfloat16:
            return self._assemble_bfloat16(lev, n_slabs, step, chunk)
        data[:] = 0.0
        for first in range(0, n_slabs, step):
            Ke, lo = self._level_element_matrices(lev, first, min(n_slabs, first + step), chunk)
            if half:
                _scatter_cells_half(Ke, lo, lev.cells, lev.nodes, self.offsets, self.dim, data)
            else:
                _scatter_cells(Ke, lo, lev.cells, lev.nodes, self.offsets, self.dim, lev.indptr,
                               data)
        diag = np.empty(lev.n_dofs)
        if half:
            _zero_dead_half(lev.nodes, self.dim, data, lev.alive, diag)
        else:
            _zero_dead(lev.indptr, lev.indices, data, lev.alive, diag)
        return diag

    def _assemble_bfloat16(self, lev, n_slabs, step, chunk):
        """Fill a bfloat16 half layout through a float32 window of node layers; returns the diagonal.

        The values are summed in float32 exactly as a float32 layout would hold them; a node
        layer is complete once the cell slabs on both sides of it are scattered, and is then
        rounded into the store, so the float32 sums never exist for the whole level (the
        window is one chunk of slabs plus a layer). The diagonal is that of the float32 sums.
        """
        dim = self.dim
        layer_nodes = lev.nodes[0] * (lev.nodes[1] if dim == 3 else 1)
        row_values = dim * _half_row_length(dim)                # per node
        layer_values = layer_nodes * row_values
        window = np.zeros((min(n_slabs, step) + 1) * layer_values, dtype=np.float32)
        diag = np.empty(lev.n_dofs)
        for first in range(0, n_slabs, step):
            last = min(n_slabs, first + step)
            Ke, lo = self._level_element_matrices(lev, first, last, chunk)
            _scatter_cells_half(Ke, lo, lev.cells, lev.nodes, self.offsets, dim, window,
                                first * layer_nodes)
            done = last if last < n_slabs else last + 1        # node layers [first, done) are complete
            n_done = (done - first) * layer_values
            _zero_dead_half(lev.nodes, dim, window, lev.alive, diag, first * layer_nodes,
                            done * layer_nodes)
            _round_to_bfloat16(window[:n_done],
                               lev.data[first * layer_values:first * layer_values + n_done])
            if last < n_slabs:
                # node layer `last` has its lower slab's sums only: it starts the next window
                window[:layer_values] = window[n_done:n_done + layer_values]
                window[layer_values:] = 0.0
        return diag

    def _assemble_by_product(self, lev, above):
        """lev's CSR values = P^T A_above P, read off 3^dim * dim probes; returns the diagonal.

        Each probe is 1 on one displacement component of the coarse nodes of one colour
        (i % 3, j % 3, k % 3): prolonged, multiplied by the level above and restricted, it
        gives every row's coefficient with the one probed neighbour of that colour. The same
        transfers and masks as the V-cycle, so this is the Galerkin operator of the operator
        that level's smoother sees (its float32 values, float64 arithmetic).
        """
        dim = self.dim
        if lev.data is None:
            lev.data = np.zeros(lev.indptr[-1])
        probe = np.empty((1, lev.n_dofs))
        fine = np.empty((1, above.n_dofs))
        product = np.empty((1, above.n_dofs))
        restricted = np.empty((1, lev.n_dofs))
        for colour in range(3 ** dim):
            for comp in range(dim):
                _colour_probe(lev.nodes, dim, colour, comp, probe)
                fine[...] = 0.0
                _prolong_add(lev.nodes, above.nodes, dim, probe, fine, above.alive)
                self._apply_level(above, fine, product)
                _restrict(lev.nodes, above.nodes, dim, product, restricted, above.alive)
                _fill_probed(lev.nodes, dim, lev.indptr, lev.indices, colour, comp, restricted,
                             lev.data)
        diag = np.empty(lev.n_dofs)
        _zero_dead(lev.indptr, lev.indices, lev.data, lev.alive, diag)
        return diag

    def _checked_scale(self, stiffness_scale) -> np.ndarray:
        """stiffness_scale as a contiguous float64 (n_cells,) array, refused unless positive and finite."""
        s = np.ascontiguousarray(stiffness_scale, dtype=np.float64).ravel()
        if s.shape != (self.n_cells,):
            raise SolverError(f"stiffness_scale must have one value per cell ({self.n_cells}), got {s.shape}")
        if not np.all(s > 0) or not np.all(np.isfinite(s)):
            raise SolverError("stiffness_scale must be positive and finite in every cell "
                              "(use a small minimum stiffness such as 1e-9 for void)")
        return s

    # ------------------------------------------------------------------ public API
    def update(self, stiffness_scale, fixed_diagonal: float | None = None) -> None:
        """Rebuild all level operators, smoother bounds and the coarse factorization.

        stiffness_scale: (n_cells,) per-cell multipliers of the element matrix (> 0).
        fixed_diagonal: value of K_c[f, f] on fixed DOFs (None: mean |diagonal| of free DOFs).
        """
        t0 = time.perf_counter()
        s = self._checked_scale(stiffness_scale)
        self.scale = s
        fine = self.levels[0]
        # the previous design's diagonal and float32 scale go before the new ones are built
        fine.inv_diag = None
        self._fine32 = None
        diag = np.empty(self.n_dofs)
        _, nodes = _grid_dims(self.shape)
        _fine_diagonal(nodes, _grid_dims(self.shape)[0], self.dim, self.local, self.Ke, s, diag)
        # In place, one DOF vector at a time (the copies of diag[free], diag * free and the
        # float64 inverse were 87 B/hex above the resident at 128x64x64, the solver's peak).
        # fixed_diagonal only scales the fixed rows, which the PCG never mixes with free ones.
        self.fixed_diagonal = _mean_over_free(diag, self.free) \
            if fixed_diagonal is None else float(fixed_diagonal)
        np.multiply(diag, self.free, out=diag)
        if self.vcycle_dtype == np.float32:
            f32 = np.float32
            fine.inv_diag = np.empty(self.n_dofs, dtype=f32)
            _inverse_diagonal(diag, fine.inv_diag)
            del diag
            free32 = self.free if self.free.dtype in (f32, np.uint8) else self.free.astype(f32)
            # 3D kernels round the float64 scale to float32 as they read it (no float32 copy:
            # 4 B per hex); the 2D cell-wise kernel reads a float32 copy
            scale32 = s if self.dim == 3 else s.astype(f32)
            self._fine32 = (self.Ke.astype(f32), scale32, free32)
        else:
            fine.inv_diag = _inverse_diagonal(diag, diag)
        if len(self.levels) == 1:
            self._assemble_level(fine)
        for index, lev in enumerate(self.levels[1:], start=1):
            if lev.from_level_above:
                d = self._assemble_by_product(lev, self.levels[index - 1])
            else:
                d = self._assemble_level(lev)
            lev.inv_diag = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
        fine.lmax = self.fine_lmax_bound
        fine.upper = self.fine_lmax_bound
        for lev in self.levels[1:-1]:
            lev.lmax = self._estimate_lmax(lev)
            lev.upper = 1.1 * lev.lmax
        coarsest = self.levels[-1]
        # On the level's own values, no copy (4 B/hex at 128x64x64): the direct solver reads
        # a matrix's values only while it factorizes it (its solves read the factor), and the
        # next update refills them before factorizing again. Dead DOFs make a new matrix.
        A = sp.csr_matrix((coarsest.data, coarsest.indices, coarsest.indptr),
                          shape=(coarsest.n_dofs,) * 2)
        dead = np.flatnonzero(coarsest.alive == 0)
        if dead.size:
            A = A + sp.csr_matrix((np.ones(dead.size), (dead, dead)), shape=A.shape)
            A.sort_indices()
        A = A.tocsr()
        A.sort_indices()
        self._direct.factorize(A)
        self.setup_seconds = time.perf_counter() - t0

    def _apply_level(self, lev, X, out):
        """out = A_level X restricted to live DOFs (X, out (n_cases, n_dofs))."""
        if lev is self.levels[0]:
            cells, nodes = _grid_dims(self.shape)
            Ke, scale, free = self._fine32 if out.dtype == np.float32 else (self.Ke, self.scale, self.free)
            _fine_apply(nodes, cells, self.dim, self.offsets, Ke, scale, free, X, out, 0.0)
        else:
            if lev.indices is None:
                _half_stencil_apply(lev.nodes, self.dim, lev.data, X, out)
            else:
                _csr_apply(lev.indptr, lev.indices, lev.data, X, out)
        return out

    def _estimate_lmax(self, lev, steps: int = 12) -> float:
        """Largest eigenvalue of D^-1 A on the live DOFs by Lanczos on D^-1/2 A D^-1/2."""
        rng = np.random.default_rng(12345)
        sq = np.sqrt(lev.inv_diag)
        v = rng.standard_normal(lev.n_dofs) * (sq > 0)
        v /= np.linalg.norm(v)
        v_old = np.zeros_like(v)
        alphas, betas = [], []
        beta = 0.0
        w = np.empty((1, lev.n_dofs))
        for _ in range(min(steps, int(np.count_nonzero(sq)))):
            self._apply_level(lev, (sq * v)[None, :], w)
            wv = sq * w[0]
            alpha = float(v @ wv)
            wv -= alpha * v + beta * v_old
            alphas.append(alpha)
            beta = float(np.linalg.norm(wv))
            if beta < 1e-14 * abs(alpha):
                break
            betas.append(beta)
            v_old, v = v, wv / beta
        k = len(alphas)
        T = np.diag(alphas) + np.diag(betas[:k - 1], 1) + np.diag(betas[:k - 1], -1)
        return float(np.linalg.eigvalsh(T).max())

    def _smooth(self, lev, B, X, zero_guess, work=None, scratch=None):
        """Chebyshev-Jacobi (or damped Jacobi) smoothing of A X = B in place; returns X.

        work: a free array like B to hold the residual (the caller's dead residual), else one
        is allocated; on the fine level each saved vector is one fine-grid vector of the peak.
        scratch: dead memory of the caller (the PCG's product A P between its use and the next
        product) that holds the smoother's product and direction when it has room for them.
        """
        Dinv = lev.inv_diag[None, :]
        # X's type is the level's arithmetic; B may be float64 on a float32 fine level
        tmp, Dk = _borrowed_like(X, scratch, 2)
        R = np.empty_like(X) if work is None else work
        if zero_guess:
            R[...] = B                    # rounds to R's type like a cast copy of B would
        else:
            _residual(B, self._apply_level(lev, X, tmp), R)
        if self.smoother == "jacobi":
            omega = self.jacobi_weight * 2.0 / lev.lmax
            for it in range(lev.degree):
                X += omega * Dinv * R
                if it < lev.degree - 1:
                    R = _residual(B, self._apply_level(lev, X, tmp), np.empty_like(X))
            return X
        upper = lev.upper
        lower = upper / self.chebyshev_ratio
        theta = 0.5 * (upper + lower)
        delta = 0.5 * (upper - lower)
        sigma = theta / delta
        rho = 1.0 / sigma
        _chebyshev_update(X, R, None, Dk, lev.inv_diag, 0.0, 1.0 / theta)
        for _ in range(lev.degree - 1):
            self._apply_level(lev, Dk, tmp)
            rho_new = 1.0 / (2.0 * sigma - rho)
            _chebyshev_update(X, R, tmp, Dk, lev.inv_diag, rho_new * rho, 2.0 * rho_new / delta)
            rho = rho_new
        return X

    def _vcycle(self, level_index, B, scratch=None, work=None):
        """One V-cycle from this level down for the residual B; scratch: see :meth:`_smooth`.

        work: (X, R), two arrays of B's shape in the level's arithmetic that hold the output
        and the level's residual (the PCG passes the same two for all its V-cycles); the
        output is then X itself.
        """
        lev = self.levels[level_index]
        if level_index == len(self.levels) - 1:
            X = self._direct.solve(B.T)          # (n, n_cases); B.T is Fortran order: no copy
            return np.ascontiguousarray(X.T) * lev.alive[None, :]
        if level_index == 0 and self.vcycle_dtype == np.float32:
            # the fine level in single precision, reading the float64 B entry by entry as
            # float32 (no float32 copy of it); its output stays float32 (PCG reads it as is:
            # its float64 values would be the same, so a cast back only costs a vector)
            return self._vcycle_level(0, B, scratch, np.float32, work)
        return self._vcycle_level(level_index, B, scratch, None, work)

    def _vcycle_level(self, level_index, B, scratch=None, dtype=None, work=None):
        """Smooth, restrict the residual, recurse, prolong, smooth (in ``dtype``, default B's)."""
        lev = self.levels[level_index]
        if work is None:
            X, R = np.zeros(B.shape, dtype or B.dtype), None
        else:
            X, R = work
            X[...] = 0.0
        # R holds the pre-smoother's residual, then the restricted one, then the post-smoother's
        X = self._smooth(lev, B, X, zero_guess=True, work=R, scratch=scratch)
        R = self._apply_level(lev, X, np.empty_like(X) if R is None else R)
        _residual(B, R, R)
        coarse = self.levels[level_index + 1]
        Bc = np.empty((B.shape[0], coarse.n_dofs))
        _restrict(coarse.nodes, lev.nodes, self.dim, R, Bc, lev.alive)
        Xc = self._vcycle(level_index + 1, Bc)
        del Bc
        _prolong_add(coarse.nodes, lev.nodes, self.dim, Xc, X, lev.alive)
        del Xc
        # the restricted residual is dead: its buffer holds the post-smoother's residual
        return self._smooth(lev, B, X, zero_guess=False, work=R, scratch=scratch)

    def vcycle(self, r):
        """One V-cycle applied to residual(s) r (n_dofs,) or (n_cases, n_dofs); fixed DOFs -> 0."""
        self._check_ready()
        R = np.atleast_2d(np.asarray(r, dtype=np.float64)) * self.free[None, :]
        Z = self._vcycle(0, np.ascontiguousarray(R)).astype(np.float64, copy=False)
        return Z[0] if np.ndim(r) == 1 else Z

    def matvec(self, u):
        """Constrained K_c u (free rows: K_ff u_free; fixed rows: fixed_diagonal * u)."""
        self._check_ready()
        U = np.ascontiguousarray(np.atleast_2d(np.asarray(u, dtype=np.float64)))
        out = np.empty_like(U)
        cells, nodes = _grid_dims(self.shape)
        _fine_apply(nodes, cells, self.dim, self.offsets, self.Ke, self.scale,
                    self.free, U, out, self.fixed_diagonal)
        return out[0] if np.ndim(u) == 1 else out

    def _check_ready(self):
        if self.scale is None:
            raise SolverError("GridMultigrid.update(stiffness_scale) must be called before solving")

    def solve(self, rhs, x0=None, overwrite_x0: bool = False, overwrite_rhs: bool = False):
        """Solve K_c U = rhs for all load cases by MG-preconditioned block CG.

        rhs: (n_cases, n_dofs) or (n_dofs,); x0: initial guess of the same shape (free DOFs).
        overwrite_x0: the caller hands x0 over (it no longer needs it), so a float64 C-ordered
        (n_cases, n_dofs) x0 becomes the solution's memory instead of being copied: one DOF
        vector per case less at the solve's peak (25 B per hex at 128x64x64), same numbers.
        overwrite_rhs: likewise for rhs, which then holds the PCG's residual (its values are
        lost; only its fixed rows are read, before).
        Returns (U like rhs, info) with info = {"iterations": [per case], "residuals": [relative
        ||r_free|| / ||rhs_free||], "seconds", "setup_seconds", "levels": [dofs per level],
        "converged": bool}.
        """
        self._check_ready()
        t0 = time.perf_counter()
        B = np.atleast_2d(np.asarray(rhs, dtype=np.float64))
        if B.shape[1] != self.n_dofs:
            raise SolverError(f"rhs must have {self.n_dofs} DOFs per case, got {B.shape[1]}")
        n_cases = B.shape[0]
        fixed = self.fixed_dofs
        free = self.free[None, :]
        # Three float64 vectors (X, R, AP), the direction P and the preconditioned residual Z
        # (both float32 with the float32 V-cycle) per case: the free part of B lives in R
        # only (in B's own memory when handed over), the updates are fused in place and Z is
        # dropped once it is folded into P (before, 8-9 float64 vectors with the temporaries
        # of X += alpha P, R -= alpha AP and the cast of Z).
        if x0 is None:
            X = np.zeros(B.shape)
        else:
            X = np.atleast_2d(np.asarray(x0, float))
            if (overwrite_x0 and X.shape == B.shape and X.dtype == np.float64
                    and X.flags.c_contiguous and X.flags.writeable):
                np.multiply(X, free, out=X)
            else:
                X = np.ascontiguousarray(X * free)
        fixed_rhs = B[:, fixed]               # a copy: R may take B's memory
        disposable = (overwrite_rhs and B.dtype == np.float64 and B.flags.c_contiguous
                      and B.flags.writeable and not np.shares_memory(B, X))
        R = np.multiply(B, free, out=B if disposable else np.empty(B.shape))
        del B
        bnorm = np.sqrt(_row_dots(R, R))
        AP = self._apply_level(self.levels[0], X, np.empty_like(X))
        R -= AP
        rnorm = np.sqrt(_row_dots(R, R))
        safe_b = np.where(bnorm > 0, bnorm, 1.0)
        active = rnorm > self.rtol * bnorm
        iters = np.zeros(n_cases, dtype=int)
        # The fine V-cycle's output and residual: two vectors for all V-cycles of this solve
        # (one pair per V-cycle was 18 blocks of 6.5 MB per solve at 128x64x64)
        work = None if len(self.levels) == 1 else tuple(
            np.empty(R.shape, self.vcycle_dtype) for _ in range(2))
        Z = self._vcycle(0, R, scratch=AP, work=work)     # AP is dead until the next product
        # The search direction keeps the V-cycle's type: float32 with the float32 V-cycle,
        # whose output it is, up to the beta-weighted old directions. X and R stay float64 and
        # are updated with the same (exactly read) P and its float64 product A P, so the
        # recurrence still tracks B - A X to float64 round-off; only the conjugacy of the
        # directions is rounded, at the level the float32 preconditioner already works at.
        P = Z                             # the direction takes the first output's memory
        rz = _row_dots(R, Z)
        del Z
        if work is not None:
            work = (np.empty_like(P), work[1])
        for it in range(self.maxiter):
            if not active.any():
                break
            self._apply_level(self.levels[0], P, AP)
            pAp = _row_dots(P, AP)
            alpha = np.where(active, rz / np.where(pAp != 0, pAp, 1.0), 0.0)
            _pcg_step(X, R, P, AP, alpha)
            iters += active
            rnorm = np.sqrt(_row_dots(R, R))
            active &= rnorm > self.rtol * bnorm
            if not active.any():
                break
            Z = self._vcycle(0, R, scratch=AP, work=work)
            rz_new = _row_dots(R, Z)
            beta = np.where(active, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
            _pcg_direction(P, Z, beta)
            del Z
            rz = rz_new
        X[:, fixed] = fixed_rhs / self.fixed_diagonal
        info = {"iterations": iters.tolist(), "residuals": (rnorm / safe_b).tolist(),
                "converged": bool(not active.any()), "seconds": time.perf_counter() - t0,
                "setup_seconds": self.setup_seconds,
                "levels": [lev.n_dofs for lev in self.levels], "coarse_solver": self._direct.name}
        return (X[0] if np.ndim(rhs) == 1 else X), info


def grid_matvec(shape, element_matrix, stiffness_scale, u):
    """Unconstrained K u with K = sum_e s_e Ke on a structured grid (matrix-free).

    shape: (nx, ny[, nz]) cells; element_matrix (n_e, n_e); stiffness_scale (n_cells,);
    u: (n_dofs,) or (n_cases, n_dofs). Returns K u with the shape of u.
    """
    shape = tuple(int(n) for n in shape)
    dim = len(shape)
    cells, nodes = _grid_dims(shape)
    offsets = _cell_offsets(dim)
    U = np.ascontiguousarray(np.atleast_2d(np.asarray(u, dtype=np.float64)))
    out = np.empty_like(U)
    free = np.ones(U.shape[1])
    _fine_apply(nodes, cells, dim, offsets, np.ascontiguousarray(element_matrix, dtype=np.float64),
                np.ascontiguousarray(stiffness_scale, dtype=np.float64), free, U, out, 0.0)
    return out[0] if np.ndim(u) == 1 else out
