"""Modal analysis: consistent mass, lw.modes against CalculiX *FREQUENCY runs and beam theory."""

from __future__ import annotations

import meshio
import numpy as np
import pytest

import lightweight as lw
from lightweight.fem.mass import element_mass, mass_matrix, simplex_quadrature
from lightweight.fem.modal import modal_system, modes
from lightweight.fem.solvers import rigid_body_modes
from lightweight.mesh.mesh import Mesh

from ccx_reference import CELL_TYPES, DENSITY, E, NU, frequencies, read_deck

STEEL = lw.Material(E=E, nu=NU, density=DENSITY)


def _ccx_model(name: str) -> lw.Model:
    deck = read_deck(name)
    mesh = Mesh(deck["nodes"], deck["elements"], CELL_TYPES[deck["type"]])
    supports = {}
    if "FIXED" in deck["sets"]:
        mesh.add_node_set("fixed", deck["sets"]["FIXED"])
        supports = {"fixed": "xyz"}
    return lw.Model(mesh, STEEL, supports=supports, loads={})


@pytest.mark.parametrize("name, integration", [
    ("hex8_cantilever_modes_clamped", "exact"), ("hex8_cantilever_modes_free", "exact"),
    ("tet10_bracket_modes_clamped", "stiffness"), ("tet10_bracket_modes_free", "stiffness"),
    ("tet4_bracket_modes_clamped", "stiffness")])
def test_frequencies_equal_calculix(name, integration):
    """CalculiX integrates the mass with the stiffness points; hex8's 2x2x2 are exact anyway."""
    reference = frequencies(name)
    result = lw.modes(_ccx_model(name), n=len(reference), mass_integration=integration)
    elastic = reference > 1.0
    np.testing.assert_allclose(result.frequencies[elastic], reference[elastic], rtol=1e-5)
    if name.endswith("free"):
        assert elastic.sum() == len(reference) - 6
        assert np.all(result.frequencies[:6] < 1e-6 * result.frequencies[6])


def test_exact_tet10_mass_is_close_to_calculix_and_converges_from_below():
    """The exact mass is heavier in the high-order modes than ccx's 4-point one: lower frequencies."""
    name = "tet10_bracket_modes_clamped"
    reference = frequencies(name)
    exact = lw.modes(_ccx_model(name), n=len(reference)).frequencies
    assert np.all(np.abs(exact / reference - 1) < 1e-3)
    assert exact[0] == pytest.approx(reference[0], rel=1e-5)


def test_axial_bar_frequency_equals_the_rod_formula():
    """Fixed-free rod, nu = 0 (no lateral coupling): f1 = sqrt(E/rho) / (4 L)."""
    L = 200.0
    mesh = lw.structured_grid((40, 1, 1), size=(L, 10.0, 10.0))
    model = lw.Model(mesh, lw.Material(E=E, nu=0.0, density=DENSITY), supports={"xmin": "xyz"}, loads={})
    result = lw.modes(model, n=8)
    exact = np.sqrt(E / DENSITY) / (4 * L)
    axial = [f for f, shape in zip(result.frequencies, result.shapes)
             if np.abs(shape[:, 0]).max() > 10 * np.abs(shape[:, 1:]).max()]
    # linear elements with consistent mass: f_h / f = 1 + (pi h / 2L)^2 / 24 + ... above
    assert axial[0] == pytest.approx(exact, rel=2e-4)
    assert axial[0] > exact


def test_cantilever_bending_frequency_equals_euler_bernoulli():
    """Slender tet10 cantilever (L/h = 20): first bending frequency (1.8751^2 / 2 pi) sqrt(EI / rho A L^4)."""
    L, h = 200.0, 10.0
    mesh = lw.structured_grid((20, 1, 1), size=(L, h, h), cell_type="tetra10")
    model = lw.Model(mesh, STEEL, supports={"xmin": "xyz"}, loads={})
    result = lw.modes(model, n=2)
    inertia, area = h ** 4 / 12, h * h
    exact = 1.875104 ** 2 / (2 * np.pi) * np.sqrt(E * inertia / (DENSITY * area * L ** 4))
    # two bending modes (square section): measured +0.56 % and +0.66 % (one coarse tet10 through
    # the depth is stiff; shear and rotary inertia would lower the 3D value by a few tenths of a %)
    np.testing.assert_allclose(result.frequencies, exact, rtol=0.01)
    assert result.frequencies[1] == pytest.approx(result.frequencies[0], rel=5e-3)   # Kuhn split: not symmetric


@pytest.mark.parametrize("cell_type, dim", [("triangle", 2), ("quad", 2), ("tetra", 3), ("tetra10", 3),
                                            ("hexahedron", 3)])
def test_mass_matrix_sums_to_dim_times_the_total_mass(cell_type, dim):
    shape = (3, 2) if dim == 2 else (3, 2, 2)
    mesh = lw.structured_grid(shape, size=(3.0, 2.0, 1.5)[:dim], cell_type=cell_type)
    rng = np.random.default_rng(4)
    mesh = Mesh(mesh.points + rng.uniform(-0.05, 0.05, mesh.points.shape) * (mesh.points > 0) *
                (mesh.points < mesh.points.max(axis=0)), mesh.cells, cell_type)
    mesh.add_node_set("left", lambda p: p[:, 0] < 1e-9)
    model = lw.Model(mesh, STEEL, supports={"left": "xyz"[:dim]}, loads={}, thickness=2.5)
    system = modal_system(model)
    scale = rng.uniform(0.1, 1.0, mesh.n_cells)
    M = mass_matrix(system, scale)
    volumes = mesh.cell_volumes() * (2.5 if dim == 2 else 1.0)
    assert M.sum() == pytest.approx(dim * DENSITY * (volumes @ scale), rel=1e-12)
    # symmetric positive definite, each direction carries the mass once
    assert abs(M - M.T).max() <= 1e-15 * abs(M).max()
    x = np.zeros(M.shape[0])
    x[0::dim] = 1.0
    assert x @ M @ x == pytest.approx(DENSITY * (volumes @ scale), rel=1e-12)
    assert np.linalg.eigvalsh(M.toarray()).min() > 0


def test_simplex_rules_integrate_the_degrees_they_promise():
    from math import factorial
    for dim in (2, 3):
        for degree in (2, 4):
            points, weights = simplex_quadrature(dim, degree)
            for exps in np.ndindex(*(degree + 1,) * dim):
                if sum(exps) > degree:
                    continue
                exact = np.prod([factorial(e) for e in exps]) / factorial(sum(exps) + dim)
                assert weights @ np.prod(points ** np.array(exps), axis=1) == pytest.approx(exact, rel=1e-13)


def test_element_mass_of_a_unit_tet10_is_exact():
    """Reference tet10 (volume 1/6): corner rows -1/2520... the classic matrix times 6: sums and entries."""
    coords = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [.5, 0, 0], [.5, .5, 0], [0, .5, 0],
                       [0, 0, .5], [.5, 0, .5], [0, .5, .5]], dtype=float)[None]
    Me = element_mass("tetra10", coords, density=1.0)[0][0::3, 0::3]
    V = 1 / 6
    # integral of L_i(2L_i-1) squared = V/35 ... = 6V/420; corner-corner off-diagonal = V/420
    assert Me[0, 0] == pytest.approx(6 * V / 420, rel=1e-13)
    assert Me[0, 1] == pytest.approx(V / 420, rel=1e-13)
    assert Me[4, 4] == pytest.approx(32 * V / 420, rel=1e-13)
    assert Me.sum() == pytest.approx(V, rel=1e-13)


def test_shapes_are_mass_normalised_and_orthogonal():
    model = _ccx_model("tet10_bracket_modes_clamped")
    result = lw.modes(model, n=6)
    system = modal_system(model)
    M = mass_matrix(system)
    K = system.stiffness_matrix()
    Phi = result.shapes.reshape(6, -1).T
    np.testing.assert_allclose(Phi.T @ M @ Phi, np.eye(6), atol=1e-9)
    np.testing.assert_allclose(Phi.T @ K @ Phi, np.diag(result.eigenvalues), rtol=1e-8,
                               atol=1e-9 * result.eigenvalues.max())
    assert np.allclose(result.shapes[:, model.mesh.node_set("fixed")], 0.0)
    np.testing.assert_allclose(result.frequencies, np.sqrt(result.eigenvalues) / (2 * np.pi))


@pytest.mark.parametrize("dim", [2, 3])
def test_free_body_has_rigid_body_modes_first(dim):
    shape = (12, 4) if dim == 2 else (8, 3, 3)
    mesh = lw.structured_grid(shape, size=(120.0, 40.0, 30.0)[:dim])
    model = lw.Model(mesh, STEEL, supports={}, loads={})
    n_rigid = 3 if dim == 2 else 6
    result = lw.modes(model, n=n_rigid + 2)
    assert np.all(result.frequencies[:n_rigid] < 1e-6 * result.frequencies[n_rigid])
    assert result.frequencies[n_rigid] > 100.0
    # the near-zero shapes span exactly the rigid-body motions
    rigid = rigid_body_modes(mesh.points)
    span = result.shapes[:n_rigid].reshape(n_rigid, -1).T
    coeffs, *_ = np.linalg.lstsq(span, rigid, rcond=None)
    assert np.linalg.norm(span @ coeffs - rigid) <= 1e-6 * np.linalg.norm(rigid)
    # a static analysis of the same model still refuses it
    with pytest.raises(lw.LightweightError):
        lw.solve(model)


def test_lobpcg_equals_lanczos():
    mesh = lw.structured_grid((16, 4, 4), size=(160.0, 40.0, 40.0))
    for supports in ({"xmin": "xyz"}, {}):
        model = lw.Model(mesh, STEEL, supports=supports, loads={})
        a = lw.modes(model, n=8, method="lanczos")
        b = lw.modes(model, n=8, method="lobpcg")
        assert b.solver_info["method"] == "lobpcg"
        elastic = a.frequencies > 1.0
        np.testing.assert_allclose(b.frequencies[elastic], a.frequencies[elastic], rtol=1e-6)
        assert np.all(b.frequencies[~elastic] < 1e-3 * a.frequencies[elastic].min())


def test_density_scales_stiffness_by_simp_and_mass_linearly():
    mesh = lw.structured_grid((10, 2, 2), size=(100.0, 20.0, 20.0))
    model = lw.Model(mesh, STEEL, supports={"xmin": "xyz"}, loads={})
    solid = lw.modes(model, n=3)
    half = lw.modes(model, n=3, density=np.full(mesh.n_cells, 0.5))
    # E scale 1e-9 + 0.125 (1 - 1e-9), mass scale 0.5
    ratio = np.sqrt((1e-9 + 0.125 * (1 - 1e-9)) / 0.5)
    np.testing.assert_allclose(half.frequencies, solid.frequencies * ratio, rtol=1e-9)
    same = lw.modes(model, n=3, stiffness_scale=np.full(mesh.n_cells, 0.125 + 1e-9 * 0.875),
                    mass_scale=np.full(mesh.n_cells, 0.5))
    np.testing.assert_allclose(same.frequencies, half.frequencies, rtol=1e-9)


def test_model_without_loads_serves_modes_but_not_solve():
    mesh = lw.structured_grid((4, 2))
    model = lw.Model(mesh, STEEL, supports={"xmin": "xy"}, loads={})
    assert model.load_cases == []
    with pytest.raises(lw.BoundaryConditionError, match="no load case"):
        lw.solve(model)
    assert lw.modes(model, n=2).frequencies[0] > 0


def test_save_writes_each_shape(tmp_path):
    model = _ccx_model("hex8_cantilever_modes_clamped")
    result = lw.modes(model, n=3)
    result.save(tmp_path / "modes.vtu")
    raw = meshio.read(tmp_path / "modes.vtu")
    for k in range(3):
        np.testing.assert_allclose(raw.point_data[f"mode_{k + 1}"], result.shapes[k], rtol=1e-12)
    meta = lw.read_metadata(tmp_path / "modes.vtu")
    assert "frequencies" in meta["summary"]


def test_bad_input_names_what_is_wrong():
    mesh = lw.structured_grid((4, 2))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xy"}, loads={})
    with pytest.raises(lw.LightweightError, match="density"):
        lw.modes(model)
    model = lw.Model(mesh, STEEL, supports={"xmin": "xy"}, loads={})
    with pytest.raises(lw.LightweightError, match="free DOFs"):
        lw.modes(model, n=100)
    with pytest.raises(lw.LightweightError, match="stiffness_scale"):
        lw.modes(model, stiffness_scale=np.ones(3))
    with pytest.raises(lw.LightweightError, match="either density"):
        lw.modes(model, density=np.ones(8), mass_scale=np.ones(8))
    with pytest.raises(lw.LightweightError, match="method"):
        lw.modes(model, method="qr")
    assert modes is lw.modes


def test_readme_stress_and_modes_examples_run(tmp_path, monkeypatch, capsys):
    """The README's ```py examples of this section run as written and print what they promise."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Stresses and natural frequencies", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(blocks), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "70.92" in printed and "9479." in printed
    assert (tmp_path / "beam_stress.vtu").exists() and (tmp_path / "beam_modes.vtu").exists()


def test_plot_draws_a_mode_shape(tmp_path):
    pytest.importorskip("pyvista")
    mesh = lw.structured_grid((12, 3, 3), size=(120.0, 30.0, 30.0))
    result = lw.modes(lw.Model(mesh, STEEL, supports={"xmin": "xyz"}, loads={}), n=2)
    image = lw.plot(result, field="mode", mode=2, filename=tmp_path / "mode2.png", window_size=(320, 240))
    assert (tmp_path / "mode2.png").stat().st_size > 1000 and image.std() > 0
    result.save(tmp_path / "modes.vtu")
    lw.plot(tmp_path / "modes.vtu", field="mode", mode=1, filename=tmp_path / "mode1.png", window_size=(320, 240))
    with pytest.raises(lw.LightweightError, match="no mode 3"):
        lw.plot(result, field="mode", mode=3, filename=tmp_path / "x.png")


@pytest.mark.parametrize("shape", [(10, 2, 3), (12, 3)])   # no repeated eigenvalue
def test_element_mass_forms_sum_to_the_modal_mass_and_give_eigenvalue_sensitivities(shape):
    """sum_e m_e phi_e^T M_e phi_e = 1; d(lambda)/d(s_e) = phi_e^T (K_e - lambda M_e) phi_e vs FD."""
    from lightweight.fem.mass import element_mass_forms
    dim = len(shape)
    mesh = lw.structured_grid(shape, size=[10.0 * n for n in shape])
    model = lw.Model(mesh, STEEL, supports={"xmin": "xyz"[:dim]}, loads={})
    rng = np.random.default_rng(5)
    k_scale, m_scale = rng.uniform(0.5, 1.0, mesh.n_cells), rng.uniform(0.5, 1.0, mesh.n_cells)
    result = lw.modes(model, n=1, stiffness_scale=k_scale, mass_scale=m_scale)
    phi = result.shapes.reshape(1, -1)
    system = modal_system(model)
    mass_forms = element_mass_forms(system, phi)[0]
    assert mass_forms @ m_scale == pytest.approx(1.0, rel=1e-10)
    stiff_forms = system.element_energies(phi)[0]
    lam = result.eigenvalues[0]
    cell = int(np.argmax(stiff_forms))
    h = 1e-3     # central differences: O(h^2) truncation; smaller h drowns in eigsolver round-off
    plus, minus = k_scale.copy(), k_scale.copy()
    plus[cell] += h
    minus[cell] -= h
    fd = (lw.modes(model, n=1, stiffness_scale=plus, mass_scale=m_scale).eigenvalues[0]
          - lw.modes(model, n=1, stiffness_scale=minus, mass_scale=m_scale).eigenvalues[0]) / (2 * h)
    assert stiff_forms[cell] == pytest.approx(fd, rel=1e-5)
    plus, minus = m_scale.copy(), m_scale.copy()
    plus[cell] += h
    minus[cell] -= h
    fd = (lw.modes(model, n=1, stiffness_scale=k_scale, mass_scale=plus).eigenvalues[0]
          - lw.modes(model, n=1, stiffness_scale=k_scale, mass_scale=minus).eigenvalues[0]) / (2 * h)
    assert -lam * mass_forms[cell] == pytest.approx(fd, rel=1e-5)
