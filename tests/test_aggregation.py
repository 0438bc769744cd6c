"""Our smoothed-aggregation setup (lightweight.fem.aggregation) against its definitions and pyamg.

References: the definitions (aggregates partition the connected nodes, T has orthonormal columns
per aggregate and reproduces the near-null space, P = (I - omega D^-1 A) T), SciPy products for
the latter, and pyamg's hierarchy for iteration counts. System: the 12k-tet bracket of
meshes/bracket.msh clamped at its bolt holes.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lightweight.fem import aggregation
from lightweight.fem.amg import ReusedHierarchy, fixed_rows, without_explicit_zeros
from lightweight.fem.solvers import available_solvers, make_solver, rigid_body_modes
from lightweight.fem.system import LinearElasticSystem



@pytest.fixture(scope="module")
def system(bracket_model):
    return LinearElasticSystem(bracket_model("down", "side"))


def _matrix(system, scale=None):
    data = system.stiffness_data(scale)
    constrained, _ = system.dirichlet.apply(data)
    return system.pattern.matrix(constrained).copy()


def _modes(system, K):
    modes = rigid_body_modes(system.matrix_points)
    modes[fixed_rows(K)] = 0.0
    return modes


@pytest.fixture(scope="module")
def setup(system):
    K = _matrix(system)
    modes = _modes(system, K)
    P, coarse, info = aggregation.smoothed_prolongator(K, modes, 3)
    return K, modes, P, coarse, info


def test_node_graph_is_the_nonzero_block_graph(system):
    K = _matrix(system)
    g_ptr, g_idx = aggregation.node_graph(K, 3)
    Z = without_explicit_zeros(K)
    n_nodes = K.shape[0] // 3
    blocks = sp.csr_matrix((np.ones(Z.nnz), Z.indices // 3, Z.indptr), shape=(K.shape[0], n_nodes))
    nodes = (sp.kron(sp.eye(n_nodes), np.ones((1, 3))).tocsr() @ blocks).tocsr()
    nodes.setdiag(0)
    nodes.eliminate_zeros()
    nodes.sort_indices()
    assert np.array_equal(np.diff(g_ptr), np.diff(nodes.indptr))
    assert np.array_equal(g_idx, nodes.indices)
    # theta > 0 keeps a subset, symmetric
    s_ptr, s_idx = aggregation.node_graph(K, 3, theta=0.25)
    S = sp.csr_matrix((np.ones(s_idx.size), s_idx, s_ptr), shape=(n_nodes, n_nodes))
    assert S.nnz < nodes.nnz
    assert abs(S - S.T).max() == 0
    ones = sp.csr_matrix((np.ones(nodes.nnz), nodes.indices, nodes.indptr), shape=nodes.shape)
    assert (S - S.multiply(ones)).nnz == 0


def test_aggregates_cover_every_connected_node_once(system, setup):
    K, modes, P, coarse, info = setup
    agg, n_agg = info["agg"], info["n_aggregates"]
    g_ptr, _ = aggregation.node_graph(K, 3)
    isolated = np.diff(g_ptr) == 0
    # one aggregate per node (an array: exactly once), none for nodes without neighbours
    assert np.all(agg[isolated] == -1)
    assert np.all((agg[~isolated] >= 0) & (agg[~isolated] < n_agg))
    assert np.all(np.bincount(agg[~isolated], minlength=n_agg) > 0)
    # the isolated nodes are the fully fixed ones
    fixed = fixed_rows(K).reshape(-1, 3).all(axis=1)
    assert np.array_equal(isolated, fixed)


def test_aggregation_on_a_path_graph():
    # 0-1-2-3-4-5-6, pass 1: node 0 (its neighbour free) seeds {0, 1}; node 2's neighbour 1 is
    # taken; node 3 seeds {2, 3, 4}; node 5's neighbour 4 is taken; node 6 seeds {5, 6}
    n = 7
    rows = np.r_[np.arange(n - 1), np.arange(1, n)]
    cols = np.r_[np.arange(1, n), np.arange(n - 1)]
    G = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    G.sort_indices()
    agg, n_agg = aggregation.standard_aggregation(G.indptr.astype(np.int64), G.indices)
    assert n_agg == 3
    assert agg.tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_tentative_columns_are_orthonormal_and_fit_the_modes(setup):
    K, modes, P, coarse, info = setup
    agg, n_agg, Q, keep = info["agg"], info["n_aggregates"], info["Q"], info["keep"]
    improved = info["improved_modes"]
    T = _tentative_matrix(agg, Q, keep)
    assert T.shape == P.shape
    # T^T T = I: columns orthonormal (per aggregate block; different aggregates share no row)
    TtT = (T.T @ T).toarray()
    np.testing.assert_allclose(TtT, np.eye(T.shape[1]), atol=1e-12)
    # T (coarse modes) = the (improved) modes on aggregated DOFs
    aggregated = np.repeat(agg >= 0, 3)
    np.testing.assert_allclose(T @ coarse, improved * aggregated[:, None],
                               atol=1e-12 * np.abs(improved).max())
    assert info["uniform"]            # 6 independent modes on every aggregate of the bracket


def _tentative_matrix(agg, Q, keep):
    n_nodes, b, k = Q.shape
    col_start = np.r_[0, np.cumsum(keep.sum(axis=1))]
    column_of = np.where(keep, np.cumsum(keep, axis=1) - 1, -1)
    rows, cols, vals = [], [], []
    for node in np.flatnonzero(agg >= 0):
        a = agg[node]
        for j in np.flatnonzero(keep[a]):
            for r in range(b):
                rows.append(node * b + r)
                cols.append(col_start[a] + column_of[a, j])
                vals.append(Q[node, r, j])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_nodes * b, int(col_start[-1])))


def test_prolongator_is_one_jacobi_step_of_the_tentative(setup):
    K, modes, P, coarse, info = setup
    T = _tentative_matrix(info["agg"], info["Q"], info["keep"])
    dinv = 1.0 / K.diagonal()
    omega = aggregation.OMEGA / info["rho"]
    reference = T - omega * sp.diags(dinv) @ (K @ T)
    assert abs(P - reference).max() <= 1e-12 * abs(reference).max()
    # ... so P reproduces the modes up to the smoothing: P c = (I - omega D^-1 A) B
    B = info["improved_modes"] * np.repeat(info["agg"] >= 0, 3)[:, None]
    smoothed = B - omega * dinv[:, None] * (K @ B)
    np.testing.assert_allclose(P @ coarse, smoothed, atol=1e-11 * np.abs(B).max())
    # rho(D^-1 A) from Lanczos: below the true value, within 2 %
    from scipy.sparse.linalg import eigsh
    s = np.sqrt(dinv)
    top = eigsh(sp.diags(s) @ K @ sp.diags(s), k=1, which="LA", return_eigenvectors=False)[0]
    assert 0.98 * top <= info["rho"] <= top * (1 + 1e-9)
    assert P.indices.dtype == np.int32 and P.has_sorted_indices


def test_rank_deficient_aggregate_drops_columns():
    # two nodes on a line: the rotation about that line vanishes on both, rank 5 of 6
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    B = rigid_body_modes(points)
    Q, R, keep = aggregation.tentative(np.array([0, 0], dtype=np.int32), 1, B, 3)
    assert keep.sum() == 5
    T = Q.reshape(6, 6)[:, keep[0]]
    np.testing.assert_allclose(T.T @ T, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(T @ R[0][keep[0]], B, atol=1e-12)


@pytest.mark.skipif("amg" not in available_solvers(), reason="no pyamg")
def test_iterations_match_pyamg(system):
    """The same hierarchy size and PCG iterations within +10 % (+1) of pyamg's setup, on the
    solid it was built on and on SIMP refills."""
    F = system.to_matrix_order(system.load_vectors()).T.copy()     # K's numbering
    F[system.dirichlet.fixed_dofs] = 0.0
    rng = np.random.default_rng(3)
    centres = system.mesh.points[system.mesh.cells].mean(axis=1)
    smooth = 0.5 + 0.5 * np.sin(centres[:, 0] / 9.0) * np.cos(centres[:, 1] / 7.0)
    scales = [None, 1e-9 + (1 - 1e-9) * smooth ** 3,
              1e-9 + (1 - 1e-9) * rng.uniform(0.0, 1.0, system.n_cells) ** 3]
    iterations = {}
    sizes = {}
    for setup in ("pyamg", "lean"):
        solver = make_solver("amg-reuse", points=system.matrix_points, rtol=1e-8, setup=setup)
        counts = []
        for scale in scales:
            solver.factorize(_matrix(system, scale))
            solver.solve(F)
            counts.append(max(solver.info["iterations"]))
        assert solver._hierarchy.setup == setup
        iterations[setup] = np.array(counts)
        sizes[setup] = solver._hierarchy.levels[1].A.shape[0]
    assert np.all(iterations["lean"] <= np.ceil(1.1 * iterations["pyamg"]) + 1), iterations
    assert abs(sizes["lean"] - sizes["pyamg"]) <= 0.1 * sizes["pyamg"], sizes


def test_hierarchy_setup_option():
    from lightweight.fem import amg
    assert ReusedHierarchy().setup == amg.DEFAULT_SETUP == "lean"
    assert ReusedHierarchy(setup="pyamg").setup == "pyamg"
    assert ReusedHierarchy(strength="symmetric").setup == "pyamg"     # pyamg options -> pyamg
    with pytest.raises(ValueError):
        ReusedHierarchy(setup="other")


def _graph(n, edges):
    rows = np.r_[[a for a, b in edges], [b for a, b in edges]]
    cols = np.r_[[b for a, b in edges], [a for a, b in edges]]
    G = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    G.sum_duplicates()
    G.sort_indices()
    return G.indptr.astype(np.int64), G.indices.astype(np.int32)


def test_pairing_on_a_path_of_aggregates():
    # aggregates {0,1} {2,3} {4,5} {6,7} {8,9} on a path: 0 takes 1, 2 takes 3, 4 stays alone;
    # pairs are numbered by their lower aggregate; a node without an aggregate keeps none
    g_ptr, g_idx = _graph(11, [(i, i + 1) for i in range(9)])
    agg = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, -1], dtype=np.int32)
    merged, n = aggregation.pair_aggregates(g_ptr, g_idx, agg, 5)
    assert n == 3
    assert merged.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, -1]


def test_pairing_takes_the_neighbour_with_the_most_shared_edges():
    # aggregate 0 = {0, 1} touches aggregate 1 = {2} by one edge and aggregate 2 = {3, 4} by
    # three: it pairs with 2; aggregate 1 then has no free neighbour left and stays alone
    g_ptr, g_idx = _graph(5, [(0, 2), (0, 3), (1, 3), (1, 4), (3, 4)])
    agg = np.array([0, 0, 1, 2, 2], dtype=np.int32)
    merged, n = aggregation.pair_aggregates(g_ptr, g_idx, agg, 3)
    assert n == 2
    assert merged.tolist() == [0, 0, 1, 0, 0]
    # equal edge counts: the lowest-numbered neighbour
    g_ptr, g_idx = _graph(3, [(0, 1), (0, 2)])
    merged, n = aggregation.pair_aggregates(g_ptr, g_idx, np.arange(3, dtype=np.int32), 3)
    assert (n, merged.tolist()) == (2, [0, 0, 1])


def test_paired_aggregates_are_unions_of_neighbouring_pairs(system, setup):
    K, modes, P, coarse, info = setup
    agg, n_agg = info["agg"], info["n_aggregates"]
    g_ptr, g_idx = info["graph"]
    merged, n = aggregation.pair_aggregates(g_ptr, g_idx, agg, n_agg)
    assert n_agg / 2 <= n < 0.6 * n_agg
    assert np.array_equal(merged < 0, agg < 0)
    inside = agg >= 0
    # each old aggregate lies inside one new one, each new one holds one or two old ones
    members = sp.csr_matrix((np.ones(inside.sum()), (agg[inside], merged[inside])),
                            shape=(n_agg, n)).tocsr()
    members.data[:] = 1
    members.sum_duplicates()
    assert np.all(np.diff(members.indptr) == 1)
    parts = np.bincount(members.indices, minlength=n)
    assert parts.min() >= 1 and parts.max() <= 2
    # the two halves of a pair are neighbours in the node graph
    owner = np.repeat(np.arange(agg.size), np.diff(g_ptr))
    touching = set(zip(agg[owner].tolist(), agg[g_idx].tolist()))
    old_of = [[] for _ in range(n)]
    for a, new in zip(members.tocoo().row, members.tocoo().col):
        old_of[new].append(a)
    for pair in old_of:
        if len(pair) == 2:
            assert (pair[0], pair[1]) in touching
    # numbered by their lower old aggregate: aggregates numbered by their lowest node (the
    # mesh-ordered setup's) stay so
    lower = np.full(n, n_agg)
    np.minimum.at(lower, merged[inside], agg[inside])
    assert np.all(np.diff(lower) > 0)
    ordered, n_ordered = aggregation.standard_aggregation(g_ptr, g_idx, np.arange(agg.size)[::-1].copy())
    merged, n = aggregation.pair_aggregates(g_ptr, g_idx, ordered, n_ordered)
    first = np.full(n, agg.size)
    np.minimum.at(first, merged[inside], np.flatnonzero(inside))
    assert np.all(np.diff(first) > 0)


def _loads_matrix_and_standard_coarse_size(system):
    """The loads in K's numbering (fixed DOFs zeroed), K, and the coarse DOFs of the standard
    (unpaired) amg-reuse hierarchy on K."""
    F = system.to_matrix_order(system.load_vectors()).T.copy()
    F[system.dirichlet.fixed_dofs] = 0.0
    K = _matrix(system)
    plain = make_solver("amg-reuse", points=system.matrix_points, pair_above=None)
    plain.factorize(K)
    return F, K, plain._hierarchy.levels[1].A.shape[0]


def test_paired_hierarchy_halves_the_coarse_level_and_solves(system):
    """pair_above below the coarse level's size: one pairing, about half the coarse DOFs, the
    prolongator still one Jacobi step of a tentative one that fits the rigid modes, and PCG
    gives the direct solver's compliance."""
    F, K, n_plain = _loads_matrix_and_standard_coarse_size(system)
    paired = make_solver("amg-reuse", points=system.matrix_points, pair_above=n_plain - 1,
                         rtol=1e-10)
    paired.factorize(K)
    assert paired._hierarchy.pairings == 1
    n_paired = paired._hierarchy.levels[1].A.shape[0]
    assert 0.45 * n_plain <= n_paired <= 0.6 * n_plain
    U = paired.solve(F)
    assert paired.info["aggregate_pairings"] == 1
    direct = make_solver("superlu")
    direct.factorize(K)
    U_ref = direct.solve(F)
    compliance = np.einsum("ij,ij->j", F, U)
    reference = np.einsum("ij,ij->j", F, U_ref)
    assert np.allclose(compliance, reference, rtol=1e-8)
    # pair_above=0: paired as often as allowed (PAIRINGS_AT_MOST), not down to one aggregate
    from lightweight.fem import amg
    most = make_solver("amg-reuse", points=system.matrix_points, pair_above=0)
    most.factorize(K)
    assert most._hierarchy.pairings == amg.PAIRINGS_AT_MOST == 1
    assert most._hierarchy.levels[1].A.shape[0] == n_paired
    # the auto threshold leaves this 12k-tet part's coarse level alone
    assert n_plain < amg.PAIR_AGGREGATES_ABOVE_DOFS
    auto = make_solver("amg-reuse", points=system.matrix_points)
    auto.factorize(K)
    assert auto._hierarchy.pairings == 0


def test_pair_above_must_be_a_number_auto_or_none():
    from lightweight.fem.solvers import SolverError
    for bad in ("half", -1, 2.5, True):
        with pytest.raises(SolverError, match="pair_above"):
            make_solver("amg-reuse", pair_above=bad)
    assert make_solver("amg-reuse", pair_above=np.int64(5000)).pair_above == 5000


def test_a_stalled_solve_rebuilds_without_the_pairing(system):
    """When PCG runs out of its budget on a later matrix (rebuild_factor), the hierarchy is
    rebuilt on the current matrix from standard aggregates (the paired coarse space is the
    less robust one) and the solve still gives the direct solver's compliance."""
    F, K, n_plain = _loads_matrix_and_standard_coarse_size(system)
    solver = make_solver("amg-reuse", points=system.matrix_points, pair_above=n_plain - 1,
                         rtol=1e-10, rebuild_factor=0.0)          # budget: 10 iterations
    solver.factorize(K)
    solver.solve(F)
    assert solver._hierarchy.pairings == 1
    rng = np.random.default_rng(11)
    hard = _matrix(system, 1e-9 + (1 - 1e-9) * rng.uniform(0.0, 1.0, system.n_cells) ** 3)
    solver.factorize(hard)
    U = solver.solve(F)
    assert solver.info["hierarchy_rebuilt"]
    assert solver._hierarchy.pairings == 0 and solver.info["aggregate_pairings"] == 0
    assert solver._hierarchy.levels[1].A.shape[0] == n_plain
    direct = make_solver("superlu")
    direct.factorize(hard)
    np.testing.assert_allclose(np.einsum("ij,ij->j", F, U),
                               np.einsum("ij,ij->j", F, direct.solve(F)), rtol=1e-8)
