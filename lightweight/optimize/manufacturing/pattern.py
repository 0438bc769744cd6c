"""Ties in the design map: mirror symmetry, extrusion, cyclic symmetry and repeated patterns.

Approach: a tie rule names pairs of cells that must share one density; the
:class:`~lightweight.optimize.design.DesignSpace` joins all pairs into groups (connected
components) and gives each group one design variable, so the constraint holds exactly at every
iteration and costs nothing in the optimizer (this is how commercial codes' PATRN/EXTR work
too, and why these rules have no stage). Pairs are found geometrically: each cell centre is
mapped (mirrored, rotated by 360°/n, shifted by one period) and matched to the nearest cell
centre with a KD-tree.

- :class:`Symmetry` and :class:`Extrusion` are the ``symmetry=`` / ``extrusion=`` arguments as
  objects (the arguments build them): exact matches only (1e-6 of the mesh size), and a cell
  without a mirror image is an error naming it.
- :class:`Pattern` (cyclic sectors about an axis, or repeats along an axis) matches to within
  half a cell size, so it also works on grids whose cells do not map exactly onto each other
  (three sectors on a square grid); cells whose image lies outside the mesh (the corners of a
  square under a 3-fold rotation) stay untied, and the check reports them if they differ.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from ...errors import OptimizationError
from .base import AXES, SOLID, Rule, cell_size, check_density, model_mesh, register_rule, solid_fraction


def _axis(name, dim: int, what: str) -> int:
    if isinstance(name, str) and name.lower() in AXES and AXES[name.lower()] < dim:
        return AXES[name.lower()]
    raise OptimizationError(f"{what}: axis must be one of {', '.join('xyz'[:dim])}, got {name!r}")


def _tolerance(mesh) -> float:
    lo, hi = mesh.bounding_box()
    return 1e-6 * float(np.max(hi - lo))


class TieRule(Rule):
    """A rule acting through the design map: ``ties(mesh)`` -> (cells, partners), no stage."""

    def ties(self, mesh):
        raise NotImplementedError

    def violation(self, model, density) -> float:
        """Fraction of solid cells (by volume) whose tied partner is void (after thresholding)."""
        mesh = model_mesh(model)
        density = check_density(mesh, density, f"{self.name} check")
        cells, partners = self.ties(mesh)
        solid = density > SOLID
        broken = np.zeros(mesh.n_cells, dtype=bool)
        differ = solid[cells] != solid[partners]
        broken[cells[differ]] = True
        broken[partners[differ]] = True
        return solid_fraction(mesh, broken, solid)


@register_rule("symmetry")
class Symmetry(TieRule):
    """Mirror symmetry about the plane normal to ``axis`` at ``position`` (default: the mesh's mid-plane)."""

    name = "symmetry"

    def __init__(self, axis="x", position: float | None = None):
        _axis(axis, 3, "symmetry")
        self.axis = axis
        self.position = None if position is None else float(position)

    @classmethod
    def from_spec(cls, spec) -> "Symmetry":
        """From the ``symmetry=`` argument's forms: "x" or ("x", 50.0)."""
        if isinstance(spec, Symmetry):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls(spec[0], spec[1])
        raise OptimizationError(f"symmetry: give an axis name like 'x' or (axis, position), got {spec!r}")

    def ties(self, mesh):
        axis = _axis(self.axis, mesh.dim, "symmetry")
        centers = mesh.cell_centers()
        lo, hi = mesh.bounding_box()
        plane = 0.5 * (lo[axis] + hi[axis]) if self.position is None else self.position
        mirrored = centers.copy()
        mirrored[:, axis] = 2 * plane - mirrored[:, axis]
        dist, partner = cKDTree(centers).query(mirrored, distance_upper_bound=_tolerance(mesh))
        missing = np.flatnonzero(~np.isfinite(dist))
        if missing.size:
            raise OptimizationError(
                f"symmetry about {self.axis} = {plane:g}: cells {missing[:10].tolist()} have no mirror "
                f"cell; the mesh must be symmetric about that plane")
        return np.arange(mesh.n_cells), partner

    def describe(self) -> dict:
        return {"type": self.name, "axis": self.axis, "position": self.position}


@register_rule("extrusion")
class Extrusion(TieRule):
    """Constant cross-section along ``axis``: one density per column of cells (extruded profiles)."""

    name = "extrusion"

    def __init__(self, axis="z"):
        _axis(axis, 3, "extrusion")
        self.axis = axis

    def ties(self, mesh):
        axis = _axis(self.axis, mesh.dim, "extrusion")
        centers = mesh.cell_centers()
        tol = _tolerance(mesh)
        others = [d for d in range(mesh.dim) if d != axis]
        keys = np.round(centers[:, others] / tol).astype(np.int64)
        _, column = np.unique(keys, axis=0, return_inverse=True)
        column = column.ravel()
        order = np.argsort(column, kind="stable")
        first = np.empty(column.max() + 1, dtype=np.int64)
        first[column[order[::-1]]] = order[::-1]
        counts = np.bincount(column)
        if mesh.grid is None and np.unique(counts).size > 1:
            raise OptimizationError(
                f"extrusion along {self.axis}: the mesh is not extruded along that axis "
                f"(cells are not stacked in columns of equal count)")
        return np.arange(mesh.n_cells), first[column]

    def describe(self) -> dict:
        return {"type": self.name, "axis": self.axis}


@register_rule("pattern")
class Pattern(TieRule):
    """Cyclic symmetry (``sectors`` = n about ``axis``) or a pattern repeated ``repeats`` = k times along ``axis``.

    Cyclic: rotation by 360°/n about the line parallel to ``axis`` through ``center`` (default:
    the centre of the mesh's bounding box; in 2D the axis is "z", normal to the plane).
    Repeats: the mesh's extent along ``axis`` is cut into k equal periods with one design.
    """

    name = "pattern"

    def __init__(self, sectors: int | None = None, repeats: int | None = None, axis="z",
                 center=None):
        if (sectors is None) == (repeats is None):
            raise OptimizationError("pattern: give sectors (cyclic symmetry) or repeats (along an axis), "
                                    f"exactly one; got sectors={sectors!r}, repeats={repeats!r}")
        count = sectors if sectors is not None else repeats
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
            raise OptimizationError(f"pattern: {'sectors' if sectors is not None else 'repeats'} must be "
                                    f"an integer >= 2, got {count!r}")
        _axis(axis, 3, "pattern")
        self.sectors = None if sectors is None else int(sectors)
        self.repeats = None if repeats is None else int(repeats)
        self.axis = axis
        self.center = None if center is None else [float(v) for v in center]

    def images(self, mesh) -> np.ndarray:
        """Where each cell centre maps to under one step of the pattern, (n_cells, dim)."""
        centers = mesh.cell_centers()
        lo, hi = mesh.bounding_box()
        if self.repeats is not None:
            axis = _axis(self.axis, mesh.dim, "pattern")
            out = centers.copy()
            out[:, axis] += (hi[axis] - lo[axis]) / self.repeats
            return out
        if mesh.dim == 2:
            if self.axis != "z":
                raise OptimizationError(f"pattern: in 2D the sectors turn about z (the normal of the plane), "
                                        f"got axis {self.axis!r}")
            axis = 2
        else:
            axis = _axis(self.axis, 3, "pattern")
        center = 0.5 * (lo + hi) if self.center is None else np.asarray(self.center, dtype=float)
        if center.shape != (mesh.dim,):
            raise OptimizationError(f"pattern: center must have {mesh.dim} coordinates, got {self.center!r}")
        plane = [d for d in range(3) if d != axis][:2]
        angle = 2 * math.pi / self.sectors
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        relative = centers - center
        out = centers.copy()
        out[:, plane] = center[plane] + relative[:, plane] @ rotation.T
        return out

    def ties(self, mesh):
        centers = mesh.cell_centers()
        dist, partner = cKDTree(centers).query(self.images(mesh))
        close = dist <= 0.5 * cell_size(mesh)
        cells = np.flatnonzero(close)
        if cells.size == 0:
            raise OptimizationError(f"pattern {self.label()}: no cell maps onto another cell; check the "
                                    f"axis and center")
        return cells, partner[close]

    def describe(self) -> dict:
        out = {"type": self.name, "axis": self.axis}
        out.update({"sectors": self.sectors} if self.sectors is not None else {"repeats": self.repeats})
        if self.center is not None:
            out["center"] = self.center
        return out
