"""Element correctness: patch tests, beam-theory convergence, load integrals, equilibrium."""

import numpy as np
import pytest

import lightweight as lw
from lightweight.fem.assembly import build_pattern, coo_assembly, refill
from lightweight.fem.elements import element_stiffness

E, NU = 1000.0, 0.25


def distorted(mesh, amount=0.15, seed=0):
    """Move interior nodes randomly (keeps the boundary, so the box stays a box)."""
    rng = np.random.default_rng(seed)
    lo, hi = mesh.bounding_box()
    interior = np.all((mesh.points > lo + 1e-9) & (mesh.points < hi - 1e-9), axis=1)
    pts = mesh.points.copy()
    pts[interior] += amount * rng.uniform(-1, 1, size=(interior.sum(), mesh.dim))
    if mesh.cell_type == "tetra10":   # keep mid-edge nodes on straight edges
        edges = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
        pts[mesh.cells[:, 4:]] = pts[mesh.cells[:, edges]].mean(axis=2)
    return lw.Mesh(pts, mesh.cells, mesh.cell_type)


PATCH_MESHES = [((3, 3), "quad", "stress"), ((3, 3), "quad", "strain"),
                ((3, 3), "triangle", "stress"), ((3, 3), "triangle", "strain"),
                ((2, 2, 2), "hexahedron", None), ((2, 2, 2), "tetra", None),
                ((2, 2, 2), "tetra10", None)]


@pytest.mark.parametrize("shape,cell_type,plane", PATCH_MESHES)
def test_patch_test_linear_field_is_exact(shape, cell_type, plane):
    """Prescribe a linear displacement on the boundary: interior nodes and stresses are exact."""
    plane = plane or "stress"
    base = lw.structured_grid(shape, size=[2.0] * len(shape), cell_type=cell_type)
    mesh = distorted(base, amount=0.2)
    dim = mesh.dim
    rng = np.random.default_rng(1)
    grad = rng.uniform(-1e-3, 1e-3, size=(dim, dim))
    shift = rng.uniform(-1e-3, 1e-3, size=dim)
    exact = mesh.points @ grad.T + shift
    lo, hi = mesh.bounding_box()
    boundary = np.flatnonzero(np.any(np.isclose(mesh.points, lo) | np.isclose(mesh.points, hi), axis=1))
    interior = np.setdiff1d(np.arange(mesh.n_nodes), boundary)
    assert interior.size > 0
    supports = {}
    for n in boundary:
        mesh.add_node_set(f"b{n}", [n])
        supports[f"b{n}"] = {c: exact[n, i] for i, c in enumerate("xyz"[:dim])}
    # a zero load case: the only excitation is the prescribed boundary motion
    mesh.add_node_set("any", [boundary[0]])
    model = lw.Model(mesh, lw.Material(E=E, nu=NU), supports=supports,
                     loads={"patch": lw.PointLoad("any", np.zeros(dim))}, plane=plane)
    sol = lw.solve(model)
    np.testing.assert_allclose(sol.displacement["patch"][interior], exact[interior], rtol=0, atol=1e-12)
    strain = 0.5 * (grad + grad.T)
    if dim == 2:
        voigt = np.array([strain[0, 0], strain[1, 1], 2 * strain[0, 1]])
    else:
        voigt = np.array([strain[0, 0], strain[1, 1], strain[2, 2], 2 * strain[0, 1],
                          2 * strain[1, 2], 2 * strain[2, 0]])
    stress = lw.Material(E=E, nu=NU).elasticity_matrix(dim, plane) @ voigt
    np.testing.assert_allclose(sol.stress["patch"], np.broadcast_to(stress, sol.stress["patch"].shape),
                               rtol=0, atol=1e-10)
    # compliance with prescribed motion = u^T K u = 2 * strain energy
    total_energy = sum(v.sum() for v in sol.strain_energy.values())
    assert sol.compliance["patch"] == pytest.approx(2 * total_energy, rel=1e-9)


@pytest.mark.parametrize("cell_type", ["quad", "triangle", "hexahedron", "tetra", "tetra10"])
def test_rigid_body_modes_give_no_energy_and_stiffness_is_symmetric(cell_type):
    shape = (2, 2) if cell_type in ("quad", "triangle") else (1, 1, 1)
    mesh = distorted(lw.structured_grid(shape, cell_type=cell_type), 0.0)
    D = lw.Material(E=E, nu=NU).elasticity_matrix(mesh.dim)
    Ke, det = element_stiffness(mesh.cell_type, mesh.points[mesh.cells], D)
    assert np.all(det > 0)
    np.testing.assert_allclose(Ke, Ke.transpose(0, 2, 1), atol=1e-12 * np.abs(Ke).max())
    n_rigid = 3 if mesh.dim == 2 else 6
    eig = np.linalg.eigvalsh(Ke[0])
    assert np.all(np.abs(eig[:n_rigid]) < 1e-10 * eig[-1])
    assert eig[n_rigid] > 1e-6 * eig[-1]          # no spurious zero-energy modes


def timoshenko_tip(P, L, h, b, E, nu):
    inertia = b * h ** 3 / 12
    G = E / (2 * (1 + nu))
    return P * L ** 3 / (3 * E * inertia) + P * L / (5 / 6 * G * b * h)


@pytest.mark.parametrize("cell_type,levels,final", [("quad", (1, 2, 4, 8), 0.01),
                                                    ("triangle", (2, 4, 8, 16), 0.015)])
def test_cantilever_tip_deflection_converges_to_beam_theory(cell_type, levels, final):
    """Plane-stress cantilever L/h = 10 (nu = 0): second-order convergence to Timoshenko."""
    L, h, P = 10.0, 1.0, 1.0
    exact = timoshenko_tip(P, L, h, 1.0, E, 0.0)
    errors = []
    for n in levels:
        mesh = lw.structured_grid((10 * n, n), size=(L, h), cell_type=cell_type)
        model = lw.Model(mesh, lw.Material(E=E, nu=0.0), supports={"xmin": "xy"},
                         loads={"tip": lw.Traction("xmax", (0.0, -P / h))})
        sol = lw.solve(model)
        tip = -sol.displacement["tip"][mesh.node_sets["xmax"], 1].mean()
        errors.append(abs(tip - exact) / exact)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    # linear elements: the deflection error falls ~4x per halving of h (second order)
    rates = [a / b for a, b in zip(errors, errors[1:])]
    assert min(rates[1:]) > 3.0, rates
    assert errors[-1] < final


def test_tet10_cantilever_close_to_converged_3d_solution():
    """The reference block (100x20x20 mm) with tet10: within 1 % of the hex20 40x8x8 result."""
    mesh = lw.structured_grid((10, 2, 2), size=(100.0, 20.0, 20.0), cell_type="tetra10")
    model = lw.Model(mesh, lw.Material(E=210000.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"tip": lw.Traction("xmax", (0, 0, -2.5))})
    sol = lw.solve(model)
    assert sol.compliance["tip"] / 1000.0 == pytest.approx(0.1210138, rel=0.01)


@pytest.mark.parametrize("cell_type", ["quad", "triangle", "hexahedron", "tetra", "tetra10"])
def test_uniform_pressure_gives_uniform_hydrostatic_stress(cell_type):
    shape = (3, 2) if cell_type in ("quad", "triangle") else (2, 2, 2)
    mesh = distorted(lw.structured_grid(shape, size=[1.0] * len(shape), cell_type=cell_type), 0.1)
    dim = mesh.dim
    mesh.add_face_set("skin", lambda p: np.ones(len(p), dtype=bool))
    # statically determinate supports at corners: 3-2-1 (3D) / 2-1 (2D)
    corner0 = np.flatnonzero(np.all(mesh.points == 0.0, axis=1))
    mesh.add_node_set("origin", corner0)
    x1 = np.flatnonzero(np.isclose(mesh.points[:, 0], 1) & np.all(mesh.points[:, 1:] == 0, axis=1))
    mesh.add_node_set("xaxis", x1)
    supports = {"origin": "xyz"[:dim], "xaxis": "yz"[:dim - 1]}
    if dim == 3:
        y1 = np.flatnonzero(np.isclose(mesh.points[:, 1], 1) & (mesh.points[:, 0] == 0) & (mesh.points[:, 2] == 0))
        mesh.add_node_set("yaxis", y1)
        supports["yaxis"] = "z"
    p = 2.0
    model = lw.Model(mesh, lw.Material(E=E, nu=NU), supports=supports, loads={"p": lw.Pressure("skin", p)},
                     plane="strain" if dim == 2 else "stress")
    sol = lw.solve(model)
    s = sol.stress["p"]
    expected = np.zeros(s.shape[1])
    expected[:dim] = -p
    np.testing.assert_allclose(s, np.broadcast_to(expected, s.shape), atol=1e-9 * p)
    for r in sol.reactions["p"].values():
        assert np.abs(r).max() < 1e-9 * p


def test_tet10_traction_splits_to_mid_edge_nodes():
    mesh = lw.structured_grid((1, 1, 1), size=(1.0, 2.0, 3.0), cell_type="tetra10")
    from lightweight.fem.loads import nodal_forces
    f = nodal_forces(mesh, lw.Traction("xmax", (0.0, 0.0, -1.0)))
    np.testing.assert_allclose(f.sum(axis=0), [0, 0, -6.0], rtol=1e-12)
    faces = mesh.face_sets["xmax"]
    assert np.allclose(f[np.unique(faces[:, :3]), 2], 0.0, atol=1e-14)   # corners get nothing
    assert np.all(f[np.unique(faces[:, 3:]), 2] < 0)


def test_self_weight_column_matches_bar_theory_and_reactions_balance():
    """A column under gravity, free to contract sideways: tip drop rho g L^2 / (2E)."""
    L, rho, g = 10.0, 7.85e-9, 9810.0
    mesh = lw.structured_grid((2, 2, 40), size=(1.0, 1.0, L))
    mesh.add_node_set("origin", [0])
    mesh.add_node_set("xedge", lambda p: (p[:, 1] == 0) & (p[:, 2] == 0) & (p[:, 0] == 1.0))
    model = lw.Model(mesh, lw.Material(E=210000.0, nu=0.0, density=rho),
                     supports={"zmin": "z", "origin": "xy", "xedge": "y"},
                     loads={"weight": lw.Gravity((0, 0, -g))})
    sol = lw.solve(model)
    tip = sol.displacement["weight"][mesh.node_sets["zmax"], 2].mean()
    assert tip == pytest.approx(-rho * g * L ** 2 / (2 * 210000.0), rel=1e-9)
    weight = rho * g * L
    # zmin holds every supported node (the others are subsets of it)
    np.testing.assert_allclose(sol.reactions["weight"]["zmin"], [0, 0, weight], rtol=0, atol=1e-9 * weight)
    assert sol.mass == pytest.approx(rho * L, rel=1e-12)


def test_reactions_balance_all_load_types_on_tets():
    mesh = lw.structured_grid((6, 2, 2), size=(60.0, 20.0, 20.0), cell_type="tetra")
    loads = [lw.PointLoad("xmax", (10.0, 0, 0)), lw.Traction("ymax", (0, -0.3, 0.1)),
             lw.Pressure("zmax", 0.05), lw.Gravity((0, 0, -9810.0)), lw.BodyForce((0.01, 0, 0))]
    model = lw.Model(mesh, lw.Material(E=210000.0, nu=0.3, density=7.85e-9),
                     supports={"xmin": "xyz"}, loads={"all": loads})
    sol = lw.solve(model)
    applied = model.system().load_vectors().reshape(-1, 3).sum(axis=0)
    expected = (np.array([10.0, 0, 0]) * mesh.node_sets["xmax"].size
                + np.array([0, -0.3, 0.1]) * 60 * 20 + np.array([0, 0, -0.05]) * 60 * 20
                + np.array([0, 0, -9810.0 * 7.85e-9 + 0]) * 60 * 20 * 20 + np.array([0.01, 0, 0]) * 24000)
    np.testing.assert_allclose(applied, expected, rtol=1e-12)
    np.testing.assert_allclose(sol.reactions["all"]["xmin"], -applied, rtol=0, atol=1e-9 * np.abs(applied).max())


@pytest.mark.parametrize("shape", [(12, 7), (6, 4, 3)])
def test_numba_refill_equals_scipy_coo_and_grid_fast_path(shape):
    mesh = lw.structured_grid(shape, size=[1.0 + i for i in range(len(shape))])
    model = lw.Model(mesh, lw.Material(E=3.0, nu=0.3), supports={"xmin": "xyz"[:mesh.dim]},
                     loads={"c": lw.PointLoad("xmax", np.ones(mesh.dim))})
    system = model.system()
    assert system.element_matrices.shape[0] == 1
    scale = np.random.default_rng(0).uniform(1e-3, 1, mesh.n_cells)
    K_fast = system.stiffness_matrix(scale)
    K_coo = coo_assembly(mesh.cells, mesh.n_nodes, mesh.dim, system.element_matrices, scale)
    assert abs(K_fast - K_coo).max() <= 1e-13 * abs(K_coo).max()
    # the general twin: per-cell element matrices on the same mesh without the grid flag
    general = lw.Mesh(mesh.points, mesh.cells, mesh.cell_type)
    Ke, _ = element_stiffness(general.cell_type, general.points[general.cells],
                              system.D)
    pattern = build_pattern(general.cells, general.n_nodes, general.dim)
    K_general = pattern.matrix(refill(pattern, Ke, scale))
    assert abs(K_fast - K_general).max() <= 1e-13 * abs(K_coo).max()


def test_several_load_cases_equal_separate_solves():
    mesh = lw.structured_grid((10, 4), size=(10.0, 4.0))
    loads = {"down": lw.Traction("xmax", (0, -1.0)), "pull": lw.Traction("xmax", (1.0, 0))}
    both = lw.solve(lw.Model(mesh, lw.Material(E=E, nu=NU), {"xmin": "xy"}, loads))
    for name, load in loads.items():
        single = lw.solve(lw.Model(mesh, lw.Material(E=E, nu=NU), {"xmin": "xy"}, {name: load}))
        np.testing.assert_allclose(both.displacement[name], single.displacement[name], rtol=1e-12, atol=1e-15)


def test_simp_density_scales_stiffness():
    mesh = lw.structured_grid((8, 4))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), {"xmin": "xy"}, {"c": lw.PointLoad("xmax", (0, -1))})
    solid = lw.solve(model)
    half = lw.solve(model, density=np.full(mesh.n_cells, 0.5), penalty=3.0, min_stiffness=0.0)
    assert half.compliance["c"] == pytest.approx(8 * solid.compliance["c"], rel=1e-10)
    assert half.volume == pytest.approx(0.5 * solid.volume)
