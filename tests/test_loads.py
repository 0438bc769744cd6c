"""Loads beyond per-node and per-area: total force on a face (Force), RBE3-like couplings
(Coupling) and bushings (Spring): resultants, equilibrium with the reactions, analytic bars."""

import numpy as np
import pytest

import lightweight as lw
from lightweight.fem.loads import coupling_forces, nodal_forces

E = 1000.0


def _distorted_tets(shape=(4, 2, 2), size=(4.0, 1.0, 1.0), cell_type="tetra", seed=3):
    mesh = lw.structured_grid(shape, size=size, cell_type=cell_type)
    rng = np.random.default_rng(seed)
    lo, hi = mesh.bounding_box()
    pts = mesh.points.copy()
    interior = np.all((pts > lo + 1e-9) & (pts < hi - 1e-9), axis=1)
    pts[interior] += 0.1 * rng.uniform(-1, 1, size=(interior.sum(), 3))
    if cell_type == "tetra10":
        edges = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
        pts[mesh.cells[:, 4:]] = pts[mesh.cells[:, edges]].mean(axis=2)
    return lw.Mesh(pts, mesh.cells, mesh.cell_type, node_sets=dict(mesh.node_sets),
                   face_sets=dict(mesh.face_sets))


@pytest.mark.parametrize("cell_type", ["tetra", "tetra10", "hexahedron"])
def test_force_total_is_the_resultant_and_the_reactions_balance_it(cell_type):
    mesh = _distorted_tets(cell_type=cell_type) if cell_type != "hexahedron" else \
        lw.structured_grid((4, 2, 2), size=(4.0, 1.0, 1.0))
    total = np.array([3.0, -7.0, 2.0])
    forces = nodal_forces(mesh, lw.Force("xmax", total))
    np.testing.assert_allclose(forces.sum(axis=0), total, rtol=1e-12)
    assert np.all(forces[np.setdiff1d(np.arange(mesh.n_nodes), mesh.node_set("xmax"))] == 0)
    model = lw.Model(mesh, lw.Material(E=E, nu=0.3), supports={"xmin": "xyz"},
                     loads={"pull": [lw.Force("xmax", total)]})
    sol = lw.solve(model)
    np.testing.assert_allclose(sol.reactions["pull"]["xmin"], -total, atol=1e-9 * np.abs(total).max())


def test_force_equals_the_traction_of_total_over_area_in_2d():
    mesh = lw.structured_grid((6, 3), size=(6.0, 2.0))
    thickness = 0.5
    f_total = nodal_forces(mesh, lw.Force("xmax", (0.0, -4.0)), thickness)
    f_traction = nodal_forces(mesh, lw.Traction("xmax", (0.0, -4.0 / (2.0 * thickness))), thickness)
    np.testing.assert_allclose(f_total, f_traction, rtol=1e-12)


def test_force_on_a_node_set_names_the_set():
    mesh = lw.structured_grid((2, 2, 2))
    mesh.add_node_set("corner", [0])
    with pytest.raises(lw.UnknownSetError, match="corner"):
        lw.Model(mesh, lw.Material(E=E, nu=0.3), supports={"xmin": "xyz"},
                 loads={"c": [lw.Force("corner", (1.0, 0.0, 0.0))]})


def _moment_about(points, forces, point):
    return np.cross(points - point, forces).sum(axis=0)


@pytest.mark.parametrize("weights", ["area", "equal"])
def test_coupling_distributes_force_and_moment_exactly(weights):
    mesh = _distorted_tets(cell_type="tetra")
    point = np.array([5.0, 0.3, 0.7])                 # off the face: the force makes a moment too
    force = np.array([1.0, -2.0, 0.5])
    moment = np.array([0.3, 0.4, -1.1])
    load = lw.Coupling("xmax", point, force=force, moment=moment, weights=weights)
    nodes, node_forces = coupling_forces(mesh, load)
    np.testing.assert_allclose(node_forces.sum(axis=0), force, rtol=1e-12)
    np.testing.assert_allclose(_moment_about(mesh.points[nodes], node_forces, point), moment, atol=1e-12)
    # the solve is in equilibrium: reactions and the coupled load balance forces and moments
    model = lw.Model(mesh, lw.Material(E=E, nu=0.3), supports={"xmin": "xyz"}, loads={"arm": [load]})
    sol = lw.solve(model)
    system = model.system()
    state = system.analyse()
    residual = (state.internal_forces() - state.F)[0].reshape(-1, 3)     # reaction at every node
    support = mesh.node_set("xmin")
    np.testing.assert_allclose(residual[support].sum(axis=0), -force, atol=1e-9)
    np.testing.assert_allclose(_moment_about(mesh.points[support], residual[support], point), -moment,
                               atol=1e-9)
    assert sol.compliance["arm"] > 0


def test_coupling_in_2d_carries_a_scalar_moment():
    mesh = lw.structured_grid((6, 3), size=(6.0, 2.0))
    point = np.array([7.0, 1.0])
    load = lw.Coupling("xmax", point, force=(0.0, -1.0), moment=2.5)
    nodes, f = coupling_forces(mesh, load)
    r = mesh.points[nodes] - point
    np.testing.assert_allclose(f.sum(axis=0), (0.0, -1.0), atol=1e-12)
    assert np.isclose((r[:, 0] * f[:, 1] - r[:, 1] * f[:, 0]).sum(), 2.5)


def test_coupling_adds_no_stiffness():
    """A coupling is a load, not an element: K is the same with and without it."""
    mesh = lw.structured_grid((3, 2, 2))
    material = lw.Material(E=E, nu=0.3)
    plain = lw.Model(mesh, material, {"xmin": "xyz"}, {"a": [lw.PointLoad("xmax", (0, 0, -1.0))]})
    coupled = lw.Model(mesh, material, {"xmin": "xyz"},
                       {"a": [lw.Coupling("xmax", (4.0, 0.5, 0.5), force=(0, 0, -1.0), moment=(1, 0, 0))]})
    assert (plain.system().stiffness_matrix() != coupled.system().stiffness_matrix()).nnz == 0


def test_coupling_to_collinear_nodes_cannot_carry_a_moment_about_their_line():
    mesh = lw.structured_grid((2, 2, 2))
    mesh.add_node_set("edge", lambda p: (p[:, 1] == 0) & (p[:, 2] == 0))
    load = lw.Coupling("edge", (1.0, 0.0, 0.0), force=(0, 0, 0), moment=(1.0, 0.0, 0.0))
    with pytest.raises(lw.BoundaryConditionError, match="'edge'.*line"):
        coupling_forces(mesh, load)


def test_spring_bar_matches_series_springs():
    """A bar held only by a bushing: tip displacement = F/k + F L/(E A) (nu = 0: uniaxial, exact)."""
    length, area, k, force = 4.0, 1.0, 50.0, 2.0
    mesh = lw.structured_grid((4, 1, 1), size=(length, 1.0, 1.0))
    model = lw.Model(mesh, lw.Material(E=E, nu=0.0), supports={"xmin": lw.Spring("xmin", (k, k, k))},
                     loads={"pull": [lw.Force("xmax", (force, 0.0, 0.0))]})
    sol = lw.solve(model)
    u = sol.displacement["pull"]
    np.testing.assert_allclose(u[mesh.node_set("xmin"), 0], force / k, rtol=1e-10)
    np.testing.assert_allclose(u[mesh.node_set("xmax"), 0], force / k + force * length / (E * area), rtol=1e-10)
    # compliance includes the spring's energy: f.u
    assert np.isclose(sol.compliance["pull"], force * (force / k + force * length / (E * area)))


def test_springs_do_not_survive_refill_twice_and_stop_multigrid():
    mesh = lw.structured_grid((4, 1, 1), size=(4.0, 1.0, 1.0))
    model = lw.Model(mesh, lw.Material(E=E, nu=0.3), supports={"xmin": lw.Spring("xmin", (10.0, 20.0, 30.0))},
                     loads={"pull": [lw.Force("xmax", (1.0, 0.0, 0.0))]})
    system = model.system()
    k1 = system.stiffness_matrix().diagonal()
    k2 = system.stiffness_matrix().diagonal()          # refilled: springs added once, not twice
    np.testing.assert_allclose(k1, k2)
    no_spring = lw.Model(mesh, lw.Material(E=E, nu=0.3), supports={"xmin": "xyz"},
                         loads={"pull": [lw.Force("xmax", (1.0, 0.0, 0.0))]}).system()
    added = (k1 - no_spring.stiffness_matrix().diagonal()).reshape(-1, 3)
    np.testing.assert_allclose(added[mesh.node_set("xmin")].sum(axis=0), (10.0, 20.0, 30.0))
    assert not system.uses_multigrid("auto")
    with pytest.raises(lw.SolverError, match="springs"):
        system.uses_multigrid("multigrid")


def test_spring_with_a_wrong_stiffness_or_set_name_is_named():
    mesh = lw.structured_grid((2, 1, 1))
    material = lw.Material(E=E, nu=0.3)
    loads = {"a": [lw.Force("xmax", (1.0, 0.0, 0.0))]}
    with pytest.raises(lw.BoundaryConditionError, match="Spring\\('xmin'\\) stiffness"):
        lw.solve(lw.Model(mesh, material, {"xmin": lw.Spring("xmin", (1.0, -1.0, 1.0))}, loads))
    with pytest.raises(lw.BoundaryConditionError, match="'ymin'"):
        lw.Model(mesh, material, {"ymin": lw.Spring("xmin", (1.0, 1.0, 1.0))}, loads)
    with pytest.raises(lw.UnknownSetError, match="'bush'"):
        lw.Model(mesh, material, {"bush": lw.Spring("bush", (1.0, 1.0, 1.0))}, loads)


# ------------------------------------------------------------------ the same in case files
CASE_3D = """
[mesh]
grid = [4, 1, 1]
size = [4.0, 1.0, 1.0]

[units]
system = "mm-N-t-s"

[material]
E = 1000.0
nu = 0.0

[supports]
xmin = {type = "spring", stiffness = [50.0, 50.0, 50.0]}

[[loads.pull]]
type = "force"
set = "xmax"
value = [2.0, 0.0, 0.0]

[[loads.twist]]
type = "coupling"
set = "xmax"
point = [5.0, 0.5, 0.5]
force = [0.0, 0.0, -1.0]
moment = [0.2, 0.0, 0.0]

[requirements]
max_displacement = 1.0

[optimize]
problem = "min_compliance"
volume_fraction = 0.5
filter_radius = 1.5
displacement_limits = [{set = "xmax", component = "x", limit = 0.1, case = "pull"}]
"""


def test_case_file_force_coupling_spring_units_and_displacement_limits(tmp_path):
    from lightweight.casefile import read_case
    path = tmp_path / "case.toml"
    path.write_text(CASE_3D)
    case = read_case(path)
    assert [s.describe() for s in case.model.springs] == [lw.Spring("xmin", (50.0, 50.0, 50.0)).describe()]
    assert case.model.loads["pull"][0].describe() == lw.Force("xmax", (2.0, 0.0, 0.0)).describe()
    coupling = case.model.loads["twist"][0]
    assert isinstance(coupling, lw.Coupling) and tuple(coupling.moment) == (0.2, 0.0, 0.0)
    assert case.optimize["displacement_limits"] == [lw.DisplacementLimit("xmax", "x", 0.1, "pull")]
    assert case.unit("mass") == "t" and case.unit("compliance.pull") == "N mm"
    assert case.unit("max_von_mises") == "MPa" and case.unit("max_displacement") == "mm"
    sol = lw.solve(case.model)
    # the analytic bar of test_spring_bar_matches_series_springs, now from a case file
    assert np.isclose(sol.displacement["pull"][case.model.mesh.node_set("xmax"), 0].mean(), 2.0 / 50 + 2.0 * 4 / 1000)
    assert sol.mass is None                                  # no density: unknown, not 0


@pytest.mark.parametrize("change,message", [
    (('type = "spring"', 'type = "sprung"'), "[supports.xmin]: a support table is a bushing"),
    (("stiffness = [50.0, 50.0, 50.0]", "stiffness = [50.0, 50.0]"), "[supports.xmin.stiffness]: needs 3"),
    (("point = [5.0, 0.5, 0.5]\n", ""), "a coupling needs point"),
    (('type = "force"\nset = "xmax"', 'type = "force"\nset = "xmax"\npoint = [1.0, 0.0, 0.0]'),
     "point belong to type = \"coupling\""),
    (('component = "x"', 'component = "w"'), "[optimize.displacement_limits[0].component]"),
    (('set = "xmax", component', 'set = "tip", component'), "no node set 'tip'"),
    (('case = "pull"', 'case = "brake"'), "unknown load case 'brake'"),
    (('system = "mm-N-t-s"', 'system = "furlong"'), "[units.system]: unknown unit system 'furlong'"),
    (("[requirements]\n", "[requirements]\nmax_mass = 1.0\n"), "[requirements.max_mass]: needs [material] density"),
])
def test_case_file_errors_of_the_new_keys_name_the_key(tmp_path, change, message):
    from lightweight.casefile import read_case
    path = tmp_path / "case.toml"
    text = CASE_3D.replace(*change)
    assert text != CASE_3D
    path.write_text(text)
    with pytest.raises(lw.CaseFileError) as info:
        read_case(path)
    assert message in str(info.value)


def test_every_case_key_is_documented_and_the_reference_page_is_current():
    from pathlib import Path
    from lightweight.case_keys import KEY_DOCS, accepted_keys, reference_markdown
    for table, keys in accepted_keys().items():
        for key in keys:
            assert KEY_DOCS.get(table, {}).get(key), f"[{table}] {key} has no line in lightweight/case_keys.py"
    page = (Path(__file__).resolve().parent.parent / "docs" / "case_files.md").read_text()
    assert page.startswith(reference_markdown()), \
        "docs/case_files.md is stale: python -m lightweight.case_keys > docs/case_files.md (then the examples)"


def test_the_readme_shows_the_shipped_bracket_case_file():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    anchor = readme.index("`examples/cases/bracket.toml` is the bracket of the script above:")
    start = readme.index("```toml\n", anchor) + len("```toml\n")
    block = readme[start:readme.index("```", start)]
    assert block == (root / "examples" / "cases" / "bracket.toml").read_text()


def test_no_reference_to_a_design_md_the_repository_does_not_have():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    if (root / "DESIGN.md").is_file():
        pytest.skip("the repository has a DESIGN.md")
    from lightweight.cli import build_parser
    assert "DESIGN.md" not in build_parser().format_help()
    for sub in ("optimize", "evaluate"):
        action = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == sub)[1]
        assert "DESIGN.md" not in action.format_help()
    offenders = [str(p.relative_to(root)) for folder in ("lightweight", "docs", "examples")
                 for p in (root / folder).rglob("*") if p.suffix in (".py", ".md", ".toml")
                 and "DESIGN.md" in p.read_text(errors="ignore")]
    assert offenders == [], f"these files cite a DESIGN.md the repository does not have: {offenders}"
