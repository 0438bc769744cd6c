"""The ``lightweight`` command line: ``demo``, ``optimize``, ``info`` and ``report``.

    lightweight demo [--case mbb|cantilever3d] [--out DIR]   optimize a built-in case, write
                                                              design, pictures, report, summary
    lightweight optimize CASE.toml [--out DIR] [--report]     optimize the case file's part
                                                              (checkpointed; --resume continues)
    lightweight evaluate CASE.toml DESIGN... --out results.csv [--jobs N] [--scheduler ADDR] [--time-limit S]
                     [--store results.sqlite|postgresql://...] [--max-file-mb M] [--max-cells N] [--memory-mb M]
                                                              judge designs (files or folders) in batch
    lightweight results STORE [--csv F] [--jsonl F]           export a results store
    lightweight dashboard STORE --out site/                   static site of a results store
    lightweight info MESH                                     cell type, sizes and named sets
    lightweight report RESULT [--out page.html]               HTML report of a saved result

Design: one ``argparse`` parser with sub-commands (like ``git``), each a small function that
returns an exit code. Errors a user can cause (``LightweightError``: a wrong file, an unknown
set) print one line ``lightweight <command>: error: ...`` and exit with status 1, never a
traceback; anything already written stays on disk. Status 2 is argparse's usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._version import __version__
from .errors import LightweightError

DEMO_CASES = {
    # name: (builder arguments, optimization settings); the settings are the papers' own
    "mbb": ({"nelx": 60, "nely": 20},
            {"volume_fraction": 0.5, "filter_radius": 1.5, "filter": "sensitivity", "optimizer": "oc"}),
    "cantilever3d": ({"n": 8},
                     {"volume_fraction": 0.12, "filter": "density", "optimizer": "mma",
                      "max_iterations": 60}),
}


def _cantilever_filter_radius(n: int) -> float:
    """TopOpt_in_PETSc's radius 0.08, but at least 1.5 elements (h = 1/n) on coarse demo grids."""
    return max(0.08, 1.5 / n)


def _demo(args) -> int:
    from .cases import CASES
    from .optimize import minimize_compliance

    builder_arguments, settings = DEMO_CASES[args.case]
    if args.size is not None:
        keys = list(builder_arguments)
        if len(args.size) != len(keys):
            raise LightweightError(f"--size for case {args.case!r} takes {len(keys)} number(s): {', '.join(keys)}")
        builder_arguments = dict(zip(keys, args.size))
    if args.case == "cantilever3d":
        settings = {**settings, "filter_radius": _cantilever_filter_radius(builder_arguments["n"])}
    if args.iterations is not None:
        settings = {**settings, "max_iterations": args.iterations}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = CASES[args.case](**builder_arguments)
    t0 = time.perf_counter()
    result = minimize_compliance(model, verbose=not args.quiet, **settings)
    seconds = time.perf_counter() - t0
    design = out / f"{args.case}.vtu"
    result.save(design)
    summary = {"case": args.case, "case_arguments": builder_arguments, "settings": settings,
               "seconds": round(seconds, 3), **result.summary(), "provenance": result.provenance}
    summary_path = out / f"{args.case}.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    written = [design, summary_path]
    if not args.no_pictures:
        written += _demo_pictures(result, out / args.case)
    compliance = ", ".join(f"{k} {v:.6g}" for k, v in result.compliance.items())
    print(f"{args.case}: {result.iterations} iterations in {seconds:.1f} s ({result.message}); "
          f"compliance {compliance}, volume fraction {result.volume_fraction:.4f}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _demo_pictures(result, stem: Path) -> list[Path]:
    """Design picture, convergence plot and HTML report; skipped with a note without the viz extra."""
    from .report import write_report
    from .viz import convergence_plot, plot
    density_png = stem.with_name(stem.name + "_density.png")
    try:
        plot(result, field="density", filename=density_png)
        convergence_png = convergence_plot(result, stem.with_name(stem.name + "_convergence.png"))
    except ImportError as exc:
        print(f"note: no pictures ({exc}); install the viz extra: pip install 'lightweight[viz]'",
              file=sys.stderr)
        return []
    except LightweightError as exc:  # e.g. an all-gray design has nothing above the threshold
        print(f"note: no pictures: {exc}", file=sys.stderr)
        return []
    report = write_report(result, stem.with_suffix(".html"))
    return [density_png, Path(convergence_png), Path(report)]


def _check_checkpoint(path: Path) -> None:
    """One clear line for a truncated, empty or garbled checkpoint (not BadZipFile/EOFError tracebacks)."""
    import zipfile
    import numpy as np
    try:
        with np.load(path) as data:
            for key in data.files:
                data[key]
            if "meta" not in data.files:
                raise KeyError("meta")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise LightweightError(f"--resume: checkpoint {path} is damaged ({type(exc).__name__}: truncated, "
                               f"empty or not a checkpoint); delete it and run without --resume") from None


def _optimize(args) -> int:
    from .casefile import evaluate_requirements, read_case
    from .optimize import minimize_compliance, minimize_mass

    case = read_case(args.case)
    if not case.optimize:
        raise LightweightError(f"case file {case.path} has no [optimize] table: nothing to optimize "
                               f"(add problem, volume_fraction or max_compliance_factor, filter_radius)")
    options = dict(case.optimize)
    problem = options.pop("problem")
    if args.iterations is not None:
        options["max_iterations"] = args.iterations
    out = Path(args.out) if args.out else Path(f"{case.name}_result")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"{case.name}.checkpoint.npz"
    if args.resume and not checkpoint.is_file():
        raise LightweightError(f"--resume: no checkpoint {checkpoint} to resume from")
    if args.resume:
        _check_checkpoint(checkpoint)
    run = minimize_mass if problem == "min_mass" else minimize_compliance
    snapshots = None
    if args.snapshots:
        from .viz import SnapshotWriter
        snapshots = SnapshotWriter(out / f"{case.name}_snapshots.xdmf", case.model.mesh,
                                   every=args.snapshots, gif=out / f"{case.name}_snapshots.gif")
    t0 = time.perf_counter()
    try:
        # a checkpoint every 10 iterations: an interrupted run loses at most 10 iterations
        result = run(case.model, verbose=not args.quiet, checkpoint=checkpoint, checkpoint_every=10,
                     resume=checkpoint if args.resume else None, callback=snapshots, **options)
    except (LightweightError, KeyboardInterrupt) as exc:
        partial = getattr(exc, "partial_result", None)
        if partial is not None:            # keep the last completed iteration's design
            partial.provenance.update(case.provenance())
            saved = out / f"{case.name}.partial.vtu"
            partial.save(saved)
            print(f"{partial.message}; its design is in {saved}; `lightweight optimize {args.case} "
                  f"--out {out} --resume` continues from the last checkpoint", file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            print("lightweight optimize: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        raise
    finally:
        if snapshots is not None:
            snapshots.close()
    seconds = time.perf_counter() - t0
    result.provenance.update(case.provenance())
    design = out / f"{case.name}.vtu"
    result.save(design)
    figures = evaluate_requirements(result.solution, case.requirements)
    summary = {"case": case.name, "problem": problem, "seconds": round(seconds, 3), **result.summary(),
               "requirements": case.requirements, "evaluation": figures, "provenance": result.provenance}
    if case.units:
        summary["units"] = case.units       # {quantity: unit}: mass, compliance, stress, ...
    check = None
    if args.export or args.tighten:
        # the closed loop: the part as manufactured, re-evaluated with the same case file
        from .export import export_solid
        from .verify import verify_export
        part_path = out / f"{case.name}_solid.msh"
        export_solid(result, part_path)
        if args.iterations is not None:
            case.optimize["max_iterations"] = args.iterations      # the rerun's cap too
        check = verify_export(result, part_path, case, tighten=args.tighten)
        summary.update(part_file=str(part_path), part=check.summary())
        if check.rerun_result is not None:
            check.rerun_result.provenance.update(case.provenance())
            check.rerun_result.save(out / f"{case.name}_tightened.vtu")
    summary_path = out / f"{case.name}.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    written = [design, summary_path]
    if snapshots is not None:
        written += [p for p in (snapshots.path, out / f"{case.name}_snapshots.gif") if p.is_file()]
    if check is not None:
        written.append(Path(summary["part_file"]))
    if args.report:
        written += _demo_pictures(result, out / case.name)
        if written[-1].suffix == ".html":       # the report again, with requirements, units and the part
            from .report import write_report
            write_report(result, written[-1], evaluation=figures, units=case.units, part=check)
    status = "meets" if figures["pass"] else "does NOT meet"
    mass = "unknown (no material density)" if figures["mass"] is None else (
        f"{figures['mass']:.6g}" + (f" {case.units['mass']}" if "mass" in case.units else ""))
    print(f"{case.name}: {result.iterations} iterations in {seconds:.1f} s ({result.message}); mass "
          f"{mass}, volume fraction {result.volume_fraction:.4f}; {status} the requirements "
          f"{figures['checks'] or '(none given)'}")
    if check is not None:
        print(f"exported part ({check.part_solution.model.mesh.n_cells} tets) "
              f"{'meets' if check.passed else 'does NOT meet'} the requirements:")
        print(check.text())
        if check.rerun is not None:
            print(f"rerun with tightened limits: the part {'meets' if check.rerun.passed else 'does NOT meet'} "
                  f"the requirements:")
            print(check.rerun.text())
            written += [out / f"{case.name}_tightened.vtu", out / f"{case.name}_solid_tightened.msh"]
    for path in written:
        print(f"wrote {path}")
    return 0


# the documented design formats (lightweight.sandbox.FORMATS); a folder argument stands for these
MESH_SUFFIXES = (".vtu", ".xdmf", ".msh", ".inp")


def _design_files(arguments) -> list[str]:
    """DESIGN arguments -> files; a folder stands for the design files in it (sorted, no links)."""
    files = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and not path.is_symlink():
            files += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
        else:
            files.append(argument)       # a missing or refused file becomes an error row, not a stop
    return files


def _security(args):
    """A Dask Security object from --tls-ca/--tls-cert/--tls-key, or None."""
    given = [args.tls_ca, args.tls_cert, args.tls_key]
    if not any(given):
        return None
    if not all(given):
        raise LightweightError("--tls-ca, --tls-cert and --tls-key go together (docs/platform.md)")
    try:
        from distributed.security import Security
    except ImportError:
        raise LightweightError("--tls-* needs Dask: pip install 'lightweight[batch]'") from None
    return Security(tls_ca_file=args.tls_ca, tls_client_cert=args.tls_cert, tls_client_key=args.tls_key,
                    require_encryption=True)


def _evaluate(args) -> int:
    from .batch import evaluate_designs, export_paths
    from .casefile import read_case
    designs = _design_files(args.designs)
    if not designs:
        raise LightweightError(f"no design files in {', '.join(args.designs)} "
                               f"(looked for {', '.join(MESH_SUFFIXES)})")
    counts = {"ok": 0, "error": 0, "pass": 0}

    def progress(row):
        counts[row["status"]] += 1
        counts["pass"] += bool(row.get("pass"))
        if not args.quiet:
            verdict = ("pass" if row.get("pass") else "fail") if row["status"] == "ok" else f"error: {row['error']}"
            print(f"[{counts['ok'] + counts['error']}/{len(designs)}] {row['design']}: {verdict} "
                  f"({row.get('seconds') or 0:.2f} s)", flush=True)

    case = read_case(args.case)
    limits = case.limits.updated(max_file_mb=args.max_file_mb, max_cells=args.max_cells,
                                 memory_mb=args.memory_mb)
    try:
        rows = evaluate_designs(args.case, designs, args.out, jobs=args.jobs, scheduler=args.scheduler,
                                resume=not args.no_resume, progress=progress, time_limit=args.time_limit,
                                limits=limits, store=args.store, security=_security(args))
    except KeyboardInterrupt:
        print("lightweight evaluate: interrupted; finished rows are in the store, rerun to continue",
              file=sys.stderr)
        raise SystemExit(130) from None
    ok = sum(r["status"] == "ok" for r in rows)
    passed = sum(bool(r.get("pass")) for r in rows if r["status"] == "ok")
    reused = len(rows) - counts["ok"] - counts["error"]
    csv_path, jsonl_path = export_paths(args.out)
    print(f"{len(rows)} designs: {ok} evaluated ({passed} pass), {len(rows) - ok} errors"
          + (f", {reused} kept from an earlier run" if reused else "")
          + f"; wrote {csv_path} and {jsonl_path}")
    return 0


def _results(args) -> int:
    from .batch import write_csv, write_jsonl
    from .store import open_store
    if not (args.csv or args.jsonl):
        raise LightweightError("results: give --csv FILE and/or --jsonl FILE")
    if not args.store.startswith(("postgresql://", "postgres://")) and not Path(args.store).is_file():
        raise LightweightError(f"results store {args.store} does not exist")
    store = open_store(args.store)
    try:
        rows = store.rows(version=args.version)
    finally:
        store.close()
    if args.case:
        rows = [r for r in rows if str(r.get("case_sha256") or "").startswith(args.case)]
    for path, write in ((args.csv, write_csv), (args.jsonl, write_jsonl)):
        if path:
            write(path, rows)
            print(f"wrote {len(rows)} rows to {path}")
    return 0


def _dashboard(args) -> int:
    from .dashboard import write_dashboard
    if not args.store.startswith(("postgresql://", "postgres://")) and not Path(args.store).is_file():
        raise LightweightError(f"results store {args.store} does not exist")
    index = write_dashboard(args.store, args.out, pictures=not args.no_pictures)
    print(f"wrote {index}")
    return 0


def _info(args) -> int:
    from .mesh import read_mesh
    mesh = read_mesh(args.mesh)
    lo, hi = mesh.bounding_box()
    print(f"{args.mesh}: {mesh.n_cells} {mesh.cell_type} cells, {mesh.n_nodes} nodes, {mesh.dim}D")
    print(f"bounding box {lo.tolist()} .. {hi.tolist()}")
    for kind, sets in (("node sets", mesh.node_sets), ("face sets", mesh.face_sets),
                       ("cell sets", mesh.cell_sets)):
        if sets:
            print(f"{kind}: " + ", ".join(f"{name} ({len(ids)})" for name, ids in sorted(sets.items())))
        else:
            print(f"{kind}: none")
    return 0


def _report(args) -> int:
    from .report import write_report
    out = Path(args.out) if args.out else Path(args.result).with_suffix(".html")
    print(write_report(args.result, out, title=args.title))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lightweight`` command (sub-commands demo, info, report)."""
    parser = argparse.ArgumentParser(prog="lightweight",
                                     description="Structural optimization: the lightest part that is stiff enough.")
    parser.add_argument("--version", action="version", version=f"lightweight {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="optimize a built-in standard case and write its results")
    demo.add_argument("--case", choices=sorted(DEMO_CASES), default="mbb",
                      help="mbb: top88's MBB half-beam (default); cantilever3d: TopOpt_in_PETSc's cantilever")
    demo.add_argument("--out", default="lightweight-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--size", type=int, nargs="+", default=None,
                      help="grid size: NELX NELY for mbb, N (2N x N x N hexes) for cantilever3d")
    demo.add_argument("--iterations", type=int, default=None, help="iteration cap")
    demo.add_argument("--no-pictures", action="store_true", help="skip PNGs and the HTML report")
    demo.add_argument("--quiet", action="store_true", help="no progress line per iteration")
    demo.set_defaults(run=_demo)

    optimize = commands.add_parser("optimize", help="optimize the part described by a case file (TOML)")
    optimize.add_argument("case", help="case file (TOML, see docs/case_files.md and README)")
    optimize.add_argument("--out", default=None, help="output folder (default: CASE_result)")
    optimize.add_argument("--report", action="store_true", help="also write pictures and an HTML report")
    optimize.add_argument("--iterations", type=int, default=None, help="iteration cap (overrides the case)")
    optimize.add_argument("--snapshots", type=int, default=0, metavar="K",
                          help="save the density every K iterations (XDMF time series + GIF)")
    optimize.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    optimize.add_argument("--export", action="store_true",
                          help="also export the part as a tet mesh with the named sets (NAME_solid.msh), "
                               "re-evaluate it with the case and report its figures next to the design's")
    optimize.add_argument("--tighten", action="store_true",
                          help="with --export: if the part misses a compliance limit, rerun with the limits "
                               "tightened by the measured part/design ratio, export and check again")
    optimize.add_argument("--quiet", action="store_true", help="no progress line per iteration")
    optimize.set_defaults(run=_optimize)

    evaluate = commands.add_parser("evaluate", help="judge designs against a case file, one CSV/JSON row each")
    evaluate.add_argument("case", help="case file (TOML)")
    evaluate.add_argument("designs", nargs="+", help="design mesh files, or folders of them")
    evaluate.add_argument("--out", default="results.csv",
                          help="CSV export to write (a .jsonl twin goes beside it; a .jsonl --out names the "
                               "JSON lines and the CSV goes beside it)")
    evaluate.add_argument("--store", default=None, metavar="STORE",
                          help="results store: SQLite file or postgresql:// URL (default: --out with suffix .sqlite)")
    evaluate.add_argument("--jobs", type=int, default=1, help="worker processes on this machine")
    evaluate.add_argument("--scheduler", default=None,
                          help="Dask scheduler address (tcp://host:8786), or 'local' for a local cluster")
    evaluate.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                          help="kill a design's worker process after this long and give it an error row "
                               "(default: the case's [limits] time_limit, else 600)")
    evaluate.add_argument("--max-file-mb", type=float, default=None, metavar="MIB",
                          help="largest file a design may have (default: [limits] max_file_mb, else 256)")
    evaluate.add_argument("--max-cells", type=int, default=None, metavar="N",
                          help="most cells a design may have (default: [limits] max_cells, else 2000000)")
    evaluate.add_argument("--memory-mb", type=float, default=None, metavar="MIB",
                          help="address space of a worker process (default: [limits] memory_mb, else 6144)")
    evaluate.add_argument("--tls-ca", default=None, help="CA certificate for a tls:// Dask scheduler")
    evaluate.add_argument("--tls-cert", default=None, help="client certificate for a tls:// Dask scheduler")
    evaluate.add_argument("--tls-key", default=None, help="client key for a tls:// Dask scheduler")
    evaluate.add_argument("--no-resume", action="store_true",
                          help="recompute designs already in the store for this case and version")
    evaluate.add_argument("--quiet", action="store_true", help="no line per design")
    evaluate.set_defaults(run=_evaluate)

    results = commands.add_parser("results", help="export a results store as CSV and/or JSON lines")
    results.add_argument("store", help="SQLite file or postgresql:// URL")
    results.add_argument("--csv", default=None, help="CSV file to write")
    results.add_argument("--jsonl", default=None, help="JSON-lines file to write")
    results.add_argument("--version", default=None, help="only rows of this package version")
    results.add_argument("--case", default=None, metavar="SHA256", help="only rows of this case (hash prefix)")
    results.set_defaults(run=_results)

    dashboard = commands.add_parser("dashboard", help="write a static site of a results store")
    dashboard.add_argument("store", help="SQLite file or postgresql:// URL")
    dashboard.add_argument("--out", default="site", help="folder to write (default: %(default)s)")
    dashboard.add_argument("--no-pictures", action="store_true", help="no design thumbnails")
    dashboard.set_defaults(run=_dashboard)

    info = commands.add_parser("info", help="describe a mesh file: cells, nodes, named sets")
    info.add_argument("mesh", help="mesh file (.msh, .inp, .vtu, .xdmf, ...)")
    info.set_defaults(run=_info)

    report = commands.add_parser("report", help="write a self-contained HTML report of a saved result")
    report.add_argument("result", help="saved result (.vtu/.xdmf written by .save())")
    report.add_argument("--out", "-o", default=None, help="HTML file (default: RESULT with suffix .html)")
    report.add_argument("--title", default=None, help="page title")
    report.set_defaults(run=_report)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``lightweight`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except LightweightError as exc:
        print(f"lightweight {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
