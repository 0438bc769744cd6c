"""Build the CalculiX reference decks of tests/data/ccx, run ccx on them and trim its output.

Run from anywhere: ``python tests/data/ccx/make_references.py [--no-run]`` (needs gmsh and the
Debian package calculix-ccx, binary ``ccx``). It rewrites the decks (*.inp) and the trimmed
results (*.dat.txt.gz, *.frd.txt.gz) in this folder; README.md says what each case is.

Meshes: gmsh (seeded, deterministic for a given gmsh version) or lw.structured_grid, written
with node ids 1..N in the order of the mesh's points and elements 1..M in its cell order, so
the tests rebuild the same lightweight Mesh from the deck. 2D cases are one layer of bricks
or wedges of thickness 1 with u_z = 0 at every node (see README.md: exact plane stress/strain).
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
E, NU, RHO = 210000.0, 0.3, 7.85e-9


# ---------------------------------------------------------------------------- meshes
def _gmsh_mesh(dim: int, order: int, recombine: bool, size: float):
    """L-shaped part: 2D plate (arms 40 x 15) or 3D bracket (the plate extruded 10)."""
    import gmsh
    gmsh.initialize(["-noenv"])
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("Mesh.RandomSeed", 1)
        gmsh.model.add("L")
        occ = gmsh.model.occ
        if dim == 2:
            a = occ.addRectangle(0, 0, 0, 40, 15)
            b = occ.addRectangle(0, 0, 0, 15, 40)
        else:
            a = occ.addBox(0, 0, 0, 40, 15, 10)
            b = occ.addBox(0, 0, 0, 15, 40, 10)
        occ.fuse([(dim, a)], [(dim, b)])
        occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", size)
        if recombine:
            gmsh.option.setNumber("Mesh.RecombineAll", 1)
            gmsh.option.setNumber("Mesh.Algorithm", 8)
            gmsh.option.setNumber("Mesh.RecombinationAlgorithm", 3)   # blossom, full quads
        gmsh.model.mesh.generate(dim)
        if order == 2:
            gmsh.model.mesh.setOrder(2)
        gmsh.model.addPhysicalGroup(dim, [e[1] for e in gmsh.model.getEntities(dim)], name="solid")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "L.msh"
            gmsh.write(str(path))
            import lightweight as lw
            return lw.read_mesh(path)
    finally:
        gmsh.finalize()


def _distorted_hex():
    """8 x 3 x 3 hexahedra on 80 x 30 x 30 with interior nodes moved (seeded) by up to 1/5 cell."""
    import lightweight as lw
    from lightweight.mesh.mesh import Mesh
    grid = lw.structured_grid((8, 3, 3), size=(80.0, 30.0, 30.0))
    pts = grid.points.copy()
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    inner = np.all((pts > lo + 1e-9) & (pts < hi - 1e-9), axis=1)
    rng = np.random.default_rng(7)
    pts[inner] += rng.uniform(-2.0, 2.0, size=(inner.sum(), 3))
    return Mesh(pts, grid.cells, "hexahedron")


# ---------------------------------------------------------------------------- decks
def _fmt_ids(ids) -> list[str]:
    ids = [str(int(i) + 1) for i in ids]
    return [", ".join(ids[k:k + 12]) for k in range(0, len(ids), 12)]


def write_deck(path: Path, points3: np.ndarray, elements: np.ndarray, eltype: str, nsets: dict,
               material: list[str], step: list[str]) -> None:
    """A ccx deck: nodes (N, 3), elements (M, k) 0-based, node sets {name: 0-based ids}."""
    lines = ["*HEADING", f"lightweight reference {path.stem}", "*NODE, NSET=NALL"]
    lines += [f"{i + 1}, {x:.17g}, {y:.17g}, {z:.17g}" for i, (x, y, z) in enumerate(points3)]
    lines.append(f"*ELEMENT, TYPE={eltype}, ELSET=EALL")
    for e, conn in enumerate(elements):
        ids = [str(e + 1)] + [str(int(n) + 1) for n in conn]
        # ccx continuation lines: at most 16 entries per line, a trailing comma continues
        chunks = [ids[k:k + 15] for k in range(0, len(ids), 15)]
        lines += [", ".join(c) + ("," if k < len(chunks) - 1 else "") for k, c in enumerate(chunks)]
    for name, ids in nsets.items():
        lines.append(f"*NSET, NSET={name}")
        lines += _fmt_ids(ids)
    lines += ["*MATERIAL, NAME=MAT"] + material + [f"*DENSITY", f"{RHO:g}",
                                                   "*SOLID SECTION, ELSET=EALL, MATERIAL=MAT"]
    if eltype.startswith("CP"):
        lines.append("1.")        # plane elements: thickness
    lines += step
    path.write_text("\n".join(lines) + "\n")


def _isotropic() -> list[str]:
    return ["*ELASTIC", f"{E:g}, {NU:g}"]


def _plane_stress_ortho() -> list[str]:
    """Reduced plane-stress stiffness in the 1-2 plane, D3333 = E, no 1-2/3 coupling."""
    c = E / (1 - NU * NU)
    g = E / (2 * (1 + NU))
    return ["*ELASTIC, TYPE=ORTHO", f"{c:.17g}, {NU * c:.17g}, {c:.17g}, 0., 0., {E:.17g}, {g:.17g}, {g:.17g}",
            f"{g:.17g}, 0."]


def _static_step(fixed: str, loads: list[tuple[str, int, float]], layer_nodes: str | None,
                 plane: bool = False) -> list[str]:
    step = ["*BOUNDARY", f"{fixed}, 1, 2" if (layer_nodes or plane) else f"{fixed}, 1, 3"]
    if layer_nodes is not None:
        step.append(f"{layer_nodes}, 3, 3")
    step += ["*STEP", "*STATIC", "*CLOAD"] + [f"{s}, {d}, {v:.17g}" for s, d, v in loads]
    step += ["*EL PRINT, ELSET=EALL", "S, COORD", "*EL FILE", "S", "*NODE FILE", "U", "*END STEP"]
    return step


def _frequency_step(fixed: str | None, n: int) -> list[str]:
    step = [] if fixed is None else ["*BOUNDARY", f"{fixed}, 1, 3"]
    return step + ["*STEP", "*FREQUENCY", f"{n}", "*NODE FILE", "U", "*END STEP"]


def _layer(mesh):
    """2D mesh -> (points (2N, 3), bricks or wedges (M, 2k)): the cell at z=0 then at z=1."""
    n = mesh.n_nodes
    pts = np.vstack([np.column_stack([mesh.points, np.zeros(n)]), np.column_stack([mesh.points, np.ones(n)])])
    return pts, np.hstack([mesh.cells, mesh.cells + n])


def cases() -> dict:
    """{name: (deck text writer arguments)} of every reference run."""
    import lightweight as lw
    out = {}
    hexgrid = lw.structured_grid((20, 4, 4), size=(100.0, 20.0, 20.0))
    tip = np.flatnonzero(np.isclose(hexgrid.points[:, 0], 100.0))
    root = np.flatnonzero(np.isclose(hexgrid.points[:, 0], 0.0))
    out["hex8_cantilever"] = (hexgrid.points, hexgrid.cells, "C3D8", {"FIXED": root, "LOAD": tip},
                              _isotropic(), _static_step("FIXED", [("LOAD", 3, -40.0)], None))
    hexd = _distorted_hex()
    tip = np.flatnonzero(np.isclose(hexd.points[:, 0], 80.0))
    root = np.flatnonzero(np.isclose(hexd.points[:, 0], 0.0))
    out["hex8_distorted"] = (hexd.points, hexd.cells, "C3D8", {"FIXED": root, "LOAD": tip},
                             _isotropic(), _static_step("FIXED", [("LOAD", 2, -30.0), ("LOAD", 3, 10.0)], None))
    for name, order, eltype in (("tet4_bracket", 1, "C3D4"), ("tet10_bracket", 2, "C3D10")):
        m = _gmsh_mesh(3, order, False, 6.0 if order == 2 else 4.0)
        fixed = np.flatnonzero(np.isclose(m.points[:, 1], 40.0))
        load = np.flatnonzero(np.isclose(m.points[:, 0], 40.0))
        out[name] = (m.points, m.cells, eltype, {"FIXED": fixed, "LOAD": load}, _isotropic(),
                     _static_step("FIXED", [("LOAD", 2, -1000.0 / load.size)], None))
    for name, recombine, eltype, plane in (("quad4_plane_stress", True, "C3D8", "stress"),
                                           ("quad4_plane_strain", True, "C3D8", "strain"),
                                           ("tri3_plane_stress", False, "C3D6", "stress")):
        m = _gmsh_mesh(2, 1, recombine, 3.0)
        pts, cells = _layer(m)
        n = m.n_nodes
        fixed = np.flatnonzero(np.isclose(m.points[:, 1], 40.0))
        load = np.flatnonzero(np.isclose(m.points[:, 0], 40.0))
        # every 2D node is two ccx nodes (z = 0 and 1): half the 2D nodal force on each
        f = -100.0 / load.size / 2
        sets = {"FIXED": np.concatenate([fixed, fixed + n]), "LOAD": np.concatenate([load, load + n]),
                "LAYER": np.arange(2 * n)}
        material = _plane_stress_ortho() if plane == "stress" else _isotropic()
        out[name] = (pts, cells, eltype, sets, material,
                     _static_step("FIXED", [("LOAD", 1, 0.5 * f), ("LOAD", 2, f)], "LAYER"))
    # ccx's own plane-strain quad: it expands CPE4 into bricks with u_z held, which is exact
    # plane strain (its CPS4 expansion is only approximately plane stress: 6 % apart here)
    m = _gmsh_mesh(2, 1, True, 3.0)
    fixed = np.flatnonzero(np.isclose(m.points[:, 1], 40.0))
    load = np.flatnonzero(np.isclose(m.points[:, 0], 40.0))
    f = -100.0 / load.size
    out["quad4_cpe4_plane_strain"] = (m.points, m.cells, "CPE4", {"FIXED": fixed, "LOAD": load},
                                      _isotropic(), _static_step("FIXED", [("LOAD", 1, 0.5 * f), ("LOAD", 2, f)],
                                                                 None, plane=True))
    # modal analyses: clamped (10 modes) and free (6 rigid + 6 elastic)
    out["hex8_cantilever_modes_clamped"] = (hexgrid.points, hexgrid.cells, "C3D8", {"FIXED": root},
                                            _isotropic(), _frequency_step("FIXED", 10))
    out["hex8_cantilever_modes_free"] = (hexgrid.points, hexgrid.cells, "C3D8", {},
                                         _isotropic(), _frequency_step(None, 12))
    m = _gmsh_mesh(3, 2, False, 6.0)
    fixed = np.flatnonzero(np.isclose(m.points[:, 1], 40.0))
    out["tet10_bracket_modes_clamped"] = (m.points, m.cells, "C3D10", {"FIXED": fixed}, _isotropic(),
                                          _frequency_step("FIXED", 10))
    out["tet10_bracket_modes_free"] = (m.points, m.cells, "C3D10", {}, _isotropic(),
                                       _frequency_step(None, 12))
    m = _gmsh_mesh(3, 1, False, 4.0)
    fixed = np.flatnonzero(np.isclose(m.points[:, 1], 40.0))
    out["tet4_bracket_modes_clamped"] = (m.points, m.cells, "C3D4", {"FIXED": fixed}, _isotropic(),
                                         _frequency_step("FIXED", 6))
    return out


# ---------------------------------------------------------------------------- trimming
def trim_dat(text: str) -> str:
    """Keep the stress/coordinate tables and eigenvalue output of a ccx .dat file."""
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip()) + "\n"


def trim_frd(text: str) -> str:
    """Keep only the nodal STRESS block of a ccx .frd file (header line + node records)."""
    out, keep = [], False
    for line in text.splitlines():
        if line.startswith(" -4  STRESS"):
            keep = True
            out.append(line)
            continue
        if keep:
            if line.startswith(" -3"):
                break
            if line.startswith(" -1"):
                out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def run(names: list[str] | None, execute: bool) -> None:
    ccx = shutil.which("ccx")
    for name, args in cases().items():
        if names and name not in names:
            continue
        deck = HERE / f"{name}.inp"
        points, cells = args[0], args[1]
        pts3 = points if points.shape[1] == 3 else np.column_stack([points, np.zeros(len(points))])
        write_deck(deck, pts3, cells, *args[2:])
        if not execute:
            continue
        if ccx is None:
            sys.exit("ccx not found: apt-get install calculix-ccx")
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(deck, Path(tmp) / deck.name)
            subprocess.run([ccx, "-i", name], cwd=tmp, check=True, capture_output=True)
            dat = (Path(tmp) / f"{name}.dat").read_text()
            (HERE / f"{name}.dat.txt.gz").write_bytes(gzip.compress(trim_dat(dat).encode(), mtime=0))
            if "modes" not in name:
                frd = trim_frd((Path(tmp) / f"{name}.frd").read_text())
                (HERE / f"{name}.frd.txt.gz").write_bytes(gzip.compress(frd.encode(), mtime=0))
        print(name, "done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--no-run", action="store_true", help="write the decks only")
    a = parser.parse_args()
    run(a.names, not a.no_run)
