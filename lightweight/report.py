"""One self-contained HTML page per result: parameters, provenance, metrics and pictures.

Approach. A report has to survive being mailed, attached to a ticket or archived next to the
design, so it is a single file: the pictures (design, stress, deformation, convergence) are
PNGs embedded as base64 ``data:`` URIs and the style sheet is inline. The page is written by
plain string templating with every value HTML-escaped, which needs no template engine. The
content comes from :func:`lightweight.viz.load_fields`, so a live Solution/OptimizationResult
and a saved ``.vtu``/``.xdmf`` (whose metadata holds provenance, parameters and history)
give the same page. Without pyvista/matplotlib the page is still written, with a note in
place of the pictures.

Requirements (``requirements=`` with a live result, or an ``evaluation=`` from
:func:`lightweight.casefile.evaluate_requirements`) get their own table first: limit, value,
margin ((limit - value) / limit, negative = missed by that fraction) and pass/fail per
requirement, and the exported part's column when a ``part=`` check
(:func:`lightweight.verify.verify_export`) is given. A mass without a material density is
"unknown", never 0. With ``units=`` (a case's ``[units]``) every figure names its unit.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import LightweightError
from .viz import ResultFields, cell_measures, convergence_plot, load_fields, plot

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:520px;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.note{color:#855}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;
font-size:.85em}.meta{color:#666;font-size:.9em}
"""


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _table(rows, header=None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            cls = ' class="num"' if i > 0 and isinstance(value, (int, float, np.number)) else ""
            tag = "th" if i == 0 else "td"
            cells.append(f"<{tag}{cls}>{html.escape(_fmt(value))}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _unit(units, figure: str) -> str:
    from .casefile import figure_unit
    unit = figure_unit(units or {}, figure)
    return f" [{unit}]" if unit else ""


def metrics(fields: ResultFields, units: dict | None = None) -> list[tuple[str, object]]:
    """Final metrics of a result as (name, value) rows (names carry units when ``units`` names them)."""
    meta = fields.metadata
    summary = meta.get("summary") or {}
    sol_summary = meta.get("solution_summary") or {}
    rows: list[tuple[str, object]] = []
    compliance = summary.get("compliance") or sol_summary.get("compliance") or {}
    for case, value in compliance.items():
        rows.append((f"compliance ({case}){_unit(units, 'compliance')}", float(value)))
    volumes = cell_measures(fields)
    rho = fields.density
    rows.append(("volume fraction", float(volumes @ rho / volumes.sum())))
    volume = summary.get("volume")
    rows.append((f"material volume{_unit(units, 'volume')}",
                 float(volume) if volume is not None else float(volumes @ rho)))
    if summary.get("mass") is not None:
        rows.append((f"mass{_unit(units, 'mass')}", float(summary["mass"])))
    elif "mass" in summary:
        rows.append(("mass", "unknown (no material density)"))
    for name, values in fields.cell_data.items():
        if name.startswith("von_mises:"):
            rows.append((f"max von Mises ({name.split(':', 1)[1]}){_unit(units, 'max_von_mises')}",
                         float(np.max(values))))
    for name, values in fields.point_data.items():
        if name.startswith("displacement:"):
            u = np.asarray(values, dtype=float)
            rows.append((f"max displacement ({name.split(':', 1)[1]}){_unit(units, 'max_displacement')}",
                         float(np.linalg.norm(u.reshape(len(u), -1), axis=1).max())))
    if fields.history or "iterations" in summary:
        rows.append(("iterations", int(summary.get("iterations", len(fields.history)))))
    if "converged" in summary:
        rows.append(("converged", bool(summary["converged"])))
    if summary.get("message"):
        rows.append(("message", summary["message"]))
    if summary.get("problem"):
        rows.insert(0, ("problem", summary["problem"]))
    return rows


def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def requirement_rows(evaluation: dict, units: dict | None = None, part=None) -> tuple[list, list]:
    """(header, rows) of the requirements table from an evaluate_requirements() record; ``part``
    (an ExportCheck) adds the exported part's value, margin and verdict."""
    header = ["requirement", "limit", "value", "margin", "result"]
    if part is not None:
        header += ["part", "part margin", "part result"]
    part_rows = {row["requirement"]: row for row in part.rows} if part is not None else {}
    rows = []
    for key, limit in (evaluation.get("limits") or {}).items():
        value = evaluation["values"].get(key)
        margin = evaluation["margins"].get(key)
        row = [f"{key}{_unit(units, key)}", limit, "unknown" if value is None else value,
               "" if margin is None else f"{100 * margin:+.1f} %",
               "pass" if evaluation["checks"].get(key) else "FAIL"]
        if part is not None:
            p = part_rows.get(key, {})
            row += ["unknown" if p.get("part") is None else p["part"],
                    "" if p.get("margin") is None else f"{100 * p['margin']:+.1f} %",
                    "pass" if p.get("pass") else "FAIL"]
        rows.append(row)
    return header, rows


def write_report(result_or_path, html_path, title: str | None = None, window_size=(800, 600),
                 requirements: dict | None = None, evaluation: dict | None = None,
                 units: dict | None = None, part=None) -> Path:
    """Write a self-contained HTML report of a result; returns the path.

    result_or_path: Solution, OptimizationResult or saved result (.vtu/.xdmf). Pictures
    (design, von Mises and deformation per load case, convergence) are embedded PNGs.
    requirements: a case's [requirements] (judged on the live result's solution), or
    evaluation: an evaluate_requirements() record; units: a case's units; part: the
    ExportCheck of the exported part (module docstring).
    """
    fields = load_fields(result_or_path)
    if evaluation is None and requirements is not None:
        from .casefile import evaluate_requirements
        solution = fields.result if hasattr(fields.result, "compliance") and hasattr(fields.result, "reactions") \
            else getattr(fields.result, "solution", None)
        if solution is None:
            raise LightweightError("requirements= needs a live Solution or OptimizationResult; for a saved "
                                   "result pass evaluation= (lightweight.casefile.evaluate_requirements)")
        evaluation = evaluate_requirements(solution, requirements)
    html_path = Path(html_path)
    source = fields.source or (type(fields.result).__name__ if fields.result is not None else "in-memory result")
    title = title or (f"lightweight report: {Path(fields.source).name}" if fields.source
                      else "lightweight report")
    meta = fields.metadata
    mesh = fields.mesh
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{html.escape(str(source))} &middot; written "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} by lightweight {__version__}</p>"]

    if evaluation is not None:
        verdict = "meets" if evaluation.get("pass") else "does NOT meet"
        parts.append(f"<h2>Requirements</h2><p>The design {verdict} the requirements"
                     + ("" if part is None else
                        f"; the exported part {'meets' if part.passed else 'does NOT meet'} them")
                     + ". Margin: (limit - value) / limit, negative = missed by that fraction.</p>")
        header, rows = requirement_rows(evaluation, units, part)
        parts.append(_table(rows, header=header) if rows else "<p class='note'>no requirements given</p>")
        if part is not None and part.explanation:
            parts.append("<pre>" + html.escape("\n".join(part.explanation)) + "</pre>")
    parts.append("<h2>Results</h2>")
    parts.append(_table(metrics(fields, units), header=("quantity", "value")))

    parts.append("<h2>Pictures</h2>")
    figures, notes = _pictures(fields, window_size)
    parts.extend(figures)
    parts.extend(f"<p class='note'>{html.escape(n)}</p>" for n in notes)

    parts.append("<h2>Case</h2>")
    case_rows = [("mesh", f"{mesh.n_cells} {mesh.cell_type} cells, {mesh.n_nodes} nodes, {mesh.dim}D"
                  + (f", grid {mesh.grid}" if mesh.grid else ""))]
    lo, hi = mesh.bounding_box()
    case_rows.append(("bounding box", f"{np.round(lo, 6).tolist()} .. {np.round(hi, 6).tolist()}"))
    if fields.cases:
        case_rows.append(("load cases", ", ".join(fields.cases)))
    model_rows: list = []
    _flatten("", meta.get("model") or {}, model_rows)
    case_rows += [(f"model.{k}", v) for k, v in model_rows if k not in ("n_cells", "n_nodes", "cell_type", "dim")]
    params: list = []
    _flatten("", meta.get("parameters") or {}, params)
    case_rows += [(f"parameter.{k}", v) for k, v in params]
    parts.append(_table(case_rows, header=("item", "value")))

    parts.append("<h2>Provenance</h2>")
    prov: list = []
    _flatten("", meta.get("provenance") or {}, prov)
    parts.append(_table(prov, header=("item", "value")) if prov else
                 "<p class='note'>no provenance recorded in this result</p>")
    extra = {k: v for k, v in meta.items()
             if k not in ("provenance", "parameters", "summary", "history", "model", "solution_summary")}
    if extra:
        parts.append("<h3>Other metadata</h3><pre>" +
                     html.escape(json.dumps(extra, indent=1, default=str)[:20000]) + "</pre>")
    parts.append("</body></html>")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text("\n".join(parts), encoding="utf-8")
    return html_path


def _pictures(fields: ResultFields, window_size) -> tuple[list[str], list[str]]:
    figures, notes = [], []
    jobs = [("density", None, "design (density)")]
    available = fields.available_fields()
    for case in fields.cases[:4]:
        if "von_mises" in available and f"von_mises:{case}" in fields.cell_data:
            jobs.append(("von_mises", case, f"von Mises stress, load case {case}"))
        if "displacement" in available and f"displacement:{case}" in fields.point_data:
            jobs.append(("displacement", case, f"deformed shape, load case {case}"))
    with tempfile.TemporaryDirectory() as tmp:
        if fields.history:
            try:
                png = convergence_plot(fields.history, Path(tmp) / "convergence.png")
                figures.append(_figure(png, "convergence"))
            except LightweightError as exc:
                notes.append(f"convergence plot skipped: {exc}")
        for k, (field, case, caption) in enumerate(jobs):
            png = Path(tmp) / f"picture{k}.png"
            try:
                plot(fields, field, filename=png, case=case, window_size=window_size)
            except LightweightError as exc:
                notes.append(f"{caption}: picture skipped: {exc}")
                if "pip install" in str(exc):
                    break
                continue
            figures.append(_figure(png, caption))
    return figures, notes


def _figure(png: Path, caption: str) -> str:
    return (f"<figure><img src='{_png_data_uri(png)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def main_report(argv=None) -> int:
    """``lightweight report RESULT [--out report.html] [--title T]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="lightweight report",
                                     description="Write a self-contained HTML report of a saved result.")
    parser.add_argument("result", help="saved result (.vtu/.xdmf written by Solution.save or "
                                       "OptimizationResult.save)")
    parser.add_argument("--out", "-o", default=None,
                        help="HTML file to write (default: RESULT with suffix .html)")
    parser.add_argument("--title", default=None, help="page title")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.result).with_suffix(".html")
    try:
        path = write_report(args.result, out, title=args.title)
    except LightweightError as exc:
        print(f"lightweight report: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_report())
