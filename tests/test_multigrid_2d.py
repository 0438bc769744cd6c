"""The serial one-call 2D multigrid (lightweight.fem.multigrid2d) against direct solves and GridMultigrid."""

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import SolverError
from lightweight.fem import system as fem_system
from lightweight.fem.multigrid import GridMultigrid
from lightweight.fem.multigrid2d import GridMultigrid2D, band_cost, from_planes, to_planes

from test_multigrid import SPACING_2D, _assembled, _designs, _direct_compliance, _setup


@pytest.mark.parametrize("design", ["uniform", "random_simp", "thresholded"])
def test_compliance_matches_direct_and_iterations_match_gridmultigrid(design):
    """Same hierarchy and smoother as GridMultigrid: same MG-PCG iteration count, same answer."""
    shape = (64, 32)
    mesh, Ke, fixed, F = _setup(shape, SPACING_2D)
    scale = _designs(mesh, shape)[design]
    _, K = _assembled(mesh, Ke, scale)
    reference = _direct_compliance(K, fixed, F)
    mg = GridMultigrid2D(shape, SPACING_2D, Ke, fixed, coarse_max_dofs=200, rtol=1e-8)
    general = GridMultigrid(shape, SPACING_2D, Ke, fixed, coarse_max_dofs=200, rtol=1e-8)
    assert len(mg.levels) == len(general.levels) >= 4
    mg.update(scale)
    general.update(scale)
    U, info = mg.solve(F)
    _, info_general = general.solve(F)
    assert info["converged"], info
    assert abs(F @ U - reference) <= 1e-8 * abs(reference)
    assert np.all(U[fixed] == 0.0)
    assert abs(info["iterations"][0] - info_general["iterations"][0]) <= 1
    assert info["residuals"][0] <= 1e-8


def test_fixed_values_two_cases_and_warm_start():
    """Fixed rows return rhs / fixed_diagonal; cases solve independently; a warm start helps."""
    shape = (32, 16)
    mesh, Ke, fixed, F = _setup(shape, SPACING_2D)
    scale = _designs(mesh, shape)["random_simp"]
    mg = GridMultigrid2D(shape, SPACING_2D, Ke, fixed, coarse_max_dofs=200, rtol=1e-10)
    mg.update(scale)
    B = np.vstack([F, np.roll(F, 7) * (~fixed)])
    B[1, np.flatnonzero(fixed)[:3]] = 2.5
    U, info = mg.solve(B)
    assert np.allclose(U[1, np.flatnonzero(fixed)[:3]], 2.5 / mg.fixed_diagonal)
    for c in range(2):
        alone, _ = mg.solve(B[c])
        assert np.allclose(alone, U[c], rtol=0, atol=1e-12 * np.abs(U[c]).max())
        # the solution solves the constrained system: residual of the free rows
        r = (B[c] - mg.matvec(U[c]))[~fixed]
        assert np.linalg.norm(r) <= 1e-9 * np.linalg.norm(B[c][~fixed])
    _, warm = mg.solve(B, x0=U + 1e-6 * np.abs(U).max())
    assert max(warm["iterations"]) < min(info["iterations"])


def test_vcycle_is_symmetric_positive():
    """CG needs a symmetric positive preconditioner: <V a, b> = <a, V b> to float32 rounding."""
    shape = (32, 16)
    mesh, Ke, fixed, _ = _setup(shape, SPACING_2D)
    mg = GridMultigrid2D(shape, SPACING_2D, Ke, fixed, coarse_max_dofs=200)
    mg.update(_designs(mesh, shape)["thresholded"])
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, mesh.n_nodes * 2)) * (~fixed)
    va, vb = mg.vcycle(a), mg.vcycle(b)
    assert abs(va @ b - a @ vb) <= 1e-5 * np.sqrt((va @ a) * (vb @ b))
    assert va @ a > 0 and vb @ b > 0


def test_planes_round_trip_and_band_cost():
    u = np.arange(2 * 12, dtype=float)
    planes = to_planes(u, 12)
    assert np.array_equal(planes[:12], u[0::2]) and np.array_equal(planes[12:], u[1::2])
    assert np.array_equal(from_planes(planes, 12), u)
    assert band_cost(76, 26) == 2 * 76 * 26 * (2 * 27 + 1) ** 2


def test_bad_grids_raise():
    mesh, Ke, fixed, _ = _setup((9, 7), SPACING_2D)
    with pytest.raises(SolverError, match="two levels"):
        GridMultigrid2D((9, 7), SPACING_2D, Ke, fixed)          # odd counts: no coarse level
    mesh3, Ke3, fixed3, _ = _setup((4, 2, 2), (1.0, 1.0, 1.0))
    with pytest.raises(SolverError, match="2D"):
        GridMultigrid2D((4, 2, 2), None, Ke3, fixed3)
    for option in ({"smoother": "jacobi"}, {"vcycle_dtype": np.float64}, {"coarse_solver": "superlu"}):
        with pytest.raises(SolverError, match="use GridMultigrid"):
            GridMultigrid2D((8, 4), SPACING_2D, _setup((8, 4), SPACING_2D)[1], None, **option)
    assert not GridMultigrid2D.fits((301, 100), 5000)
    assert GridMultigrid2D.fits((300, 100), 5000)


def _mbb(nelx, nely):
    mesh = lw.structured_grid((nelx, nely))
    mesh.add_node_set("load", lambda p: (p[:, 0] == 0) & (p[:, 1] == nely))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == nelx) & (p[:, 1] == 0))
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "x", "roller": "y"},
                    loads={"mbb": lw.PointLoad("load", (0.0, -1.0))})


def test_auto_picks_it_on_large_2d_grids_with_the_direct_answer(monkeypatch):
    """Through the system: "auto" uses it above the 2D threshold; compliance and adjoint as direct."""
    monkeypatch.setattr(fem_system, "MULTIGRID_2D_SERIAL_AUTO_MIN_DOFS", 1000)
    monkeypatch.setitem(fem_system.MULTIGRID_COARSE_MAX_DOFS, 2, 200)
    model = _mbb(48, 16)
    rho = np.random.default_rng(3).uniform(0.1, 1.0, model.mesh.n_cells)
    scale = 1e-9 + rho ** 3
    system = fem_system.LinearElasticSystem(model)
    state = system.analyse(scale, solver="auto")
    assert state.method == "multigrid" and isinstance(system.multigrid, GridMultigrid2D)
    direct = fem_system.LinearElasticSystem(model).analyse(scale, solver="direct")
    c_mg = float(np.sum(state.F * state.U))
    c_direct = float(np.sum(direct.F * direct.U))
    assert c_mg == pytest.approx(c_direct, rel=1e-7)
    lam = state.adjoint(state.F)
    assert np.allclose(lam, direct.adjoint(direct.F), rtol=0, atol=1e-5 * np.abs(direct.U).max())
    # odd cell counts: no serial hierarchy, "auto" keeps the old rule and GridMultigrid serves
    odd = fem_system.LinearElasticSystem(_mbb(49, 16))
    assert not odd.uses_multigrid("auto")
    odd.analyse(1e-9 + np.ones(odd.n_cells), solver="multigrid")
    assert type(odd.multigrid) is GridMultigrid


def test_adjoint_warm_starts_by_key_and_the_cache_stays_bounded(monkeypatch):
    """Multigrid adjoints: a keyed right-hand side that changes with the design (a stress
    response's) starts from the previous design's solution of that key, still solves to the
    direct answer, and leaves one cache entry; right-hand sides by hash stay at most
    ADJOINT_GUESSES_KEPT (before the keys, every stress iteration added one: a leak of 0.5 MB
    per iteration on the 300 x 100 MBB)."""
    monkeypatch.setitem(fem_system.MULTIGRID_COARSE_MAX_DOFS, 2, 200)
    model = _mbb(48, 16)
    rng = np.random.default_rng(5)
    system = fem_system.LinearElasticSystem(model)
    rho = rng.uniform(0.2, 1.0, model.mesh.n_cells)
    for step in range(4):
        rho = np.clip(rho + 0.02 * rng.standard_normal(rho.size), 0.1, 1.0)
        scale = 1e-9 + rho ** 3
        state = system.analyse(scale, solver="multigrid")
        rhs = state.F * (1.0 + 0.01 * step) + 1e-3 * rng.standard_normal(state.F.shape)
        lam = state.adjoint(rhs, key="stress-test")
        direct = fem_system.LinearElasticSystem(model).analyse(scale, solver="direct")
        np.testing.assert_allclose(lam, direct.adjoint(rhs), rtol=0,
                                   atol=1e-5 * np.abs(direct.adjoint(rhs)).max())
    assert list(system._adjoint_guesses) == [("key", "stress-test")]
    for k in range(fem_system.ADJOINT_GUESSES_KEPT + 3):
        state.adjoint(state.F * (k + 2.0))                       # a new rhs each: by hash
    assert len(system._adjoint_guesses) == fem_system.ADJOINT_GUESSES_KEPT
    assert ("key", "stress-test") not in system._adjoint_guesses      # the oldest went first


def test_keyed_adjoint_starts_from_the_previous_solution(monkeypatch):
    """The start handed to the multigrid solve is the key's last solution, of the right shape;
    a solution of another shape is not used."""
    monkeypatch.setitem(fem_system.MULTIGRID_COARSE_MAX_DOFS, 2, 200)
    model = _mbb(48, 16)
    system = fem_system.LinearElasticSystem(model)
    state = system.analyse(1e-9 + np.full(model.mesh.n_cells, 0.5), solver="multigrid")
    starts = []
    solve = system.multigrid.solve

    def recorded(b, x0=None, **kwargs):
        starts.append(None if x0 is None else np.array(x0))
        return solve(b, x0=x0, **kwargs)

    monkeypatch.setattr(system.multigrid, "solve", recorded)
    first = state.adjoint(state.F, key="k")
    state.adjoint(1.01 * state.F, key="k")
    state.adjoint(np.vstack([state.F, state.F]), key="k")          # two rows: no start
    assert starts[0] is None
    np.testing.assert_array_equal(starts[1], first)
    assert starts[2] is None
