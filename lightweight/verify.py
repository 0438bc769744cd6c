"""Does the exported part meet the requirements its design was optimized for? And if not, why?

``verify_export(result, part, case)`` closes the engineer's loop optimize -> export -> evaluate:
the part (a tet mesh from :func:`lightweight.export.export_solid`, with the design's named sets)
is solved with the case's material, supports and loads and judged by the case's requirements,
next to the design's own figures. When the part misses a requirement, the report says by how
much (the margin, (limit - value) / limit) and gives the two usual reasons with numbers:

- Discretization error of the design mesh. The design's figures come from a coarse mesh (tet4
  is stiff: the sample control arm's compliance rose 7 % on export, mostly for this reason). It
  is estimated by solving the same design once more on a finer discretization of the design
  space with the same densities: linear tets are raised to quadratic ones (tet4 -> tet10, same
  cells, mid-edge nodes added: no new densities to invent), structured quad/hex grids are split
  uniformly in two along each axis (each child keeps its parent's density). The relative change
  of each figure is the part of the miss the design mesh cannot see.
  Why p- rather than h-refinement on tets: refining an unstructured tet mesh needs a remesher
  or red refinement with set bookkeeping, while tet10 reuses the cells, the sets (mid-edge
  nodes join the face sets) and the densities exactly, and converges faster for stiffness.
  The part itself is solved as tet10 too; with both on quadratic tets, what still differs is the
  exported geometry (the surface at the volume-preserving level, thinned members), not a mesh.
- Stress hot spots: the cells of the part with the highest von Mises stress, grouped into
  spots at least two cell sizes apart, each named by its location (coordinates) and the
  nearest named set of the part, so "83.6 MPa at (31, -4, 12), 2.1 mm from bore_front" points to
  the fillet to look at. Each spot carries its cell's shape quality: on the sample control arm the
  highest stress of the exported part (231 MPa, 7x the design's) sat in a sliver tet of quality
  3e-6 left by the surface fill, so a sliver spot is labelled as a meshing artefact and the
  highest stress in well-shaped tets is named beside it.

``tighten=True`` (with a Case that has [optimize]) reruns the optimization with each compliance
limit scaled by the measured part/design ratio, min(limit, design_value * target / part_value),
so the next design leaves the margin the export costs, exports it and verifies it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LightweightError
from .mesh.mesh import Mesh

# mid-edge node order of tetra10 in meshio/VTK: edges 01, 12, 02, 03, 13, 23
_TET_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])


@dataclass(eq=False)
class ExportCheck:
    """Verification of an exported part (see module docstring).

    rows: one dict per requirement {"requirement", "limit", "design", "part", "margin" (part;
    negative = missed by that fraction), "pass" (part), "unit"}; design / part: the figures of
    :func:`lightweight.casefile.evaluate_requirements`; mesh_error: {figure: relative change of
    the design's figure on the finer discretization} (None when not estimated); hot_spots: [{"case",
    "von_mises", "point" (dim,), "nearest_set", "distance"}]; explanation: sentences for the user.
    """

    rows: list[dict]
    design: dict
    part: dict
    mesh_error: dict | None
    hot_spots: list[dict]
    explanation: list[str]
    units: dict = field(default_factory=dict)
    part_solution: object = field(default=None, repr=False)
    part_mesh_error: dict | None = None            # {figure: tet10 / tet4 - 1} of the part itself
    tightened: dict | None = None                  # {"max_compliance": {case: limit}} of the rerun
    rerun: "ExportCheck | None" = None
    rerun_result: object = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return all(row["pass"] for row in self.rows)

    def summary(self) -> dict:
        """JSON-able record of the check (and of the rerun's, if any)."""
        def clean(figures):
            return {k: v for k, v in figures.items() if k != "solution"}
        out = {"pass": self.passed, "requirements": self.rows, "design": clean(self.design),
               "part": clean(self.part), "mesh_error": self.mesh_error,
               "part_mesh_error": self.part_mesh_error, "hot_spots": [
                   {**spot, "point": [float(x) for x in spot["point"]]} for spot in self.hot_spots],
               "explanation": self.explanation, "units": self.units}
        if self.tightened is not None:
            out["tightened"] = self.tightened
        if self.rerun is not None:
            out["rerun"] = self.rerun.summary()
        return out

    def text(self) -> str:
        """The rows and the explanation as lines for a terminal."""
        lines = [f"{'requirement':<24} {'limit':>12} {'design':>12} {'part':>12} {'margin':>8}"]
        for row in self.rows:
            unit = f" {row['unit']}" if row["unit"] else ""
            lines.append(f"{row['requirement']:<24} {_fmt(row['limit']):>12} {_fmt(row['design']):>12} "
                         f"{_fmt(row['part']):>12} {_pct(row['margin']):>8} "
                         f"{'ok' if row['pass'] else 'MISSED'}{unit}")
        return "\n".join(lines + self.explanation)


def _fmt(value) -> str:
    return "unknown" if value is None else f"{value:.5g}"


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:+.1f}%"


def verify_export(result, part, case, tighten: bool = False, refine: bool = True, n_hot_spots: int = 3,
                  solver: str = "auto", export_options: dict | None = None) -> ExportCheck:
    """Re-evaluate an exported part against the requirements; explain a miss (module docstring).

    result: the OptimizationResult the part came from; part: its Mesh or .msh path (with the
    design's named sets, as export_solid writes it); case: a :class:`~lightweight.casefile.Case`
    (material, supports, loads and [requirements] applied to the part) or a requirements dict
    (then the result's model's supports and loads are used, by set name). refine: estimate the
    design mesh's discretization error (one more solve on a finer discretization). tighten:
    when the part misses a compliance limit, rerun the optimization with tightened limits, export
    (``export_options`` for export_solid) and verify again (needs a Case with [optimize]).
    Returns an :class:`ExportCheck`.
    """
    from .casefile import Case, evaluate_requirements, figure_unit
    from .fem import solve
    model = getattr(result, "model", None)
    design_solution = getattr(result, "solution", None)
    if model is None or design_solution is None:
        raise LightweightError("verify_export needs the OptimizationResult the part was exported from "
                               "(with its model and final solution)")
    part_mesh = _as_mesh(part)
    if isinstance(case, Case):
        requirements, units = case.requirements, case.units
        part_model = case.model_for(part_mesh)
    elif isinstance(case, dict):
        requirements, units = case, {}
        part_model = _same_conditions(model, part_mesh)
    else:
        raise LightweightError(f"verify_export: case must be a lightweight Case (lw.read_case) or a "
                               f"requirements dict, got {type(case).__name__}")
    part_solution = solve(part_model, solver=solver)
    design = evaluate_requirements(design_solution, requirements)
    part_figures = evaluate_requirements(part_solution, requirements)
    rows = [{"requirement": key, "limit": limit, "design": design["values"][key],
             "part": part_figures["values"][key], "margin": part_figures["margins"][key],
             "pass": part_figures["checks"][key], "unit": figure_unit(units, key)}
            for key, limit in part_figures["limits"].items()]
    mesh_error = part_error = None
    if refine and any(not row["pass"] for row in rows):
        mesh_error = design_mesh_error(result, solver=solver)
        part_error = part_mesh_error(part_solution, solver=solver)
    spots = hot_spots(part_solution, n_hot_spots)
    if any(spot["quality"] < SLIVER_QUALITY for spot in spots):
        # name the real peak too: the highest stress in well-shaped tets
        listed = {spot["cell"] for spot in spots}
        spots += [dict(spot, well_shaped=True) for spot in
                  hot_spots(part_solution, 1, min_quality=SLIVER_QUALITY) if spot["cell"] not in listed]
    check = ExportCheck(rows, design, part_figures, mesh_error, spots, [], dict(units),
                        part_solution=part_solution, part_mesh_error=part_error)
    check.explanation = _explain(check, units)
    if tighten and not check.passed:
        _tighten_and_rerun(check, result, case, export_options or {}, solver)
    return check


def _as_mesh(part) -> Mesh:
    if isinstance(part, Mesh):
        return part
    if isinstance(part, (str, Path)):
        from .mesh.io import read_mesh
        return read_mesh(part)
    raise LightweightError(f"part must be a Mesh or a mesh file path, got {type(part).__name__}")


def _support_specs(model) -> dict:
    specs = {name: {"xyz"[c]: v for c, v in comps.items()} for name, comps in model.supports.items()}
    specs.update({spring.set: spring for spring in getattr(model, "springs", ())})
    return specs


def _same_conditions(model, mesh: Mesh, loads: dict | None = None):
    """The model's material, supports and loads on another mesh that carries the same set names."""
    from .fem import Model
    return Model(mesh, model.material, supports=_support_specs(model), loads=loads or model.loads,
                 plane=model.plane, thickness=model.thickness)


# ------------------------------------------------------------------ discretization error
def quadratic_tets(mesh: Mesh) -> Mesh:
    """The tetra mesh as tetra10 (mid-edge nodes added; cells, cell sets kept; face sets gain their
    mid-edge nodes; plain node sets keep their corner nodes)."""
    if mesh.cell_type != "tetra":
        raise LightweightError(f"quadratic_tets needs a tetra mesh, got {mesh.cell_type}")
    # each edge (sorted corners) as one int64 code: a 1D unique (same order as the row-wise
    # one, several times faster), and a face edge's mid-node found by binary search instead of a
    # dict of every edge (Python tuples)
    n = np.int64(mesh.n_nodes)
    edges = np.sort(mesh.cells[:, _TET_EDGES].reshape(-1, 2), axis=1).astype(np.int64)
    edge_code, inverse = np.unique(edges[:, 0] * n + edges[:, 1], return_inverse=True)
    unique = np.column_stack([edge_code // n, edge_code % n])
    mid_ids = mesh.n_nodes + inverse.reshape(mesh.n_cells, 6)
    points = np.vstack([mesh.points, mesh.points[unique].mean(axis=1)])
    cells = np.hstack([mesh.cells, mid_ids])
    face_sets = {}
    for name, faces in mesh.face_sets.items():
        a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
        mids = [mesh.n_nodes + np.searchsorted(edge_code, np.minimum(u, v).astype(np.int64) * n + np.maximum(u, v))
                for u, v in ((a, b), (b, c), (c, a))]
        face_sets[name] = np.column_stack([faces[:, :3], *mids])
    node_sets = {k: v for k, v in mesh.node_sets.items() if k not in mesh.face_sets}
    return Mesh(points, cells, "tetra10", node_sets=node_sets, face_sets=face_sets,
                cell_sets=dict(mesh.cell_sets), source=mesh.source)


def refined_grid(mesh: Mesh) -> tuple[Mesh, np.ndarray]:
    """A structured quad/hex grid split in two along each axis, and each new cell's parent (n_new,).

    The six (four) named faces come with the new grid; other node sets keep the nodes at their
    old positions (so a per-node load keeps its total).
    """
    from .mesh.grid import structured_grid
    shape = tuple(mesh.grid)
    spacing = np.asarray(mesh.grid_spacing, dtype=float)
    fine = structured_grid(tuple(2 * n for n in shape), size=tuple(spacing * np.array(shape)),
                           origin=tuple(mesh.grid_origin))
    index = np.floor((fine.cell_centers() - np.asarray(mesh.grid_origin)) / spacing).astype(np.int64)
    parent, stride = np.zeros(fine.n_cells, dtype=np.int64), 1
    for d, n in enumerate(shape):          # grid cells are numbered x fastest
        parent += np.clip(index[:, d], 0, n - 1) * stride
        stride *= n
    from scipy.spatial import cKDTree
    tree = cKDTree(fine.points)
    for name, ids in mesh.node_sets.items():
        if name in fine.node_sets:
            continue
        _, nearest = tree.query(mesh.points[ids])
        fine.add_node_set(name, nearest)
    for name, ids in mesh.cell_sets.items():
        member = np.zeros(mesh.n_cells, dtype=bool)
        member[ids] = True
        fine.add_cell_set(name, np.flatnonzero(member[parent]))
    return fine, parent


def _per_node_loads_as_totals(model) -> dict:
    """The model's loads with per-node point loads turned into their totals (a finer set has more
    nodes on its faces: the force must stay the same, not the force per node)."""
    from .fem import PointLoad
    loads = {}
    for case, items in model.loads.items():
        loads[case] = [PointLoad(load.set, tuple(np.asarray(load.force, float) * len(model.mesh.node_set(load.set))),
                                 distribute="total")
                       if isinstance(load, PointLoad) and load.distribute == "each" else load for load in items]
    return loads


def _relative_changes(fine, coarse) -> dict:
    out = {f"compliance.{c}": fine.compliance[c] / coarse.compliance[c] - 1.0 for c in coarse.compliance}
    out["max_displacement"] = max(fine.max_displacement.values()) / max(coarse.max_displacement.values()) - 1.0
    out["max_von_mises"] = max(fine.max_von_mises.values()) / max(coarse.max_von_mises.values()) - 1.0
    return out


def design_mesh_error(result, solver: str = "auto") -> dict | None:
    """{figure: fine / coarse - 1} of the design's compliance per case, max displacement and max von
    Mises on a finer discretization of the design space (module docstring); None if it has none."""
    from .fem import solve
    from .fem.interpolation import Interpolation
    model = result.model
    mesh = model.mesh
    density = np.asarray(result.density, dtype=float)
    if mesh.cell_type == "tetra":
        fine_mesh, fine_density = quadratic_tets(mesh), density
    elif mesh.grid is not None and mesh.cell_type in ("quad", "hexahedron"):
        fine_mesh, parent = refined_grid(mesh)
        fine_density = density[parent]
    else:
        return None
    fine_model = _same_conditions(model, fine_mesh, _per_node_loads_as_totals(model))
    law = Interpolation.from_parameters(getattr(result, "parameters", None))   # the design's own law
    fine = solve(fine_model, density=fine_density, solver=solver, interpolation=law)
    out = _relative_changes(fine, result.solution)
    out["method"] = "tet4 -> tet10" if mesh.cell_type == "tetra" else "grid split in two per axis"
    return out


def part_mesh_error(part_solution, solver: str = "auto") -> dict | None:
    """{figure: tet10 / tet4 - 1} of the exported part (its own discretization error); None unless
    the part is linear tets."""
    from .fem import solve
    model = part_solution.model
    if model.mesh.cell_type != "tetra":
        return None
    fine_model = _same_conditions(model, quadratic_tets(model.mesh), _per_node_loads_as_totals(model))
    return _relative_changes(solve(fine_model, solver=solver), part_solution)


# ------------------------------------------------------------------ hot spots
# cells below this shape quality (1 = regular) are slivers: their stress is the mesh's, not the part's
SLIVER_QUALITY = 0.05


def cell_quality(mesh: Mesh) -> np.ndarray:
    """Shape quality of each cell in 0..1 (1: regular simplex or cube), (n_cells,).

    Volume over the cube of the longest corner-to-corner edge, normalized: 6 sqrt(2) V / l^3 for
    tets, V / l^3 for hexahedra, 4 A / (sqrt(3) l^2) for triangles, A / l^2 for quads.
    """
    from .mesh.cell_types import CELL_TYPES
    n_corners = CELL_TYPES[mesh.cell_type].n_corners
    corners = mesh.points[mesh.cells[:, :n_corners]]
    longest = np.zeros(mesh.n_cells)
    for i in range(n_corners):
        for j in range(i + 1, n_corners):
            longest = np.maximum(longest, np.linalg.norm(corners[:, i] - corners[:, j], axis=1))
    size = np.abs(mesh.cell_volumes())
    if mesh.dim == 3:
        scale = 6.0 * np.sqrt(2.0) if n_corners == 4 else 3.0 * np.sqrt(3.0)   # cube: diagonal sqrt(3) h
        return np.clip(scale * size / longest ** 3, 0.0, 1.0)
    scale = 4.0 / np.sqrt(3.0) if n_corners == 3 else 2.0                     # square: diagonal sqrt(2) h
    return np.clip(scale * size / longest ** 2, 0.0, 1.0)


def hot_spots(solution, n: int = 3, spacing: float | None = None, min_quality: float = 0.0) -> list[dict]:
    """The ``n`` highest-stress spots of a solution, at least ``spacing`` apart (default two mean
    cell sizes), among cells of shape quality >= ``min_quality``: [{"case", "von_mises", "point"
    (dim,), "nearest_set", "distance", "cell", "quality"}], highest first."""
    from scipy.spatial import cKDTree
    mesh = solution.model.mesh
    centres = mesh.cell_centers()
    quality = cell_quality(mesh)
    if spacing is None:
        spacing = 2.0 * float(np.mean(np.abs(mesh.cell_volumes())) ** (1.0 / mesh.dim))
    values = np.stack([solution.von_mises[c] for c in solution.von_mises])       # (cases, cells)
    worst_case = values.argmax(axis=0)
    worst = values.max(axis=0)
    order = np.argsort(np.where(quality >= min_quality, worst, -np.inf))[::-1]
    order = order[quality[order] >= min_quality]
    chosen: list[int] = []
    for cell in order[: max(50 * n, 200)]:
        if all(np.linalg.norm(centres[cell] - centres[c]) >= spacing for c in chosen):
            chosen.append(int(cell))
        if len(chosen) == n:
            break
    trees = {name: cKDTree(mesh.points[ids]) for name, ids in mesh.node_sets.items() if len(ids)}
    cases = list(solution.von_mises)
    spots = []
    for cell in chosen:
        nearest, distance = None, None
        for name, tree in trees.items():
            d, _ = tree.query(centres[cell])
            if distance is None or d < distance:
                nearest, distance = name, float(d)
        spots.append({"case": cases[worst_case[cell]], "von_mises": float(worst[cell]),
                      "point": centres[cell].copy(), "nearest_set": nearest, "distance": distance,
                      "cell": cell, "quality": float(quality[cell])})
    return spots


# ------------------------------------------------------------------ explanation and rerun
def _explain(check: ExportCheck, units: dict) -> list[str]:
    from .casefile import figure_unit
    lines = []
    missed = [row for row in check.rows if not row["pass"]]
    if not missed:
        return ["the exported part meets every requirement"]
    for row in missed:
        unit = f" {row['unit']}" if row["unit"] else ""
        if row["part"] is None:
            lines.append(f"{row['requirement']}: unknown on the part (limit {_fmt(row['limit'])}{unit})")
            continue
        lines.append(f"{row['requirement']}: the part has {_fmt(row['part'])}{unit} against the limit "
                     f"{_fmt(row['limit'])}{unit}: missed by {abs(100 * row['margin']):.1f} % "
                     f"(the design had {_fmt(row['design'])}{unit})")
        error_key = {"min_safety_factor": "max_von_mises"}.get(row["requirement"], row["requirement"])
        if check.mesh_error and error_key in check.mesh_error and row["design"]:
            change = check.mesh_error[error_key]
            # a safety factor is yield / stress: compare the stresses
            part_change = (row["design"] / row["part"] if error_key == "max_von_mises"
                           else row["part"] / row["design"]) - 1.0
            lines.append(f"  design mesh error ({check.mesh_error['method']}): the design's "
                         f"{error_key} changes by {100 * change:+.1f} % on the finer mesh; the part "
                         f"differs from the design by {100 * part_change:+.1f} %"
                         + (": most of the difference is the design mesh's discretization error"
                            if abs(change) >= 0.5 * abs(part_change) and change * part_change > 0 else ""))
            part_error = (check.part_mesh_error or {}).get(error_key)
            if part_error is not None and error_key == "max_von_mises":
                lines.append(f"  part mesh error (tet4 -> tet10): the part's {error_key} changes by "
                             f"{100 * part_error:+.1f} % (a peak stress is local: see the hot spots)")
            elif part_error is not None:
                # both on quadratic tets: what is left is the export's change of the geometry
                geometry = (1.0 + part_change) * (1.0 + part_error) / (1.0 + change) - 1.0
                lines.append(f"  part mesh error (tet4 -> tet10): the part's {error_key} changes by "
                             f"{100 * part_error:+.1f} %; with both on tet10 the part differs from the "
                             f"design by {100 * geometry:+.1f} %: that much is the exported geometry "
                             f"(surface at the volume-preserving level, thin members) rather than a mesh")
    # where the part is loaded hardest: the first place to look for a missed stiffness or strength
    stress_unit = figure_unit(units, "max_von_mises")
    stress_unit = f" {stress_unit}" if stress_unit else ""
    for spot in check.hot_spots:
        where = ", ".join(f"{x:.4g}" for x in spot["point"])
        near = (f", {spot['distance']:.3g} from set {spot['nearest_set']!r}" if spot["nearest_set"] else "")
        label = "highest in well-shaped tets" if spot.get("well_shaped") else "hot spot"
        shape = (f" in a sliver tet (quality {spot['quality']:.2g}): a meshing artefact of the export, "
                 f"not the part's stress" if spot["quality"] < SLIVER_QUALITY else "")
        lines.append(f"  {label}: von Mises {spot['von_mises']:.4g}{stress_unit} ({spot['case']}) at "
                     f"({where}){near}{shape}")
    return lines


def _tighten_and_rerun(check: ExportCheck, result, case, export_options: dict, solver: str) -> None:
    from .casefile import Case
    from .export import export_solid
    from .fem import solve
    from .optimize import minimize_compliance, minimize_mass
    if not isinstance(case, Case) or not case.optimize:
        raise LightweightError("tighten=True reruns the optimization: give the Case with its [optimize] table")
    options = dict(case.optimize)
    problem = options.pop("problem")
    model = case.model
    if problem != "min_mass":
        check.explanation.append("tighten: only min_mass runs have compliance limits to tighten; not rerun")
        return
    part_c, design_c = check.part["compliance"], check.design["compliance"]
    if "max_compliance_factor" in options:
        factor = options.pop("max_compliance_factor")
        solid = solve(model, solver=solver)
        current = {c: factor * solid.compliance[c] for c in model.load_cases}
    elif "max_compliance" in options:
        current = dict(options.pop("max_compliance"))
    else:
        check.explanation.append("tighten: the run has no compliance limit to tighten; not rerun")
        return
    targets = case.requirements.get("max_compliance", current)
    tightened = {c: min(current[c], design_c[c] * targets.get(c, current[c]) / part_c[c]) for c in current}
    options["max_compliance"] = tightened
    options.setdefault("verbose", False)
    rerun = minimize_mass(model, **options) if problem == "min_mass" else minimize_compliance(model, **options)
    source = Path(getattr(check.part_solution.model.mesh, "source", None) or "part.msh")
    path = source.with_name(source.stem + "_tightened.msh")
    part = export_solid(rerun, path, **export_options)
    check.tightened = {"max_compliance": tightened}
    check.rerun_result = rerun
    check.rerun = verify_export(rerun, part, case, tighten=False, refine=False, solver=solver)
    check.explanation.append(
        "tightened the compliance limits to " + ", ".join(f"{c} {v:.5g}" for c, v in tightened.items())
        + f" and reran: the new part {'meets' if check.rerun.passed else 'still misses'} the requirements")


__all__ = ["ExportCheck", "verify_export", "design_mesh_error", "part_mesh_error", "hot_spots", "cell_quality", "quadratic_tets",
           "refined_grid"]
