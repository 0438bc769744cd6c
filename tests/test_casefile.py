"""Case files (TOML): the model they describe, their errors (file and key named), the CLI run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.casefile import evaluate_requirements, read_case
from lightweight.cases import mbb_beam
from lightweight.cli import main

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "examples" / "cases"

SMALL_MBB = """
[mesh]
grid = [12, 4]
size = [12.0, 4.0]

[sets.load]
box = [[0.0, 4.0], [0.0, 4.0]]

[sets.roller]
box = [[12.0, 0.0], [12.0, 0.0]]

[material]
E = 1.0
nu = 0.3
density = 2.0
yield_strength = 10.0

[supports]
xmin = "x"
roller = "y"

[[loads.mbb]]
type = "point"
set = "load"
value = [0.0, -1.0]

[requirements]
max_compliance = 1000.0
max_mass = 100.0

[optimize]
problem = "min_compliance"
volume_fraction = 0.5
filter = "sensitivity"
filter_radius = 1.5
optimizer = "oc"
"""


def write(tmp_path, text, name="case.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mbb_case_file_is_the_top88_run():
    case = read_case(CASES / "mbb.toml")
    options = dict(case.optimize)
    assert options.pop("problem") == "min_compliance"
    from_file = lw.minimize_compliance(case.model, verbose=False, **options)
    direct = lw.minimize_compliance(mbb_beam(60, 20), volume_fraction=0.5, filter="sensitivity",
                                    filter_radius=1.5, optimizer="oc", verbose=False)
    assert from_file.iterations == direct.iterations == 94
    np.testing.assert_array_equal(from_file.history_array("objective"), direct.history_array("objective"))


def test_bracket_case_reads_mesh_sets_and_hashes():
    case = read_case(CASES / "bracket.toml")
    assert case.model.mesh.n_cells == 12254
    assert case.requirements["max_compliance"] == {"brake": 60.0}
    assert case.optimize["problem"] == "min_mass" and case.optimize["non_design"] == ["bolt_holes", "load_face"]
    assert len(case.sha256) == 64 and len(case.mesh_sha256) == 64
    assert case.provenance()["case_sha256"] == case.sha256


def test_requirements_are_judged_on_a_solved_design(tmp_path):
    case = read_case(write(tmp_path, SMALL_MBB))
    solution = lw.solve(case.model)
    figures = evaluate_requirements(solution, case.requirements)
    area = 12.0 * 4.0
    assert figures["mass"] == pytest.approx(2.0 * area)
    assert figures["safety_factor"] == pytest.approx(10.0 / solution.von_mises["mbb"].max())
    assert figures["checks"] == {"compliance.mbb": True, "max_mass": True} and figures["pass"]
    strict = evaluate_requirements(solution, {**case.requirements, "max_mass": 1.0})
    assert strict["checks"]["max_mass"] is False and strict["pass"] is False


@pytest.mark.parametrize("change,message", [
    (("[optimize]", "[optimise]"), "unknown table(s) 'optimise'"),
    (("filter_radius = 1.5", "filter_raduis = 1.5"), "[optimize]: unknown key(s) 'filter_raduis'"),
    (('type = "point"', 'type = "torque"'), "[loads.mbb[0].type]: must be one of point"),
    (("value = [0.0, -1.0]", "value = [0.0, -1.0, 0.0]"), "needs 2 numbers for this 2D model"),
    (('roller = "y"', 'rollr = "y"'), "no node set 'rollr'"),
    (("box = [[12.0, 0.0], [12.0, 0.0]]", "box = [[13.0, 0.0], [14.0, 0.0]]"), "contains no node"),
    (("E = 1.0", "E = -1.0"), "[material]: material E"),
    (("E = 1.0", 'E = "steel"'), "[material.E]: must be a number"),
    (("grid = [12, 4]", "grid = [12, 0]"), "[mesh.grid]: must be 2 or 3 positive integers"),
    (("grid = [12, 4]", 'grid = [12, 4]\nfile = "part.msh"'), "give exactly one of file"),
    (("volume_fraction = 0.5", "max_compliance_factor = 1.5"), "belong to problem = \"min_mass\""),
    (("max_compliance = 1000.0", "max_compliance = {brake = 3.0}"), "unknown load case(s) 'brake'"),
    (("[[loads.mbb]]", "[[loads.mbb]"), "is not valid TOML"),
])
def test_bad_case_files_name_the_file_and_key(tmp_path, change, message):
    path = write(tmp_path, SMALL_MBB.replace(*change))
    with pytest.raises(lw.CaseFileError) as info:
        read_case(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_mesh_file_and_case_file(tmp_path):
    text = SMALL_MBB.replace("grid = [12, 4]\nsize = [12.0, 4.0]", 'file = "nowhere/part.msh"')
    with pytest.raises(lw.CaseFileError, match=r"\[mesh.file\]: mesh file .*nowhere/part.msh does not exist"):
        read_case(write(tmp_path, text))
    with pytest.raises(lw.CaseFileError, match="does not exist"):
        read_case(tmp_path / "absent.toml")


def assert_resume_ends_like_a_straight_run(case, out):
    """``optimize --resume`` up to 30 iterations ends where one uninterrupted run does."""
    assert main(["optimize", str(case), "--out", str(out), "--quiet", "--iterations", "30", "--resume"]) == 0
    resumed = json.loads((out / "case.json").read_text())
    straight = lw.minimize_compliance(mbb_beam(12, 4), volume_fraction=0.5, filter="sensitivity",
                                      filter_radius=1.5, optimizer="oc", max_iterations=30, verbose=False)
    assert resumed["iterations"] == straight.iterations
    assert resumed["compliance"]["mbb"] == straight.compliance["mbb"]


def test_cli_optimize_writes_design_summary_and_resumes(tmp_path, capsys):
    case = write(tmp_path, SMALL_MBB)
    out = tmp_path / "run"
    assert main(["optimize", str(case), "--out", str(out), "--quiet", "--iterations", "12"]) == 0
    summary = json.loads((out / "case.json").read_text())
    assert summary["iterations"] == 12 and summary["evaluation"]["pass"] is True
    assert summary["provenance"]["case_sha256"] == read_case(case).sha256
    _, _, cells = lw.read_mesh_fields(out / "case.vtu")
    assert cells["density"].shape == (48,)
    metadata = lw.read_metadata(out / "case.vtu")
    assert json.loads(metadata["provenance"])["case_sha256"] == summary["provenance"]["case_sha256"]
    # resume from the checkpoint with a higher cap: the same history as one uninterrupted run
    assert_resume_ends_like_a_straight_run(case, out)


def test_cli_optimize_errors(tmp_path):
    no_optimize = write(tmp_path, SMALL_MBB.split("[optimize]")[0])
    assert main(["optimize", str(no_optimize), "--out", str(tmp_path / "x")]) == 1
    assert main(["optimize", str(write(tmp_path, SMALL_MBB, "b.toml")), "--out", str(tmp_path / "y"),
                 "--resume"]) == 1


def test_cli_optimize_snapshots_and_report(tmp_path):
    pytest.importorskip("pyvista")
    import meshio
    case = write(tmp_path, SMALL_MBB)
    out = tmp_path / "snap"
    assert main(["optimize", str(case), "--out", str(out), "--quiet", "--iterations", "12",
                 "--snapshots", "5", "--report"]) == 0
    with meshio.xdmf.TimeSeriesReader(str(out / "case_snapshots.xdmf")) as reader:
        reader.read_points_cells()
        times = [reader.read_data(k)[0] for k in range(reader.num_steps)]
    assert times == [5.0, 10.0, 12.0]
    gif = (out / "case_snapshots.gif").read_bytes()
    assert gif[:6] in (b"GIF87a", b"GIF89a")
    page = (out / "case.html").read_text()
    assert page.count("data:image/png;base64,") >= 2


def test_cli_optimize_interrupted_keeps_the_design_and_resumes(tmp_path, capsys, monkeypatch):
    from lightweight.optimize.loop import SimpLoop
    case = write(tmp_path, SMALL_MBB)
    out = tmp_path / "run"
    step = SimpLoop.step

    def interrupted_at_15(self):
        if self.iteration == 14:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(SimpLoop, "step", interrupted_at_15)
    with pytest.raises(SystemExit) as exited:
        main(["optimize", str(case), "--out", str(out), "--quiet", "--iterations", "30"])
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert "stopped after iteration 14 (interrupted)" in err and "case.partial.vtu" in err
    _, _, cells = lw.read_mesh_fields(out / "case.partial.vtu")
    assert cells["density"].shape == (48,)
    monkeypatch.setattr(SimpLoop, "step", step)
    # the checkpoint of iteration 10 continues to the same end as an uninterrupted run
    assert_resume_ends_like_a_straight_run(case, out)


@pytest.mark.parametrize("change,message", [
    (("value = [0.0, -1.0]", "value = [0.0, nan]"), "[loads.mbb[0].value]: must be finite numbers"),
    (("E = 1.0", "E = inf"), "[material.E]: must be a finite number"),
    (("max_compliance = 1000.0", "max_compliance = {mbb = -3.0}"),
     "[requirements.max_compliance.mbb]: must be positive, got -3"),
    (("max_compliance = 1000.0", "max_compliance = nan"), "[requirements.max_compliance]: must be a positive number"),
    (("grid = [12, 4]", "grid = [100000, 100000, 100000]"), "[mesh.grid]: 100000 x 100000 x 100000 cells exceed"),
    (("grid = [12, 4]", "grid = [1e5, 1e5, 1e5]"), "[mesh.grid]: must be 2 or 3 positive integers"),
    (("[material]", '[model]\nthickness = "thick"\n\n[material]'), "[model.thickness]: must be a number, got 'thick'"),
    (("[material]", '[model]\nplane = 3\n\n[material]'), "[model.plane]: must be 'stress' or 'strain'"),
    (('roller = "y"', "roller = 7"), "[supports.roller]: must be a string of components"),
    (("[requirements]", "[limits]\nmemory_mb = -5\n\n[requirements]"), "[limits.memory_mb]: must be positive"),
    (("[requirements]", "[limits]\ntime_limit = \"long\"\n\n[requirements]"), "[limits.time_limit]: must be a number"),
    (("[requirements]", "[limits]\nmax_cels = 5\n\n[requirements]"), "[limits]: unknown key(s) 'max_cels'"),
    (("[requirements]", "[limits]\nmax_cells = 10\n\n[requirements]"), "[mesh.grid]: 12 x 4 cells exceed the limit of 10"),
    (("max_mass = 100.0", "max_mass = 100.0\nnested = " + "[" * 40 + "]" * 40),
     "nested deeper than 8 levels"),
])
def test_hostile_case_values_name_the_key(tmp_path, change, message):
    path = write(tmp_path, SMALL_MBB.replace(*change))
    with pytest.raises(lw.CaseFileError) as info:
        read_case(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_absurdly_nested_case_is_one_error_not_a_recursion_traceback(tmp_path):
    path = write(tmp_path, SMALL_MBB + "deep = " + "[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(lw.CaseFileError, match="nested|not valid TOML"):
        read_case(path)


def test_limits_table_sets_the_sandbox_limits(tmp_path):
    case = read_case(write(tmp_path, SMALL_MBB + "\n[limits]\nmax_cells = 5000\ntime_limit = 30\nmemory_mb = 0\n"))
    assert case.limits.max_cells == 5000 and case.limits.time_limit == 30.0 and case.limits.memory_mb == 0
    assert case.limits.max_file_mb == 256.0                          # the default where silent
    from lightweight.casefile import SECTION_KEYS
    assert SECTION_KEYS["limits"] == ("max_file_mb", "max_cells", "max_inflated_mb", "memory_mb", "time_limit")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated", b"garbage"])
def test_damaged_checkpoint_is_one_line_on_resume(tmp_path, content, capsys):
    case = write(tmp_path, SMALL_MBB)
    out = tmp_path / "run"
    out.mkdir()
    (out / "case.checkpoint.npz").write_bytes(content)
    assert main(["optimize", str(case), "--out", str(out), "--quiet", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint" in err and "is damaged" in err and err.count("\n") == 1
