"""The reusable smoothed-aggregation hierarchy (lightweight.fem.amg, solver "amg-reuse").

References: PARDISO/SuperLU (direct) solutions of the same systems, SciPy's CSR products,
and the symmetry of the V-cycle (PCG needs a symmetric positive definite preconditioner).
Systems: the 12k-tet bracket of meshes/bracket.msh, clamped at its bolt holes, with SIMP
scale fields of 1e-9..1 contrast (random per cell, and a smooth field like an optimizer's).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lightweight.errors import SingularStiffnessError
from lightweight.fem.amg import ReusedHierarchy, block_pcg, spmm
from lightweight.fem.solvers import ReusedAMGSolver, available_solvers, make_solver, rigid_body_modes
from lightweight.fem.system import LinearElasticSystem

pytestmark = pytest.mark.skipif("amg" not in available_solvers(), reason="no pyamg")



@pytest.fixture(scope="module")
def bracket(bracket_model):
    return LinearElasticSystem(bracket_model("down", "side", "pull"))


def _matrix(system, scale):
    data = system.stiffness_data(scale)
    constrained, _ = system.dirichlet.apply(data)
    return system.pattern.matrix(constrained).copy()


def _rhs(system):
    F = system.to_matrix_order(system.load_vectors()).T.copy()     # K's numbering
    F[system.dirichlet.fixed_dofs] = 0.0
    return F


def _scales(system):
    rng = np.random.default_rng(3)
    centres = system.mesh.points[system.mesh.cells].mean(axis=1)
    smooth = 0.5 + 0.5 * np.sin(centres[:, 0] / 9.0) * np.cos(centres[:, 1] / 7.0)
    return {"solid": np.ones(system.n_cells),
            "smooth": 1e-9 + (1 - 1e-9) * smooth ** 3,
            "random": 1e-9 + (1 - 1e-9) * rng.uniform(0.0, 1.0, system.n_cells) ** 3}


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_block_products_match_scipy(k):
    rng = np.random.default_rng(k)
    A = sp.random(300, 200, density=0.05, random_state=k, format="csr")
    X = rng.standard_normal((200, k))
    np.testing.assert_allclose(spmm(A, X), A @ X, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("levels, single", [(2, False), (3, False), (2, True)])
def test_cycle_is_symmetric_positive(bracket, levels, single):
    K = _matrix(bracket, _scales(bracket)["random"])
    modes = rigid_body_modes(bracket.matrix_points)
    modes[np.diff(K.indptr) == 1] = 0.0
    hierarchy = ReusedHierarchy(max_coarse=200, max_levels=levels, single=single)
    hierarchy.build(K, modes)
    assert len(hierarchy.levels) == levels
    rng = np.random.default_rng(0)
    X = rng.standard_normal((K.shape[0], 2))
    Y = hierarchy.cycle(X)
    tol = 1e-5 if single else 1e-10
    assert abs(X[:, 0] @ Y[:, 1] - X[:, 1] @ Y[:, 0]) <= tol * abs(X[:, 0] @ Y[:, 1]) + 1e-300
    assert np.all(np.einsum("ij,ij->j", X, Y) > 0)


@pytest.mark.parametrize("case", ["solid", "smooth", "random"])
def test_agrees_with_direct_on_simp_contrast(bracket, case):
    """One hierarchy built on the solid serves refills at 1e9 contrast; compliance to 1e-8."""
    F = _rhs(bracket)
    solver = make_solver("amg-reuse", points=bracket.matrix_points, rtol=1e-8)
    direct = make_solver("direct")
    solver.factorize(_matrix(bracket, None))
    solver.solve(F)
    K = _matrix(bracket, _scales(bracket)[case])
    solver.factorize(K)
    X = solver.solve(F)
    direct.factorize(K)
    X_ref = direct.solve(F)
    c, c_ref = np.einsum("ij,ij->j", F, X), np.einsum("ij,ij->j", F, X_ref)
    np.testing.assert_allclose(c, c_ref, rtol=1e-8)
    assert max(solver.info["residuals"]) <= 1e-8
    assert solver.hierarchies_built == 1                  # refreshed, never rebuilt
    assert max(solver.info["iterations"]) <= 60


def test_float32_cycle_keeps_float64_accuracy(bracket):
    F = _rhs(bracket)
    K = _matrix(bracket, _scales(bracket)["smooth"])
    single = ReusedAMGSolver(points=bracket.matrix_points, rtol=1e-9, single=True)
    single.factorize(K)
    X = single.solve(F)
    double = ReusedAMGSolver(points=bracket.matrix_points, rtol=1e-9)
    double.factorize(K)
    np.testing.assert_allclose(X, double.solve(F), rtol=1e-6, atol=1e-8 * np.abs(X).max())
    # float32 products cost at most a few extra iterations
    assert max(single.info["iterations"]) <= max(double.info["iterations"]) + 5
    # the float32 cycle's matrix shares A's index arrays (a float32 copy of the values only),
    # its prolongators hold float32 values, and a refresh refills the copy in place
    level = single._hierarchy.levels[0]
    assert level.A_cycle.dtype == np.float32 and level.P.dtype == np.float32
    assert np.shares_memory(level.A_cycle.indices, level.A.indices)
    assert np.shares_memory(level.A_cycle.indptr, level.A.indptr)
    values = level.A_cycle.data
    single._hierarchy.refresh(level.A)
    assert level.A_cycle.data is values
    np.testing.assert_array_equal(values, level.A.data.astype(np.float32))


def test_float32_kernels_sum_in_float32():
    """The three-row kernels sum float32 operands in float32 (no per-product conversion): the
    result is float32 and within float32 rounding of the float64 product; float64 operands
    still give SciPy's numbers."""
    from lightweight.fem.amg import _index32
    rng = np.random.default_rng(5)
    blocks = sp.random(40, 40, density=0.2, random_state=5, format="csr")
    A = _index32(sp.kron(blocks + blocks.T + 10 * sp.eye(40), np.ones((3, 3)), format="csr"))
    A.sort_indices()
    X = rng.standard_normal((120, 3))
    exact = A @ X
    Y64 = spmm(A, X)
    np.testing.assert_allclose(Y64, exact, rtol=1e-13, atol=1e-12)
    A32 = sp.csr_matrix((A.data.astype(np.float32), A.indices, A.indptr), shape=A.shape)
    Y32 = spmm(A32, X.astype(np.float32))
    assert Y32.dtype == np.float32
    np.testing.assert_allclose(Y32, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())


def test_warm_start_needs_fewer_iterations(bracket):
    F = _rhs(bracket)
    solver = ReusedAMGSolver(points=bracket.matrix_points, rtol=1e-8)
    solver.factorize(_matrix(bracket, _scales(bracket)["smooth"]))
    X = solver.solve(F)
    cold = max(solver.info["iterations"])
    solver.solve(F, x0=X * (1 + 1e-4))
    assert max(solver.info["iterations"]) < cold


def test_block_pcg_reports_breakdown_on_indefinite_matrix():
    A = sp.diags([1.0, 2.0, -3.0, 4.0]).tocsr()
    B = np.ones((4, 2))
    _, _, res, broke = block_pcg(A, B, None, lambda R: R.copy(), 1e-10, 50)
    assert np.all(broke | (res <= 1e-10))
    assert np.any(broke)


def test_unsupported_rotation_is_singular(bracket):
    """Only one hole's axis held in x: the part can spin -- the rigid-mode check says so."""
    K = bracket.stiffness_matrix().tocsr()
    solver = ReusedAMGSolver(points=bracket.matrix_points)
    with pytest.raises(SingularStiffnessError, match="rigid-body mode"):
        solver.factorize(K)


def test_system_solve_with_amg_reuse_equals_direct(bracket):
    scale = _scales(bracket)["smooth"]
    state = bracket.analyse(scale, solver="amg-reuse")
    U_ref, _ = bracket.solve(scale, solver="direct")
    np.testing.assert_allclose(state.U, U_ref, rtol=0, atol=1e-6 * np.abs(U_ref).max())
    assert state.info["solver"] == "amg-reuse"


def test_symmetric_galerkin_product_is_the_full_one_mirrored(bracket):
    """R (A P) by its upper triangle: those entries bit-identical to the full numeric product
    (same products, same order), the lower ones their exact mirror, both equal to SciPy's R A P."""
    from lightweight.fem.amg import _Product
    scales = _scales(bracket)
    solver = ReusedAMGSolver(points=bracket.matrix_points)
    solver.factorize(_matrix(bracket, scales["solid"]))
    level = solver._hierarchy.levels[0]
    A = _matrix(bracket, scales["random"])
    AP = level.AP_product(A, level.P)
    full = _Product(level.R, level.AP_product.C)(level.R, AP).copy()
    mirrored = _Product(level.R, level.AP_product.C, symmetric=True)(level.R, AP).copy()
    assert np.array_equal(sp.triu(full).tocsr().data, sp.triu(mirrored).tocsr().data)
    assert abs(mirrored - mirrored.T).max() == 0.0
    reference = (level.R @ A @ level.P).tocsr()
    assert abs(mirrored - reference).max() <= 1e-12 * abs(reference).max()


def test_coarsest_operator_keeps_its_upper_triangle_bit_for_bit(bracket):
    """The coarsest level holds only the upper triangle of R A P: by the triple kernel and by
    the row kernel, each entry bit-identical to the mirrored full product's; the level's
    ``full()`` is SciPy's R A P; the hierarchy keeps no mirror map for it."""
    from lightweight.fem import amg
    scales = _scales(bracket)
    solver = ReusedAMGSolver(points=bracket.matrix_points)
    solver.factorize(_matrix(bracket, scales["solid"]))
    hierarchy = solver._hierarchy
    level, coarsest = hierarchy.levels[0], hierarchy.levels[-1]
    assert coarsest.upper and level.RAP_product.upper and level.RAP_product.mirror_from is None
    K = amg._index32(_matrix(bracket, scales["random"]))
    AP = level.AP_product(K, level.P)
    mirrored = amg._Product(level.R, level.AP_product.C, symmetric=True)(level.R, AP).copy()
    upper = amg._Product(level.R, level.AP_product.C, upper=True)
    by_triples = upper(level.R, AP).copy()
    assert np.array_equal(by_triples.indices, sp.triu(mirrored).tocsr().indices)
    assert np.array_equal(by_triples.data, sp.triu(mirrored).tocsr().data)
    by_rows = by_triples.copy()
    by_rows.data[:] = np.nan
    amg._spgemm_numeric_symmetric(level.R.indptr, level.R.indices, level.R.data, AP.indptr,
                                  AP.indices, AP.data, by_rows.indptr, by_rows.indices,
                                  by_rows.data, np.empty(0, np.int32), by_rows.shape[1],
                                  upper.n_chunks)
    assert np.array_equal(by_rows.data, by_triples.data)
    solver.factorize(K)
    reference = (level.R @ K @ level.P).tocsr()
    assert abs(coarsest.full() - reference).max() <= 1e-12 * abs(reference).max()
    assert hierarchy.operator_complexity == pytest.approx((K.nnz + reference.nnz) / K.nnz)


@pytest.mark.parametrize("upper", [True, False])
def test_galerkin_product_in_row_blocks_is_the_whole_product_bit_for_bit(bracket, upper):
    """R (A P) with A P formed block of fine rows by block (the refresh's memory peak cut to a
    block): every block count gives the unblocked product's numbers exactly, upper-only and
    mirrored; the refresh uses it (its coarse operator equals the unblocked one)."""
    from lightweight.fem import amg
    scales = _scales(bracket)
    solver = ReusedAMGSolver(points=bracket.matrix_points)
    solver.factorize(_matrix(bracket, scales["solid"]))
    level = solver._hierarchy.levels[0]
    K = amg._index32(_matrix(bracket, scales["random"]))
    AP_product = amg._Product(K, level.P, keep_values=False)
    RAP_product = amg._Product(level.R, AP_product.C, symmetric=True, upper=upper)
    whole = RAP_product(level.R, AP_product(K, level.P)).copy()
    pattern = AP_product.C.copy()
    for compressed in (False, True):
        if compressed:      # A P's pattern keeps only the first row of each triple
            AP_product.compress()
            assert AP_product.first_rows[1].size * 3 == pattern.nnz
            expanded = AP_product.C
            assert np.array_equal(expanded.indices, pattern.indices)
            assert np.array_equal(expanded.indptr, pattern.indptr)
        for blocks in (1, 2, 3, 7):
            RAP_product.C.data[:] = np.nan
            C = amg.galerkin_in_row_blocks(AP_product, RAP_product, K, level.P, level.R, blocks)
            assert C is RAP_product.C
            assert np.array_equal(C.data, whole.data), (compressed, blocks)
    assert level.AP_product.first_rows is not None       # the hierarchy's own is compressed
    if upper:          # the coarsest level of the refresh: the same array of numbers
        solver.factorize(K)
        assert np.array_equal(solver._hierarchy.levels[-1].A.data, whole.data)


def test_restriction_and_galerkin_from_p_equal_an_explicit_transpose_bit_for_bit(bracket):
    """R = P^T is not stored: restriction and Galerkin product read P's values through the
    transposed index, with the numbers of the CSR kernels on an explicit P^T (every block
    count, upper-only and mirrored, 1..5 right-hand sides); the index holds ~1/9 of R's
    entries in two int32 arrays, and it stays valid when P's values are re-smoothed."""
    from lightweight.fem import amg
    scales = _scales(bracket)
    solver = ReusedAMGSolver(points=bracket.matrix_points)
    solver.factorize(_matrix(bracket, scales["solid"]))
    level = solver._hierarchy.levels[0]
    assert level.transposed is not None and level._R is None
    P = level.P
    R = P.T.tocsr()
    R.sort_indices()
    R = amg._index32(R)
    index = level.transposed
    assert index.node.nbytes + index.pos.nbytes <= R.nnz * 8 / 9 + 8
    rng = np.random.default_rng(11)
    for k in (1, 2, 3, 5):
        X = rng.standard_normal((P.shape[0], k))
        assert np.array_equal(level.restrict(X), spmm(R, X)), k
    K = amg._index32(_matrix(bracket, scales["random"]))
    AP_product = amg._Product(K, P, keep_values=False)
    for upper in (True, False):
        RAP_product = amg._Product(R, AP_product.C, symmetric=True, upper=upper)
        explicit = amg.galerkin_in_row_blocks(AP_product, RAP_product, K, P, R, 3).data.copy()
        for blocks in (1, 4):
            RAP_product.C.data[:] = np.nan
            amg.galerkin_in_row_blocks(AP_product, RAP_product, K, P, index, blocks)
            assert np.array_equal(RAP_product.C.data, explicit), (upper, blocks)
    P.data *= 1.0 + rng.uniform(-0.1, 0.1, P.nnz)             # values in place, as resmooth
    X = rng.standard_normal((P.shape[0], 3))
    assert np.array_equal(level.restrict(X), spmm(amg._index32(P.T.tocsr().sorted_indices()), X))


def test_a_large_first_coarse_level_gets_a_third_level(bracket, monkeypatch):
    """max_levels=None (amg-reuse's default): two levels, three once the first coarse level has
    more than THIRD_LEVEL_ABOVE_DOFS DOFs (and more aggregates than max_coarse); both agree
    with the direct solver."""
    from lightweight.fem import amg
    K = _matrix(bracket, _scales(bracket)["smooth"])
    F = _rhs(bracket)
    direct = make_solver("direct")
    direct.factorize(K)
    c_ref = np.einsum("ij,ij->j", F, direct.solve(F))
    levels = {}
    for label, above in (("default", amg.THIRD_LEVEL_ABOVE_DOFS), ("low", 100)):
        monkeypatch.setattr(amg, "THIRD_LEVEL_ABOVE_DOFS", above)
        solver = make_solver("amg-reuse", points=bracket.matrix_points, rtol=1e-8, max_coarse=50)
        assert solver.max_levels is None
        solver.factorize(K)
        levels[label] = len(solver._hierarchy.levels)
        c = np.einsum("ij,ij->j", F, solver.solve(F))
        np.testing.assert_allclose(c, c_ref, rtol=1e-7)
    assert levels == {"default": 2, "low": 3}


def test_direct_solvers_factorize_an_upper_triangle_as_the_symmetric_matrix(bracket):
    """PARDISO reads a K given as its upper triangle in place (no copies) and solves, checks
    and refines with the whole symmetric matrix; solvers that need both triangles get them
    from the hierarchy (SuperLU as coarse solver: the same solution)."""
    from lightweight.fem import amg, solvers
    K = _matrix(bracket, _scales(bracket)["smooth"])
    F = _rhs(bracket)
    reference = make_solver("superlu")
    reference.factorize(K)
    X_ref = reference.solve(F)
    if "pardiso" in available_solvers():
        upper = sp.triu(K, format="csr")
        upper.indices = upper.indices.astype(np.int32)
        upper.indptr = upper.indptr.astype(np.int32)
        pardiso = make_solver("pardiso")
        assert pardiso.reads_upper_triangle
        pardiso.factorize(upper)
        assert pardiso._upper is None and pardiso._ja is upper.indices
        X = pardiso.solve(F)
        assert max(pardiso.info["residuals"]) < 1e-8
        np.testing.assert_allclose(X, X_ref, rtol=1e-7, atol=1e-9 * abs(X_ref).max())
    made = solvers.make_solver

    def superlu_coarse(name, **kwargs):
        if name != "direct":
            return made(name, **kwargs)
        kwargs.pop("single", None)
        return made("superlu", **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(amg, "DENSE_COARSE_MAX", 10)
        patch.setattr(solvers, "make_solver", superlu_coarse)
        solver = ReusedAMGSolver(points=bracket.matrix_points, rtol=1e-9)   # 1e-10 is at the attainable floor on this K
        solver.factorize(K)
        assert solver._hierarchy.coarse_factor[1].name == "superlu"
        X = solver.solve(F)
    np.testing.assert_allclose(np.einsum("ij,ij->j", F, X), np.einsum("ij,ij->j", F, X_ref), rtol=1e-9)


@pytest.mark.parametrize("setup", ["lean", "pyamg"])
def test_both_setups_agree_with_direct(bracket, setup):
    """Our aggregation setup (default) and pyamg's (kept for comparison): the same compliances
    as the direct solver after a refill at SIMP contrast."""
    F = _rhs(bracket)
    solver = make_solver("amg-reuse", points=bracket.matrix_points, rtol=1e-8, setup=setup)
    solver.factorize(_matrix(bracket, None))
    solver.solve(F)
    assert solver._hierarchy.setup == setup
    K = _matrix(bracket, _scales(bracket)["smooth"])
    solver.factorize(K)
    X = solver.solve(F)
    direct = make_solver("direct")
    direct.factorize(K)
    X_ref = direct.solve(F)
    c, c_ref = np.einsum("ij,ij->j", F, X), np.einsum("ij,ij->j", F, X_ref)
    np.testing.assert_allclose(c, c_ref, rtol=1e-8)
    assert solver.hierarchies_built == 1


def test_triple_kernels_equal_the_row_kernels_bit_for_bit(bracket):
    """Products and Galerkin products over node triples (rows 3i..3i+2 sharing their columns)
    give the row-by-row kernels' numbers exactly, on K, P, P^T and A P of the bracket."""
    from lightweight.fem import amg
    scales = _scales(bracket)
    solver = ReusedAMGSolver(points=bracket.matrix_points)
    solver.factorize(_matrix(bracket, scales["solid"]))
    level = solver._hierarchy.levels[0]
    K = amg._index32(_matrix(bracket, scales["random"]))
    rng = np.random.default_rng(5)
    for A in (K, level.P, level.R):
        assert amg._triple_structure(A) == (True, True)
        for k in (1, 2, 3):
            X = rng.standard_normal((A.shape[1], k))
            B = rng.standard_normal((A.shape[0], k))
            for mode in (0, 1, 2):
                by_rows, by_triples = B.copy(), B.copy()
                amg._csr_block(A.indptr, A.indices, A.data, X, B, by_rows, mode)
                amg._csr_block_triples(A.indptr, A.indices, A.data, X, B, by_triples, mode)
                assert np.array_equal(by_rows, by_triples), (A.shape, k, mode)
    AP_product = amg._Product(K, level.P, keep_values=False)
    AP = AP_product(K, level.P)
    assert amg._triple_structure(AP) == (True, True)
    AP_rows = AP.copy()
    amg._spgemm_numeric(K.indptr, K.indices, K.data, level.P.indptr, level.P.indices, level.P.data,
                        AP_rows.indptr, AP_rows.indices, AP_rows.data, AP.shape[1], AP_product.n_chunks)
    assert np.array_equal(AP.data, AP_rows.data)
    RAP_product = amg._Product(level.R, AP_product.C, symmetric=True)
    RAP = RAP_product(level.R, AP).copy()
    RAP_rows = RAP.copy()
    amg._spgemm_numeric_symmetric(level.R.indptr, level.R.indices, level.R.data, AP.indptr, AP.indices,
                                  AP.data, RAP_rows.indptr, RAP_rows.indices, RAP_rows.data,
                                  RAP_product.mirror_from, RAP.shape[1], RAP_product.n_chunks)
    assert np.array_equal(RAP.data, RAP_rows.data)
    reference = (level.R @ K @ level.P).tocsr()
    assert abs(RAP - reference).max() <= 1e-12 * abs(reference).max()


def test_triple_structure_is_detected_not_assumed():
    """Patterns without node triples take the row kernels, and every dispatch equals SciPy."""
    from lightweight.fem import amg
    rng = np.random.default_rng(2)
    graph = sp.random(40, 40, density=0.15, random_state=2, format="csr") + sp.eye(40)
    blocked = sp.csr_matrix(sp.kron(graph, np.ones((3, 3))))
    blocked.data = rng.standard_normal(blocked.nnz)
    blocked.sort_indices()
    rows_only = sp.csr_matrix(sp.kron(graph, np.ones((3, 1))))   # rows in triples, columns single
    rows_only.data = rng.standard_normal(rows_only.nnz)
    broken = blocked.tolil()
    broken[4, 0] = 0.0 if broken[4, 0] else 1.0      # one row of node 1 differs from its siblings
    broken = sp.csr_matrix(broken)
    broken.sort_indices()
    loose = sp.random(90, 60, density=0.1, random_state=4, format="csr")
    assert amg._triple_structure(blocked) == (True, True)
    assert amg._triple_structure(rows_only) == (True, False)
    assert amg._triple_structure(broken) == (False, False)
    assert amg._triple_structure(loose)[0] is False
    assert amg._triple_structure(sp.csr_matrix(np.ones((4, 4)))) == (False, False)   # 4 rows
    for A in (blocked, rows_only, broken, loose):
        X = rng.standard_normal((A.shape[1], 3))
        np.testing.assert_allclose(spmm(A, X), A @ X, rtol=1e-13, atol=1e-13)
    for A, B in ((blocked, blocked), (rows_only, graph.tocsr()), (broken, blocked)):
        C = amg._Product(A, B)(A, B)
        np.testing.assert_allclose(C.toarray(), (A @ B).toarray(), rtol=1e-13, atol=1e-12)


@pytest.mark.skipif("pardiso" not in available_solvers(), reason="no MKL PARDISO")
def test_pardiso_single_precision_factor(bracket):
    """The coarse level's single-precision PARDISO: float64 in and out, an error of single
    precision (not double: the option is really in effect), a smaller factor."""
    from lightweight.fem.solvers import PardisoSolver
    K = _matrix(bracket, None)
    F = _rhs(bracket)
    single, double = PardisoSolver(single=True), PardisoSolver()
    single.check_residuals = double.check_residuals = False
    single.factorize(K)
    double.factorize(K)
    X, X_ref = single.solve(F), double.solve(F)
    assert X.dtype == np.float64 and X.shape == F.shape
    # error in the energy norm: ~1e-3 on this solid bracket (float32's 6e-8 times K's condition)
    E = X - X_ref
    energy_error = np.sqrt(np.einsum("ij,ij->j", E, K @ E) / np.einsum("ij,ij->j", X_ref, K @ X_ref))
    assert np.all(energy_error < 1e-2) and np.all(energy_error > 1e-9)
    residual_ref = np.linalg.norm(F - K @ X_ref, axis=0) / np.linalg.norm(F, axis=0)
    assert np.all(residual_ref < 1e-9)
    assert single.report["memory_bytes"] < double.report["memory_bytes"]
    from lightweight.errors import LightweightError
    with pytest.raises(LightweightError, match="single must be True or False"):
        PardisoSolver(single="float32")
    # with its default residual check a single-precision solve is refined to the direct
    # solvers' residual limit
    from lightweight.fem.solvers import RESIDUAL_LIMIT
    checked = PardisoSolver(single=True)
    checked.factorize(K)
    X = checked.solve(F)
    assert np.all(np.linalg.norm(F - K @ X, axis=0) / np.linalg.norm(F, axis=0) <= RESIDUAL_LIMIT)


@pytest.mark.parametrize("k", [1, 3])
def test_fused_pcg_updates_equal_numpy(k):
    """The fused PCG kernels: X, R and P as NumPy's updates bit for bit, R's column sums of
    squares to rounding (fixed chunks, so independent of the thread count)."""
    from lightweight.fem import amg
    rng = np.random.default_rng(k)
    X, R, P, AP, Z = (rng.standard_normal((1001, k)) for _ in range(5))
    alpha, beta = rng.standard_normal(k), rng.standard_normal(k)
    X_ref, R_ref, P_ref = X + P * alpha, R - AP * alpha, P * beta + Z
    squares = np.empty(k)
    amg._pcg_update(X, R, P, AP, alpha, squares)
    amg._pcg_direction(P, Z, beta)
    assert np.array_equal(X, X_ref) and np.array_equal(R, R_ref) and np.array_equal(P, P_ref)
    np.testing.assert_allclose(squares, (R_ref ** 2).sum(axis=0), rtol=1e-14)


def test_csr_diagonal_by_kept_positions(bracket):
    """The diagonal through positions kept per pattern equals SciPy's, for every matrix on that
    pattern, with missing diagonal entries as zeros and for patterns met for the first time."""
    from lightweight.fem import amg
    scales = _scales(bracket)
    for name in ("solid", "random"):
        K = _matrix(bracket, scales[name])
        assert np.array_equal(amg.csr_diagonal(K), K.diagonal())
    A = sp.csr_matrix(np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 3.0, 5.0]]))
    A.sort_indices()
    assert np.array_equal(amg.csr_diagonal(A), [2.0, 0.0, 5.0])
    B = sp.csr_matrix(np.array([[4.0, 1.0, 0.0], [1.0, 7.0, 0.0], [0.0, 0.0, 6.0]]))
    B.sort_indices()
    assert np.array_equal(amg.csr_diagonal(B), [4.0, 7.0, 6.0])


@pytest.mark.skipif("pardiso" not in available_solvers(), reason="no MKL PARDISO")
def test_coarse_factor_falls_back_to_single_precision_when_double_does_not_fit(bracket, monkeypatch):
    """Never die on size: a coarse factor too big for the memory in double precision is made in
    single precision (with a warning) and the solve still meets rtol; if even that does not fit,
    the FactorizationMemoryError stands."""
    from lightweight.fem import amg, solvers
    from lightweight.fem.solvers import FactorizationMemoryError, PardisoSolver
    monkeypatch.setattr(amg, "DENSE_COARSE_MAX", 10)      # the bracket's coarse level goes sparse
    K = _matrix(bracket, _scales(bracket)["smooth"])
    F = _rhs(bracket)
    direct = make_solver("direct")
    direct.factorize(K)
    X_ref = direct.solve(F)
    solver = ReusedAMGSolver(points=bracket.matrix_points, rtol=1e-8)
    solver.factorize(K)
    coarse = solver._hierarchy.levels[-1].A
    need = {}
    for single in (False, True):
        probe = PardisoSolver(single=single)
        probe.analyse(coarse)
        need[single] = probe.report["memory_bytes"]
        probe.release()
    assert need[True] < need[False]
    budget = 0.5 * (need[True] + need[False]) / solvers.FACTOR_MEMORY_FRACTION
    monkeypatch.setattr(solvers, "available_memory", lambda: budget)
    tight = ReusedAMGSolver(points=bracket.matrix_points, rtol=1e-8)
    with pytest.warns(UserWarning, match="single precision"):
        tight.factorize(K)
    assert tight._hierarchy.coarse_factor[1].single
    X = tight.solve(F)
    np.testing.assert_allclose(np.einsum("ij,ij->j", F, X), np.einsum("ij,ij->j", F, X_ref), rtol=1e-6)
    monkeypatch.setattr(solvers, "available_memory", lambda: 0.5 * need[True] / solvers.FACTOR_MEMORY_FRACTION)
    with pytest.raises(FactorizationMemoryError), pytest.warns(UserWarning, match="single precision"):
        ReusedAMGSolver(points=bracket.matrix_points).factorize(K)


def test_resmoothed_prolongator_is_the_jacobi_step_with_the_new_matrix(bracket):
    """P smoothed again with a SIMP matrix: T - (omega / rho) D^-1 K T from SciPy, on the
    build's aggregates, with the build's pattern (the Galerkin patterns stay valid)."""
    from lightweight.fem import aggregation
    solid, simp = _matrix(bracket, _scales(bracket)["solid"]), _matrix(bracket, _scales(bracket)["smooth"])
    solver = make_solver("amg-reuse", points=bracket.matrix_points, pattern=bracket.pattern)
    solver.factorize(solid)
    H = solver._hierarchy
    P_build = H.levels[0].P.copy()
    indptr, indices = P_build.indptr.copy(), P_build.indices.copy()
    H.refresh(simp)
    modes = solver._supported_modes(simp)
    assert H.resmooth(simp, modes) and H.resmoothed == 1
    P = H.levels[0].P
    assert np.array_equal(P.indptr, indptr) and np.array_equal(P.indices, indices)
    assert abs(P - P_build).max() > 1e-3 * abs(P_build).max()        # it did change
    # the reference: T explicitly, then one Jacobi step with SciPy
    agg, n_agg = H.fine_aggregates
    b = H.fine_block
    Q, _, keep = aggregation.tentative(agg, n_agg, modes, b)
    col_start = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    rows, cols, vals = [], [], []
    for node in np.flatnonzero(agg >= 0):
        a = agg[node]
        kept = np.flatnonzero(keep[a])
        for r in range(b):
            rows += [node * b + r] * len(kept)
            cols += list(col_start[a] + np.arange(len(kept)))
            vals += list(Q[node, r, kept])
    T = sp.csr_matrix((vals, (rows, cols)), shape=P.shape)
    d = simp.diagonal()
    dinv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    reference = (T - sp.diags(aggregation.OMEGA / H.levels[0].lam * dinv) @ simp @ T).tocsr()
    assert abs(P - reference).max() <= 1e-12 * abs(reference).max()
    # R follows, and the cycle stays a symmetric positive preconditioner
    assert abs(H.levels[0].R - P.T).max() == 0.0


def test_prolongator_is_resmoothed_when_pcg_needs_more_iterations(bracket, monkeypatch):
    """The solver smooths P again once a solve needs RESMOOTH_GROWTH x the fresh hierarchy's
    iterations; on a design far from the one it was built on it then needs fewer iterations."""
    import lightweight.fem.solvers as solvers
    F = _rhs(bracket)
    centres = bracket.mesh.points[bracket.mesh.cells].mean(axis=1)
    half = np.where(centres[:, 0] < 60.0, 1.0, 1e-3)        # the load end gone soft: 28 -> 21
    solid, simp = _matrix(bracket, _scales(bracket)["solid"]), _matrix(bracket, half)
    counts = {}
    for growth in (1e9, 0.0):
        monkeypatch.setattr(solvers, "RESMOOTH_GROWTH", growth)
        solver = make_solver("amg-reuse", points=bracket.matrix_points, pattern=bracket.pattern, rtol=1e-8)
        solver.factorize(solid)
        solver.solve(F)
        assert solver.info["prolongator_resmoothed"] is False        # the build itself
        solver.factorize(simp)
        X = solver.solve(F)
        counts[growth] = (max(solver.info["iterations"]), solver.info["prolongator_resmoothed"])
        direct = make_solver("direct")
        direct.factorize(simp)
        np.testing.assert_allclose(X, direct.solve(F), rtol=0, atol=1e-6 * np.abs(X).max())
    assert counts[1e9][1] is False and counts[0.0][1] is True
    assert counts[0.0][0] < counts[1e9][0], counts
