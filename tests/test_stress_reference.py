"""Integration-point and nodal stresses against CalculiX 2.20 on its own runs (tests/data/ccx).

Every element type: tet4 (C3D4), tet10 (C3D10), hex8 (C3D8, full integration; a regular and a
distorted mesh), quad4 plane stress and plane strain and tri3 plane stress (one layer of C3D8 /
C3D6 with u_z = 0, which is exact 2D; README.md in tests/data/ccx), and ccx's own CPE4. Integration points are
matched by their coordinates (ccx prints them), so no point-order convention is assumed.
"""

from __future__ import annotations

import meshio
import numpy as np
import pytest

import lightweight as lw
from lightweight.fem import stress as fs
from lightweight.mesh.cell_types import quadrature, shape_functions

from ccx_reference import integration_point_stresses, nodal_stresses, static_model

CASES = ["tet4_bracket", "tet10_bracket", "hex8_cantilever", "hex8_distorted",
         "quad4_plane_stress", "quad4_plane_strain", "quad4_cpe4_plane_strain", "tri3_plane_stress"]


def _ours_at_ccx_points(model, sol, name):
    """Our point stresses in the row order of ccx's table, and ccx's, (k, n_voigt) each."""
    mesh = model.mesh
    elements, coords, theirs = integration_point_stresses(name, mesh.dim)
    if mesh.dim == 2:   # ccx's brick/wedge layer has two equal rows of points through it: keep one
        keep = coords[:, 2] < np.median(coords[:, 2])
        elements, coords, theirs = elements[keep], coords[keep], theirs[keep]
    xi, _ = quadrature(mesh.cell_type)
    N, _ = shape_functions(mesh.cell_type, xi)
    ours_xyz = np.einsum("qa,ead->eqd", N, mesh.points[mesh.cells])           # (e, q, dim)
    distance = np.linalg.norm(ours_xyz[elements] - coords[:, None, :mesh.dim], axis=2)
    point = distance.argmin(axis=1)
    assert distance[np.arange(len(point)), point].max() < 1e-5 * np.abs(mesh.points).max()
    ours = sol.integration_point_stresses("ccx")[elements, point]
    return ours, theirs


@pytest.mark.parametrize("name", CASES)
def test_integration_point_stresses_equal_calculix(name):
    model, _ = static_model(name)
    sol = lw.solve(model, solver="direct")
    ours, theirs = _ours_at_ccx_points(model, sol, name)
    peak = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * peak
    vm_theirs = fs.von_mises(theirs, model.dim, model.plane, model.material.nu)
    assert sol.max_von_mises["ccx"] == pytest.approx(vm_theirs.max(), rel=1e-4)
    # every point of every cell is in the ccx table: the per-cell maximum is over all of them
    n_points = fs.n_integration_points(model.mesh.cell_type)
    assert len(theirs) == model.mesh.n_cells * n_points


@pytest.mark.parametrize("name", CASES)
def test_nodal_stresses_equal_calculix(name):
    model, _ = static_model(name)
    sol = lw.solve(model, solver="direct")
    nodes, theirs = nodal_stresses(name, model.dim)
    inside = nodes < model.mesh.n_nodes          # the z = 0 layer of the 2D decks
    nodes, theirs = nodes[inside], theirs[inside]
    ours = sol.stress_nodal["ccx"][nodes]
    # the .frd holds 6 significant digits
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    vm = fs.von_mises(theirs, model.dim, model.plane, model.material.nu)
    assert sol.von_mises_nodal["ccx"][nodes].max() == pytest.approx(vm.max(), rel=1e-4)


def test_hex8_cantilever_peak_is_at_the_integration_points_not_the_centres():
    """The issue's numbers: cell centres give 50.0 MPa, CalculiX's integration points 59.6."""
    model, _ = static_model("hex8_cantilever")
    sol = lw.solve(model, solver="direct")
    assert sol.max_von_mises["ccx"] == pytest.approx(59.603, abs=0.001)
    centre = fs.von_mises(sol.stress["ccx"], 3).max()       # mean of the points = centre value here
    assert centre == pytest.approx(50.016, abs=0.001)


def test_grid_fast_path_equals_the_general_path_and_calculix():
    general, _ = static_model("hex8_cantilever")
    grid = lw.structured_grid((20, 4, 4), size=(100.0, 20.0, 20.0))
    assert np.array_equal(grid.cells, general.mesh.cells) and np.allclose(grid.points, general.mesh.points)
    grid.add_node_set("fixed", general.mesh.node_set("fixed"))
    grid.add_node_set("load", general.mesh.node_set("load"))
    model = lw.Model(grid, general.material, supports={"fixed": "xyz"},
                     loads=general.loads, plane="stress")
    assert model.system().is_grid
    scale = np.random.default_rng(3).uniform(0.2, 1.0, grid.n_cells)
    a = lw.solve(model, density=scale ** (1 / 3), solver="direct")
    b = lw.solve(general, density=scale ** (1 / 3), solver="direct")
    for case in a.von_mises:
        np.testing.assert_allclose(a.integration_point_stresses(case), b.integration_point_stresses(case),
                                   rtol=1e-10, atol=1e-10 * np.abs(b.integration_point_stresses(case)).max())
        np.testing.assert_allclose(a.stress_nodal[case], b.stress_nodal[case], rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(a.von_mises[case], b.von_mises[case], rtol=1e-10)


@pytest.mark.parametrize("name", ["tet10_bracket", "quad4_plane_strain", "hex8_cantilever"])
def test_stress_operators_give_the_point_stresses(name):
    model, _ = static_model(name)
    system = model.system()
    sol = lw.solve(model, solver="direct")
    u = sol.displacement["ccx"].reshape(-1)
    ops = fs.stress_operators(model)
    assert ops.shape[1:] == (fs.n_integration_points(model.mesh.cell_type), system.D.shape[0],
                             system.cell_dofs.shape[1])
    assert ops.shape[0] == (1 if system.is_grid else model.mesh.n_cells)
    u_e = u[system.cell_dofs]                                            # (e, n_dof_e)
    direct = np.einsum("eqvj,ej->eqv", np.broadcast_to(ops, (model.mesh.n_cells,) + ops.shape[1:]), u_e)
    np.testing.assert_allclose(direct, sol.integration_point_stresses("ccx"), rtol=1e-12,
                               atol=1e-12 * np.abs(direct).max())


@pytest.mark.parametrize("dim, plane", [(3, "stress"), (2, "stress"), (2, "strain")])
def test_von_mises_gradient_equals_finite_differences(dim, plane):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 3 if dim == 2 else 6)) * 100
    g = fs.von_mises_gradient(s, dim, plane, 0.3)
    h = 1e-5
    for v in range(s.shape[1]):
        step = np.zeros(s.shape[1])
        step[v] = h
        fd = (fs.von_mises(s + step, dim, plane, 0.3) - fs.von_mises(s - step, dim, plane, 0.3)) / (2 * h)
        np.testing.assert_allclose(g[:, v], fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("cell_type", ["triangle", "quad", "tetra", "tetra10", "hexahedron"])
def test_extrapolation_reproduces_fields_the_points_determine(cell_type):
    """A constant is kept everywhere; quad/hex reproduce (bi/tri)linear, tet10 linear fields."""
    E = fs.extrapolation_matrix(cell_type)
    np.testing.assert_allclose(E.sum(axis=1), 1.0, rtol=1e-13)
    if cell_type in ("quad", "hexahedron", "tetra10"):
        xi, _ = quadrature(cell_type)
        nodes_xi = {"quad": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]),
                    "hexahedron": np.array([[x, y, z] for z in (-1, 1) for y, x in
                                            ((-1, -1), (-1, 1), (1, 1), (1, -1))]),
                    "tetra10": np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [.5, 0, 0],
                                         [.5, .5, 0], [0, .5, 0], [0, 0, .5], [.5, 0, .5], [0, .5, .5]])}[cell_type]
        field = lambda p: 1.5 + p @ np.arange(1.0, p.shape[1] + 1)          # noqa: E731  linear
        np.testing.assert_allclose(E @ field(xi), field(nodes_xi.astype(float)), rtol=1e-12)


def test_principal_stresses_and_save(tmp_path):
    model, _ = static_model("quad4_plane_stress")
    sol = lw.solve(model, solver="direct")
    principal = sol.principal_stresses("ccx")
    assert principal.shape == (model.mesh.n_nodes, 3)
    assert np.all(np.diff(principal, axis=1) <= 1e-12)
    # the invariants of the nodal tensor: trace and von Mises from the principal values
    s = sol.stress_nodal["ccx"]
    np.testing.assert_allclose(principal.sum(axis=1), s[:, 0] + s[:, 1], atol=1e-9 * np.abs(s).max())
    p1, p2, p3 = principal.T
    vm = np.sqrt(0.5 * ((p1 - p2) ** 2 + (p2 - p3) ** 2 + (p3 - p1) ** 2))
    np.testing.assert_allclose(vm, sol.von_mises_nodal["ccx"], rtol=1e-9, atol=1e-9 * vm.max())
    np.testing.assert_allclose(fs.principal_stresses(np.array([[7.0, 0, 0]]), 2), [[7.0, 0, 0]])
    sol.save(tmp_path / "s.vtu")
    raw = meshio.read(tmp_path / "s.vtu")
    np.testing.assert_allclose(raw.point_data["principal_stress:ccx"], principal, rtol=1e-12)
    np.testing.assert_allclose(raw.point_data["stress_nodal:ccx"], s, rtol=1e-12)
    np.testing.assert_allclose(raw.cell_data["von_mises:ccx"][0], sol.von_mises["ccx"], rtol=1e-12)


def test_simp_stress_is_the_solid_stress_times_the_stiffness_multiplier():
    model, _ = static_model("tet4_bracket")
    rho = np.random.default_rng(0).uniform(0.3, 1.0, model.mesh.n_cells)
    sol = lw.solve(model, density=rho, solver="direct")
    solid = fs.integration_point_stresses(model, sol.displacement["ccx"].reshape(1, -1))[0]
    scale = lw.fem.simp_scale(rho)
    np.testing.assert_allclose(sol.integration_point_stresses("ccx"), solid * scale[:, None, None],
                               rtol=1e-12, atol=1e-12 * np.abs(solid).max())
    np.testing.assert_allclose(sol.von_mises["ccx"],
                               fs.von_mises(solid, 3).max(axis=1) * scale, rtol=1e-12)


def test_bad_input_names_what_is_wrong():
    model, _ = static_model("tri3_plane_stress")
    sol = lw.solve(model, solver="direct")
    with pytest.raises(lw.LightweightError, match="unknown load case 'nope'"):
        sol.integration_point_stresses("nope")
    with pytest.raises(ValueError, match="DOFs per case"):
        fs.integration_point_stresses(model, np.zeros(7))
    with pytest.raises(KeyError, match="no stress extrapolation"):
        fs.extrapolation_matrix("line")


@pytest.mark.parametrize("shape, cell_type", [((6, 4, 3), None), ((7, 5), None), ((3, 2, 2), "tetra10")])
def test_blockwise_stress_results_equal_one_block(shape, cell_type, monkeypatch):
    """stress_results works through blocks of cells (grid: whole z/y layers); blocks change nothing."""
    mesh = lw.structured_grid(shape, cell_type=cell_type)
    dim = len(shape)
    load = np.zeros(dim)
    load[-1] = -1.0
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"[:dim]},
                     loads={"a": lw.PointLoad("xmax", load)})
    rng = np.random.default_rng(0)
    U = rng.normal(size=(2, mesh.n_nodes * dim))
    scale = rng.uniform(0.1, 1.0, mesh.n_cells)
    whole = fs.stress_results(model, U, scale)
    monkeypatch.setattr(fs, "STRESS_BLOCK_CELLS", 7)
    assert len(fs._cell_blocks(model.system())) > 2
    blocks = fs.stress_results(model, U, scale)
    for key in whole:
        np.testing.assert_allclose(blocks[key], whole[key], rtol=1e-13, atol=1e-13)
