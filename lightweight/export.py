"""A part you can manufacture: closed, smooth surfaces and tet meshes of an optimized design.

Approach. A SIMP design is a cell field; a part is a closed surface. For a gray design the surface is
the level set of the density averaged to the nodes (volume-weighted), which is continuous, so its
iso-surface is smooth where the cell field is not. Instead of contouring and then closing the
holes where material meets the edge of the design space (padding, clipping and capping, as
marching-cubes pipelines do), the volume mesh itself is clipped at the level with VTK's
table-based clip: the boundary of the kept volume is the iso-surface plus the pieces of the
design-space faces inside the material, closed by construction on any cell type (grids,
unstructured tets). Its volume is the sum of the clipped cells' volumes, which is cheap and
exact, so ``threshold=None`` finds the level by bisection that makes the part's volume equal
the design's material volume sum(v_e rho_e) (the volume-preserving choice). The surface is
then smoothed with Taubin's lambda/mu (VTK windowed-sinc) filter, which removes the
marching-cubes facets without the shrinkage of Laplacian smoothing; the volume is then
re-matched by a secant step on the level. 2D designs are cut the same way and extruded by
their thickness into a solid.

Which level field (``level_field``, default ``"auto"``). A crisp design (the cells with densities
between 0.05 and 0.95 hold less than 10 % of its material volume: ``auto_level_field``) is
exported as the surface of its solid cells (``"solid_cells"``): the cells at or above the
volume-preserving threshold of the cell densities (densest first until their volume is nearest
sum(v_e rho_e), the post-processing threshold of Sigmund's top88/Xu et al.'s volume-preserving
Heaviside), smoothed like the iso-surface. Where two solid cells meet only along an edge (a
corner in 2D) the boundary is not a manifold and no mesher takes it, so the densest void cell
around each such edge is added until none is left (:func:`manifold_closure`). A gray design keeps
the nodal average (``"nodes"``): there a transition band places the boundary between cells, which
the average interpolates (a voxel sphere's solid cells, smoothed, lie 0.75 cells off the radius,
the nodal iso-surface within 0.35).

Why the solid cells for a crisp design, measured on the sample bracket's frequency design
(examples/bracket_frequency.py: min mass, Heaviside projection, 98 % of cells crisp, members one or
two tets thick). Every node of a thin crisp member lies on its surface and averages solid with
void cells (0.25-0.5), so the nodal iso-surface cuts the member thin or in two, and the
volume-preserving level then puts the volume into the thick regions: that part rang at 1125 Hz
against the design's 1242 (tet4, -9.4 %; tet10 997 against the solid cells' 1028, -3.0 %) and was
66 % more compliant (tet10 111.4 against 67.1). The clipped volume alone (no smoothing, no Gmsh)
already had compliance 89.0 against 62.3: the averaging, not the smoothing or Gmsh, is the cause.
Three ways were tried. ``"cells"`` contours the cell densities on the design mesh subdivided
around each cell's and face's centre (:func:`subdivided_density_grid`); it keeps the members
(clipped volume: compliance 71.3, tet4) but its surface has six times the triangles (58k against
9.7k) with 5 % of the edges under 1.5 % of an element, and Gmsh never finished with it: its patch
classification loops on the tiny faces, and the fill of the triangles as they are, vertex
merging, quadric or topology-preserving decimation and MeshFix each left it unfinished or with
overlapping facets. The maximum of the adjacent cells at the nodes keeps every member but fills
every void cell whose corners all touch solid ones (+27 % volume at level 0.999). The solid
cells' own faces are as coarse as the nodal surface: with the closure (260 edges, 285 tets, +6.6 %
volume) Gmsh meshes the smoothed surface (its remesh declines the topology, the triangles are
filled as they are: 9.2k tets, 24-40 s), or, when it runs out of time, the fallback is the closed
solid cells themselves (6.6k tets). Part against design: f1 1214 Hz (Gmsh) or 1234 Hz (fallback)
against 1242 (tet4, -2.3 % / -0.6 %); tet10 1049 Hz against the solid cells' 1028 (+2.1 %);
compliance (tet10) 60.0-60.4 against 67.1 (the closure's cells stiffen the joints). The closure's
volume is not taken back by a higher threshold: on the bracket that dropped every boundary cell
below density 0.998, and Gmsh could not mesh the result. Tested by
tests/test_frequency_export.py (this bracket) and tests/test_export_fidelity.py (a cantilever two
cells thick with ``"cells"``: compliance +2.6 % against Timoshenko, +11 % with the nodal average).

The closed surface becomes a tetrahedral mesh through Gmsh (the maintained mesher with a
Python wheel): the STL is classified into patches, re-parametrized and remeshed at the
requested size, then filled with tets. Gmsh runs in a child process with a time limit: on the
optimized sample bracket (thin, self-touching members after smoothing) it raised a PLC error
for one smoothing and never returned for another (the smoothed thin members touch). When it
raises, the surface smoothed less (a quarter of the passes, then none) is remeshed instead;
when that fails too, MeshFix (pymeshfix, a maintained wrapper of Attene's repair code) removes the
self-intersections and Gmsh fills the repaired triangles without re-parametrizing them; a
repair that changes the volume by more than 1 % is not used. Failing that, the solid is the
clipped volume itself, split into tetrahedra: exact to the (unsmoothed) level set and always
valid, only less regular than a remeshed one. Flat or inverted tets of either are cleaned.

Big parts. Above 20 000 surface triangles (``REMESH_MAX_TRIANGLES``) Gmsh's re-parametrization
failed or looped on every design measured (422k- and 550k-tet bracket designs: "wrong topology",
or millions of partitioning retries until the time limit), so by default (``remesh=None``) such
surfaces are filled with tets as they are. On two or more cores their smoothings (20, 5, 0
passes) are meshed side by side, one child each, and the smoothest that meshes is kept, the same
choice as trying them in turn: a 550k-tet design went from 125 s (every attempt timed out, the
part was the clipped volume) to 20 s. A child that uses no CPU time for ``GMSH_IDLE_SECONDS`` is
taken as hung and stopped. The child runs :mod:`lightweight.gmsh_worker` as a file, importing only
NumPy and Gmsh.

Named sets travel with the part, so ``lightweight evaluate CASE.toml part.msh`` reads it with the
same case file: they are found geometrically on the new surface (the design's mesh is gone, its
geometry is not). A face set becomes the boundary triangles of the part whose corners and centre
lie within ``set_tolerance`` (default 0.1 design element) of the set's faces (exact point-to-
triangle distances to the k nearest faces): the cut faces of the part stay on the design-space
faces they came from, so the supports and loads land on the same surfaces. A plain node set
becomes the part's boundary node nearest to each of its nodes (within one design element), so
a per-node point load keeps its total; a cell set (non-design
regions) the tets whose centre is nearest to one of its cells. They are written as Gmsh physical
groups. The default tet size is the design's mean edge length, so a part has about as many tets
as the design has solid cells (it was half the design element, 10x the tets: 503k tets and 147 s
of evaluation for a 50k-tet design); pass ``mesh_size`` to refine, or let :mod:`lightweight.verify`
estimate the mesh error. :func:`evaluate_exported` uses the carried sets (and maps any missing
one by distance), so the exported part is judged by the same requirements as its design.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import gmsh_worker
from .errors import LightweightError
from .gmsh_worker import (NETGEN_OPTIMIZE_MAX_TRIANGLES, _fill_volume, _gmsh_child,  # noqa: F401 - export's names
                          _gmsh_tetrahedralize)
from .mesh.mesh import Mesh
from .viz import ResultFields, cell_measures, import_pyvista, load_fields, nodal_average, to_pyvista

SURFACE_FORMATS = (".stl", ".ply", ".obj", ".vtp", ".vtk")


@dataclass(eq=False)
class SurfaceExport:
    """An exported closed surface and the numbers that describe it.

    volume: enclosed volume of the written (smoothed) surface; design_volume: sum(v_e rho_e)
    of the design (user units^3; 2D: area * thickness); threshold: level of the level field
    (a cell density for "solid_cells", the nodal density for "nodes").
    """

    path: Path | None
    surface: object = field(repr=False)    # pyvista.PolyData, closed triangle surface
    threshold: float
    volume: float
    design_volume: float
    n_triangles: int


# ---------------------------------------------------------------------------------- levels
def subdivided_density_grid(mesh: Mesh, density: np.ndarray):
    """The design mesh split into simplices around its cell and face centres, with a density at
    every corner: (pyvista UnstructuredGrid with point array "density", the same values (n_points,)).

    Corners carry the volume-weighted nodal average, face centres the mean of the (one or two)
    cells sharing the face, cell centres the cell's own density. Each cell becomes one tet per
    (face edge) x (face centre, cell centre) in 3D (12 per tet, 24 per hexahedron) and one
    triangle per half edge in 2D, so the pieces conform across faces (a quad face is split at its
    centre, which both neighbours share). Why: on the corner average alone, a crisp member one or
    two cells thick has every node on its boundary, nodal values below 0.5, and its iso-surface
    cuts it thin or in two (module docstring); here the level passes between the cell centres of
    solid and void cells, and face-connected solid cells stay connected through their face centre.
    """
    from .mesh.cell_types import CELL_TYPES
    pv = import_pyvista(off_screen=True)
    density = np.asarray(density, dtype=float)
    kind = CELL_TYPES[mesh.cell_type]
    corners = mesh.cells[:, :kind.n_corners]
    local = np.array([face[:CELL_TYPES[kind.face_type].n_corners if mesh.dim == 3 else 2]
                      for face in kind.faces])                       # (faces per cell, face corners)
    faces = corners[:, local]                                        # (cells, faces, face corners)
    n_cells, n_faces, n_face_corners = faces.shape
    _, face_id = np.unique(np.sort(faces.reshape(-1, n_face_corners), axis=1), axis=0, return_inverse=True)
    face_id = face_id.reshape(n_cells, n_faces)
    n_unique = int(face_id.max()) + 1
    owners = np.bincount(face_id.ravel(), minlength=n_unique)
    face_value = np.bincount(face_id.ravel(), weights=np.repeat(density, n_faces), minlength=n_unique) / owners
    face_centre = np.zeros((n_unique, mesh.dim))
    np.add.at(face_centre, face_id.ravel(), mesh.points[faces].mean(axis=2).reshape(-1, mesh.dim))
    face_centre /= owners[:, None]
    points = np.vstack([mesh.points, face_centre, mesh.points[corners].mean(axis=1)])
    if mesh.dim == 2:
        points = np.column_stack([points, np.zeros(len(points))])
    values = np.concatenate([nodal_average(mesh, density), face_value, density])
    face_node = mesh.n_nodes + face_id                               # (cells, faces)
    cell_node = mesh.n_nodes + n_unique + np.arange(n_cells)
    pieces = []
    for f in range(n_faces):
        if mesh.dim == 2:      # the edge (a, b) with its centre m: triangles (a, m, c), (m, b, c)
            a, b = faces[:, f, 0], faces[:, f, 1]
            pieces += [np.column_stack([a, face_node[:, f], cell_node]),
                       np.column_stack([face_node[:, f], b, cell_node])]
            continue
        for i in range(n_face_corners):
            a, b = faces[:, f, i], faces[:, f, (i + 1) % n_face_corners]
            pieces.append(np.column_stack([a, b, face_node[:, f], cell_node]))
    simplices = np.concatenate(pieces)
    grid = pv.UnstructuredGrid({10 if mesh.dim == 3 else 5: simplices}, points)
    grid.point_data["density"] = values
    return grid, values


CRISP_GRAY_SHARE = 0.1


def auto_level_field(fields: ResultFields) -> str:
    """The level field ``level_field="auto"`` picks: "solid_cells" for a crisp design (the volume
    of cells with density between 0.05 and 0.95 under ``CRISP_GRAY_SHARE`` of the material
    volume), "nodes" otherwise (module docstring: a gray transition band places the boundary
    between cells, which the nodal average interpolates; a crisp design's boundary is a cell face,
    which averaging moves into its thin members)."""
    density = np.asarray(fields.density, dtype=float)
    measures = np.asarray(cell_measures(fields), dtype=float)
    material = float(measures @ density)
    gray = float(measures[(density > 0.05) & (density < 0.95)].sum())
    return "solid_cells" if material > 0 and gray < CRISP_GRAY_SHARE * material else "nodes"


def manifold_closure(mesh: Mesh, solid: np.ndarray, density: np.ndarray, max_rounds: int = 50) -> np.ndarray:
    """The cells (n_cells,) bool of ``solid`` plus the fewest void cells, densest first, that make
    the boundary of the solid cells a manifold.

    Where two solid cells meet only along an edge (3D) or at a corner (2D), four boundary faces
    share that edge (four boundary edges that corner) and no mesher can take the surface. Each
    round adds, for every such edge or corner, the densest void cell around it, until none is
    left (a void sector of several cells takes several rounds). Measured on the sample bracket's
    frequency design (crisp, 6274 solid tets): 260 such edges, 285 tets added in three rounds,
    +6.6 % volume.
    """
    from .mesh.cell_types import CELL_TYPES
    kind = CELL_TYPES[mesh.cell_type]
    solid = np.array(solid, dtype=bool)
    density = np.asarray(density, dtype=float)
    n_facet = CELL_TYPES[kind.face_type].n_corners if mesh.dim == 3 else 2
    local = np.array([face[:n_facet] for face in kind.faces])             # (facets per cell, corners)
    if mesh.dim == 3:                 # ridges: the edges of each facet, (cell, facet, edge, 2)
        ridge_local = np.stack([local, np.roll(local, -1, axis=1)], axis=-1)
    else:                             # ridges: the corners of each edge, (cell, facet, corner, 1)
        ridge_local = local[..., None]
    cell_ridges = np.sort(mesh.cells[:, ridge_local], axis=-1)               # (n_cells, f, r, k)
    n_cells = mesh.n_cells
    ridge_ids, ridge_index = np.unique(cell_ridges.reshape(-1, cell_ridges.shape[-1]), axis=0, return_inverse=True)
    ridge_index = ridge_index.reshape(n_cells, -1)                            # (n_cells, f * r)
    facets = np.sort(mesh.cells[:, local], axis=-1).reshape(n_cells * len(local), n_facet)
    _, facet_index, facet_count = np.unique(facets, axis=0, return_inverse=True, return_counts=True)
    facet_index = facet_index.reshape(n_cells, len(local))
    per_facet = ridge_index.reshape(n_cells, len(local), -1)                  # ridges of each facet
    for _ in range(max_rounds):
        # boundary facets: facets of solid cells whose other side is void or outside
        in_solid = np.bincount(facet_index[solid].ravel(), minlength=len(facet_count))
        on_boundary = (in_solid == 1)[facet_index] & solid[:, None]           # (n_cells, facets)
        uses = np.bincount(per_facet[on_boundary].ravel(), minlength=len(ridge_ids))
        bad = uses > 2
        if not bad.any():
            return solid
        candidates = np.flatnonzero(~solid & bad[ridge_index].any(axis=1))
        # for each bad ridge the densest void cell around it
        pairs = ridge_index[candidates]
        cell_of = np.repeat(candidates, pairs.shape[1])
        ridge_of = pairs.ravel()
        keep = bad[ridge_of]
        cell_of, ridge_of = cell_of[keep], ridge_of[keep]
        order = np.lexsort((-density[cell_of], ridge_of))                      # by ridge, densest first
        first = np.ones(len(order), dtype=bool)
        first[1:] = ridge_of[order][1:] != ridge_of[order][:-1]
        solid[cell_of[order][first]] = True
    raise LightweightError(f"the solid cells' boundary is still not a manifold after {max_rounds} rounds of "
                           f"closing the edges where cells touch; choose another threshold= or level_field=")


class _LevelSet:
    """The density of a result as a level field on the design mesh and the region above a level (pyvista)."""

    def __init__(self, fields: ResultFields, level_field: str = "auto"):
        self.fields = fields
        self.dim = fields.mesh.dim
        if level_field == "auto":
            level_field = auto_level_field(fields)
        self.level_field = level_field
        self.solid_cells = level_field == "solid_cells"
        if self.solid_cells:
            self.grid = to_pyvista(fields.mesh)
            self.nodal = np.asarray(fields.density, dtype=float)      # one value per cell here
            self.measures = np.asarray(cell_measures(fields), dtype=float)
        elif level_field == "cells":
            self.grid, self.nodal = subdivided_density_grid(fields.mesh, fields.density)
        elif level_field == "nodes":
            self.grid = to_pyvista(fields.mesh)
            self.grid.point_data["density"] = nodal_average(fields.mesh, fields.density)
            self.nodal = np.asarray(self.grid.point_data["density"])
        else:
            raise LightweightError(f"level_field must be 'auto', 'solid_cells' (the design cells at or above the "
                                   f"level), 'nodes' (nodal-averaged density) or 'cells' (cell densities on "
                                   f"the subdivided mesh), got {level_field!r}")
        self.design_volume = float(cell_measures(fields) @ fields.density)
        self.thickness = fields.thickness if self.dim == 2 else 1.0
        self._levels_found: dict[tuple[float, float], float] = {}

    def solid_mask(self, level: float) -> np.ndarray:
        """Cells (n_cells,) bool of the solid_cells region: density >= level, plus the cells that
        make its boundary a manifold (:func:`manifold_closure`)."""
        return manifold_closure(self.fields.mesh, self.nodal >= float(level), self.nodal)

    def region(self, level: float):
        if self.solid_cells:
            return self.grid.extract_cells(np.flatnonzero(self.solid_mask(level)))
        return self.grid.clip_scalar(scalars="density", value=float(level), invert=False)

    def region_volume(self, level: float) -> float:
        if self.solid_cells:
            return float(self.measures[self.solid_mask(level)].sum())
        region = self.region(level)
        if region.n_cells == 0:
            return 0.0
        sizes = region.compute_cell_sizes(length=False, area=self.dim == 2, volume=self.dim == 3)
        values = sizes.cell_data["Area" if self.dim == 2 else "Volume"]
        return float(np.abs(values).sum()) * self.thickness

    def volume_preserving_level(self, target: float, rtol: float = 1e-4) -> float:
        """Level whose region volume equals ``target`` (bisection; volume falls with level).

        solid_cells: the cells taken densest first until their volume is nearest ``target`` (the
        volume-preserving threshold), the level halfway between the last cell taken and the next;
        the manifold closure adds its few cells after that."""
        key = (float(target), float(rtol))
        if key not in self._levels_found:
            # export_solid asks again for each smoothing it tries; the bisection clips ~12 times
            self._levels_found[key] = self._volume_preserving_level(target, rtol)
        return self._levels_found[key]

    def _volume_preserving_level(self, target: float, rtol: float) -> float:
        lo, hi = float(self.nodal.min()), float(self.nodal.max())
        if hi - lo < 1e-12:
            raise LightweightError("the density is uniform: there is no iso-surface to export; "
                                   "give threshold= below the density to export the whole domain")
        if self.solid_cells:
            # The volume-preserving threshold: the cells densest first until their volume is
            # nearest the target. The closure's cells come on top (not paid for by a higher level:
            # on the crisp bracket that dropped every boundary cell below 0.998 and Gmsh then
            # could not mesh the surface).
            order = np.argsort(-self.nodal, kind="stable")
            ranked = self.nodal[order]
            taken = np.cumsum(self.measures[order])
            # cut only between two different densities (cells of equal density, e.g. the void
            # floor, are all in or all out), and never below the lowest
            cuts = np.flatnonzero(ranked[:-1] > ranked[1:])
            if cuts.size == 0:
                return hi
            k = cuts[int(np.argmin(np.abs(taken[cuts] - target)))]              # order[:k + 1]
            return float(0.5 * (ranked[k] + ranked[k + 1]))
        lo, hi = lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            vol = self.region_volume(mid)
            if abs(vol - target) <= rtol * target:
                return mid
            if vol > target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


def _closed_surface(region, dim: int, thickness: float, smoothing_iterations: int, pass_band: float):
    """Closed, outward-oriented triangle surface of a clipped region (2D: extruded)."""
    if region.n_cells == 0:
        raise LightweightError("no material above the threshold: the exported surface would be empty; "
                               "lower threshold=")
    surface = region.extract_surface(algorithm="dataset_surface").triangulate().clean()
    if dim == 2:
        # A planar triangulation of the 2D region; smoothing moves its outline in-plane only.
        if smoothing_iterations:
            surface = surface.smooth_taubin(n_iter=smoothing_iterations, pass_band=pass_band,
                                            boundary_smoothing=True)
        surface.clear_data()    # cell arrays of the clip would not match the extruded cells
        surface = surface.extrude((0.0, 0.0, float(thickness)), capping=True).triangulate().clean()
    elif smoothing_iterations:
        # feature_smoothing: vertices on sharp edges (where the part meets the design-space
        # faces) slide only along those edges, so the cut faces stay flat and edges sharp.
        surface = surface.smooth_taubin(n_iter=smoothing_iterations, pass_band=pass_band,
                                        feature_smoothing=True, feature_angle=45.0)
    if smoothing_iterations:
        # The sinc filter overshoots a little at sharp corners; keep the part inside the
        # design space's bounding box (exact for box-shaped design spaces).
        lo, hi = np.asarray(region.bounds).reshape(3, 2).T
        if dim == 2:
            lo[2], hi[2] = 0.0, float(thickness)
        surface.points = np.clip(np.asarray(surface.points), lo, hi)
    return surface.compute_normals(auto_orient_normals=True, consistent_normals=True,
                                   split_vertices=False, cell_normals=True, point_normals=False)


def _is_closed_manifold(surface) -> bool:
    return surface.n_cells > 0 and surface.n_open_edges == 0 and surface.is_manifold


def design_surface(result, threshold: float | None = None, smoothing_iterations: int = 20,
                   pass_band: float = 0.1, thickness: float | None = None,
                   level_field: str = "auto") -> SurfaceExport:
    """Closed smooth surface of a design without writing it (see :func:`export_surface`)."""
    import_pyvista(off_screen=True)
    fields = load_fields(result, thickness=thickness)
    return _surface_of(_LevelSet(fields, level_field), threshold, smoothing_iterations, pass_band)


def _surface_of(levels: _LevelSet, threshold: float | None, smoothing_iterations: int,
                pass_band: float = 0.1) -> SurfaceExport:
    """:func:`design_surface` of a level field already built (export_solid tries several smoothings)."""
    target = levels.design_volume
    preserve = threshold is None
    level = levels.volume_preserving_level(target) if preserve else float(threshold)

    def build(lv):
        surf = _closed_surface(levels.region(lv), levels.dim, levels.thickness, smoothing_iterations,
                               pass_band)
        if not _is_closed_manifold(surf):
            # A node exactly at the level can pinch the surface at an edge; nudge the level.
            span = float(levels.nodal.max() - levels.nodal.min())
            for nudge in (1e-6, -1e-6, 1e-4, -1e-4, 1e-3, -1e-3):
                alt = _closed_surface(levels.region(lv + nudge * span), levels.dim, levels.thickness,
                                      smoothing_iterations, pass_band)
                if _is_closed_manifold(alt):
                    return alt
            raise LightweightError(
                f"the surface at density level {lv:.4g} is not a closed manifold ({surf.n_open_edges} "
                f"open edges): the design has parts touching along an edge or a corner; smooth the "
                f"design (larger filter_radius) or choose another threshold=")
        return surf

    surface = build(level)
    volume = abs(float(surface.volume))
    if (preserve and smoothing_iterations and not levels.solid_cells and target > 0
            and abs(volume - target) > 1e-3 * target):
        # Smoothing moves the surface a little: one or two secant steps on the level restore
        # the volume, using the unsmoothed volume-vs-level slope.
        d_level = 1e-2 * float(levels.nodal.max() - levels.nodal.min())
        slope = (levels.region_volume(level + d_level) - levels.region_volume(level - d_level)) / (2 * d_level)
        for _ in range(3):
            if slope >= 0 or abs(volume - target) <= 1e-3 * target:
                break
            level = float(np.clip(level + (target - volume) / slope, levels.nodal.min(), levels.nodal.max()))
            surface = build(level)
            volume = abs(float(surface.volume))
    return SurfaceExport(None, surface, float(level), volume, target, int(surface.n_cells))


def export_surface(result, path, threshold: float | None = None, smoothing_iterations: int = 20,
                   pass_band: float = 0.1, thickness: float | None = None,
                   level_field: str = "auto") -> SurfaceExport:
    """Write the design's closed, smoothed surface to STL/PLY/OBJ (by extension).

    result: OptimizationResult, Solution (its density) or a saved result path.
    threshold: level of the nodal-averaged density; None -> the level whose enclosed volume
    equals the design's material volume sum(v_e rho_e). level_field: "auto" (default: "solid_cells"
    for a crisp design, "nodes" otherwise, :func:`auto_level_field`), "solid_cells" (the cells at
    or above the level, closed to a manifold: keeps crisp members one or two cells thick; the
    threshold is then a cell density), "nodes" (the volume-weighted nodal average) or "cells"
    (the cell densities on the mesh subdivided around cell and face centres,
    :func:`subdivided_density_grid`; its fine surface defeats Gmsh on large parts).
    smoothing_iterations: Taubin passes
    (0: the raw iso-surface). thickness: 2D extrusion depth (default: the model's).
    Returns a :class:`SurfaceExport` (path, surface, threshold, volume, design_volume).
    """
    path = Path(path)
    if path.suffix.lower() not in SURFACE_FORMATS:
        raise LightweightError(f"cannot write a surface to {path}: use one of "
                               f"{', '.join(SURFACE_FORMATS)}")
    exported = design_surface(result, threshold, smoothing_iterations, pass_band, thickness, level_field)
    surface = exported.surface
    if path.suffix.lower() == ".obj":
        # pyvista writes OBJ through a plotter exporter; meshio writes it directly.
        import meshio
        meshio.write(path, meshio.Mesh(np.asarray(surface.points),
                                       [("triangle", surface.faces.reshape(-1, 4)[:, 1:])]))
    else:
        surface.save(str(path))
    exported.path = path
    return exported


# ---------------------------------------------------------------------------------- solid mesh
def _element_size(mesh: Mesh) -> float:
    vols = np.abs(mesh.cell_volumes())
    return float(np.mean(vols) ** (1.0 / mesh.dim))


def mean_edge_length(mesh: Mesh) -> float:
    """Mean length of the cells' edges (corner to corner along each face), user length units."""
    from .mesh.cell_types import CELL_TYPES
    if mesh.grid is not None and mesh.grid_spacing:
        return float(np.mean(mesh.grid_spacing))
    face_type = CELL_TYPES[mesh.cell_type].face_type
    n_corners = CELL_TYPES[face_type].n_corners if mesh.dim == 3 else 2
    # every face's corner-to-corner edges, each cell edge once with the number of faces it bounds
    # (a tet's six edges bound two faces each): the same mean as over all faces' edges, without
    # the (cells, faces, corners, dim) array (2.1 s -> 0.4 s at 550k tets)
    counts: dict[tuple[int, int], int] = {}
    for face in np.array(CELL_TYPES[mesh.cell_type].faces)[:, :n_corners]:
        for a, b in zip(face, np.roll(face, 1)):
            key = (int(min(a, b)), int(max(a, b)))
            counts[key] = counts.get(key, 0) + 1
    total = 0.0
    points, cells = mesh.points, mesh.cells     # read once: a grid builds them on each read
    for (a, b), count in counts.items():
        total += count * float(np.linalg.norm(points[cells[:, a]] - points[cells[:, b]], axis=1).sum())
    return total / (mesh.n_cells * sum(counts.values()))


def _triangles_of(mesh: Mesh, faces: np.ndarray) -> np.ndarray:
    """Corner triangles (m, 3) of faces: triangles as they are, quads split in two."""
    if faces.shape[1] in (4, 8, 9):
        return np.concatenate([faces[:, [0, 1, 2]], faces[:, [0, 2, 3]]])
    return faces[:, :3]


def point_triangle_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Distance from each point (n, 3) to its triangle (a, b, c each (n, 3)), (n,)."""
    normal = np.cross(b - a, c - a)
    norm = np.linalg.norm(normal, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = normal / norm[:, None]
        height = np.einsum("ij,ij->i", points - a, unit)
        foot = points - height[:, None] * unit
        inside = np.ones(len(points), dtype=bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= np.einsum("ij,ij->i", np.cross(v - u, foot - u), normal) >= 0
    inside &= norm > 0
    best = np.full(len(points), np.inf)
    for u, v in ((a, b), (b, c), (c, a)):
        edge = v - u
        length2 = np.einsum("ij,ij->i", edge, edge)
        t = np.clip(np.einsum("ij,ij->i", points - u, edge) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (u + t[:, None] * edge), axis=1))
    return np.where(inside, np.abs(height), best)


def distance_to_faces(points: np.ndarray, mesh: Mesh, faces: np.ndarray, k: int = 8) -> np.ndarray:
    """Distance from each point (n, 3) to the surface of ``faces`` of ``mesh`` (k nearest by centre)."""
    from scipy.spatial import cKDTree
    triangles = _triangles_of(mesh, np.asarray(faces))
    corners = mesh.points[triangles]                            # (m, 3, 3)
    k = min(k, len(triangles))
    _, nearest = cKDTree(corners.mean(axis=1)).query(points, k=k)
    nearest = np.asarray(nearest).reshape(len(points), k)
    best = np.full(len(points), np.inf)
    for j in range(k):
        tri = corners[nearest[:, j]]
        best = np.minimum(best, point_triangle_distance(points, tri[:, 0], tri[:, 1], tri[:, 2]))
    return best


def carry_sets(source: Mesh, target: Mesh, set_tolerance: float | None = None,
               node_tolerance: float | None = None) -> dict[str, str]:
    """Add the named sets of the design mesh ``source`` to the part mesh ``target`` (module docstring).

    set_tolerance: how far from a face set's faces a part node may lie (default 0.1 design
    element); node_tolerance: how far from a node set's node its nearest part node may be (default
    one design element).
    Returns {set name: why it was not carried} for sets with no counterpart on the part.
    """
    from scipy.spatial import cKDTree
    if source.dim != 3:
        return {name: "2D designs carry no sets to their extruded part" for name in
                {**source.node_sets, **source.cell_sets}}
    size = _element_size(source)
    face_tol = 0.1 * size if set_tolerance is None else float(set_tolerance)
    node_tol = size if node_tolerance is None else float(node_tolerance)
    boundary = target.boundary_faces()
    boundary_nodes = np.unique(boundary)
    missing = {}
    for name, faces in source.face_sets.items():
        near = np.zeros(target.n_nodes, dtype=bool)
        near[boundary_nodes] = distance_to_faces(target.points[boundary_nodes], source, faces) <= face_tol
        candidates = boundary[near[boundary].all(axis=1)]
        if len(candidates):
            centres = target.points[candidates].mean(axis=1)
            candidates = candidates[distance_to_faces(centres, source, faces) <= face_tol]
        if len(candidates) == 0:
            missing[name] = (f"no boundary triangle of the part lies within {face_tol:.3g} of face set "
                             f"{name!r}")
            continue
        target.add_face_set(name, candidates)
    for name, ids in source.node_sets.items():
        if name in source.face_sets:
            continue
        # the nearest boundary node of the part to each of the set's nodes: a set of as many nodes
        # (fewer if two share one), so a per-node load keeps its total
        dist, nearest = cKDTree(target.points[boundary_nodes]).query(source.points[ids],
                                                                    distance_upper_bound=node_tol)
        found = np.unique(boundary_nodes[nearest[np.isfinite(dist)]])
        if found.size == 0:
            missing[name] = f"no boundary node of the part lies within {node_tol:.3g} of node set {name!r}"
            continue
        target.add_node_set(name, found)
    nearest = None
    for name, ids in source.cell_sets.items():
        member = np.zeros(source.n_cells, dtype=bool)
        member[ids] = True
        if member.all():
            # a set of the whole design space (Gmsh's one physical volume) holds the whole part
            target.add_cell_set(name, np.arange(target.n_cells))
            continue
        if nearest is None:
            _, nearest = cKDTree(source.cell_centers()).query(target.cell_centers())
        found = np.flatnonzero(member[nearest])
        if found.size == 0:
            missing[name] = f"no tet of the part lies in cell set {name!r}"
            continue
        target.add_cell_set(name, found)
    return missing


def _less_smoothing(smoothing_iterations: int) -> list[int]:
    """The smoothings tried after ``smoothing_iterations`` fails: a quarter of the passes, then none."""
    return [p for p in sorted({smoothing_iterations // 4, 0}, reverse=True) if p < smoothing_iterations]


def _with_less_smoothing(levels: "_LevelSet | None", threshold, smoothing_iterations: int, min_component: float,
                         mesh_size: float, path_msh: Path, time_limit: float, error: LightweightError,
                         remesh: bool = True):
    """Gmsh on the design's surface smoothed less (a quarter of the passes, then none): (points, tets).

    Smoothing is what makes thin members touch (Gmsh: "PLC Error: a segment and a facet
    intersect"). On the sample control arm the surface with 20 passes failed and MeshFix's
    unremeshed fill left 5 % sliver tets (a 188 MPa artefact against the design's 34 MPa);
    with 5 passes Gmsh remeshed it with 1 % slivers and a 118 MPa peak. A timeout is not
    retried (each attempt could take the whole time limit). Raises ``error`` if nothing works.
    """
    if levels is None or "did not finish" in str(error):
        raise error
    for passes in _less_smoothing(smoothing_iterations):
        try:
            surface = _closed_without_specks(levels, threshold, passes, min_component)
            if surface is None:
                continue
            points, tets = _gmsh_in_child_process(surface, mesh_size, path_msh, time_limit, remesh)
        except LightweightError:
            continue
        warnings.warn(f"{error}; meshed the surface smoothed with {passes} instead of {smoothing_iterations} "
                      f"passes", stacklevel=3)
        return points, tets
    raise error


def _closed_without_specks(levels: "_LevelSet", threshold, passes: int, min_component: float):
    """The design's surface smoothed ``passes`` times without its specks, or None if it is not closed."""
    surface = _surface_of(levels, threshold, passes).surface
    if not _is_closed_manifold(surface):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # specks were reported for the first surface
        return _drop_small_components(surface, min_component)


# export_solid's default (remesh=None) remeshes surfaces below this many triangles and fills bigger
# ones as they are. Measured on the synthetic bracket designs of benchmarks/export_scaling.py: 422k
# tets (64.7k triangles), Gmsh's classification and re-parametrization ended in "wrong topology of
# boundary mesh for parametrization" after 3.7-4.9 s for 20, 5 and 0 smoothing passes; 550k tets
# (76.9k triangles), it looped in its patch partitioning ("parametrized triangles are too small",
# 3.7 million warnings in 150 s) for all three, so every attempt ran into the time limit (107 s)
# and the part fell back to the clipped volume (export 125 s). The fill of the unsmoothed
# triangles as they are took 10.3 and 13.6 s. Below 20 000 triangles remeshing worked on the
# sample designs (the control arm, the brackets of the tests) and takes seconds.
REMESH_MAX_TRIANGLES = 20_000

# Surfaces of at least this many triangles are meshed with every smoothing at once (a child
# process each), on machines with two or more cores. Measured on the 422k-tet synthetic bracket
# design (benchmarks/export_scaling.py, 64.7k triangles, quiet 2-core machine), one after the
# other: 20 passes: classification 3.7 s, then "wrong topology" and the fill of the triangles
# fails (overlapping facets, 1.0 s); 5 passes: 4.9 + 1.1 s, the same; no smoothing: 4.3 s, then
# the fill succeeds in 10.3 s. Small surfaces mesh in a second or two and usually at the first
# try, so there the others would be wasted work.
SIDE_BY_SIDE_MIN_TRIANGLES = 20_000


def _side_by_side(surface) -> bool:
    """Whether export_solid tries all smoothings at once for this surface (big surface, >= 2 cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        cores = os.cpu_count() or 1
    return cores >= 2 and surface.n_cells >= SIDE_BY_SIDE_MIN_TRIANGLES


def _first_that_meshes(surface, levels: "_LevelSet", threshold, smoothing_iterations: int, min_component: float,
                       mesh_size: float, time_limit: float, remesh: bool = True):
    """(points, tets) of the smoothest surface Gmsh meshes, all smoothings meshed side by side.

    The same choice as trying ``smoothing_iterations``, then :func:`_with_less_smoothing`, one after
    the other (the smoothest surface that meshes wins, even if a less smoothed one finishes first),
    but the attempts run in child processes at the same time, so the wall time is about that of the
    slowest attempt needed instead of their sum. Unlike the sequential path, a smoothing whose
    Gmsh runs out of time does not stop the others (they are running already).
    """
    runs = {smoothing_iterations: _GmshRun(surface, mesh_size, time_limit, remesh)}
    try:
        # the unsmoothed surface first: the most likely to mesh, and its fill takes longest
        for passes in sorted(_less_smoothing(smoothing_iterations)):
            try:
                other = _closed_without_specks(levels, threshold, passes, min_component)
            except LightweightError:
                continue
            if other is not None:
                runs[passes] = _GmshRun(other, mesh_size, time_limit, remesh)
        first_error = None
        for passes in [smoothing_iterations] + _less_smoothing(smoothing_iterations):
            if passes not in runs:
                continue
            try:
                points, tets = runs.pop(passes).result()
            except LightweightError as exc:
                first_error = first_error or exc
                continue
            if passes != smoothing_iterations:
                warnings.warn(f"{first_error}; meshed the surface smoothed with {passes} instead of "
                              f"{smoothing_iterations} passes", stacklevel=3)
            return points, tets
        raise first_error
    finally:
        for run in runs.values():
            run.stop()


def _mesh_with_sets(result, mesh: Mesh) -> Mesh:
    """The design mesh with its named sets: a saved result (.vtu/.msh path) is read again by
    read_mesh, which restores the sets its fields loader leaves out."""
    if mesh.node_sets or mesh.cell_sets or not isinstance(result, (str, Path)):
        return mesh
    from .mesh.io import read_mesh
    try:
        again = read_mesh(result)
    except LightweightError:
        return mesh
    same = again.n_cells == mesh.n_cells and again.n_nodes == mesh.n_nodes
    return again if same else mesh


def _sets_used(model) -> set[str] | None:
    """Names of the sets a model's supports and loads refer to (None without a model)."""
    if model is None:
        return None
    used = set(getattr(model, "supports", {})) | {s.set for s in getattr(model, "springs", ())}
    for items in getattr(model, "loads", {}).values():
        used |= {getattr(load, "set", None) for load in items} - {None}
    return used


def export_solid(result, path_msh, mesh_size: float | None = None, threshold: float | None = None,
                 smoothing_iterations: int = 20, thickness: float | None = None,
                 time_limit: float | None = None, min_component: float = 0.01,
                 set_tolerance: float | None = None, level_field: str = "auto",
                 remesh: bool | None = None) -> Mesh:
    """Tetrahedral (tetra) mesh of the design's closed surface, written to ``path_msh``.

    result: as for :func:`export_surface`, or a SurfaceExport, or a path to a closed
    .stl/.ply/.obj surface. mesh_size: target edge length (default: the design's mean cell edge
    length; for a surface, its mean triangle edge). set_tolerance: see :func:`carry_sets`; the
    design's named sets are carried onto the part and written as physical groups (a set with no
    counterpart on the part is left out with a warning). time_limit: seconds Gmsh may take (it
    runs in a child process: on some self-touching surfaces it never returns; default 30 s plus
    1 ms per surface triangle, where it normally needs ~0.1 ms). level_field: see
    :func:`export_surface`. remesh: let Gmsh re-parametrize and remesh the surface at ``mesh_size``
    before filling it (True), or fill its triangles as they are (False); default None: remesh
    surfaces below ``REMESH_MAX_TRIANGLES`` triangles (on bigger ones the re-parametrization failed
    or looped on every design measured). min_component:
    closed pieces of the surface smaller than this fraction of the part's volume (floating
    specks of material, which carry no load) are dropped, with a warning.

    If Gmsh fails or runs out of time, the surface repaired by MeshFix (if pymeshfix is
    installed and the repair keeps the volume) is filled as it is; failing that, for a design
    (not a surface file), the solid is the design's clipped volume at the same level (tets of
    the unsmoothed iso-surface, exact to the level set). Each fallback warns. Returns the mesh
    as a lightweight Mesh; ``path_msh`` holds the same tets.
    """
    try:
        import gmsh  # noqa: F401 - only to fail early with the right message
    except ImportError as exc:
        raise LightweightError(f"export_solid needs gmsh ({exc}); pip install lightweight[mesh]") from None
    if remesh is not None and not isinstance(remesh, (bool, np.bool_)):
        # a string such as "no" would be true: refuse anything but the three documented values
        raise LightweightError(f"remesh must be True, False or None (None: remesh surfaces below "
                               f"{REMESH_MAX_TRIANGLES} triangles), got {remesh!r}")
    if time_limit is not None and not (time_limit > 0):
        raise LightweightError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    pv = import_pyvista(off_screen=True)
    default_size, fields, level, levels = None, None, None, None
    if isinstance(result, SurfaceExport):
        surface = result.surface
    elif isinstance(result, (str, Path)) and Path(result).suffix.lower() in SURFACE_FORMATS:
        surface = pv.read(str(result)).triangulate().clean()
    else:
        fields = load_fields(result, thickness=thickness)
        default_size = mean_edge_length(fields.mesh)
        levels = _LevelSet(fields, level_field)
        exported = _surface_of(levels, threshold, smoothing_iterations)
        surface, level = exported.surface, exported.threshold
    if not _is_closed_manifold(surface):
        raise LightweightError("export_solid needs a closed manifold surface "
                               f"({surface.n_open_edges} open edges)")
    surface = _drop_small_components(surface, min_component)
    if mesh_size is None and default_size is not None:
        # As fine as the design: its figures were computed at this resolution, and the
        # verification step (lightweight.verify) measures what the discretization costs.
        mesh_size = default_size
    elif mesh_size is None:
        edges = surface.extract_all_edges()
        lengths = np.linalg.norm(np.diff(np.asarray(edges.points)[edges.lines.reshape(-1, 3)[:, 1:]],
                                         axis=1)[:, 0], axis=1)
        mesh_size = float(np.mean(lengths))
    if not mesh_size > 0:
        raise LightweightError(f"mesh_size must be positive, got {mesh_size}")
    path_msh = Path(path_msh)
    if time_limit is None:
        time_limit = 30.0 + 1e-3 * surface.n_cells
    if remesh is None:
        remesh = surface.n_cells < REMESH_MAX_TRIANGLES
        if not remesh:
            warnings.warn(f"exported part: the surface's {surface.n_cells} triangles are filled with tets as "
                          f"they are, not remeshed (Gmsh's re-parametrization failed or looped on every surface "
                          f"of more than {REMESH_MAX_TRIANGLES} triangles measured; remesh=True tries it)",
                          stacklevel=2)
    try:
        if levels is not None and smoothing_iterations > 0 and _side_by_side(surface):
            points, tets = _first_that_meshes(surface, levels, threshold, smoothing_iterations, min_component,
                                              float(mesh_size), float(time_limit), bool(remesh))
        else:
            try:
                points, tets = _gmsh_in_child_process(surface, float(mesh_size), path_msh, float(time_limit),
                                                      bool(remesh))
            except LightweightError as smoothed_error:
                points, tets = _with_less_smoothing(levels, threshold, smoothing_iterations, min_component,
                                                    float(mesh_size), path_msh, float(time_limit), smoothed_error,
                                                    bool(remesh))
    except LightweightError as first:
        try:
            # Smoothing can make thin members touch: MeshFix removes the self-intersections,
            # and Gmsh fills the repaired triangles as they are (its re-parametrization is what
            # hangs). The bracket: PLC error before the repair, 70k tets in 0.6 s after it.
            repaired = _repaired(surface)
            if repaired is None:
                raise first
            points, tets = _gmsh_in_child_process(repaired, float(mesh_size), path_msh, float(time_limit),
                                                  remesh=False)
            warnings.warn(f"{first}; meshed the surface as repaired by MeshFix instead", stacklevel=2)
        except LightweightError as exc:
            if fields is None or fields.mesh.dim != 3:
                raise
            warnings.warn(f"{exc}; the solid is the design's volume clipped at density level {level:.4g} "
                          f"instead (tets of the unsmoothed iso-surface)", stacklevel=2)
            points, tets = _clipped_volume_tets(fields, level, min_component, level_field)
    if len(tets) == 0:
        raise LightweightError(f"Gmsh made no tetrahedra from the exported surface (mesh_size={mesh_size})")
    cleaned = _oriented_tets(points, tets)
    used = np.unique(cleaned)
    remap = np.full(len(points), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    mesh = Mesh(points[used], remap[cleaned], "tetra", source=str(path_msh))
    carried = False
    if fields is not None and fields.mesh.dim == 3:
        missing = carry_sets(_mesh_with_sets(result, fields.mesh), mesh, set_tolerance)
        carried = bool(mesh.node_sets or mesh.cell_sets)
        # a grid names all six faces; only the sets the model uses are worth a warning
        used = _sets_used(fields.model)
        missing = {k: v for k, v in missing.items() if used is not None and k in used}
        if missing:
            warnings.warn("exported part: " + "; ".join(missing.values()) + " (left out of "
                          f"{path_msh.name}; is there material at the set? try a lower threshold= or "
                          f"set_tolerance=)", stacklevel=2)
    from .mesh.io import write_mesh
    # the file holds what is returned (slivers dropped, named sets), as binary MSH 2.2: meshio
    # wrote ASCII 550k tets in 50 s and read them in 44 s, binary in 0.3 s and 2.8 s
    write_mesh(path_msh, mesh, binary=True)
    return mesh


def _component_volumes(surface) -> tuple[object, np.ndarray]:
    """(surface with cell array RegionId, enclosed volume of each closed piece)."""
    labelled = surface.connectivity(extraction_mode="all")
    region = np.asarray(labelled.cell_data["RegionId"])
    faces = labelled.faces.reshape(-1, 4)[:, 1:]
    p = np.asarray(labelled.points)[faces]
    # divergence theorem per triangle: signed volume of the tetrahedron with the origin
    signed = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])) / 6.0
    return labelled, np.abs(np.bincount(region, weights=signed))


def _drop_small_components(surface, min_component: float):
    """The surface without closed pieces below ``min_component`` of the total volume (warns)."""
    labelled, volumes = _component_volumes(surface)
    keep = volumes >= min_component * volumes.sum()
    if keep.all():
        return surface
    region = np.asarray(labelled.cell_data["RegionId"])
    kept = labelled.extract_cells(np.flatnonzero(keep[region])).extract_surface(algorithm="dataset_surface")
    kept = kept.triangulate().clean()
    kept.clear_data()
    warnings.warn(f"dropped {int((~keep).sum())} floating piece(s) of material from the exported part "
                  f"({volumes[~keep].sum() / volumes.sum():.2%} of its volume; they touch nothing that "
                  f"holds or loads the part)", stacklevel=3)
    return kept.compute_normals(auto_orient_normals=True, consistent_normals=True, split_vertices=False,
                                cell_normals=True, point_normals=False)


def _clipped_volume_tets(fields: ResultFields, level: float, min_component: float, level_field: str = "auto"):
    """(points (n, 3), tets (m, 4)) of the 3D design region above ``level`` (orientation as VTK
    left it: :func:`_oriented_tets` follows)."""
    region = _LevelSet(fields, level_field).region(level).triangulate()
    if min_component > 0 and region.n_cells:
        labelled = region.connectivity(extraction_mode="all")
        ids = np.asarray(labelled.cell_data["RegionId"])
        sizes = labelled.compute_cell_sizes(length=False, area=False, volume=True)
        volumes = np.bincount(ids, weights=np.abs(np.asarray(sizes.cell_data["Volume"])))
        keep = volumes >= min_component * volumes.sum()
        region = labelled.extract_cells(np.flatnonzero(keep[ids]))
    tets = np.asarray(region.cells_dict.get(10, np.zeros((0, 4))), dtype=np.int64)   # VTK_TETRA
    points = np.asarray(region.points, dtype=float)
    if len(tets) == 0:
        raise LightweightError(f"no material above density level {level:.4g}: nothing to mesh")
    return points, tets


def _oriented_tets(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Tets (m, 4) turned to positive volume, without the ones of (numerically) zero volume.

    Both the table-based clip (where a node sits almost on the level) and Gmsh's fill of a
    repaired surface leave a few flat slivers; they carry no material and would only make the
    part's stiffness matrix singular (the FE core rejects non-positive Jacobians).
    """
    tets = np.array(tets, dtype=np.int64)
    p = points[tets]
    six_volume = np.einsum("ij,ij->i", p[:, 1] - p[:, 0], np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]))
    flip = six_volume < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    size = np.abs(six_volume)
    return tets[size > 1e-9 * size.mean()]


def _repaired(surface):
    """The surface with self-intersections and degenerate triangles removed by MeshFix
    (pymeshfix, the ``mesh`` extra), or None if pymeshfix is not installed or fails."""
    try:
        import pymeshfix
    except ImportError:
        return None
    pv = import_pyvista(off_screen=True)
    try:
        fixer = pymeshfix.MeshFix(np.asarray(surface.points, dtype=float),
                                  np.asarray(surface.faces).reshape(-1, 4)[:, 1:])
        fixer.repair()
    except Exception:  # noqa: BLE001 - a failed repair only means the next fallback is used
        return None
    faces = np.asarray(fixer.faces, dtype=np.int64)
    if len(faces) == 0:
        return None
    repaired = pv.PolyData(np.asarray(fixer.points), np.column_stack([np.full(len(faces), 3), faces]).ravel())
    # MeshFix also rebuilds what it takes for defects: on a slab with a through-hole it added
    # 14 % of volume. Only a repair that keeps the part is a repair.
    if abs(abs(repaired.volume) - abs(surface.volume)) > 0.01 * abs(surface.volume):
        return None
    return repaired


def _gmsh_in_child_process(surface, mesh_size: float, path_msh: Path, time_limit: float, remesh: bool = True):
    """Run :func:`_gmsh_tetrahedralize` in a child Python with a time limit; (points, tets)."""
    return _GmshRun(surface, mesh_size, time_limit, remesh).result()


# A Gmsh child that has used no CPU time for this long is taken as hung and stopped. Seen on the
# unsmoothed surface of the 550k-tet synthetic bracket design (76.9k triangles, remeshed at 2.41
# mm): Gmsh slept in all three of its threads after 4.6 CPU s and did not wake in 14 minutes;
# export_solid would have waited out the whole time limit (107 s) before its fallbacks. A
# working child under heavy load still gets CPU time every second or so.
GMSH_IDLE_SECONDS = 10.0


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _GmshRun:
    """One Gmsh child process meshing a closed surface, started at once; :meth:`result` waits.

    Several can run side by side (:func:`_first_that_meshes`); each has its own time limit,
    counted from its start. ``path_msh`` is not written by the child: export_solid writes the
    cleaned tets with the named sets itself.
    """

    # what the child runs: gmsh_worker.py as a file (argv: the worker's path, surface STL, mesh size,
    # .msh path or "", output .npz, remesh 1/0), so it does not import the whole package
    child_code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")

    def __init__(self, surface, mesh_size: float, time_limit: float, remesh: bool = True):
        import subprocess
        import sys
        import time
        self.mesh_size, self.time_limit, self.remesh = float(mesh_size), float(time_limit), bool(remesh)
        self._folder = tempfile.TemporaryDirectory()
        stl, self._out = Path(self._folder.name) / "surface.stl", Path(self._folder.name) / "mesh.npz"
        surface.save(str(stl), binary=True)
        self._deadline = time.monotonic() + self.time_limit
        self._process = subprocess.Popen([sys.executable, "-c", self.child_code, gmsh_worker.__file__, str(stl),
                                          repr(self.mesh_size), "",
                                          str(self._out), "1" if remesh else "0"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        """Kill the child (its answer is no longer needed) and remove its files."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()
        self._folder.cleanup()

    def result(self):
        """(points (n, 3), tets (m, 4)) once the child is done; LightweightError if it failed or
        ran past its time limit (then it is killed)."""
        import subprocess
        import time
        try:
            working_at, cpu_seen = time.monotonic(), -1.0
            while True:
                try:
                    _, stderr = self._process.communicate(
                        timeout=min(1.0, max(0.0, self._deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now >= self._deadline:
                        raise LightweightError(f"Gmsh did not finish meshing the exported surface within "
                                               f"{self.time_limit:g} s (time_limit=)") from None
                    cpu = _cpu_seconds(self._process.pid)
                    if cpu is None or cpu > cpu_seen:
                        working_at, cpu_seen = now, (cpu_seen if cpu is None else cpu)
                    elif now - working_at > GMSH_IDLE_SECONDS:
                        raise LightweightError(
                            f"Gmsh stopped working on the exported surface (no CPU time for "
                            f"{GMSH_IDLE_SECONDS:g} s: it hangs on some surfaces)") from None
            if self._process.returncode != 0 or not self._out.is_file():
                lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
                raise LightweightError(f"Gmsh could not mesh the exported surface "
                                       f"({lines[-1] if lines else f'exit status {self._process.returncode}'})")
            with np.load(self._out) as data:
                points, tets = data["points"], data["tets"]
                notes = [str(n) for n in data["notes"]] if "notes" in data.files else []
        finally:
            self.stop()
        for note in notes:
            if not self.remesh and "remeshing not asked for" in note:
                continue                                  # the caller chose to fill the triangles as they are
            warnings.warn(f"{note} (expect sliver tets where the surface's triangles are poor)", stacklevel=4)
        if len(tets) == 0:
            # seen on a thin control-arm design: the surface loop was accepted but not filled
            raise LightweightError(f"Gmsh made no tetrahedra from the exported surface "
                                   f"(mesh_size={self.mesh_size:.4g})")
        return points, tets


# ---------------------------------------------------------------------------------- evaluation
def _map_node_set(name: str, source: Mesh, target: Mesh, boundary_nodes: np.ndarray, tol: float) -> np.ndarray:
    from scipy.spatial import cKDTree
    src = source.points[source.node_set(name)]
    if src.shape[1] == 2:
        src = np.column_stack([src, np.zeros(len(src))])
    dist, _ = cKDTree(src).query(target.points[boundary_nodes], distance_upper_bound=tol)
    ids = boundary_nodes[np.isfinite(dist)]
    if ids.size == 0:
        raise LightweightError(f"set {name!r} of the design has no counterpart on the exported part: no "
                               f"boundary node lies within {tol:.3g} of its nodes (is there material at "
                               f"the set? try a lower threshold= or a larger tolerance=)")
    return ids


def _face_area(mesh: Mesh, faces: np.ndarray) -> float:
    p = mesh.points[faces[:, :3]]
    return float(0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1).sum())


def _original_face_area(model, name: str) -> float:
    mesh = model.mesh
    faces = mesh.face_set(name)
    if mesh.dim == 2:
        p = mesh.points[faces[:, :2]]
        return float(np.linalg.norm(p[:, 1] - p[:, 0], axis=1).sum() * model.thickness)
    corners = faces[:, :4] if faces.shape[1] in (4, 8) else faces[:, :3]
    p = mesh.points[corners]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    if corners.shape[1] == 4:
        area += 0.5 * np.linalg.norm(np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]), axis=1)
    return float(area.sum())


def evaluate_exported(result, solid_mesh: Mesh, tolerance: float | None = None, solver: str = "auto") -> dict:
    """Solve the exported part with the design's material, supports and loads; compare.

    result: the OptimizationResult (or Solution) the part was exported from (it carries the
    model). solid_mesh: the tet mesh from :func:`export_solid`. Sets are mapped by geometry:
    boundary nodes/faces of the new mesh within ``tolerance`` (default: one design element)
    of the original set's nodes. Loads keep their total force (tractions and pressures are
    rescaled by the ratio of loaded areas, point loads are split over the new nodes).
    Returns {"design": {...}, "exported": {...}, "ratio": {...}} with mass, volume and
    compliance per load case (and max displacement / von Mises of the exported part).
    """
    from .fem import Gravity, Model, PointLoad, Pressure, Traction, solve
    from .fem.loads import BodyForce, Coupling, Force, NodalForces

    model = getattr(result, "model", None)
    if model is None:
        raise LightweightError("evaluate_exported needs the OptimizationResult or Solution with its model "
                               "(a saved file has no supports and loads)")
    source = model.mesh
    if model.dim == 2:
        raise LightweightError("evaluate_exported compares 3D parts; a 2D design's extruded part has no "
                               "matching 2D load model (evaluate the 2D design with lw.solve instead)")
    if not isinstance(solid_mesh, Mesh):
        raise LightweightError(f"solid_mesh must be a lightweight Mesh (from export_solid), got "
                               f"{type(solid_mesh).__name__}")
    tol = _element_size(source) if tolerance is None else float(tolerance)
    # the sets export_solid carried are used as they are; missing ones are mapped by distance
    target = Mesh(solid_mesh.points, solid_mesh.cells, solid_mesh.cell_type, source=solid_mesh.source,
                  node_sets={k: v for k, v in solid_mesh.node_sets.items() if k not in solid_mesh.face_sets},
                  face_sets=dict(solid_mesh.face_sets), cell_sets=dict(solid_mesh.cell_sets))
    boundary = target.boundary_faces()
    boundary_nodes = np.unique(boundary)

    def face_set(name):
        nodes = _map_node_set(name, source, target, boundary_nodes, tol)
        mask = np.zeros(target.n_nodes, dtype=bool)
        mask[nodes] = True
        faces = boundary[mask[boundary].all(axis=1)]
        if len(faces) == 0:
            raise LightweightError(f"set {name!r}: boundary nodes were found on the exported part but no "
                                   f"whole boundary face; give a larger tolerance= than {tol:.3g}")
        target.add_face_set(name, faces)
        return faces

    supports = {}
    for name, comps in model.supports.items():
        if name not in target.node_sets:
            target.add_node_set(name, _map_node_set(name, source, target, boundary_nodes, tol))
        supports[name] = {"xyz"[c]: v for c, v in comps.items()}
    for spring in getattr(model, "springs", ()):
        if spring.set not in target.node_sets:
            target.add_node_set(spring.set, _map_node_set(spring.set, source, target, boundary_nodes, tol))
        supports[spring.set] = spring
    loads = {}
    for case, items in model.loads.items():
        new_items = []
        for load in items:
            if isinstance(load, Traction):
                faces = face_set(load.set) if load.set not in target.face_sets else target.face_sets[load.set]
                ratio = _original_face_area(model, load.set) / _face_area(target, faces)
                new_items.append(Traction(load.set, tuple(np.asarray(load.traction, float) * ratio)))
            elif isinstance(load, Pressure):
                faces = face_set(load.set) if load.set not in target.face_sets else target.face_sets[load.set]
                ratio = _original_face_area(model, load.set) / _face_area(target, faces)
                new_items.append(Pressure(load.set, float(load.pressure) * ratio))
            elif isinstance(load, PointLoad):
                if load.set not in target.node_sets:
                    target.add_node_set(load.set, _map_node_set(load.set, source, target, boundary_nodes, tol))
                total = np.asarray(load.force, float) * (
                    len(source.node_set(load.set)) if load.distribute == "each" else 1)
                new_items.append(PointLoad(load.set, tuple(total), distribute="total"))
            elif isinstance(load, Force):
                if load.set not in target.face_sets:
                    face_set(load.set)
                new_items.append(load)                 # a total force: the same on any surface
            elif isinstance(load, Coupling):
                if load.set not in target.node_sets:
                    target.add_node_set(load.set, _map_node_set(load.set, source, target, boundary_nodes, tol))
                new_items.append(load)
            elif isinstance(load, (Gravity, BodyForce)):
                if load.set is not None:
                    raise LightweightError(f"load case {case!r}: a body load on cell set {load.set!r} cannot "
                                           f"be mapped to the exported part")
                new_items.append(load)
            elif isinstance(load, NodalForces):
                raise LightweightError(f"load case {case!r}: explicit nodal forces cannot be mapped to the "
                                       f"exported part's nodes")
            else:
                new_items.append(load)
        loads[case] = new_items
    new_model = Model(target, model.material, supports=supports, loads=loads)
    solution = solve(new_model, solver=solver)
    design_compliance = dict(getattr(result, "compliance", {}) or {})
    design_volume = float(getattr(result, "volume", 0.0) or 0.0)
    design_mass = getattr(result, "mass", None)
    design_mass = None if design_mass is None else float(design_mass)
    design_vf = getattr(result, "volume_fraction", None)
    exported = {"mass": solution.mass, "volume": solution.volume, "compliance": dict(solution.compliance),
                "max_displacement": dict(solution.max_displacement), "max_von_mises": solution.max_von_mises,
                "n_nodes": target.n_nodes, "n_cells": target.n_cells, "solution": solution}
    design = {"mass": design_mass, "volume": design_volume, "compliance": design_compliance,
              "volume_fraction": design_vf}
    ratio = {"volume": solution.volume / design_volume if design_volume else float("nan"),
             "compliance": {c: solution.compliance[c] / design_compliance[c]
                            for c in solution.compliance if design_compliance.get(c)}}
    return {"design": design, "exported": exported, "ratio": ratio, "tolerance": tol}


__all__ = ["SurfaceExport", "design_surface", "export_surface", "export_solid", "evaluate_exported",
           "carry_sets", "mean_edge_length", "subdivided_density_grid", "auto_level_field",
           "manifold_closure"]
