"""solver="multigrid" through LinearElasticSystem, lw.solve and the optimization loop, against direct.

Small grids with a real hierarchy: ``coarse_max_dofs`` is lowered so a 16x8x8 grid (4 131 DOFs)
gets three levels (4131, 675, 135 DOFs) instead of one direct level.
"""

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import LightweightError, SolverError
from lightweight.fem import system as fem_system
from lightweight.optimize.filters import GridFilter

SMALL_HIERARCHY = {"coarse_max_dofs": 300}


def cantilever(shape=(16, 8, 8), two_cases=False, supports=None):
    """Clamped at x = 0, loaded on the far bottom edge; unit-size cells; E = 1, nu = 0.3."""
    dim = len(shape)
    mesh = lw.structured_grid(shape)
    nx = shape[0]
    mesh.add_node_set("edge", lambda p: (p[:, 0] == nx) & (p[:, dim - 1] == 0))
    down = tuple(-1.0 if d == dim - 1 else 0.0 for d in range(dim))
    loads = {"down": lw.PointLoad("edge", down)}
    if two_cases:
        loads["side"] = lw.PointLoad("edge", (0.0, 0.5) + (0.2,) * (dim - 2))
    supports = supports or {"xmin": "xyz"[:dim]}
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports=supports, loads=loads)


def multigrid_model(**kwargs):
    model = cantilever(**kwargs)
    model.system().multigrid_options = dict(SMALL_HIERARCHY)
    return model


def smooth_density(mesh, volume_fraction, seed=0):
    """A smooth random field in (0, 1] with the given mean (filtered noise, no floating islands)."""
    field = GridFilter(mesh.grid, mesh.grid_spacing, 2.5).forward(
        np.random.default_rng(seed).uniform(0, 1, mesh.n_cells))
    field = (field - field.min()) / np.ptp(field)
    return np.clip(field * volume_fraction / field.mean(), 1e-3, 1.0)


@pytest.mark.parametrize("design", ["solid", "uniform 0.1", "smooth 0.1", "smooth 0.3"])
def test_solve_matches_direct(design):
    model = multigrid_model(two_cases=True)
    mesh = model.mesh
    rho = {"solid": None, "uniform 0.1": np.full(mesh.n_cells, 0.1),
           "smooth 0.1": smooth_density(mesh, 0.1), "smooth 0.3": smooth_density(mesh, 0.3, 1)}[design]
    mg = lw.solve(model, rho, penalty=3.0, min_stiffness=1e-9, solver="multigrid")
    direct = lw.solve(model, rho, penalty=3.0, min_stiffness=1e-9, solver="direct")
    assert mg.solver_info["solver"] == "multigrid"
    assert len(mg.solver_info["levels"]) == 3
    for case in ("down", "side"):
        assert mg.compliance[case] == pytest.approx(direct.compliance[case], rel=1e-6)
        scale = np.abs(direct.displacement[case]).max()
        assert np.abs(mg.displacement[case] - direct.displacement[case]).max() <= 1e-4 * scale
        assert np.allclose(mg.reactions[case]["xmin"], direct.reactions[case]["xmin"], atol=1e-6)


def test_load_cases_share_one_hierarchy_and_warm_start():
    model = multigrid_model(two_cases=True)
    system = model.system()
    rho = smooth_density(model.mesh, 0.2)
    scale = 1e-9 + rho ** 3
    U, F = system.solve(scale, solver="multigrid")
    hierarchy = system.multigrid
    cold = system.last_solve_info["iterations"]
    assert len(cold) == 2                                    # one block solve of both cases
    U2, _ = system.solve(scale * (1 + 1e-3 * rho), solver="multigrid", x0=U)
    assert system.multigrid is hierarchy                     # built once, updated per solve
    assert max(system.last_solve_info["iterations"]) < min(cold)
    for c in range(2):                                       # same as one case at a time
        Uc, _ = system.solve(scale, solver="direct")
        assert F[c] @ U[c] == pytest.approx(F[c] @ Uc[c], rel=1e-6)


def test_no_assembled_matrix_on_the_multigrid_path():
    model = multigrid_model()
    system = model.system()
    rho = smooth_density(model.mesh, 0.1)
    U, F = system.solve(1e-9 + rho ** 3, solver="multigrid")
    energies = system.element_energies(U)
    assert system._pattern is None and system._cell_dofs is None
    # the grid energy kernel equals the general one through the DOF table
    from lightweight.fem.kernels import element_quadratic_forms
    general = element_quadratic_forms(system.element_matrices, system.cell_dofs, U)
    assert np.allclose(energies, general, rtol=1e-12, atol=0)
    assert energies[0] @ (1e-9 + rho ** 3) == pytest.approx(F[0] @ U[0], rel=1e-8)


def test_prescribed_displacement_is_lifted():
    # pull the free end by a prescribed x-displacement, no external force
    model = cantilever(supports={"xmin": "xyz", "xmax": {"x": 0.01}})
    model.system().multigrid_options = dict(SMALL_HIERARCHY)
    rho = smooth_density(model.mesh, 0.3)
    mg = lw.solve(model, rho, solver="multigrid")
    direct = lw.solve(model, rho, solver="direct")
    assert direct.compliance["down"] > 0
    assert mg.compliance["down"] == pytest.approx(direct.compliance["down"], rel=1e-6)
    xmax = model.mesh.node_set("xmax")
    assert np.allclose(mg.displacement["down"][xmax, 0], 0.01)
    reaction = direct.reactions["down"]["xmax"]
    # residual-based stopping (rtol 1e-6): reactions agree to ~1e-6 of their size
    assert np.abs(mg.reactions["down"]["xmax"] - reaction).max() <= 1e-5 * np.abs(reaction).max()


@pytest.mark.parametrize("volume_fraction", [0.1, 0.3])
def test_minimize_compliance_history_matches_direct(volume_fraction):
    runs = {}
    for solver in ("direct", "multigrid"):
        model = multigrid_model()
        runs[solver] = lw.minimize_compliance(model, volume_fraction, filter_radius=1.5,
                                              penalty=3.0, min_stiffness=1e-9, max_iterations=15,
                                              tolerance=0.0, solver=solver, verbose=False)
    direct, mg = runs["direct"], runs["multigrid"]
    assert mg.solution.solver_info["solver"] == "multigrid"
    c_direct = np.array([h["objective"] for h in direct.history])
    c_mg = np.array([h["objective"] for h in mg.history])
    assert np.allclose(c_mg, c_direct, rtol=1e-6, atol=0)
    assert np.abs(mg.density - direct.density).max() <= 1e-5


def test_displacement_limit_adjoint_matches_direct():
    limit = lw.DisplacementLimit("edge", "z", 40.0)
    runs = {}
    for solver in ("direct", "multigrid"):
        model = multigrid_model()
        runs[solver] = lw.minimize_compliance(model, 0.2, filter_radius=1.5, optimizer="mma",
                                              displacement_limits=[limit], max_iterations=6,
                                              tolerance=0.0, solver=solver, verbose=False)
    for h_direct, h_mg in zip(runs["direct"].history, runs["multigrid"].history):
        assert h_mg["objective"] == pytest.approx(h_direct["objective"], rel=1e-6)
        assert np.allclose(h_mg["constraints"], h_direct["constraints"], rtol=1e-5, atol=1e-7)


def test_minimize_mass_matches_direct():
    runs = {}
    for solver in ("direct", "multigrid"):
        model = multigrid_model()
        runs[solver] = lw.minimize_mass(model, max_compliance_factor=3.0, filter_radius=1.5,
                                        max_iterations=5, tolerance=0.0, solver=solver,
                                        verbose=False)
    for h_direct, h_mg in zip(runs["direct"].history, runs["multigrid"].history):
        assert h_mg["objective"] == pytest.approx(h_direct["objective"], rel=1e-6)
        assert np.allclose(h_mg["constraints"], h_direct["constraints"], rtol=1e-5, atol=1e-7)


def test_optimization_converges_to_the_same_design():
    """2D cantilever to convergence: final designs agree to 1e-5 per cell (measured 2.5e-7)."""
    runs = {}
    for solver in ("direct", "multigrid"):
        model = cantilever(shape=(48, 16))
        model.system().multigrid_options = {"coarse_max_dofs": 200}
        runs[solver] = lw.minimize_compliance(model, 0.4, filter_radius=1.5, max_iterations=300,
                                              solver=solver, verbose=False)
    direct, mg = runs["direct"], runs["multigrid"]
    assert direct.converged and mg.converged
    assert len(mg.history) == len(direct.history)
    assert np.abs(mg.density - direct.density).max() <= 1e-5
    assert mg.compliance["down"] == pytest.approx(direct.compliance["down"], rel=1e-6)


def test_auto_picks_multigrid_only_for_large_grids(monkeypatch):
    model = cantilever()
    system = model.system()
    assert not system.uses_multigrid("auto")                 # 4 131 DOFs: direct
    assert system.uses_multigrid("multigrid")
    monkeypatch.setitem(fem_system.MULTIGRID_AUTO_MIN_DOFS, 3, 1000)
    assert system.uses_multigrid("auto")
    assert not system.uses_multigrid("direct")
    tets = lw.structured_grid((4, 2, 2), cell_type="tetra")
    tet_model = lw.Model(tets, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                         loads={"f": lw.PointLoad("xmax", (0, 0, -1.0))})
    assert not tet_model.system().uses_multigrid("auto")


def test_multigrid_errors_are_clear():
    tets = lw.structured_grid((4, 2, 2), cell_type="tetra")
    model = lw.Model(tets, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"f": lw.PointLoad("xmax", (0, 0, -1.0))})
    with pytest.raises(SolverError, match="structured quad or hexahedron grid"):
        lw.solve(model, solver="multigrid")
    with pytest.raises(LightweightError, match="structured quad or hexahedron grid"):
        lw.minimize_compliance(model, 0.5, filter_radius=1.5, max_iterations=2,
                               solver="multigrid", verbose=False)
    grid = cantilever(shape=(8, 4))
    with pytest.raises(SolverError, match="positive"):      # a zero stiffness floor is singular
        lw.solve(grid, np.zeros(grid.mesh.n_cells), min_stiffness=0.0, solver="multigrid")


@pytest.mark.parametrize("shape", [(3, 2), (1, 4), (4, 3, 2), (1, 1, 1), (5, 1, 3)])
def test_grid_fast_paths_of_the_mesh_equal_the_general_ones(shape):
    from lightweight.mesh.mesh import Mesh
    grid = lw.structured_grid(shape, size=[0.5 * n + 0.1 for n in shape])
    general = Mesh(grid.points, grid.cells, grid.cell_type)       # same cells, no grid attribute
    assert np.array_equal(grid.boundary_faces(), general.boundary_faces())
    assert np.allclose(grid.cell_volumes(), general.cell_volumes(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2)])
def test_grid_stresses_equal_the_general_path(shape):
    from lightweight.fem.elements import element_stress
    model = cantilever(shape=shape, two_cases=True)
    system = model.system()
    U, _ = system.solve(np.full(model.mesh.n_cells, 0.7), solver="direct")
    fast = system.stresses(U)
    general = element_stress(model.mesh.cell_type, model.mesh.points[model.mesh.cells], system.D,
                             system.cell_displacements(U))
    assert np.allclose(fast, general, rtol=1e-12, atol=1e-12 * np.abs(general).max())


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2)])
def test_grid_volumes_are_one_number_with_the_same_values(shape):
    """On a grid, Analysis.cell_volumes and the volume/mass coefficients are read-only stride-0
    views of one number: the same entries as the general path's vectors, the same values."""
    from lightweight.fem.interpolation import Interpolation
    from lightweight.mesh.mesh import Mesh
    from lightweight.optimize.analysis import Analysis
    from lightweight.optimize.responses import Mass, VolumeFraction
    mesh = lw.structured_grid(shape, size=[0.5 * n + 0.1 for n in shape])
    material = lw.Material(E=1.0, nu=0.3, density=2.5)
    supports = {"xmin": "xyz"[:len(shape)]}
    grid = lw.Model(mesh, material, supports=supports, loads={}, thickness=1.7)
    plain = Mesh(mesh.points, mesh.cells, mesh.cell_type)       # same cells, no grid attribute
    plain.node_sets.update(mesh.node_sets)
    general = lw.Model(plain, material, supports=supports, loads={}, thickness=1.7)
    rho = np.random.default_rng(3).uniform(0.0, 1.0, mesh.n_cells)
    full = mesh.cell_volumes() * grid.thickness         # the vectors of before, bit for bit
    np.testing.assert_array_equal(VolumeFraction(grid).coefficients, full / full.sum())
    np.testing.assert_array_equal(Mass(grid).coefficients, 2.5 * full)
    for response in (VolumeFraction, Mass):
        fast, slow = response(grid), response(general)
        assert fast.coefficients.strides == (0,) and slow.coefficients.strides != (0,)
        assert np.allclose(fast.coefficients, slow.coefficients, rtol=1e-14, atol=0)
        (value, grad), (value_slow, grad_slow) = fast.evaluate(grid_state(grid, rho)), \
            slow.evaluate(grid_state(general, rho))
        assert value == pytest.approx(value_slow, rel=1e-14)
        assert grad.shape == grad_slow.shape == (1, mesh.n_cells)
        with pytest.raises(ValueError):
            fast.coefficients[0] = 1.0                  # a write fails loudly
    law = Interpolation()
    fast, slow = Analysis(grid, law, "direct"), Analysis(general, law, "direct")
    assert fast.cell_volumes.strides == (0,)
    np.testing.assert_array_equal(fast.cell_volumes, full)
    assert np.allclose(fast.cell_volumes, slow.cell_volumes, rtol=1e-14, atol=0)
    assert fast.total_volume == pytest.approx(slow.total_volume, rel=1e-14)
    assert fast.volume_fraction(rho) == pytest.approx(slow.volume_fraction(rho), rel=1e-14)
    assert mesh.uniform_cell_volume() == pytest.approx(float(np.prod(mesh.grid_spacing)))
    assert general.mesh.uniform_cell_volume() is None


def grid_state(model, rho):
    class State:                              # what the linear responses read of a design state
        pass
    state = State()
    state.rho = rho
    return state


@pytest.mark.parametrize("solver", ["multigrid", "direct"])
def test_analyses_keep_the_fixed_loads_as_loaded_dofs_only(solver):
    """Without body loads the system keeps only the loaded DOFs and their values: no dense
    (n_cases, n_dofs) array on the system or its states; F is built again when read, and the
    compliance f.u is read at the loaded DOFs (equal to the dense product to round-off)."""
    model = multigrid_model(shape=(8, 4, 4), two_cases=True)
    system = model.system()
    dense = system.fixed_loads
    assert dense.shape == (2, system.n_dofs) and np.count_nonzero(dense) > 0
    np.testing.assert_array_equal(np.flatnonzero(np.any(dense != 0, axis=0)), system.loaded_dofs)
    first = system.analyse(np.full(model.mesh.n_cells, 0.5), solver=solver)
    second = system.analyse(np.full(model.mesh.n_cells, 0.7), solver=solver)
    for state in (first, second):
        np.testing.assert_array_equal(state.F, dense)
        np.testing.assert_allclose(state.load_work(), np.einsum("cd,cd->c", dense, state.U),
                                   rtol=1e-13)
    big = system.n_dofs * 2 * 8
    held = [name for name, value in vars(system).items()
            if isinstance(value, np.ndarray) and value.nbytes >= big]
    assert held == [], f"dense per-case arrays kept on the system: {held}"
    assert [name for name, v in vars(first).items() if isinstance(v, np.ndarray)
            and v.shape == dense.shape and v is not first.U] == []
    # every read is a new array, read-only: a write into it would change nothing, so it raises
    assert not np.shares_memory(system.fixed_loads, system.fixed_loads)
    with pytest.raises(ValueError, match="read-only"):
        system.fixed_loads[0, system.loaded_dofs[0]] = 1.0
    assert system.load_vectors().flags.writeable
    U, F = system.solve(np.full(model.mesh.n_cells, 0.7), solver=solver)
    assert F.flags.writeable
    np.testing.assert_array_equal(F, dense)
    np.testing.assert_allclose(U, second.U, rtol=1e-6, atol=1e-9 * np.abs(U).max())
    # self-weight: the loads depend on the design, the state keeps its own F
    heavy = lw.Model(model.mesh, lw.Material(E=1.0, nu=0.3, density=1.0), supports={"xmin": "xyz"},
                     loads={"weight": [lw.Gravity((0.0, 0.0, -1.0))]})
    half = np.full(model.mesh.n_cells, 0.5)
    state = heavy.system().analyse(half, half, solver=solver)
    assert state.F is state.F and np.count_nonzero(state.F) > 0
    np.testing.assert_allclose(state.load_work(), np.einsum("cd,cd->c", state.F, state.U), rtol=1e-13)


def test_grid_solve_builds_its_residual_in_a_handed_over_rhs():
    """overwrite_rhs=True: the PCG's residual lives in the rhs' memory; same solution to the bit
    as a solve that copied it, the fixed rows of the rhs still set x[fixed]; a read-only rhs is
    copied and left unchanged."""
    model = multigrid_model(shape=(8, 4, 4), two_cases=True)
    system = model.system()
    mg = system._get_multigrid()
    mg.update(np.full(model.mesh.n_cells, 0.6))
    B = system.load_vectors()
    B[:, system.fixed_dofs[:3]] = 2.5                 # fixed rows: read before B is overwritten
    kept, info_kept = mg.solve(B.copy())
    handed = B.copy()
    mine, info = mg.solve(handed, overwrite_rhs=True)
    np.testing.assert_array_equal(mine, kept)
    assert info["iterations"] == info_kept["iterations"]
    assert not np.array_equal(handed, B)              # its memory held the residual
    frozen = B.copy()
    frozen.flags.writeable = False
    again, _ = mg.solve(frozen, overwrite_rhs=True)
    np.testing.assert_array_equal(again, kept)
    np.testing.assert_array_equal(frozen, B)


def test_the_previous_displacements_become_the_next_solution_s_memory(monkeypatch):
    """The design loop hands its previous U to the grid solve when nothing else holds it: the new
    U is built in that memory (one DOF vector per case less at the solve's peak) and equals, to
    round-off, a solve that copied its start; a start someone still holds is copied, not changed."""
    from lightweight.fem.multigrid import GridMultigrid
    from lightweight.optimize.api import compliance_problem, make_loop
    model = multigrid_model(two_cases=True)
    mg_solve = GridMultigrid.solve
    seen = []

    def recording_solve(self, rhs, x0=None, overwrite_x0=False, **options):
        seen.append((None if x0 is None else x0.__array_interface__["data"][0], overwrite_x0))
        return mg_solve(self, rhs, x0=x0, overwrite_x0=overwrite_x0, **options)

    monkeypatch.setattr(GridMultigrid, "solve", recording_solve)
    loop = make_loop(model, compliance_problem(model, 0.4), filter_radius=1.5, solver="multigrid",
                     verbose=False)
    for _ in range(3):
        loop.step()
    history = [rec["objective"] for rec in loop.history]
    assert [flag for _, flag in seen] == [False, True, True]
    assert loop.analysis.last_displacements.__array_interface__["data"][0] == seen[-1][0]
    # the same run while someone holds each start: copied, unchanged, the same numbers
    held = []
    copied = make_loop(model, compliance_problem(model, 0.4), filter_radius=1.5, solver="multigrid",
                       verbose=False)
    for _ in range(3):
        if copied.analysis.last_displacements is not None:
            held.append((copied.analysis.last_displacements, copied.analysis.last_displacements.copy()))
        copied.step()
    assert [flag for _, flag in seen[3:]] == [False, False, False]
    # equal to round-off (a different buffer can change the alignment, and with it the order
    # of the dot products' SIMD sums: 1e-14 relative seen between identical runs)
    np.testing.assert_allclose([rec["objective"] for rec in copied.history], history, rtol=1e-12, atol=0)
    assert all(np.array_equal(start, before) for start, before in held)


def test_grid_solve_overwrites_only_a_start_it_may_use():
    model = multigrid_model()
    system = model.system()
    U_ref = system.analyse(np.full(model.mesh.n_cells, 0.5), solver="multigrid").U
    mg = system.multigrid
    F = system.load_vectors()
    start = np.ascontiguousarray(0.9 * U_ref)
    expected, _ = mg.solve(F, x0=start.copy())
    handed = start.copy()
    U, _ = mg.solve(F, x0=handed, overwrite_x0=True)
    assert np.shares_memory(U, handed)
    np.testing.assert_allclose(U, expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())
    wide = np.repeat(start, 2, axis=1)
    read_only = start.copy()
    read_only.flags.writeable = False
    for other in (start.astype(np.float32), wide[:, ::2], read_only):   # not float64 / not C / read-only
        assert np.array_equal(other, start.astype(other.dtype))
        before = np.array(other)
        U, _ = mg.solve(F, x0=other, overwrite_x0=True)
        assert not np.shares_memory(U, other) and np.array_equal(other, before)
        assert np.allclose(U, expected, rtol=1e-6, atol=1e-12 * np.abs(expected).max())


def test_design_state_releases_gradient_only_entries_and_recomputes_them(monkeypatch):
    """DesignState.release_gradients drops the stiffness derivative and the compliance gradients
    (what the loop does before its update), keeps the compliance values, and a later evaluation
    computes the same gradients again; the loop's history is the one of a loop that keeps them."""
    from lightweight.optimize.analysis import DesignState
    from lightweight.optimize.api import compliance_problem, make_loop
    from lightweight.optimize.responses.compliance import Compliance

    def fresh_loop():
        model = multigrid_model(shape=(8, 4, 4), two_cases=True)
        return model, make_loop(model, compliance_problem(model, 0.4), filter_radius=1.5,
                                solver="multigrid", verbose=False)

    model, loop = fresh_loop()
    state = loop.analysis.state(np.full(model.mesh.n_cells, 0.4))
    response = Compliance(model, "down")
    values, grads = response.evaluate(state)
    assert {"stiffness_derivative", "compliance.gradients"} <= set(state.cache)
    state.release_gradients()
    assert not {"stiffness_derivative", "compliance.gradients"} & set(state.cache)
    np.testing.assert_array_equal(state.cache["compliance"], state.compliances())
    again_values, again_grads = response.evaluate(state)
    np.testing.assert_array_equal(again_values, values)
    np.testing.assert_array_equal(again_grads, grads)

    _, releasing = fresh_loop()
    for _ in range(3):
        releasing.step()
    monkeypatch.setattr(DesignState, "release_gradients", lambda self: None)
    _, keeping = fresh_loop()
    for _ in range(3):
        keeping.step()
    assert [r["objective"] for r in releasing.history] == [r["objective"] for r in keeping.history]
