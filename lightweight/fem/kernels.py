"""Numba kernels on element vectors: energies u_e^T K_e u_e for all cells and load cases.

Three families: through a cell DOF table (any mesh, stored element matrices); linear tets,
whose constant strain B u_e gives the energy V_e (B v_e)^T D (B u_e) from the node coordinates
(no stored matrices, lightweight.fem.assembly recomputes them too); and structured grids, where
DOFs follow from the cell index and one element matrix serves every cell (no (n_cells,
n_dof_e) table).

Gathering u_e by fancy indexing would allocate (n_cases, n_cells, n_dof_e) arrays each
iteration; the kernel reads U directly through the cell DOF table instead.
"""

from __future__ import annotations

import numba
import numpy as np

from .elements import _tet4_gradients_into, packed_index


@numba.njit(cache=True, parallel=True)
def _element_forms(values, packed, n_dof_e, cell_dofs, U, V, out):
    # v_e^T K_e u_e per case and cell. K_e is values[e] (values[0] if shared by all cells):
    # row-major (start[i] + j = i n + j) or, if packed, its upper triangle (start[i] + j is entry
    # (i, j) for j >= i, row i contiguous; (j, i) below the diagonal): both read in the same
    # order, so exactly symmetric matrices give the same numbers either way
    n_cases = U.shape[0]
    n_cells = cell_dofs.shape[0]
    start = np.empty(n_dof_e, dtype=np.int64)
    for i in range(n_dof_e):
        start[i] = packed_index(i, i, n_dof_e) - i if packed else i * n_dof_e
    shared = values.shape[0] == 1
    for e in numba.prange(n_cells):
        Ke = values[0] if shared else values[e]
        ue = np.empty(n_dof_e)
        for c in range(n_cases):
            for i in range(n_dof_e):
                ue[i] = U[c, cell_dofs[e, i]]
            total = 0.0
            for i in range(n_dof_e):
                row = 0.0
                if packed:
                    for j in range(i):
                        row += Ke[start[j] + i] * ue[j]
                    for j in range(i, n_dof_e):
                        row += Ke[start[i] + j] * ue[j]
                else:
                    for j in range(n_dof_e):
                        row += Ke[start[i] + j] * ue[j]
                total += V[c, cell_dofs[e, i]] * row
            out[c, e] = total


def _forms(values: np.ndarray, packed: bool, n_dof_e: int, cell_dofs: np.ndarray, U: np.ndarray,
           V: np.ndarray | None) -> np.ndarray:
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    V = U if V is None else np.ascontiguousarray(np.atleast_2d(V), dtype=np.float64)
    out = np.empty((U.shape[0], cell_dofs.shape[0]))
    _element_forms(np.ascontiguousarray(values, dtype=np.float64), packed, int(n_dof_e),
                   np.ascontiguousarray(cell_dofs), U, V, out)
    return out


def element_quadratic_forms(element_matrices: np.ndarray, cell_dofs: np.ndarray,
                            U: np.ndarray) -> np.ndarray:
    """u_e^T K_e u_e, (n_cases, n_cells); element_matrices (n_cells|1, n, n), U (n_cases, n_dofs)."""
    k, n, _ = element_matrices.shape
    return _forms(np.ascontiguousarray(element_matrices).reshape(k, n * n), False, n, cell_dofs, U, None)


def element_bilinear_forms(element_matrices: np.ndarray, cell_dofs: np.ndarray,
                           U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """v_e^T K_e u_e, (n_cases, n_cells), for U and V of shape (n_cases, n_dofs)."""
    k, n, _ = element_matrices.shape
    return _forms(np.ascontiguousarray(element_matrices).reshape(k, n * n), False, n, cell_dofs, U, V)


def packed_element_forms(packed: np.ndarray, cell_dofs: np.ndarray, U: np.ndarray,
                         V: np.ndarray | None = None) -> np.ndarray:
    """v_e^T K_e u_e (u_e^T K_e u_e without V), (n_cases, n_cells), from packed symmetric element
    matrices (n_cells, n_dof_e (n_dof_e + 1) / 2) and U, V (n_cases, n_dofs)."""
    return _forms(packed, True, cell_dofs.shape[1], cell_dofs, U, V)


@numba.njit(cache=True, parallel=True)
def _tet4_bilinear_forms(points, cells, dN_ref, weight, D, thickness, U, V, out):
    n_cases = U.shape[0]
    n_cells = cells.shape[0]
    for e in numba.prange(n_cells):
        coords, J, inv, grad = np.empty((4, 3)), np.empty((3, 3)), np.empty((3, 3)), np.empty((4, 3))
        eu = np.empty(6)
        ev = np.empty(6)
        for a in range(4):
            for i in range(3):
                coords[a, i] = points[cells[e, a], i]
        det = _tet4_gradients_into(coords, dN_ref, J, inv, grad)
        f = weight * det * thickness
        for c in range(n_cases):
            # engineering strains B u_e and B v_e (Voigt xx, yy, zz, xy, yz, xz, as _fill_B)
            for w in range(6):
                eu[w] = 0.0
                ev[w] = 0.0
            for a in range(4):
                n3 = cells[e, a] * 3
                gx, gy, gz = grad[a, 0], grad[a, 1], grad[a, 2]
                ux, uy, uz = U[c, n3], U[c, n3 + 1], U[c, n3 + 2]
                vx, vy, vz = V[c, n3], V[c, n3 + 1], V[c, n3 + 2]
                eu[0] += gx * ux
                eu[1] += gy * uy
                eu[2] += gz * uz
                eu[3] += gy * ux + gx * uy
                eu[4] += gz * uy + gy * uz
                eu[5] += gz * ux + gx * uz
                ev[0] += gx * vx
                ev[1] += gy * vy
                ev[2] += gz * vz
                ev[3] += gy * vx + gx * vy
                ev[4] += gz * vy + gy * vz
                ev[5] += gz * vx + gx * vz
            total = 0.0
            for v in range(6):
                row = 0.0
                for w in range(6):
                    row += D[v, w] * eu[w]
                total += ev[v] * row
            out[c, e] = f * total


def tet4_element_bilinear_forms(points: np.ndarray, cells: np.ndarray, D: np.ndarray,
                                thickness: float, U: np.ndarray,
                                V: np.ndarray | None = None) -> np.ndarray:
    """v_e^T K_e u_e (V None: u_e^T K_e u_e) of linear tets without stored K_e, (n_cases, n_cells).

    points (n_nodes, 3), cells (n_cells, 4), D (6, 6), U and V (n_cases, n_dofs) or (n_dofs,).
    Computed as V_e (B v_e)^T D (B u_e) from the shape gradients (B constant over a tet): ~200
    flops per cell and case instead of reading a 1152-byte K_e; equal to the stored-matrix form
    to rounding (1e-13 relative to the largest cell's value in the tests).
    """
    from .elements import reference_tables
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    V = U if V is None else np.ascontiguousarray(np.atleast_2d(V), dtype=np.float64)
    if V.shape != U.shape:
        raise ValueError(f"U and V must have the same shape, got {U.shape} and {V.shape}")
    dN_ref, weights = reference_tables("tetra")
    out = np.empty((U.shape[0], cells.shape[0]))
    _tet4_bilinear_forms(np.ascontiguousarray(points, dtype=np.float64),
                         np.ascontiguousarray(cells, dtype=np.int64), dN_ref[0], float(weights[0]),
                         np.ascontiguousarray(D, dtype=np.float64), float(thickness), U, V, out)
    return out


# ---------------------------------------------------------------------------- structured grids
def _make_grid_bilinear_forms(dim: int):
    """Numba kernel out[c, e] = v_e^T Ke u_e on a structured grid of dimension ``dim``.

    Kernel arguments: cells, nodes (per-axis counts padded to 3, z = 1 in 2D); offsets
    (2^dim, 3) VTK corner offsets; Ke (n_e, n_e) shared by every cell; U, V (n_cases, n_dofs);
    out (n_cases, n_cells). DOFs come from the cell index; sizes are compile-time constants.
    """
    NPC = 2 ** dim
    ND = NPC * dim
    DIM = dim

    @numba.njit(cache=True, parallel=True)
    def grid_bilinear_forms(cells, nodes, offsets, Ke, U, V, out):
        px, py, pz = nodes
        cx, cy, cz = cells
        n_cases = U.shape[0]
        node_offset = np.empty(NPC, dtype=np.int64)
        for b in range(NPC):
            node_offset[b] = offsets[b, 0] + px * (offsets[b, 1] + py * offsets[b, 2])
        for row in numba.prange(cy * cz):
            cj = row % cy
            ck = row // cy
            ue = np.empty(ND)
            ve = np.empty(ND)
            dofs = np.empty(ND, dtype=np.int64)
            for ci in range(cx):
                base = ci + px * (cj + py * ck)
                for b in range(NPC):
                    for q in range(DIM):
                        dofs[b * DIM + q] = (base + node_offset[b]) * DIM + q
                for c in range(n_cases):
                    for r in range(ND):
                        ue[r] = U[c, dofs[r]]
                        ve[r] = 0.0
                    for q in range(ND):               # Ke symmetric: column q times u_q
                        uq = ue[q]
                        for r in range(ND):
                            ve[r] += Ke[q, r] * uq
                    total = 0.0
                    for r in range(ND):
                        total += V[c, dofs[r]] * ve[r]
                    out[c, ci + cx * row] = total

    return grid_bilinear_forms


_GRID_BILINEAR_FORMS = {2: _make_grid_bilinear_forms(2), 3: _make_grid_bilinear_forms(3)}


def grid_element_bilinear_forms(shape, element_matrix: np.ndarray, U: np.ndarray,
                                V: np.ndarray | None = None) -> np.ndarray:
    """v_e^T Ke u_e (V None: u_e^T Ke u_e) of every cell of a structured grid, (n_cases, n_cells).

    shape: (nx, ny[, nz]) cells numbered as in :mod:`lightweight.mesh.grid`; element_matrix:
    (n_e, n_e) shared by all cells; U, V: (n_cases, n_dofs) or (n_dofs,). No per-cell DOF
    table or per-cell matrices are built (memory: the output only).
    """
    from .multigrid import _cell_offsets, _grid_dims
    shape = tuple(int(n) for n in shape)
    cells, nodes = _grid_dims(shape)
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    V = U if V is None else np.ascontiguousarray(np.atleast_2d(V), dtype=np.float64)
    n_dofs = nodes[0] * nodes[1] * nodes[2] * len(shape)
    if U.shape[1] != n_dofs or V.shape != U.shape:
        raise ValueError(f"U and V must be (n_cases, {n_dofs}), got {U.shape} and {V.shape}")
    out = np.empty((U.shape[0], cells[0] * cells[1] * cells[2]))
    _GRID_BILINEAR_FORMS[len(shape)](cells, nodes, _cell_offsets(len(shape)),
                                     np.ascontiguousarray(element_matrix, dtype=np.float64), U, V, out)
    return out


def _make_grid_element_products(dim: int):
    """Numba kernel out[c, e, :] = M @ u_e on a structured grid of dimension ``dim``.

    Kernel arguments: cells, nodes, offsets as for the bilinear forms; M (m, n_e) shared by
    every cell; U (n_cases, n_dofs); out (n_cases, n_cells, m).
    """
    NPC = 2 ** dim
    ND = NPC * dim
    DIM = dim

    @numba.njit(cache=True, parallel=True)
    def grid_element_products(cells, nodes, offsets, M, U, out):
        px, py, pz = nodes
        cx, cy, cz = cells
        n_cases = U.shape[0]
        m = M.shape[0]
        node_offset = np.empty(NPC, dtype=np.int64)
        for b in range(NPC):
            node_offset[b] = offsets[b, 0] + px * (offsets[b, 1] + py * offsets[b, 2])
        for row in numba.prange(cy * cz):
            cj = row % cy
            ck = row // cy
            ue = np.empty(ND)
            for ci in range(cx):
                base = ci + px * (cj + py * ck)
                e = ci + cx * row
                for c in range(n_cases):
                    for b in range(NPC):
                        for q in range(DIM):
                            ue[b * DIM + q] = U[c, (base + node_offset[b]) * DIM + q]
                    for r in range(m):
                        t = 0.0
                        for q in range(ND):
                            t += M[r, q] * ue[q]
                        out[c, e, r] = t

    return grid_element_products


_GRID_ELEMENT_PRODUCTS = {2: _make_grid_element_products(2), 3: _make_grid_element_products(3)}


def grid_element_products(shape, matrix: np.ndarray, U: np.ndarray) -> np.ndarray:
    """M @ u_e for every cell of a structured grid, (n_cases, n_cells, m).

    shape: (nx, ny[, nz]) cells; matrix: (m, n_e) shared by all cells (e.g. D B at the cell
    centre for stresses); U: (n_cases, n_dofs) or (n_dofs,). No per-cell DOF table is built.
    """
    from .multigrid import _cell_offsets, _grid_dims
    shape = tuple(int(n) for n in shape)
    cells, nodes = _grid_dims(shape)
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    M = np.ascontiguousarray(matrix, dtype=np.float64)
    out = np.empty((U.shape[0], cells[0] * cells[1] * cells[2], M.shape[0]))
    _GRID_ELEMENT_PRODUCTS[len(shape)](cells, nodes, _cell_offsets(len(shape)), M, U, out)
    return out
