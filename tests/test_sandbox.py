"""Hostile and broken submissions (issue 12): each finding reproduced, each refused with one row.

Every file here is built in tmp_path: references out of the submission's folder, links, a zlib
bomb, oversize files, non-UTF-8 names, duplicate cells, orphan nodes, a 2D design for a 3D case,
a worker killed by memory, workers outliving their parent, the design's own stiffness law.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.batch import evaluate_design, evaluate_designs
from lightweight.fem.interpolation import Interpolation
from lightweight.sandbox import Limits, SubmissionError, inspect_design

from test_batch import CASE

SECRET = "TOP-SECRET-LINE-of-another-submitter"


@pytest.fixture
def setup(tmp_path):
    case = tmp_path / "case.toml"
    case.write_text(CASE)
    grid = lw.structured_grid((12, 4), size=(12.0, 4.0))
    submission = tmp_path / "submission"
    submission.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret.txt").write_text(SECRET + "\n")
    return case, grid, submission, other


def error_of(case, design, **kwargs) -> str:
    row = evaluate_design(str(case), str(design), **kwargs)
    assert row["status"] == "error"
    assert SECRET not in row["error"]
    return row["error"]


def test_xdmf_hdf5_path_outside_the_folder_is_refused(setup):
    case, grid, submission, other = setup
    lw.write_mesh(other / "x.xdmf", grid, cell_data={"density": np.ones(grid.n_cells)})
    design = submission / "design.xdmf"
    text = (other / "x.xdmf").read_text()
    for reference in ("../other/x.h5", str(other / "x.h5")):
        design.write_text(text.replace("x.h5:", reference + ":"))
        message = error_of(case, design)
        assert "points outside the design's folder" in message or "not a relative path" in message
        assert reference not in message and "x.h5" not in message     # never quotes the content


def test_xdmf_binary_data_item_and_xinclude_are_refused(setup):
    case, grid, submission, _ = setup
    lw.write_mesh(submission / "d.xdmf", grid)
    text = (submission / "d.xdmf").read_text()
    binary = submission / "binary.xdmf"
    binary.write_text(text.replace('Format="HDF"', 'Format="Binary"', 1).replace("d.h5:/data0", "/etc/passwd", 1))
    message = error_of(case, binary)
    assert "Format='Binary'" in message and "/etc/passwd" not in message
    include = submission / "include.xdmf"
    include.write_text(text.replace("<Domain>", '<Domain><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
                                                'href="../other/secret.txt"/>'))
    assert "XInclude is refused" in error_of(case, include)


def test_hdf5_external_link_is_refused(setup):
    import h5py
    case, grid, submission, other = setup
    lw.write_mesh(submission / "d.xdmf", grid)
    with h5py.File(other / "o.h5", "w") as file:
        file["points"] = np.zeros((65, 3))
    with h5py.File(submission / "d.h5", "a") as file:
        del file["data0"]
        file["data0"] = h5py.ExternalLink(str(other / "o.h5"), "/points")
    assert "ExternalLink" in error_of(case, submission / "d.xdmf")


def test_abaqus_include_is_refused(setup):
    case, grid, submission, other = setup
    lw.write_mesh(other / "theirs.inp", grid)
    deck = submission / "mine.inp"
    deck.write_text(f"*HEADING\n*INCLUDE, INPUT={other / 'theirs.inp'}\n")
    message = error_of(case, deck)
    assert "line 2 reads another file" in message and "theirs" not in message
    deck.write_text("*heading\n*Node, input=nodes.txt\n")
    assert "reads another file" in error_of(case, deck)


def test_symlinked_design_is_refused_without_quoting_the_target(setup):
    case, grid, submission, other = setup
    link = submission / "design.inp"
    link.symlink_to(other / "secret.txt")
    message = error_of(case, link)
    assert "symbolic link" in message
    with pytest.raises(SubmissionError, match="symbolic link"):
        inspect_design(link)


@pytest.mark.parametrize("suffix", [".vtk", ".stl", ".obj", ".med", ".txt"])
def test_only_documented_formats_are_accepted(setup, suffix):
    case, grid, submission, _ = setup
    design = submission / f"design{suffix}"
    design.write_text(SECRET)
    message = error_of(case, design)
    assert "is not accepted" in message and ".msh" in message and ".xdmf" in message


def test_design_hash_covers_the_hdf5_file(setup, tmp_path):
    case, grid, submission, _ = setup
    design = submission / "d.xdmf"
    lw.write_mesh(design, grid, cell_data={"density": np.full(grid.n_cells, 1.0)})
    out = tmp_path / "r.csv"
    first = evaluate_designs(case, [design], out)[0]
    lw.write_mesh(design, grid, cell_data={"density": np.full(grid.n_cells, 0.5)})   # same .xdmf text
    second = evaluate_designs(case, [design], out)[0]
    assert first["status"] == second["status"] == "ok"
    assert second["design_sha256"] != first["design_sha256"]
    assert second["mass"] == pytest.approx(0.5 * first["mass"])      # recomputed, not the stale row
    assert first["design_sha256"] != lw.provenance.file_sha256(design)


def test_oversize_file_is_refused_without_reading_it(setup):
    case, grid, submission, _ = setup
    big = submission / "zeros.msh"
    with open(big, "wb") as file:
        file.truncate(300 * 2**20)                # sparse: 300 MiB of zeros, no disk used
    t0 = time.perf_counter()
    message = error_of(case, big)
    assert "the limit is 256 MiB per file" in message and time.perf_counter() - t0 < 5


def vtu_with_bomb(grid, path: Path, inflated_mb: int) -> None:
    """A valid .vtu plus a zlib-compressed cell array that inflates to ``inflated_mb`` MiB."""
    lw.write_mesh(path, grid)
    block = 1 << 20
    compressed = zlib.compress(bytes(block), 9)
    n = inflated_mb
    header = np.array([n, block, block] + [len(compressed)] * n, dtype="<u4").tobytes()   # VTK's UInt32
    import base64
    data = base64.b64encode(header).decode() + base64.b64encode(compressed * n).decode()
    array = (f'<DataArray type="UInt8" Name="junk" format="binary">{data}</DataArray>')
    text = path.read_text()
    text = text.replace("<CellData>", "<CellData>" + array, 1) if "<CellData>" in text else \
        text.replace("</Piece>", f"<CellData>{array}</CellData></Piece>", 1)
    path.write_text(text)


def test_zlib_bomb_vtu_is_refused_before_it_inflates(setup):
    case, grid, submission, _ = setup
    bomb = submission / "bomb.vtu"
    vtu_with_bomb(grid, bomb, inflated_mb=64)
    assert bomb.stat().st_size < 2**20                  # small compressed
    with pytest.raises(SubmissionError, match="inflates to more than 16 MiB"):
        inspect_design(bomb, Limits(max_inflated_mb=16))
    limited = case.parent / "limited.toml"
    limited.write_text(CASE + "\n[limits]\nmax_inflated_mb = 16\n")
    assert "limits.max_inflated_mb" in error_of(limited, bomb)
    assert inspect_design(bomb, Limits(max_inflated_mb=128)).sha256   # within the limit it is fine


def test_too_many_cells_is_refused(setup):
    case, grid, submission, _ = setup
    design = submission / "d.vtu"
    lw.write_mesh(design, grid)
    assert "has 48 cells; the limit is 10" in error_of(case, design, limits=Limits(max_cells=10))


def test_non_utf8_file_name_gives_a_csv(setup, tmp_path):
    case, grid, submission, _ = setup
    folder = os.fsencode(submission)
    name = os.path.join(folder, b"d\xff\xfe.vtu")
    lw.write_mesh(os.fsdecode(name), grid)
    out = tmp_path / "r.csv"
    rows = evaluate_designs(case, [os.fsdecode(name)], out)
    assert rows[0]["status"] == "ok" and rows[0]["design"].endswith("d\\xff\\xfe.vtu")
    with open(out, newline="", encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert table[0]["design"] == rows[0]["design"]
    assert json.loads(out.with_suffix(".jsonl").read_text())["status"] == "ok"


def test_duplicate_cells_are_refused(setup):
    case, grid, submission, _ = setup
    doubled = lw.Mesh(grid.points, np.vstack([grid.cells, grid.cells[:3]]), "quad")
    design = submission / "doubled.vtu"
    lw.write_mesh(design, doubled)
    message = error_of(case, design)
    assert "3 cell(s) repeat another cell's nodes (cells [48, 49, 50])" in message


def test_orphan_nodes_are_not_a_mechanism(setup):
    case, grid, submission, _ = setup
    plain, orphans = submission / "plain.vtu", submission / "orphans.vtu"
    lw.write_mesh(plain, lw.Mesh(grid.points, grid.cells, "quad", node_sets=dict(grid.node_sets)))
    points = np.vstack([[[50.0, 50.0]], grid.points, [[-9.0, 3.0]]])     # unused nodes first and last
    sets = {k: v + 1 for k, v in grid.node_sets.items()}
    lw.write_mesh(orphans, lw.Mesh(points, grid.cells + 1, "quad", node_sets=sets))
    a, b = evaluate_design(str(case), str(plain)), evaluate_design(str(case), str(orphans))
    assert b["status"] == "ok", b["error"]
    assert b["compliance.mbb"] == pytest.approx(a["compliance.mbb"], rel=1e-10)
    assert b["mass"] == pytest.approx(a["mass"])


def test_2d_design_for_a_3d_case_blames_the_design(setup, tmp_path):
    _, grid, submission, _ = setup
    case3d = tmp_path / "case3d.toml"
    case3d.write_text("""
[mesh]
grid = [4, 2, 2]
size = [4.0, 2.0, 2.0]
[material]
E = 1.0
nu = 0.3
[supports]
xmin = "xyz"
[[loads.tip]]
type = "point"
set = "xmax"
value = [0.0, 0.0, -1.0]
""")
    design = submission / "flat.vtu"
    lw.write_mesh(design, grid)
    message = error_of(case3d, design)
    assert message.startswith("SubmissionError: design ") and "is a 2D mesh, but the case is 3D" in message
    assert "case file" not in message


def test_memory_hog_kills_only_its_worker_also_with_jobs_1(setup, tmp_path):
    case, grid, submission, _ = setup
    good, hog = submission / "good.vtu", submission / "hog.vtu"
    lw.write_mesh(good, grid)
    lw.write_mesh(hog, lw.Mesh(grid.points * 2.0, grid.cells, "quad", node_sets=dict(grid.node_sets)))
    rows = evaluate_designs(case, [hog, good], tmp_path / "r.csv", evaluate=_hog,
                            limits=Limits(memory_mb=2500, time_limit=120))
    assert [r["status"] for r in rows] == ["error", "ok"]
    assert "died while evaluating this design, 2 times" in rows[0]["error"]
    assert "memory limit 2500 MiB" in rows[0]["error"]


def _hog(case_path, design_path, limits=None):
    """Allocates past any sane memory limit on designs named hog* (a design that blows the memory)."""
    from batch_faults import hog_memory_on_hog_designs
    return hog_memory_on_hog_designs(case_path, design_path, limits)


def test_workers_die_with_their_parent(setup, tmp_path):
    case, grid, submission, _ = setup
    for name in ("slow1.vtu", "slow2.vtu"):
        lw.write_mesh(submission / name, grid)
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "from batch_faults import hang_on_slow_designs; from lightweight.batch import evaluate_designs; "
              f"evaluate_designs({str(case)!r}, [{str(submission / 'slow1.vtu')!r}, {str(submission / 'slow2.vtu')!r}], "
              f"{str(tmp_path / 'r.csv')!r}, jobs=2, evaluate=hang_on_slow_designs)")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = _children(parent.pid)
        assert len(workers) >= 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_design_is_judged_under_its_own_recorded_law(setup):
    case, grid, submission, _ = setup
    from lightweight.casefile import read_case
    model = read_case(case).model
    density = np.where(grid.cell_centers()[:, 1] > 2.0, 1.0, 0.4)
    ramp = Interpolation("ramp", 8.0, 1e-9)
    path = submission / "ramp.vtu"
    lw.solve(model, density=density, interpolation=ramp).save(path)
    row = evaluate_design(str(case), str(path))
    expected = lw.solve(model, density=density, interpolation=ramp).compliance["mbb"]
    top88 = lw.solve(model, density=density).compliance["mbb"]
    assert row["status"] == "ok" and row["interpolation"] == "ramp p=8 min_stiffness=1e-09"
    assert row["compliance.mbb"] == pytest.approx(expected, rel=1e-9)
    assert abs(expected - top88) > 1e-3 * top88          # the law matters for this design
    # a design that says nothing: top88's SIMP
    silent = submission / "silent.vtu"
    lw.write_mesh(silent, grid, cell_data={"density": density})
    row = evaluate_design(str(case), str(silent))
    assert row["interpolation"] == "simp p=3 min_stiffness=1e-09"
    assert row["compliance.mbb"] == pytest.approx(top88, rel=1e-9)


def test_malformed_recorded_law_is_an_error_row(setup):
    case, grid, submission, _ = setup
    density = np.full(grid.n_cells, 0.7)
    for bad in ({"interpolation": "cubic"}, {"penalty": "three"}, {"min_stiffness": 2.0}):
        path = submission / "bad.vtu"
        provenance = {"parameters": bad}
        lw.write_mesh(path, grid, cell_data={"density": density}, metadata={"provenance": json.dumps(provenance)})
        message = error_of(case, path)
        assert "recorded interpolation law is malformed" in message


def test_density_outside_0_1_names_the_design(setup):
    case, grid, submission, _ = setup
    path = submission / "over.vtu"
    lw.write_mesh(path, grid, cell_data={"density": np.full(grid.n_cells, 1.5)})
    message = error_of(case, path)
    assert f"design {path}: cell field 'density' must lie in [0, 1]" in message


def test_very_thin_valid_section_is_not_called_a_mechanism(setup):
    """A supported part hanging on a 1e-3 sliver (a near-hinge: compliance ~1e9 x the solid's, the
    solvers' residual checks trip) is told that its section is too thin, not 'add supports'."""
    case, grid, submission, _ = setup
    centers = grid.cell_centers()
    keep = ~((centers[:, 0] > 6.0) & (centers[:, 0] < 7.0) & (centers[:, 1] < 3.0))   # a notch to the top row
    rows = {}
    for thickness in (1e-2, 1e-3):
        points = grid.points.copy()
        sliver = np.isclose(points[:, 1], 3.0) & (points[:, 0] >= 6.0 - 1e-9) & (points[:, 0] <= 7.0 + 1e-9)
        points[sliver, 1] = 4.0 - thickness              # the notch's top cell becomes a sliver
        design = submission / f"thin{thickness:g}.vtu"
        lw.write_mesh(design, lw.Mesh(points, grid.cells[keep], "quad", node_sets=dict(grid.node_sets)))
        rows[thickness] = evaluate_design(str(case), str(design))
    assert rows[1e-2]["status"] == "ok" and rows[1e-2]["compliance.mbb"] > 1e5
    message = rows[1e-3]["error"]
    assert "numerically singular, but this is not a mechanism" in message
    assert "can move as a mechanism" not in message and "smallest cell volume" in message


def test_vtk_appended_raw_vtu_is_accepted_and_counted(setup):
    """ParaView/VTK's default .vtu (raw appended, zlib): accepted; its inflated size is counted."""
    vtk = pytest.importorskip("vtk")
    pv = pytest.importorskip("pyvista")
    _, _, submission, _ = setup
    grid = lw.structured_grid((4, 2, 2))
    cells = np.hstack([np.full((grid.n_cells, 1), 8), grid.cells]).ravel()
    ugrid = pv.UnstructuredGrid(cells, np.full(grid.n_cells, 12, dtype=np.uint8), grid.points)
    ugrid.cell_data["density"] = np.linspace(0.1, 1.0, grid.n_cells)
    writer = vtk.vtkXMLUnstructuredGridWriter()
    writer.SetInputData(ugrid)
    path = submission / "paraview.vtu"
    writer.SetFileName(str(path))
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()
    writer.Write()
    assert b'encoding="raw"' in path.read_bytes()
    assert inspect_design(path).sha256 == lw.provenance.file_sha256(path)
    with pytest.raises(SubmissionError, match="inflates to more than"):
        inspect_design(path, Limits(max_inflated_mb=0.0005))       # ~2.5 kB of arrays
    _, _, cells_data = lw.read_mesh_fields(path)
    np.testing.assert_allclose(cells_data["density"], np.linspace(0.1, 1.0, grid.n_cells))


def test_xml_entities_are_refused_even_after_a_long_comment(setup):
    case, grid, submission, other = setup
    design = submission / "entity.vtu"
    lw.write_mesh(design, grid)
    text = design.read_text()
    doctype = (f'<!-- {"x" * 10000} --><!DOCTYPE VTKFile [<!ENTITY leak SYSTEM "file://{other}/secret.txt">]>')
    design.write_text(text.replace("<VTKFile", doctype + "<VTKFile", 1))
    message = error_of(case, design)
    assert "DOCTYPE or entity declarations is refused" in message


def test_evaluator_process_never_inflates_or_opens_hdf5(setup, tmp_path, monkeypatch):
    """The parent only names and hashes a design; the deep checks run in the worker process."""
    import lightweight.sandbox as sandbox
    case, grid, submission, _ = setup
    bomb = submission / "bomb.vtu"
    vtu_with_bomb(grid, bomb, inflated_mb=64)
    lw.write_mesh(submission / "d.xdmf", grid)

    def forbidden(*args, **kwargs):
        raise AssertionError("deep check in the evaluator's own process")

    monkeypatch.setattr(sandbox, "_inflate_bounded", forbidden)
    monkeypatch.setattr(sandbox, "_check_hdf5_dataset", forbidden)
    limited = case.parent / "limited.toml"
    limited.write_text(CASE + "\n[limits]\nmax_inflated_mb = 16\n")
    rows = evaluate_designs(limited, [bomb, submission / "d.xdmf"], tmp_path / "r.csv")
    assert "limits.max_inflated_mb" in rows[0]["error"]          # found by the worker
    assert rows[1]["status"] == "ok", rows[1]["error"]             # HDF5 opened by the worker only
