"""Batch evaluation: one row per design, bad designs and dying workers never stop the batch."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.batch import evaluate_design, evaluate_design_in_child, evaluate_designs
from lightweight.cli import main

from batch_faults import die_on_crash_designs, hang_on_slow_designs

CASE = """
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
max_compliance = 400.0
max_mass = 70.0
"""


@pytest.fixture
def batch(tmp_path):
    """A case and designs: solid, SIMP, out-of-range density, garbage, no sets, missing."""
    case = tmp_path / "case.toml"
    case.write_text(CASE)
    grid = lw.structured_grid((12, 4), size=(12.0, 4.0))
    designs = tmp_path / "designs"
    designs.mkdir()
    lw.write_mesh(designs / "a_solid.vtu", grid)
    density = np.where(grid.cell_centers()[:, 1] > 2.0, 1.0, 0.3)
    lw.write_mesh(designs / "b_simp.vtu", grid, cell_data={"density": density})
    lw.write_mesh(designs / "c_bad_density.vtu", grid, cell_data={"density": np.full(grid.n_cells, -0.1)})
    (designs / "d_garbage.vtu").write_text("not a mesh")
    bare = lw.Mesh(grid.points, grid.cells, "quad")
    lw.write_mesh(designs / "e_no_sets.vtu", bare)
    files = sorted(str(p) for p in designs.iterdir()) + [str(designs / "f_missing.vtu")]
    return case, files, density


def test_rows_match_direct_analysis_and_errors_are_rows(batch, tmp_path):
    case, files, density = batch
    out = tmp_path / "out" / "results.csv"
    rows = evaluate_designs(case, files, out)
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "error", "error", "error"]
    from lightweight.casefile import read_case
    model = read_case(case).model
    solid = lw.solve(model)
    simp = lw.solve(model, density=density, penalty=3.0, min_stiffness=1e-9)
    # the design files are read as unstructured quads (no grid fast path): equal to round-off
    assert rows[0]["compliance.mbb"] == pytest.approx(solid.compliance["mbb"], rel=1e-9)
    assert rows[1]["compliance.mbb"] == pytest.approx(simp.compliance["mbb"], rel=1e-9)
    assert rows[0]["mass"] == pytest.approx(2.0 * 48.0) and rows[1]["mass"] == pytest.approx(2.0 * density.sum())
    assert rows[0]["check.max_mass"] is False and rows[1]["check.max_mass"] is True
    assert rows[1]["pass"] == (simp.compliance["mbb"] <= 400.0)
    assert rows[0]["safety_factor"] == pytest.approx(10.0 / solid.von_mises["mbb"].max())
    assert "[0, 1]" in rows[2]["error"] and "not well-formed XML" in rows[3]["error"]
    assert "no node set 'xmin'" in rows[4]["error"] and "does not exist" in rows[5]["error"]
    for row in rows:
        assert row["version"] == lw.__version__ and len(row["case_sha256"]) == 64 and row["timestamp"]
    assert rows[0]["design_sha256"] == lw.provenance.file_sha256(files[0])
    with open(out, newline="") as file:
        table = list(csv.DictReader(file))
    assert [r["design"] for r in table] == files
    header = list(table[0])
    assert header[:6] == ["design", "design_sha256", "status", "error", "mass", "volume"]
    for column in ("compliance.mbb", "max_displacement.mbb", "max_von_mises", "safety_factor", "pass",
                   "seconds", "version", "case_sha256", "timestamp"):
        assert column in header
    lines = out.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) == len(files) and json.loads(lines[0])["design"] == files[0]


def test_rerun_keeps_finished_rows_and_redoes_errors(batch, tmp_path):
    case, files, _ = batch
    out = tmp_path / "results.csv"
    first = evaluate_designs(case, files[:2], out)
    seen = []
    second = evaluate_designs(case, files[:3], out, progress=seen.append)
    assert [r["design"] for r in seen] == [files[2]]             # only the new design was computed
    assert second[:2] == first
    changed = Path(files[0])
    changed.write_bytes(changed.read_bytes() + b"<!-- resubmitted -->\n")   # new bytes, same mesh
    third = evaluate_designs(case, files[:1], out, progress=seen.append)
    assert seen[-1]["design"] == files[0] and third[0]["design_sha256"] != first[0]["design_sha256"]


def test_process_pool_survives_a_dying_worker_with_the_same_numbers(batch, tmp_path):
    case, files, _ = batch
    crash = Path(files[0]).with_name("crash_me.vtu")
    crash.write_bytes(Path(files[0]).read_bytes() + b"<!-- crash -->\n")   # own bytes: not a duplicate
    designs = files[:2] + [str(crash)] + files[2:4]
    rows = evaluate_designs(case, designs, tmp_path / "pool.csv", jobs=2, evaluate=die_on_crash_designs)
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "error", "error"]
    assert "worker process died" in rows[2]["error"]
    # the same figures as evaluate_design here, in this process (not a third batch's worker: one
    # worker start less); to round-off only, because what a process has loaded can move the last
    # bit (importing gmsh, as other test modules do, changes a von Mises maximum)
    serial = [evaluate_design(str(case), design) for design in files[:2]]
    for a, b in zip(serial, rows[:2]):
        assert a["compliance.mbb"] == pytest.approx(b["compliance.mbb"], rel=1e-12)
        assert a["max_von_mises"] == pytest.approx(b["max_von_mises"], rel=1e-12)


@pytest.mark.parametrize("jobs", [1, 2])
def test_time_limit_kills_a_hanging_design_and_keeps_the_rest(batch, tmp_path, jobs):
    case, files, _ = batch
    slow = tmp_path / "slow.vtu"
    slow.write_bytes(Path(files[0]).read_bytes() + b"<!-- slow -->\n")
    designs = [files[0], str(slow), files[1]]
    t0 = time.monotonic()
    rows = evaluate_designs(case, designs, tmp_path / "limited.csv", jobs=jobs, time_limit=8.0,
                            evaluate=hang_on_slow_designs)
    assert time.monotonic() - t0 < 60
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert "time limit exceeded: still running after 8 s" in rows[1]["error"]
    assert rows[1]["design_sha256"] == lw.provenance.file_sha256(slow)      # traceable
    on_disk = [json.loads(line) for line in (tmp_path / "limited.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in on_disk) == ["error", "ok", "ok"]


def test_time_limit_must_be_positive_and_fit_the_scheduler(batch, tmp_path):
    case, files, _ = batch
    with pytest.raises(lw.LightweightError, match="positive number of seconds"):
        evaluate_designs(case, files[:1], tmp_path / "x.csv", time_limit=0)
    with pytest.raises(lw.LightweightError, match="custom evaluate function"):
        evaluate_designs(case, files[:1], tmp_path / "x.csv", time_limit=5, scheduler="local",
                         evaluate=hang_on_slow_designs)


def test_design_in_a_child_process_same_row_or_time_limit(batch):
    """What a Dask task runs under a time limit: the same figures, or an error row at the limit."""
    case, files, _ = batch
    row = evaluate_design_in_child(str(case), files[1], time_limit=120.0)
    direct = evaluate_design(str(case), files[1])
    assert row["status"] == "ok"
    assert row["compliance.mbb"] == pytest.approx(direct["compliance.mbb"], rel=1e-12)
    late = evaluate_design_in_child(str(case), files[1], time_limit=0.05)   # Python cannot even start
    assert late["status"] == "error" and "time limit exceeded" in late["error"]
    assert late["design_sha256"] == direct["design_sha256"]


def test_dask_local_cluster(batch, tmp_path):
    pytest.importorskip("distributed")
    case, files, _ = batch
    # one LocalCluster, with a time limit: a run without one takes the same path (the child
    # process of evaluate_design_in_child, under the case's default limit) and cost a second
    # cluster; the limit itself is tested in test_design_in_a_child_process_same_row_or_time_limit
    rows = evaluate_designs(case, files[:3], tmp_path / "dask_limited.csv", jobs=1, scheduler="local",
                            time_limit=120.0)
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert [r["design"] for r in rows] == files[:3]
    assert "[0, 1]" in rows[2]["error"]
    # another process: equal to round-off (the last bit depends on the native libraries loaded)
    for row, design in zip(rows[:2], files[:2]):
        assert row["compliance.mbb"] == pytest.approx(evaluate_design(str(case), design)["compliance.mbb"],
                                                      rel=1e-12)


def test_cli_evaluate_folder_and_bad_case(batch, tmp_path, capsys):
    case, files, _ = batch
    out = tmp_path / "cli.csv"
    assert main(["evaluate", str(case), str(Path(files[0]).parent), files[-1], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 designs: 2 evaluated" in printed and "4 errors" in printed
    broken = tmp_path / "broken.toml"
    broken.write_text(CASE.replace("[material]", "[materiel]"))
    assert main(["evaluate", str(broken), files[0], "--out", str(tmp_path / "x.csv")]) == 1
    assert "unknown table(s) 'materiel'" in capsys.readouterr().err


def test_cli_time_limit(batch, tmp_path, capsys):
    case, files, _ = batch
    out = tmp_path / "limited.csv"
    assert main(["evaluate", str(case), files[0], "--out", str(out), "--time-limit", "120", "--quiet"]) == 0
    assert "1 designs: 1 evaluated" in capsys.readouterr().out
    assert main(["evaluate", str(case), files[0], "--out", str(out), "--time-limit", "-1"]) == 1
    assert "time_limit must be a positive number" in capsys.readouterr().err


def test_design_whose_void_cuts_the_load_path_gets_a_design_error(batch, tmp_path):
    case, _, _ = batch
    grid = lw.structured_grid((12, 4), size=(12.0, 4.0))
    left_only = np.where(grid.cell_centers()[:, 0] < 6.0, 1.0, 0.0)     # the roller sits in void
    path = tmp_path / "left_only.vtu"
    lw.write_mesh(path, grid, cell_data={"density": left_only})
    row = evaluate_design(str(case), str(path))
    assert row["status"] == "error" and row["error"].startswith("SingularStiffnessError: design ")
    assert "does not carry the loads to the supports" in row["error"]


def test_jobs_1_jobs_2_and_dask_over_tls_give_the_same_rows(batch, tmp_path):
    """Every path evaluates in a worker process; a remote-style scheduler over TLS (Dask's security)."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("cryptography")
    from distributed.security import Security
    case, files, _ = batch
    one = evaluate_designs(case, files[:3], tmp_path / "one.csv", jobs=1)
    two = evaluate_designs(case, files[:3], tmp_path / "two.csv", jobs=2)
    security = Security.temporary()
    # the scheduler and its worker in this process (no nanny and worker processes to start: what
    # lightweight sees is the same tls:// address with certificates); three worker threads, so
    # the three designs' child processes (a Python start each) run side by side
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False, protocol="tls://",
                                  host="127.0.0.1", security=security, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1")
        tls = evaluate_designs(case, files[:3], tmp_path / "tls.csv", scheduler=cluster.scheduler_address,
                               security=security)
    for a, b, c in zip(one, two, tls):
        assert a["status"] == b["status"] == c["status"]
        for key in ("compliance.mbb", "max_von_mises", "mass"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-12) and c[key] == pytest.approx(a[key], rel=1e-12)


@pytest.mark.parametrize("scheduler,message", [
    ("tcp://10.1.2.3:8786", "must use tls:// with certificates"),
    ("10.1.2.3:8786", "must use tls:// with certificates"),
    ("tls://10.1.2.3:8786", "tls:// needs certificates"),
])
def test_plain_tcp_to_a_remote_scheduler_is_refused(batch, tmp_path, scheduler, message):
    pytest.importorskip("distributed")
    case, files, _ = batch
    with pytest.raises(lw.LightweightError, match=message):
        evaluate_designs(case, files[:1], tmp_path / "x.csv", scheduler=scheduler)


def test_local_scheduler_binds_to_loopback(batch, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    case, files, _ = batch
    seen = {}

    class Stop(Exception):
        pass

    def fake_cluster(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(distributed, "LocalCluster", fake_cluster)
    with pytest.raises(Stop):
        evaluate_designs(case, files[:1], tmp_path / "x.csv", scheduler="local")
    assert seen["host"] == "127.0.0.1" and seen["dashboard_address"] is None
