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
- :class:`MatrixFilter` is the general twin: a sparse H from a ``scipy.spatial.cKDTree``
  neighbour search (``query_pairs`` returns each pair once; distances are recomputed from the
  centres in float64). Building costs O(n log n + nnz); applying is one sparse mat-vec.
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
(:func:`lightweight.fem.memory.filter_matrix_bytes`, 70 bytes per nonzero while building) and,
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
class MatrixFilter(_NormalisedConvolution):
    """Convolution filter on any mesh: sparse H from a KD-tree search, volume weighted.

    centers: (n, dim) cell centroids; radius: length units; volumes: (n,) cell volumes (areas in
    2D), default all ones (plain top88 weights). memory_budget: bytes the matrix may take while
    being built (default: all available memory); a larger estimate raises OptimizationError.
    """

    def __init__(self, centers, radius, volumes=None, memory_budget: float | None = None):
        centers = np.ascontiguousarray(centers, dtype=np.float64)
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
        self.volumes = volumes
        check_matrix_filter_memory(centers, r, None if volumes_given is None else volumes,
                                   memory_budget, what="MatrixFilter")
        pairs = cKDTree(centers).query_pairs(r, output_type="ndarray")   # (m, 2), i < j, d <= r
        i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        dist = np.sqrt(((centers[i] - centers[j]) ** 2).sum(axis=1))
        w = np.maximum(0.0, r - dist)
        keep = w > 0
        i, j, w = i[keep], j[keep], w[keep]
        diag = np.arange(n)
        rows = np.concatenate([i, j, diag])
        cols = np.concatenate([j, i, diag])
        sym = np.concatenate([w, w, np.full(n, r)])
        # The distance part is symmetric; the volume of the neighbour (column) makes H not.
        self.H = sp.csr_matrix((sym * volumes[cols], (rows, cols)), shape=(n, n))
        self.H.sum_duplicates()
        self._HT = self.H.T.tocsr()
        self.Hs = np.asarray(self.H.sum(axis=1)).ravel()

    def _apply_H(self, x):
        return self.H @ x

    def _apply_HT(self, y):
        return self._HT @ y


def _mean_cell_volume(centers: np.ndarray, volumes: np.ndarray | None) -> float:
    """Mean cell volume (area in 2D); without volumes, the bounding box's over the cell count."""
    if volumes is not None:
        return float(np.mean(volumes))
    extent = np.ptp(centers, axis=0)
    extent = np.where(extent > 0, extent, max(float(extent.max()), 1.0) / max(len(centers), 1))
    return float(np.prod(extent)) / len(centers)


def matrix_filter_estimate(centers: np.ndarray, radius: float, volumes=None) -> tuple[float, float]:
    """(nonzeros, peak bytes while building) of a MatrixFilter, estimated before building it."""
    from ..fem.memory import filter_matrix_bytes, filter_matrix_nonzeros
    n, dim = centers.shape
    mean_volume = _mean_cell_volume(centers, volumes)
    return (filter_matrix_nonzeros(n, dim, mean_volume, radius),
            filter_matrix_bytes(n, dim, mean_volume, radius))


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
        self.Hs = self._apply_H(np.ones(self.n))

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
        linear_solver = make_solver(name, n_dofs=A.shape[0], dim=dim)
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
