"""A plain NumPy/SciPy port of top88 (Andreassen et al. 2011), written the usual way.

It is the independent twin of our loop in tests (same MBB problem, same filter and update
rules, so the same compliance history) and the baseline of the speed benchmarks: COO assembly
rebuilt every iteration, ``spsolve`` on the free DOFs, a sparse filter matrix, OC with
bisection. Node and element numbering follow the published code (column-major, rows from
the top, y up in the load). Nothing else in the package uses it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def top88_element_matrix(nu: float = 0.3) -> np.ndarray:
    """The published 8x8 bilinear plane-stress element matrix for E = 1 (top88 node order)."""
    k = np.array([1 / 2 - nu / 6, 1 / 8 + nu / 8, -1 / 4 - nu / 12, -1 / 8 + 3 * nu / 8,
                  -1 / 4 + nu / 12, -1 / 8 - nu / 8, nu / 6, 1 / 8 - 3 * nu / 8])
    idx = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [1, 0, 7, 6, 5, 4, 3, 2], [2, 7, 0, 5, 6, 3, 4, 1],
                    [3, 6, 5, 0, 7, 2, 1, 4], [4, 5, 6, 7, 0, 1, 2, 3], [5, 4, 3, 2, 1, 0, 7, 6],
                    [6, 3, 4, 1, 2, 7, 0, 5], [7, 2, 1, 4, 3, 6, 5, 0]])
    return k[idx] / (1 - nu ** 2)


def filter_matrix(nelx: int, nely: int, rmin: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """top88's H (weights max(0, rmin - distance)) and its row sums Hs, column-major elements."""
    rows, cols, vals = [], [], []
    reach = int(np.ceil(rmin)) - 1
    for i1 in range(nelx):
        for j1 in range(nely):
            e1 = i1 * nely + j1
            for i2 in range(max(i1 - reach, 0), min(i1 + reach + 1, nelx)):
                for j2 in range(max(j1 - reach, 0), min(j1 + reach + 1, nely)):
                    rows.append(e1)
                    cols.append(i2 * nely + j2)
                    vals.append(max(0.0, rmin - np.hypot(i1 - i2, j1 - j2)))
    H = sp.coo_matrix((vals, (rows, cols)), shape=(nelx * nely,) * 2).tocsr()
    return H, np.asarray(H.sum(axis=1)).ravel()


class Top88:
    """The MBB half-beam of top88 with ft = 1 (sensitivity) or 2 (density filter)."""

    def __init__(self, nelx: int, nely: int, volfrac: float, penal: float, rmin: float, ft: int,
                 E0: float = 1.0, Emin: float = 1e-9, nu: float = 0.3):
        self.nelx, self.nely, self.volfrac, self.penal, self.ft = nelx, nely, volfrac, penal, ft
        self.E0, self.Emin = E0, Emin
        self.KE = top88_element_matrix(nu)
        nodenrs = np.arange((1 + nelx) * (1 + nely)).reshape(1 + nelx, 1 + nely).T   # [row, col]
        edofvec = (2 * nodenrs[:-1, :-1] + 2).T.ravel()                             # 0-based +2
        offsets = np.array([0, 1, 2 * nely + 2, 2 * nely + 3, 2 * nely, 2 * nely + 1, -2, -1])
        self.edof = edofvec[:, None] + offsets[None, :]
        self.iK = np.kron(self.edof, np.ones((8, 1), dtype=int)).ravel()
        self.jK = np.kron(self.edof, np.ones((1, 8), dtype=int)).ravel()
        n_dofs = 2 * (nely + 1) * (nelx + 1)
        self.F = np.zeros(n_dofs)
        self.F[1] = -1.0
        fixed = np.union1d(np.arange(0, 2 * (nely + 1), 2), [n_dofs - 1])
        self.free = np.setdiff1d(np.arange(n_dofs), fixed)
        self.n_dofs = n_dofs
        self.H, self.Hs = filter_matrix(nelx, nely, rmin)
        self.x = np.full(nely * nelx, float(volfrac))
        self.xPhys = self.x.copy()

    def iteration(self) -> tuple[float, float]:
        """One design iteration; returns (compliance of the current design, change)."""
        scale = self.Emin + self.xPhys ** self.penal * (self.E0 - self.Emin)
        sK = (self.KE.ravel()[:, None] * scale[None, :]).T.ravel()
        K = sp.coo_matrix((sK, (self.iK, self.jK)), shape=(self.n_dofs,) * 2).tocsc()
        K = (K + K.T) / 2
        U = np.zeros(self.n_dofs)
        U[self.free] = spla.spsolve(K[self.free][:, self.free], self.F[self.free])
        Ue = U[self.edof]
        ce = np.einsum("ei,ij,ej->e", Ue, self.KE, Ue)
        c = float(scale @ ce)
        dc = -self.penal * (self.E0 - self.Emin) * self.xPhys ** (self.penal - 1) * ce
        dv = np.ones_like(dc)
        if self.ft == 1:
            dc = self.H @ (self.x * dc) / self.Hs / np.maximum(1e-3, self.x)
        else:
            dc = self.H @ (dc / self.Hs)
            dv = self.H @ (dv / self.Hs)
        l1, l2, move = 0.0, 1e9, 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.maximum(0, np.maximum(self.x - move, np.minimum(1, np.minimum(
                self.x + move, self.x * np.sqrt(-dc / dv / lmid)))))
            self.xPhys = xnew if self.ft == 1 else (self.H @ xnew) / self.Hs
            if self.xPhys.sum() > self.volfrac * self.nelx * self.nely:
                l1 = lmid
            else:
                l2 = lmid
        change = float(np.max(np.abs(xnew - self.x)))
        self.x = xnew
        return c, change

    def run(self, max_iterations: int = 1000, tolerance: float = 0.01) -> list[tuple[float, float]]:
        """Iterate until change <= tolerance; returns [(compliance, change), ...]."""
        history = []
        change = 1.0
        while change > tolerance and len(history) < max_iterations:
            c, change = self.iteration()
            history.append((c, change))
        return history

    def density_grid(self) -> np.ndarray:
        """xPhys as an image (nely rows from the top, nelx columns)."""
        return self.xPhys.reshape(self.nelx, self.nely).T


class PlainScipyIteration:
    """One top88-style design iteration for any grid model, written the plain SciPy way.

    COO assembly rebuilt from the element matrix every iteration, ``spsolve`` on the free DOFs
    (K[free][:, free] extracted each time), a sparse filter matrix built once with a KD-tree,
    density filter (ft = 2) and the OC bisection. Used as the benchmark baseline.
    """

    def __init__(self, model, volume_fraction: float, filter_radius: float, penalty: float = 3.0,
                 min_stiffness: float = 1e-9):
        from scipy.spatial import cKDTree

        from ..fem.assembly import element_dofs
        system = model.system()
        mesh = model.mesh
        self.Ke = system.element_matrices[0]
        self.edof = element_dofs(mesh.cells, mesh.dim)
        n_e = self.edof.shape[1]
        self.iK = np.repeat(self.edof, n_e, axis=1).ravel()
        self.jK = np.tile(self.edof, (1, n_e)).ravel()
        self.F = system.load_vectors()[0]
        self.free = np.flatnonzero(system.free_mask)
        self.n_dofs = system.n_dofs
        centers = mesh.cell_centers()
        tree = cKDTree(centers)
        D = tree.sparse_distance_matrix(tree, filter_radius, output_type="coo_matrix")
        weights = np.maximum(0.0, filter_radius - D.data)
        # sparse_distance_matrix omits zero distances: add the diagonal (weight = radius)
        n = mesh.n_cells
        self.H = (sp.coo_matrix((weights, (D.row, D.col)), shape=(n, n))
                  + filter_radius * sp.identity(n)).tocsr()
        self.Hs = np.asarray(self.H.sum(axis=1)).ravel()
        self.volfrac, self.penal, self.Emin = volume_fraction, penalty, min_stiffness
        self.x = np.full(n, float(volume_fraction))
        self.xPhys = self.x.copy()

    def iteration(self) -> tuple[float, float]:
        scale = self.Emin + self.xPhys ** self.penal * (1 - self.Emin)
        sK = (self.Ke.ravel()[None, :] * scale[:, None]).ravel()
        K = sp.coo_matrix((sK, (self.iK, self.jK)), shape=(self.n_dofs,) * 2).tocsc()
        U = np.zeros(self.n_dofs)
        U[self.free] = spla.spsolve(K[self.free][:, self.free], self.F[self.free])
        Ue = U[self.edof]
        ce = np.einsum("ei,ij,ej->e", Ue, self.Ke, Ue)
        c = float(scale @ ce)
        dc = self.H @ ((-self.penal * (1 - self.Emin) * self.xPhys ** (self.penal - 1) * ce) / self.Hs)
        dv = self.H @ (np.ones_like(dc) / self.Hs)
        l1, l2, move = 0.0, 1e9, 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.clip(self.x * np.sqrt(-dc / dv / lmid), np.maximum(0, self.x - move),
                           np.minimum(1, self.x + move))
            self.xPhys = (self.H @ xnew) / self.Hs
            if self.xPhys.sum() > self.volfrac * self.x.size:
                l1 = lmid
            else:
                l2 = lmid
        change = float(np.max(np.abs(xnew - self.x)))
        self.x = xnew
        return c, change
