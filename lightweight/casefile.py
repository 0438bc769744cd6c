"""Case files (TOML): a component's design space, loads and requirements in one checked file.

The format is the contract of docs/case_files.md: tables ``[mesh]``, ``[material]``,
``[supports]``, ``[[loads.CASE]]``, ``[requirements]`` and ``[optimize]``; this module adds
``[model]`` (``plane``, ``thickness`` for 2D) and ``[sets.NAME]`` (a node or cell set by a
box, for structured grids whose only named sets are their faces). Paths resolve against the
case file's folder.

Approach: the file is read with the standard library's ``tomllib`` and turned into plain
objects in one pass; every table rejects keys it does not know (a misspelt key would
otherwise be silently ignored, and a silently ignored requirement is worse than an error),
and every error is a :class:`~lightweight.errors.CaseFileError` that names the file and the
key (``loads.brake[1].set``). ``Case.sha256`` (the file's bytes) and the mesh file's hash go
into every result, so a figure can be traced to the exact inputs that produced it.
``evaluate_requirements`` judges a solved design against ``[requirements]``; the optimizer and
the batch evaluator report the same numbers.

The keys each table accepts are listed once, in ``SECTION_KEYS`` (one tuple per table), so a new
requirement or option is one entry there plus its reader. ``[limits]`` sets what one submitted
design may cost in batch evaluation (:class:`lightweight.sandbox.Limits`: file size, cells,
inflated data, worker memory, time); the case's own grid must fit ``max_cells`` too. Numbers must
be finite (TOML allows ``nan`` and ``inf``), limits positive, and a document nested deeper than
TOML tables need is refused, all as CaseFileError naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CaseFileError, LightweightError
from .fem import Gravity, Material, Model, PointLoad, Pressure, Traction
from .fem.loads import Coupling, Force, Spring
from .mesh import read_mesh, structured_grid
from .provenance import file_sha256
from .sandbox import LIMIT_KEYS, Limits

LOAD_TYPES = ("point", "traction", "pressure", "gravity", "force", "coupling")
REQUIREMENT_KEYS = ("max_compliance", "max_displacement", "min_safety_factor", "max_mass", "min_frequency")
# keyword arguments of minimize_compliance / minimize_mass a case file may set
OPTIMIZE_KEYS = ("problem", "volume_fraction", "max_compliance", "max_compliance_factor",
                 "filter_radius", "filter", "projection", "optimizer", "penalty", "interpolation",
                 "min_stiffness", "non_design", "void", "symmetry", "extrusion", "case_weights",
                 "max_iterations", "tolerance", "objective_tolerance", "move",
                 "continuation_interval", "initial", "solver", "displacement_limits", "max_stress",
                 "min_safety_factor", "stress_options", "manufacturing", "min_frequency", "frequency_options")
# [units]: a named system or the base units one by one; every figure printed carries its unit
UNIT_SYSTEMS = {
    "mm-N-t-s": {"length": "mm", "force": "N", "mass": "t", "time": "s", "stress": "MPa"},
    "m-N-kg-s": {"length": "m", "force": "N", "mass": "kg", "time": "s", "stress": "Pa"},
    "mm-kN-kg-ms": {"length": "mm", "force": "kN", "mass": "kg", "time": "ms", "stress": "GPa"},
    "in-lbf-s": {"length": "in", "force": "lbf", "mass": "lbf s^2/in", "time": "s", "stress": "psi"},
}
UNITS_KEYS = ("system", "length", "force", "mass", "time", "stress")
SUPPORT_KEYS = ("type", "stiffness")                 # a support given as a table: a spring
DISPLACEMENT_LIMIT_KEYS = ("set", "component", "limit", "case")
PROBLEMS = ("min_compliance", "min_mass")
# the keys of each table (None: any key, e.g. set or load-case names); extend here
SECTION_KEYS = {
    "mesh": ("file", "grid", "size", "origin", "cell_type"),
    "material": ("E", "nu", "density", "yield_strength"),
    "model": ("plane", "thickness"),
    "supports": None,
    "loads": None,
    "sets": None,
    "requirements": REQUIREMENT_KEYS,
    "optimize": OPTIMIZE_KEYS,
    "limits": LIMIT_KEYS,
    "units": UNITS_KEYS,
}
LOAD_KEYS = ("type", "set", "value", "distribute", "point", "force", "moment", "weights")
SET_KEYS = ("box", "kind", "tolerance")
# deeper than any valid case file (loads.CASE[i].value[j] is 4 levels): refused before reading
MAX_NESTING = 8


@dataclass
class Case:
    """A parsed case file: the analysis model, the requirements and the optimization settings."""

    path: Path
    model: Model
    requirements: dict = field(default_factory=dict)   # keys of REQUIREMENT_KEYS
    optimize: dict = field(default_factory=dict)       # problem + minimize_* keyword arguments
    limits: Limits = field(default_factory=Limits)      # [limits] over the defaults
    sha256: str = ""                                    # of the case file's bytes
    mesh_sha256: str | None = None                      # of the mesh file (None for grids)
    document: dict = field(default_factory=dict, repr=False)  # the parsed TOML
    units: dict = field(default_factory=dict)           # {quantity: unit} from [units]; {} if none

    @property
    def name(self) -> str:
        return self.path.stem

    def unit(self, figure: str) -> str:
        """Unit of a reported figure ("mass", "compliance.brake", "max_von_mises", ...); "" if unknown."""
        return figure_unit(self.units, figure)

    def model_for(self, mesh) -> Model:
        """The case's material, supports and loads applied to another mesh (e.g. a submitted design).

        The mesh must carry the named sets the case refers to; the case's ``[sets]`` boxes are
        added to it. Raises CaseFileError / UnknownSetError naming what is missing.
        """
        return _build_model(_Reader(self.path), self.document, mesh)

    def provenance(self) -> dict:
        """What identifies this case's inputs: file paths and their SHA-256."""
        return {"case_file": str(self.path), "case_sha256": self.sha256,
                "mesh_sha256": self.mesh_sha256}


class _Reader:
    """Walks the TOML document, naming the file and key in every error."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> CaseFileError:
        where = f" [{key}]" if key else ""
        return CaseFileError(f"case file {self.path}{where}: {message}")

    def table(self, doc: Mapping, key: str, allowed, required: bool = False) -> dict:
        value = doc.get(key)
        if value is None:
            if required:
                raise self.fail(key, "this table is missing")
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        if allowed is not None:
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                raise self.fail(key, f"unknown key(s) {', '.join(map(repr, unknown))}; "
                                     f"known: {', '.join(allowed)}")
        return dict(value)

    def entry(self, value, where: str, allowed, what: str = "a table") -> dict:
        """One table of an array of tables ([[...]]): a mapping with known keys only."""
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be {what}, got {value!r}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(allowed)}")
        return dict(value)

    def number(self, table: Mapping, key: str, where: str, required: bool = False, default=None):
        if key not in table:
            if required:
                raise self.fail(where, f"{key!r} is required")
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{where}.{key}", f"must be a number, got {value!r}")
        if not np.isfinite(value):
            raise self.fail(f"{where}.{key}", f"must be a finite number, got {value!r}")
        return float(value)

    def vector(self, value, where: str, length: int | None = None) -> list[float]:
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise self.fail(where, f"must be a list of numbers, got {value!r}")
        if not all(np.isfinite(v) for v in value):
            raise self.fail(where, f"must be finite numbers, got {value!r}")
        if length is not None and len(value) != length:
            raise self.fail(where, f"needs {length} numbers for this {length}D model, got {len(value)}")
        return [float(v) for v in value]


def read_case(path) -> Case:
    """Read and check a case file (TOML) -> :class:`Case` with a ready ``Model``."""
    path = Path(path)
    if not path.is_file():
        raise CaseFileError(f"case file {path} does not exist")
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"case file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise CaseFileError(f"case file {path} is nested too deeply to be a case file") from None
    reader = _Reader(path)
    deepest = _nesting(doc)
    if deepest:
        raise reader.fail(deepest, f"nested deeper than {MAX_NESTING} levels; a case file needs at most 4")
    unknown = sorted(set(doc) - set(SECTION_KEYS))
    if unknown:
        raise reader.fail("", f"unknown table(s) {', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(SECTION_KEYS)}")
    limits = _read_limits(reader, doc)
    mesh, mesh_sha = _read_mesh(reader, doc, path.parent, limits)
    model = _build_model(reader, doc, mesh)
    requirements = _read_requirements(reader, doc, model)
    optimize = _read_optimize(reader, doc, model)
    units = _read_units(reader, doc)
    return Case(path=path.resolve(), model=model, requirements=requirements, optimize=optimize,
                limits=limits, sha256=file_sha256(path), mesh_sha256=mesh_sha, document=doc, units=units)


def _read_units(reader: _Reader, doc) -> dict:
    """[units] -> {quantity: unit} for length, force, mass, time, stress and the derived ones."""
    table = reader.table(doc, "units", SECTION_KEYS["units"])
    if not table:
        return {}
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip():
            raise reader.fail(f"units.{key}", f"must be a unit name string, got {value!r}")
    units = {}
    if "system" in table:
        if table["system"] not in UNIT_SYSTEMS:
            raise reader.fail("units.system", f"unknown unit system {table['system']!r}; known: "
                                              f"{', '.join(UNIT_SYSTEMS)} (or give length, force, mass, time)")
        units.update(UNIT_SYSTEMS[table["system"]])
    units.update({k: v for k, v in table.items() if k != "system"})
    missing = [k for k in ("length", "force") if k not in units]
    if missing:
        raise reader.fail("units", f"needs system = \"mm-N-t-s\" (or another of {', '.join(UNIT_SYSTEMS)}) "
                                   f"or at least length and force; missing {', '.join(missing)}")
    length, force = units["length"], units["force"]
    units.setdefault("stress", f"{force}/{length}^2")
    units.update(displacement=length, volume=f"{length}^3", compliance=f"{force} {length}")
    if units.get("time") == "s":
        units["frequency"] = "Hz"
    return units


def figure_unit(units: Mapping, figure: str) -> str:
    """Unit of a figure name (per-case names like "compliance.brake" too) under ``units``; "" if unknown."""
    base = figure.split(".")[0]
    quantity = {"mass": "mass", "max_mass": "mass", "volume": "volume", "compliance": "compliance",
                "max_compliance": "compliance", "max_displacement": "displacement",
                "max_von_mises": "stress", "max_stress": "stress", "frequency": "frequency"}.get(base)
    return str(units.get(quantity, "")) if quantity else ""


def _nesting(value, where: str = "", depth: int = 0) -> str | None:
    """The first key path nested deeper than MAX_NESTING, or None."""
    if depth > MAX_NESTING:
        return where or "(top)"
    items = value.items() if isinstance(value, Mapping) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = _nesting(item, f"{where}[{key}]" if isinstance(key, int) else
                         (f"{where}.{key}" if where else str(key)), depth + 1)
        if found:
            return found
    return None


def _read_limits(reader: _Reader, doc) -> Limits:
    """[limits] over the defaults of :class:`lightweight.sandbox.Limits`."""
    table = reader.table(doc, "limits", SECTION_KEYS["limits"])
    values = {}
    for key in table:
        value = reader.number(table, key, "limits")
        if not (value > 0 or (key == "memory_mb" and value == 0)):
            raise reader.fail(f"limits.{key}", f"must be positive, got {value:g}")
        values[key] = int(value) if key == "max_cells" else value
    return Limits().updated(**values)


def _build_model(reader: _Reader, doc, mesh) -> Model:
    """[sets], [material], [model], [supports] and [loads] on ``mesh`` -> Model."""
    _add_sets(reader, doc, mesh)
    material = _read_material(reader, doc)
    model_opts = reader.table(doc, "model", SECTION_KEYS["model"])
    thickness = reader.number(model_opts, "thickness", "model", default=1.0)
    if not thickness > 0:
        raise reader.fail("model.thickness", f"must be positive, got {thickness:g}")
    plane = model_opts.get("plane", "stress")
    if plane not in ("stress", "strain"):
        raise reader.fail("model.plane", f"must be 'stress' or 'strain', got {plane!r}")
    supports = reader.table(doc, "supports", None, required=True)
    for name, components in supports.items():
        if isinstance(components, Mapping):
            spec = reader.table(supports, name, SUPPORT_KEYS)
            if spec.get("type") != "spring" or "stiffness" not in spec:
                raise reader.fail(f"supports.{name}", "a support table is a bushing: {type = \"spring\", "
                                                      "stiffness = [kx, ky, kz]}")
            supports[name] = Spring(name, reader.vector(spec["stiffness"], f"supports.{name}.stiffness",
                                                        mesh.dim))
            continue
        if not isinstance(components, str):
            raise reader.fail(f"supports.{name}", f"must be a string of components like \"xyz\" "
                                                  f"or a spring table, got {components!r}")
    loads = _read_loads(reader, doc, mesh.dim)
    try:
        return Model(mesh, material=material, supports=supports, loads=loads, plane=plane,
                     thickness=thickness)
    except CaseFileError:
        raise
    except LightweightError as exc:
        raise CaseFileError(f"case file {reader.path}: {exc}") from None


def _read_mesh(reader: _Reader, doc, folder: Path, limits: Limits):
    table = reader.table(doc, "mesh", SECTION_KEYS["mesh"], required=True)
    if ("file" in table) == ("grid" in table):
        raise reader.fail("mesh", "give exactly one of file = \"part.msh\" or grid = [nx, ny(, nz)]")
    if "file" in table:
        if not isinstance(table["file"], str):
            raise reader.fail("mesh.file", f"must be a path string, got {table['file']!r}")
        mesh_path = (folder / table["file"]).resolve()
        if not mesh_path.is_file():
            raise reader.fail("mesh.file", f"mesh file {mesh_path} does not exist")
        try:
            mesh = read_mesh(mesh_path, cell_type=table.get("cell_type"))
        except LightweightError as exc:
            raise reader.fail("mesh.file", str(exc)) from None
        return mesh, file_sha256(mesh_path)
    shape = table["grid"]
    if not (isinstance(shape, list) and len(shape) in (2, 3)
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise reader.fail("mesh.grid", f"must be 2 or 3 positive integers, got {shape!r}")
    if int(np.prod(shape, dtype=object)) > limits.max_cells:
        raise reader.fail("mesh.grid", f"{' x '.join(map(str, shape))} cells exceed the limit of "
                                       f"{limits.max_cells} (limits.max_cells)")
    size = reader.vector(table["size"], "mesh.size", len(shape)) if "size" in table else None
    origin = reader.vector(table["origin"], "mesh.origin", len(shape)) if "origin" in table else None
    try:
        mesh = structured_grid(tuple(shape), size=size, origin=origin)
    except LightweightError as exc:
        raise reader.fail("mesh", str(exc)) from None
    return mesh, None


def _add_sets(reader: _Reader, doc, mesh) -> None:
    sets = reader.table(doc, "sets", None)
    for name, spec in sets.items():
        where = f"sets.{name}"
        spec = reader.table(sets, name, SET_KEYS)
        if "box" not in spec:
            raise reader.fail(where, "needs box = [[lower corner], [upper corner]]")
        box = spec["box"]
        if not (isinstance(box, list) and len(box) == 2):
            raise reader.fail(f"{where}.box", f"must be [[lower corner], [upper corner]], got {box!r}")
        lower = np.array(reader.vector(box[0], f"{where}.box", mesh.dim))
        upper = np.array(reader.vector(box[1], f"{where}.box", mesh.dim))
        # a box edge on a node row must catch that row despite round-off in the coordinates
        lo, hi = mesh.bounding_box()
        tol = reader.number(spec, "tolerance", where, default=1e-9 * float(np.max(hi - lo)))
        kind = spec.get("kind", "node")
        if kind == "node":
            points = mesh.points
        elif kind == "cell":
            points = mesh.cell_centers()
        else:
            raise reader.fail(f"{where}.kind", f"must be 'node' or 'cell', got {kind!r}")
        inside = np.all((points >= lower - tol) & (points <= upper + tol), axis=1)
        if not inside.any() and name in (mesh.node_sets if kind == "node" else mesh.cell_sets):
            continue   # an exported part carries the set (export_solid) where no node sits on the box
        if not inside.any():
            raise reader.fail(where, f"the box {lower.tolist()}..{upper.tolist()} contains no "
                                     f"{kind}; the mesh spans {lo.tolist()}..{hi.tolist()}")
        ids = np.flatnonzero(inside)
        if kind == "node":
            mesh.add_node_set(name, ids)
        else:
            mesh.add_cell_set(name, ids)


def _read_material(reader: _Reader, doc) -> Material:
    table = reader.table(doc, "material", SECTION_KEYS["material"], required=True)
    values = {"E": reader.number(table, "E", "material", required=True),
              "nu": reader.number(table, "nu", "material", required=True),
              "density": reader.number(table, "density", "material", default=0.0)}
    if "yield_strength" in table:
        values["yield_strength"] = reader.number(table, "yield_strength", "material")
    try:
        return Material(**values)
    except LightweightError as exc:
        raise reader.fail("material", str(exc)) from None


def _read_loads(reader: _Reader, doc, dim: int) -> dict:
    cases = reader.table(doc, "loads", None, required=True)
    if not cases:
        raise reader.fail("loads", "no load case; add [[loads.NAME]] tables")
    loads = {}
    for case, entries in cases.items():
        if isinstance(entries, Mapping):
            entries = [entries]
        if not isinstance(entries, list) or not entries:
            raise reader.fail(f"loads.{case}", "must be one or more [[loads.NAME]] tables")
        items = []
        for i, entry in enumerate(entries):
            where = f"loads.{case}[{i}]"
            entry = reader.entry(entry, where, LOAD_KEYS)
            kind = entry.get("type")
            if kind not in LOAD_TYPES:
                raise reader.fail(f"{where}.type", f"must be one of {', '.join(LOAD_TYPES)}, got {kind!r}")
            if kind == "coupling":
                items.append(_read_coupling(reader, entry, where, dim))
                continue
            extra = sorted({"point", "force", "moment", "weights"} & set(entry))
            if extra:
                raise reader.fail(where, f"{', '.join(extra)} belong to type = \"coupling\"")
            if "value" not in entry:
                raise reader.fail(where, "needs value = ...")
            name = entry.get("set")
            if kind != "gravity" and not isinstance(name, str):
                raise reader.fail(f"{where}.set", f"a {kind} load needs set = \"NAME\"")
            if kind == "pressure":
                value = reader.number(entry, "value", where, required=True)
                items.append(Pressure(name, value))
                continue
            value = reader.vector(entry["value"], f"{where}.value", dim)
            if kind == "point":
                items.append(PointLoad(name, value, distribute=entry.get("distribute", "each")))
            elif kind == "traction":
                items.append(Traction(name, value))
            elif kind == "force":
                items.append(Force(name, value))
            else:
                items.append(Gravity(value, set=name))
        loads[str(case)] = items
    return loads


def _read_coupling(reader: _Reader, entry, where: str, dim: int) -> Coupling:
    """A [[loads.CASE]] table of type "coupling": set, point, force, moment, weights."""
    if not isinstance(entry.get("set"), str):
        raise reader.fail(f"{where}.set", "a coupling needs set = \"NAME\" (the nodes that carry it)")
    if "value" in entry:
        raise reader.fail(f"{where}.value", "a coupling takes force = [...] and moment = ... instead of value")
    if "point" not in entry:
        raise reader.fail(where, "a coupling needs point = [x, y(, z)], the reference point")
    point = reader.vector(entry["point"], f"{where}.point", dim)
    force = reader.vector(entry["force"], f"{where}.force", dim) if "force" in entry else [0.0] * dim
    if dim == 2:
        moment = reader.number(entry, "moment", where, default=0.0)
    else:
        moment = reader.vector(entry["moment"], f"{where}.moment", 3) if "moment" in entry else [0.0] * 3
    weights = entry.get("weights", "area")
    if weights not in ("area", "equal"):
        raise reader.fail(f"{where}.weights", f"must be \"area\" or \"equal\", got {weights!r}")
    return Coupling(entry["set"], point, force=force, moment=moment, weights=weights)


def _read_requirements(reader: _Reader, doc, model: Model) -> dict:
    table = reader.table(doc, "requirements", SECTION_KEYS["requirements"])
    out = {}
    for key in ("max_displacement", "min_safety_factor", "max_mass", "min_frequency"):
        if key in table:
            value = reader.number(table, key, "requirements")
            if not value > 0:
                raise reader.fail(f"requirements.{key}", f"must be positive, got {value}")
            out[key] = value
    if "max_compliance" in table:
        out["max_compliance"] = _per_case(reader, table["max_compliance"], "requirements.max_compliance",
                                          model.load_cases)
    if "min_safety_factor" in out and model.material.yield_strength is None:
        raise reader.fail("requirements.min_safety_factor", "needs [material] yield_strength")
    if "max_mass" in out and not model.material.density:
        raise reader.fail("requirements.max_mass", "needs [material] density (without it the mass is unknown)")
    if "min_frequency" in out and not model.material.density:
        raise reader.fail("requirements.min_frequency", "needs [material] density (frequencies need the mass)")
    return out


def _per_case(reader: _Reader, value, where: str, cases) -> dict[str, float]:
    """A number (every load case) or a table {case: number} -> {case: float}."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(cases))
        if unknown:
            raise reader.fail(where, f"unknown load case(s) {', '.join(map(repr, unknown))}; "
                                     f"cases: {', '.join(cases)}")
        limits = {c: reader.number(value, c, where) for c in value}
        for c, limit in limits.items():
            if not limit > 0:
                raise reader.fail(f"{where}.{c}", f"must be positive, got {limit:g}")
        return limits
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)
            or not value > 0):
        raise reader.fail(where, f"must be a positive number or a table {{case = number}}, got {value!r}")
    return {c: float(value) for c in cases}


def _read_optimize(reader: _Reader, doc, model: Model) -> dict:
    table = reader.table(doc, "optimize", SECTION_KEYS["optimize"])
    if not table:
        return {}
    problem = table.pop("problem", "min_mass" if ("max_compliance" in table or "max_compliance_factor" in table)
                        else "min_compliance")
    if problem not in PROBLEMS:
        raise reader.fail("optimize.problem", f"must be one of {', '.join(PROBLEMS)}, got {problem!r}")
    if problem == "min_compliance" and ({"max_compliance", "max_compliance_factor"} & set(table)):
        raise reader.fail("optimize", "max_compliance / max_compliance_factor belong to problem = \"min_mass\"")
    if problem == "min_compliance" and "volume_fraction" not in table:
        raise reader.fail("optimize", "problem = \"min_compliance\" needs volume_fraction")
    if problem == "min_mass" and "volume_fraction" in table:
        raise reader.fail("optimize", "volume_fraction belongs to problem = \"min_compliance\"")
    if "max_compliance" in table:
        table["max_compliance"] = _per_case(reader, table["max_compliance"], "optimize.max_compliance",
                                            model.load_cases)
    for key in ("non_design", "void"):
        names = table.get(key, [])
        if isinstance(names, str):
            names = [names]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise reader.fail(f"optimize.{key}", f"must be a list of set names, got {names!r}")
        table[key] = names
    if "displacement_limits" in table:
        table["displacement_limits"] = _read_displacement_limits(reader, table["displacement_limits"], model)
    for key in ("max_stress", "min_safety_factor"):
        if key in table:
            value = reader.number(table, key, "optimize")
            if not value > 0:
                raise reader.fail(f"optimize.{key}", f"must be positive, got {value:g}")
            table[key] = value
    if "min_safety_factor" in table and model.material.yield_strength is None:
        raise reader.fail("optimize.min_safety_factor", "needs [material] yield_strength")
    if "min_frequency" in table:                        # Hz, a floor on the lowest natural frequency
        value = reader.number(table, "min_frequency", "optimize")
        if not value > 0:
            raise reader.fail("optimize.min_frequency", f"must be a positive frequency in Hz, got {value:g}")
        if not model.material.density:
            raise reader.fail("optimize.min_frequency", "needs [material] density (frequencies need the mass)")
        table["min_frequency"] = value
    if "manufacturing" in table:
        table["manufacturing"] = _read_manufacturing(reader, table["manufacturing"])
    return {"problem": problem, **table}


def _read_manufacturing(reader: _Reader, value) -> list:
    """[[optimize.manufacturing]] tables {type = "overhang", build_direction = "+y", ...} -> rule objects.

    The keys besides ``type`` are the rule's arguments (lightweight/optimize/manufacturing); an
    unknown type or argument is an error naming the table.
    """
    from .optimize.manufacturing import make_rule
    entries = [value] if isinstance(value, Mapping) else value
    if not isinstance(entries, list) or not entries:
        raise reader.fail("optimize.manufacturing", "must be one or more tables {type = \"overhang\", ...}")
    rules = []
    for i, entry in enumerate(entries):
        where = f"optimize.manufacturing[{i}]"
        try:
            rules.append(make_rule(entry, where))
        except LightweightError as exc:
            raise reader.fail(where, str(exc).removeprefix(where + ": ")) from None
    return rules


def _read_displacement_limits(reader: _Reader, value, model: Model) -> list:
    """[[optimize.displacement_limits]] tables {set, component, limit, case} -> DisplacementLimit list."""
    from .optimize import DisplacementLimit
    entries = [value] if isinstance(value, Mapping) else value
    if not isinstance(entries, list) or not entries:
        raise reader.fail("optimize.displacement_limits", "must be one or more tables {set, component, limit}")
    out = []
    for i, entry in enumerate(entries):
        where = f"optimize.displacement_limits[{i}]"
        entry = reader.entry(entry, where, DISPLACEMENT_LIMIT_KEYS, "a table {set, component, limit}")
        name = entry.get("set")
        if name not in model.mesh.node_sets:
            raise reader.fail(f"{where}.set", f"no node set {name!r} in the mesh; known: "
                                              f"{', '.join(sorted(model.mesh.node_sets)) or '(none)'}")
        component = entry.get("component")
        if component not in tuple("xyz"[:model.dim]):
            raise reader.fail(f"{where}.component", f"must be one of {', '.join('xyz'[:model.dim])}, "
                                                    f"got {component!r}")
        limit = reader.number(entry, "limit", where, required=True)
        if not limit > 0:
            raise reader.fail(f"{where}.limit", f"must be positive, got {limit:g}")
        case = entry.get("case")
        if case is not None and case not in model.load_cases:
            raise reader.fail(f"{where}.case", f"unknown load case {case!r}; cases: {', '.join(model.load_cases)}")
        out.append(DisplacementLimit(name, component, limit, case))
    return out


def evaluate_requirements(solution, requirements: Mapping, frequencies: Mapping | None = None) -> dict:
    """Figures of a solved design and whether each requirement holds.

    Returns {"mass" (None without a material density), "volume", "compliance": {case},
    "max_displacement": {case}, "max_von_mises", "safety_factor" (None without a yield
    strength), "checks": {requirement: bool}, "margins": {requirement: (limit - value) / limit
    for upper limits, (value - limit) / limit for lower ones; negative = missed by that
    fraction; None when the value is unknown}, "limits": {requirement: limit}, "values":
    {requirement: value}, "pass": all checks hold}. Units are the model's.
    frequencies: {"frequency_1": Hz, ...} of the design (``min_frequency`` is judged on
    frequency_1; optimize.responses.frequency.frequency_figures computes them).
    """
    from .fem.material import safety_factor
    model = solution.model
    max_vm = float(max(solution.max_von_mises.values()))
    safety = safety_factor(model.material.yield_strength, max_vm)
    checks = {}
    if "max_compliance" in requirements:
        for case, limit in requirements["max_compliance"].items():
            checks[f"compliance.{case}"] = solution.compliance[case] <= limit
    if "max_displacement" in requirements:
        checks["max_displacement"] = max(solution.max_displacement.values()) <= requirements["max_displacement"]
    if "min_safety_factor" in requirements:
        checks["min_safety_factor"] = safety is not None and safety >= requirements["min_safety_factor"]
    if "max_mass" in requirements:
        checks["max_mass"] = solution.mass is not None and solution.mass <= requirements["max_mass"]
    first_frequency = (frequencies or {}).get("frequency_1")
    if "min_frequency" in requirements:
        checks["min_frequency"] = first_frequency is not None and first_frequency >= requirements["min_frequency"]
    return {"mass": None if solution.mass is None else float(solution.mass), "volume": float(solution.volume),
            "compliance": dict(solution.compliance), "max_displacement": dict(solution.max_displacement),
            "max_von_mises": max_vm, "safety_factor": safety,
            "checks": {k: bool(v) for k, v in checks.items()}, "pass": bool(all(checks.values())),
            "frequencies": dict(frequencies or {}),
            **_margins(solution, requirements, max_vm, safety, first_frequency)}


def _margins(solution, requirements: Mapping, max_vm: float, safety, first_frequency=None) -> dict:
    """{"limits", "values", "margins"} per check name of :func:`evaluate_requirements`."""
    limits, values = {}, {}
    for case, limit in requirements.get("max_compliance", {}).items():
        limits[f"compliance.{case}"], values[f"compliance.{case}"] = limit, solution.compliance[case]
    if "max_displacement" in requirements:
        limits["max_displacement"] = requirements["max_displacement"]
        values["max_displacement"] = max(solution.max_displacement.values())
    if "min_safety_factor" in requirements:
        limits["min_safety_factor"], values["min_safety_factor"] = requirements["min_safety_factor"], safety
    if "max_mass" in requirements:
        limits["max_mass"], values["max_mass"] = requirements["max_mass"], solution.mass
    if "min_frequency" in requirements:
        limits["min_frequency"], values["min_frequency"] = requirements["min_frequency"], first_frequency
    margins = {}
    for key, limit in limits.items():
        value = values[key]
        if value is None:
            margins[key] = None
        elif key.startswith("min_"):
            margins[key] = (float(value) - limit) / limit
        else:
            margins[key] = (limit - float(value)) / limit
    return {"limits": limits, "values": {k: None if v is None else float(v) for k, v in values.items()},
            "margins": margins}
