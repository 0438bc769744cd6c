"""Readers for the CalculiX reference runs in tests/data/ccx (decks, trimmed .dat and .frd).

Used by test_stress_reference.py and test_modes.py; README.md in that folder says how the runs
were made. Voigt orders: the .dat stress table is (xx, yy, zz, xy, xz, yz), the .frd STRESS
block (xx, yy, zz, xy, yz, zx), ours (xx, yy, zz, xy, yz, zx).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

import lightweight as lw
from lightweight.mesh.mesh import Mesh

CCX = Path(__file__).parent / "data" / "ccx"
E, NU, DENSITY = 210000.0, 0.3, 7.85e-9
CELL_TYPES = {"C3D8": "hexahedron", "C3D4": "tetra", "C3D10": "tetra10", "CPE4": "quad"}


def _text(name: str) -> str:
    path = CCX / name
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def read_deck(name: str) -> dict:
    """Nodes (N, 3), elements (M, k) 0-based, element type, node sets (0-based), CLOADs of a deck."""
    nodes, elements, sets, cloads = [], [], {}, []
    mode, current, pending, eltype = None, None, [], None
    for line in _text(f"{name}.inp").splitlines():
        if line.startswith("*"):
            key = line.upper()
            mode = None
            if key.startswith("*NODE,") or key == "*NODE":
                mode = "node"
            elif key.startswith("*ELEMENT"):
                mode, eltype = "element", re.search(r"TYPE=(\w+)", key).group(1)
            elif key.startswith("*NSET"):
                mode, current = "nset", re.search(r"NSET=(\w+)", key).group(1)
                sets[current] = []
            elif key.startswith("*CLOAD"):
                mode = "cload"
            continue
        if mode == "node":
            nodes.append([float(v) for v in line.split(",")[1:]])
        elif mode == "element":
            pending += [v for v in line.split(",") if v.strip()]
            if not line.rstrip().endswith(","):
                elements.append([int(v) - 1 for v in pending[1:]])
                pending = []
        elif mode == "nset":
            sets[current] += [int(v) - 1 for v in line.split(",") if v.strip()]
        elif mode == "cload":
            s, d, v = line.split(",")
            cloads.append((s.strip(), int(d) - 1, float(v)))
    return {"nodes": np.array(nodes), "elements": np.array(elements), "type": eltype,
            "sets": {k: np.array(v, dtype=np.int64) for k, v in sets.items()}, "cloads": cloads}


def static_model(name: str) -> tuple[lw.Model, bool]:
    """The lightweight model of a static reference deck, and whether it is a 2D layer deck.

    2D decks are one layer of C3D8 bricks (quad4) or C3D6 wedges (tri3) with u_z = 0 at all
    nodes: the first half of the nodes (z = 0) and of each element's nodes is the 2D mesh, and
    each 2D node carries the force of its two ccx nodes.
    """
    deck = read_deck(name)
    sets = deck["sets"]
    layered = "LAYER" in sets
    if layered:
        n = len(deck["nodes"]) // 2
        cells = deck["elements"][:, :deck["elements"].shape[1] // 2]
        mesh = Mesh(deck["nodes"][:n, :2], cells, "quad" if deck["type"] == "C3D8" else "triangle")
        fixed, load = sets["FIXED"][sets["FIXED"] < n], sets["LOAD"][sets["LOAD"] < n]
    else:
        plane_element = deck["type"].startswith("CP")       # ccx's own 2D element, z = 0
        nodes = deck["nodes"][:, :2] if plane_element else deck["nodes"]
        mesh = Mesh(nodes, deck["elements"], CELL_TYPES[deck["type"]])
        fixed, load = sets["FIXED"], sets["LOAD"]
    dim = mesh.dim
    mesh.add_node_set("fixed", fixed)
    mesh.add_node_set("load", load)
    force = np.zeros(dim)
    for _, component, value in deck["cloads"]:
        force[component] += value * (2 if layered else 1)
    plane = "strain" if "strain" in name else "stress"
    model = lw.Model(mesh, lw.Material(E=E, nu=NU, density=DENSITY), supports={"fixed": "xyz"[:dim]},
                     loads={"ccx": lw.PointLoad("load", force)}, plane=plane)
    return model, layered


def _dat_table(name: str, title: str) -> np.ndarray:
    rows, on = [], False
    for line in _text(f"{name}.dat.txt.gz").splitlines():
        text = line.strip()
        if text[:1].isalpha():               # a table title; data rows start with the element id
            on = text.startswith(title)
        elif on and text:
            rows.append([float(v) for v in text.split()])
    return np.array(rows)


def integration_point_stresses(name: str, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ccx stresses at integration points: element ids (0-based), coordinates (k, 3), our Voigt (k, n_voigt)."""
    stress = _dat_table(name, "stresses")
    coords = _dat_table(name, "global coordinates")
    assert np.array_equal(stress[:, :2], coords[:, :2])
    s = stress[:, 2:]
    voigt = s[:, [0, 1, 3]] if dim == 2 else s[:, [0, 1, 2, 3, 5, 4]]
    return stress[:, 0].astype(np.int64) - 1, coords[:, 2:], voigt


def nodal_stresses(name: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """ccx nodal stresses (extrapolated and averaged): node ids (0-based), our Voigt (k, n_voigt)."""
    ids, values = [], []
    for line in _text(f"{name}.frd.txt.gz").splitlines()[1:]:
        ids.append(int(line[3:13]) - 1)
        values.append([float(line[13 + 12 * i:25 + 12 * i]) for i in range(6)])
    v = np.array(values)
    return np.array(ids), (v[:, [0, 1, 3]] if dim == 2 else v)


def frequencies(name: str) -> np.ndarray:
    """ccx eigenfrequencies in cycles/time (Hz); rigid-body modes with negative eigenvalue -> 0."""
    out, on = [], False
    for line in _text(f"{name}.dat.txt.gz").splitlines():
        if "E I G E N V A L U E" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if parts and parts[0].isdigit() and len(parts) == 5:
                out.append(float(parts[3]))
            elif out and "P A R T" in line:
                break
    return np.array(out)


def eigenvalues(name: str) -> np.ndarray:
    """ccx eigenvalues omega^2 (rad/time)^2, (n_modes,)."""
    out, on = [], False
    for line in _text(f"{name}.dat.txt.gz").splitlines():
        if "E I G E N V A L U E" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if parts and parts[0].isdigit() and len(parts) == 5:
                out.append(float(parts[1]))
            elif out and "P A R T" in line:
                break
    return np.array(out)
