"""The dashboard: a static site of a results store, checked as files and in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

import lightweight as lw
from lightweight.batch import evaluate_designs
from lightweight.cli import main
from lightweight.dashboard import _pareto_front
from lightweight.store import SQLiteStore

from test_batch import CASE

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A store with 4 SIMP designs, a solid one, an error with a hostile name, two versions."""
    tmp = tmp_path_factory.mktemp("dash")
    case = tmp / "case.toml"
    case.write_text(CASE)
    grid = lw.structured_grid((12, 4), size=(12.0, 4.0))
    files = []
    for k, low in enumerate((0.1, 0.3, 0.6, 0.9)):
        density = np.where(grid.cell_centers()[:, 1] > 2.0, 1.0, low)
        files.append(tmp / f"simp{k}.vtu")
        lw.write_mesh(files[-1], grid, cell_data={"density": density})
    files.append(tmp / "solid.vtu")
    lw.write_mesh(files[-1], grid)
    files.append(tmp / "<img src=x onerror=alert(1)>.vtu")
    files[-1].write_text("broken")
    store_path = tmp / "r.sqlite"
    old = SQLiteStore(store_path, version="0.0.1")
    evaluate_designs(case, files[:2], tmp / "r.csv", store=old)
    old.close()
    rows = evaluate_designs(case, files, tmp / "r.csv")
    out = tmp / "site"
    assert main(["dashboard", str(store_path), "--out", str(out)]) == 0
    return out, rows, files


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.scripts = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        if tag == "script" and not attrs.get("src"):
            self.scripts.append(tag)


def test_site_files_links_and_escaping(site):
    out, rows, files = site
    index = (out / "index.html").read_text()
    pages = sorted((out / "designs").glob("*.html"))
    assert len(pages) == len(files)                          # one page per design of the case
    for page in [out / "index.html", *pages]:
        parser = Links()
        parser.feed(page.read_text())
        assert not parser.scripts                            # no inline script: the page is data only
        for link in parser.links:
            assert not re.match(r"^(https?:)?//", link), link    # nothing from outside
            assert (page.parent / link.split("?")[0]).resolve().is_file(), (page, link)
    assert "<img src=x" not in index and "&lt;img src=x onerror=alert(1)&gt;" in index
    assert index.count("<tr data-status=") == len(files) + 2   # two designs also under version 0.0.1
    assert "Failures (1)" in index and "not well-formed XML" in index
    assert "<svg class='pareto'" in index and index.count("<circle") == 5
    page = (out / "designs" / pages[0].name).read_text()
    assert "History across versions" in page and "design SHA-256" in page


def test_pareto_front_is_the_non_dominated_set():
    rows = [{"n": k} for k in range(5)]
    points = [(1.0, 9.0, rows[0]), (2.0, 5.0, rows[1]), (3.0, 6.0, rows[2]), (4.0, 1.0, rows[3]), (2.0, 8.0, rows[4])]
    assert [r["n"] for _, _, r in _pareto_front(points)] == [0, 1, 3]


def test_thumbnails_when_pyvista_is_there(site):
    pytest.importorskip("pyvista")
    out, rows, files = site
    thumbs = list((out / "thumbs").glob("*.png"))
    assert len(thumbs) == sum(r["status"] == "ok" for r in rows)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in thumbs)


def chromium(*args, timeout=120):
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(BROWSER is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_dashboard_in_headless_chromium(site, tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    out, rows, files = site
    index = (out / "index.html").resolve().as_uri()
    done = chromium("--dump-dom", index + "?sort=mass&desc=1&status=fail")
    dom = done.stdout
    assert 'data-ready="yes"' in dom                             # the script ran to its end
    assert "CONSOLE" not in done.stderr                          # no console message at all, errors included
    visible = re.findall(r"<tr data-status=\"(\w+)\" data-version=\"[^\"]*\">(?:(?!</tr>).)*?"
                         r"<a href=\"designs/\w+\.html\">([^<]*)</a>", dom)
    body = dom.split("<tbody>")[1].split("</tbody>")[0]
    shown = [m for m in re.findall(r"<tr([^>]*)>", body) if "hidden" not in m]
    assert len(shown) == sum(1 for r in visible if r[0] == "fail")
    masses = [float(v) for v in re.findall(r"<tr data-status=\"fail\"[^>]*>.*?<td data-value=\"([0-9.e+-]+)\">",
                                           body)]
    assert masses and masses == sorted(masses, reverse=True)     # sorted by mass, descending
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1600", index)
    image = imageio.imread(shot)[..., :3]
    assert image.shape[:2] == (1600, 1200) and image.std() > 10
    page = next((out / "designs").glob("*.html")).resolve().as_uri()
    done = chromium("--dump-dom", page)
    assert 'data-ready="yes"' in done.stdout and "CONSOLE" not in done.stderr


def test_empty_store_and_file_out_are_handled(tmp_path, capsys):
    store = tmp_path / "empty.sqlite"
    SQLiteStore(store).close()
    assert main(["dashboard", str(store), "--out", str(tmp_path / "site"), "--no-pictures"]) == 0
    assert "The store holds no results yet" in (tmp_path / "site" / "index.html").read_text()
    (tmp_path / "file").write_text("x")
    assert main(["dashboard", str(store), "--out", str(tmp_path / "file")]) == 1
    assert "is a file; name a folder" in capsys.readouterr().err
