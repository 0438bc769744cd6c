"""K's rows in a locality order of the nodes (lightweight/fem/assembly.py, NodeOrder).

An unstructured mesh whose generator numbered its nodes far apart (Gmsh: the sample bracket)
gets its stiffness rows in reverse Cuthill-McKee order; everything the system hands back stays
in the mesh's numbering. References: the same system with the pattern in the mesh's order
(``build_pattern(..., renumber=False)``), the stored-matrix COO assembly, direct solves.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import lightweight as lw
from lightweight.fem import aggregation
from lightweight.fem.assembly import (NodeOrder, _node_graph, build_pattern, coo_assembly,
                                      mean_neighbour_distance)
from lightweight.fem.elements import element_stiffness
from lightweight.fem.solvers import available_solvers, rigid_body_modes
from lightweight.fem.system import LinearElasticSystem


def _in_mesh_order(model) -> LinearElasticSystem:
    """The system as it was before the renumbering: K's rows in the mesh's node order."""
    system = LinearElasticSystem(model)
    mesh = model.mesh
    system._pattern = build_pattern(mesh.cells, mesh.n_nodes, mesh.dim, renumber=False)
    assert system.node_order is None
    return system


def _scale(system, seed=5):
    return 1e-9 + (1 - 1e-9) * np.random.default_rng(seed).uniform(0, 1, system.n_cells) ** 3


@pytest.fixture(scope="module")
def model(bracket_model):
    return bracket_model("down", "side")


def test_gmsh_bracket_is_renumbered_and_a_grid_is_not(model):
    system = LinearElasticSystem(model)
    order = system.node_order
    assert order is not None
    mesh = model.mesh
    ptr, nbr = _node_graph(np.ascontiguousarray(mesh.cells, dtype=np.int64), mesh.n_nodes, np.int32)
    before = mean_neighbour_distance(ptr, nbr)
    after = mean_neighbour_distance(ptr, nbr, order.rank)
    assert after < before / 5, (before, after)
    # the pattern's own graph is the renumbered one; its renumbered cells in int32 (16 B per tet4)
    assert mean_neighbour_distance(system.pattern.node_ptr, system.pattern.node_neighbours) == \
        pytest.approx(after)
    assert system.pattern.cells.dtype == np.int32
    np.testing.assert_array_equal(system.pattern.cells, order.rank[mesh.cells])
    # a lexicographic grid handed over as a plain mesh is local already: left alone
    grid2d = lw.structured_grid((30, 30))
    plain = lw.Mesh(grid2d.points, grid2d.cells, "quad", node_sets=dict(grid2d.node_sets))
    flat = lw.Model(plain, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xy"},
                    loads={"tip": lw.PointLoad("xmax", (0.0, -1.0))}).system()
    assert flat.node_order is None
    grid = lw.structured_grid((8, 4, 4))
    # structured grids keep the mesh's order (the multigrid works on it)
    assert lw.Model(grid, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                    loads={"tip": lw.PointLoad("xmax", (0.0, 0.0, -1.0))}).system().node_order is None


def test_node_order_round_trips():
    rng = np.random.default_rng(0)
    order = NodeOrder(rng.permutation(7), 3)
    V = rng.standard_normal((2, 21))
    inside = order.to_matrix(V)
    np.testing.assert_array_equal(order.to_mesh(inside), V)
    dofs = np.arange(21)
    np.testing.assert_array_equal(inside[:, order.dofs(dofs)], V)
    A = sp.random(21, 21, density=0.3, random_state=1, format="csr")
    p = order.dofs(dofs)
    np.testing.assert_array_equal(order.matrix_to_mesh(A[np.argsort(p)][:, np.argsort(p)]).toarray(),
                                  A.toarray())
    with pytest.raises(ValueError, match="21 DOFs"):
        order.to_matrix(np.zeros(20))


def test_renumbered_stiffness_is_the_mesh_stiffness_entry_for_entry(model):
    """Each entry sums the same cells' contributions as the stored-matrix assembly in the mesh
    numbering, and stiffness_matrix() returns them in that numbering. The renumbered pattern
    visits the cells in its own order (SparsityPattern.cell_order: compact blocks for the
    parallel refill), so an entry's additions come in another order: equal to round-off."""
    system = LinearElasticSystem(model)
    scale = _scale(system)
    mesh = model.mesh
    Ke, _ = element_stiffness(mesh.cell_type, mesh.points[mesh.cells], system.D)
    reference = _in_mesh_order(model).stiffness_matrix(scale)
    ours = system.stiffness_matrix(scale)
    assert system.pattern.cell_order.shape == (mesh.n_cells,)
    assert np.array_equal(ours.indptr, reference.indptr)
    assert np.array_equal(ours.indices, reference.indices)
    # a few additions per entry in another order: a few units in the last place of the largest
    assert abs(ours - reference).max() <= 8e-15 * abs(reference).max()
    coo = coo_assembly(mesh.cells, mesh.n_nodes, 3, Ke, scale)
    assert abs(ours - coo).max() <= 1e-12 * abs(coo).max()


def test_solves_adjoints_and_reactions_agree_with_the_mesh_order(bracket_model):
    # prescribed displacements and a spring beside the clamp: every path of analyse()
    mesh = lw.read_mesh(__import__("pathlib").Path(__file__).parents[1] / "meshes" / "bracket.msh")
    mesh.add_node_set("far_end", lambda p: p[:, 0] >= 119.999)
    model = lw.Model(mesh, lw.Material(E=70e3, nu=0.33),
                     supports={"bolt_holes": "xyz", "far_end": lw.Spring("far_end", (5.0, 50.0, 20.0)),
                               "load_face": {"y": 0.01}},
                     loads={"down": [lw.Traction("load_face", (0.0, 0.0, -1.0))],
                            "side": [lw.Traction("load_face", (0.0, 1.0, 0.0))]})
    ours, theirs = LinearElasticSystem(model), _in_mesh_order(model)
    assert ours.node_order is not None
    scale = _scale(ours, 7)
    a, b = ours.analyse(scale, solver="direct"), theirs.analyse(scale, solver="direct")
    np.testing.assert_allclose(a.U, b.U, rtol=0, atol=1e-9 * np.abs(b.U).max())
    np.testing.assert_array_equal(a.F, b.F)
    np.testing.assert_array_equal(a.U[:, ours.fixed_dofs], b.U[:, theirs.fixed_dofs])
    rhs = np.random.default_rng(2).standard_normal((2, ours.n_dofs))
    np.testing.assert_allclose(a.adjoint(rhs), b.adjoint(rhs), rtol=0,
                               atol=1e-9 * np.abs(b.adjoint(rhs)).max())
    fa, fb = a.internal_forces(), b.internal_forces()
    np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-9 * np.abs(fb).max())
    for ra, rb in zip(a.reactions(), b.reactions()):
        for name in rb:
            np.testing.assert_allclose(ra[name], rb[name], rtol=1e-8, atol=1e-8)


@pytest.mark.skipif("amg" not in available_solvers(), reason="no pyamg")
def test_amg_reuse_on_the_renumbered_matrix(model):
    """The aggregation visits nodes in the mesh's order: the coarse level and the PCG iterations
    of the mesh-order matrix, the same displacements as the direct solver."""
    ours, theirs = LinearElasticSystem(model), _in_mesh_order(model)
    counts = {}
    for name, system in (("ours", ours), ("theirs", theirs)):
        its, sizes = [], []
        for seed in (1, 2):
            state = system.analyse(_scale(system, seed), solver="amg-reuse")
            its.append(max(system.last_solve_info["iterations"]))
            sizes.append(system.solver._hierarchy.levels[-1].A.shape[0])
        counts[name] = (its, sizes)
    assert counts["ours"][1] == counts["theirs"][1]
    assert all(abs(x - y) <= 1 for x, y in zip(counts["ours"][0], counts["theirs"][0])), counts
    # the solver keeps the points, not the rigid-body modes formed from them (6 per DOF)
    kept = [v for v in vars(ours.solver).values()
            if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    assert kept and max(v.size for v in kept) < 6 * ours.n_dofs
    assert np.array_equal(ours.solver._modes, rigid_body_modes(ours.matrix_points))
    direct = theirs.analyse(_scale(theirs, 2), solver="direct")
    c_ours = np.einsum("cd,cd->c", state.F, ours.analyse(_scale(ours, 2), solver="amg-reuse").U)
    c_direct = np.einsum("cd,cd->c", direct.F, direct.U)
    np.testing.assert_allclose(c_ours, c_direct, rtol=1e-6)


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_modes_and_mass_in_mesh_order(model, method):
    from lightweight.fem.mass import mass_matrix
    ours, theirs = LinearElasticSystem(model), _in_mesh_order(model)
    scale = _scale(ours, 3)
    assert (mass_matrix(ours, scale) != mass_matrix(theirs, scale)).nnz == 0
    heavy = lw.Model(model.mesh, lw.Material(E=70e3, nu=0.33, density=2.7e-9),
                     supports={"bolt_holes": "xyz"}, loads=model.loads)
    result = lw.modes(heavy, n=3, method=method)
    # the reference: SciPy's shift-invert Lanczos on the mesh-ordered K and M of the free DOFs
    system = _in_mesh_order(heavy)
    free = system.free_mask
    K = system.stiffness_matrix()[free][:, free].tocsc()
    M = mass_matrix(system)[free][:, free].tocsc()
    import scipy.sparse.linalg as spla
    expected = np.sort(spla.eigsh(K, k=3, M=M, sigma=0.0, which="LM")[0])
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=1e-6)


def test_aggregation_order_renumbers_aggregates_by_their_lowest_node():
    A = sp.random(60, 60, density=0.08, random_state=3, format="csr")
    G = ((A + A.T) != 0).astype(np.int8).tocsr()
    G.setdiag(0)
    G.eliminate_zeros()
    G.sort_indices()
    ptr, idx = G.indptr.astype(np.int64), G.indices.astype(np.int64)
    plain, n_plain = aggregation.standard_aggregation(ptr, idx)
    same, n_same = aggregation.standard_aggregation(ptr, idx, np.arange(60))
    assert n_same == n_plain and np.array_equal(same, plain)
    order = np.random.default_rng(4).permutation(60)
    agg, n_agg = aggregation.standard_aggregation(ptr, idx, order)
    member = agg >= 0
    lowest = [np.flatnonzero(agg == a).min() for a in range(n_agg)]
    assert lowest == sorted(lowest) and set(agg[member]) == set(range(n_agg))
    with pytest.raises(ValueError, match="60 entries"):
        aggregation.standard_aggregation(ptr, idx, np.arange(59))
