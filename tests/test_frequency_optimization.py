"""Frequency-constrained optimization: the Frequency response's gradient against central differences
on every element type and both low-density laws, a double eigenvalue (a square column) where
only the aggregate is differentiable, the presets (min_frequency, maximize_frequency), and a
frequency-constrained design that keeps its first frequency as a thresholded solid part."""

from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import OptimizationError
from lightweight.fem.interpolation import Interpolation
from lightweight.optimize.analysis import Analysis
from lightweight.optimize.checks import check_response
from lightweight.optimize.responses.frequency import Frequency, frequency_figures, modal_interpolation

ROOT = Path(__file__).parent.parent
STEEL = dict(E=210e3, nu=0.3, density=7.85e-9)      # MPa, t/mm^3: frequencies in Hz


def distorted(mesh, amount, seed=0):
    rng = np.random.default_rng(seed)
    pts = mesh.points.copy()
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    interior = np.all((pts > lo + 1e-9) & (pts < hi - 1e-9), axis=1)
    pts[interior] += rng.uniform(-amount, amount, (int(interior.sum()), pts.shape[1]))
    return lw.Mesh(pts, mesh.cells, mesh.cell_type, node_sets=dict(mesh.node_sets),
                   face_sets=dict(mesh.face_sets), cell_sets=dict(mesh.cell_sets))


def model_for(cell_type):
    if cell_type in ("quad", "triangle"):
        mesh = lw.structured_grid((8, 4), size=(80.0, 40.0), cell_type=None if cell_type == "quad" else cell_type)
        if cell_type == "triangle":
            mesh = distorted(mesh, 2.0)
        return lw.Model(mesh, lw.Material(**STEEL), supports={"xmin": "xy"},
                        loads={"down": [lw.PointLoad("xmax", (0.0, -1.0))], "pull": [lw.PointLoad("xmax", (1.0, 0.0))]})
    mesh = lw.structured_grid((4, 2, 2), size=(80.0, 40.0, 30.0),
                              cell_type=None if cell_type == "hexahedron" else cell_type)
    if cell_type == "tetra":
        mesh = distorted(mesh, 3.0)
    return lw.Model(mesh, lw.Material(**STEEL), supports={"xmin": "xyz"}, loads={})


@pytest.mark.parametrize("cell_type", ["quad", "triangle", "hexahedron", "tetra", "tetra10"])
def test_frequency_gradient_every_element(cell_type):
    model = model_for(cell_type)
    assert check_response(Frequency(model, mode=1), model, step=1e-5) < 1e-5
    assert check_response(Frequency(model, n_modes=3, mass_law="du_olhoff"), model, step=1e-5) < 1e-5


def test_frequency_gradient_in_the_low_density_branch_of_both_laws():
    model = model_for("quad")
    rho = np.random.default_rng(3).uniform(0.02, 0.09, model.mesh.n_cells)      # all below 0.1
    for law in ("pedersen", "du_olhoff"):
        assert check_response(Frequency(model, n_modes=2, mass_law=law), model, rho=rho, step=1e-7) < 1e-5


def test_frequency_gradient_on_a_gmsh_tet10_mesh():
    mesh = lw.read_mesh(ROOT / "meshes" / "bracket_tet10.msh")
    model = lw.Model(mesh, lw.Material(**STEEL), supports={"bolt_holes": "xyz"},
                     loads={"down": [lw.Traction("load_face", (0.0, 0.0, -1.0))],
                            "side": [lw.Traction("load_face", (0.0, 1.0, 0.0))]})
    assert check_response(Frequency(model, n_modes=2), model, n_checks=3, step=1e-3) < 1e-5


def test_interpolations_stop_void_modes_and_keep_solid_material():
    law = Interpolation("simp", 3.0, 1e-9)
    rho = np.array([0.0, 0.05, 0.1, 0.5, 1.0])
    k, dk, m, dm = modal_interpolation(rho, law, "pedersen")
    np.testing.assert_allclose(k[2:], law.stiffness(rho[2:]))
    np.testing.assert_allclose(m, rho)
    assert k[1] / m[1] == pytest.approx(k[2] / m[2], rel=1e-6)      # stiffness/mass bounded below 0.1
    k, dk, m, dm = modal_interpolation(rho, law, "du_olhoff")
    np.testing.assert_allclose(k, law.stiffness(rho))
    assert m[2] == pytest.approx(0.1) and m[1] == pytest.approx(1e5 * 0.05 ** 6)
    with pytest.raises(OptimizationError, match="mass_law"):
        Frequency(model_for("quad"), mass_law="lumped")
    with pytest.raises(OptimizationError, match="not both"):
        Frequency(model_for("quad"), mode=1, n_modes=2)


def square_column():
    """A clamped column of square section: its two first bending modes have one frequency."""
    mesh = lw.structured_grid((2, 2, 8), size=(20.0, 20.0, 160.0))
    return lw.Model(mesh, lw.Material(**STEEL), supports={"zmin": "xyz"}, loads={})


def test_double_eigenvalue_aggregate_is_differentiable_where_the_first_mode_is_not():
    model = square_column()
    n = model.mesh.n_cells
    rho = np.full(n, 0.6)
    analysis = Analysis(model, Interpolation("simp", 3.0, 1e-3), solver="direct")
    lam = Frequency(model, n_modes=4).eigenvalue_gradients(analysis.state(rho))[0]
    assert lam[1] == pytest.approx(lam[0], rel=1e-8) and lam[2] > 1.5 * lam[0]     # a double pair
    # one cell at a side face: raising / lowering it splits the pair in opposite orders, so
    # the first frequency has different one-sided slopes ...
    cell = int(np.argmin(np.linalg.norm(model.mesh.cell_centers() - [5.0, 10.0, 10.0], axis=1)))
    single = Frequency(model, mode=1)
    h = 1e-4

    def value(response, delta):
        r = rho.copy()
        r[cell] += delta
        return response.evaluate(analysis.state(r))[0][0]

    f0 = value(single, 0.0)
    right, left = (value(single, h) - f0) / h, (f0 - value(single, -h)) / h
    assert abs(right - left) > 0.1 * max(abs(right), abs(left))
    # ... while the KS aggregate of the pair (and the next modes) has one gradient, which the
    # central difference confirms at the symmetric design
    aggregate = Frequency(model, n_modes=4)
    assert check_response(aggregate, model, rho=rho, interpolation=Interpolation("simp", 3.0, 1e-3),
                          step=1e-5, n_checks=6) < 1e-5
    grad = aggregate.evaluate(analysis.state(rho))[1][0, cell]
    central = (value(aggregate, h) - value(aggregate, -h)) / (2 * h)
    assert grad == pytest.approx(central, rel=1e-4)


def test_maximize_frequency_raises_the_first_frequency_at_its_volume():
    mesh = lw.structured_grid((30, 8), size=(150.0, 40.0))
    model = lw.Model(mesh, lw.Material(**STEEL), supports={"xmin": "xy", "xmax": "xy"}, loads={})
    res = lw.maximize_frequency(model, volume_fraction=0.5, filter_radius=8.0, max_iterations=40, verbose=False)
    assert res.volume_fraction <= 0.5 + 1e-3
    uniform = frequency_figures(model, np.full(mesh.n_cells, 0.5), n=1)["frequency_1"]
    final = frequency_figures(model, res.density, n=1, law=Interpolation("simp", 3.0, 1e-9))["frequency_1"]
    assert final > 1.5 * uniform
    assert res.solution is None and res.compliance == {}


def threshold_part(model, density, level=0.5):
    """The cells with ρ̄ >= level as a solid part of their own (unused nodes dropped)."""
    keep = density >= level
    cells = model.mesh.cells[keep]
    used = np.unique(cells)
    renumber = np.full(model.mesh.n_nodes, -1)
    renumber[used] = np.arange(used.size)
    mesh = lw.Mesh(model.mesh.points[used], renumber[cells], model.mesh.cell_type)
    clamp = np.flatnonzero(np.isin(used, model.mesh.node_sets["xmin"]))
    mesh.add_node_set("xmin", clamp)
    return lw.Model(mesh, model.material, supports={"xmin": "xy"}, loads={}, thickness=model.thickness)


def test_frequency_constrained_min_mass_keeps_its_frequency_as_a_solid_part():
    """A frequency floor on a min-mass cantilever; the projected design, thresholded at 0.5 and
    analysed as a part made of its solid cells only (the same cells: re-meshing with Gmsh would
    only smooth the staircase boundary, and lw.export_solid is for 3D parts), keeps its first
    frequency within 3 %."""
    mesh = lw.structured_grid((48, 16), size=(120.0, 40.0))
    mesh.add_node_set("tip", lambda p: np.isclose(p[:, 0], 120.0) & (np.abs(p[:, 1] - 20.0) <= 2.6))
    model = lw.Model(mesh, lw.Material(**STEEL), supports={"xmin": "xy"},
                     loads={"tip": [lw.PointLoad("tip", (0.0, -100.0))]}, thickness=5.0)
    solid_f1 = lw.modes(model, n=1).frequencies[0]
    floor = 1.05 * solid_f1
    res = lw.minimize_mass(model, max_compliance_factor=2.0, min_frequency=floor, filter_radius=5.0,
                           projection={"beta": 1.0, "beta_max": 16.0}, continuation_interval=20,
                           max_iterations=160, verbose=False)
    design_f1 = res.history[-1]["frequency[lowest 3]"]
    assert design_f1 >= floor * 0.99
    part = threshold_part(model, res.density)
    part_f1 = lw.modes(part, n=1).frequencies[0]
    assert part_f1 == pytest.approx(design_f1, rel=0.03)
    assert res.volume_fraction < 0.8


CASE = """
[mesh]
grid = [12, 4]
size = [120.0, 40.0]

[material]
E = 210000.0
nu = 0.3
density = 7.85e-9

[model]
thickness = 5.0

[supports]
xmin = "xy"

[[loads.tip]]
type = "point"
set = "xmax"
value = [0.0, -1.0]

[requirements]
min_frequency = FLOOR

[optimize]
problem = "min_mass"
max_compliance_factor = 2.0
min_frequency = 500.0
filter_radius = 15.0
"""


def test_case_file_min_frequency_is_read_and_judged_by_evaluate(tmp_path):
    grid = lw.structured_grid((12, 4), size=(120.0, 40.0))
    model = lw.Model(grid, lw.Material(**STEEL), supports={"xmin": "xy"}, loads={}, thickness=5.0)
    solid = lw.modes(model, n=3).frequencies
    for floor, verdict in ((0.9 * solid[0], True), (1.1 * solid[0], False)):
        path = tmp_path / f"case_{verdict}.toml"
        path.write_text(CASE.replace("FLOOR", repr(float(floor))))
        case = lw.read_case(path)
        assert case.optimize["min_frequency"] == 500.0 and case.requirements["min_frequency"] == floor
        design = tmp_path / "solid.vtu"
        lw.write_mesh(design, grid)
        row = lw.evaluate_design(str(path), str(design))
        assert row["status"] == "ok", row.get("error")
        np.testing.assert_allclose([row[f"frequency_{i}"] for i in (1, 2, 3)], solid, rtol=1e-9)
        assert row["check.min_frequency"] is verdict and row["pass"] is verdict
    bad = tmp_path / "bad.toml"
    bad.write_text(CASE.replace("FLOOR", "-3.0"))
    with pytest.raises(lw.CaseFileError, match="requirements.min_frequency"):
        lw.read_case(bad)
