"""The optimization layer's parts: every stage and response against finite differences, problems
composed from the public pieces, and the guards of the loop (OC on a non-affine chain, bad input).

Each stage is checked with lightweight.optimize.checks.check_stage and each response with
check_response, on a structured grid and on a real unstructured Gmsh tet mesh with two load
cases (the bracket of the README).
"""

from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.errors import LightweightError, OptimizationError, UnknownSetError
from lightweight.optimize import Problem, responses as r, stages
from lightweight.optimize.checks import check_response, check_stage
from lightweight.optimize.design import DesignSpace
from lightweight.optimize.filters import make_filter
from lightweight.optimize.projection import HeavisideProjection

ROOT = Path(__file__).resolve().parents[1]


def grid_model(gravity=False):
    mesh = lw.structured_grid((12, 6), size=(24.0, 12.0))
    mesh.add_node_set("tip", lambda p: (p[:, 0] == 24.0) & (p[:, 1] <= 2.0))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == 12.0) & (p[:, 1] == 0.0))
    loads = {"down": [lw.PointLoad("tip", (0.0, -1.0))], "side": [lw.Traction("ymax", (0.3, 0.0))]}
    if gravity:
        loads["down"].append(lw.Gravity((0.0, -2.0)))
    return lw.Model(mesh, lw.Material(E=100.0, nu=0.3, density=0.05), supports={"xmin": "xy", "roller": "y"},
                    loads=loads)


@pytest.fixture(scope="module")
def bracket():
    """The README's Gmsh bracket (12k tet4) with two load cases, its bolt holes split in two supports."""
    mesh = lw.read_mesh(ROOT / "meshes" / "bracket.msh")
    bolts = mesh.node_set("bolt_holes")
    lower = mesh.points[bolts, 1] < 20.0
    mesh.add_node_set("lower_bolts", bolts[lower])
    mesh.add_node_set("upper_bolts", bolts[~lower])
    return lw.Model(mesh, lw.Material(E=210e3, nu=0.3, density=7.85e-9),
                    supports={"lower_bolts": "xyz", "upper_bolts": "xyz"},
                    loads={"brake": [lw.Traction("load_face", (0.0, -2.5, 0.0))],
                           "corner": [lw.Traction("load_face", (1.0, 0.0, 0.5))]})


# ---------------------------------------------------------------------- stages
def test_every_stage_matches_finite_differences_on_a_grid():
    model = grid_model()
    mesh = model.mesh
    mesh.add_cell_set("boss", np.arange(5))
    design = DesignSpace(mesh, non_design=["boss"], symmetry="y")
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 0.9, design.n_variables)
    cells = rng.uniform(0.1, 0.9, mesh.n_cells)
    check_stage(stages.DesignMap(design), x)
    check_stage(stages.Tie(design), cells)
    check_stage(stages.Passive(design), cells)
    for kind in ("density", "helmholtz"):
        check_stage(stages.Filter(make_filter(mesh, 2.5, kind=kind)), cells)
    check_stage(stages.Projection(HeavisideProjection(beta=6.0, eta=0.4)), cells)
    pipeline = stages.density_pipeline(design, make_filter(mesh, 2.5), HeavisideProjection(4.0))
    assert not pipeline.is_affine


def test_pipeline_backward_equals_finite_differences_on_tets(bracket):
    design = DesignSpace(bracket.mesh, non_design=["lower_bolts", "upper_bolts"])
    pipeline = stages.density_pipeline(design, make_filter(bracket.mesh, 3.0), HeavisideProjection(8.0))

    class Whole(stages.Stage):           # the whole chain checked as one stage
        name = "pipeline"

        def forward(self, x):
            return pipeline(x)

        def backward(self, x, dy):
            return pipeline.backward(pipeline.forward(x), dy)

    x = np.random.default_rng(0).uniform(0.2, 0.8, design.n_variables)
    assert check_stage(Whole(), x) < 1e-5


def test_a_wrong_backward_is_caught():
    """The checker must fail on a stage whose transpose is wrong (a test that can fail)."""
    design = DesignSpace(grid_model().mesh)

    class Broken(stages.Projection):
        def backward(self, x, dy):
            return 1.01 * super().backward(x, dy)

    cells = np.random.default_rng(1).uniform(0.1, 0.9, design.mesh.n_cells)
    with pytest.raises(AssertionError, match="stage projection"):
        check_stage(Broken(HeavisideProjection(beta=4.0)), cells)


# ---------------------------------------------------------------------- responses
@pytest.mark.parametrize("gravity", [False, True])
def test_responses_match_finite_differences_on_a_grid(gravity):
    model = grid_model(gravity)
    for response in (r.Compliance(model), r.Compliance(model, weights={"down": 1.0, "side": 2.0}),
                     r.VolumeFraction(model), r.Mass(model), r.Displacement(model, "tip", "y"),
                     r.Reaction(model, "xmin", "y"), r.Reaction(model, "roller", "y", case="side")):
        assert check_response(response, model) < 1e-5, response.labels()


def test_responses_match_finite_differences_on_an_unstructured_tet_mesh(bracket):
    for response in (r.Compliance(bracket), r.Displacement(bracket, "load_face", "y"),
                     r.Reaction(bracket, "lower_bolts", "y", case="brake"), r.Mass(bracket)):
        # a larger step than on the grid: the direct solve of 12k tets is accurate to ~1e-11
        assert check_response(response, bracket, n_checks=4, step=1e-4) < 1e-5, response.labels()


def test_reaction_response_balances_the_load(bracket):
    """The worked example of docs/architecture.md: solid bracket, reaction = - applied force."""
    from lightweight.optimize.analysis import Analysis
    from lightweight.fem.interpolation import Interpolation
    analysis = Analysis(bracket, Interpolation())
    state = analysis.state(np.ones(bracket.mesh.n_cells))
    value = sum(r.Reaction(bracket, name, "y").evaluate(state)[0] for name in ("lower_bolts", "upper_bolts"))
    applied = state.static.F.reshape(2, -1, 3).sum(axis=1)[:, 1]
    np.testing.assert_allclose(value, -applied, rtol=1e-8, atol=1e-9 * np.abs(applied).max())


def test_responses_name_what_is_wrong(bracket):
    with pytest.raises(OptimizationError, match="unknown load case 'brkae'.*brake, corner"):
        r.Compliance(bracket, cases=["brkae"])
    with pytest.raises(UnknownSetError, match="tipp"):
        r.Displacement(bracket, "tipp", "y")
    with pytest.raises(OptimizationError, match="component must be one of x, y, z"):
        r.Displacement(bracket, "load_face", "w")
    with pytest.raises(OptimizationError, match="not a support"):
        r.Reaction(bracket, "load_face", "y")
    with pytest.raises(OptimizationError, match="2 values .* but 3 limits"):
        r.Compliance(bracket) <= [1.0, 2.0, 3.0]
    with pytest.raises(OptimizationError, match="positive"):
        r.Compliance(bracket) <= -1.0
    with pytest.raises(OptimizationError, match="one value"):
        Problem(r.Compliance(bracket))
    with pytest.raises(LightweightError, match="unknown response 'stifness'"):
        r.make_response("stifness", bracket)


# ---------------------------------------------------------------------- problems and the loop
def test_a_composed_problem_equals_the_preset():
    """minimize_mass is a preset: the same problem composed by hand gives the same run."""
    model = grid_model()
    options = dict(filter_radius=2.5, max_iterations=8, verbose=False, solver="direct")
    preset = lw.minimize_mass(model, max_compliance={"down": 40.0, "side": 30.0}, **options)
    problem = Problem(r.VolumeFraction(model), [r.Compliance(model) <= [40.0, 30.0]], name="min_mass")
    composed = lw.optimize_problem(model, problem, initial=0.5, **options)
    np.testing.assert_allclose(composed.history_array("objective"), preset.history_array("objective"), rtol=1e-12)
    np.testing.assert_allclose(composed.density, preset.density, atol=1e-12)


def test_a_user_problem_with_a_reaction_constraint_holds_it():
    """Min compliance with the vertical support reaction of case 'side' bounded: the limit holds."""
    model = grid_model()
    free = lw.solve(model)
    reaction = r.Reaction(model, "xmin", "y", case="side")
    problem = Problem(r.Compliance(model, weights={"down": 1.0}),
                      [r.VolumeFraction(model) <= 0.5, reaction <= 0.5],
                      name="reaction_limited")
    result = lw.optimize_problem(model, problem, filter_radius=2.5, max_iterations=60, verbose=False)
    last = result.history[-1]
    assert last["volume_fraction"] <= 0.5 + 1e-3
    assert last["reaction[xmin.y, side]"] <= 0.5 * (1 + 2e-2)
    assert abs(free.reactions["side"]["xmin"][1]) > 0.5


def test_oc_refuses_a_problem_it_cannot_solve():
    model = grid_model()
    problem = Problem(r.VolumeFraction(model), [r.Compliance(model) <= 30.0])
    with pytest.raises(OptimizationError, match="optimizer='oc' handles only"):
        lw.optimize_problem(model, problem, optimizer="oc", filter_radius=2.0, max_iterations=2, verbose=False)


def test_oc_with_projection_does_not_assume_an_affine_chain():
    """With projection the volume is not affine in x: OC must still meet the volume exactly."""
    model = grid_model()
    result = lw.minimize_compliance(model, volume_fraction=0.4, filter_radius=2.5, optimizer="oc",
                                    projection={"beta": 8.0, "beta_max": 8.0}, max_iterations=15,
                                    verbose=False)
    assert result.history[-1]["volume_fraction"] == pytest.approx(0.4, abs=2e-3)


def test_projected_run_stops_once_objective_and_constraints_settle():
    """A run at its final β ends when the objective has settled, and says so."""
    model = grid_model()
    result = lw.minimize_compliance(model, volume_fraction=0.4, filter_radius=2.5,
                                    projection={"beta": 16.0, "beta_max": 16.0}, optimizer="mma",
                                    max_iterations=400, tolerance=1e-9, verbose=False)
    assert result.converged, result.message
    assert "objective moved" in result.message
    assert result.iterations < 400
    changes = result.history_array("objective_change")[-10:]
    assert np.all(changes <= 1e-3)


def test_a_displacement_limit_bounds_its_magnitude():
    """`Displacement(...) <= d` bounds |δ| (a downward tip moves by a negative δ)."""
    model = grid_model()
    constraint = r.Displacement(model, "tip", "y", case="down") <= 0.5
    assert constraint.absolute and not (r.Compliance(model) <= 1.0).absolute
    g, _ = constraint.normalise(np.array([-1.0]), np.zeros((1, model.mesh.n_cells)))
    assert g[0] == pytest.approx(3.0)          # (|-1| / 0.5)^2 - 1: violated, not satisfied


def test_the_law_holds_densities_below_0_at_0():
    """A Helmholtz-filtered field can undershoot 0: the law must not give a negative modulus.

    Above 1 it continues smoothly (smooth-max stages overshoot 1 a little and need the slope).
    """
    from lightweight.fem.interpolation import Interpolation
    for law in (Interpolation("simp", 3.0, 1e-9), Interpolation("ramp", 8.0, 1e-9),
                Interpolation("simp", 3.0, 1e-9, linear_below=0.1)):
        values = law.stiffness(np.array([-0.02, 0.0, 1.0]))
        np.testing.assert_allclose(values, [law.min_stiffness, law.min_stiffness, 1.0], rtol=1e-12)
        assert law.derivative(np.array([-0.02]))[0] == 0.0
        assert law.stiffness(np.array([1.03]))[0] > 1.0 and law.derivative(np.array([1.03]))[0] > 0.0


def test_helmholtz_filter_on_the_gmsh_bracket_runs(bracket):
    """Reproduces a negative-pivot failure at iteration 3 (filtered densities below 0 on tets)."""
    result = lw.minimize_compliance(bracket, volume_fraction=0.3, filter="helmholtz", filter_radius=3.0,
                                    optimizer="mma", max_iterations=5, verbose=False)
    assert result.iterations == 5 and np.isfinite(result.history[-1]["objective"])
