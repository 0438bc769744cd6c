"""What every case-file key means: the text of docs/case_files.md, generated from the key tables.

Approach: the tables of accepted keys live in :mod:`lightweight.casefile` (``SECTION_KEYS``,
``LOAD_KEYS``, ...), which is what the reader enforces; this module holds one line of meaning per
key and renders the reference page from both, so the page lists exactly the keys the reader
accepts. ``python -m lightweight.case_keys > docs/case_files.md`` rewrites the page; a test
checks that every accepted key has a line here and that the page is current.
"""

from __future__ import annotations

from .casefile import (DISPLACEMENT_LIMIT_KEYS, LOAD_KEYS, LOAD_TYPES, SECTION_KEYS, SET_KEYS, SUPPORT_KEYS,
                       UNIT_SYSTEMS)

# {table: {key: meaning}}; "loads.CASE" etc. are the tables whose own keys are names
KEY_DOCS: dict[str, dict[str, str]] = {
    "mesh": {
        "file": "mesh file (any meshio format; .msh physical groups / .inp sets become named sets), "
                "relative to the case file",
        "grid": "instead of a file: a structured grid [nx, ny] (quads) or [nx, ny, nz] (hexahedra)",
        "size": "grid: edge lengths [Lx, Ly(, Lz)] (default: one length unit per cell)",
        "origin": "grid: lower corner [x, y(, z)] (default 0)",
        "cell_type": "file: which solid cell type to read when the file holds several",
    },
    "material": {
        "E": "Young's modulus (stress units), required",
        "nu": "Poisson's ratio, required",
        "density": "mass density (mass / length^3); without it the mass is reported as unknown",
        "yield_strength": "yield strength (stress units), for safety factors",
    },
    "model": {
        "plane": "2D: \"stress\" (default) or \"strain\"",
        "thickness": "2D: out-of-plane thickness (length units, default 1)",
    },
    "supports": {
        "NAME": "set NAME held: a string of fixed components (\"xyz\", \"y\"), or a bushing table "
                "{type = \"spring\", stiffness = [kx, ky, kz]}",
    },
    "supports.NAME": {
        "type": "\"spring\": springs to ground on the set's nodes (a bushing)",
        "stiffness": "total stiffness of the bushing per direction [kx, ky(, kz)] (force / length), "
                     "split equally over the set's nodes",
    },
    "loads": {
        "CASE": "one or more [[loads.CASE]] tables: the loads of load case CASE",
    },
    "loads.CASE": {
        "type": "one of " + ", ".join(LOAD_TYPES) + ": point = force on each node of a node set; "
                "traction = force per area on a face set; pressure = normal pressure on a face set "
                "(positive pushes in); gravity = acceleration (times density); force = total force "
                "vector spread over a face set by area; coupling = force and moment at a reference "
                "point carried by the set's nodes (RBE3-like, no added stiffness)",
        "set": "the node/face set loaded (gravity: optional cell set)",
        "value": "point, traction, force, gravity: a vector [x, y(, z)]; pressure: a number",
        "distribute": "point: \"each\" (default, the value on every node) or \"total\" (split equally)",
        "point": "coupling: the reference point [x, y(, z)]",
        "force": "coupling: force vector at the reference point (default 0)",
        "moment": "coupling: moment vector [mx, my, mz] (2D: one number about z) at the point (default 0)",
        "weights": "coupling: \"area\" (default; tributary areas of a face set) or \"equal\"",
    },
    "sets": {
        "NAME": "a [sets.NAME] table: a named set made by a box (for grids, whose only sets are faces)",
    },
    "sets.NAME": {
        "box": "[[lower corner], [upper corner]] of the box",
        "kind": "\"node\" (default) or \"cell\" (cells whose centre lies in the box)",
        "tolerance": "how far outside the box still counts (default 1e-9 x the mesh size)",
    },
    "requirements": {
        "max_compliance": "compliance limit (force x length): a number for every load case or {CASE = number}",
        "max_displacement": "largest nodal displacement magnitude over all cases (length)",
        "min_safety_factor": "yield_strength / largest von Mises stress (needs yield_strength)",
        "max_mass": "mass limit (needs density)",
        "min_frequency": "lowest natural frequency floor (Hz with seconds as the time unit; needs density)",
    },
    "optimize": {
        "problem": "\"min_mass\" (lightest under the limits) or \"min_compliance\" (stiffest for a volume)",
        "volume_fraction": "min_compliance: allowed material volume / design-space volume",
        "max_compliance": "min_mass: compliance limit, a number or {CASE = number}",
        "max_compliance_factor": "min_mass: limit = factor x the solid design's compliance",
        "filter_radius": "filter radius (length units); about 1.5-3 elements",
        "filter": "\"density\" (default), \"sensitivity\" or \"helmholtz\"",
        "projection": "\"heaviside\" or a table {beta, beta_max, eta}: crisp 0/1 designs",
        "optimizer": "\"oc\", \"mma\" or \"auto\"",
        "penalty": "SIMP exponent, or [start, end] for continuation (default 3)",
        "interpolation": "\"simp\" (default) or \"ramp\"",
        "min_stiffness": "stiffness of void relative to solid (default 1e-9)",
        "non_design": "set names kept solid (supports, load faces, bores)",
        "void": "set names kept empty",
        "symmetry": "mirror plane(s): \"x\", [\"x\", position] or a list",
        "extrusion": "axis along which the design is constant, e.g. \"z\"",
        "case_weights": "min_compliance: {CASE = weight} of the summed objective",
        "max_iterations": "iteration cap (default 200)",
        "tolerance": "stop when the largest density change is below this (default 0.01)",
        "objective_tolerance": "projected runs stop when the objective settles within this relative change",
        "move": "largest density change per iteration",
        "continuation_interval": "iterations between penalty / projection steps",
        "initial": "starting density",
        "solver": "linear solver: \"auto\", \"direct\", \"amg\", \"multigrid\", ...",
        "displacement_limits": "[[optimize.displacement_limits]] tables {set, component, limit, case}: "
                               "|mean displacement component over the set| <= limit",
        "max_stress": "von Mises limit (stress units) as an optimization constraint",
        "min_safety_factor": "yield_strength / max von Mises as an optimization constraint",
        "stress_options": "table of options of the stress constraint (aggregation, ...)",
        "min_frequency": "lowest natural frequency floor as an optimization constraint (needs density)",
        "frequency_options": "table of options of the frequency constraint",
        "manufacturing": "[[optimize.manufacturing]] tables {type, ...}: overhang (build_direction, angle), "
                         "draw_direction (direction, two_sided), member_size (minimum, maximum), "
                         "pattern (sectors or repeats, axis), symmetry, extrusion (docs/manufacturing.md)",
    },
    "optimize.displacement_limits": {
        "set": "node set whose mean displacement is limited",
        "component": "\"x\", \"y\" or \"z\"",
        "limit": "largest allowed |mean displacement| (length units)",
        "case": "load case it applies to (default: every case)",
    },
    "limits": {
        "max_file_mb": "batch: largest file a submitted design may read (MiB)",
        "max_cells": "batch: most solid cells a design (or the case's grid) may have",
        "max_inflated_mb": "batch: most decompressed data of a .vtu / HDF5 dataset (MiB)",
        "memory_mb": "batch: address space of a worker (MiB; 0 = no limit)",
        "time_limit": "batch: wall seconds per design",
    },
    "units": {
        "system": "a unit system: " + ", ".join(f"\"{k}\"" for k in UNIT_SYSTEMS) + "; every figure "
                  "printed (summary, CLI, report) then carries its unit",
        "length": "length unit name (overrides the system's)",
        "force": "force unit name",
        "mass": "mass unit name",
        "time": "time unit name",
        "stress": "stress unit name (default force/length^2)",
    },
}


def accepted_keys() -> dict[str, tuple[str, ...]]:
    """{table: keys the reader accepts} from casefile's tables (NAME/CASE for name-keyed tables)."""
    tables = {name: (keys if keys is not None else ()) for name, keys in SECTION_KEYS.items()}
    tables.update({"supports": ("NAME",), "supports.NAME": SUPPORT_KEYS, "loads": ("CASE",),
                   "loads.CASE": LOAD_KEYS, "sets": ("NAME",), "sets.NAME": SET_KEYS,
                   "optimize.displacement_limits": DISPLACEMENT_LIMIT_KEYS})
    return tables


def reference_markdown() -> str:
    """The key reference of docs/case_files.md (Markdown)."""
    lines = ["# Case file keys", "",
             "Generated by `python -m lightweight.case_keys` from the tables the reader enforces "
             "(`lightweight/casefile.py`); a misspelt key is an error naming the file and key.",
             "Paths resolve against the case file. Units are the user's; `[units]` names them.", ""]
    for table, keys in accepted_keys().items():
        lines += [f"## [{table}]", "", "| key | meaning |", "|---|---|"]
        for key in keys:
            meaning = KEY_DOCS.get(table, {}).get(key, "")
            lines.append(f"| `{key}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
