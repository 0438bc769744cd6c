"""Stresses the way an FE code reports them: at integration points, extrapolated to nodes.

Approach. The stress of a displacement element is exact (superconvergent at best) only at its
integration points, so that is where we evaluate it: sigma_eq = s_e D B_q u_e at every Gauss
point q of every cell (the quadrature of :func:`lightweight.mesh.cell_types.quadrature`, which
is CalculiX's: tri3 1, quad4 2x2, tet4 1, tet10 4, hex8 2x2x2 points). Judging a part by the
cell-centre stress, as this module's predecessor did, misses the peaks: on a hex8 cantilever the
centre gives 50.0 MPa where the Gauss points give 59.6 MPa.

- Per cell, ``von_mises`` is the maximum over the cell's points, and ``max_von_mises`` the
  maximum over all points of the mesh: the values a safety factor must be judged by.
- Nodal values follow CalculiX/Abaqus: per element, the point values are extrapolated to the
  nodes with the inverse of the (corner) shape functions evaluated at the points (quad4, hex8:
  square and invertible; tet10: the linear field through its 4 points, mid-edge nodes the mean
  of their corners; tri3, tet4: constant), and the nodal tensors are averaged without weights
  over the elements sharing the node. Von Mises and principal stresses at a node are computed
  from the averaged tensor, as CalculiX's .frd output and cgx do.
- ``s_e`` is the per-cell stress multiplier the caller passes. ``lw.solve(model, density)``
  passes its stiffness multiplier (SIMP E_e/E0), so a SIMP design reports the stress that its
  penalized material carries. A stress-constrained optimization instead reports the relaxed
  solid-material stress rho^q sigma_solid (q < p, Le et al. 2010), the same measure its
  constraint uses: it passes that relaxation as ``stress_scale`` to
  :func:`~lightweight.fem.static.build_solution`.

Structured quad/hex grids share one element: the (n_points * n_voigt, n_dof_e) operator D B is
computed once and applied to every cell by a grid kernel that reads DOFs from the cell index
(no per-cell coordinates or DOF table). Other meshes run a Numba kernel per cell.

Memory. :func:`stress_results` (every Solution, also the one at the end of a design loop, on
top of all the loop holds) works through blocks of cells whose temporaries stay within
:data:`STRESS_BLOCK_BYTES`: the block's cell count follows from an estimate of the temporaries
per cell of the cell type, not from a fixed count (a fixed 65 536 cells took ~500 B per tet
at 63k tets, ~33 MB, just when the loop's memory is largest). Blocks do not change the numbers:
every per-cell value is computed cell by cell, and the nodal sums are accumulated in cell order
into one array (a sequential scatter, the order of one :func:`numpy.bincount` over all cells),
so any block size gives the same arrays bit for bit. A mesh without a kept cell DOF table
(unstructured tets) gets its DOFs per block and keeps none.

Shapes: ``U`` (n_cases, n_dofs); point stresses (n_cases, n_cells, n_points, n_voigt) in
Voigt order [xx, yy, xy] (2D) or [xx, yy, zz, xy, yz, zx] (3D); nodal stresses (n_cases,
n_nodes, n_voigt); principal stresses (..., 3), largest first.
"""

from __future__ import annotations

import numba
import numpy as np

from ..mesh.cell_types import quadrature, shape_functions
from .elements import element_point_stresses, element_stress_operators, von_mises

__all__ = ["element_stress_operators", "stress_operators", "integration_point_stresses",
           "von_mises", "von_mises_gradient", "extrapolation_matrix", "nodal_stresses",
           "principal_stresses", "stress_tensor", "n_integration_points", "stress_results"]

# tet10 mid-edge nodes 4..9 (VTK/Abaqus order) and the corners they join
_TET10_EDGES = ((0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3))


def _system(model_or_system):
    return model_or_system.system() if hasattr(model_or_system, "system") else model_or_system


def n_integration_points(cell_type: str) -> int:
    """Number of integration points (stress points) of an element of ``cell_type``."""
    return int(quadrature(cell_type)[1].shape[0])


def stress_operators(model_or_system) -> np.ndarray:
    """D B at every integration point of the model's cells, (n_cells or 1, n_points, n_voigt, n_dof_e).

    Structured quad/hex grids return one operator (leading size 1) shared by every cell; apply
    it to u_e of cell e in the DOF order of ``system.cell_dofs[e]``. The stress at point q of
    cell e is ``s_e * ops[e or 0, q] @ u_e``, so d(sigma_eq)/d(u_e) = s_e * ops[e, q].
    """
    system = _system(model_or_system)
    mesh = system.mesh
    cells = mesh.cells[:1] if system.is_grid else mesh.cells
    return element_stress_operators(mesh.cell_type, mesh.points[cells], system.D)


def integration_point_stresses(model_or_system, U: np.ndarray,
                               stiffness_scale: np.ndarray | None = None,
                               cells: slice | None = None) -> np.ndarray:
    """Stresses at every integration point, (n_cases, n_cells, n_points, n_voigt).

    U: displacements (n_cases, n_dofs) or (n_dofs,); stiffness_scale: per-cell multiplier of
    the solid-material stress (n_cells,), default 1 (units of the material's E times strain);
    cells: a contiguous range of cells (default all); on structured grids it must cover whole
    layers of the last axis (what :func:`stress_results` asks for).
    """
    system = _system(model_or_system)
    mesh = system.mesh
    U = np.ascontiguousarray(np.atleast_2d(U), dtype=np.float64)
    if U.shape[1] != system.n_dofs:
        raise ValueError(f"U must have {system.n_dofs} DOFs per case, got {U.shape[1]}")
    scale = (np.ones(system.n_cells) if stiffness_scale is None
             else np.ascontiguousarray(stiffness_scale, dtype=np.float64))
    if scale.shape != (system.n_cells,):
        raise ValueError(f"stiffness_scale must have shape ({system.n_cells},), got {scale.shape}")
    start, stop, _ = (cells or slice(None)).indices(system.n_cells)
    if system.is_grid:
        from .kernels import grid_element_products
        # cells [start, stop) are whole layers of the last axis: a grid of their own whose
        # nodes are one contiguous block of the numbering (x fastest)
        shape = tuple(mesh.grid)
        layer = int(np.prod(shape[:-1]))
        assert start % layer == 0 and stop % layer == 0, "grid chunks must be whole layers"
        nodes_per_layer = int(np.prod([n + 1 for n in shape[:-1]]))
        sub = shape[:-1] + ((stop - start) // layer,)
        dofs = slice(start // layer * nodes_per_layer * system.dim,
                     (stop // layer + 1) * nodes_per_layer * system.dim)
        ops = stress_operators(system)[0]                        # (n_q, n_voigt, n_dof_e)
        n_q, n_voigt, n_dof_e = ops.shape
        flat = grid_element_products(sub, ops.reshape(n_q * n_voigt, n_dof_e), U[:, dofs])
        out = flat.reshape(U.shape[0], stop - start, n_q, n_voigt)
        out *= scale[None, start:stop, None, None]
        return out
    chunk = mesh.cells[start:stop]
    return element_point_stresses(mesh.cell_type, mesh.points[chunk], system.D,
                                  system.block_cell_dofs(slice(start, stop)), U, scale[start:stop])


def extrapolation_matrix(cell_type: str) -> np.ndarray:
    """Matrix E (n_nodes, n_points): nodal values = E @ integration-point values, per element.

    quad/hexahedron: inverse of the shape functions at the Gauss points; tetra10: the linear
    field through the 4 points at the corners, mid-edge nodes the mean of their two corners;
    triangle/tetra (one point): the constant.
    """
    xi, _ = quadrature(cell_type)
    if cell_type in ("triangle", "tetra"):
        return np.ones((3 if cell_type == "triangle" else 4, 1))
    if cell_type in ("quad", "hexahedron"):
        N, _ = shape_functions(cell_type, xi)                    # (n_q, n_nodes), square
        return np.linalg.inv(N)
    if cell_type == "tetra10":
        N, _ = shape_functions("tetra", xi)                      # linear, (4 points, 4 corners)
        corners = np.linalg.inv(N)                               # (4 corners, n_q)
        mids = np.array([(corners[a] + corners[b]) / 2 for a, b in _TET10_EDGES])
        return np.vstack([corners, mids])
    raise KeyError(f"no stress extrapolation for cell type {cell_type!r}")


def nodal_stresses(model_or_system, point_stresses: np.ndarray) -> np.ndarray:
    """Integration-point stresses extrapolated to the nodes and averaged, (n_cases, n_nodes, n_voigt).

    point_stresses: (n_cases, n_cells, n_points, n_voigt). Each node takes the unweighted mean
    of the values extrapolated to it by the cells that contain it (CalculiX/Abaqus); nodes of
    no cell get 0.
    """
    system = _system(model_or_system)
    mesh = system.mesh
    S = np.asarray(point_stresses)
    n_cases, n_cells, n_q, n_voigt = S.shape
    E = extrapolation_matrix(mesh.cell_type)                     # (n_nodes_e, n_q)
    index = mesh.cells.ravel()
    count = np.bincount(index, minlength=mesh.n_nodes).astype(float)
    count[count == 0] = 1.0
    out = np.empty((n_cases, mesh.n_nodes, n_voigt))
    for c in range(n_cases):
        at_nodes = np.einsum("aq,eqv->eav", E, S[c]).reshape(-1, n_voigt)
        for v in range(n_voigt):
            out[c, :, v] = np.bincount(index, weights=at_nodes[:, v], minlength=mesh.n_nodes) / count
    return out


def stress_tensor(stress: np.ndarray, dim: int, plane: str = "stress", nu: float = 0.0) -> np.ndarray:
    """Full symmetric 3x3 tensors (..., 3, 3) from Voigt stresses (..., n_voigt).

    2D: sigma_zz = 0 in plane stress, nu (sigma_xx + sigma_yy) in plane strain.
    """
    s = np.asarray(stress)
    T = np.zeros(s.shape[:-1] + (3, 3))
    if dim == 2:
        T[..., 0, 0], T[..., 1, 1] = s[..., 0], s[..., 1]
        T[..., 0, 1] = T[..., 1, 0] = s[..., 2]
        if plane == "strain":
            T[..., 2, 2] = nu * (s[..., 0] + s[..., 1])
        return T
    for i in range(3):
        T[..., i, i] = s[..., i]
    for v, (i, j) in zip((3, 4, 5), ((0, 1), (1, 2), (2, 0))):
        T[..., i, j] = T[..., j, i] = s[..., v]
    return T


def principal_stresses(stress: np.ndarray, dim: int, plane: str = "stress", nu: float = 0.0) -> np.ndarray:
    """Principal stresses (..., 3), largest first, from Voigt stresses (..., n_voigt)."""
    return np.linalg.eigvalsh(stress_tensor(stress, dim, plane, nu))[..., ::-1].copy()


def von_mises_gradient(stress: np.ndarray, dim: int, plane: str = "stress", nu: float = 0.0) -> np.ndarray:
    """d(von Mises)/d(Voigt stress), (..., n_voigt); 0 where the stress is 0.

    With d(sigma)/d(u_e) = s_e D B_q (:func:`stress_operators`), the chain rule gives the
    sensitivity of a point's von Mises stress to the element displacements.
    """
    s = np.asarray(stress, dtype=float)
    vm = von_mises(s, dim, plane, nu)
    inv = np.divide(1.0, vm, out=np.zeros_like(vm), where=vm > 0)
    g = np.empty_like(s)
    if dim == 2:
        sxx, syy, sxy = s[..., 0], s[..., 1], s[..., 2]
        if plane == "strain":
            # sigma_zz = nu (sxx + syy) depends on both in-plane normal stresses
            szz = nu * (sxx + syy)
            a = (2 * sxx - syy - szz) + nu * (2 * szz - sxx - syy)
            b = (2 * syy - sxx - szz) + nu * (2 * szz - sxx - syy)
            g[..., 0], g[..., 1] = 0.5 * a * inv, 0.5 * b * inv
        else:
            g[..., 0] = (sxx - 0.5 * syy) * inv
            g[..., 1] = (syy - 0.5 * sxx) * inv
        g[..., 2] = 3 * sxy * inv
        return g
    sxx, syy, szz = s[..., 0], s[..., 1], s[..., 2]
    g[..., 0] = (sxx - 0.5 * (syy + szz)) * inv
    g[..., 1] = (syy - 0.5 * (szz + sxx)) * inv
    g[..., 2] = (szz - 0.5 * (sxx + syy)) * inv
    for v in (3, 4, 5):
        g[..., v] = 3 * s[..., v] * inv
    return g


# Bytes of temporaries one block of stress_results may take. 8 MiB is 130 B per tet at 63k
# tets and 38 at 222k on top of the design loop's memory; a block is still ~15 900 tets (or
# ~7 000 hex8 cells), so the per-block Python overhead (~10 calls) stays far below the work.
STRESS_BLOCK_BYTES = 8 * 2**20
# and at most this many cells per block whatever the budget (the former fixed block size)
STRESS_BLOCK_CELLS = 65536


def _block_bytes_per_cell(system) -> int:
    """Estimated bytes of stress_results' temporaries per cell of ``system``'s mesh.

    The block's point stresses, their von Mises values and the expression's intermediates
    (~6 arrays of one value per point), the cell means, the values extrapolated to the cell's
    nodes; off the grid also the gathered node coordinates and the cell DOFs.
    """
    mesh = system.mesh
    n_nodes_e = mesh.cells.shape[1]
    n_q = n_integration_points(mesh.cell_type)
    n_voigt = system.D.shape[0]
    values = n_q * n_voigt + 6 * n_q + n_voigt + n_nodes_e * n_voigt
    if not system.is_grid:
        values += n_nodes_e * system.dim * 2            # coordinates and DOFs
    return 8 * values


def _cell_blocks(system, block_bytes: int | None = None):
    """Contiguous cell ranges whose temporaries fit ``block_bytes`` (default STRESS_BLOCK_BYTES).

    At most STRESS_BLOCK_CELLS cells each; on grids whole layers of the last axis (at least one).
    """
    n = system.n_cells
    budget = STRESS_BLOCK_BYTES if block_bytes is None else block_bytes
    step = max(1, min(STRESS_BLOCK_CELLS, budget // _block_bytes_per_cell(system)))
    if system.is_grid:
        layer = int(np.prod(system.mesh.grid[:-1]))
        step = max(1, step // layer) * layer
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]


@numba.njit(cache=True)
def _add_to_nodes(nodal, cells, at_nodes):
    """nodal[cells[e, a]] += at_nodes[e * n_a + a], cell after cell (the order bincount sums in)."""
    n_cells, n_a = cells.shape
    n_voigt = nodal.shape[1]
    for e in range(n_cells):
        for a in range(n_a):
            node = cells[e, a]
            row = e * n_a + a
            for v in range(n_voigt):
                nodal[node, v] += at_nodes[row, v]


def stress_results(model_or_system, U: np.ndarray, stiffness_scale: np.ndarray | None = None,
                   block_bytes: int | None = None) -> dict:
    """Everything a Solution reports about stress, per case index.

    Returns {"stress": (n_cases, n_cells, n_voigt) mean over each cell's points,
    "von_mises": (n_cases, n_cells) maximum over each cell's points,
    "stress_nodal": (n_cases, n_nodes, n_voigt), "von_mises_nodal": (n_cases, n_nodes)}.
    Works through blocks of cells and one case at a time, so no array of all point stresses
    is ever held (1M hexes x 8 points x 6 components would be 384 MB per case); block_bytes
    bounds a block's temporaries (default :data:`STRESS_BLOCK_BYTES`) and does not change
    the results.
    """
    system = _system(model_or_system)
    model, mesh = system.model, system.mesh
    U = np.atleast_2d(U)
    n_cases = U.shape[0]
    args = (system.dim, model.plane, model.material.nu)
    n_voigt = system.D.shape[0]
    E = extrapolation_matrix(mesh.cell_type)                     # (n_nodes_e, n_q)
    cells = mesh.cells      # read once: a grid builds its cells on each read (mesh.py)
    count = np.bincount(cells.ravel(), minlength=mesh.n_nodes).astype(float)
    count[count == 0] = 1.0
    out = {"stress": np.empty((n_cases, system.n_cells, n_voigt)),
           "von_mises": np.empty((n_cases, system.n_cells)),
           "stress_nodal": np.zeros((n_cases, mesh.n_nodes, n_voigt)),
           "von_mises_nodal": np.empty((n_cases, mesh.n_nodes))}
    blocks = _cell_blocks(system, block_bytes)
    for c in range(n_cases):
        nodal = out["stress_nodal"][c]
        for block in blocks:
            points = integration_point_stresses(system, U[c:c + 1], stiffness_scale, block)[0]
            out["stress"][c, block] = points.mean(axis=1)
            out["von_mises"][c, block] = von_mises(points, *args).max(axis=1)
            # extrapolate to the block's nodes and add into the nodal sums in cell order
            at_nodes = np.einsum("aq,eqv->eav", E, points).reshape(-1, n_voigt)
            del points
            _add_to_nodes(nodal, cells[block], at_nodes)
            del at_nodes
        nodal /= count[:, None]
        out["von_mises_nodal"][c] = von_mises(nodal, *args)
    return out
