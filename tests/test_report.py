"""HTML report: self-contained (every image a PNG data URI), the right numbers, the CLI entry
point, and (when Chromium is installed) the page renders in a headless browser."""

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

import lightweight as lw
from lightweight.optimize.result import OptimizationResult

pytest.importorskip("pyvista")
pytest.importorskip("matplotlib")
from lightweight import report  # noqa: E402
from lightweight.viz import load_fields  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def design():
    mesh = lw.structured_grid((20, 8), size=(20.0, 8.0))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3, density=1.0), supports={"xmin": "xy"},
                     loads={"tip": [lw.Traction("xmax", (0.0, -1.0))]})
    c = mesh.cell_centers()
    rho = np.clip(np.abs(c[:, 1] - 4.0) / 4.0 + 0.1, 1e-3, 1.0)
    sol = lw.solve(model, density=rho)
    history = [dict(iteration=i + 1, objective=40.0 / (i + 1) + 10, constraints=[0.05 / (i + 1)],
                    volume_fraction=0.5, change=0.2 / (i + 1), grayness=0.1, seconds=0.01) for i in range(8)]
    return OptimizationResult(model=model, density=rho, design_variables=rho, history=history,
                              problem="min_compliance", converged=True, compliance=dict(sol.compliance),
                              volume_fraction=float(rho.mean()), volume=sol.volume, mass=sol.mass, solution=sol,
                              parameters={"volume_fraction": 0.5, "filter_radius": 1.5},
                              provenance=dict(sol.provenance))


def images(html):
    return re.findall(r"<img src='([^']*)'", html)


def check_self_contained(path, n_images):
    html = path.read_text(encoding="utf-8")
    srcs = images(html)
    assert len(srcs) == n_images
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_SIGNATURE) and len(png) > 2000
    assert "http://" not in html and "https://" not in html and "src=\"" not in html
    return html


def test_report_of_optimization_result(design, tmp_path):
    path = report.write_report(design, tmp_path / "r.html", title="Cantilever <2D>")
    html = check_self_contained(path, n_images=4)     # convergence, density, stress, deformation
    assert "<h1>Cantilever &lt;2D&gt;</h1>" in html   # titles are escaped
    assert "compliance (tip)" in html
    assert f"{design.compliance['tip']:.6g}" in html
    assert f"{design.solution.max_von_mises['tip']:.6g}" in html
    assert "filter_radius" in html and design.provenance["version"] in html
    assert ">converged</th><td class=\"num\">yes" in html or ">converged</th><td>yes" in html


def test_report_of_solution(design, tmp_path):
    html = check_self_contained(report.write_report(design.solution, tmp_path / "s.html"), n_images=3)
    assert "max displacement (tip)" in html


def test_report_of_saved_file_and_cli(design, tmp_path):
    from test_viz import save
    vtu = save(design, tmp_path / "design.vtu")
    out = tmp_path / "cli.html"
    assert report.main_report([str(vtu), "--out", str(out)]) == 0
    # The convergence plot appears when the file's metadata carries the history.
    has_history = bool(load_fields(vtu).history)
    html = check_self_contained(out, n_images=3 + has_history)
    assert "design.vtu" in html
    assert report.main_report([str(tmp_path / "missing.vtu")]) == 1


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(design, tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    page = report.write_report(design, tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1000,1400", page.resolve().as_uri()],
                   capture_output=True, timeout=120)
    image = imageio.imread(shot)[..., :3]
    assert image.shape[:2] == (1400, 1000)
    # The embedded pictures show: many colours, not just text on white.
    assert image.std() > 20
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500


def test_report_shows_requirements_with_pass_fail_margins_and_units(design, tmp_path):
    requirements = {"max_compliance": {"tip": 2.0 * design.compliance["tip"]},
                    "max_mass": 0.5 * design.mass}           # stiff enough, too heavy
    units = {"mass": "t", "compliance": "N mm", "stress": "MPa", "volume": "mm^3", "displacement": "mm"}
    path = report.write_report(design, tmp_path / "r.html", requirements=requirements, units=units)
    text = path.read_text()
    section = text.split("<h2>Requirements</h2>", 1)[1].split("<h2>", 1)[0]
    assert "does NOT meet" in section
    rows = re.findall(r"<tr>(.*?)</tr>", section)
    compliance_row = next(r for r in rows if "compliance.tip" in r)
    mass_row = next(r for r in rows if "max_mass" in r)
    assert "[N mm]" in compliance_row and "+50.0 %" in compliance_row and ">pass<" in compliance_row
    assert "[t]" in mass_row and "-100.0 %" in mass_row and ">FAIL<" in mass_row
    assert "mass [t]" in text                                  # the results table names units too


def test_mass_without_density_is_unknown_not_zero(tmp_path):
    mesh = lw.structured_grid((6, 2), size=(6.0, 2.0))
    model = lw.Model(mesh, lw.Material(E=1.0, nu=0.3), supports={"xmin": "xy"},
                     loads={"tip": [lw.Traction("xmax", (0.0, -1.0))]})
    sol = lw.solve(model)
    assert sol.mass is None and sol.summary()["mass"] is None
    result = OptimizationResult(model=model, density=np.ones(mesh.n_cells), design_variables=np.ones(mesh.n_cells),
                                mass=0.0, solution=sol)
    assert result.mass is None and result.summary()["mass"] is None
    text = report.write_report(result, tmp_path / "r.html").read_text()
    assert "unknown (no material density)" in text
    from lightweight.casefile import evaluate_requirements
    assert evaluate_requirements(sol, {})["mass"] is None
    # the batch row: unknown (JSON null, empty CSV cell), never 0
    case = tmp_path / "case.toml"
    case.write_text('[mesh]\ngrid = [6, 2]\nsize = [6.0, 2.0]\n[material]\nE = 1.0\nnu = 0.3\n'
                    '[supports]\nxmin = "xy"\n[[loads.tip]]\ntype = "traction"\nset = "xmax"\n'
                    'value = [0.0, -1.0]\n')
    lw.write_mesh(tmp_path / "design.vtu", mesh)
    row = lw.evaluate_design(case, tmp_path / "design.vtu")
    assert row["status"] == "ok" and row["mass"] is None
    from lightweight.batch import write_csv
    write_csv(tmp_path / "rows.csv", [row])
    import csv
    with open(tmp_path / "rows.csv") as f:
        assert next(csv.DictReader(f))["mass"] == ""
