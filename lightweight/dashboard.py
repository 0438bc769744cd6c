"""The platform's dashboard: a static site of a results store (``lightweight dashboard STORE``).

What it writes into ``out/``:

- ``index.html``: per case, a Pareto plot of mass against compliance (the largest compliance
  over the load cases; the non-dominated designs joined by a line, each point a link to its
  design), a table of every stored row (design, status, pass, mass, compliance per load case,
  safety factor, largest von Mises stress, frequency columns when rows have them, version,
  time) that sorts by a click on a column head and filters by text, status and version, and the
  failures with their reasons;
- ``designs/<id>.html``: one page per design and case: a thumbnail, every figure of the newest
  row, the hashes and provenance, and the design's history across package versions;
- ``thumbs/<id>.png``: thumbnails (pyvista, off-screen) when the viz extra is installed and the
  design file is still where it was evaluated; the file is re-checked by the sandbox and drawn in
  one child process with a time limit, because it is a stranger's file;
- ``dashboard.css`` and ``dashboard.js``: no CDN, nothing fetched from outside (the platform
  may have no network, and a page should not phone home).

Approach: plain HTML written with the standard library (``html.escape`` on every value that came
from a row, since design names and error messages are user-controlled), an inline SVG for the
Pareto plot (no matplotlib needed, crisp at any zoom, and its points are links), and about sixty
lines of vanilla JavaScript for sorting and filtering. The URL may carry ``?sort=COLUMN&desc=1&q=TEXT&status=ok``
so a view can be linked to (and tested in a headless browser).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from .errors import LightweightError

STATUS_ORDER = ("pass", "fail", "error")


def _id(case_sha: str, row: dict) -> str:
    key = row.get("design_sha256") or ("name:" + str(row.get("design")))
    return hashlib.sha256(f"{case_sha}|{key}".encode()).hexdigest()[:16]


def _verdict(row: dict) -> str:
    if row.get("status") != "ok":
        return "error"
    return "pass" if row.get("pass") else "fail"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _fmt(value) -> str:
    number = _number(value)
    if number is None:
        return "" if value is None else html.escape(str(value))
    if math.isinf(number):
        return "∞"
    return f"{number:.5g}"


def _compliance(row: dict) -> float | None:
    values = [_number(v) for k, v in row.items() if k.startswith("compliance.")]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def write_dashboard(store, out, pictures: bool = True, thumbnail_seconds: float = 120.0) -> Path:
    """Write the static site of a store (path, URL or ResultStore) into ``out``; returns index.html."""
    from .store import ResultStore, open_store
    owned = not isinstance(store, ResultStore)
    store = open_store(store)
    try:
        rows = store.rows()
        case_names = store.cases()
    finally:
        if owned:
            store.close()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LightweightError(f"dashboard --out {out} is a file; name a folder")
    (out / "designs").mkdir(parents=True, exist_ok=True)
    (out / "thumbs").mkdir(exist_ok=True)
    (out / "dashboard.css").write_text(CSS, encoding="utf-8")
    (out / "dashboard.js").write_text(JS, encoding="utf-8")

    by_case: dict[str, list[dict]] = {}
    for row in rows:
        by_case.setdefault(str(row.get("case_sha256") or "unknown"), []).append(row)
    # newest row per design (by version order of appearance in time) for pages, Pareto and thumbnails
    designs: dict[str, dict[str, list[dict]]] = {}
    for case_sha, case_rows in by_case.items():
        for row in case_rows:
            designs.setdefault(case_sha, {}).setdefault(_id(case_sha, row), []).append(row)
    for per_case in designs.values():
        for history in per_case.values():
            history.sort(key=lambda r: str(r.get("timestamp", "")))
    thumbs = _thumbnails(designs, out / "thumbs", thumbnail_seconds) if pictures else set()

    sections = []
    for case_sha in sorted(by_case):
        name = case_names.get(case_sha, case_sha[:12])
        newest = [history[-1] for history in designs[case_sha].values()]
        sections.append(_case_section(case_sha, name, by_case[case_sha], newest, thumbs))
        for design_id, history in designs[case_sha].items():
            _design_page(out / "designs" / f"{design_id}.html", case_sha, name, design_id, history,
                         design_id in thumbs)
    versions = sorted({str(r.get("version")) for r in rows})
    body = (f"<h1>Designs evaluated</h1><p class='summary'>{len(rows)} rows, {len(by_case)} case(s), "
            f"versions {', '.join(html.escape(v) for v in versions) or 'none'}</p>"
            + "".join(sections) if rows else "<h1>Designs evaluated</h1><p>The store holds no results yet.</p>")
    index = out / "index.html"
    index.write_text(_page("lightweight dashboard", body, prefix=""), encoding="utf-8")
    return index


def _page(title: str, body: str, prefix: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<link rel='stylesheet' href='{prefix}dashboard.css'></head><body>{body}"
            f"<script src='{prefix}dashboard.js'></script></body></html>\n")


def _case_section(case_sha: str, name: str, rows: list[dict], newest: list[dict], thumbs: set) -> str:
    cases = sorted({k.split(".", 1)[1] for r in rows for k in r if k.startswith("compliance.")})
    extra = sorted({k for r in rows for k in r if k.startswith("frequency") or k == "min_frequency"})
    head = (["", "design", "status", "mass"] + [f"compliance.{c}" for c in cases]
            + ["safety_factor", "max_von_mises"] + extra + ["version", "timestamp"])
    lines = []
    for row in sorted(rows, key=lambda r: (str(r.get("design")), str(r.get("version")))):
        design_id = _id(case_sha, row)
        verdict = _verdict(row)
        thumb = (f"<img class='thumb' src='thumbs/{design_id}.png' alt='' loading='lazy'>"
                 if design_id in thumbs else "")
        cells = [f"<td>{thumb}</td>",
                 f"<td data-value='{html.escape(str(row.get('design')))}'><a href='designs/{design_id}.html'>"
                 f"{html.escape(str(row.get('design')))}</a></td>",
                 f"<td data-value='{STATUS_ORDER.index(verdict)}' class='{verdict}'>{verdict}</td>"]
        for key in head[3:]:
            value = row.get(key)
            number = _number(value)
            sort = "" if number is None else (repr(number) if math.isfinite(number) else "1e308")
            cells.append(f"<td data-value='{sort if number is not None else html.escape(str(value or ''))}'>"
                         f"{_fmt(value)}</td>")
        lines.append(f"<tr data-status='{verdict}' data-version='{html.escape(str(row.get('version')))}'>"
                     f"{''.join(cells)}</tr>")
    header = "".join(f"<th data-column='{html.escape(h)}'>{html.escape(h)}</th>" for h in head)
    versions = sorted({str(r.get("version")) for r in rows})
    version_options = "".join(f"<option>{html.escape(v)}</option>" for v in versions)
    failures = [r for r in newest if r.get("status") != "ok"]
    failure_list = "".join(
        f"<li><a href='designs/{_id(case_sha, r)}.html'>{html.escape(str(r.get('design')))}</a>: "
        f"{html.escape(str(r.get('error')))}</li>" for r in sorted(failures, key=lambda r: str(r.get("design"))))
    return (f"<section class='case'><h2>Case {html.escape(name)}</h2>"
            f"<p class='hash'>case SHA-256 {html.escape(case_sha)}</p>"
            f"<h3>Mass against compliance</h3>{_pareto_svg(case_sha, newest)}"
            f"<h3>All designs</h3><div class='filters'><input type='search' class='q' placeholder='filter…' "
            f"aria-label='filter'> <select class='status' aria-label='status'><option value=''>all</option>"
            f"<option>pass</option><option>fail</option><option>error</option></select> "
            f"<select class='version' aria-label='version'><option value=''>all versions</option>{version_options}"
            f"</select> <span class='count'></span></div>"
            f"<table class='designs'><thead><tr>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
            f"<h3>Failures ({len(failures)})</h3><ul class='failures'>{failure_list or '<li>none</li>'}</ul>"
            f"</section>")


def _pareto_front(points: list[tuple[float, float, dict]]) -> list[tuple[float, float, dict]]:
    """The non-dominated points (less mass and less compliance are better), by mass."""
    front, best = [], math.inf
    for mass, compliance, row in sorted(points, key=lambda p: (p[0], p[1])):
        if compliance < best:
            front.append((mass, compliance, row))
            best = compliance
    return front


def _pareto_svg(case_sha: str, rows: list[dict]) -> str:
    points = [(float(r["mass"]), _compliance(r), r) for r in rows
              if r.get("status") == "ok" and _number(r.get("mass")) is not None and _compliance(r) is not None]
    points = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not points:
        return "<p>No evaluated design to plot yet.</p>"
    width, height, margin = 680, 420, 84
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x0, x1 = (x0 - 1, x1 + 1) if x0 == x1 else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    y0, y1 = (y0 - 1, y1 + 1) if y0 == y1 else (y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0))

    def sx(x):
        return margin + (x - x0) / (x1 - x0) * (width - 1.5 * margin)

    def sy(y):
        return height - margin - (y - y0) / (y1 - y0) * (height - 1.5 * margin)
    parts = [f"<svg class='pareto' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
             f"width='{width}' height='{height}' role='img' aria-label='mass against compliance'>",
             f"<line x1='{margin}' y1='{height - margin}' x2='{width - margin / 2}' y2='{height - margin}' class='axis'/>",
             f"<line x1='{margin}' y1='{margin / 2}' x2='{margin}' y2='{height - margin}' class='axis'/>"]
    for k in range(5):
        x = x0 + (x1 - x0) * k / 4
        y = y0 + (y1 - y0) * k / 4
        parts.append(f"<text x='{sx(x):.1f}' y='{height - margin + 18}' class='tick' text-anchor='middle'>{x:.3g}</text>")
        parts.append(f"<text x='{margin - 6}' y='{sy(y) + 4:.1f}' class='tick' text-anchor='end'>{y:.4g}</text>")
    parts.append(f"<text x='{(width + margin) / 2}' y='{height - 12}' text-anchor='middle' class='label'>mass</text>")
    parts.append(f"<text x='14' y='{height / 2}' text-anchor='middle' class='label' "
                 f"transform='rotate(-90 14 {height / 2})'>compliance (largest over load cases)</text>")
    front = _pareto_front(points)
    if len(front) > 1:
        path = " ".join(f"{sx(m):.1f},{sy(c):.1f}" for m, c, _ in front)
        parts.append(f"<polyline points='{path}' class='front'/>")
    on_front = {id(r) for _, _, r in front}
    for mass, compliance, row in points:
        kind = ("front " if id(row) in on_front else "") + _verdict(row)
        parts.append(f"<a href='designs/{_id(case_sha, row)}.html'><circle cx='{sx(mass):.1f}' cy='{sy(compliance):.1f}' "
                     f"r='5' class='{kind}'><title>{html.escape(str(row.get('design')))}: mass {mass:.4g}, "
                     f"compliance {compliance:.4g}</title></circle></a>")
    parts.append("</svg>")
    return "".join(parts)


def _design_page(path: Path, case_sha: str, case_name: str, design_id: str, history: list[dict],
                 thumb: bool) -> None:
    row = history[-1]
    figures = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                      for k, v in sorted(row.items()) if k not in ("error",))
    versions = "".join(
        f"<tr><td>{html.escape(str(r.get('version')))}</td><td class='{_verdict(r)}'>{_verdict(r)}</td>"
        f"<td>{_fmt(r.get('mass'))}</td><td>{_fmt(_compliance(r))}</td><td>{_fmt(r.get('safety_factor'))}</td>"
        f"<td>{html.escape(str(r.get('timestamp')))}</td></tr>" for r in history)
    error = (f"<p class='error'>Error: {html.escape(str(row.get('error')))}</p>" if row.get("status") != "ok" else "")
    picture = f"<img class='picture' src='../thumbs/{design_id}.png' alt='the design'>" if thumb else ""
    body = (f"<p><a href='../index.html'>← all designs</a></p><h1>{html.escape(str(row.get('design')))}</h1>"
            f"<p>Case {html.escape(case_name)} — <span class='{_verdict(row)}'>{_verdict(row)}</span></p>"
            f"{error}{picture}<h2>Hashes and provenance</h2><table class='facts'>"
            f"<tr><th>design SHA-256</th><td>{html.escape(str(row.get('design_sha256')))}</td></tr>"
            f"<tr><th>case SHA-256</th><td>{html.escape(case_sha)}</td></tr>"
            f"<tr><th>package version</th><td>{html.escape(str(row.get('version')))}</td></tr>"
            f"<tr><th>evaluated</th><td>{html.escape(str(row.get('timestamp')))}</td></tr>"
            f"<tr><th>stiffness law</th><td>{html.escape(str(row.get('interpolation') or 'solid'))}</td></tr></table>"
            f"<h2>Figures</h2><table class='facts'>{figures}</table>"
            f"<h2>History across versions</h2><table class='facts'><tr><th>version</th><th>status</th><th>mass</th>"
            f"<th>compliance</th><th>safety factor</th><th>time</th></tr>{versions}</table>")
    path.write_text(_page(str(row.get("design")), body, prefix="../"), encoding="utf-8")


def _thumbnails(designs: dict, folder: Path, seconds: float) -> set[str]:
    """Render the thumbnails that can be drawn; returns the design ids that have one."""
    try:
        import pyvista  # noqa: F401
    except ImportError:
        return set()
    from .sandbox import SubmissionError, inspect_design
    jobs = []
    for per_case in designs.values():
        for design_id, history in per_case.items():
            row = history[-1]
            path = Path(str(row.get("design")))
            if row.get("status") != "ok" or not path.is_file():
                continue
            try:
                if inspect_design(path, deep=False).sha256 != row.get("design_sha256"):
                    continue                     # the file changed since: its picture would lie
            except SubmissionError:
                continue
            jobs.append((str(path), str(folder / f"{design_id}.png"), design_id))
    if not jobs:
        return set()
    code = ("import json, sys, tempfile, numpy as np, lightweight as lw\n"
            "for design, png, key in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        mesh, _, cells = lw.read_mesh_fields(design)\n"
            "        density = np.asarray(cells.get('density', np.ones(mesh.n_cells)), float).reshape(-1)\n"
            "        with tempfile.TemporaryDirectory() as tmp:\n"
            "            lw.write_mesh(tmp + '/d.vtu', mesh, cell_data={'density': density})\n"
            "            lw.plot(tmp + '/d.vtu', field='density', filename=png, window_size=(320, 240))\n"
            "        print('ok', key, flush=True)\n"
            "    except Exception as exc:\n"
            "        print('failed', key, type(exc).__name__, flush=True)\n")
    env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW=os.environ.get("VTK_DEFAULT_OPENGL_WINDOW",
                                                                    "vtkEGLRenderWindow"))
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(jobs)], capture_output=True, text=True,
                              timeout=seconds + 2.0 * len(jobs), env=env)
        output = done.stdout
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    made = {line.split()[1] for line in output.splitlines() if line.startswith("ok ")}
    return {key for key in made if (folder / f"{key}.png").is_file()}


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.6em}.hash{color:#666;font-family:monospace;font-size:.85em}
table{border-collapse:collapse;margin:.5em 0}th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left}
table.designs th{cursor:pointer;background:#f3f3f3;user-select:none}table.designs th.sorted-asc::after{content:" ▲"}
table.designs th.sorted-desc::after{content:" ▼"}td.pass,span.pass{color:#167a2c;font-weight:600}
td.fail,span.fail{color:#b35c00;font-weight:600}td.error,span.error{color:#b00020;font-weight:600}
img.thumb{width:96px;height:72px;object-fit:contain}img.picture{max-width:480px;border:1px solid #ddd}
.filters{margin:.4em 0}.filters input{width:18em}.count{color:#666}
svg.pareto{border:1px solid #ddd;background:#fff}svg .axis{stroke:#444}svg .tick{font-size:11px;fill:#444}
svg .label{font-size:13px;fill:#222}svg .front{fill:none;stroke:#1f5fbf;stroke-width:1.5}
svg circle{fill:#999;stroke:#fff}svg circle.pass{fill:#167a2c}svg circle.fail{fill:#b35c00}
svg circle.front{stroke:#1f5fbf;stroke-width:2}p.error{color:#b00020}ul.failures li{margin:.2em 0}
"""

JS = """'use strict';
(function () {
  function cellValue(row, index) {
    const cell = row.children[index];
    const raw = cell ? cell.getAttribute('data-value') : null;
    if (raw === null || raw === '') return {num: null, text: cell ? cell.textContent : ''};
    const num = Number(raw);
    return Number.isNaN(num) ? {num: null, text: raw} : {num: num, text: raw};
  }
  function sortTable(table, index, descending) {
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = cellValue(a, index), y = cellValue(b, index);
      let order;
      if (x.num !== null && y.num !== null) order = x.num - y.num;
      else if (x.num !== null) order = -1;
      else if (y.num !== null) order = 1;
      else order = x.text.localeCompare(y.text);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.from(table.tHead.rows[0].cells).forEach(function (th, k) {
      th.classList.remove('sorted-asc', 'sorted-desc');
      if (k === index) th.classList.add(descending ? 'sorted-desc' : 'sorted-asc');
    });
  }
  function applyFilters(section) {
    const query = section.querySelector('input.q').value.toLowerCase();
    const status = section.querySelector('select.status').value;
    const version = section.querySelector('select.version').value;
    let shown = 0;
    const rows = section.querySelectorAll('table.designs tbody tr');
    rows.forEach(function (row) {
      const visible = (!query || row.textContent.toLowerCase().indexOf(query) >= 0)
        && (!status || row.getAttribute('data-status') === status)
        && (!version || row.getAttribute('data-version') === version);
      row.hidden = !visible;
      if (visible) shown += 1;
    });
    section.querySelector('.count').textContent = shown + ' of ' + rows.length + ' shown';
  }
  const params = new URLSearchParams(window.location.search);
  document.querySelectorAll('section.case').forEach(function (section) {
    const table = section.querySelector('table.designs');
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach(function (th, index) {
      th.addEventListener('click', function () {
        sortTable(table, index, th.classList.contains('sorted-asc'));
      });
    });
    ['input', 'change'].forEach(function (kind) {
      section.querySelector('.filters').addEventListener(kind, function () { applyFilters(section); });
    });
    if (params.get('q')) section.querySelector('input.q').value = params.get('q');
    if (params.get('status')) section.querySelector('select.status').value = params.get('status');
    const column = params.get('sort');
    const index = heads.findIndex(function (th) { return th.getAttribute('data-column') === column; });
    if (index >= 0) sortTable(table, index, params.get('desc') === '1');
    applyFilters(section);
  });
  document.body.setAttribute('data-ready', 'yes');
})();
"""
