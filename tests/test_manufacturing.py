"""Manufacturing rules (lightweight/optimize/manufacturing): exact gradients, the binary limits
against scipy.ndimage, the ties of patterns, and the MBB beam of issue 11 printed and cast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import lightweight as lw
from lightweight.errors import OptimizationError
from lightweight.optimize.checks import check_response, check_stage
from lightweight.optimize.design import DesignSpace
from lightweight.optimize.manufacturing import (LocalVolume, check_manufacturing, make_rule,
                                                manufacturing_report)

ROOT = Path(__file__).resolve().parent.parent


def mbb_model(nelx=60, nely=20):
    mesh = lw.structured_grid((nelx, nely))
    mesh.add_node_set("load", lambda p: (p[:, 0] == 0) & (p[:, 1] == nely))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == nelx) & (p[:, 1] == 0))
    return lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "x", "roller": "y"},
                    loads={"mbb": lw.PointLoad("load", (0.0, -1.0))})


@pytest.fixture(scope="module")
def bracket():
    return lw.read_mesh(ROOT / "meshes" / "bracket.msh")


def image(mesh, field):
    """(ny, nx) picture of a 2D grid field, row 0 at y = 0."""
    nx, ny = mesh.grid
    return np.asarray(field).reshape(ny, nx)


# ---------------------------------------------------------------- gradients (check_stage)
@pytest.mark.parametrize("shape,direction", [((8, 6), "+y"), ((8, 6), "-x"), ((5, 4, 6), "+z"),
                                             ((5, 4, 6), "-y")])
def test_overhang_stage_gradient_on_grids(shape, direction):
    mesh = lw.structured_grid(shape)
    stage = lw.Overhang(direction).stage(mesh, None)
    x = np.random.default_rng(1).uniform(0.05, 1.0, mesh.n_cells)
    assert check_stage(stage, x, n_checks=20) < 1e-6
    assert stage.describe()["stencil"] == (3 if len(shape) == 2 else 5)


def test_overhang_and_draw_gradients_on_the_tet_bracket(bracket):
    x = np.random.default_rng(2).uniform(0.05, 1.0, bracket.n_cells)
    overhang = lw.Overhang("+y").stage(bracket, None)
    assert overhang.describe()["background_grid"]
    assert check_stage(overhang, x, n_checks=10) < 1e-6
    for rule in (lw.DrawDirection("+y"), lw.DrawDirection("+z", two_sided=True), lw.DrawDirection((1, 1, 0))):
        assert check_stage(rule.stage(bracket, None), x, n_checks=10) < 1e-6


@pytest.mark.parametrize("rule", [lw.DrawDirection("+y"), lw.DrawDirection("-x", two_sided=True),
                                  lw.DrawDirection((1.0, 2.0))])
def test_draw_stage_gradient_on_a_grid(rule):
    mesh = lw.structured_grid((8, 6))
    x = np.random.default_rng(3).uniform(0.05, 1.0, mesh.n_cells)
    assert check_stage(rule.stage(mesh, None), x, n_checks=20) < 1e-6


def test_member_size_stage_and_local_volume_gradients():
    mesh = lw.structured_grid((16, 10))
    x = np.random.default_rng(4).uniform(0.05, 0.95, mesh.n_cells)
    stage = lw.MemberSize(minimum=4).stage(mesh, None)
    stage.set_parameter("beta", 4.0)
    assert check_stage(stage, x, n_checks=20) < 1e-6
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xy"},
                     loads={"tip": lw.PointLoad("xmax", (0.0, -1.0))})
    assert check_response(LocalVolume(model, 3.0), model) < 1e-6


# ---------------------------------------------------------------- what each stage does
def test_overhang_removes_a_floating_block_and_keeps_a_supported_wall():
    mesh = lw.structured_grid((12, 10))
    design = np.zeros((10, 12))
    design[:, 1] = 1.0                 # a wall standing on the baseplate
    design[6:8, 6:10] = 1.0            # a block floating in the air
    design[0:3, 3] = 1.0               # a short post on the baseplate
    stage = lw.Overhang("+y").stage(mesh, None)
    printed = image(mesh, stage.forward(design.ravel()))
    assert np.all(printed[:, 1] > 0.95)
    assert np.all(printed[0:3, 3] > 0.95)
    assert np.all(printed[6:8, 6:10] < 0.05)
    rule = lw.Overhang("+y")
    assert rule.violation(mesh, design.ravel()) == pytest.approx(4 / design.sum())   # the block's bottom row
    assert rule.violation(mesh, printed.ravel()) == 0.0
    # built downwards (baseplate at the top): the block's top row and the post's top cell hang free
    assert lw.Overhang("-y").violation(mesh, design.ravel()) == pytest.approx(5 / design.sum())


def test_overhang_angle_sets_the_stencil():
    mesh = lw.structured_grid((6, 6))
    assert len(lw.Overhang("+y", angle=60).stage(mesh, None).layers.stencil) == 1
    assert len(lw.Overhang("+y", angle=20).stage(mesh, None).layers.stencil) == 5
    hexes = lw.structured_grid((4, 4, 4))
    assert len(lw.Overhang("+z", angle=45).stage(hexes, None).layers.stencil) == 5


def test_draw_output_never_increases_along_the_direction():
    mesh = lw.structured_grid((9, 7))
    x = np.random.default_rng(5).uniform(0, 1, mesh.n_cells)
    one = image(mesh, lw.DrawDirection("+y").stage(mesh, None).forward(x))
    assert np.all(np.diff(one, axis=0) <= 1e-12)
    two = image(mesh, lw.DrawDirection("+y", two_sided=True, parting=3.0).stage(mesh, None).forward(x))
    assert np.all(np.diff(two[3:], axis=0) <= 1e-12)      # above the parting plane y = 3
    assert np.all(np.diff(two[:3], axis=0) >= -1e-12)     # below it, non-increasing downwards
    assert lw.DrawDirection("+y").violation(mesh, one.ravel()) == 0.0
    undercut = np.zeros((7, 9))
    undercut[4:, 2] = 1.0                                  # solid over a void of its column
    assert lw.DrawDirection("+y").violation(mesh, undercut.ravel()) == 1.0
    assert lw.DrawDirection("-y").violation(mesh, undercut.ravel()) == 0.0


def test_draw_on_the_bracket_leaves_no_undercut(bracket):
    x = np.random.default_rng(6).uniform(0, 1, bracket.n_cells)
    for rule in (lw.DrawDirection("+y"), lw.DrawDirection("+z", two_sided=True)):
        assert rule.violation(bracket, x) > 0.3
        assert rule.violation(bracket, rule.stage(bracket, None).forward(x)) < 1e-3


def test_member_size_stage_is_open_close_in_the_binary_limit():
    """At a sharp projection the stage equals scipy's opening then closing with the same disc."""
    mesh = lw.structured_grid((30, 20))
    rng = np.random.default_rng(7)
    stage = lw.MemberSize(minimum=4).stage(mesh, None)
    stage.set_parameter("beta", 2000.0)
    disc = np.hypot(*np.mgrid[-2:3, -2:3]) <= 2.0
    for _ in range(3):
        blob = ndimage.binary_dilation(rng.uniform(size=(20, 30)) > 0.85)
        out = image(mesh, stage.forward(blob.ravel().astype(float))) > 0.5
        ref = ndimage.binary_dilation(ndimage.binary_erosion(blob, disc, border_value=1), disc)
        ref = ndimage.binary_erosion(ndimage.binary_dilation(ref, disc), disc, border_value=1)
        assert np.array_equal(out, ref)
        assert lw.MemberSize(minimum=4).violation(mesh, out.ravel()) == 0.0


def test_member_size_check_sees_thin_members_small_gaps_and_thick_members():
    mesh = lw.structured_grid((30, 20))
    rule_min, rule_max = lw.MemberSize(minimum=4), lw.MemberSize(maximum=4)

    def design(*boxes):
        out = np.zeros((20, 30))
        for rows, cols in boxes:
            out[rows, cols] = 1.0
        return out.ravel()
    strip2, strip5 = (slice(5, 7), slice(None)), (slice(5, 10), slice(None))
    block = (slice(10, 19), slice(5, 25))                  # 9 cells thick
    assert rule_min.violation(mesh, design(strip2)) == 1.0
    assert rule_min.violation(mesh, design(strip5)) == 0.0
    # the 3-cell gap between a 5-cell strip and a block is a hole below the minimum;
    # the block's corners (3 cells each) are sharper than the disc
    lower_block = (slice(13, 19), slice(5, 25))
    assert rule_min.violation(mesh, design(strip5, lower_block)) == pytest.approx((60 + 12) / 270)
    assert rule_max.violation(mesh, design(block)) == pytest.approx(80 / 180)   # 5 x 16 centres
    assert rule_max.violation(mesh, design((slice(8, 12), slice(None)))) == 0.0


# ---------------------------------------------------------------- ties
def test_pattern_sectors_and_repeats_tie_the_design():
    mesh = lw.structured_grid((12, 12))
    design = DesignSpace(mesh, ties=[lw.Pattern(sectors=4)])
    assert design.n_variables == 36                           # one quarter of the square
    rho = image(mesh, design.expand(np.random.default_rng(8).uniform(size=design.n_variables)))
    assert np.allclose(rho, np.rot90(rho))
    strip = lw.structured_grid((12, 4))
    design = DesignSpace(strip, ties=[lw.Pattern(repeats=3, axis="x")])
    assert design.n_variables == 16
    rho = image(strip, design.expand(np.arange(16.0)))
    assert np.array_equal(rho[:, :4], rho[:, 4:8]) and np.array_equal(rho[:, :4], rho[:, 8:])
    assert lw.Pattern(repeats=3, axis="x").violation(strip, rho.ravel() / 16) == 0.0


def test_symmetry_and_extrusion_objects_equal_the_old_arguments():
    mesh = lw.structured_grid((6, 4, 3))
    old = DesignSpace(mesh, symmetry=["x", ("y", 2.0)], extrusion="z")
    new = DesignSpace(mesh, ties=[lw.Symmetry("x"), lw.Symmetry("y", 2.0), lw.Extrusion("z")])
    assert old.n_variables == new.n_variables == 6
    assert (old.P != new.P).nnz == 0


def test_tie_rules_in_an_optimization_and_their_check():
    model = mbb_model(24, 8)
    result = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.5,
                                    manufacturing=[lw.Pattern(repeats=2, axis="x")], max_iterations=15,
                                    verbose=False)
    rho = image(model.mesh, result.density)
    assert np.allclose(rho[:, :12], rho[:, 12:])
    assert check_manufacturing(result, [lw.Pattern(repeats=2, axis="x")]) == \
        {"pattern(axis='x', repeats=2)": 0.0}
    assert result.parameters["manufacturing"] == [{"type": "pattern", "axis": "x", "repeats": 2}]


# ---------------------------------------------------------------- errors and the user surface
@pytest.mark.parametrize("make,words", [
    (lambda: lw.Overhang("up"), "direction"),
    (lambda: lw.Overhang((0, 0, 1)), "axis"),
    (lambda: lw.Overhang("+z", angle=95), "angle"),
    (lambda: lw.DrawDirection("+y", parting=2.0), "two_sided"),
    (lambda: lw.MemberSize(), "minimum, maximum"),
    (lambda: lw.MemberSize(minimum=5, maximum=2), "below minimum"),
    (lambda: lw.Pattern(sectors=3, repeats=2), "exactly one"),
    (lambda: lw.Pattern(sectors=1), "sectors"),
    (lambda: make_rule({"type": "undercut"}, "optimize.manufacturing[0]"), "optimize.manufacturing[0].type"),
    (lambda: make_rule({"type": "overhang", "build": "+y"}, "optimize.manufacturing[1]"), "build"),
])
def test_bad_rules_say_what_is_wrong(make, words):
    with pytest.raises(OptimizationError, match=words.replace("[", r"\[").replace("]", r"\]")):
        make()


def test_rules_need_a_mesh_of_their_dimension_and_size():
    mesh = lw.structured_grid((6, 4))
    with pytest.raises(OptimizationError, match="direction"):
        lw.Overhang("+z").stage(mesh, None)
    with pytest.raises(OptimizationError, match="two cells"):
        lw.MemberSize(minimum=1.0).stage(mesh, None)


def test_check_manufacturing_takes_results_arrays_and_tables():
    model = mbb_model(12, 6)
    rho = np.ones(model.mesh.n_cells)
    rules = [lw.Overhang("+y"), {"type": "draw_direction", "direction": "+y"}]
    expected = {"overhang(build_direction='+y', angle=45.0)": 0.0,
                "draw_direction(direction='+y', two_sided=False)": 0.0}
    assert check_manufacturing(rho, rules, model=model) == expected
    assert check_manufacturing((rho, model), rules) == expected
    assert manufacturing_report(model, rho, rules) == expected
    with pytest.raises(OptimizationError, match="model="):
        check_manufacturing(rho, rules)
    with pytest.raises(OptimizationError, match="12 cells|72 cells"):
        check_manufacturing(np.ones(5), rules, model=model)


# ---------------------------------------------------------------- issue 11: the MBB beam
@pytest.fixture(scope="module")
def mbb_free():
    model = mbb_model()
    return model, lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=2.0, projection="heaviside",
                                         optimizer="mma", max_iterations=300, verbose=False)


def test_mbb_printed_along_y_is_supported(mbb_free):
    model, free = mbb_free
    rule = lw.Overhang("+y")
    assert 0.02 < rule.violation(model, free.density) < 0.1          # unconstrained: about 5 %
    printed = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=2.0, projection="heaviside",
                                     optimizer="mma", manufacturing=[rule], max_iterations=300, verbose=False)
    assert rule.violation(model, printed.density) < 0.01
    assert printed.volume_fraction == pytest.approx(free.volume_fraction, abs=0.01)
    assert printed.compliance["mbb"] < 1.6 * free.compliance["mbb"]


def test_mbb_cast_along_y_has_no_undercut(mbb_free):
    model, free = mbb_free
    rule = lw.DrawDirection("+y")
    assert rule.violation(model, free.density) > 0.4                 # trusses hang over their holes
    cast = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=2.0, projection="heaviside",
                                  optimizer="mma", manufacturing=[rule], max_iterations=300, verbose=False)
    assert rule.violation(model, cast.density) < 0.01
    assert cast.volume_fraction == pytest.approx(free.volume_fraction, abs=0.01)
    # a cast MBB is a beam of varying depth standing on its lower face: measured 3.1x the truss's
    # compliance (584.7 against 189.2), the price of having no holes under material
    assert cast.compliance["mbb"] < 3.5 * free.compliance["mbb"]


def thinnest_member_at_least(solid: np.ndarray, width: int) -> bool:
    """Opening with a (width x width) disc leaves every solid pixel: no member thinner than width."""
    disc = np.hypot(*np.mgrid[-(width // 2):width // 2 + 1, -(width // 2):width // 2 + 1]) <= width / 2
    opened = ndimage.binary_dilation(ndimage.binary_erosion(solid, disc, border_value=1), disc)
    return bool(np.all(opened[solid]))


@pytest.mark.parametrize("subproblem", ["interior point", "dual"])
def test_mbb_minimum_member_size(mbb_free, subproblem, monkeypatch):
    """Both MMA subproblem solvers: with a move limit fixed while β doubled to 32, the four
    chained projections of the opening and closing made the design collapse (compliance 194 ->
    1 122-28 045 at β = 32, ending at 554 with the dual) or not, by the last digits (195 with the
    interior point); the move shrinking above β = 8 (lightweight/optimize/loop.py) gives 194.0
    (interior point, no cell violating) and 193.3 (dual, 0.2 % of the solid violating)."""
    from lightweight.optimize import mma
    if subproblem == "dual":
        monkeypatch.setattr(mma, "DUAL_FROM_VARIABLES", 1)
    model, free = mbb_free
    assert not thinnest_member_at_least(np.eye(8, dtype=bool) | np.eye(8, k=1, dtype=bool), 3)
    rule = lw.MemberSize(minimum=3.0)
    sized = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.5, projection="heaviside",
                                   optimizer="mma", manufacturing=[rule], max_iterations=300,
                                   min_stiffness=1e-6, verbose=False)
    solid = image(model.mesh, sized.density) > 0.5
    if subproblem == "interior point":
        assert thinnest_member_at_least(solid, 3)
        assert rule.violation(model, sized.density) == 0.0
    assert rule.violation(model, sized.density) < 0.005
    assert sized.compliance["mbb"] < 1.1 * free.compliance["mbb"]    # measured 193.3-194.0 against 189.2


def test_mma_move_limit_shrinks_with_the_projection_beta():
    """move up to β = 8, then move * 8 / β, set whenever the continuation restarts MMA; kept fixed
    with shrink_move_with_beta=False; OC keeps top88's fixed move."""
    from lightweight.optimize.api import compliance_problem, make_loop
    model = mbb_model(24, 8)
    seen = {}
    for shrink in (True, False):
        loop = make_loop(model, compliance_problem(model, 0.5), filter_radius=1.5, projection="heaviside",
                         optimizer="mma", move=0.2, continuation_interval=1, max_iterations=12,
                         min_stiffness=1e-3, verbose=False, shrink_move_with_beta=shrink)
        moves = {}
        for _ in range(8):
            loop.step()
            moves[loop.schedule.beta] = loop.mma.move_limit
        seen[shrink] = moves
    assert seen[True] == {2.0: 0.2, 4.0: 0.2, 8.0: 0.2, 16.0: 0.1, 32.0: 0.05}
    assert set(seen[False].values()) == {0.2}
    recorded = make_loop(model, compliance_problem(model, 0.5), filter_radius=1.5, projection="heaviside",
                         verbose=False, shrink_move_with_beta=False).parameters
    assert recorded["shrink_move_with_beta"] is False       # on record (and in the resume key)
    with pytest.raises(lw.LightweightError, match="shrink_move_with_beta must be True"):
        make_loop(model, compliance_problem(model, 0.5), filter_radius=1.5, projection="heaviside",
                  verbose=False, shrink_move_with_beta="no")     # a string would read as True


def test_mbb_maximum_member_size(mbb_free):
    model, free = mbb_free
    rule = lw.MemberSize(maximum=4.0)
    assert rule.violation(model, free.density) > 0.02
    sized = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.5, projection="heaviside",
                                   manufacturing=[rule], max_iterations=300, verbose=False)
    assert sized.parameters["optimizer"] == "mma"                     # the local volume constraint needs it
    solid = image(model.mesh, sized.density) > 0.5
    disc = np.hypot(*np.mgrid[-2:3, -2:3]) <= 2.0                      # diameter 5 > maximum
    too_thick = ndimage.binary_erosion(solid, disc, border_value=0)
    assert too_thick.sum() <= 0.01 * solid.sum()                       # measured 0.7 %
    assert rule.violation(model, sized.density) < 0.01
    assert sized.compliance["mbb"] < 1.3 * free.compliance["mbb"]     # measured 224.3 against 189.2 (234.5 with a fixed move)


def test_case_file_manufacturing_tables(tmp_path):
    from lightweight.casefile import read_case
    from lightweight.errors import CaseFileError
    text = """
[mesh]
grid = [12, 6]
size = [12.0, 6.0]
[material]
E = 1.0
nu = 0.3
[supports]
xmin = "xy"
[[loads.tip]]
type = "point"
set = "xmax"
value = [0.0, -1.0]
[optimize]
volume_fraction = 0.5
filter_radius = 1.5
[[optimize.manufacturing]]
type = "overhang"
build_direction = "+y"
angle = 45
[[optimize.manufacturing]]
type = "pattern"
repeats = 2
axis = "x"
"""
    path = tmp_path / "case.toml"
    path.write_text(text)
    rules = read_case(path).optimize["manufacturing"]
    assert [r.describe() for r in rules] == [{"type": "overhang", "build_direction": "+y", "angle": 45.0},
                                             {"type": "pattern", "axis": "x", "repeats": 2}]
    path.write_text(text.replace('build_direction = "+y"', 'build_direction = "up"'))
    with pytest.raises(CaseFileError, match=r"optimize\.manufacturing\[0\].*direction"):
        read_case(path)
    path.write_text(text.replace('type = "pattern"', 'type = "forging"'))
    with pytest.raises(CaseFileError, match=r"optimize\.manufacturing\[1\].*forging"):
        read_case(path)


def test_bracket_case_files_name_their_process():
    from lightweight.casefile import read_case
    cast = read_case(ROOT / "examples" / "cases" / "bracket_cast.toml").optimize["manufacturing"]
    printed = read_case(ROOT / "examples" / "cases" / "bracket_printed.toml").optimize["manufacturing"]
    assert [r.describe() for r in cast] == [{"type": "draw_direction", "direction": "+z", "two_sided": True}]
    assert [r.describe() for r in printed] == [{"type": "overhang", "build_direction": "+y", "angle": 45.0}]


def test_overhang_and_draw_on_an_unstructured_triangle_mesh():
    """The same MBB on triangles (no grid): the overhang runs on background voxels, the draw on
    geometric columns; both leave < 1 % of the solid violating the rule."""
    mesh = lw.structured_grid((30, 10), cell_type="triangle")
    assert mesh.grid is None
    mesh.add_node_set("load", lambda p: (p[:, 0] == 0) & (p[:, 1] == 10))
    mesh.add_node_set("roller", lambda p: (p[:, 0] == 30) & (p[:, 1] == 0))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "x", "roller": "y"},
                     loads={"mbb": lw.PointLoad("load", (0.0, -1.0))})
    for rule in (lw.Overhang("+y", voxel_size=1.0), lw.DrawDirection("+y")):
        result = lw.minimize_compliance(model, volume_fraction=0.5, filter_radius=1.5, projection="heaviside",
                                        optimizer="mma", manufacturing=[rule], max_iterations=150, verbose=False)
        assert rule.violation(model, result.density) < 0.01, rule


@pytest.mark.slow
@pytest.mark.parametrize("script,rule", [("bracket_cast", lw.DrawDirection("+z", two_sided=True)),
                                         ("bracket_printed", lw.Overhang("+y"))])
def test_bracket_examples(script, rule, tmp_path, monkeypatch):
    """examples/bracket_cast.py and bracket_printed.py (~40 s each): measured 0.163 / 0.165 kg, 0 % / 0.9 %."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    module = __import__(script)
    result = module.main(["--quiet", "--out", str(tmp_path / f"{script}.vtu")])
    assert rule.violation(result.model, result.density) < 0.01
    assert result.compliance["brake"] <= 1.001 * result.parameters["compliance_limits"]["brake"]
    assert result.mass < 0.2e-3


def test_overhang_on_a_3d_cantilever():
    """Hexes built along +z (five-cell stencil): measured on 16 x 4 x 8, free 11.8 % unsupported,
    with the rule 0 % at 1.09x the compliance; here a smaller twin."""
    mesh = lw.structured_grid((12, 3, 6))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xyz"},
                     loads={"tip": [lw.Traction("xmax", (0.0, 0.0, -1.0))]})
    rule = lw.Overhang("+z")
    result = lw.minimize_compliance(model, volume_fraction=0.3, filter_radius=1.5, projection="heaviside",
                                    optimizer="mma", manufacturing=[rule], max_iterations=60, verbose=False)
    assert rule.violation(model, result.density) < 0.01
    assert result.volume_fraction == pytest.approx(0.3, abs=0.01)
