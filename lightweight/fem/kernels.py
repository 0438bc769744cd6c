"""Numba kernels on element vectors: energies u_e^T K_e u_e for all cells and load cases.

Gathering u_e by fancy indexing would allocate (n_cases, n_cells, n_dof_e) arrays each
iteration; the kernel reads U directly through the cell DOF table instead.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, parallel=True)
def _quadratic_forms(element_matrices, cell_dofs, U, out):
    n_cases = U.shape[0]
    n_cells, n_dof_e = cell_dofs.shape
    shared = element_matrices.shape[0] == 1
    for e in numba.prange(n_cells):
        Ke = element_matrices[0] if shared else element_matrices[e]
        ue = np.empty(n_dof_e)
        for c in range(n_cases):
            for i in range(n_dof_e):
                ue[i] = U[c, cell_dofs[e, i]]
            total = 0.0
            for i in range(n_dof_e):
                row = 0.0
                for j in range(n_dof_e):
                    row += Ke[i, j] * ue[j]
                total += ue[i] * row
            out[c, e] = total


def element_quadratic_forms(element_matrices: np.ndarray, cell_dofs: np.ndarray,
                            U: np.ndarray) -> np.ndarray:
    """u_e^T K_e u_e, (n_cases, n_cells); element_matrices (n_cells|1, n, n), U (n_cases, n_dofs)."""
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    out = np.empty((U.shape[0], cell_dofs.shape[0]))
    _quadratic_forms(np.ascontiguousarray(element_matrices), np.ascontiguousarray(cell_dofs), U, out)
    return out


@numba.njit(cache=True, parallel=True)
def _bilinear_forms(element_matrices, cell_dofs, U, V, out):
    n_cases = U.shape[0]
    n_cells, n_dof_e = cell_dofs.shape
    shared = element_matrices.shape[0] == 1
    for e in numba.prange(n_cells):
        Ke = element_matrices[0] if shared else element_matrices[e]
        ue = np.empty(n_dof_e)
        for c in range(n_cases):
            for i in range(n_dof_e):
                ue[i] = U[c, cell_dofs[e, i]]
            total = 0.0
            for i in range(n_dof_e):
                row = 0.0
                for j in range(n_dof_e):
                    row += Ke[i, j] * ue[j]
                total += V[c, cell_dofs[e, i]] * row
            out[c, e] = total


def element_bilinear_forms(element_matrices: np.ndarray, cell_dofs: np.ndarray,
                           U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """v_e^T K_e u_e, (n_cases, n_cells), for U and V of shape (n_cases, n_dofs)."""
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    V = np.ascontiguousarray(np.atleast_2d(V), dtype=np.float64)
    out = np.empty((U.shape[0], cell_dofs.shape[0]))
    _bilinear_forms(np.ascontiguousarray(element_matrices), np.ascontiguousarray(cell_dofs), U, V, out)
    return out
