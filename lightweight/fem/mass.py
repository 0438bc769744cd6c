"""Consistent mass matrices M_e = integral of rho N^T N over the element, assembled like K.

Approach. Each element's mass is integrated exactly (for straight-sided cells): the integrand
rho N_a N_b det J has degree 2 (tri3, tet4), 4 (tet10) or, per direction, 3 (quad4, hex8 with
their bilinear/trilinear det J). Quads and hexes use the 2 (x 2 x 2) Gauss points of the
stiffness, which are exact to degree 3 per direction. Simplices use conical-product
(collapsed-coordinate, Stroud) rules built here from Gauss-Jacobi points, with n points per
direction exact to degree 2n - 1: n = 2 for tri3/tet4 and n = 3 (27 points) for tet10. We build
them instead of tabulating a published rule because the construction is a few lines, has
positive weights, and is exact by design for any degree we ask; the stiffness rules of
:mod:`lightweight.mesh.cell_types` stay the CalculiX ones (tet10 stiffness uses 4 points, which
is exact only to degree 2 and would under-integrate the mass).

The element matrix is the scalar matrix rho * integral(N_a N_b) repeated on the diagonal of
each node pair's dim x dim block (node-major DOFs, like the stiffness), vectorized in NumPy:
the work is one small einsum per element type, done once per mesh. Assembly reuses the
stiffness CSR pattern (:func:`lightweight.fem.assembly.refill`) with a per-cell mass multiplier.
Structured grids share one element matrix, as for K.

CalculiX 2.20 integrates the mass with the stiffness points instead (we checked: its tet10
frequencies are reproduced to 3e-7 with the 4-point rule and differ by up to 5e-4 with the exact
one on our reference bracket; tet4 with its single point, a rank-one element mass, 1.8 %
apart). ``integration="stiffness"`` reproduces that; the default is exact.

Units: rho is mass per volume in the user's units (t/mm^3 with N, mm); 2D elements are
multiplied by the thickness, so the matrix sums to dim times the total mass.
Shapes: ``coords`` (n_cells, nodes_per_cell, dim) -> (n_cells, n_dof_e, n_dof_e).
"""

from __future__ import annotations

import numpy as np
from scipy.special import roots_jacobi

from ..mesh.cell_types import CELL_TYPES, quadrature, shape_functions
from .assembly import refill

# polynomial degree of N_a N_b on the reference simplex; quads/hexes use the stiffness rule
_SIMPLEX_MASS_DEGREE = {"triangle": 2, "tetra": 2, "tetra10": 4}


def _jacobi_on_unit_interval(n: int, alpha: int) -> tuple[np.ndarray, np.ndarray]:
    """Points u in (0, 1) and weights for integral_0^1 g(u) (1 - u)^alpha du, exact to degree 2n-1."""
    t, w = roots_jacobi(n, alpha, 0)
    return (1 + t) / 2, w / 2 ** (alpha + 1)


def simplex_quadrature(dim: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Conical-product rule on the reference triangle/tetrahedron, exact to ``degree``.

    Collapsed coordinates x = u, y = v (1 - u), z = w (1 - u) (1 - v) turn the simplex into
    the unit square/cube with Jacobian (1 - u)^(dim-1) (1 - v)^(dim-2); Gauss-Jacobi points
    absorb it. Returns (points (n^dim, dim), weights (n^dim,)), weights summing to 1/dim!.
    """
    n = degree // 2 + 1
    axes = [_jacobi_on_unit_interval(n, dim - 1 - k) for k in range(dim)]
    grids = np.meshgrid(*[a[0] for a in axes], indexing="ij")
    weights = np.prod(np.meshgrid(*[a[1] for a in axes], indexing="ij"), axis=0).ravel()
    u = [g.ravel() for g in grids]
    if dim == 2:
        pts = np.column_stack([u[0], u[1] * (1 - u[0])])
    else:
        pts = np.column_stack([u[0], u[1] * (1 - u[0]), u[2] * (1 - u[0]) * (1 - u[1])])
    return pts, weights


def mass_quadrature(cell_type: str, integration: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """Points (n, ref_dim) and weights (n,) for the consistent mass of ``cell_type``.

    integration: "exact" (exact for straight-sided cells) or "stiffness" (the element's
    stiffness rule, which is what CalculiX 2.20 uses for the mass: tet10 4 points, under-
    integrated; tet4/tri3 1 point, a rank-one element mass. Use it to reproduce CalculiX).
    """
    if integration == "stiffness":
        return quadrature(cell_type)
    if integration != "exact":
        raise ValueError(f"mass integration must be 'exact' or 'stiffness', got {integration!r}")
    if cell_type in _SIMPLEX_MASS_DEGREE:
        return simplex_quadrature(CELL_TYPES[cell_type].dim, _SIMPLEX_MASS_DEGREE[cell_type])
    return quadrature(cell_type)


def scalar_element_mass(cell_type: str, coords: np.ndarray, density: float = 1.0,
                        thickness: float = 1.0, integration: str = "exact") -> np.ndarray:
    """density * integral of N_a N_b per cell, (n_cells, nodes_per_cell, nodes_per_cell).

    coords: (n_cells, nodes_per_cell, dim); density: mass per volume; thickness: 2D only;
    integration: see :func:`mass_quadrature`.
    """
    coords = np.asarray(coords, dtype=np.float64)
    xi, w = mass_quadrature(cell_type, integration)
    N, dN = shape_functions(cell_type, xi)                  # (q, a), (q, a, r)
    J = np.einsum("ead,qar->eqdr", coords, dN)              # dx_d / dxi_r
    det = np.linalg.det(J)                                   # (e, q)
    return float(density) * float(thickness) * np.einsum("q,eq,qa,qb->eab", w, det, N, N)


def element_mass(cell_type: str, coords: np.ndarray, density: float = 1.0,
                 thickness: float = 1.0, integration: str = "exact") -> np.ndarray:
    """Consistent element mass matrices, (n_cells, n_dof_e, n_dof_e), node-major DOFs.

    coords: (n_cells, nodes_per_cell, dim); density: mass per volume; thickness: 2D only;
    integration: see :func:`mass_quadrature`.
    """
    scalar = scalar_element_mass(cell_type, coords, density, thickness, integration)
    n_cells, n_nodes, _ = scalar.shape
    dim = np.asarray(coords).shape[2]
    out = np.zeros((n_cells, n_nodes, dim, n_nodes, dim))
    for i in range(dim):
        out[:, :, i, :, i] = scalar
    return out.reshape(n_cells, n_nodes * dim, n_nodes * dim)


def system_element_masses(system, integration: str = "exact") -> np.ndarray:
    """The element mass matrices of a LinearElasticSystem's mesh: (1 | n_cells, n_dof_e, n_dof_e).

    Structured grids get one shared matrix (every cell is a translated copy); cached on the system.
    """
    cache = system.__dict__.setdefault("_element_masses", {})
    if integration not in cache:
        mesh, model = system.mesh, system.model
        cells = mesh.cells[:1] if system.is_grid else mesh.cells
        cache[integration] = element_mass(mesh.cell_type, mesh.points[cells], model.material.density,
                                          model.thickness if mesh.dim == 2 else 1.0, integration)
    return cache[integration]


def mass_matrix(system, mass_scale: np.ndarray | None = None, integration: str = "exact"):
    """Global consistent mass matrix (n_dofs, n_dofs) CSR on the stiffness pattern, in the
    mesh's DOF numbering.

    mass_scale: per-cell multiplier of the material density (n_cells,), default 1;
    integration: "exact" or "stiffness" (:func:`mass_quadrature`).
    """
    scale = np.ones(system.n_cells) if mass_scale is None else np.asarray(mass_scale, dtype=np.float64)
    if scale.shape != (system.n_cells,):
        raise ValueError(f"mass_scale must have shape ({system.n_cells},), got {scale.shape}")
    return system.mesh_matrix(refill(system.pattern, system_element_masses(system, integration), scale))


def element_mass_forms(system, V: np.ndarray, W: np.ndarray | None = None,
                       integration: str = "exact") -> np.ndarray:
    """w_e^T M_e v_e of the unscaled element masses for every cell, (k, n_cells).

    V, W: (k, n_dofs) (W None: V), e.g. mode shapes; with the element energies u_e^T K_e u_e
    this gives eigenvalue sensitivities d(lambda)/d(s_e) = phi_e^T (dK_e - lambda dM_e) phi_e.
    Structured grids use the grid kernel (no per-cell DOF table).
    """
    masses = system_element_masses(system, integration)
    V = np.atleast_2d(V)
    W = V if W is None else np.atleast_2d(W)
    if system.is_grid:
        from .kernels import grid_element_bilinear_forms
        return grid_element_bilinear_forms(system.mesh.grid, masses[0], V, W)
    from .kernels import element_bilinear_forms
    return element_bilinear_forms(masses, system.cell_dofs, V, W)
