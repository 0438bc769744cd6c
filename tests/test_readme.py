"""Every command and script of the README runs as written, the way a new user runs it.

The README's ```bash blocks are split into command lines (install and test commands excepted:
CI runs those itself) and run in order in a scratch folder that sees the repository's
meshes/ and examples/; the ```python block is run as a script there. Each must exit with
status 0 and write the files it promises.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# run by .ci/run itself (install, the test suite, the benchmarks): not re-run from here
NOT_HERE = ("python -m pip install", "python -m pytest", "export ", "python benchmarks/")


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def readme_commands() -> list[str]:
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith(NOT_HERE):
                commands.append(command)
    return commands


def test_readme_names_its_three_commands():
    bash = "\n".join(readme_blocks("bash"))
    assert 'python -m pip install -e ".[all]"' in bash
    assert "lightweight demo" in bash
    assert "python -m pytest -q tests" in bash
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[all]"' in ci and "python -m pytest -q tests" in ci


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    for name in ("meshes", "examples"):
        (work / name).symlink_to(ROOT / name)
    return work


def run(argv, cwd, timeout=600):
    env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow")
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def as_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "lightweight" and shutil.which("lightweight") is None:
        argv = [sys.executable, "-m", "lightweight", *argv[1:]]  # not installed as a script here
    return argv


# the files each command promises (relative to where it runs)
PROMISED = {
    "lightweight demo": ["lightweight-demo/mbb.vtu", "lightweight-demo/mbb.json",
                         "lightweight-demo/mbb_density.png", "lightweight-demo/mbb_convergence.png",
                         "lightweight-demo/mbb.html"],
    "solve_bracket.py": ["out/bracket_solution.vtu"],
    "bracket_min_mass.py": ["out/bracket_optimized.vtu"],
    "mbb_top88.py": ["out/mbb.vtu", "out/mbb.png"],
    "cantilever_3d.py": ["out/cantilever3d.vtu", "out/cantilever3d.stl"],
    "--case cantilever3d": ["out/demo3d/cantilever3d.vtu"],
    "lightweight report": ["out/mbb_report.html"],
    "lightweight evaluate": ["out/results.csv", "out/results.jsonl"],
    "lightweight optimize": ["out/mbb_case/mbb.vtu", "out/mbb_case/mbb.json", "out/mbb_case/mbb.html"],
}


def test_readme_python_script(workdir):
    """The first script of the README (mesh file -> optimized part) runs and writes its design."""
    script = readme_blocks("python")[0]
    (workdir / "readme_script.py").write_text(script)
    done = run([sys.executable, "readme_script.py"], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (workdir / "bracket_optimized.vtu").stat().st_size > 10_000
    import lightweight as lw
    fields = lw.read_mesh_fields(workdir / "bracket_optimized.vtu")
    _, _, cell_data = fields
    density = cell_data["density"]
    assert 0.0 <= density.min() and density.max() <= 1.0


@pytest.mark.parametrize("index", range(1, len(readme_blocks("python"))))
def test_readme_other_python_scripts(workdir, index):
    """Every other Python block of the README runs as written (each is self-contained)."""
    script = readme_blocks("python")[index]
    (workdir / f"readme_script_{index}.py").write_text(script)
    done = run([sys.executable, f"readme_script_{index}.py"], workdir)
    assert done.returncode == 0, f"README python block {index}:\n{script}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command(workdir, command):
    done = run(as_argv(command), workdir)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    promised = [path for key, paths in PROMISED.items() if key in command for path in paths]
    if command.startswith("lightweight demo") and "--case" in command:
        promised = PROMISED["--case cantilever3d"]
    for path in promised:
        assert (workdir / path).is_file() and (workdir / path).stat().st_size > 0, f"{command} did not write {path}"
    if command.startswith("lightweight evaluate"):
        import csv
        with open(workdir / "out" / "results.csv", newline="") as file:
            statuses = [row["status"] for row in csv.DictReader(file)]
        assert statuses == ["ok", "ok"], statuses


def test_readme_pictures_exist_and_are_small():
    text = (ROOT / "README.md").read_text()
    pictures = re.findall(r'src="([^"]+\.png)"', text)
    assert len(pictures) >= 5
    for picture in pictures:
        path = ROOT / picture
        assert path.is_file(), picture
        assert 1_000 < path.stat().st_size < 150_000, picture
