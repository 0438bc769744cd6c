"""Internal forces and reactions without a second, unconstrained copy of K (issue 14).

A direct analysis keeps the solver's constrained K (weakly) and the values of K in fixed rows
and columns (lightweight/fem/system.py, SupportCoupling). These tests hold its results to the
unconstrained K's own product: bit for bit on the fixed rows (reactions, compliance), and on
every row for the solve's displacements and for reaction selectors.
"""

import numpy as np
import pytest

import lightweight as lw
from lightweight.fem.static import build_solution


def _model(pull: float = 0.0):
    """Distorted unstructured tets, clamped at x=0; at x=4 pulled by ``pull`` in x (0: a load)."""
    grid = lw.structured_grid((6, 3, 3), size=(4.0, 1.0, 1.0), cell_type="tetra")
    rng = np.random.default_rng(7)
    lo, hi = grid.bounding_box()
    pts = grid.points.copy()
    interior = np.all((pts > lo + 1e-9) & (pts < hi - 1e-9), axis=1)
    pts[interior] += 0.08 * rng.uniform(-1, 1, size=(interior.sum(), 3))
    mesh = lw.Mesh(pts, grid.cells, "tetra", node_sets=dict(grid.node_sets))
    supports = {"xmin": "xyz"}
    if pull:
        supports["xmax"] = {"x": pull}
    loads = {"down": lw.PointLoad("xmax", [0.0, 0.0, -1.0]), "side": lw.PointLoad("xmax", [0.0, 0.5, 0.0])}
    return lw.Model(mesh, lw.Material(E=200e3, nu=0.3), supports=supports, loads=loads)


def _full_product(system, scale, U):
    """K u of the unconstrained K, the way the analysis used to keep it (in K's own node
    order, whose row sums the analysis forms; U and the result in the mesh's)."""
    K = system.pattern.matrix(system.stiffness_data(scale))
    Um = system.to_matrix_order(np.atleast_2d(U))
    return system.to_mesh_order(np.asarray(K @ Um.T).T)


@pytest.mark.parametrize("solver", ["direct", "amg", "superlu"])
def test_internal_forces_are_the_full_stiffness_product(solver):
    model = _model()
    system = model.system()
    scale = np.random.default_rng(1).uniform(1e-3, 1.0, system.n_cells)
    state = system.analyse(scale, solver=solver)
    full = _full_product(system, scale, state.U)
    np.testing.assert_array_equal(state.internal_forces(), full)
    # a reaction selector (1 on some supported DOFs): K r, the reaction response's adjoint load
    selector = np.zeros(system.n_dofs)
    selector[system.fixed_dofs[::3]] = 1.0
    np.testing.assert_array_equal(state.internal_forces(selector[None, :]),
                                  _full_product(system, scale, selector))
    # a vector nonzero on free and fixed DOFs: fixed rows exact, free rows to round-off
    V = np.random.default_rng(2).normal(size=(2, system.n_dofs))
    ours, theirs = state.internal_forces(V), _full_product(system, scale, V)
    np.testing.assert_array_equal(ours[:, system.fixed_dofs], theirs[:, system.fixed_dofs])
    assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()
    reference = system.reactions(full, state.F)
    for case, ref in zip(state.reactions(), reference):
        for name in ref:
            np.testing.assert_array_equal(case[name], ref[name])


def test_the_state_keeps_no_copy_of_k():
    model = _model()
    system = model.system()
    state = system.analyse(solver="direct")
    K = system.stiffness_matrix()
    kept = sum(v.nbytes for k, v in vars(state).items()
               if isinstance(v, np.ndarray) and k not in ("U", "F", "stiffness_scale"))
    coupling = system.support_coupling
    assert kept == state._support_values.nbytes == coupling.indices.size * 8
    assert coupling.indices.size < K.nnz / 5          # only the supports' share of K
    # the solver holds the constrained K the state refers to, once
    assert state._constrained() is system.solver.K


def test_a_state_past_its_analysis_reassembles_its_own_k():
    model = _model()
    system = model.system()
    rng = np.random.default_rng(3)
    first_scale = rng.uniform(0.1, 1.0, system.n_cells)
    first = system.analyse(first_scale, solver="direct")
    system.analyse(rng.uniform(0.1, 1.0, system.n_cells), solver="direct")
    assert first._constrained() is None               # the solver let go of the old K
    np.testing.assert_array_equal(first.internal_forces(), _full_product(system, first_scale, first.U))


@pytest.mark.parametrize("solver", ["direct", "amg-reuse"])
def test_the_next_analysis_assembles_after_the_last_k_is_gone(solver, monkeypatch):
    """The design loop's peak: the last K and the next one are never alive together. When the
    next analysis assembles, neither the solver nor the AMG hierarchy holds the last K, and its
    values are constrained in place (one array of nnz per analysis); the results stay those of
    a fresh system."""
    import weakref
    from lightweight.fem.assembly import DirichletMask
    model = _model()
    system = model.system()
    rng = np.random.default_rng(5)
    scales = [rng.uniform(0.1, 1.0, system.n_cells) for _ in range(2)]
    system.analyse(scales[0], solver=solver)
    last = weakref.ref(system.solver.K)
    seen, copies = {}, []
    stiffness_data = type(system).stiffness_data
    apply = DirichletMask.apply

    def observed(self, *args, **kwargs):
        seen["last K alive"] = last() is not None
        return stiffness_data(self, *args, **kwargs)

    def constrained(self, data, in_place=False):
        out, value = apply(self, data, in_place=in_place)
        copies.append(out is not data)
        return out, value

    monkeypatch.setattr(type(system), "stiffness_data", observed)
    monkeypatch.setattr(DirichletMask, "apply", constrained)
    U = system.analyse(scales[1], solver=solver).U
    assert seen == {"last K alive": False} and copies == [False]
    monkeypatch.undo()
    fresh = model.system().analyse(scales[1], solver="direct").U
    np.testing.assert_allclose(U, fresh, rtol=1e-6, atol=1e-9 * abs(fresh).max())


def test_prescribed_displacements_reactions_and_compliance_are_unchanged():
    model = _model(pull=0.01)
    system = model.system()
    scale = np.random.default_rng(4).uniform(0.1, 1.0, system.n_cells)
    state = system.analyse(scale, solver="direct")
    full = _full_product(system, scale, state.U)
    ours = state.internal_forces()
    np.testing.assert_array_equal(ours[:, system.fixed_dofs], full[:, system.fixed_dofs])
    assert np.abs(ours - full).max() <= 1e-12 * np.abs(full).max()
    # the lifted right-hand side gave the same displacements as lifting with the full K
    K = system.stiffness_matrix(scale)
    free = system.free_mask
    u_p = np.zeros(system.n_dofs)
    u_p[system.fixed_dofs] = system.fixed_values
    K_ff = K[free][:, free]
    import scipy.sparse.linalg as spla
    for c in range(len(system.case_names)):
        expected = spla.spsolve(K_ff.tocsc(), (state.F[c] - K @ u_p)[free])
        assert np.abs(state.U[c, free] - expected).max() <= 1e-9 * np.abs(expected).max()
    # compliance f.u + (K u - f)_p . u_p with the full K's product, bit for bit
    sol = build_solution(model, state, None)
    residual = (full - state.F)[:, system.fixed_dofs]
    expected = (np.einsum("cd,cd->c", state.F, state.U)
                + np.einsum("cd,cd->c", residual, state.U[:, system.fixed_dofs]))
    assert [sol.compliance[c] for c in system.case_names] == expected.tolist()
    # reactions sum all components of a set's nodes; xmax's free y and z rows (K u - f there is
    # the solve's residual, ~1e-13) agree to round-off, the prescribed x exactly
    reference = system.reactions(full, state.F)
    for c, case in enumerate(system.case_names):
        for name in reference[c]:
            got, ref = sol.reactions[case][name], reference[c][name]
            assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()
        assert sol.reactions[case]["xmax"][0] == reference[c]["xmax"][0]


@pytest.mark.parametrize("solver", ["direct", "amg-reuse"])
def test_the_loop_frees_its_solver_before_building_the_result(solver):
    """No solve follows the loop's final analysis: its factor or AMG hierarchy is freed before
    the result's fields are built (they were the run's memory peak); the result's compliance
    and reactions are those of a fresh analysis of its design, and the model solves again."""
    model = _model()
    res = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.0, max_iterations=3,
                                 solver=solver, verbose=False)
    system = model.system()
    if solver == "amg-reuse":
        assert system.solver._hierarchy is None
    else:
        assert not system.solver._analysed
    fresh = lw.solve(model, res.density, solver="superlu")
    for case in res.compliance:
        assert res.compliance[case] == pytest.approx(fresh.compliance[case], rel=1e-6)
        for name in res.solution.reactions[case]:
            np.testing.assert_allclose(res.solution.reactions[case][name],
                                       fresh.reactions[case][name], rtol=1e-6, atol=1e-9)
    again = lw.solve(model, res.density, solver=solver)
    assert again.compliance == pytest.approx(fresh.compliance, rel=1e-6)
