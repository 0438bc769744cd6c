"""Geometric multigrid-PCG on structured grids against assembled CSR matrices and direct solves."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from lightweight.errors import SolverError
from lightweight.fem.assembly import DirichletMask, build_pattern, refill
from lightweight.fem.elements import element_stiffness
from lightweight.fem.material import elasticity_matrix
from lightweight.fem.multigrid import GridMultigrid, grid_matvec
from lightweight.mesh.grid import structured_grid

SPACING_3D = (1.0, 0.8, 1.25)
SPACING_2D = (1.0, 0.6)


def _setup(shape, spacing):
    """Grid mesh, unit-E element matrix, clamped-xmin mask and a tip load on the xmax face."""
    dim = len(shape)
    mesh = structured_grid(shape, size=[n * h for n, h in zip(shape, spacing)])
    Ke, _ = element_stiffness(mesh.cell_type, mesh.points[mesh.cells[:1]],
                              elasticity_matrix(1.0, 0.3, dim))
    fixed = np.zeros((mesh.n_nodes, dim), dtype=bool)
    fixed[mesh.node_sets["xmin"]] = True
    force = np.zeros((mesh.n_nodes, dim))
    xmax = mesh.node_sets["xmax"]
    # load the bottom edge of the free end (y = 0) downwards in the last component
    edge = xmax[mesh.points[xmax, 1] == 0.0]
    force[edge, dim - 1] = -1.0 / edge.size
    return mesh, Ke[0], fixed.ravel(), force.ravel()


def _assembled(mesh, Ke, scale):
    pattern = build_pattern(mesh.cells, mesh.n_nodes, mesh.dim)
    return pattern, pattern.matrix(refill(pattern, Ke[None], scale))


def _direct_compliance(K, fixed, F):
    free = ~fixed
    lu = spla.splu(K[free][:, free].tocsc(), permc_spec="MMD_AT_PLUS_A")
    return float(F[free] @ lu.solve(F[free]))


def _truss_design(mesh, shape):
    """Connected 0/1 design: flanges along y=0 and y=ny, diagonal webs, clamped end solid."""
    c = mesh.points[mesh.cells].mean(axis=1) / np.asarray(mesh.grid_spacing)
    ny = shape[1]
    t = max(1.0, ny / 6)
    solid = (c[:, 1] < t) | (c[:, 1] > ny - t) | (c[:, 0] < 1)
    for k in range(0, shape[0], ny):
        solid |= np.abs(c[:, 0] - k - c[:, 1]) < 0.75 * t
        solid |= np.abs(c[:, 0] - k - (ny - c[:, 1])) < 0.75 * t
    return solid


def _designs(mesh, shape):
    rng = np.random.default_rng(7)
    # iid densities with volume fraction 0.1 spread over [1e-3, 0.2]: per-cell contrast 1e7
    rho = rng.uniform(1e-3, 0.2, mesh.n_cells)
    return {"uniform": np.ones(mesh.n_cells),
            "random_simp": 1e-9 + rho ** 3 * (1 - 1e-9),
            "thresholded": np.where(_truss_design(mesh, shape), 1.0, 1e-9)}


@pytest.mark.parametrize("shape, spacing", [((6, 4, 5), SPACING_3D), ((9, 7), SPACING_2D)])
def test_grid_matvec_equals_assembled_csr(shape, spacing):
    mesh, Ke, _, _ = _setup(shape, spacing)
    rng = np.random.default_rng(1)
    scale = rng.uniform(1e-3, 1.0, mesh.n_cells)
    _, K = _assembled(mesh, Ke, scale)
    U = rng.standard_normal((3, K.shape[0]))
    expected = (K @ U.T).T
    got = grid_matvec(shape, Ke, scale, U)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    assert np.allclose(grid_matvec(shape, Ke, scale, U[0]), expected[0], atol=1e-12 * np.abs(expected).max())


def test_constrained_matvec_matches_system_convention():
    """matvec is the CSR matrix DirichletMask builds (fixed diagonal = mean free diagonal)."""
    shape = (6, 4, 4)
    mesh, Ke, fixed, _ = _setup(shape, SPACING_3D)
    scale = np.random.default_rng(2).uniform(0.01, 1.0, mesh.n_cells)
    pattern, K = _assembled(mesh, Ke, scale)
    constrained, diag_value = DirichletMask(pattern, np.flatnonzero(fixed)).apply(K.data)
    Kc = pattern.matrix(constrained)
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed)
    mg.update(scale)
    assert mg.fixed_diagonal == pytest.approx(diag_value, rel=1e-12)
    u = np.random.default_rng(3).standard_normal(K.shape[0])
    assert np.allclose(mg.matvec(u), Kc @ u, atol=1e-12 * np.abs(Kc @ u).max())


@pytest.mark.parametrize("design", ["uniform", "random_simp", "thresholded"])
def test_mg_pcg_compliance_matches_direct_3d(design):
    shape = (24, 12, 12)
    mesh, Ke, fixed, F = _setup(shape, SPACING_3D)
    scale = _designs(mesh, shape)[design]
    _, K = _assembled(mesh, Ke, scale)
    reference = _direct_compliance(K, fixed, F)
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed, coarse_max_dofs=1000)
    assert len(mg.levels) == 3
    mg.update(scale)
    U, info = mg.solve(F)
    assert info["converged"], info
    assert abs(F @ U - reference) <= 1e-6 * abs(reference)
    assert np.all(U[fixed] == 0.0)


@pytest.mark.parametrize("design", ["uniform", "random_simp", "thresholded"])
def test_mg_pcg_compliance_matches_direct_2d(design):
    shape = (64, 32)
    mesh, Ke, fixed, F = _setup(shape, SPACING_2D)
    scale = _designs(mesh, shape)[design]
    _, K = _assembled(mesh, Ke, scale)
    reference = _direct_compliance(K, fixed, F)
    mg = GridMultigrid(shape, SPACING_2D, Ke, fixed, coarse_max_dofs=200)
    assert len(mg.levels) >= 4
    mg.update(scale)
    U, info = mg.solve(F)
    assert info["converged"], info
    assert abs(F @ U - reference) <= 1e-6 * abs(reference)


def test_single_level_is_a_direct_solve():
    shape = (8, 4, 4)
    mesh, Ke, fixed, F = _setup(shape, SPACING_3D)
    scale = _designs(mesh, shape)["thresholded"]
    _, K = _assembled(mesh, Ke, scale)
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed)        # 675 DOFs <= coarse_max_dofs
    assert len(mg.levels) == 1
    mg.update(scale)
    U, info = mg.solve(F)
    assert info["iterations"] == [1]
    assert F @ U == pytest.approx(_direct_compliance(K, fixed, F), rel=1e-9)


def _iterations(shape, design="uniform"):
    mesh, Ke, fixed, F = _setup(shape, (1.0, 1.0, 1.0))
    # the same coarsest grid (8x4x4 cells) at every size: only the number of levels grows
    mg = GridMultigrid(shape, None, Ke, fixed, coarse_max_dofs=700)
    mg.update(_designs(mesh, shape)[design])
    _, info = mg.solve(F)
    assert info["converged"]
    return info["iterations"][0]


@pytest.mark.parametrize("design", ["uniform", "random_simp"])
def test_iterations_nearly_flat_under_refinement(design):
    counts = [_iterations(s, design) for s in [(16, 8, 8), (32, 16, 16)]]
    print(design, "PCG iterations at 16x8x8, 32x16x16:", counts)
    assert max(counts) <= 1.5 * min(counts) + 5


@pytest.mark.slow
@pytest.mark.parametrize("design", ["uniform", "random_simp"])
def test_iterations_nearly_flat_under_refinement_large(design):
    counts = [_iterations(s, design) for s in [(16, 8, 8), (32, 16, 16), (64, 32, 32)]]
    print(design, "PCG iterations at 16x8x8, 32x16x16, 64x32x32:", counts)
    assert max(counts) <= 1.5 * min(counts) + 5


def test_several_load_cases_equal_one_by_one():
    shape = (16, 8, 8)
    mesh, Ke, fixed, F = _setup(shape, SPACING_3D)
    rng = np.random.default_rng(5)
    F2 = np.zeros_like(F)
    F2[mesh.node_sets["xmax"] * 3 + 1] = 1.0
    F3 = rng.standard_normal(F.size) * ~fixed
    rhs = np.stack([F, F2, F3])
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed, coarse_max_dofs=1000)
    mg.update(_designs(mesh, shape)["random_simp"])
    U, info = mg.solve(rhs)
    assert len(info["iterations"]) == 3
    for c in range(3):
        Uc, _ = mg.solve(rhs[c])
        assert np.allclose(U[c], Uc, rtol=0, atol=1e-12 * np.abs(Uc).max())


def test_fixed_values_warm_start_and_vcycle_symmetry():
    shape = (8, 4, 4)
    mesh, Ke, fixed, F = _setup(shape, SPACING_3D)
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed, coarse_max_dofs=100)
    mg.update(_designs(mesh, shape)["random_simp"])
    # prescribed values in the system.py convention: rhs[f] = fixed_diagonal * u_p
    rhs = F.copy()
    rhs[fixed] = mg.fixed_diagonal * 0.5
    U, info = mg.solve(rhs)
    assert np.allclose(U[fixed], 0.5)
    assert np.linalg.norm(mg.matvec(U) - rhs) <= 1e-7 * np.linalg.norm(rhs)
    # warm start from the solution converges at once
    _, info_warm = mg.solve(rhs, x0=U)
    assert info_warm["iterations"][0] <= 1
    # the V-cycle is a symmetric operator (required by CG): exactly up to double rounding with
    # a float64 fine level, up to single rounding with the default float32 one
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((2, mg.n_dofs)) * ~fixed
    assert a @ mg.vcycle(b) == pytest.approx(b @ mg.vcycle(a), rel=1e-5)
    mg64 = GridMultigrid(shape, SPACING_3D, Ke, fixed, coarse_max_dofs=100, vcycle_dtype=np.float64)
    mg64.update(_designs(mesh, shape)["random_simp"])
    assert a @ mg64.vcycle(b) == pytest.approx(b @ mg64.vcycle(a), rel=1e-9)


def test_bad_input_raises():
    mesh, Ke, fixed, _ = _setup((4, 2, 2), SPACING_3D)
    with pytest.raises(SolverError, match="element_matrix"):
        GridMultigrid((4, 2, 2), None, Ke[:8, :8], fixed)
    mg = GridMultigrid((4, 2, 2), None, Ke, fixed)
    with pytest.raises(SolverError, match="update"):
        mg.solve(np.zeros(mg.n_dofs))
    with pytest.raises(SolverError, match="one value per cell"):
        mg.update(np.ones(3))
    for option, value in (("bfloat16_levels", -1), ("coarse_smoother_degree", 0),
                          ("smoother_degree", 2.5), ("coarse_max_dofs", "many")):
        with pytest.raises(SolverError, match=option):
            GridMultigrid((4, 2, 2), None, Ke, fixed, **{option: value})


@pytest.mark.parametrize("design", ["random_simp", "thresholded"])
@pytest.mark.parametrize("shape, spacing, coarse", [((24, 12, 12), SPACING_3D, 1000),
                                                     ((64, 32), SPACING_2D, 200)])
def test_float32_vcycle_matches_direct(design, shape, spacing, coarse):
    """vcycle_dtype=float32: compliance still within 1e-6 of the direct solve, the solution
    in float64, and the iteration count within one of the float64 V-cycle's."""
    mesh, Ke, fixed, F = _setup(shape, spacing)
    scale = _designs(mesh, shape)[design]
    _, K = _assembled(mesh, Ke, scale)
    reference = _direct_compliance(K, fixed, F)
    iterations = {}
    for dtype in (np.float64, np.float32):
        mg = GridMultigrid(shape, spacing, Ke, fixed, coarse_max_dofs=coarse, vcycle_dtype=dtype)
        mg.update(scale)
        U, info = mg.solve(F)
        assert info["converged"], info
        assert U.dtype == np.float64 and mg.vcycle(F).dtype == np.float64
        assert abs(F @ U - reference) <= 1e-6 * abs(reference)
        iterations[np.dtype(dtype).name] = info["iterations"][0]
    assert abs(iterations["float32"] - iterations["float64"]) <= 1, iterations
    # the fine level really ran in single precision: its diagonal is stored as float32
    assert mg.levels[0].inv_diag.dtype == np.float32


def test_float32_fine_apply_matches_float64():
    """The float32 fine kernel inside the V-cycle equals the float64 one to single precision."""
    shape = (6, 4, 4)
    mesh, Ke, fixed, _ = _setup(shape, SPACING_3D)
    scale = np.random.default_rng(4).uniform(1e-3, 1.0, mesh.n_cells)
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed, vcycle_dtype="float32")
    mg.update(scale)
    U = np.random.default_rng(5).standard_normal((2, mg.n_dofs))
    exact = mg._apply_level(mg.levels[0], U, np.empty_like(U))
    single = mg._apply_level(mg.levels[0], U.astype(np.float32), np.empty(U.shape, np.float32))
    assert single.dtype == np.float32
    assert np.abs(single - exact).max() <= 1e-5 * np.abs(exact).max()


@pytest.mark.parametrize("shape", [(7, 5, 4), (6, 3, 9), (5, 4, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layered_fine_apply_equals_the_assembled_matrix(shape, dtype):
    """The 3D fine matvec, by layers of cells (>= 4 layers, odd counts included) or by colours
    (thinner grids), is K (free * U) on free rows and fixed_diag * U on fixed ones."""
    from lightweight.fem.multigrid import _LAYERED_MIN_LAYERS, _cell_offsets, _fine_apply
    mesh, Ke, fixed, _ = _setup(shape, SPACING_3D)
    assert (shape[2] >= _LAYERED_MIN_LAYERS) == (shape != (5, 4, 3))
    rng = np.random.default_rng(11)
    scale = rng.uniform(1e-3, 1.0, mesh.n_cells)
    _, K = _assembled(mesh, Ke, scale)
    n = K.shape[0]
    free = np.ones(n)
    free[fixed] = 0.0
    U = rng.standard_normal((2, n))
    expected = (K @ (U * free).T).T * free + 0.5 * U * (1.0 - free)
    cells = shape
    nodes = tuple(c + 1 for c in shape)
    out = np.empty(U.shape, dtype)
    _fine_apply(nodes, cells, 3, _cell_offsets(3), Ke.astype(dtype), scale.astype(dtype),
                free.astype(dtype), U.astype(dtype), out, 0.5)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(out - expected).max() <= tol * np.abs(expected).max()


def test_vector_kernels_equal_numpy_bit_for_bit():
    """The fused PCG and Chebyshev updates (loops over entries innermost) give NumPy's numbers."""
    from lightweight.fem.multigrid import _chebyshev_update, _pcg_direction, _pcg_step
    rng = np.random.default_rng(21)
    X, R, P, AP, Dk = (rng.standard_normal((2, 5003)) for _ in range(5))
    Z = rng.standard_normal((2, 5003)).astype(np.float32)
    inv_diag = rng.uniform(0.1, 2.0, 5003)
    alpha, beta = np.array([0.3, -1.7]), np.array([0.9, 0.05])
    X1, R1, P1 = X + alpha[:, None] * P, R - alpha[:, None] * AP, beta[:, None] * P + Z
    _pcg_step(X, R, P, AP, alpha)
    _pcg_direction(P, Z, beta)
    for got, expected in ((X, X1), (R, R1), (P, P1)):
        np.testing.assert_array_equal(got, expected)
    for AD, a, b in ((None, 0.0, 0.7), (None, 0.4, 0.7), (AP, 0.4, 0.7), (AP, 0.0, 1.3)):
        Rn = R if AD is None else R - AD
        Dn = b * inv_diag * Rn + (a * Dk if a != 0.0 else 0.0)
        Xn = X + Dn
        _chebyshev_update(X, R, AD, Dk, inv_diag, a, b)
        for got, expected in ((R, Rn), (Dk, Dn), (X, Xn)):
            np.testing.assert_array_equal(got, expected)


def _interpolation_matrix(cnodes, fnodes, dim):
    """The (bi/tri)linear prolongation between nested grids as a dense matrix, node by node."""
    def parents(i):
        return {i // 2: 1.0} if i % 2 == 0 else {(i - 1) // 2: 0.5, (i + 1) // 2: 0.5}
    (cpx, cpy, _), (fpx, fpy, fpz) = cnodes, fnodes
    P = np.zeros((fpx * fpy * fpz * dim, int(np.prod(cnodes)) * dim))
    for k in range(fpz):
        for j in range(fpy):
            for i in range(fpx):
                n = i + fpx * (j + fpy * k)
                for K, wk in parents(k).items():
                    for J, wj in parents(j).items():
                        for I, wi in parents(i).items():
                            N = I + cpx * (J + cpy * K)
                            for q in range(dim):
                                P[n * dim + q, N * dim + q] += wi * wj * wk
    return P


@pytest.mark.parametrize("cnodes, fnodes, dim", [((3, 4, 2), (5, 7, 3), 3), ((4, 3, 1), (7, 5, 1), 2)])
@pytest.mark.parametrize("fine_dtype", [np.float64, np.float32])
def test_grid_transfers_are_the_interpolation_and_its_transpose(cnodes, fnodes, dim, fine_dtype):
    """Prolongation adds free * (P Xc) and restriction gives P^T (free * Xf), line-wise kernels."""
    from lightweight.fem.multigrid import _prolong_add, _restrict
    P = _interpolation_matrix(cnodes, fnodes, dim)
    rng = np.random.default_rng(31)
    free = (rng.uniform(size=P.shape[0]) > 0.2).astype(fine_dtype)
    Xc = rng.standard_normal((2, P.shape[1]))
    Xf = rng.standard_normal((2, P.shape[0])).astype(fine_dtype)
    tol = 1e-12 if fine_dtype == np.float64 else 1e-6
    out = Xf.copy()
    _prolong_add(cnodes, fnodes, dim, Xc, out, free)
    np.testing.assert_allclose(out, Xf + free * (Xc @ P.T), rtol=tol, atol=tol)
    restricted = np.empty_like(Xc)
    _restrict(cnodes, fnodes, dim, Xf, restricted, free)
    np.testing.assert_allclose(restricted, (free * Xf) @ P, rtol=tol, atol=tol)


def test_bad_vcycle_dtype_raises():
    _, Ke, fixed, _ = _setup((4, 2, 2), SPACING_3D)
    with pytest.raises(SolverError, match="vcycle_dtype"):
        GridMultigrid((4, 2, 2), None, Ke, fixed, vcycle_dtype=np.float16)


@pytest.mark.parametrize("shape, spacing, n_levels", [((12, 8, 8), SPACING_3D, 3),
                                                     ((16, 8, 8), SPACING_3D, 4),
                                                     ((24, 16), SPACING_2D, 4)])
@pytest.mark.parametrize("coarse_dtype", [np.float64, np.float32])
def test_half_stencil_levels_are_the_galerkin_product(shape, spacing, n_levels, coarse_dtype):
    """Each intermediate level, stored as its upper half, applies (D P)^T K (D P) of the
    assembled fine K (scipy), P the composed interpolation, D the free mask, dead DOFs zeroed."""
    mesh, Ke, fixed, _ = _setup(shape, spacing)
    scale = np.random.default_rng(6).uniform(1e-3, 1.0, mesh.n_cells)
    mg = GridMultigrid(shape, spacing, Ke, fixed, n_levels=n_levels, coarse_dtype=coarse_dtype)
    mg.update(scale)
    _, K = _assembled(mesh, Ke, scale)
    DP = sp.diags((~fixed).astype(float)).tocsr()
    tol = 1e-12 if coarse_dtype == np.float64 else 1e-6
    assert len(mg.levels) == n_levels
    for level in range(1, n_levels - 1):
        lev, finer = mg.levels[level], mg.levels[level - 1]
        assert lev.indices is None and lev.data.dtype == coarse_dtype
        DP = DP @ sp.csr_matrix(_interpolation_matrix(lev.nodes, finer.nodes, mg.dim))
        alive = sp.diags(lev.alive)
        A = alive @ (DP.T @ K @ DP) @ alive
        X = np.random.default_rng(level).standard_normal((2, lev.n_dofs))
        out = mg._apply_level(lev, X, np.empty_like(X))
        expected = (A @ X.T).T
        assert np.abs(out - expected).max() <= tol * np.abs(expected).max()
        np.testing.assert_allclose(1.0 / lev.inv_diag[lev.alive > 0], A.diagonal()[lev.alive > 0],
                                   rtol=tol)
    # the coarsest level below intermediate ones is the Galerkin product of the level above,
    # read off by probing: the same matrix (within the level above's rounding), dead DOFs zeroed
    coarsest, above = mg.levels[-1], mg.levels[-2]
    assert coarsest.from_level_above == (n_levels >= 4 and mg.dim == 3)
    DP = DP @ sp.csr_matrix(_interpolation_matrix(coarsest.nodes, above.nodes, mg.dim))
    alive = sp.diags(coarsest.alive.astype(float))
    expected = (alive @ (DP.T @ K @ DP) @ alive).toarray()
    got = sp.csr_matrix((coarsest.data, coarsest.indices, coarsest.indptr),
                        shape=(coarsest.n_dofs,) * 2).toarray()
    assert np.abs(got - expected).max() <= tol * np.abs(expected).max()


@pytest.mark.parametrize("shape, spacing", [((16, 8, 8), SPACING_3D), ((24, 16), SPACING_2D)])
@pytest.mark.parametrize("chunk_values", [None, 1])
def test_bfloat16_level_is_the_rounded_float32_level(shape, spacing, chunk_values, monkeypatch):
    """A bfloat16 first level holds the float32 level's values rounded to nearest even, bit
    for bit, whether it is assembled in one window or slab by slab (the window carried from
    chunk to chunk); its diagonal is the float32 one; the solve still converges to the direct
    compliance, and the level above a coarsest product is never rounded."""
    import lightweight.fem.multigrid as multigrid
    if chunk_values is not None:
        monkeypatch.setattr(multigrid, "ASSEMBLY_CHUNK_VALUES", chunk_values)
    mesh, Ke, fixed, F = _setup(shape, spacing)
    scale = np.random.default_rng(6).uniform(1e-3, 1.0, mesh.n_cells)
    rounded = GridMultigrid(shape, spacing, Ke, fixed, n_levels=4, bfloat16_levels=1)
    plain = GridMultigrid(shape, spacing, Ke, fixed, n_levels=4, bfloat16_levels=0)
    rounded.update(scale)
    plain.update(scale)
    level, reference = rounded.levels[1], plain.levels[1]
    assert level.data.dtype == np.uint16 and reference.data.dtype == np.float32
    expected = np.empty(reference.data.size, np.uint16)
    multigrid._round_to_bfloat16(reference.data, expected)
    np.testing.assert_array_equal(level.data, expected)
    np.testing.assert_array_equal(level.inv_diag, reference.inv_diag)
    decoded = (level.data.astype(np.uint32) << 16).view(np.float32)
    assert np.abs(decoded - reference.data).max() <= 2.0 ** -8 * np.abs(reference.data).max()
    _, K = _assembled(mesh, Ke, scale)
    U, info = rounded.solve(F)
    assert info["converged"]
    assert abs(F @ U - _direct_compliance(K, fixed, F)) <= 1e-6 * abs(F @ U)
    assert not any(lev.bfloat16 for lev in rounded.levels[2:])
    for n_levels in (3, 4):
        deep = GridMultigrid(shape, spacing, Ke, fixed, n_levels=n_levels, bfloat16_levels=5)
        above_product = deep.levels[-1].from_level_above
        assert above_product == (len(shape) == 3 and n_levels == 4)     # factor 8 and up
        assert [lev.bfloat16 for lev in deep.levels] == (
            [False] + [True] * (n_levels - 2 - above_product) + [False] * (1 + above_product))


def test_coarsest_product_with_dead_dofs_is_the_galerkin_product_and_solves():
    """A thick clamped block (every DOF of the nodes with x <= 7) leaves coarse DOFs whose whole
    interpolation support is fixed: the coarsest product zeroes them like the tables do, equals
    (D P)^T K (D P) of the assembled K on the live DOFs, and the solve matches the direct one."""
    shape = (16, 8, 8)
    mesh, Ke, _, F = _setup(shape, SPACING_3D)
    fixed = np.repeat(mesh.points[:, 0] <= 7.0 * SPACING_3D[0], 3)
    scale = _designs(mesh, shape)["random_simp"]
    mg = GridMultigrid(shape, SPACING_3D, Ke, fixed, n_levels=4)
    mg.update(scale)
    coarsest, above = mg.levels[-1], mg.levels[-2]
    assert coarsest.from_level_above and np.count_nonzero(coarsest.alive == 0) > 0
    _, K = _assembled(mesh, Ke, scale)
    DP = sp.diags((~fixed).astype(float)).tocsr()
    for level in range(1, len(mg.levels)):
        DP = DP @ sp.csr_matrix(_interpolation_matrix(mg.levels[level].nodes,
                                                      mg.levels[level - 1].nodes, 3))
    alive = sp.diags(coarsest.alive.astype(float))
    expected = (alive @ (DP.T @ K @ DP) @ alive).toarray()
    got = sp.csr_matrix((coarsest.data, coarsest.indices, coarsest.indptr),
                        shape=(coarsest.n_dofs,) * 2).toarray()
    assert np.abs(got - expected).max() <= 1e-6 * np.abs(expected).max()
    U, info = mg.solve(F)
    assert info["converged"]
    assert abs(F @ U - _direct_compliance(K, fixed, F)) <= 1e-6 * abs(F @ U)


def _half_layout_matrix(nodes, dim, data):
    """The full symmetric matrix (scipy CSR) of half-layout values, decoded entry by entry."""
    px, py, pz = nodes
    if dim == 3:
        lines = ((1, 0), (-1, 1), (0, 1), (1, 1))
        neighbours = [(0, 0, 0), (1, 0, 0)] + [(di, dj, dk) for dj, dk in lines for di in (-1, 0, 1)]
    else:
        neighbours = [(0, 0, 0), (1, 0, 0), (-1, 1, 0), (0, 1, 0), (1, 1, 0)]
    half = len(neighbours) * dim
    rows, cols, vals = [], [], []
    for n in range(px * py * pz):
        i, j, k = n % px, (n // px) % py, n // (px * py)
        for p in range(dim):
            for slot, (di, dj, dk) in enumerate(neighbours):
                ii, jj, kk = i + di, j + dj, k + dk
                if not (0 <= ii < px and 0 <= jj < py and 0 <= kk < pz):
                    continue                      # padding: never read as a coefficient
                m = ii + px * (jj + py * kk)
                for q in range(dim):
                    value = float(data[(n * dim + p) * half + slot * dim + q])
                    rows.append(n * dim + p)
                    cols.append(m * dim + q)
                    vals.append(value)
                    if m != n:
                        rows.append(m * dim + q)
                        cols.append(n * dim + p)
                        vals.append(value)
    n_dofs = px * py * pz * dim                # (the own block is stored whole: not mirrored)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_dofs, n_dofs))


@pytest.mark.parametrize("nodes, dim", [((5, 4, 4), 3), ((4, 3, 5), 3), ((3, 3, 2), 3),
                                        ((2, 2, 1), 3), ((6, 5, 1), 2), ((5, 6, 1), 2), ((2, 3, 1), 2)])
def test_half_stencil_apply_equals_the_full_matrix(nodes, dim):
    """The half-layout kernel (U X plus the scatter of U^T X, even then odd slabs, the
    constant-length interior path and the checked boundary path) is the full symmetric
    matrix, for odd and even slab counts, with garbage in the padding slots."""
    from lightweight.fem.multigrid import _half_row_length, _half_stencil_apply, _round_to_bfloat16
    rng = np.random.default_rng(17)
    n_nodes = nodes[0] * nodes[1] * nodes[2]
    half = _half_row_length(dim)
    data = rng.standard_normal(n_nodes * dim * half)
    for n in range(n_nodes):                     # a symmetric own block
        block = data[n * dim * half:(n + 1) * dim * half].reshape(dim, half)
        block[:, :dim] = 0.5 * (block[:, :dim] + block[:, :dim].T)
    A = _half_layout_matrix(nodes, dim, data)
    assert abs(A - A.T).max() == 0.0
    X = rng.standard_normal((2, A.shape[0]))
    bfloat16 = np.empty(data.size, np.uint16)
    _round_to_bfloat16(data.astype(np.float32), bfloat16)
    for dtype in (np.float64, np.float32, "bfloat16"):
        stored = bfloat16 if dtype == "bfloat16" else data.astype(dtype)
        values = (bfloat16.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else stored
        expected = (_half_layout_matrix(nodes, dim, values) @ X.T).T
        out = np.full_like(X, np.nan)
        _half_stencil_apply(nodes, dim, stored, X, out)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vcycle_in_the_pcg_s_dead_product_gives_the_same_correction(dtype):
    """The fine smoother's product and direction live in the PCG's A P between its use and the
    next product (two float32 vectors fit in one float64 one; with the float64 V-cycle they do
    not fit and are allocated): the V-cycle's correction is the one it gives on its own memory,
    and a scratch too small, strided or read-only is never written."""
    from lightweight.fem.multigrid import _borrowed_like
    shape = (12, 6, 6)
    mesh, Ke, fixed, F = _setup(shape, (1.0, 1.0, 1.0))
    mg = GridMultigrid(shape, None, Ke, fixed, vcycle_dtype=dtype, coarse_max_dofs=300)
    mg.update(_designs(mesh, shape)["random_simp"])
    assert len(mg.levels) >= 2                       # a smoothed fine level
    R = np.random.default_rng(3).standard_normal((2, mg.n_dofs)) * mg.free[None, :]
    own = mg._vcycle(0, R.copy())
    scratch = np.full(R.shape, 7.0)
    borrowed = mg._vcycle(0, R.copy(), scratch=scratch)
    np.testing.assert_allclose(borrowed, own, rtol=1e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-12 * np.abs(own).max())
    assert (np.all(scratch == 7.0)) == (dtype == np.float64)     # used only where two fit
    B = np.empty((2, 100), dtype=np.float32)
    parts = _borrowed_like(B, np.empty((2, 100)), 2)
    assert all(p.shape == B.shape and p.dtype == B.dtype and p.flags.c_contiguous for p in parts)
    assert not np.shares_memory(parts[0], parts[1])
    for bad in (np.empty((2, 99)), np.empty((2, 200))[:, ::2], np.empty((2, 100))[None][0].copy()):
        if bad.flags.c_contiguous and bad.nbytes >= 2 * B.nbytes:
            bad.flags.writeable = False
        parts = _borrowed_like(B, bad, 2)
        assert not any(np.shares_memory(p, bad) for p in parts)
