"""SIMP optimization: top88 reproduction, gradients by finite differences, duality, resume."""

import numpy as np
import pytest

import lightweight as lw
from lightweight.optimize.api import _build, compliance_problem, mass_problem
from lightweight.optimize.loop import SimpLoop
from lightweight.optimize.reference import Top88


def mbb_model(nelx=60, nely=20):
    mesh = lw.structured_grid((nelx, nely))
    mesh.add_node_set("load", lambda p: (p[:, 0] == 0) & (p[:, 1] == nely))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == nelx) & (p[:, 1] == 0))
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "x", "roller": "y"},
                    loads={"mbb": lw.PointLoad("load", (0.0, -1.0))})


@pytest.mark.parametrize("filter_name,ft", [("sensitivity", 1), ("density", 2)])
def test_mbb_reproduces_top88(filter_name, ft):
    """Same problem, filter and OC rule as the published code: same history and design.

    Compared with our plain SciPy port of top88 (lightweight.optimize.reference): the
    compliance of every iteration to 1e-8 relative, the same number of iterations (94 and 127),
    the first compliance 1007.0221007 (CalculiX reference) and the final densities to 1e-6.
    """
    model = mbb_model()
    result = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.5, filter=filter_name,
                                    optimizer="oc", penalty=3.0, max_iterations=1000, verbose=False)
    reference = Top88(60, 20, 0.5, 3.0, 1.5, ft)
    history = reference.run()
    ours = result.history_array("objective")
    theirs = np.array([c for c, _ in history])
    assert result.converged
    assert len(ours) == len(theirs) == {1: 94, 2: 127}[ft]
    assert ours[0] == pytest.approx(1007.0221007, rel=1e-8)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    np.testing.assert_allclose(result.history_array("change"), [ch for _, ch in history], atol=1e-8)
    # our cells run x-fastest from the bottom; top88's column-major from the top
    image = result.density.reshape(20, 60)[::-1]
    np.testing.assert_allclose(image, reference.density_grid(), atol=1e-6)
    assert result.volume_fraction == pytest.approx(0.5, abs=1e-3)


def build_loop(model, problem="compliance", filter="density", projection=None, limits=None,
               displacement_limits=(), min_stiffness=1e-3, non_design=(), symmetry=None):
    parts = _build(model, filter_radius=1.6, filter=filter, projection=projection, optimizer="mma",
                   penalty=3.0, interpolation="simp", min_stiffness=min_stiffness, non_design=non_design,
                   void=(), symmetry=symmetry, extrusion=None, max_iterations=10, tolerance=0.01,
                   objective_tolerance=1e-3, move=0.2, continuation_interval=25, verbose=False,
                   checkpoint=None, checkpoint_every=10, solver="direct",
                   problem=problem, extra_parameters={})
    pipeline, analysis, settings, schedule, parameters = parts
    if problem == "compliance":
        formulation = compliance_problem(model, 0.4, displacement_limits=displacement_limits)
    else:
        formulation = mass_problem(model, limits, displacement_limits=displacement_limits)
    return SimpLoop(formulation, pipeline, analysis, settings, schedule, 0.5, parameters=parameters)


def responses_and_gradients(loop, x):
    _, _, f, g, df, dg, _ = loop.evaluate(x)
    return np.concatenate([[f], g]), np.vstack([df[None, :], dg])


def check_gradients(loop, seed=0, n_checks=6, step=1e-6):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.9, loop.design.n_variables)
    values, grads = responses_and_gradients(loop, x)
    for j in rng.choice(loop.design.n_variables, size=n_checks, replace=False):
        xp, xm = x.copy(), x.copy()
        xp[j] += step
        xm[j] -= step
        fd = (responses_and_gradients(loop, xp)[0] - responses_and_gradients(loop, xm)[0]) / (2 * step)
        for k in range(len(values)):
            scale = max(np.abs(grads[k]).max(), 1e-30)
            assert abs(fd[k] - grads[k, j]) <= 1e-5 * scale, (k, j, fd[k], grads[k, j])


def cantilever_grid(nx=12, ny=6, gravity=False):
    mesh = lw.structured_grid((nx, ny), size=(2.0 * nx, 2.0 * ny))
    mesh.add_node_set("tip", lambda p: (p[:, 0] == 2.0 * nx) & (p[:, 1] <= 2.0))
    loads = {"down": [lw.PointLoad("tip", (0.0, -1.0))], "side": [lw.Traction("ymax", (0.3, 0.0))]}
    if gravity:
        loads["down"].append(lw.Gravity((0.0, -2.0)))
    return lw.Model(mesh, lw.Material(E=100.0, nu=0.3, density=0.05), supports={"xmin": "xy"}, loads=loads)


def cantilever_tets(gravity=False):
    mesh = lw.structured_grid((4, 2, 2), size=(8.0, 4.0, 4.0), cell_type="tetra")
    loads = {"down": [lw.Traction("xmax", (0.0, 0.0, -0.5))], "twist": [lw.Pressure("ymax", 0.2)]}
    if gravity:
        loads["down"].append(lw.Gravity((0.0, 0.0, -3.0)))
    return lw.Model(mesh, lw.Material(E=100.0, nu=0.3, density=0.05), supports={"xmin": "xyz"}, loads=loads)


@pytest.mark.parametrize("filter", ["density", "helmholtz"])
@pytest.mark.parametrize("projection", [None, {"beta": 4.0}])
def test_compliance_and_volume_gradients_grid(filter, projection):
    check_gradients(build_loop(cantilever_grid(), filter=filter, projection=projection))


@pytest.mark.parametrize("projection", [None, {"beta": 4.0}])
def test_compliance_and_volume_gradients_tet_mesh(projection):
    check_gradients(build_loop(cantilever_tets(), projection=projection))


def test_displacement_limit_gradients_grid_and_tets():
    limit = [lw.DisplacementLimit("tip", "y", 0.5)]
    check_gradients(build_loop(cantilever_grid(), displacement_limits=limit, projection={"beta": 2.0}))
    limit = [lw.DisplacementLimit("xmax", "z", 0.5, case="down")]
    check_gradients(build_loop(cantilever_tets(), displacement_limits=limit))


def test_min_mass_gradients_with_self_weight():
    loop = build_loop(cantilever_grid(gravity=True), problem="mass", limits={"down": 50.0, "side": 10.0},
                      projection={"beta": 2.0})
    assert loop.analysis.system.has_body_loads
    check_gradients(loop)
    check_gradients(build_loop(cantilever_tets(gravity=True), problem="mass",
                               limits={"down": 5.0, "twist": 5.0}))


def test_gradients_with_non_design_and_symmetry():
    model = cantilever_grid()
    model.mesh.add_cell_set("boss", lambda c: c[:, 0] > 20.0)
    loop = build_loop(model, non_design=["boss"], symmetry=None)
    assert loop.design.n_variables == model.mesh.n_cells - model.mesh.cell_sets["boss"].size
    check_gradients(loop)
    sym = build_loop(cantilever_grid(), symmetry="y")
    assert sym.design.n_variables == 12 * 3
    check_gradients(sym)


def test_min_mass_at_the_compliance_of_the_min_compliance_design_gives_its_volume():
    """Duality: both problems share their optimum, so the volume fraction comes back to 0.5."""
    model = mbb_model(48, 16)
    stiff = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.5, filter="density",
                                   optimizer="mma", verbose=False)
    light = lw.minimize_mass(model, max_compliance=stiff.compliance["mbb"], filter_radius=1.5,
                             filter="density", verbose=False, max_iterations=300)
    assert stiff.converged and light.converged
    assert light.compliance["mbb"] <= stiff.compliance["mbb"] * 1.002
    assert light.volume_fraction == pytest.approx(0.5, abs=0.025)


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    model = cantilever_grid(16, 8)
    kwargs = dict(volume_fraction=0.4, filter_radius=3.0, optimizer="mma", penalty=(1.0, 3.0),
                  continuation_interval=4, max_iterations=14, verbose=False)
    straight = lw.minimize_compliance(model, **kwargs)
    ckpt = tmp_path / "run.npz"
    lw.minimize_compliance(model, checkpoint=ckpt, checkpoint_every=5, **{**kwargs, "max_iterations": 7})
    # the checkpoint holds iteration 5 (every 5) or the stop at 7: either resumes identically
    resumed = lw.minimize_compliance(model, resume=ckpt, **kwargs)
    assert resumed.iterations == straight.iterations
    np.testing.assert_array_equal(resumed.density, straight.density)
    assert resumed.history_array("objective").tolist() == straight.history_array("objective").tolist()


def test_passive_regions_symmetry_and_extrusion_hold_in_the_result():
    mesh = lw.structured_grid((12, 6, 4), size=(24.0, 12.0, 8.0))
    mesh.add_cell_set("boss", lambda c: c[:, 0] < 4.0)
    mesh.add_cell_set("hole", lambda c: (np.abs(c[:, 0] - 12.0) < 2.0) & (np.abs(c[:, 1] - 6.0) < 2.0))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"tip": lw.Traction("xmax", (0.0, -1.0, 0.0))})
    res = lw.minimize_compliance(model, volume_fraction=0.4, filter_radius=3.0, non_design=["boss"],
                                 void=["hole"], symmetry="y", extrusion="z", max_iterations=8,
                                 verbose=False)
    rho = res.density.reshape(4, 6, 12)         # (z, y, x)
    assert np.all(res.density[mesh.cell_sets["boss"]] == 1.0)
    assert np.all(res.density[mesh.cell_sets["hole"]] == 0.0)
    np.testing.assert_allclose(rho, rho[:, ::-1, :], atol=1e-12)      # mirror in y
    np.testing.assert_allclose(rho, np.broadcast_to(rho[:1], rho.shape), atol=1e-12)  # constant in z


def test_callback_history_and_stop():
    seen = []

    def callback(state):
        seen.append((state.iteration, state.density.copy()))
        return state.iteration == 3

    res = lw.minimize_compliance(mbb_model(30, 10), volume_fraction=0.5, filter_radius=1.5,
                                 callback=callback, verbose=False)
    assert res.message == "stopped by callback" and res.iterations == 3 and len(seen) == 3
    rec = res.history[-1]
    for key in ("objective", "constraints", "volume_fraction", "change", "grayness", "seconds"):
        assert key in rec
    assert 0 <= rec["grayness"] <= 1


@pytest.mark.parametrize("kwargs,match", [
    ({"volume_fraction": 1.5}, "volume_fraction"),
    ({"volume_fraction": 0.5, "filter_radius": -1}, "filter_radius"),
    ({"volume_fraction": 0.5, "non_design": ["nope"]}, "no cell set or node/face set 'nope'.*'xmax'"),
    ({"volume_fraction": 0.5, "penalty": 0}, "penalty must be >= 1"),
    ({"volume_fraction": 0.5, "penalty": (0.5, 3.0)}, "penalty must be >= 1"),
    ({"volume_fraction": 0.5, "optimizer": "oc",
      "displacement_limits": [lw.DisplacementLimit("load", "y", 1.0)]}, "mma"),
    ({"volume_fraction": 0.5, "symmetry": "q"}, "axis"),
    ({"volume_fraction": 0.5, "filter": "gauss"}, "filter"),
])
def test_bad_options_raise_clear_errors(kwargs, match):
    kwargs = {"filter_radius": 1.5, "verbose": False, **kwargs}
    with pytest.raises(lw.LightweightError, match=match):
        lw.minimize_compliance(mbb_model(12, 4), **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"max_compliance": {"mmb": 10.0}}, "unknown load case 'mmb'; cases: mbb"),
    ({"max_compliance_factor": 0.5}, "must be >= 1"),
    ({"max_compliance": 10.0, "max_compliance_factor": 1.5}, "not both"),
    ({}, "needs max_compliance"),
])
def test_minimize_mass_bad_limits_raise_clear_errors(kwargs, match):
    with pytest.raises(lw.OptimizationError, match=match):
        lw.minimize_mass(mbb_model(12, 4), filter_radius=1.5, verbose=False, max_iterations=2, **kwargs)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, lw.SolverError])
def test_a_failed_iteration_keeps_the_last_design(failure):
    """Ctrl-C or an error in iteration 4 re-raises with the result of iteration 3 attached."""
    def callback(state):
        if state.iteration == 4:
            raise failure("stop here") if failure is not KeyboardInterrupt else failure()

    with pytest.raises(failure) as caught:
        lw.minimize_compliance(mbb_model(30, 10), volume_fraction=0.5, filter_radius=1.5,
                               callback=callback, verbose=False)
    partial = caught.value.partial_result
    assert partial is not None and not partial.converged
    assert len(partial.history) == 4 and partial.message.startswith("stopped after iteration 4")
    reference = lw.minimize_compliance(mbb_model(30, 10), volume_fraction=0.5, filter_radius=1.5,
                                       max_iterations=4, verbose=False)
    np.testing.assert_array_equal(partial.density, reference.density)
    assert partial.compliance["mbb"] == reference.compliance["mbb"]


def test_failure_in_the_first_analysis_has_no_partial_result():
    mesh = lw.structured_grid((12, 4), size=(12.0, 4.0))
    mechanism = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "x"},
                         loads={"c": [lw.Traction("xmax", (0.0, -1.0))]})
    with pytest.raises(lw.SingularStiffnessError, match="free translation in y") as caught:
        lw.minimize_compliance(mechanism, volume_fraction=0.5, filter_radius=1.5, verbose=False)
    assert caught.value.partial_result is None
