"""Isoparametric solid elements: stiffness, strain-displacement matrices and stresses.

One generic Numba kernel serves every element type (tri3, quad4, tet4, tet10, hex8): the
reference-element tables (shape-function derivatives at the Gauss points, weights) come from
:mod:`lightweight.mesh.cell_types`, and the kernel maps them to physical coordinates with the
Jacobian. This is the standard displacement formulation with the integration of the
corresponding CalculiX elements (CPS3/CPS4/C3D4/C3D10/C3D8: 1, 2x2, 1, 4 and 2x2x2 points), so
the same mesh gives the same displacements as CalculiX. No incompatible modes or reduced
integration: the reference results are for the standard elements, and SIMP's sensitivities
rely on the plain energy u^T K u.

Like scikit-fem we keep the reference element (tables) apart from the kernel that loops over
elements; unlike it we hand-write the loop in Numba because assembly runs hundreds of times in
an optimization and the per-element work is small.

Stresses are evaluated at the same integration points (:func:`element_point_stresses`, and
the per-point operators D B of :func:`element_stress_operators` for stress sensitivities);
:mod:`lightweight.fem.stress` builds the reported stress measures on them.

Shapes: ``coords`` (n_cells, nodes_per_cell, dim); element matrices
(n_cells, nodes_per_cell*dim, nodes_per_cell*dim) with node-major local DOFs.
"""

from __future__ import annotations

import numba
import numpy as np

from ..mesh.cell_types import quadrature, shape_functions


def reference_tables(cell_type: str, at_center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """dN/dxi at the Gauss points (or the centre) of ``cell_type``: (n_q, n_nodes, dim), weights (n_q,)."""
    if at_center:
        center = {"triangle": [[1 / 3, 1 / 3]], "tetra": [[0.25, 0.25, 0.25]],
                  "tetra10": [[0.25, 0.25, 0.25]], "quad": [[0.0, 0.0]],
                  "hexahedron": [[0.0, 0.0, 0.0]]}[cell_type]
        _, dN = shape_functions(cell_type, np.array(center))
        return np.ascontiguousarray(dN), np.ones(1)
    xi, w = quadrature(cell_type)
    _, dN = shape_functions(cell_type, xi)
    return np.ascontiguousarray(dN), np.ascontiguousarray(w)


@numba.njit(cache=True, inline="always")
def _gradients(coords, dN_ref_q, dim, grad):
    """Physical shape-function gradients into grad (n_nodes, dim); returns det J."""
    n_nodes = coords.shape[0]
    J = np.zeros((dim, dim))
    for a in range(n_nodes):
        for i in range(dim):
            for r in range(dim):
                J[i, r] += coords[a, i] * dN_ref_q[a, r]
    if dim == 2:
        det = J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]
        inv = np.empty((2, 2))
        inv[0, 0] = J[1, 1] / det
        inv[0, 1] = -J[0, 1] / det
        inv[1, 0] = -J[1, 0] / det
        inv[1, 1] = J[0, 0] / det
    else:
        det = (J[0, 0] * (J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1])
               - J[0, 1] * (J[1, 0] * J[2, 2] - J[1, 2] * J[2, 0])
               + J[0, 2] * (J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0]))
        inv = np.empty((3, 3))
        inv[0, 0] = (J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1]) / det
        inv[0, 1] = (J[0, 2] * J[2, 1] - J[0, 1] * J[2, 2]) / det
        inv[0, 2] = (J[0, 1] * J[1, 2] - J[0, 2] * J[1, 1]) / det
        inv[1, 0] = (J[1, 2] * J[2, 0] - J[1, 0] * J[2, 2]) / det
        inv[1, 1] = (J[0, 0] * J[2, 2] - J[0, 2] * J[2, 0]) / det
        inv[1, 2] = (J[0, 2] * J[1, 0] - J[0, 0] * J[1, 2]) / det
        inv[2, 0] = (J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0]) / det
        inv[2, 1] = (J[0, 1] * J[2, 0] - J[0, 0] * J[2, 1]) / det
        inv[2, 2] = (J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]) / det
    # dN/dx_i = sum_r dN/dxi_r * dxi_r/dx_i, with dxi/dx = J^-1 (J[i, r] = dx_i/dxi_r)
    for a in range(n_nodes):
        for i in range(dim):
            s = 0.0
            for r in range(dim):
                s += dN_ref_q[a, r] * inv[r, i]
            grad[a, i] = s
    return det


@numba.njit(cache=True, inline="always")
def _fill_B(grad, dim, B):
    """Strain-displacement matrix B (n_voigt, n_nodes*dim) from physical gradients."""
    n_nodes = grad.shape[0]
    B[:, :] = 0.0
    for a in range(n_nodes):
        if dim == 2:
            B[0, 2 * a] = grad[a, 0]
            B[1, 2 * a + 1] = grad[a, 1]
            B[2, 2 * a] = grad[a, 1]
            B[2, 2 * a + 1] = grad[a, 0]
        else:
            c = 3 * a
            B[0, c] = grad[a, 0]
            B[1, c + 1] = grad[a, 1]
            B[2, c + 2] = grad[a, 2]
            B[3, c] = grad[a, 1]
            B[3, c + 1] = grad[a, 0]
            B[4, c + 1] = grad[a, 2]
            B[4, c + 2] = grad[a, 1]
            B[5, c] = grad[a, 2]
            B[5, c + 2] = grad[a, 0]


@numba.njit(cache=True, parallel=True)
def _stiffness_kernel(coords, dN_ref, weights, D, thickness, out, min_det):
    n_cells, n_nodes, dim = coords.shape
    n_q = weights.shape[0]
    n_voigt = D.shape[0]
    n_dof = n_nodes * dim
    for e in numba.prange(n_cells):
        grad = np.empty((n_nodes, dim))
        B = np.empty((n_voigt, n_dof))
        DB = np.empty((n_voigt, n_dof))
        Ke = out[e]
        Ke[:, :] = 0.0
        smallest = np.inf
        for q in range(n_q):
            det = _gradients(coords[e], dN_ref[q], dim, grad)
            if det < smallest:
                smallest = det
            _fill_B(grad, dim, B)
            f = weights[q] * det * thickness
            for v in range(n_voigt):
                for j in range(n_dof):
                    s = 0.0
                    for w in range(n_voigt):
                        s += D[v, w] * B[w, j]
                    DB[v, j] = s
            for i in range(n_dof):
                for j in range(i, n_dof):
                    s = 0.0
                    for v in range(n_voigt):
                        s += B[v, i] * DB[v, j]
                    Ke[i, j] += f * s
        for i in range(n_dof):
            for j in range(i):
                Ke[i, j] = Ke[j, i]
        min_det[e] = smallest


@numba.njit(cache=True, inline="always")
def _tet4_gradients_into(coords, dN_ref, J, inv, grad):
    """Physical shape-function gradients of one linear tet into grad (4, 3); returns det J.

    coords (4, 3), dN_ref (4, 3); J, inv (3, 3) work arrays. The arithmetic of ``_gradients``
    (same sums in the same order, bit-identical) without its per-call allocations.
    """
    for i in range(3):
        for r in range(3):
            s = 0.0
            for a in range(4):
                s += coords[a, i] * dN_ref[a, r]
            J[i, r] = s
    det = (J[0, 0] * (J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1])
           - J[0, 1] * (J[1, 0] * J[2, 2] - J[1, 2] * J[2, 0])
           + J[0, 2] * (J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0]))
    inv[0, 0] = (J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1]) / det
    inv[0, 1] = (J[0, 2] * J[2, 1] - J[0, 1] * J[2, 2]) / det
    inv[0, 2] = (J[0, 1] * J[1, 2] - J[0, 2] * J[1, 1]) / det
    inv[1, 0] = (J[1, 2] * J[2, 0] - J[1, 0] * J[2, 2]) / det
    inv[1, 1] = (J[0, 0] * J[2, 2] - J[0, 2] * J[2, 0]) / det
    inv[1, 2] = (J[0, 2] * J[1, 0] - J[0, 0] * J[1, 2]) / det
    inv[2, 0] = (J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0]) / det
    inv[2, 1] = (J[0, 1] * J[2, 0] - J[0, 0] * J[2, 1]) / det
    inv[2, 2] = (J[0, 0] * J[1, 1] - J[0, 1] * J[1, 0]) / det
    for a in range(4):
        for i in range(3):
            s = 0.0
            for r in range(3):
                s += dN_ref[a, r] * inv[r, i]
            grad[a, i] = s
    return det


@numba.njit(cache=True, inline="always")
def _tet4_stiffness_into(coords, dN_ref, weight, D, thickness, J, inv, grad, DB, Ke):
    """K_e (12, 12) of one linear tet into Ke (full, upper triangle mirrored); returns det J.

    coords (4, 3); dN_ref (4, 3) the reference gradients, weight the one-point rule's weight;
    J, inv (3, 3), grad (4, 3), DB (6, 12) work arrays. The same sums as ``_stiffness_kernel``
    in the same order, with the exact-zero terms of B left out (x + 0.0 == x), so the matrix
    is bit-identical to element_stiffness's; without them and without per-call allocations it
    is ~5x faster, fast enough to recompute in every refill (lightweight.fem.assembly).
    """
    det = _tet4_gradients_into(coords, dN_ref, J, inv, grad)
    f = weight * det * thickness
    # written out per displacement component (rows ascending, as the generic loops add them)
    # so that LLVM unrolls them; the generic table-driven loops took ~2x as long
    for a in range(4):
        gx, gy, gz = grad[a, 0], grad[a, 1], grad[a, 2]
        j = 3 * a
        for v in range(6):
            DB[v, j] = 0.0 + D[v, 0] * gx + D[v, 3] * gy + D[v, 5] * gz
            DB[v, j + 1] = 0.0 + D[v, 1] * gy + D[v, 3] * gx + D[v, 4] * gz
            DB[v, j + 2] = 0.0 + D[v, 2] * gz + D[v, 4] * gy + D[v, 5] * gx
    for a in range(4):
        gx, gy, gz = grad[a, 0], grad[a, 1], grad[a, 2]
        i = 3 * a
        for j in range(i, 12):
            Ke[i, j] = 0.0 + f * (0.0 + gx * DB[0, j] + gy * DB[3, j] + gz * DB[5, j])
        for j in range(i + 1, 12):
            Ke[i + 1, j] = 0.0 + f * (0.0 + gy * DB[1, j] + gx * DB[3, j] + gz * DB[4, j])
        for j in range(i + 2, 12):
            Ke[i + 2, j] = 0.0 + f * (0.0 + gz * DB[2, j] + gy * DB[4, j] + gx * DB[5, j])
    for i in range(12):
        for j in range(i):
            Ke[i, j] = Ke[j, i]
    return det


def element_stiffness(cell_type: str, coords: np.ndarray, D: np.ndarray,
                      thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Element stiffness matrices of all cells.

    coords: (n_cells, nodes_per_cell, dim) node coordinates; D: elasticity matrix.
    Returns (K_e (n_cells, n_dof_e, n_dof_e), smallest det J per cell (n_cells,)).
    """
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    dN_ref, w = reference_tables(cell_type)
    n_cells, n_nodes, dim = coords.shape
    out = np.empty((n_cells, n_nodes * dim, n_nodes * dim))
    min_det = np.empty(n_cells)
    _stiffness_kernel(coords, dN_ref, w, np.ascontiguousarray(D, dtype=np.float64),
                      float(thickness), out, min_det)
    return out, min_det


def packed_size(n_dof_e: int) -> int:
    """Entries of a symmetric (n_dof_e, n_dof_e) matrix's upper triangle: n (n + 1) / 2."""
    return n_dof_e * (n_dof_e + 1) // 2


@numba.njit(cache=True, inline="always")
def packed_index(r, c, n):
    """Position of entry (r, c) of a symmetric n x n matrix in its packed upper triangle
    (row by row from the diagonal: (0,0)..(0,n-1), (1,1)..): either order of r, c."""
    if r > c:
        r, c = c, r
    return r * n - (r * (r - 1)) // 2 + (c - r)


def packed_element_stiffness(cell_type: str, points: np.ndarray, cells: np.ndarray, D: np.ndarray,
                             thickness: float = 1.0, chunk: int = 8192) -> np.ndarray:
    """Element stiffness matrices as their packed upper triangles, (n_cells, n (n + 1) / 2).

    The stored form of unstructured quadratic and hexahedral elements: a stiffness matrix is
    symmetric (element_stiffness gives exactly symmetric ones), so its upper triangle holds it
    in half the memory (3.7 instead of 7.2 kB per tet10). Computed ``chunk`` cells at a time,
    so the full matrices never exist for the whole mesh at once. Read with :func:`packed_index`;
    :func:`unpack_symmetric` gives the full matrices back.
    """
    n_cells = cells.shape[0]
    first, _ = element_stiffness(cell_type, points[cells[:1]], D, thickness)
    n = first.shape[1]
    rows, cols = np.triu_indices(n)
    out = np.empty((n_cells, packed_size(n)))
    for start in range(0, n_cells, chunk):
        Ke, _ = element_stiffness(cell_type, points[cells[start:start + chunk]], D, thickness)
        out[start:start + chunk] = Ke[:, rows, cols]
    return out


def unpack_symmetric(packed: np.ndarray, n: int) -> np.ndarray:
    """Full symmetric matrices (k, n, n) from packed upper triangles (k, n (n + 1) / 2)."""
    rows, cols = np.triu_indices(n)
    full = np.empty((packed.shape[0], n, n))
    full[:, rows, cols] = packed
    full[:, cols, rows] = packed
    return full


@numba.njit(cache=True, parallel=True)
def _stress_kernel(coords, dN_ref, D, u_cells, out):
    # u_cells (n_cases, n_cells, n_dof_e) -> out (n_cases, n_cells, n_voigt), averaged over points
    n_cells, n_nodes, dim = coords.shape
    n_q = dN_ref.shape[0]
    n_voigt = D.shape[0]
    n_cases = u_cells.shape[0]
    n_dof = n_nodes * dim
    for e in numba.prange(n_cells):
        grad = np.empty((n_nodes, dim))
        B = np.empty((n_voigt, n_dof))
        for c in range(n_cases):
            for v in range(n_voigt):
                out[c, e, v] = 0.0
        for q in range(n_q):
            _gradients(coords[e], dN_ref[q], dim, grad)
            _fill_B(grad, dim, B)
            for c in range(n_cases):
                for v in range(n_voigt):
                    strain_v = 0.0
                    for j in range(n_dof):
                        strain_v += B[v, j] * u_cells[c, e, j]
                    for w in range(n_voigt):
                        out[c, e, w] += D[w, v] * strain_v / n_q


def element_stress(cell_type: str, coords: np.ndarray, D: np.ndarray,
                   u_cells: np.ndarray) -> np.ndarray:
    """Stress at each cell's centre (Voigt), (n_cases, n_cells, n_voigt).

    u_cells: element displacement vectors (n_cases, n_cells, n_dof_e). The centre value is the
    superconvergent point of the linear elements; tet10 uses its centre as well.
    """
    dN_ref, _ = reference_tables(cell_type, at_center=True)
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    out = np.empty((u_cells.shape[0], coords.shape[0], D.shape[0]))
    _stress_kernel(coords, dN_ref, np.ascontiguousarray(D), np.ascontiguousarray(u_cells), out)
    return out


@numba.njit(cache=True, parallel=True)
def _stress_operator_kernel(coords, dN_ref, D, out):
    # out (n_cells, n_q, n_voigt, n_dof_e) = D B at every integration point
    n_cells, n_nodes, dim = coords.shape
    n_q = dN_ref.shape[0]
    n_voigt = D.shape[0]
    n_dof = n_nodes * dim
    for e in numba.prange(n_cells):
        grad = np.empty((n_nodes, dim))
        B = np.empty((n_voigt, n_dof))
        for q in range(n_q):
            _gradients(coords[e], dN_ref[q], dim, grad)
            _fill_B(grad, dim, B)
            for v in range(n_voigt):
                for j in range(n_dof):
                    s = 0.0
                    for w in range(n_voigt):
                        s += D[v, w] * B[w, j]
                    out[e, q, v, j] = s


def element_stress_operators(cell_type: str, coords: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Stress operators D B at every integration point, (n_cells, n_points, n_voigt, n_dof_e).

    coords: (n_cells, nodes_per_cell, dim) node coordinates; D: elasticity matrix (n_voigt, n_voigt).
    The stress at point q of cell e is ``out[e, q] @ u_e`` (u_e node-major, (n_dof_e,)); points
    in the order of :func:`lightweight.mesh.cell_types.quadrature`.
    """
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    dN_ref, _ = reference_tables(cell_type)
    n_cells, n_nodes, dim = coords.shape
    D = np.ascontiguousarray(D, dtype=np.float64)
    out = np.empty((n_cells, dN_ref.shape[0], D.shape[0], n_nodes * dim))
    _stress_operator_kernel(coords, dN_ref, D, out)
    return out


@numba.njit(cache=True, parallel=True)
def _point_stress_kernel(coords, dN_ref, D, cell_dofs, U, scale, out):
    # out (n_cases, n_cells, n_q, n_voigt) = scale_e D B_q u_e, u_e read through cell_dofs
    n_cells, n_nodes, dim = coords.shape
    n_q = dN_ref.shape[0]
    n_voigt = D.shape[0]
    n_cases = U.shape[0]
    n_dof = n_nodes * dim
    for e in numba.prange(n_cells):
        grad = np.empty((n_nodes, dim))
        B = np.empty((n_voigt, n_dof))
        strain = np.empty(n_voigt)
        ue = np.empty(n_dof)
        for q in range(n_q):
            _gradients(coords[e], dN_ref[q], dim, grad)
            _fill_B(grad, dim, B)
            for c in range(n_cases):
                for j in range(n_dof):
                    ue[j] = U[c, cell_dofs[e, j]]
                for v in range(n_voigt):
                    s = 0.0
                    for j in range(n_dof):
                        s += B[v, j] * ue[j]
                    strain[v] = s
                for w in range(n_voigt):
                    s = 0.0
                    for v in range(n_voigt):
                        s += D[w, v] * strain[v]
                    out[c, e, q, w] = scale[e] * s


def element_point_stresses(cell_type: str, coords: np.ndarray, D: np.ndarray, cell_dofs: np.ndarray,
                           U: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Stresses at every integration point of every cell, (n_cases, n_cells, n_points, n_voigt).

    coords: (n_cells, nodes_per_cell, dim); cell_dofs: (n_cells, n_dof_e) global DOFs;
    U: (n_cases, n_dofs) displacements; scale: (n_cells,) multiplier of each cell's stress.
    """
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    dN_ref, _ = reference_tables(cell_type)
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    out = np.empty((U.shape[0], coords.shape[0], dN_ref.shape[0], D.shape[0]))
    _point_stress_kernel(coords, dN_ref, np.ascontiguousarray(D, dtype=np.float64),
                         np.ascontiguousarray(cell_dofs), U,
                         np.ascontiguousarray(scale, dtype=np.float64), out)
    return out


def von_mises(stress: np.ndarray, dim: int, plane: str = "stress", nu: float = 0.0) -> np.ndarray:
    """Von Mises equivalent stress from Voigt stresses (..., n_voigt) -> (...).

    In plane strain the out-of-plane stress nu*(sxx+syy) enters the invariant.
    """
    if dim == 2:
        sxx, syy, sxy = stress[..., 0], stress[..., 1], stress[..., 2]
        szz = nu * (sxx + syy) if plane == "strain" else 0.0 * sxx
        return np.sqrt(0.5 * ((sxx - syy) ** 2 + (syy - szz) ** 2 + (szz - sxx) ** 2) + 3 * sxy ** 2)
    sxx, syy, szz, sxy, syz, szx = (stress[..., i] for i in range(6))
    return np.sqrt(0.5 * ((sxx - syy) ** 2 + (syy - szz) ** 2 + (szz - sxx) ** 2)
                   + 3 * (sxy ** 2 + syz ** 2 + szx ** 2))
