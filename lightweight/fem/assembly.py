"""Global stiffness assembly into CSR with a sparsity pattern computed once.

The optimization loop reassembles K hundreds of times with new element scale factors but the
same mesh, so we split assembly into

1. :func:`build_pattern` (once): the node adjacency graph from a node->cell incidence list
   (Numba, O(n_cells * nodes_per_cell^2), no global sort of all (row, col) pairs), expanded to
   DOF-level CSR with sorted column indices. The node graph is kept: the position in
   ``K.data`` of the (i, j) entry of the node pair (a, b) is
   ``indptr[a*dim + i] + dim * (rank of b among a's sorted neighbours) + j``, a binary search
   in a's ~15 neighbours (tet4);
2. :func:`refill` (every iteration): ``data[pos(e, p)] += scale[e] * Ke[e].flat[p]`` in a
   Numba kernel, no sorting, no duplicate summation, no allocation but ``data``. With stored
   element matrices the positions come from the ranks of each cell's node pairs
   (``pair_ranks``, one byte per pair where nodes have < 256 neighbours: 100 B per tet10; the
   entry map of every matrix entry's position, ``entry_map``, was 3.6 kB per tet10 and is
   built now only for :func:`refill_by_entry_map`, the tests' reference);
   :func:`refill_from_geometry` recomputes each element matrix from the node coordinates in
   the kernel and uses the same ranks, so it keeps no matrices per cell.

This is the approach of compiled FE codes (fixed graph, scatter by precomputed positions),
rather than SciPy's COO->CSR conversion, which sorts and sums duplicates on every call.
A structured grid passes a single element matrix (shape (1, n, n)) shared by all cells.
We write it by hand because it is the hot path of the product (docs/architecture.md).

Why recompute instead of store, for linear tets and triangles (constant strain, one
integration point): a stored tet4 matrix is 1152 B and its int32 entry map 576 B, together
more than the whole 2 kB per tet that issue 14 allows, while recomputing V B^T D B is ~1k
flops, about the cost of streaming those 1.7 kB from memory. Matrix-free FE codes make the
same trade for low-order elements (e.g. deal.II's and MFEM's partial assembly recompute
geometric factors on the fly); we keep the assembled CSR (AMG needs it) and drop only the
per-cell tables. Higher-order and hexahedral elements (4-8 integration points, 10-30x the
flops) keep stored matrices, as packed upper triangles (:func:`refill_packed`, half the bytes of
the full matrices: 3.7 kB per tet10; the same sums, the matrices being exactly symmetric). The kernel calls the same element routine as
:func:`lightweight.fem.elements.element_stiffness` and scatters in the same cell order, so
both refills give bit-identical CSR data.

Dirichlet conditions are applied symmetrically on the same pattern: :class:`DirichletMask`
zeroes the rows and columns of fixed DOFs and puts a positive value on their diagonal.

Node order of the matrix (``build_pattern(..., renumber=True)``, unstructured meshes). Mesh
generators number nodes for their own convenience: Gmsh numbers a part's vertex, curve and
surface nodes before its volume nodes, so a tet's four nodes lie ~37k DOFs apart on average in
a 422k-tet bracket and every product with K gathers from all over a 20 MB vector. The pattern
can instead number its rows in reverse Cuthill-McKee order of the node graph (SciPy's
``reverse_cuthill_mckee``, George & Liu), a :class:`NodeOrder` that the system converts vectors
through at the solver's door. Chosen over a space-filling curve of the coordinates (Morton
order: the same product speed, 1.6x the mesh order's on that bracket) because it needs only the
graph; over renumbering the mesh itself because users' node ids, sets and exports keep their
meaning. Cells keep their order (design variables are per cell). Measured on the 422k-tet
bracket (docs/performance.md, "Node order"): K X 27.5 -> 17.2 ms, the PCG of one design
iteration ~0.75x, the same PCG iterations when the aggregation visits nodes in the mesh's order
(:class:`~lightweight.fem.amg.ReusedHierarchy` ``aggregation_order``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp

from .elements import _tet4_stiffness_into, packed_index, reference_tables
from .indexing import unsigned


def element_dofs(cells: np.ndarray, dim: int) -> np.ndarray:
    """Global DOF ids of each cell, node-major, (n_cells, nodes_per_cell*dim) int64."""
    cells = np.asarray(cells, dtype=np.int64)
    return (cells[:, :, None] * dim + np.arange(dim)).reshape(cells.shape[0], -1)


class NodeOrder:
    """Numbering of a mesh's nodes in a global matrix: ``rank`` (n_nodes,) int64 the matrix
    position of each mesh node, ``order`` (n_nodes,) int64 the mesh node at each position.

    DOFs stay node-major (``dim`` per node): mesh DOF ``dim * a + i`` is matrix DOF
    ``dim * rank[a] + i``. Vectors convert with :meth:`to_matrix` / :meth:`to_mesh` over their
    last axis (n_dofs,); matrices with :meth:`matrix_to_mesh`.
    """

    def __init__(self, order: np.ndarray, dim: int):
        self.order = np.ascontiguousarray(order, dtype=np.int64)
        self.dim = int(dim)
        self.rank = np.empty_like(self.order)
        self.rank[self.order] = np.arange(self.order.shape[0], dtype=np.int64)

    @property
    def n_nodes(self) -> int:
        return int(self.order.shape[0])

    def dofs(self, mesh_dofs: np.ndarray) -> np.ndarray:
        """Matrix DOF ids of mesh DOF ids (any shape, int64)."""
        d = np.asarray(mesh_dofs, dtype=np.int64)
        return self.rank[d // self.dim] * self.dim + d % self.dim

    def _gather(self, V: np.ndarray, index: np.ndarray) -> np.ndarray:
        V = np.asarray(V)
        shape = V.shape
        if shape[-1] != self.n_nodes * self.dim:
            raise ValueError(f"vectors of {self.n_nodes * self.dim} DOFs expected, got shape {shape}")
        nodes = V.reshape(shape[:-1] + (self.n_nodes, self.dim))
        return np.ascontiguousarray(np.take(nodes, index, axis=-2)).reshape(shape)

    def to_matrix(self, V: np.ndarray) -> np.ndarray:
        """(..., n_dofs) in mesh numbering -> a new array in matrix numbering."""
        return self._gather(V, self.order)

    def to_mesh(self, V: np.ndarray) -> np.ndarray:
        """(..., n_dofs) in matrix numbering -> a new array in mesh numbering."""
        return self._gather(V, self.rank)

    def points(self, points: np.ndarray) -> np.ndarray:
        """Node coordinates (n_nodes, dim) in matrix order."""
        return np.ascontiguousarray(np.asarray(points)[self.order])

    def matrix_to_mesh(self, A: sp.spmatrix) -> sp.csr_matrix:
        """A (n_dofs, n_dofs) in matrix numbering as a CSR in mesh numbering (a copy)."""
        p = self.dofs(np.arange(self.n_nodes * self.dim))
        out = sp.csr_matrix(A)[p][:, p].tocsr()
        out.sort_indices()
        return out


#: renumber only when the mesh's order spreads neighbours this many times farther apart than
#: reverse Cuthill-McKee: a lexicographic grid is local already, and there METIS inside PARDISO
#: made 10 % more fill from the RCM order (2D 90 x 90 quads), while on Gmsh tets (8x farther
#: apart) it made 2 % less
LOCALITY_GAIN_MIN = 2.0


def mean_neighbour_distance(nbr_ptr: np.ndarray, nbr: np.ndarray,
                            rank: np.ndarray | None = None) -> float:
    """Mean |position(a) - position(b)| over the node graph's edges (CSR rows, node ids in
    ``nbr``), positions ``rank`` (default the ids themselves)."""
    rows = np.repeat(np.arange(nbr_ptr.shape[0] - 1, dtype=np.int64), np.diff(nbr_ptr))
    cols = np.asarray(nbr, dtype=np.int64)
    if rank is not None:
        rows, cols = rank[rows], rank[cols]
    return float(np.abs(rows - cols).mean()) if cols.size else 0.0


def locality_order(nbr_ptr: np.ndarray, nbr: np.ndarray, dim: int) -> NodeOrder | None:
    """Reverse Cuthill-McKee order of a node graph (CSR with sorted rows), or None where the
    graph's own order is within LOCALITY_GAIN_MIN of it (a grid's)."""
    from scipy.sparse.csgraph import reverse_cuthill_mckee
    n = nbr_ptr.shape[0] - 1
    graph = sp.csr_matrix((np.ones(nbr.shape[0], dtype=np.int8), nbr, nbr_ptr), shape=(n, n))
    order = reverse_cuthill_mckee(graph, symmetric_mode=True).astype(np.int64)
    del graph
    candidate = NodeOrder(order, dim)
    now = mean_neighbour_distance(nbr_ptr, nbr)
    if now < LOCALITY_GAIN_MIN * mean_neighbour_distance(nbr_ptr, nbr, candidate.rank):
        return None
    return candidate


@numba.njit(cache=True)
def _node_graph(cells, n_nodes, index_dtype):
    n_cells, n_per = cells.shape
    inc_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
    for e in range(n_cells):
        for a in range(n_per):
            inc_ptr[cells[e, a] + 1] += 1
    for n in range(n_nodes):
        inc_ptr[n + 1] += inc_ptr[n]
    fill = inc_ptr[:-1].copy()
    inc_cell = np.empty(inc_ptr[-1], dtype=np.int64)
    for e in range(n_cells):
        for a in range(n_per):
            n = cells[e, a]
            inc_cell[fill[n]] = e
            fill[n] += 1
    marker = np.full(n_nodes, -1, dtype=np.int64)
    nbr_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
    for n in range(n_nodes):
        count = 0
        for k in range(inc_ptr[n], inc_ptr[n + 1]):
            e = inc_cell[k]
            for b in range(n_per):
                m = cells[e, b]
                if marker[m] != n:
                    marker[m] = n
                    count += 1
        nbr_ptr[n + 1] = nbr_ptr[n] + count
    nbr = np.empty(nbr_ptr[-1], dtype=index_dtype)
    marker[:] = -1
    for n in range(n_nodes):
        pos = nbr_ptr[n]
        for k in range(inc_ptr[n], inc_ptr[n + 1]):
            e = inc_cell[k]
            for b in range(n_per):
                m = cells[e, b]
                if marker[m] != n:
                    marker[m] = n
                    nbr[pos] = m
                    pos += 1
        nbr[nbr_ptr[n]:nbr_ptr[n + 1]].sort()
    return nbr_ptr, nbr


@numba.njit(cache=True)
def _dof_pointers(nbr_ptr, dim):
    n_nodes = nbr_ptr.shape[0] - 1
    indptr = np.zeros(n_nodes * dim + 1, dtype=np.int64)
    for n in range(n_nodes):
        deg = nbr_ptr[n + 1] - nbr_ptr[n]
        for i in range(dim):
            r = n * dim + i
            indptr[r + 1] = indptr[r] + deg * dim
    return indptr


@numba.njit(cache=True)
def _dof_indices(nbr_ptr, nbr, dim, indptr, indices):
    n_nodes = nbr_ptr.shape[0] - 1
    for n in range(n_nodes):
        for i in range(dim):
            pos = indptr[n * dim + i]
            for k in range(nbr_ptr[n], nbr_ptr[n + 1]):
                for j in range(dim):
                    indices[pos] = nbr[k] * dim + j
                    pos += 1


@numba.njit(cache=True, inline="always")
def _neighbour_rank(nbr_ptr, nbr, na, nb):
    """Position of node nb among the sorted neighbours of na, minus nbr_ptr[na]."""
    left, right = nbr_ptr[na], nbr_ptr[na + 1] - 1
    lo = left
    while left < right:
        mid = (left + right) // 2
        if nbr[mid] < nb:
            left = mid + 1
        else:
            right = mid
    return left - lo


@numba.njit(cache=True, parallel=True)
def _entry_map_kernel(cells, nbr_ptr, nbr, indptr, dim, out):
    n_cells, n_per = cells.shape
    n_dof_e = n_per * dim
    for e in numba.prange(n_cells):
        for a in range(n_per):
            na = cells[e, a]
            for b in range(n_per):
                offset = _neighbour_rank(nbr_ptr, nbr, na, cells[e, b]) * dim
                for i in range(dim):
                    row_start = indptr[na * dim + i]
                    for j in range(dim):
                        out[e, (a * dim + i) * n_dof_e + b * dim + j] = row_start + offset + j


BLOCK_CELLS = 256   # consecutive cells scattered by one thread (keeps cache locality)


@numba.njit(cache=True, inline="always")
def _cell_at(cell_order, t):
    """The t-th cell of the refills' visiting order (``cell_order`` empty: cell t)."""
    return t if cell_order.shape[0] == 0 else np.int64(cell_order[t])


@numba.njit(cache=True)
def _colour_blocks(cells, n_nodes, block, cell_order):
    """Greedy colouring of blocks of ``block`` cells consecutive in ``cell_order`` (empty: the
    cells' own order): blocks of one colour share no node.

    Returns (colour_ptr (n_colours+1,), block ids ordered by colour); n_colours = 0 if more
    than 63 colours would be needed (refill then runs serially).
    """
    n_cells, n_per = cells.shape
    n_blocks = (n_cells + block - 1) // block
    used_at_node = np.zeros(n_nodes, dtype=np.int64)      # bitmask of colours touching a node
    colour = np.empty(n_blocks, dtype=np.int64)
    n_colours = 0
    for b in range(n_blocks):
        used = np.int64(0)
        for t in range(b * block, min(n_cells, (b + 1) * block)):
            e = _cell_at(cell_order, t)
            for a in range(n_per):
                used |= used_at_node[cells[e, a]]
        c = 0
        while c < 63 and (used >> c) & 1:
            c += 1
        if c == 63:
            return np.zeros(1, dtype=np.int64), np.arange(n_blocks)
        colour[b] = c
        bit = np.int64(1) << c
        for t in range(b * block, min(n_cells, (b + 1) * block)):
            e = _cell_at(cell_order, t)
            for a in range(n_per):
                used_at_node[cells[e, a]] |= bit
        if c + 1 > n_colours:
            n_colours = c + 1
    ptr = np.zeros(n_colours + 1, dtype=np.int64)
    for b in range(n_blocks):
        ptr[colour[b] + 1] += 1
    for c in range(n_colours):
        ptr[c + 1] += ptr[c]
    fill = ptr[:-1].copy()
    order = np.empty(n_blocks, dtype=np.int64)
    for b in range(n_blocks):
        order[fill[colour[b]]] = b
        fill[colour[b]] += 1
    return ptr, order


@dataclass
class SparsityPattern:
    """CSR structure of a global matrix and where each element entry goes.

    indptr (n_dofs+1,), indices (nnz,) sorted per row (int32 when nnz fits); diagonal (n_dofs,)
    positions of the diagonal entries; colour_ptr/colour_order: blocks of BLOCK_CELLS
    consecutive cells grouped so that blocks of one colour share no node, which lets the refill
    scatter in parallel without atomics while each thread walks consecutive cells;
    node_ptr (n_nodes+1,) int64 and node_neighbours (node_ptr[-1],) the sorted node graph
    (int32 when the node ids fit); cells (n_cells, nodes_per_cell) int64 and dim: what it was
    built from, cells in matrix node numbering. node_order: the :class:`NodeOrder` of the
    matrix's rows when it renumbered the mesh's nodes, else None (rows in mesh order).
    cell_order: the order in which the refills visit the cells (and form their blocks), a
    permutation (n_cells,) int32, or an empty array for the cells' own order (see
    :func:`build_pattern`).
    :attr:`entry_map` (stored element matrices) and :attr:`pair_ranks` (matrices computed in
    the refill) are built on first use.
    """

    n_dofs: int
    indptr: np.ndarray
    indices: np.ndarray
    diagonal: np.ndarray
    colour_ptr: np.ndarray
    colour_order: np.ndarray
    node_ptr: np.ndarray
    node_neighbours: np.ndarray
    cells: np.ndarray
    dim: int
    node_order: NodeOrder | None = None
    cell_order: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32), repr=False)
    _entry_map: np.ndarray | None = field(default=None, repr=False)
    _pair_ranks: np.ndarray | None = field(default=None, repr=False)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def entry_map(self) -> np.ndarray:
        """Position in the CSR data of every element matrix entry, (n_cells, n_dof_e^2).

        int32 when nnz fits, else int64; 576 B per tet4, built on first use and kept.
        """
        if self._entry_map is None:
            n_cells, n_per = self.cells.shape
            n_dof_e = n_per * self.dim
            dtype = np.int32 if self.nnz < np.iinfo(np.int32).max else np.int64
            out = np.empty((n_cells, n_dof_e * n_dof_e), dtype=dtype)
            _entry_map_kernel(self.cells, self.node_ptr, self.node_neighbours, self.indptr, self.dim, out)
            self._entry_map = out
        return self._entry_map

    @property
    def pair_ranks(self) -> np.ndarray:
        """Rank of node b among node a's sorted neighbours for every node pair (a, b) of every
        cell, (n_cells, nodes_per_cell^2), uint8 when every node has < 256 neighbours (16 B per
        tet4), built on first use: entry (a*dim+i, b*dim+j) of cell e sits at
        ``indptr[cells[e, a]*dim + i] + dim * pair_ranks[e, a*n + b] + j``."""
        if self._pair_ranks is None:
            degree = int(np.diff(self.node_ptr).max(initial=0))
            dtype = np.uint8 if degree <= 256 else (np.uint16 if degree <= 65536 else np.int64)
            n_cells, n_per = self.cells.shape
            out = np.empty((n_cells, n_per * n_per), dtype=dtype)
            _pair_ranks_kernel(self.cells, self.node_ptr, self.node_neighbours, out)
            self._pair_ranks = out
        return self._pair_ranks

    def matrix(self, data: np.ndarray) -> sp.csr_matrix:
        """A CSR matrix on this pattern holding ``data`` (no copy, no sorting)."""
        K = sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_dofs, self.n_dofs),
                          copy=False)
        K.has_sorted_indices = True
        return K


def build_pattern(cells: np.ndarray, n_nodes: int, dim: int, renumber: bool = False) -> SparsityPattern:
    """Compute the CSR pattern of the stiffness of ``cells`` (n_cells, nodes_per_cell).

    ``renumber``: rows in the :func:`locality_order` of the node graph (module docstring); the
    pattern then holds a renumbered copy of the cells (8 B per node of a cell) and its
    ``node_order``.
    """
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    node_dtype = np.int32 if n_nodes < np.iinfo(np.int32).max else np.int64
    nbr_ptr, nbr = _node_graph(cells, n_nodes, node_dtype)
    node_order = locality_order(nbr_ptr, nbr, dim) if renumber else None
    if node_order is not None:
        del nbr_ptr, nbr
        # kept by the pattern for the refills: in the node index type (int32: 16 B per tet4)
        cells = np.take(node_order.rank.astype(node_dtype), cells)
        nbr_ptr, nbr = _node_graph(cells, n_nodes, node_dtype)
    indptr = _dof_pointers(nbr_ptr, dim)
    # scipy prefers int32 indices when they fit; it halves memory and speeds up matvecs. The
    # indices are written in their final dtype: an int64 copy would double the build's peak.
    nnz = int(indptr[-1])
    index_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
    indices = np.empty(nnz, dtype=index_dtype)
    _dof_indices(nbr_ptr, nbr, dim, indptr, indices)
    indptr = indptr.astype(index_dtype)
    n_dofs = n_nodes * dim
    diag = np.empty(n_dofs, dtype=np.int64)
    _find_diagonal(indptr, indices, diag)
    cell_order = np.empty(0, dtype=np.int32)
    if node_order is not None:
        # A mesher's cell order (Gmsh's HXT) scatters consecutive cells over the part: blocks of
        # 256 of them touched nodes everywhere, needed > 63 colours on the 422k-tet bracket and
        # the refill ran serially over random rows of K. Visited by their first node in the
        # locality order, a block is a compact patch and its scatter lands in nearby rows.
        cell_order = np.argsort(cells.min(axis=1), kind="stable").astype(np.int32)
    colour_ptr, colour_order = _colour_blocks(cells, n_nodes, BLOCK_CELLS, cell_order)
    return SparsityPattern(n_dofs, indptr, indices, diag, colour_ptr, colour_order, nbr_ptr, nbr,
                           cells, dim, node_order, cell_order)


@numba.njit(cache=True)
def _find_diagonal(indptr, indices, out):
    for r in range(out.shape[0]):
        out[r] = -1
        for k in range(indptr[r], indptr[r + 1]):
            if indices[k] == r:
                out[r] = k
                break


@numba.njit(cache=True, parallel=True)
def _refill_kernel(entry_map, element_matrices, scale, colour_ptr, colour_order, cell_order,
                   block, data):
    # Blocks of one colour share no node, so their scatters hit disjoint entries: each colour
    # is a race-free parallel loop. Without a colouring (too many colours) run serially.
    n_data = data.shape[0]
    for k in numba.prange(n_data):
        data[k] = 0.0
    n_entries = entry_map.shape[1]
    shared = element_matrices.shape[0] == 1
    n_colours = colour_ptr.shape[0] - 1
    if n_colours == 0:
        for t in range(entry_map.shape[0]):
            e = _cell_at(cell_order, t)
            s = scale[e]
            Ke = element_matrices[0] if shared else element_matrices[e]
            flat = Ke.ravel()
            for p in range(n_entries):
                data[entry_map[e, p]] += s * flat[p]
        return
    n_cells = entry_map.shape[0]
    for c in range(n_colours):
        for i in numba.prange(colour_ptr[c], colour_ptr[c + 1]):
            b = colour_order[i]
            for t in range(b * block, min(n_cells, (b + 1) * block)):
                e = _cell_at(cell_order, t)
                s = scale[e]
                Ke = element_matrices[0] if shared else element_matrices[e]
                flat = Ke.ravel()
                for p in range(n_entries):
                    data[entry_map[e, p]] += s * flat[p]


@numba.njit(cache=True, inline="always")
def _scatter_by_ranks(e, values, packed, start, s, cells, ranks, indptr, dim, data):
    # data[pos] += s * K_e entry by entry, in the entry map's order (row-major over K_e: node a,
    # component i, node b, component j), so the sums equal _refill_kernel's bit for bit. K_e is
    # values[e] (values[0] if shared): row-major (start[r] = r n) or, if packed, its upper
    # triangle (start[r] + c is entry (r, c) for c >= r; (c, r) below the diagonal)
    n_per = cells.shape[1]
    Ke = values[0] if values.shape[0] == 1 else values[e]
    for a in range(n_per):
        for i in range(dim):
            row = unsigned(indptr[cells[e, a] * dim + i])      # lightweight.fem.indexing
            r = a * dim + i
            for b in range(n_per):
                offset = row + unsigned(dim) * unsigned(ranks[e, a * n_per + b])
                for j in range(dim):
                    c = b * dim + j
                    value = Ke[start[c] + r] if packed and c < r else Ke[start[r] + c]
                    # uint64 + int64 is int64 in Numba: j made unsigned keeps the sum unsigned
                    data[offset + unsigned(j)] += s * value


@numba.njit(cache=True, parallel=True)
def _refill_ranks_kernel(cells, ranks, indptr, dim, values, packed, n_dof, scale, colour_ptr,
                         colour_order, cell_order, block, data):
    # _refill_kernel with positions from the node pairs' ranks instead of the entry map
    n_data = data.shape[0]
    for k in numba.prange(n_data):
        data[k] = 0.0
    start = np.empty(n_dof, dtype=np.int64)
    for r in range(n_dof):
        start[r] = packed_index(r, r, n_dof) - r if packed else r * n_dof
    n_cells = cells.shape[0]
    n_colours = colour_ptr.shape[0] - 1
    if n_colours == 0:
        for t in range(n_cells):
            e = _cell_at(cell_order, t)
            _scatter_by_ranks(e, values, packed, start, scale[e], cells, ranks, indptr, dim, data)
        return
    for c in range(n_colours):
        for i in numba.prange(colour_ptr[c], colour_ptr[c + 1]):
            b = colour_order[i]
            for t in range(b * block, min(n_cells, (b + 1) * block)):
                e = _cell_at(cell_order, t)
                _scatter_by_ranks(e, values, packed, start, scale[e], cells, ranks, indptr, dim, data)


def _refill_by_ranks(pattern: SparsityPattern, values: np.ndarray, packed: bool, n_dof_e: int,
                     scale: np.ndarray, data: np.ndarray | None) -> np.ndarray:
    if data is None:
        data = np.empty(pattern.nnz)
    _refill_ranks_kernel(pattern.cells, pattern.pair_ranks, pattern.indptr, pattern.dim,
                         np.ascontiguousarray(values, dtype=np.float64), packed, int(n_dof_e),
                         np.ascontiguousarray(scale, dtype=np.float64), pattern.colour_ptr,
                         pattern.colour_order, pattern.cell_order, BLOCK_CELLS, data)
    return data


def refill(pattern: SparsityPattern, element_matrices: np.ndarray, scale: np.ndarray,
           data: np.ndarray | None = None) -> np.ndarray:
    """CSR data of sum_e scale[e] * K_e on ``pattern``.

    element_matrices: (n_cells, n, n), or (1, n, n) shared by all cells (structured grids).
    scale: (n_cells,) multipliers. data: optional output array (nnz,) to reuse.

    Positions come from the node pairs' ranks (:attr:`SparsityPattern.pair_ranks`, one byte
    per node pair: 100 B per tet10) rather than the entry map (4 B per matrix entry: 3.6 kB
    per tet10, 2.3 kB per hex8), with the same sums bit for bit.
    """
    k, n, _ = element_matrices.shape
    return _refill_by_ranks(pattern, np.ascontiguousarray(element_matrices).reshape(k, n * n),
                            False, n, scale, data)


def refill_packed(pattern: SparsityPattern, packed: np.ndarray, n_dof_e: int, scale: np.ndarray,
                  data: np.ndarray | None = None) -> np.ndarray:
    """:func:`refill` from packed symmetric element matrices (n_cells, n_dof_e (n_dof_e + 1) / 2),
    :func:`lightweight.fem.elements.packed_element_stiffness`: the same sums bit for bit as the
    full matrices give (they are exactly symmetric)."""
    return _refill_by_ranks(pattern, packed, True, n_dof_e, scale, data)


def refill_by_entry_map(pattern: SparsityPattern, element_matrices: np.ndarray, scale: np.ndarray,
                        data: np.ndarray | None = None) -> np.ndarray:
    """:func:`refill` through the entry map (n_cells, n_dof_e^2) positions: the reference the
    rank-based refill is tested against (and the faster of the two where memory is no
    concern: no rank lookups)."""
    if data is None:
        data = np.empty(pattern.nnz)
    _refill_kernel(pattern.entry_map, np.ascontiguousarray(element_matrices),
                   np.ascontiguousarray(scale, dtype=np.float64), pattern.colour_ptr,
                   pattern.colour_order, pattern.cell_order, BLOCK_CELLS, data)
    return data


#: cell types whose element matrices :func:`refill_from_geometry` recomputes (one integration
#: point, constant strain); the others keep stored matrices.
COMPUTED_CELL_TYPES = ("tetra",)


@numba.njit(cache=True, parallel=True)
def _pair_ranks_kernel(cells, nbr_ptr, nbr, out):
    n_cells, n_per = cells.shape
    for e in numba.prange(n_cells):
        for a in range(n_per):
            for b in range(n_per):
                out[e, a * n_per + b] = _neighbour_rank(nbr_ptr, nbr, cells[e, a], cells[e, b])


@numba.njit(cache=True, inline="always")
def _scatter_tet4(e, points, cells, dN_ref, weight, D, thickness, s, ranks, indptr, coords, J,
                  inv, grad, DB, Ke, data):
    # K_e of tet e from its node coordinates, scattered by node pairs: data[pos] += s * K_e
    for a in range(4):
        for i in range(3):
            coords[a, i] = points[cells[e, a], i]
    _tet4_stiffness_into(coords, dN_ref, weight, D, thickness, J, inv, grad, DB, Ke)
    for a in range(4):
        na = unsigned(3 * cells[e, a])
        # the three rows of node a: hoisted out of the pair loop (one random read each, not 4);
        # unsigned positions (lightweight.fem.indexing)
        row0, row1, row2 = unsigned(indptr[na]), unsigned(indptr[na + 1]), unsigned(indptr[na + 2])
        for b in range(4):
            offset = unsigned(3) * unsigned(ranks[e, 4 * a + b])
            # j unsigned: uint64 + int64 is int64 in Numba (the guard would come back)
            for j in range(unsigned(3)):
                data[row0 + offset + j] += s * Ke[a * 3, b * 3 + j]
            for j in range(unsigned(3)):
                data[row1 + offset + j] += s * Ke[a * 3 + 1, b * 3 + j]
            for j in range(unsigned(3)):
                data[row2 + offset + j] += s * Ke[a * 3 + 2, b * 3 + j]


@numba.njit(cache=True, parallel=True)
def _refill_tet4_kernel(points, cells, dN_ref, weight, D, thickness, scale, ranks, indptr,
                        colour_ptr, colour_order, cell_order, block, data):
    # Same colouring and cell order as _refill_kernel, so the sums are bit-identical to it.
    n_data = data.shape[0]
    for k in numba.prange(n_data):
        data[k] = 0.0
    n_cells = cells.shape[0]
    n_colours = colour_ptr.shape[0] - 1
    if n_colours == 0:
        coords, J, inv, grad = np.empty((4, 3)), np.empty((3, 3)), np.empty((3, 3)), np.empty((4, 3))
        DB, Ke = np.empty((6, 12)), np.empty((12, 12))
        for t in range(n_cells):
            e = _cell_at(cell_order, t)
            _scatter_tet4(e, points, cells, dN_ref, weight, D, thickness, scale[e], ranks, indptr,
                          coords, J, inv, grad, DB, Ke, data)
        return
    for c in range(n_colours):
        for i in numba.prange(colour_ptr[c], colour_ptr[c + 1]):
            b = colour_order[i]
            coords, J, inv, grad = np.empty((4, 3)), np.empty((3, 3)), np.empty((3, 3)), np.empty((4, 3))
            DB, Ke = np.empty((6, 12)), np.empty((12, 12))
            for t in range(b * block, min(n_cells, (b + 1) * block)):
                e = _cell_at(cell_order, t)
                _scatter_tet4(e, points, cells, dN_ref, weight, D, thickness, scale[e], ranks,
                              indptr, coords, J, inv, grad, DB, Ke, data)


def refill_from_geometry(pattern: SparsityPattern, cell_type: str, points: np.ndarray,
                         D: np.ndarray, thickness: float, scale: np.ndarray,
                         data: np.ndarray | None = None) -> np.ndarray:
    """CSR data of sum_e scale[e] * K_e on ``pattern``, K_e computed in the kernel.

    Equal bit for bit to ``refill(pattern, element_stiffness(cell_type, points[cells], D,
    thickness)[0], scale)`` without the (n_cells, n, n) matrices and the entry map: per cell
    only :attr:`SparsityPattern.pair_ranks` (16 B per tet). cell_type: one of
    COMPUTED_CELL_TYPES; points: (n_nodes, 3) node coordinates in the mesh's order (put in
    the pattern's ``node_order`` here: 24 B per node); D: (6, 6) elasticity matrix;
    scale: (n_cells,) multipliers; data: optional output array (nnz,) to reuse.
    """
    if cell_type not in COMPUTED_CELL_TYPES:
        raise ValueError(f"refill_from_geometry computes {COMPUTED_CELL_TYPES} cells, not {cell_type!r}")
    if data is None:
        data = np.empty(pattern.nnz)
    dN_ref, weights = reference_tables(cell_type)
    if pattern.node_order is not None:
        points = pattern.node_order.points(points)
    _refill_tet4_kernel(np.ascontiguousarray(points, dtype=np.float64), pattern.cells, dN_ref[0],
                        float(weights[0]), np.ascontiguousarray(D, dtype=np.float64),
                        float(thickness), np.ascontiguousarray(scale, dtype=np.float64),
                        pattern.pair_ranks, pattern.indptr, pattern.colour_ptr,
                        pattern.colour_order, pattern.cell_order, BLOCK_CELLS, data)
    return data


def add_to_diagonal(pattern: SparsityPattern, data: np.ndarray, dofs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Add ``values`` (k,) to K's diagonal at ``dofs`` (k,) in CSR ``data`` (nnz,), in place.

    Springs to ground (bushings) are diagonal terms independent of the design: they are added
    after :func:`refill`, which overwrites ``data``, on every refill.
    """
    np.add.at(data, pattern.diagonal[np.asarray(dofs, dtype=np.int64)], np.asarray(values, dtype=float))
    return data


@numba.njit(cache=True)
def _constrained_entries(indptr, indices, fixed_mask):
    n = indptr.shape[0] - 1
    count = 0
    for r in range(n):
        for k in range(indptr[r], indptr[r + 1]):
            if fixed_mask[r] or fixed_mask[indices[k]]:
                count += 1
    out = np.empty(count, dtype=np.int64)
    pos = 0
    for r in range(n):
        for k in range(indptr[r], indptr[r + 1]):
            if fixed_mask[r] or fixed_mask[indices[k]]:
                out[pos] = k
                pos += 1
    return out


class DirichletMask:
    """Symmetric elimination of fixed DOFs on a fixed CSR pattern.

    ``apply(data)`` zeroes every entry in a fixed row or column and sets the fixed diagonal to
    the mean free diagonal, so the system stays SPD and well scaled for iterative solvers.
    """

    def __init__(self, pattern: SparsityPattern, fixed_dofs: np.ndarray):
        self.pattern = pattern
        self.fixed_dofs = np.asarray(fixed_dofs, dtype=np.int64)
        mask = np.zeros(pattern.n_dofs, dtype=np.bool_)
        mask[self.fixed_dofs] = True
        self.fixed_mask = mask
        self.entries = _constrained_entries(pattern.indptr, pattern.indices, mask)
        self.fixed_diagonal = pattern.diagonal[self.fixed_dofs]
        self.free_diagonal = pattern.diagonal[~mask]

    def apply(self, data: np.ndarray, in_place: bool = False) -> tuple[np.ndarray, float]:
        """Constrained copy of ``data`` (``in_place``: ``data`` itself, constrained) and the
        diagonal value used for fixed DOFs."""
        out = data if in_place else data.copy()
        diag_value = float(np.mean(np.abs(data[self.free_diagonal]))) if self.free_diagonal.size else 1.0
        out[self.entries] = 0.0
        out[self.fixed_diagonal] = diag_value
        return out, diag_value


def coo_assembly(cells: np.ndarray, n_nodes: int, dim: int, element_matrices: np.ndarray,
                 scale: np.ndarray) -> sp.csr_matrix:
    """Reference assembly the way SciPy ports of top88 do it (COO -> CSR, duplicates summed).

    Used by tests and benchmarks as the independent twin of :func:`refill`.
    """
    dofs = element_dofs(cells, dim)
    n_e = dofs.shape[1]
    rows = np.repeat(dofs, n_e, axis=1).ravel()
    cols = np.tile(dofs, (1, n_e)).ravel()
    if element_matrices.shape[0] == 1:
        vals = (scale[:, None] * element_matrices[0].ravel()[None, :]).ravel()
    else:
        vals = (scale[:, None, None] * element_matrices).ravel()
    return sp.coo_matrix((vals, (rows, cols)), shape=(n_nodes * dim,) * 2).tocsr()
