"""Batch evaluation: judge many submitted designs against one case, unattended, one row each.

``evaluate_design(case_path, design_path)`` reads a design (a mesh file with the case's named
sets; a cell field ``density`` in 0..1 makes it a SIMP design, penalty 3 and Emin = 1e-9 x E,
otherwise it is solid), solves every load case and returns one flat, JSON-able row with the
columns of DESIGN.md (``design``, ``design_sha256``, ``status``, ``error``, ``mass``, ``volume``,
``compliance.CASE``, ``max_displacement.CASE``, ``max_von_mises``, ``safety_factor``, ``pass``,
``seconds``, ``version``, ``case_sha256``, ``timestamp``, plus ``check.*`` per requirement).
It never raises for a bad design: the row says ``status = "error"`` and why.

``evaluate_designs`` runs a list of them in this process, in a process pool (``jobs``) or on a
Dask cluster (``scheduler``), and guarantees what an unattended platform needs:

- one bad design never stops the batch: user errors become error rows; at most ``jobs``
  designs are in flight, and when a worker process dies (crash, out of memory) the pool is
  replaced and the designs that were in flight are retried one at a time in a fresh process:
  only a design that kills its process twice gets an error row;
- no finished result is lost: each row is appended to ``results.jsonl`` and flushed to disk as
  soon as it exists; the CSV is (re)written at the end, in input order, also after Ctrl-C;
- reruns resume: rows already in the JSON-lines file with ``status = "ok"`` for the same design
  bytes and case bytes (SHA-256) are kept, not recomputed;
- a design that runs too long cannot stall the batch: with ``time_limit`` (seconds) the
  design runs in a worker process that is killed when it exceeds the limit; it gets an error
  row, and the designs that shared the pool are rerun one at a time as after a crash. The limit
  counts from the hand-over to a worker, so a fresh worker's start-up (~1 s, plus Numba's
  compilation on a machine that has never run lightweight) counts too: choose it generously.
  On Dask each task runs its design in a child process that it kills at the limit;
- traceability: every row carries the SHA-256 of the design file and of the case file, the
  package version and a UTC timestamp;
- determinism: the same design and case give the same figures in any worker and with any
  ``jobs``, to round-off (within 1e-12 relative; the last bit can depend on the native
  libraries a process has loaded: importing gmsh first was seen to move one).

Why processes and not threads: the solvers already use both cores inside one design (Numba,
MKL), and a process isolates crashes. With ``jobs`` > 1 each worker is limited to
``cores // jobs`` threads so the workers do not fight over the cores. Dask (``dask.distributed``)
is the well-kept library for the cluster case; it must see the same file paths (shared file
system), and its own retry policy applies to killed workers.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import CaseFileError, LightweightError, SingularStiffnessError
from .provenance import file_sha256

FIRST_COLUMNS = ["design", "design_sha256", "status", "error", "mass", "volume"]
LAST_COLUMNS = ["max_von_mises", "safety_factor", "pass", "seconds", "version", "case_sha256", "timestamp",
                "n_cells", "simp"]
SIMP_PENALTY = 3.0
SIMP_MIN_STIFFNESS = 1e-9


@lru_cache(maxsize=4)
def _cached_case(path: str, sha256: str):
    """The parsed case, read once per worker process (keyed by content, so an edit is seen)."""
    from .casefile import read_case
    return read_case(path)


def _base_row(design: str) -> dict:
    return {"design": design, "design_sha256": None, "status": "error", "error": "",
            "version": __version__, "case_sha256": None,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def evaluate_design(case_path, design_path) -> dict:
    """One design against one case -> a flat row (never raises for a bad design or case)."""
    t0 = time.perf_counter()
    row = _base_row(str(design_path))
    try:
        case_sha = file_sha256(case_path) if Path(case_path).is_file() else None
        row["case_sha256"] = case_sha
        if case_sha is None:
            raise CaseFileError(f"case file {case_path} does not exist")
        case = _cached_case(str(Path(case_path).resolve()), case_sha)
        row.update(_evaluate(case, Path(design_path), row))
        row["status"] = "ok"
    except LightweightError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    except MemoryError:
        row["error"] = "MemoryError: the design is too large for this machine's memory"
    except Exception as exc:  # noqa: BLE001 - a platform batch must outlive any one design
        row["error"] = f"internal error ({type(exc).__name__}: {exc}); please report it with this design"
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def _evaluate(case, design: Path, row: dict) -> dict:
    from .casefile import evaluate_requirements
    from .fem.static import solve
    from .mesh import read_mesh_fields

    if not design.is_file():
        raise LightweightError(f"design file {design} does not exist")
    row["design_sha256"] = file_sha256(design)
    mesh, _, cell_data = read_mesh_fields(design)
    density = cell_data.get("density")
    if density is None and design.suffix.lower() == ".msh" and b"$ElementData" in design.read_bytes():
        raise LightweightError(f"design {design}: a cell field in a .msh file cannot be read back "
                               f"(meshio); submit the design with its density as .vtu or .xdmf")
    if density is not None:
        density = np.asarray(density, dtype=float).reshape(mesh.n_cells, -1)
        if density.shape[1] != 1:
            raise LightweightError(f"design {design}: cell field 'density' must be a scalar per cell, "
                                   f"got {density.shape[1]} components")
        density = density[:, 0]
        bad = np.flatnonzero(~np.isfinite(density) | (density < 0) | (density > 1))
        if bad.size:
            raise LightweightError(f"design {design}: cell field 'density' must lie in [0, 1]; "
                                   f"cells {bad[:10].tolist()} are outside ({bad.size} in all)")
    model = case.model_for(mesh)
    try:
        solution = solve(model, density=density, penalty=SIMP_PENALTY, min_stiffness=SIMP_MIN_STIFFNESS)
    except SingularStiffnessError as exc:
        if density is None:
            raise
        solve(model)          # raises as before if the part is a mechanism even when solid
        # solid it holds: the design's void cells (E = 1e-9 E0) are what fails to carry the loads
        raise SingularStiffnessError(
            f"design {design}: its material does not carry the loads to the supports (solid, the "
            f"part is supported; with this density the stiffness is numerically singular: void cells "
            f"cut a load path or hold a support). Detail: {exc}") from None
    figures = evaluate_requirements(solution, case.requirements)
    out = {"mass": figures["mass"], "volume": figures["volume"],
           "max_von_mises": figures["max_von_mises"], "safety_factor": figures["safety_factor"],
           "pass": figures["pass"], "n_cells": int(mesh.n_cells), "simp": density is not None}
    for name, value in figures["compliance"].items():
        out[f"compliance.{name}"] = value
    for name, value in figures["max_displacement"].items():
        out[f"max_displacement.{name}"] = value
    for name, ok in figures["checks"].items():
        out[f"check.{name}"] = ok
    return out


def _limit_threads(threads: int) -> None:
    """Pool initializer: at most ``threads`` compute threads in this worker."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # noqa: BLE001 - a thread cap is an optimisation, never a failure
        pass


class _RowWriter:
    """Appends rows to the JSON-lines file at once (flushed and synced) and keeps them by design index."""

    def __init__(self, jsonl: Path):
        self.jsonl = jsonl
        self.file = open(jsonl, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row, default=_json_default) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _json_default(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return str(value)


def _previous_rows(jsonl: Path) -> dict[tuple[str, str], dict]:
    """Finished ok rows of an earlier run, keyed by (design_sha256, case_sha256)."""
    done = {}
    if not jsonl.is_file():
        return done
    with open(jsonl, encoding="utf-8") as file:
        for line in file:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write: that design is simply redone
            if row.get("status") == "ok" and row.get("design_sha256") and row.get("case_sha256"):
                done[(row["design_sha256"], row["case_sha256"])] = row
    return done


def evaluate_designs(case_path, designs: Sequence, out_csv, jobs: int = 1, scheduler: str | None = None,
                     resume: bool = True, progress: Callable[[dict], None] | None = None,
                     evaluate: Callable[[str, str], dict] = evaluate_design,
                     time_limit: float | None = None) -> list[dict]:
    """Evaluate every design against the case; write ``out_csv`` and ``out_csv``'s ``.jsonl`` twin.

    jobs: worker processes on this machine (1: in this process). scheduler: a Dask scheduler
    address ("tcp://host:8786") or "local" for a LocalCluster of ``jobs`` workers. resume: keep
    ok rows of an earlier run for unchanged design and case bytes. progress: called with each
    finished row. evaluate: the per-design function (a picklable top-level function; tests use
    it to inject crashes). time_limit: seconds per design in a worker process (also with
    ``jobs=1``, which then uses one worker process), after which the worker is killed and the
    design gets an error row; with ``scheduler`` each Dask task runs the design in a child
    process it kills at the limit. Returns the rows in the order of ``designs``.
    """
    if time_limit is not None:
        if not (np.isfinite(time_limit) and time_limit > 0):
            raise LightweightError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
        if scheduler is not None and evaluate is not evaluate_design:
            raise LightweightError("time_limit with a Dask scheduler runs evaluate_design in a child "
                                   "process per design; a custom evaluate function cannot be used there")
    case_path = Path(case_path)
    if not case_path.is_file():
        raise CaseFileError(f"case file {case_path} does not exist")
    from .casefile import read_case
    read_case(case_path)              # a broken case file is the caller's error, not N error rows
    case_sha = file_sha256(case_path)
    designs = [str(d) for d in designs]
    out_csv = Path(out_csv)
    if out_csv.parent and not out_csv.parent.exists():
        out_csv.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out_csv.with_suffix(".jsonl")
    previous = _previous_rows(jsonl) if resume else {}
    if not resume and jsonl.exists():
        jsonl.unlink()
    rows: dict[int, dict] = {}
    todo = []
    for index, design in enumerate(designs):
        sha = file_sha256(design) if Path(design).is_file() else None
        old = previous.get((sha, case_sha)) if sha else None
        if old is not None:
            rows[index] = {**old, "design": design}
        else:
            todo.append(index)
    writer = _RowWriter(jsonl)

    def finish(index: int, row: dict) -> None:
        rows[index] = row
        writer.write(row)
        if progress is not None:
            progress(row)

    try:
        if scheduler is not None:
            _run_dask(case_path, designs, todo, finish, scheduler, jobs, evaluate, time_limit)
        elif jobs <= 1 and time_limit is None:
            for index in todo:
                finish(index, evaluate(str(case_path), designs[index]))
        else:
            _run_pool(case_path, designs, todo, finish, max(1, jobs), evaluate, time_limit)
    finally:
        writer.close()
        ordered = [rows[i] for i in range(len(designs)) if i in rows]
        write_csv(out_csv, ordered)
    return [rows[i] for i in range(len(designs))]


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes (the executor has no way to stop one running task)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, AttributeError):
            pass


def _error_row(case_path, design: str, error: str) -> dict:
    row = _base_row(design)
    row.update(case_sha256=file_sha256(case_path),
               design_sha256=file_sha256(design) if Path(design).is_file() else None, error=error)
    return row


def _timed_out(case_path, design: str, time_limit: float) -> dict:
    return _error_row(case_path, design, f"time limit exceeded: still running after {time_limit:g} s "
                                         "(the worker process was killed)")


def _run_pool(case_path, designs, todo, finish, jobs: int, evaluate, time_limit: float | None = None) -> None:
    """At most ``jobs`` designs in flight, so a dying (or killed) worker implicates only those few."""
    import multiprocessing
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")   # no fork of a process holding thread pools
    queue = deque(todo)
    while queue:
        suspects = []
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_limit_threads,
                                 initargs=(threads,)) as pool:
            running, started = {}, {}
            broken = False
            while queue or running:
                while queue and len(running) < jobs:
                    index = queue.popleft()
                    try:
                        future = pool.submit(evaluate, str(case_path), designs[index])
                    except BrokenProcessPool:    # a worker died since the last wait: not this design
                        queue.appendleft(index)
                        broken = True
                        break
                    running[future], started[future] = index, time.monotonic()
                if broken:
                    suspects.extend(running.values())
                    break
                timeout = None
                if time_limit is not None:
                    timeout = max(0.0, min(started[f] for f in running) + time_limit - time.monotonic())
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        finish(index, future.result())
                    except BrokenProcessPool:
                        suspects.append(index)
                if time_limit is not None and not suspects:
                    now = time.monotonic()
                    late = [f for f in running if now - started[f] >= time_limit]
                    if late:
                        for future in late:
                            index = running.pop(future)
                            finish(index, _timed_out(case_path, designs[index], time_limit))
                        _kill_workers(pool)
                        suspects.extend(running.values())   # innocent, but their worker is gone
                        break
                if suspects:          # the pool is dead: whatever was in flight is suspect too
                    suspects.extend(running.values())
                    break
        # each suspect alone in a fresh process: only the design that kills it gets an error row
        for index in suspects:
            _run_alone(case_path, designs, index, finish, context, threads, evaluate, time_limit)


def _run_alone(case_path, designs, index, finish, context, threads, evaluate,
               time_limit: float | None = None) -> None:
    """One design in a fresh single-worker pool; a second crash (or the time limit) makes an error row."""
    for attempt in range(2):
        with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_limit_threads,
                                 initargs=(threads,)) as pool:
            future = pool.submit(evaluate, str(case_path), designs[index])
            try:
                finish(index, future.result(timeout=time_limit))
                return
            except BrokenProcessPool:
                continue
            except TimeoutError:
                _kill_workers(pool)
                finish(index, _timed_out(case_path, designs[index], time_limit))
                return
    finish(index, _error_row(case_path, designs[index], "the worker process died while evaluating this "
                                                        "design, twice (a crash or out of memory)"))


def evaluate_design_in_child(case_path, design_path, time_limit: float) -> dict:
    """evaluate_design in a child Python process, killed after ``time_limit`` seconds.

    What a Dask task runs when a time limit is asked for: Dask cannot stop a running task, but
    the task can stop its child. Costs a Python start (~1 s) per design.
    """
    import subprocess
    import sys
    code = ("import json, sys; from lightweight.batch import evaluate_design, _json_default; "
            "print(json.dumps(evaluate_design(sys.argv[1], sys.argv[2]), default=_json_default))")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(case_path), str(design_path)],
                              capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        return _timed_out(case_path, str(design_path), time_limit)
    lines = (done.stdout or "").strip().splitlines()
    if done.returncode != 0 or not lines:
        return _error_row(case_path, str(design_path), f"the evaluating process died (exit status "
                                                       f"{done.returncode}; a crash or out of memory)")
    return json.loads(lines[-1])


def _run_dask(case_path, designs, todo, finish, scheduler: str, jobs: int, evaluate,
              time_limit: float | None = None) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise LightweightError("--scheduler needs Dask: pip install 'lightweight[batch]'") from None
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise LightweightError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        case = str(Path(case_path).resolve())
        task, extra = (evaluate, ()) if time_limit is None else (evaluate_design_in_child, (time_limit,))
        futures = {client.submit(task, case, str(Path(designs[i]).resolve()), *extra, pure=False): i
                   for i in todo}
        for future in dask_completed(futures):
            index = futures[future]
            try:
                row = future.result()
                row["design"] = designs[index]
            except Exception as exc:  # noqa: BLE001 - KilledWorker and friends: one row, not the batch
                row = _base_row(designs[index])
                row.update(case_sha256=file_sha256(case_path),
                           error=f"Dask could not evaluate this design ({type(exc).__name__}: {exc})")
            finish(index, row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_csv(path, rows: Sequence[dict]) -> Path:
    """Rows -> CSV with the DESIGN.md columns first, per-case and check columns in between."""
    path = Path(path)
    middle = sorted({key for row in rows for key in row} - set(FIRST_COLUMNS) - set(LAST_COLUMNS))
    columns = FIRST_COLUMNS + middle + LAST_COLUMNS
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    os.replace(tmp, path)             # never a half-written CSV, even if this process dies now
    return path
