"""The command line: built-in cases, `info`, `demo` options and one-line errors with exit status 1."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lightweight as lw
from lightweight.cases import cantilever_3d, mbb_beam
from lightweight.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_cantilever_case_is_the_topopt_in_petsc_load():
    model = cantilever_3d(4)
    solution = lw.solve(model)
    # the edge x=2, z=0 has n+1 = 5 nodes: 3 x 0.001 inside + 2 x 0.0005 at the ends
    reaction = solution.reactions["tip"]["xmin"]
    np.testing.assert_allclose(reaction, [0.0, 0.0, 0.004], atol=1e-12)
    assert model.mesh.grid == (8, 4, 4)


def test_mbb_case_matches_top88_supports():
    model = mbb_beam(6, 2)
    mesh = model.mesh
    np.testing.assert_array_equal(mesh.points[mesh.node_set("load")], [[0.0, 2.0]])
    np.testing.assert_array_equal(mesh.points[mesh.node_set("roller")], [[6.0, 0.0]])
    with pytest.raises(lw.LightweightError, match="positive element counts"):
        mbb_beam(0, 2)


def test_info_lists_sets(capsys):
    assert main(["info", str(ROOT / "meshes" / "bracket.msh")]) == 0
    out = capsys.readouterr().out
    assert "12254 tetra cells" in out and "bolt_holes (265)" in out and "solid (12254)" in out


def test_demo_small_without_pictures(tmp_path, capsys):
    assert main(["demo", "--size", "12", "4", "--out", str(tmp_path), "--no-pictures", "--quiet"]) == 0
    summary = __import__("json").loads((tmp_path / "mbb.json").read_text())
    assert summary["case_arguments"] == {"nelx": 12, "nely": 4}
    assert summary["provenance"]["version"] == lw.__version__
    assert abs(summary["volume_fraction"] - 0.5) < 1e-3
    _, _, cells = lw.read_mesh_fields(tmp_path / "mbb.vtu")
    assert cells["density"].shape == (48,)


USER_ERRORS = [
    (["info", "no/such/mesh.msh"], "no/such/mesh.msh"),
    (["demo", "--case", "cantilever3d", "--size", "2", "3", "--no-pictures"], "takes 1 number"),
    (["report", "no_such_result.vtu"], "no_such_result.vtu"),
    (["results", "no/such.sqlite", "--csv", "x.csv"], "results store no/such.sqlite does not exist"),
    (["dashboard", "no/such.sqlite"], "results store no/such.sqlite does not exist"),
    (["evaluate", "no/such/case.toml", "d.vtu"], "case file no/such/case.toml does not exist"),
]


@pytest.fixture(scope="module")
def user_error_runs(tmp_path_factory):
    """`python -m lightweight ARGV` for every ARGV of USER_ERRORS, each in a folder of its own:
    the processes are started together (each is a Python start, ~2 s of one core; side by side
    they use both cores). {ARGV joined by spaces: (exit status, stderr)}."""
    runs = {}
    try:
        for argv, _ in USER_ERRORS:
            folder = tmp_path_factory.mktemp("user_error")
            runs[" ".join(argv)] = subprocess.Popen([sys.executable, "-m", "lightweight", *argv], cwd=folder,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = {}
        for key, run in runs.items():
            stderr = run.communicate(timeout=300)[1]
            done[key] = (run.returncode, stderr)
        return done
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.communicate()


@pytest.mark.parametrize("argv,message", USER_ERRORS)
def test_user_errors_are_one_line_with_status_1(argv, message, user_error_runs):
    returncode, stderr = user_error_runs[" ".join(argv)]
    assert returncode == 1
    assert "Traceback" not in stderr
    assert stderr.startswith(f"lightweight {argv[0]}: error:") and message in stderr


def test_usage_error_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and lw.__version__ in capsys.readouterr().out
