"""Pictures of designs and analyses: density, von Mises stress, deformed shape, convergence.

Approach. Results arrive in three shapes (a :class:`~lightweight.fem.results.Solution`, an
:class:`~lightweight.optimize.result.OptimizationResult`, or a file they saved), so the first
step normalizes all three into one :class:`ResultFields` record: a lightweight ``Mesh``, its
cell data (``density``, ``von_mises:<case>``...) and point data (``displacement:<case>``), the
load-case names and the metadata (provenance, parameters, history). Every picture is then
drawn from that record with pyvista/VTK, the toolkit ParaView is built on, so the pictures
look like what an engineer opens the ``.vtu`` with. Like top88, 2D designs are cells in gray
scale seen from +z with parallel projection; 3D designs show the surface where the
nodal-averaged density crosses the threshold, cut from the volume mesh by VTK's table-based
clip, so the boundary of the kept region is a closed surface that also covers the faces of
the design space (the same surface :mod:`lightweight.export` writes). Convergence plots use
matplotlib's object API with the Agg canvas, which never touches pyplot's global state or a
display.

pyvista is optional (``pip install lightweight[viz]``): it is imported inside functions, so
``import lightweight`` works without it. With a file name, rendering is off-screen through
EGL (Mesa), selected before VTK creates a window so no X server is tried.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LightweightError
from .mesh.cell_types import CELL_TYPES
from .mesh.mesh import Mesh, nodal_average

FIELDS = ("density", "von_mises", "displacement", "mode")

# meshio cell type -> VTK cell type id
VTK_CELL_TYPES = {"triangle": 5, "quad": 9, "tetra": 10, "hexahedron": 12, "tetra10": 24}

INSTALL_HINT = "install the optional picture dependencies with: pip install lightweight[viz]"


# ---------------------------------------------------------------------------------- imports
def import_pyvista(off_screen: bool = True):
    """pyvista, configured for off-screen EGL rendering when ``off_screen`` (raises with hint)."""
    if off_screen:
        # VTK reads this when it creates the first render window: EGL needs no X server.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import pyvista as pv
    except ImportError as exc:
        raise LightweightError(f"pictures and surface export need pyvista ({exc}); {INSTALL_HINT}") from None
    if off_screen:
        pv.OFF_SCREEN = True
    return pv


def _import_matplotlib_figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise LightweightError(f"convergence plots need matplotlib ({exc}); {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


# ---------------------------------------------------------------------------------- fields
@dataclass(eq=False)
class ResultFields:
    """A result's mesh, fields and metadata, whatever it came from.

    cell_data: {name: (n_cells,) or (n_cells, k)}; point_data: {name: (n_nodes, k)};
    cases: load-case names in order; metadata: JSON-decoded provenance/summary/history/...;
    thickness: out-of-plane thickness of 2D models (1.0 when unknown).
    """

    mesh: Mesh
    cell_data: dict[str, np.ndarray]
    point_data: dict[str, np.ndarray]
    cases: list[str]
    metadata: dict = field(default_factory=dict)
    model: object | None = None
    result: object | None = None
    source: str | None = None
    thickness: float = 1.0

    @property
    def density(self) -> np.ndarray:
        """Cell densities (n_cells,); ones for a solid part without a density field."""
        rho = self.cell_data.get("density")
        return np.ones(self.mesh.n_cells) if rho is None else np.asarray(rho, dtype=float).ravel()

    @property
    def history(self) -> list[dict]:
        return list(self.metadata.get("history") or [])

    def available_fields(self) -> list[str]:
        """Field names ``plot`` accepts for this result."""
        out = ["density"]
        if any(k.startswith("von_mises:") for k in self.cell_data):
            out.append("von_mises")
        if any(k.startswith("displacement:") for k in self.point_data):
            out.append("displacement")
        if any(k.startswith("mode_") for k in self.point_data):
            out.append("mode")
        return out

    def case_field(self, kind: str, case: str | None, where: dict) -> tuple[str, np.ndarray]:
        """(case, array) of ``<kind>:<case>``; case None -> the first load case."""
        cases = [k.split(":", 1)[1] for k in where if k.startswith(kind + ":")]
        if not cases:
            raise LightweightError(f"{self._what()} has no {kind!r} field; available fields: "
                                   f"{', '.join(self.available_fields())}")
        if case is None:
            ordered = [c for c in self.cases if c in cases] or cases
            case = ordered[0]
        if f"{kind}:{case}" not in where:
            raise LightweightError(f"{self._what()} has no load case {case!r} for {kind!r}; "
                                   f"load cases: {', '.join(repr(c) for c in cases)}")
        return case, np.asarray(where[f"{kind}:{case}"], dtype=float)

    def _what(self) -> str:
        return f"result {self.source}" if self.source else "the result"


def _decode_metadata(meta: dict) -> dict:
    out = {}
    for key, value in (meta or {}).items():
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def _is_optimization_result(obj) -> bool:
    return hasattr(obj, "design_variables") and hasattr(obj, "history") and hasattr(obj, "model")


def _is_solution(obj) -> bool:
    return hasattr(obj, "displacement") and hasattr(obj, "von_mises") and hasattr(obj, "model")


def load_fields(result, thickness: float | None = None) -> ResultFields:
    """Normalize a Solution, an OptimizationResult, a ResultFields or a saved file path."""
    if isinstance(result, ResultFields):
        return result
    if _is_optimization_result(result):
        model = result.model
        cell_data, point_data = {}, {}
        sol = getattr(result, "solution", None)
        if sol is not None:
            cell_data.update(sol.cell_data())
            point_data.update(sol.point_data())
        cell_data["density"] = np.asarray(result.density, dtype=float)
        meta = {"provenance": dict(result.provenance or {}), "parameters": dict(result.parameters or {}),
                "summary": result.summary(), "history": list(result.history or []),
                "model": _describe(model)}
        if sol is not None:
            meta["solution_summary"] = _jsonable(sol.summary())
        return ResultFields(model.mesh, cell_data, point_data, list(model.load_cases), meta, model,
                            result, None, thickness or getattr(model, "thickness", 1.0))
    if _is_solution(result):
        model = result.model
        meta = {"provenance": dict(result.provenance or {}), "summary": _jsonable(result.summary()),
                "model": _describe(model)}
        return ResultFields(model.mesh, result.cell_data(), result.point_data(), list(model.load_cases),
                            meta, model, result, None, thickness or getattr(model, "thickness", 1.0))
    if hasattr(result, "shapes") and hasattr(result, "frequencies") and hasattr(result, "model"):
        model = result.model      # lw.modes' Modes: each shape as point data mode_<k>
        rho = np.ones(model.mesh.n_cells) if result.density is None else np.asarray(result.density, float)
        point_data = {f"mode_{k + 1}": shape for k, shape in enumerate(result.shapes)}
        meta = {"provenance": dict(result.provenance or {}), "summary": _jsonable(result.summary())}
        return ResultFields(model.mesh, {"density": rho}, point_data, [], meta, model, result, None,
                            thickness or getattr(model, "thickness", 1.0))
    if isinstance(result, (str, os.PathLike)):
        return _load_file(Path(result), thickness)
    raise LightweightError(f"expected a Solution, an OptimizationResult or a path to a saved result "
                           f"(.vtu/.xdmf), got {type(result).__name__}")


def _describe(model) -> dict:
    try:
        return _jsonable(model.describe())
    except Exception:  # a model without describe() still gets pictures
        return {}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _load_file(path: Path, thickness: float | None) -> ResultFields:
    import meshio
    if not path.exists():
        raise LightweightError(f"result file {path} does not exist")
    try:
        m = meshio.read(path)
    except Exception as exc:
        raise LightweightError(f"cannot read result file {path}: {exc}") from None
    solid_dims = {name: CELL_TYPES[name].dim for name in VTK_CELL_TYPES if name in CELL_TYPES}
    blocks = [i for i, b in enumerate(m.cells) if b.type in solid_dims]
    if not blocks:
        raise LightweightError(f"result file {path} has no solid cells "
                               f"({', '.join(VTK_CELL_TYPES)}); found {[b.type for b in m.cells]}")
    top = max(solid_dims[m.cells[i].type] for i in blocks)
    blocks = [i for i in blocks if solid_dims[m.cells[i].type] == top]
    types = {m.cells[i].type for i in blocks}
    if len(types) > 1:
        raise LightweightError(f"result file {path} mixes cell types {sorted(types)}; "
                               f"lightweight results have one solid cell type")
    cell_type = types.pop()
    cells = np.concatenate([m.cells[i].data for i in blocks])
    points = np.asarray(m.points, dtype=float)
    if top == 2 and points.shape[1] == 3:
        points = points[:, :2]
    mesh = Mesh(points, cells, cell_type, source=str(path))
    cell_data = {}
    for name, arrays in m.cell_data.items():
        try:
            cell_data[name] = np.concatenate([np.asarray(arrays[i]) for i in blocks])
        except (IndexError, ValueError):
            continue
    point_data = {name: np.asarray(v) for name, v in m.point_data.items()}
    for name, v in list(point_data.items()):
        if name.startswith("displacement:") and v.ndim == 2 and v.shape[1] == 3 and top == 2:
            point_data[name] = v[:, :2]
    meta = {}
    try:
        from .mesh.io import read_metadata
        meta = _decode_metadata(read_metadata(path))
    except Exception:  # files written by other tools carry no metadata; pictures still work
        meta = {}
    cases = []
    for name in list(point_data) + list(cell_data):
        if ":" in name:
            case = name.split(":", 1)[1]
            if case not in cases:
                cases.append(case)
    if thickness is None:
        thickness = float((meta.get("model") or {}).get("thickness") or
                          (meta.get("parameters") or {}).get("thickness") or 1.0)
    return ResultFields(mesh, cell_data, point_data, cases, meta, None, None, str(path), thickness)


# ---------------------------------------------------------------------------------- geometry
def to_pyvista(mesh: Mesh):
    """The mesh as a pyvista UnstructuredGrid (points padded to 3D, VTK node order)."""
    pv = import_pyvista()
    points = mesh.points
    if points.shape[1] == 2:
        points = np.column_stack([points, np.zeros(len(points))])
    return pv.UnstructuredGrid({VTK_CELL_TYPES[mesh.cell_type]: mesh.cells}, points)


def cell_measures(fields: ResultFields) -> np.ndarray:
    """Volume of each cell (n_cells,): 3D volume, or area times thickness in 2D."""
    v = fields.mesh.cell_volumes()
    return v * (fields.thickness if fields.mesh.dim == 2 else 1.0)


def material_region(fields: ResultFields, threshold: float, nodal=None):
    """Part of the mesh where the nodal-averaged density is >= threshold (pyvista grid).

    Cells are cut along the iso-surface by VTK's table-based clip, so the region's boundary
    is the iso-surface plus the design-space faces inside the material.
    """
    grid = to_pyvista(fields.mesh)
    grid.point_data["density"] = nodal_average(fields.mesh, fields.density) if nodal is None else nodal
    return grid.clip_scalar(scalars="density", value=float(threshold), invert=False)


def _material_cells(grid, fields: ResultFields, threshold: float):
    """Cells whose own density is >= threshold (the picture of where material is)."""
    rho = fields.density
    keep = rho >= min(threshold, rho.max())
    return grid.extract_cells(np.flatnonzero(keep))


# ---------------------------------------------------------------------------------- plot
def plot(result, field: str = "density", filename=None, threshold: float = 0.5, case: str | None = None,
         deformation_scale: float | None = None, window_size=(1024, 768), show_edges: bool = False,
         cmap: str | None = None, background: str = "white", title: str | None = None,
         off_screen: bool | None = None, mode: int = 1):
    """Picture of a design or analysis: ``field`` = "density" | "von_mises" | "displacement" | "mode".

    result: Solution, OptimizationResult, Modes (``lw.modes``; field "mode" draws shape
    ``mode``, counted from 1) or path to a saved .vtu/.xdmf. threshold: density
    above which material is drawn (3D iso-surface level; cells shown for stress/displacement).
    case: load case (default: the first). deformation_scale: displacement magnification
    (default: largest displacement drawn as 10 % of the bounding-box diagonal).
    filename: image to write (off-screen); None opens an interactive window.
    Returns the rendered image (height, width, 3) uint8 when written off-screen, else None.
    """
    fields = load_fields(result)
    if field not in FIELDS or field not in fields.available_fields():
        raise LightweightError(f"unknown or missing field {field!r} for {fields._what()}; "
                               f"available fields: {', '.join(fields.available_fields())}")
    if field == "mode":   # a mode shape is drawn like a displacement field
        fields, case = _mode_as_displacement(fields, mode)
        field = "displacement"
    off = filename is not None if off_screen is None else bool(off_screen)
    pv = import_pyvista(off_screen=off)
    plotter = pv.Plotter(off_screen=off, window_size=tuple(int(w) for w in window_size))
    try:
        draw(plotter, fields, field, threshold=threshold, case=case, deformation_scale=deformation_scale,
             show_edges=show_edges, cmap=cmap, background=background, title=title)
        if off:
            image = plotter.screenshot(None if filename is None else str(filename), return_img=True)
            return image
        plotter.show()
        return None
    finally:
        plotter.close()


def _mode_as_displacement(fields: ResultFields, mode: int) -> tuple[ResultFields, str]:
    """(fields with mode shape ``mode`` (from 1) as displacement point data, its case label)."""
    key = f"mode_{int(mode)}"
    if key not in fields.point_data:
        n = sum(k.startswith("mode_") for k in fields.point_data)
        raise LightweightError(f"{fields._what()} has no mode {mode!r}; modes 1..{n}")
    frequencies = (fields.metadata.get("summary") or {}).get("frequencies") or []
    label = f"mode {int(mode)}" + (f", {frequencies[int(mode) - 1]:.4g} Hz" if len(frequencies) >= int(mode) else "")
    shape = np.asarray(fields.point_data[key], dtype=float)
    if fields.mesh.dim == 2 and shape.ndim == 2 and shape.shape[1] == 3:
        shape = shape[:, :2]
    return (ResultFields(fields.mesh, {"density": fields.density}, {f"displacement:{label}": shape}, [label],
                         fields.metadata, fields.model, fields.result, fields.source, fields.thickness), label)


def draw(plotter, fields: ResultFields, field: str, threshold: float = 0.5, case: str | None = None,
         deformation_scale: float | None = None, show_edges: bool = False, cmap: str | None = None,
         background: str = "white", title: str | None = None, reset_camera: bool = True) -> None:
    """Add the actors of one picture to a pyvista Plotter (see :func:`plot`)."""
    dim = fields.mesh.dim
    plotter.set_background(background)
    text_color = "black" if background in ("white", "w", "#ffffff") else "white"
    grid = to_pyvista(fields.mesh)
    # 2D pictures are wide and leave room below; 3D ones get the bar at the right edge.
    place = (dict(vertical=False, position_x=0.25, position_y=0.04, width=0.5, height=0.06) if dim == 2
             else dict(vertical=True, position_x=0.8, position_y=0.2, width=0.06, height=0.6))
    bar = dict(color=text_color, fmt="%.3g", title_font_size=14, label_font_size=13, **place)
    if field == "density":
        rho = fields.density
        if dim == 2:
            grid.cell_data["density"] = rho
            plotter.add_mesh(grid, scalars="density", cmap=cmap or "gray_r", clim=(0.0, 1.0),
                             show_edges=show_edges, show_scalar_bar=False, lighting=False)
            plotter.add_mesh(grid.extract_feature_edges(boundary_edges=True, feature_edges=False,
                                                        manifold_edges=False, non_manifold_edges=False),
                             color="lightgray", line_width=1)
        else:
            if float(rho.max()) < threshold:
                raise LightweightError(f"no material to draw: every density is below the threshold "
                                       f"{threshold} (max {rho.max():.3g}); lower threshold=")
            region = material_region(fields, threshold)
            surface = region.extract_surface(algorithm="dataset_surface").triangulate().clean()
            if surface.n_points > 0:
                surface = surface.smooth_taubin(n_iter=10, pass_band=0.1)
            plotter.add_mesh(surface, color=cmap or "#c8a165", smooth_shading=True, show_edges=show_edges,
                             specular=0.3)
            plotter.add_mesh(grid.outline(), color="gray", line_width=1)
    elif field == "von_mises":
        case, vm = fields.case_field("von_mises", case, fields.cell_data)
        grid.cell_data["von Mises stress"] = vm
        shown = _material_cells(grid, fields, threshold)
        plotter.add_mesh(shown, scalars="von Mises stress", cmap=cmap or "viridis", show_edges=show_edges,
                         scalar_bar_args=dict(title=f"von Mises stress ({case})", **bar),
                         lighting=dim == 3)
        plotter.add_mesh(grid.outline() if dim == 3 else _outline_2d(grid), color="gray", line_width=1)
    elif field == "displacement":
        case, u = fields.case_field("displacement", case, fields.point_data)
        if u.ndim == 1:
            u = u.reshape(fields.mesh.n_nodes, -1)
        u3 = np.column_stack([u, np.zeros((len(u), 3 - u.shape[1]))]) if u.shape[1] < 3 else u[:, :3]
        magnitude = np.linalg.norm(u3, axis=1)
        if deformation_scale is None:
            lo, hi = fields.mesh.bounding_box()
            diagonal = float(np.linalg.norm(hi - lo))
            deformation_scale = 0.1 * diagonal / magnitude.max() if magnitude.max() > 0 else 1.0
        undeformed = _material_cells(grid, fields, threshold)
        grid.point_data["displacement magnitude"] = magnitude
        warped = grid.copy()
        warped.points = grid.points + deformation_scale * u3
        shown = _material_cells(warped, fields, threshold)
        if dim == 2:
            outline = undeformed.extract_feature_edges(boundary_edges=True, feature_edges=False,
                                                       manifold_edges=False, non_manifold_edges=False)
        else:
            outline = undeformed.extract_surface(algorithm="dataset_surface").extract_feature_edges(
                feature_angle=60, boundary_edges=True, feature_edges=True, manifold_edges=False,
                non_manifold_edges=False)
        if outline.n_points:
            plotter.add_mesh(outline, color="gray", line_width=1)
        plotter.add_mesh(shown, scalars="displacement magnitude", cmap=cmap or "plasma",
                         show_edges=show_edges, lighting=dim == 3,
                         scalar_bar_args=dict(title=f"displacement ({case})", **bar))
        plotter.add_text(f"deformation scale x{deformation_scale:.3g}", position="lower_left", font_size=9,
                         color=text_color)
    if title:
        plotter.add_text(title, font_size=12, color=text_color)
    if reset_camera:
        set_camera(plotter, dim)


def _outline_2d(grid):
    return grid.extract_feature_edges(boundary_edges=True, feature_edges=False, manifold_edges=False,
                                      non_manifold_edges=False)


def set_camera(plotter, dim: int) -> None:
    """2D: view from +z with parallel projection; 3D: isometric view of the whole scene."""
    if dim == 2:
        plotter.view_xy()
        plotter.enable_parallel_projection()
        plotter.reset_camera()
        # Fit the bounds (not their bounding sphere) to the window, with room for a bar below.
        x0, x1, y0, y1 = plotter.bounds[:4]
        width, height = plotter.window_size
        half_height = max((y1 - y0) / 2, (x1 - x0) / 2 * height / width)
        plotter.camera.parallel_scale = 1.25 * half_height
    else:
        plotter.view_isometric()
        plotter.reset_camera()


# ---------------------------------------------------------------------------------- convergence
def _history_of(result_or_history) -> list[dict]:
    if isinstance(result_or_history, (list, tuple)):
        return list(result_or_history)
    if isinstance(result_or_history, ResultFields):
        return result_or_history.history
    if hasattr(result_or_history, "history"):
        return list(result_or_history.history)
    if isinstance(result_or_history, (str, os.PathLike)):
        return load_fields(result_or_history).history
    raise LightweightError(f"convergence_plot needs an OptimizationResult, a history list or a saved "
                           f"result path, got {type(result_or_history).__name__}")


def convergence_plot(result_or_history, filename, title: str | None = None, dpi: int = 100) -> Path:
    """PNG of objective, constraints and volume fraction against iteration; returns the path.

    result_or_history: OptimizationResult, its ``history`` (list of dicts with ``iteration``,
    ``objective``, ``constraints`` (list), ``volume_fraction``...) or a saved result path.
    """
    history = _history_of(result_or_history)
    if not history:
        raise LightweightError("no optimization history to plot: the result has no iteration records "
                               "(a Solution or a file saved without history)")
    Figure, FigureCanvasAgg = _import_matplotlib_figure()
    iterations = np.array([rec.get("iteration", i) for i, rec in enumerate(history)], dtype=float)
    objective = np.array([rec.get("objective", np.nan) for rec in history], dtype=float)
    volume = np.array([rec.get("volume_fraction", np.nan) for rec in history], dtype=float)
    n_con = max((len(rec.get("constraints") or []) for rec in history), default=0)
    constraints = np.full((len(history), n_con), np.nan)
    for i, rec in enumerate(history):
        cons = list(rec.get("constraints") or [])
        constraints[i, :len(cons)] = cons
    panels = 2 + (n_con > 0)
    fig = Figure(figsize=(7.0, 2.1 * panels + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True)
    ax = axes[0]
    ax.plot(iterations, objective, color="C0", lw=1.5)
    ax.set_ylabel("objective")
    finite = objective[np.isfinite(objective)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    row = 1
    if n_con:
        ax = axes[row]
        for j in range(n_con):
            ax.plot(iterations, constraints[:, j], lw=1.2, label=f"g{j + 1}")
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("constraints (≤ 0)")
        if n_con > 1:
            ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        row += 1
    ax = axes[row]
    ax.plot(iterations, volume, color="C2", lw=1.5)
    ax.set_ylabel("volume fraction")
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(filename)
    fig.savefig(path, dpi=dpi)
    return path


# ---------------------------------------------------------------------------------- snapshots
class SnapshotWriter:
    """Optimizer callback writing the density every ``every`` iterations as an XDMF time series.

    ``writer(state)`` (an object with ``iteration`` and ``density`` (n_cells,)) or
    ``writer(iteration, density)``. Each ``every``-th iteration (iteration % every == 0) is a
    time step (time = iteration) of cell data ``density`` in ``path_xdmf`` (+ its ``.h5``);
    on :meth:`close` the last seen state is added if it was not written, and with ``gif`` an
    animated GIF of the written frames is rendered off-screen. Usable as a context manager.
    mesh: a lightweight Mesh (or anything with ``.mesh``).
    """

    def __init__(self, path_xdmf, mesh, every: int = 1, gif=None, threshold: float = 0.5,
                 window_size=(480, 360), frame_seconds: float = 0.15):
        import meshio
        mesh = getattr(mesh, "mesh", mesh)
        if not isinstance(mesh, Mesh):
            raise LightweightError(f"SnapshotWriter needs a lightweight Mesh, got {type(mesh).__name__}")
        if int(every) < 1:
            raise LightweightError(f"SnapshotWriter every= must be a positive integer, got {every}")
        self.path = Path(path_xdmf)
        if self.path.suffix.lower() != ".xdmf":
            raise LightweightError(f"SnapshotWriter writes XDMF: give a path ending in .xdmf, got {self.path}")
        self.mesh = mesh
        self.every = int(every)
        self.gif = None if gif is None else Path(gif)
        self.threshold = threshold
        self.window_size = window_size
        self.frame_seconds = frame_seconds
        self.iterations: list[int] = []
        self._frames: list[np.ndarray] = []    # densities of written steps, rendered on close
        self._last: tuple[int, np.ndarray] | None = None
        self.path = self.path.resolve()
        self._writer = meshio.xdmf.TimeSeriesWriter(str(self.path))
        # meshio opens the .h5 by bare name in the working directory while the .xdmf refers
        # to it relative to itself: open it from the .xdmf's directory so the pair matches.
        cwd = os.getcwd()
        os.chdir(self.path.parent)
        try:
            self._writer.__enter__()
        finally:
            os.chdir(cwd)
        self._writer.write_points_cells(mesh.points, [(mesh.cell_type, mesh.cells)])
        self._closed = False

    def __call__(self, state, density=None) -> None:
        if density is None:
            iteration, density = state.iteration, state.density
        else:
            iteration = state
        iteration = int(iteration)
        rho = np.array(density, dtype=float).ravel()
        if rho.shape != (self.mesh.n_cells,):
            raise LightweightError(f"snapshot density must have one value per cell ({self.mesh.n_cells}), "
                                   f"got {rho.shape}")
        self._last = (iteration, rho)
        if iteration % self.every == 0:
            self._write(iteration, rho)

    def _write(self, iteration: int, rho: np.ndarray) -> None:
        if self._closed:
            raise LightweightError(f"SnapshotWriter for {self.path} is closed")
        self._writer.write_data(float(iteration), cell_data={"density": [rho]})
        self.iterations.append(iteration)
        if self.gif is not None:
            self._frames.append(rho)

    def close(self) -> None:
        """Write the last state if missing, finish the XDMF file and render the GIF."""
        if self._closed:
            return
        if self._last is not None and (not self.iterations or self.iterations[-1] != self._last[0]):
            self._write(*self._last)
        self._writer.__exit__(None, None, None)
        self._closed = True
        if self.gif is not None and self._frames:
            self._write_gif()

    def _write_gif(self) -> None:
        try:
            import imageio.v3 as iio
        except ImportError as exc:
            raise LightweightError(f"GIF snapshots need imageio ({exc}); {INSTALL_HINT}") from None
        pv = import_pyvista(off_screen=True)
        plotter = pv.Plotter(off_screen=True, window_size=tuple(self.window_size))
        images = []
        try:
            for k, (iteration, rho) in enumerate(zip(self.iterations, self._frames)):
                fields = ResultFields(self.mesh, {"density": rho}, {}, [])
                plotter.clear_actors()
                try:
                    draw(plotter, fields, "density", threshold=self.threshold, reset_camera=(k == 0),
                         title=f"iteration {iteration}")
                except LightweightError:    # an early iterate with nothing above the threshold
                    plotter.clear_actors()
                    plotter.add_text(f"iteration {iteration}", font_size=12, color="black")
                images.append(plotter.screenshot(None, return_img=True))
        finally:
            plotter.close()
        iio.imwrite(self.gif, np.stack(images), duration=int(1000 * self.frame_seconds), loop=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def snapshot_writer(path_xdmf, mesh, every: int = 1, gif=None, **options) -> SnapshotWriter:
    """A :class:`SnapshotWriter` (functional spelling for ``callback=``)."""
    return SnapshotWriter(path_xdmf, mesh, every=every, gif=gif, **options)
