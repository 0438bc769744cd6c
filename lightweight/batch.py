"""Batch evaluation: judge many submitted designs against one case, unattended, one row each.

``evaluate_design(case_path, design_path)`` checks a design in the sandbox
(:mod:`lightweight.sandbox`: documented formats, no references out of its folder, limits),
reads it (a mesh file with the case's named sets; a cell field ``density`` in 0..1 makes it a
SIMP design, analysed under the law recorded in its provenance, top88's SIMP p = 3,
Emin = 1e-9 x E where the file says nothing; otherwise it is solid), solves every load case and
returns one flat, JSON-able row with the columns of docs/platform.md (``design``,
``design_sha256``, ``status``, ``error``, ``mass``, ``volume``, ``compliance.CASE``,
``max_displacement.CASE``, ``max_von_mises``, ``safety_factor``, ``pass``, ``seconds``,
``version``, ``case_sha256``, ``timestamp``, ``n_cells``, ``simp``, ``interpolation``, plus
``check.*`` per requirement). It never raises for a bad design: the row says
``status = "error"`` and why, without quoting the design's content.

``evaluate_designs`` runs a list of them and guarantees what an unattended platform needs:

- every design runs in a worker process (also with ``jobs=1``), our own processes with one pipe
  each, so each can be limited (``RLIMIT_AS``, threads), timed, killed and reaped; workers
  die with their parent (``PR_SET_PDEATHSIG`` on Linux, plus a parent-alive check);
- a design that kills its worker (crash, memory limit) is retried once in a fresh worker and
  then gets an error row; the batch goes on. A design over the time limit gets an error row at
  the limit (its worker is killed). After each design a worker returns its freed heap to the
  system (``malloc_trim``: glibc otherwise keeps it, and a worker grew by hundreds of MiB over
  a batch), and it is recycled after ``designs_per_worker`` designs or when its resident memory
  passes ``worker_rss_mb`` (see benchmarks/bench_batch.py);
- results go to a store (:mod:`lightweight.store`, SQLite by default beside ``out``, or a
  PostgreSQL URL), one transaction per row, keyed by (case hash, design hash, version): a rerun
  keeps finished rows and replaces error rows; two evaluators on one store claim designs in a
  transaction, so each design is computed once, and each run's CSV/JSON lines export holds every
  row of its designs (waiting for the other run's claims). The CSV and JSON-lines files are
  exports written at the end (atomically, in input order), also after Ctrl-C;
- Dask (``scheduler``): each task evaluates its design in a child process with the same limits
  (:func:`evaluate_design_in_child`); rows coming back are checked to be plain rows.
  ``"local"`` starts a LocalCluster bound to 127.0.0.1; a remote scheduler must be ``tls://``
  with certificates (``security``), or a loopback ``tcp://`` address: a scheduler and its
  workers run code and return objects that this process unpickles, so they are trusted code;
- determinism: the same design and case give the same figures in any worker and with any
  ``jobs``, to round-off (within 1e-12 relative; the last bit can depend on the native
  libraries a process has loaded).

Why processes and not threads: the solvers already use both cores inside one design (Numba,
MKL), and a process isolates crashes and can be limited. With ``jobs`` > 1 each worker is
limited to ``cores // jobs`` threads so the workers do not fight over the cores.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import CaseFileError, LightweightError, MeshFileError, SingularStiffnessError
from .sandbox import Limits, SubmissionError, check_mesh, display_name, inspect_design

FIRST_COLUMNS = ["design", "design_sha256", "status", "error", "mass", "volume"]
REPORTED_FREQUENCIES = 3          # frequency_1..3 when the case has a min_frequency requirement
LAST_COLUMNS = ["max_von_mises", "safety_factor", "pass", "seconds", "version", "case_sha256", "timestamp",
                "n_cells", "simp", "interpolation"]
# a worker is replaced after this many designs or above this resident memory (MiB)
DESIGNS_PER_WORKER = 100
WORKER_RSS_MB = 1024.0
# a worker collects garbage and trims its heap once its memory has grown this much (MiB)
RELEASE_ABOVE_MB = 64.0
# a design that kills its worker this many times gets an error row
WORKER_DEATHS = 2


@lru_cache(maxsize=4)
def _cached_case(path: str, sha256: str):
    """The parsed case, read once per worker process (keyed by content, so an edit is seen)."""
    from .casefile import read_case
    return read_case(path)


def _base_row(design) -> dict:
    return {"design": display_name(design), "design_sha256": None, "status": "error", "error": "",
            "version": __version__, "case_sha256": None,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def evaluate_design(case_path, design_path, limits: Limits | None = None) -> dict:
    """One design against one case -> a flat row (never raises for a bad design or case).

    limits: the sandbox's limits (default: the case file's ``[limits]`` over the defaults).
    """
    from .provenance import file_sha256
    t0 = time.perf_counter()
    row = _base_row(design_path)
    try:
        case_sha = file_sha256(case_path) if Path(case_path).is_file() else None
        row["case_sha256"] = case_sha
        if case_sha is None:
            raise CaseFileError(f"case file {case_path} does not exist")
        case = _cached_case(str(Path(case_path).resolve()), case_sha)
        row.update(_evaluate(case, design_path, row, limits or case.limits))
        row["status"] = "ok"
    except LightweightError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    except MemoryError:
        row["error"] = "MemoryError: the design needs more memory than its limit (limits.memory_mb)"
    except Exception as exc:  # noqa: BLE001 - a platform batch must outlive any one design
        row["error"] = f"internal error ({type(exc).__name__}); please report it with this design"
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def _design_law(path: Path, name: str):
    """The stiffness law a design records in its provenance; top88's SIMP when it says nothing."""
    from .fem.interpolation import Interpolation
    from .mesh import read_metadata
    try:
        metadata = read_metadata(path)
    except LightweightError:
        metadata = {}
    text = metadata.get("provenance")
    if text is None:
        return Interpolation()
    try:
        provenance = json.loads(text)
    except ValueError:
        raise SubmissionError(f"design {name}: its provenance metadata is not valid JSON") from None
    parameters = provenance.get("parameters") if isinstance(provenance, dict) else None
    if parameters is not None and not isinstance(parameters, dict):
        raise SubmissionError(f"design {name}: its provenance 'parameters' must be a table")
    try:
        return Interpolation.from_parameters(parameters)
    except LightweightError as exc:
        raise SubmissionError(f"design {name}: its recorded interpolation law is malformed "
                              f"({type(exc).__name__}); re-save it with lightweight or drop its "
                              f"provenance to be judged under top88's SIMP") from None


def _law_text(law) -> str:
    text = f"{law.kind} p={law.penalty:g} min_stiffness={law.min_stiffness:g}"
    return text + (f" linear_below={law.linear_below:g}" if law.linear_below else "")


def _evaluate(case, design_path, row: dict, limits: Limits) -> dict:
    from .casefile import evaluate_requirements
    from .fem.static import check_density, solve
    from .mesh import read_mesh_fields

    design = Path(design_path)
    name = display_name(design)
    submission = inspect_design(design, limits)
    row["design_sha256"] = submission.sha256
    try:
        mesh, _, cell_data = read_mesh_fields(design)
    except MeshFileError as exc:
        # meshio's messages can quote the file's bytes: say only what failed
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "invalid mesh"
        raise MeshFileError(f"design {name}: cannot read it as {design.suffix.lower()} ({cause}); is the "
                            f"file complete, in this format, with one solid cell type?") from None
    mesh = check_mesh(mesh, name, limits)
    density = cell_data.get("density")
    if density is None and design.suffix.lower() == ".msh" and b"$ElementData" in design.read_bytes():
        raise LightweightError(f"design {name}: a cell field in a .msh file cannot be read back "
                               f"(meshio); submit the design with its density as .vtu or .xdmf")
    law = None
    if density is not None:
        density = np.asarray(density, dtype=float).reshape(mesh.n_cells, -1)
        if density.shape[1] != 1:
            raise LightweightError(f"design {name}: cell field 'density' must be a scalar per cell, "
                                   f"got {density.shape[1]} components")
        try:
            density = check_density(density[:, 0], mesh.n_cells, what="cell field 'density'")
        except LightweightError as exc:
            raise LightweightError(f"design {name}: {exc}") from None
        law = _design_law(design, name)
    if mesh.dim != case.model.mesh.dim:
        raise SubmissionError(f"design {name} is a {mesh.dim}D mesh, but the case is {case.model.mesh.dim}D; "
                              f"submit a {case.model.mesh.dim}D design")
    model = case.model_for(mesh)
    try:
        solution = solve(model, density=density, interpolation=law)
    except SingularStiffnessError as exc:
        if density is None:
            raise _numerically_singular(exc, mesh, name) from None
        try:
            solve(model)      # raises as before if the part is a mechanism even when solid
        except SingularStiffnessError as solid:
            raise _numerically_singular(solid, mesh, name) from None
        # solid it holds: the design's void cells (E = Emin) are what fails to carry the loads
        raise SingularStiffnessError(
            f"design {name}: its material does not carry the loads to the supports (solid, the "
            f"part is supported; with this density the stiffness is numerically singular: void cells "
            f"cut a load path or hold a support). Detail: {exc}") from None
    frequencies = None
    if "min_frequency" in case.requirements:
        # the design's first natural frequencies (Hz), under the optimizer's low-density law
        from .optimize.responses.frequency import frequency_figures
        frequencies = frequency_figures(model, density, REPORTED_FREQUENCIES, law)
    figures = evaluate_requirements(solution, case.requirements, frequencies)
    out = {"mass": figures["mass"], "volume": figures["volume"],
           "max_von_mises": figures["max_von_mises"], "safety_factor": figures["safety_factor"],
           "pass": figures["pass"], "n_cells": int(mesh.n_cells), "simp": density is not None,
           "interpolation": None if law is None else _law_text(law)}
    for case_name, value in figures["compliance"].items():
        out[f"compliance.{case_name}"] = value
    for case_name, value in figures["max_displacement"].items():
        out[f"max_displacement.{case_name}"] = value
    out.update(figures["frequencies"])               # frequency_1 .. frequency_n
    for check, ok in figures["checks"].items():
        out[f"check.{check}"] = ok
    return out


def _numerically_singular(exc: SingularStiffnessError, mesh, name: str) -> SingularStiffnessError:
    """A mechanism stays a mechanism; a singular solve of a supported part says what it is instead.

    The support check of the system (rigid-body modes against the fixed DOFs, per connected
    part) is exact and says "the structure is a mechanism". A factorization or residual check
    failing after it passed means the stiffness is numerically singular although nothing can
    move: cells so thin or badly shaped that the matrix loses its digits.
    """
    if "is a mechanism" in str(exc):
        return exc
    volumes = np.abs(mesh.cell_volumes())
    ratio = float(volumes.min() / volumes.max()) if volumes.max() > 0 else 0.0
    return SingularStiffnessError(
        f"design {name}: the stiffness matrix is numerically singular, but this is not a mechanism "
        f"(the supports hold every rigid-body motion of every part): the design has cells too thin or "
        f"too distorted to analyse (smallest cell volume {ratio:.1e} x the largest); thicken its thinnest "
        f"sections or remesh them")


# ============================================================================ worker processes
def _limit_threads(threads: int) -> None:
    """At most ``threads`` compute threads in this worker."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # noqa: BLE001 - a thread cap is an optimisation, never a failure
        pass


def _die_with_parent(parent_pid: int) -> None:
    """End this process when its parent ends: PR_SET_PDEATHSIG (Linux) and a watcher thread."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)       # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:                             # the parent died before prctl
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _limit_memory(memory_mb: float) -> None:
    if memory_mb and memory_mb > 0:
        import resource
        limit = int(memory_mb * (1 << 20))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


def _worker_main(connection, parent_pid: int, threads: int, memory_mb: float) -> None:
    """A worker: evaluate the (function, case, design, limits) tasks it receives, one row each."""
    _die_with_parent(parent_pid)
    _limit_threads(threads)
    _limit_memory(memory_mb)
    baseline = None
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        evaluate, case_path, design_path, limits = task
        row = evaluate(case_path, design_path, limits)
        rss = _rss_mb()
        if baseline is None or rss > baseline + RELEASE_ABOVE_MB:
            _release_memory()
            rss = baseline = _rss_mb()
        connection.send((row, rss))


def _release_memory() -> None:
    """Give the freed heap of the last designs back to the system.

    Measured (benchmarks/bench_batch.py, 1024-hex designs): without this a worker's resident
    memory grew 253 -> 587 MiB over 60 designs; with it, it stays at 221 MiB. The growth is
    models and factorizations in reference cycles (freed only by the cyclic collector) and
    glibc keeping freed blocks in its arenas, not a leak: ``gc.collect`` (~50 ms, hence only
    once the memory has grown by RELEASE_ABOVE_MB) and ``malloc_trim`` return it; recycling
    workers bounds whatever remains elsewhere.
    """
    import gc
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class _Worker:
    """One worker process with its pipe, the task it runs and its history."""

    def __init__(self, context, threads: int, memory_mb: float):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, daemon=True, name="lightweight-worker",
                                       args=(child, os.getpid(), threads, memory_mb))
        self.process.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0
        self.designs = 0
        self.rss_mb = 0.0

    def give(self, index: int, task) -> None:
        self.index, self.started = index, time.monotonic()
        try:
            self.connection.send(task)
        except OSError:
            pass          # the worker died already: the wait loop sees it and counts a death

    def stop(self, kill: bool = False) -> None:
        if not kill and self.process.is_alive():
            try:
                self.connection.send(None)
            except OSError:
                pass
            self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self.connection.close()


def _run_workers(case_path, designs, todo, finish, jobs: int, evaluate, limits: Limits,
                 designs_per_worker: int = DESIGNS_PER_WORKER, worker_rss_mb: float = WORKER_RSS_MB,
                 claim: Callable[[int], bool] | None = None) -> list[int]:
    """Evaluate ``todo`` (indices into ``designs``) in at most ``jobs`` worker processes.

    claim: asked just before a design goes to a worker; the designs it refuses are returned.
    """
    import multiprocessing
    from multiprocessing.connection import wait
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")   # no fork of a process holding thread pools
    queue = deque(todo)
    deaths: dict[int, int] = {}
    workers: list[_Worker] = []
    refused: list[int] = []
    try:
        while queue or any(w.index is not None for w in workers):
            while queue:
                idle = [w for w in workers if w.index is None]
                if not idle and len(workers) >= jobs:
                    break
                index = queue.popleft()
                if claim is not None and index not in deaths and not claim(index):
                    refused.append(index)
                    continue
                worker = idle[0] if idle else _Worker(context, threads, limits.memory_mb)
                if not idle:
                    workers.append(worker)
                worker.give(index, (evaluate, str(case_path), designs[index], limits))
            busy = [w for w in workers if w.index is not None]
            if not busy:
                break
            deadline = min(w.started for w in busy) + limits.time_limit
            waits = [w.connection for w in busy] + [w.process.sentinel for w in busy]
            wait(waits, timeout=max(0.0, deadline - time.monotonic()))
            for worker in busy:
                index = worker.index
                result = None
                if worker.connection.poll():
                    try:
                        result = worker.connection.recv()
                    except (EOFError, OSError):
                        result = None
                if result is not None:
                    row, worker.rss_mb = result
                    worker.index, worker.designs = None, worker.designs + 1
                    finish(index, row)
                    if worker.designs >= designs_per_worker or worker.rss_mb > worker_rss_mb:
                        worker.stop()                # recycle: a fresh process has no caches
                        workers.remove(worker)
                elif not worker.process.is_alive():
                    workers.remove(worker)
                    worker.stop(kill=True)
                    deaths[index] = deaths.get(index, 0) + 1
                    if deaths[index] >= WORKER_DEATHS:
                        finish(index, _error_row(case_path, designs[index], limits, _died_message(
                            worker.process.exitcode, limits)))
                    else:
                        queue.appendleft(index)      # once more in a fresh worker
                elif time.monotonic() - worker.started >= limits.time_limit:
                    workers.remove(worker)
                    worker.stop(kill=True)
                    finish(index, _timed_out(case_path, designs[index], limits))
    finally:
        for worker in workers:
            worker.stop(kill=worker.index is not None)
    return refused


def _died_message(exitcode, limits: Limits) -> str:
    memory = f"{limits.memory_mb:g} MiB" if limits.memory_mb else "no"
    return (f"the worker process died while evaluating this design, {WORKER_DEATHS} times (exit status "
            f"{exitcode}: a crash or out of memory; memory limit {memory}, limits.memory_mb)")


def _error_row(case_path, design, limits: Limits, error: str) -> dict:
    from .provenance import file_sha256
    row = _base_row(design)
    row["case_sha256"] = file_sha256(case_path)
    try:
        row["design_sha256"] = inspect_design(design, limits, deep=False).sha256
    except LightweightError:
        pass
    row["error"] = error
    return row


def _timed_out(case_path, design, limits: Limits) -> dict:
    return _error_row(case_path, design, limits, f"time limit exceeded: still running after "
                                                 f"{limits.time_limit:g} s (the worker process was killed)")


def evaluate_design_in_child(case_path, design_path, limits: Limits | None = None,
                             time_limit: float | None = None) -> dict:
    """evaluate_design in a child Python process with the limits (memory, time), killed at the limit.

    What a Dask task runs: Dask cannot stop a running task or limit its memory, but the task can
    do both to its child. Costs a Python start (~1 s) per design.
    """
    import subprocess
    limits = limits or Limits()
    if time_limit is not None:
        limits = limits.updated(time_limit=time_limit)
    code = ("import json, sys; from lightweight.batch import evaluate_design, _json_default, _limit_memory; "
            "from lightweight.sandbox import Limits; limits = Limits(**json.loads(sys.argv[3])); "
            "_limit_memory(limits.memory_mb); "
            "print(json.dumps(evaluate_design(sys.argv[1], sys.argv[2], limits), default=_json_default))")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(case_path), str(design_path),
                               json.dumps(limits.as_dict())],
                              capture_output=True, text=True, timeout=limits.time_limit)
    except subprocess.TimeoutExpired:
        return _timed_out(case_path, design_path, limits)
    lines = (done.stdout or "").strip().splitlines()
    if done.returncode != 0 or not lines:
        return _error_row(case_path, design_path, limits, _died_message(done.returncode, limits))
    return json.loads(lines[-1])


# ================================================================================= the batch
def _json_default(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return str(value)


def export_paths(out) -> tuple[Path, Path]:
    """(CSV, JSON lines) for ``--out``: a ``.jsonl`` out names the JSON lines, else the CSV."""
    out = Path(out)
    if out.suffix.lower() == ".jsonl":
        return out.with_suffix(".csv"), out
    return out, out.with_suffix(".jsonl")


def _check_output(path: Path) -> None:
    """One clear error before any work if an export cannot be written."""
    if path.is_dir():
        raise LightweightError(f"--out {display_name(path)} is a folder; name a file such as results.csv")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LightweightError(f"cannot write results beside {display_name(path)}: "
                               f"{exc.strerror or exc}") from None


def evaluate_designs(case_path, designs: Sequence, out_csv, jobs: int = 1, scheduler: str | None = None,
                     resume: bool = True, progress: Callable[[dict], None] | None = None,
                     evaluate: Callable = evaluate_design, time_limit: float | None = None,
                     limits: Limits | None = None, store=None, security=None,
                     designs_per_worker: int = DESIGNS_PER_WORKER,
                     worker_rss_mb: float = WORKER_RSS_MB) -> list[dict]:
    """Evaluate every design against the case; store the rows; export CSV and JSON lines.

    jobs: worker processes on this machine (every design runs in one, also with 1).
    scheduler: a Dask scheduler address (``tls://host:8786`` with ``security``, a loopback
    ``tcp://``) or "local" for a LocalCluster of ``jobs`` workers on 127.0.0.1. resume: keep
    ok rows already in the store for unchanged design and case bytes and this version.
    progress: called with each row computed by this run. evaluate: the per-design function
    ``(case, design, limits) -> row`` (picklable, top level; tests inject crashes with it).
    time_limit: seconds per design (overrides ``limits``). limits: the sandbox's limits
    (default: the case file's ``[limits]``). store: a :class:`~lightweight.store.ResultStore`,
    a path or a ``postgresql://`` URL (default: ``out_csv`` with suffix ``.sqlite``).
    security: a ``distributed.security.Security`` for a ``tls://`` scheduler.
    Returns the rows in the order of ``designs``.
    """
    from .casefile import read_case
    from .provenance import file_sha256
    from .store import ResultStore, open_store

    case_path = Path(case_path)
    case = read_case(case_path)       # a broken case file is the caller's error, not N error rows
    limits = (limits or case.limits).updated(time_limit=time_limit)
    if scheduler is not None and evaluate is not evaluate_design:
        raise LightweightError("a Dask scheduler runs evaluate_design in a child process per design; "
                               "a custom evaluate function cannot be used there")
    if jobs < 1:
        raise LightweightError(f"jobs must be at least 1, got {jobs}")
    if scheduler is not None:
        _check_scheduler(scheduler, security)
    csv_path, jsonl_path = export_paths(out_csv)
    _check_output(csv_path)
    _check_output(jsonl_path)
    owned = not isinstance(store, ResultStore)
    store = open_store(store if store is not None else csv_path.with_suffix(".sqlite"))
    case_sha = file_sha256(case_path)
    designs = list(designs)
    rows: dict[int, dict] = {}
    keys: dict[int, str] = {}
    groups: dict[str, list[int]] = {}
    refused: dict[int, dict] = {}
    try:
        store.register_case(case_sha, display_name(case_path.resolve()))
        for index, design in enumerate(designs):
            try:
                keys[index] = inspect_design(design, limits, deep=False).sha256
            except SubmissionError as exc:
                # refused before any worker: an error row under the design's name (redone next run)
                keys[index] = "name:" + display_name(design)
                row = _base_row(design)
                row.update(case_sha256=case_sha, error=f"{type(exc).__name__}: {exc}", seconds=0.0)
                refused[index] = row
            groups.setdefault(keys[index], []).append(index)
        todo = []
        for key, indices in groups.items():
            old = store.get(case_sha, key) if resume else None
            if old is not None and old.get("status") == "ok":
                for index in indices:
                    rows[index] = {**old, "design": display_name(designs[index])}
            else:
                todo.append(indices[0])

        def finish(index: int, row: dict) -> None:
            row = _plain_row(row, designs[index])
            store.put(case_sha, keys[index], row, owner=store.owner)
            for same in groups.get(keys[index], [index]):
                rows[same] = {**row, "design": display_name(designs[same])}
            if progress is not None:
                progress(rows[index])

        stale_after = WORKER_DEATHS * limits.time_limit + 120.0
        started = datetime.now(timezone.utc).isoformat(timespec="microseconds")

        def claim(index: int) -> bool:
            return store.claim(case_sha, keys[index], stale_after=stale_after, unless_done=resume,
                               done_since=started)

        while todo:
            # claimed one at a time just before a worker takes it, so a second evaluator on the
            # same store shares the work; what another evaluator holds is waited for below
            others = [i for i in todo if i in refused and not claim(i)]
            for index in [i for i in todo if i in refused and i not in others]:
                finish(index, refused[index])
            remote = [i for i in todo if i not in refused]
            if remote and scheduler is not None:
                mine = [i for i in remote if claim(i)]
                others += [i for i in remote if i not in set(mine)]
                if mine:
                    _run_dask(case_path, designs, mine, finish, scheduler, jobs, limits, security)
            elif remote:
                others += _run_workers(case_path, designs, remote, finish, jobs, evaluate, limits,
                                       designs_per_worker=designs_per_worker, worker_rss_mb=worker_rss_mb,
                                       claim=claim)
            progressed = len(others) < len(todo)
            todo = []
            for index in others:     # another evaluator has them: wait for its rows (or its death)
                row = store.finished(case_sha, keys[index], since=started)
                if row is not None:
                    for same in groups[keys[index]]:
                        rows[same] = {**row, "design": display_name(designs[same])}
                else:
                    todo.append(index)
            if todo and not progressed:
                time.sleep(0.5)
    finally:
        try:
            store.release_claims()
        finally:
            ordered = [rows[i] for i in range(len(designs)) if i in rows]
            try:
                write_csv(csv_path, ordered)
                write_jsonl(jsonl_path, ordered)
            finally:
                if owned:
                    store.close()
    return [rows[i] for i in range(len(designs))]


def _plain_row(row, design) -> dict:
    """A row as plain JSON values (what came back from a worker or a cluster is checked)."""
    if not isinstance(row, dict) or row.get("status") not in ("ok", "error"):
        row = {**_base_row(design), "error": "the evaluator returned something that is not a result row"}
    row = json.loads(json.dumps(row, default=_json_default))
    row["design"] = display_name(design)
    return row


def _check_scheduler(scheduler: str, security) -> None:
    """Only loopback plain TCP; anything remote needs TLS (results come back as pickles)."""
    from urllib.parse import urlsplit
    if scheduler == "local":
        return
    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    if parts.scheme == "tls":
        if security is None:
            raise LightweightError(f"--scheduler {scheduler}: tls:// needs certificates (--tls-ca, "
                                   f"--tls-cert, --tls-key; see docs/platform.md)")
        return
    if parts.scheme == "tcp" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return
    raise LightweightError(f"--scheduler {scheduler}: a remote scheduler must use tls:// with "
                           f"certificates; plain {parts.scheme}:// sends pickled results unauthenticated "
                           f"(a scheduler and its workers are trusted code: docs/platform.md)")


def _run_dask(case_path, designs, todo, finish, scheduler: str, jobs: int, limits: Limits,
              security=None) -> None:
    _check_scheduler(scheduler, security)
    try:
        from distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise LightweightError("--scheduler needs Dask: pip install 'lightweight[batch]'") from None
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="30s", security=security)
        except (OSError, TimeoutError) as exc:
            raise LightweightError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        case = str(Path(case_path).resolve())
        futures = {client.submit(evaluate_design_in_child, case, str(Path(designs[i]).resolve()), limits,
                                 pure=False): i for i in todo}
        for future in dask_completed(futures):
            index = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker and friends: one row, not the batch
                row = _error_row(case_path, designs[index], limits,
                                 f"Dask could not evaluate this design ({type(exc).__name__})")
            finish(index, row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ==================================================================================== exports
def _columns(rows: Sequence[dict]) -> list[str]:
    middle = sorted({key for row in rows for key in row} - set(FIRST_COLUMNS) - set(LAST_COLUMNS))
    return FIRST_COLUMNS + middle + LAST_COLUMNS


def _atomic_write(path: Path, write: Callable) -> Path:
    """Write through a temporary file and rename: never a half-written export, even on a full disk."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise LightweightError(f"cannot write {display_name(path)}: {exc.strerror or exc}") from None
    return path


def write_csv(path, rows: Sequence[dict]) -> Path:
    """Rows -> CSV with the documented columns first, per-case and check columns in between."""
    columns = _columns(rows)

    def write(file):
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return _atomic_write(path, write)


def write_jsonl(path, rows: Sequence[dict]) -> Path:
    """Rows -> JSON lines (one object per line, input order)."""
    def write(file):
        for row in rows:
            file.write(json.dumps(row, default=_json_default, allow_nan=True) + "\n")
    return _atomic_write(path, write)
