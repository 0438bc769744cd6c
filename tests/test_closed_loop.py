"""The engineer's closed loop on the control arm (Gmsh tets, three bores, three load cases):
one case file -> optimized design -> exported part with the named sets -> the part re-evaluated
by `lightweight evaluate` and by verify_export, which names what is missed, by how much and why."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.cli import main

pytest.importorskip("gmsh")
pytest.importorskip("pyvista")

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "examples" / "cases" / "control_arm.toml"
MESH = ROOT / "meshes" / "control_arm.msh"
ITERATIONS = 30


def case_copy(tmp_path, requirements: str | None = None, name="arm.toml") -> Path:
    """The shipped case with the mesh path made absolute (and other [requirements] if given)."""
    text = CASE.read_text().replace('file = "../../meshes/control_arm.msh"', f'file = "{MESH}"')
    if requirements is not None:
        text = re.sub(r"\[requirements\]\n(.*?\n)\n", f"[requirements]\n{requirements}\n\n", text, flags=re.S)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    """`lightweight optimize CASE --export`: the whole loop from the command line, run in this
    process; also keeps the OptimizationResult that minimize_mass returned inside the command
    (the `design` fixture's result: one optimization of the arm for the module, not two)."""
    import contextlib
    import io
    import lightweight.optimize
    tmp = tmp_path_factory.mktemp("arm")
    out = tmp / "out"
    printed = io.StringIO()
    results = []
    run = lightweight.optimize.minimize_mass

    def keep(*args, **kwargs):
        results.append(run(*args, **kwargs))
        return results[-1]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(lightweight.optimize, "minimize_mass", keep)
        code = main(["optimize", str(case_copy(tmp)), "--out", str(out), "--quiet", "--export",
                     "--iterations", str(ITERATIONS)])
    assert code == 0 and len(results) == 1
    (out / "stdout.txt").write_text(printed.getvalue())
    return tmp, out, json.loads((out / "arm.json").read_text()), results[0]


@pytest.fixture(scope="module")
def loop(optimized):
    tmp, out, summary, _ = optimized
    return tmp, out, summary


def test_the_shipped_mesh_is_small_and_names_the_bores():
    assert MESH.stat().st_size < 300_000
    mesh = lw.read_mesh(MESH)
    assert mesh.cell_type == "tetra" and mesh.n_cells < 5000
    assert {"bore_front", "bore_rear", "bore_ball"} <= set(mesh.face_sets)


def test_optimize_export_reports_the_part_next_to_the_design(loop, capsys):
    tmp, out, summary = loop
    part = lw.read_mesh(summary["part_file"])
    # the part carries the bores: supports and couplings land on them
    assert {"bore_front", "bore_rear", "bore_ball"} <= set(part.face_sets)
    assert "arm" in part.cell_sets
    rows = {row["requirement"]: row for row in summary["part"]["requirements"]}
    assert set(rows) == {"compliance.braking", "compliance.cornering", "compliance.bump",
                         "min_safety_factor", "max_mass"}
    for row in rows.values():          # every figure of the part next to the design's, with a margin
        assert row["design"] is not None and row["part"] is not None and row["margin"] is not None
        assert row["pass"] == (row["margin"] >= 0)
    assert rows["compliance.bump"]["unit"] == "N mm" and rows["max_mass"]["unit"] == "t"
    assert summary["units"]["stress"] == "MPa"
    # the terminal shows the design's mass with its unit and the part's table beside the design's
    printed = (out / "stdout.txt").read_text()
    assert re.search(r"mass [0-9.e-]+ t,", printed)
    assert re.search(r"compliance\.bump\s+600\s+[0-9.]+\s+[0-9.]+\s+[+-][0-9.]+%", printed)
    assert "N mm" in printed and "exported part (" in printed
    # the part's mass is its own volume times density, close to the design's material
    assert rows["max_mass"]["part"] == pytest.approx(rows["max_mass"]["design"], rel=0.1)
    # default tet size tied to the design's: the part has about as many tets as the design
    assert part.n_cells < 4 * lw.read_mesh(MESH).n_cells


def test_lightweight_evaluate_judges_the_exported_part_with_the_same_case_file(loop):
    tmp, out, summary = loop
    csv_path = tmp / "part.csv"
    assert main(["evaluate", str(case_copy(tmp)), summary["part_file"], "--out", str(csv_path),
                 "--quiet"]) == 0
    with open(csv_path) as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "ok", row["error"]
    # the batch evaluation of the file equals the loop's own re-evaluation
    for case in ("braking", "cornering", "bump"):
        assert float(row[f"compliance.{case}"]) == pytest.approx(
            summary["part"]["part"]["compliance"][case], rel=1e-6)
    assert float(row["mass"]) == pytest.approx(summary["part"]["part"]["mass"], rel=1e-9)


@pytest.fixture(scope="module")
def design(optimized, tmp_path_factory):
    """The case's min-mass design (ITERATIONS iterations) and its part exported by export_solid
    with the defaults: what `lightweight optimize --export` computed in `optimized` (the same
    minimize_mass call with the case's [optimize] options, the same export_solid call)."""
    _, _, summary, result = optimized
    tmp = tmp_path_factory.mktemp("arm_design")
    case = lw.read_case(case_copy(tmp))
    assert result.iterations <= ITERATIONS               # the command's --iterations cap
    return tmp, case, result, Path(summary["part_file"])


@pytest.fixture(scope="module")
def first_check(design):
    """verify_export of the design's part against the shipped case, without the refinement
    (what both tests below start from)."""
    _, case, result, part_path = design
    return lw.verify_export(result, part_path, case, refine=False)


def test_a_missed_requirement_is_reported_with_margin_mesh_error_and_hot_spots(design, first_check):
    tmp, case, result, part_path = design
    part = lw.read_mesh(part_path)
    first = first_check
    part_bump = first.part["compliance"]["bump"]
    # a limit 5 % below what the part reaches, and a safety factor it cannot reach
    strict = {**case.requirements, "max_compliance": {**case.requirements["max_compliance"],
                                                       "bump": 0.95 * part_bump},
              "min_safety_factor": 2.0 * first.part["safety_factor"]}
    check = lw.verify_export(result, part, strict)
    rows = {row["requirement"]: row for row in check.rows}
    assert not check.passed
    assert rows["compliance.bump"]["margin"] == pytest.approx(1 - 1 / 0.95, rel=1e-6)   # -5.3 %
    assert rows["min_safety_factor"]["margin"] == pytest.approx(-0.5, rel=1e-6)
    text = check.text()
    assert "compliance.bump" in text and "missed by 5.3 %" in text
    # the design mesh's discretization error, from tet4 -> tet10 on the same densities: tet4 is
    # stiff, so every compliance grows on the finer discretization
    assert check.mesh_error["method"] == "tet4 -> tet10"
    for case_name in ("braking", "cornering", "bump"):
        assert check.mesh_error[f"compliance.{case_name}"] > 0
    assert "design mesh error (tet4 -> tet10)" in text
    # the part's own tet4 error, and what is left with both on tet10: the exported geometry
    assert check.part_mesh_error["compliance.bump"] > 0 and "part mesh error (tet4 -> tet10)" in text
    geometry = ((1 + rows["compliance.bump"]["part"] / rows["compliance.bump"]["design"] - 1)
                * (1 + check.part_mesh_error["compliance.bump"]) / (1 + check.mesh_error["compliance.bump"]) - 1)
    assert f"with both on tet10 the part differs from the design by {100 * geometry:+.1f} %" in text
    # hot spots: the highest-stress cells of the part with coordinates and the nearest set
    spot = check.hot_spots[0]
    sol = check.part_solution
    assert spot["von_mises"] == pytest.approx(max(sol.max_von_mises.values()), rel=0.05)
    assert spot["nearest_set"] in part.node_sets
    nodes = part.points[part.node_set(spot["nearest_set"])]
    assert spot["distance"] == pytest.approx(np.linalg.norm(nodes - spot["point"], axis=1).min())
    assert f"from set {spot['nearest_set']!r}" in text
    json.dumps(check.summary())                                 # JSON-able for the summary file
    # the HTML report: the requirements table with the part's column, and the explanation
    from lightweight.report import write_report
    html = write_report(result, tmp / "arm.html", requirements=strict, units={"compliance": "N mm"},
                        part=check).read_text()
    section = html.split("<h2>Requirements</h2>", 1)[1].split("<h2>", 1)[0]
    bump = next(r for r in re.findall(r"<tr>(.*?)</tr>", section) if "compliance.bump" in r)
    assert "[N mm]" in bump and ">pass<" in bump and "-5.3 %" in bump and ">FAIL<" in bump
    assert "the exported part does NOT meet them" in section and "design mesh error" in section


def test_tighten_reruns_with_limits_scaled_by_the_measured_ratio(design, first_check, tmp_path):
    tmp, case, result, part_path = design
    first = first_check
    # require 3 % below what the part reaches in bump: the rerun must leave that margin
    limit = 0.97 * first.part["compliance"]["bump"]
    strict_case = lw.read_case(case_copy(tmp_path, requirements=f"max_compliance = {{bump = {limit}}}"))
    strict_case.optimize["max_iterations"] = ITERATIONS
    check = lw.verify_export(result, part_path, strict_case, tighten=True, refine=False)
    assert not check.passed
    assert check.tightened["max_compliance"]["bump"] == pytest.approx(
        min(2.0 * lw.solve(case.model).compliance["bump"], result.compliance["bump"] * limit /
            first.part["compliance"]["bump"]), rel=1e-6)
    assert check.rerun is not None and check.rerun_result is not None
    # the rerun's design is stiffer in bump than the first one, and its part was checked again
    assert check.rerun_result.compliance["bump"] < result.compliance["bump"]
    assert check.rerun.part["compliance"]["bump"] < first.part["compliance"]["bump"]
    assert "tightened the compliance limits" in check.explanation[-1]


def test_cell_quality_and_sliver_spots_are_called_artefacts():
    from lightweight.verify import ExportCheck, _explain, cell_quality
    regular = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    flat = regular.copy()
    flat[3] = [0.0, 0.0, -0.999]                                # almost in the plane of the others
    tets = lw.Mesh(np.vstack([regular, flat + 5.0]), np.array([[0, 1, 2, 3], [4, 6, 5, 7]]), "tetra")
    quality = cell_quality(tets)
    assert quality[0] == pytest.approx(1.0) and quality[1] < 0.05
    assert cell_quality(lw.structured_grid((2, 2, 2))) == pytest.approx(np.ones(8))
    assert cell_quality(lw.structured_grid((2, 2))) == pytest.approx(np.ones(4))
    spot = {"case": "bump", "von_mises": 188.4, "point": np.zeros(3), "nearest_set": "bore_front",
            "distance": 87.5, "cell": 1, "quality": float(quality[1])}
    row = {"requirement": "min_safety_factor", "limit": 1.5, "design": 7.1, "part": 1.27, "margin": -0.15,
           "pass": False, "unit": ""}
    text = "\n".join(_explain(ExportCheck([row], {}, {}, None, [spot], []), {"stress": "MPa"}))
    assert "188.4 MPa" in text and "sliver tet" in text and "meshing artefact" in text
