"""The results store: idempotent reruns, history across versions, two evaluators, kill -9,
a full disk or read-only path, exports, and the same store on a real PostgreSQL server."""

from __future__ import annotations

import csv
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import lightweight as lw
from lightweight.batch import evaluate_design, evaluate_designs
from lightweight.cli import main
from lightweight.store import SQLiteStore, StoreError, open_store

from test_batch import CASE


@pytest.fixture
def designs(tmp_path):
    """A case and 6 small designs: 4 SIMP, 1 solid, 1 broken."""
    case = tmp_path / "case.toml"
    case.write_text(CASE)
    grid = lw.structured_grid((12, 4), size=(12.0, 4.0))
    folder = tmp_path / "designs"
    folder.mkdir()
    files = []
    for k in range(4):
        density = np.where(grid.cell_centers()[:, 1] > 2.0, 1.0, 0.2 + 0.2 * k)
        files.append(folder / f"simp{k}.vtu")
        lw.write_mesh(files[-1], grid, cell_data={"density": density})
    files.append(folder / "solid.vtu")
    lw.write_mesh(files[-1], grid)
    files.append(folder / "broken.vtu")
    files[-1].write_text("<VTKFile")
    return case, [str(f) for f in files]


def stored(path, **kwargs) -> list[dict]:
    store = SQLiteStore(path, **kwargs)
    try:
        return store.rows()
    finally:
        store.close()


def test_rerun_is_idempotent_and_replaces_error_rows(designs, tmp_path):
    case, files = designs
    out = tmp_path / "r.csv"
    first = evaluate_designs(case, files, out)
    redone = []
    second = evaluate_designs(case, files, out, progress=redone.append)
    assert [r["design"] for r in redone] == [files[-1]]               # only the error row is redone
    rows = stored(tmp_path / "r.sqlite")
    assert len(rows) == len(files)                                   # no duplicated rows
    assert len(out.with_suffix(".jsonl").read_text().splitlines()) == len(files)
    assert [r["status"] for r in rows].count("error") == 1
    assert second[:5] == first[:5]                                   # ok rows kept as they were
    with open(out, newline="") as file:
        assert len(list(csv.DictReader(file))) == len(files)


def test_history_across_versions_is_kept_and_exported(designs, tmp_path, capsys):
    case, files = designs
    old = SQLiteStore(tmp_path / "r.sqlite", version="0.0.1")
    evaluate_designs(case, files[:2], tmp_path / "r.csv", store=old)
    old.close()
    evaluate_designs(case, files[:2], tmp_path / "r.csv")             # this version: computed again
    rows = stored(tmp_path / "r.sqlite")
    assert sorted(r["version"] for r in rows) == ["0.0.1", "0.0.1", lw.__version__, lw.__version__]
    assert main(["results", str(tmp_path / "r.sqlite"), "--csv", str(tmp_path / "all.csv"),
                 "--jsonl", str(tmp_path / "all.jsonl")]) == 0
    with open(tmp_path / "all.csv", newline="") as file:
        assert sorted(r["version"] for r in csv.DictReader(file)) == sorted(r["version"] for r in rows)
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 4
    assert main(["results", str(tmp_path / "r.sqlite"), "--csv", str(tmp_path / "v.csv"),
                 "--version", "0.0.1"]) == 0
    assert "wrote 2 rows" in capsys.readouterr().out


EVALUATOR = """
import sys
sys.path.insert(0, {tests!r})
from lightweight.batch import evaluate_designs
done = []
evaluate_designs({case!r}, {files!r}, {out!r}, progress=lambda row: print("computed", row["design"], flush=True))
"""


def test_two_evaluators_on_one_store_compute_each_design_once(designs, tmp_path):
    case, files = designs
    out = tmp_path / "shared.csv"
    code = EVALUATOR.format(tests=str(Path(__file__).parent), case=str(case), files=files, out=str(out))
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    computed = [sorted(line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("computed"))
                for text in outputs]
    assert sorted(computed[0] + computed[1]) == sorted(files), outputs   # every design exactly once
    rows = stored(tmp_path / "shared.sqlite")
    assert sorted(r["design"] for r in rows) == sorted(files)
    with open(out, newline="") as file:                              # the last export has every row
        assert [r["design"] for r in csv.DictReader(file)] == files


def _open_at_the_barrier(path, barrier, answers):
    barrier.wait()
    try:
        open_store(path).close()
        answers.put("ok")
    except Exception as exc:                     # the test reports what went wrong
        answers.put(f"{type(exc).__name__}: {exc}")


def test_evaluators_opening_one_new_store_at_once_all_get_in(tmp_path):
    # CI once saw "database is locked" when two evaluators created the same store together:
    # SQLite refuses the first switch to WAL at once, without its busy wait, when two race for it
    import multiprocessing

    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    outcomes = []
    for trial in range(40):
        path = tmp_path / f"store{trial}.sqlite"
        barrier = context.Barrier(4)
        workers = [context.Process(target=_open_at_the_barrier, args=(path, barrier, answers))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        outcomes += [answers.get(timeout=10) for _ in workers]
    failures = [outcome for outcome in outcomes if outcome != "ok"]
    assert not failures, failures[:3]
    store = open_store(tmp_path / "store0.sqlite")
    try:
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in store.connection.execute("SELECT name FROM sqlite_master")}
        assert {"results", "claims", "cases"} <= tables
    finally:
        store.close()


def test_kill_9_at_random_moments_then_rerun(designs, tmp_path):
    """kill -9 of the evaluator at 10 random moments and a rerun: every design once, same values.

    Each killed run recomputes everything (resume=False), so every kill lands in the middle of
    the work: after a random number of finished rows plus a random delay. Each evaluator process
    imports lightweight while the one before it runs and is then told to start (a line on its
    stdin), so the random moments fall inside evaluate_designs, not in the interpreter's start.
    """
    case, files = designs
    # the values of an evaluation that was never killed (in this process: equal to those of a
    # worker process to round-off, tests/test_batch.py)
    reference = dict(zip(files, (evaluate_design(str(case), f) for f in files)))
    out = tmp_path / "killed.csv"
    code = EVALUATOR.format(tests=str(Path(__file__).parent), case=str(case), files=files,
                            out=str(out)).replace("progress=", "resume=False, progress=")
    code = code.replace("done = []", "sys.stdin.readline()                  # the test's go")

    started = []

    def start():
        started.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True))
    rng = random.Random(12)
    mid_run = 0
    start()
    try:
        for kill in range(10):
            run = started[kill]
            if kill < 9:
                start()                                              # imports while this one runs
            run.stdin.write("go\n")
            run.stdin.flush()
            for _ in range(rng.randint(0, len(files) - 1)):
                if not run.stdout.readline():
                    break
            time.sleep(rng.uniform(0.0, 0.3))
            mid_run += run.poll() is None
            run.send_signal(signal.SIGKILL)
            run.wait()
    finally:
        for run in started:
            if run.poll() is None:
                run.kill()
            run.communicate()
    assert mid_run >= 8                                              # the kills hit running batches
    rows = evaluate_designs(case, files, out)
    store_rows = stored(tmp_path / "killed.sqlite")
    assert sorted(r["design"] for r in store_rows) == sorted(files)  # each exactly once
    for design, row in zip(files, rows):
        want = reference[design]
        assert row["status"] == want["status"]
        for key in ("mass", "compliance.mbb", "max_von_mises", "safety_factor"):
            if key in want:
                assert row[key] == pytest.approx(want[key], rel=1e-12)
    store = SQLiteStore(tmp_path / "killed.sqlite")
    try:
        assert store._run("count claims", lambda cur: cur.execute("SELECT COUNT(*) FROM claims").fetchone()[0]) == 0
    finally:
        store.close()


def test_full_disk_is_one_clear_error_and_keeps_the_rows(designs, tmp_path):
    case, files = designs
    path = tmp_path / "full.sqlite"
    SQLiteStore(path).close()
    pages = SQLiteStore(path)
    used = pages.connection.execute("PRAGMA page_count").fetchone()[0]
    pages.close()
    full = SQLiteStore(path, max_pages=used + 1)        # room for about one row: then "disk full"
    with pytest.raises(StoreError, match="full.sqlite: cannot write a result row .*full"):
        evaluate_designs(case, files[:5], tmp_path / "full.csv", store=full)
    full.close()
    kept = stored(path)
    assert 0 < len(kept) < 5 and all(r["status"] == "ok" for r in kept)
    rows = evaluate_designs(case, files[:5], tmp_path / "full.csv", store=path)   # space again: the rest
    assert [r["status"] for r in rows] == ["ok"] * 5 and len(stored(path)) == 5


def test_read_only_store_and_folder_out_are_one_line_errors(designs, tmp_path):
    case, files = designs
    read_only = Path("/proc/lightweight-store-test/r.sqlite")
    assert not os.access("/proc", os.W_OK) or not read_only.parent.exists()
    cases = ((["--store", str(read_only)], "results store /proc/lightweight-store-test/r.sqlite: cannot open it"),
             (["--out", str(tmp_path)], "is a folder; name a file"),
             (["--out", "/proc/lightweight-out/r.csv"], "cannot write results beside"))
    # the three commands start together (a Python start each; side by side on both cores)
    runs = [subprocess.Popen([sys.executable, "-m", "lightweight", "evaluate", str(case), files[0],
                              "--out", str(tmp_path / "x.csv"), *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv, _ in cases]
    try:
        for run, (_, message) in zip(runs, cases):
            stderr = run.communicate(timeout=300)[1]
            assert run.returncode == 1, stderr
            assert "Traceback" not in stderr and message in stderr
            assert stderr.count("\n") == 1
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.communicate()


def test_jsonl_out_names_the_journal_not_the_csv(designs, tmp_path):
    case, files = designs
    evaluate_designs(case, files[:2], tmp_path / "r.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["design"] for r in lines] == files[:2]
    assert (tmp_path / "r.csv").read_text().startswith("design,design_sha256,status")


# ----------------------------------------------------------------------------- PostgreSQL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a loopback port (Debian's postgresql), or skip."""
    pytest.importorskip("psycopg")
    initdb = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(initdb).resolve().parent
    folder = Path(tempfile.mkdtemp(prefix="lw-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:                        # initdb refuses root: run as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = folder / "data"
    try:
        subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", "lw", "--auth=trust"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                                  "-o", f"-p {port} -k {folder} -h 127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server could start here ({type(exc).__name__})")
    try:
        yield f"postgresql://lw@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_store_is_the_same_store(designs, tmp_path, postgres_url):
    case, files = designs
    first = evaluate_designs(case, files, tmp_path / "pg.csv", store=postgres_url)
    second = evaluate_designs(case, files, tmp_path / "pg.csv", store=postgres_url)
    assert second[:5] == first[:5]
    store = open_store(postgres_url)
    try:
        rows = store.rows()
        assert len(rows) == len(files)                               # idempotent
        assert store.claim("c", "d") and store.claim("c", "d")      # own claim again: yes
        other = open_store(postgres_url)
        try:
            assert not other.claim("c", "d")                          # a live owner holds it
        finally:
            other.close()
        store.release_claims()
    finally:
        store.close()
    # the same rows as without the server: evaluate_design here (a SQLite batch computes these
    # very numbers in a worker process, equal to round-off, tests/test_batch.py)
    lite = dict(zip(files, (evaluate_design(str(case), f) for f in files)))
    for design, row in zip(files, first):
        assert row["status"] == lite[design]["status"]
        if row["status"] == "ok":
            assert row["compliance.mbb"] == pytest.approx(lite[design]["compliance.mbb"], rel=1e-12)
    assert main(["results", postgres_url, "--csv", str(tmp_path / "pg_export.csv")]) == 0
    with open(tmp_path / "pg_export.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == len(files)


def test_a_failing_export_leaves_the_previous_file_whole(designs, tmp_path, monkeypatch):
    """A full disk while exporting: one clear error, the last complete export stays, no torn line."""
    from lightweight import batch
    case, files = designs
    out = tmp_path / "r.csv"
    # the previous complete export, written by the function evaluate_designs exports with (the
    # rows' content does not matter here; an evaluation would cost a worker process)
    batch.write_jsonl(out.with_suffix(".jsonl"), [{"design": files[0], "status": "ok"},
                                                  {"design": files[1], "status": "ok"}])
    before = out.with_suffix(".jsonl").read_bytes()
    assert len(before.splitlines()) == 2

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch.os, "fsync", disk_full)
    with pytest.raises(lw.LightweightError, match="cannot write .*r.jsonl: No space left on device"):
        batch.write_jsonl(out.with_suffix(".jsonl"), [{"design": "x"}] * 3)
    assert out.with_suffix(".jsonl").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_ctrl_c_keeps_the_rows_and_writes_the_exports(designs, tmp_path):
    case, files = designs
    slow = Path(files[0]).with_name("slow_design.vtu")
    slow.write_bytes(Path(files[0]).read_bytes() + b"<!-- slow -->\n")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from batch_faults import hang_on_slow_designs\nfrom lightweight.batch import evaluate_designs\n"
            f"evaluate_designs({str(case)!r}, {[files[0], str(slow)]!r}, {str(tmp_path / 'c.csv')!r}, "
            "evaluate=hang_on_slow_designs, progress=lambda row: print('computed', flush=True))\n")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert run.stdout.readline().startswith("computed")
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=60)
    assert run.returncode != 0
    with open(tmp_path / "c.csv", newline="") as file:
        assert [r["design"] for r in csv.DictReader(file)] == [files[0]]
    assert [r["design"] for r in stored(tmp_path / "c.sqlite")] == [files[0]]
    store = SQLiteStore(tmp_path / "c.sqlite")
    try:                                     # the slow design's claim was released on the way out
        assert store._run("count claims", lambda cur: cur.execute("SELECT COUNT(*) FROM claims").fetchone()[0]) == 0
    finally:
        store.close()
