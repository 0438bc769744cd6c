"""Casting and moulding: the part leaves its mould along a draw direction (no undercuts).

Approach: saturated column sums along the draw direction (the cumulative-sum casting filter of
Gersborg & Andreasen 2011, with a smooth cap instead of their exponential). Each cell gets a
*parent*, the next cell of its column in the draw direction, so the cells form chains (columns)
that run from the bottom (one-sided) or from the parting surface (two-sided) out to the mould's
opening. The stage sums the blueprint from the opening inwards and caps the sum at one::

    s_c = ρ_c + s_parent(c),   out_c = saturate(s_c),   saturate ≈ min(s, 1)

(``saturate`` is Langelaar's smooth min with 1, ε = 1e-4, rescaled so that 0 -> 0 and the
asymptote is 1). Once material appears in a column everything beneath it is solid, so the
output never increases along the draw direction: no solid cell sits above a void of its
column, and a void can only open towards the mould. A cumulative smooth *maximum* was tried
first: it gives a cell below a denser one zero sensitivity, and runs stalled in gray designs
(MBB: gray 0.8); the sum keeps every cell above the first solid one in play and converged to a
crisp design. The adjoint is the reverse sweep (children before parents: each cell collects
its descendants' rows), exact, so the stage passes
:func:`~lightweight.optimize.checks.check_stage`. Two-sided: the parting surface is the plane
normal to the direction at ``parting`` (a coordinate along the direction; default: the middle
of the part); above it the columns run along +direction, below it along -direction.

Parents: on a structured grid with an axis direction, the neighbouring cell along the axis. On
an unstructured mesh (and for oblique directions) parents are found geometrically: among the
twelve cells nearest to a point 0.75 cell sizes ahead, the one ahead of the cell (by more than
a quarter of its size) and within 0.75 of its size of the cell's axis, preferring the closest
(height gain + 2 x sideways distance). This is chosen over columns of a background grid because
it needs no resolution parameter and keeps one density per cell; chains may merge (a tree),
which the sweeps handle. A cell with no such neighbour is the top of its column.

Shapes: densities (n_cells,), gradient rows (k, n_cells).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.spatial import cKDTree

from ...errors import OptimizationError
from ..stages import Stage, _rows
from .base import (SOLID, Rule, cell_size, check_density, direction_vector, model_mesh, register_rule, smooth_min,
                   solid_fraction)

EPSILON = 1e-4


@numba.njit(cache=True)
def _column_sums(order, parent, rho):
    """s_c = ρ_c + s_parent(c): material at and above each cell in its column (cells of density)."""
    out = np.empty_like(rho)
    for c in order:                      # parents first
        p = parent[c]
        out[c] = rho[c] if p < 0 else rho[c] + out[p]
    return out


@numba.njit(cache=True)
def _column_sums_adjoint(order, parent, dy):
    """Transpose of :func:`_column_sums` on rows dy (k, n): every cell collects its descendants' rows."""
    adjoint = dy.copy()
    for i in range(order.size - 1, -1, -1):   # children first
        c = order[i]
        p = parent[c]
        if p >= 0:
            for r in range(dy.shape[0]):
                adjoint[r, p] += adjoint[r, c]
    return adjoint


def saturate(s: np.ndarray, epsilon: float):
    """Smooth min(s, 1) rescaled to map 0 -> 0 and infinity -> 1: value and derivative (same shape as s)."""
    low = smooth_min(np.zeros(1), np.ones(1), epsilon)[0][0]
    high = 1.0 + 0.5 * np.sqrt(epsilon)
    value, d_s, _ = smooth_min(s, np.ones_like(s), epsilon)
    return (value - low) / (high - low), d_s / (high - low)


class Columns:
    """Parent of every cell along the draw direction and a parents-first order.

    parent (n_cells,): next cell towards the mould opening, -1 at the top of a column;
    order (n_cells,): cells sorted so that every parent precedes its children.
    """

    def __init__(self, mesh, direction: np.ndarray, two_sided: bool, parting: float | None):
        centers = mesh.cell_centers()
        height = centers @ direction
        if two_sided:
            lo, hi = mesh.bounding_box()
            corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(mesh.dim, -1).T
            plane = 0.5 * float((corners @ direction).min() + (corners @ direction).max()) \
                if parting is None else float(parting)
            side = np.where(height >= plane, 1.0, -1.0)
        else:
            plane = -np.inf
            side = np.ones(mesh.n_cells)
        self.plane = plane
        axis = np.flatnonzero(np.abs(direction) > 1 - 1e-12)
        if mesh.grid is not None and mesh.grid_spacing is not None and axis.size == 1:
            parent = self._grid_parents(mesh, centers, int(axis[0]), side * direction[axis[0]])
        else:
            parent = self._geometric_parents(mesh, centers, direction, side)
        # never across the parting plane
        cross = parent >= 0
        cross[cross] = side[parent[cross]] != side[cross]
        parent[cross] = -1
        self.parent = parent
        self.order = np.argsort(-(side * (height - (0.0 if not two_sided else plane))), kind="stable")

    @staticmethod
    def _grid_parents(mesh, centers, axis, step_sign):
        spacing = np.asarray(mesh.grid_spacing, dtype=float)
        origin = np.asarray(mesh.grid_origin if mesh.grid_origin is not None else np.zeros(mesh.dim))
        shape = np.asarray(mesh.grid)
        index = np.clip(np.floor((centers - origin) / spacing).astype(np.int64), 0, shape - 1)
        lookup = np.full(tuple(shape), -1, dtype=np.int64)
        lookup[tuple(index.T)] = np.arange(mesh.n_cells)
        target = index.copy()
        target[:, axis] += np.sign(step_sign).astype(np.int64)
        inside = (target[:, axis] >= 0) & (target[:, axis] < shape[axis])
        parent = np.full(mesh.n_cells, -1, dtype=np.int64)
        parent[inside] = lookup[tuple(target[inside].T)]
        return parent

    @staticmethod
    def _geometric_parents(mesh, centers, direction, side):
        size = cell_size(mesh)
        ahead = side[:, None] * direction[None, :]
        tree = cKDTree(centers)
        k = min(12, mesh.n_cells)
        _, candidates = tree.query(centers + 0.75 * size[:, None] * ahead, k=k)
        candidates = candidates.reshape(mesh.n_cells, k)
        step = centers[candidates] - centers[:, None, :]
        gain = np.einsum("nkd,nd->nk", step, ahead)
        sideways = np.linalg.norm(step - gain[..., None] * ahead[:, None, :], axis=2)
        valid = (gain > 0.25 * size[:, None]) & (sideways <= 0.75 * size[:, None])
        score = np.where(valid, gain + 2.0 * sideways, np.inf)
        best = np.argmin(score, axis=1)
        parent = candidates[np.arange(mesh.n_cells), best].astype(np.int64)
        parent[~np.isfinite(score[np.arange(mesh.n_cells), best])] = -1
        return parent


class DrawStage(Stage):
    """Saturated column sums along the draw direction: blueprint (n_cells,) -> castable (n_cells,)."""

    name = "draw_direction"
    linear = False

    def __init__(self, columns: Columns, epsilon: float = EPSILON):
        self.columns = columns
        self.epsilon = float(epsilon)

    def forward(self, x):
        c = self.columns
        sums = _column_sums(c.order, c.parent, np.ascontiguousarray(x, dtype=float))
        return saturate(sums, self.epsilon)[0]

    def backward(self, x, dy):
        c = self.columns
        sums = _column_sums(c.order, c.parent, np.ascontiguousarray(x, dtype=float))
        slope = saturate(sums, self.epsilon)[1]
        return _column_sums_adjoint(c.order, c.parent, np.ascontiguousarray(_rows(dy) * slope[None, :]))

    def describe(self) -> dict:
        return {"stage": self.name, "columns": int((self.columns.parent < 0).sum())}


@register_rule("draw_direction")
class DrawDirection(Rule):
    """Castable/mouldable: the part leaves its mould along ``direction`` ("+z", or a vector).

    two_sided: False: one mould half moving along direction (density non-increasing along it);
    True: two halves parting at the plane normal to direction at ``parting`` (a coordinate
    along direction, mesh units; default the middle of the part), moving apart in both senses.
    """

    name = "draw_direction"

    def __init__(self, direction="+z", two_sided: bool = False, parting: float | None = None):
        if not isinstance(two_sided, bool):
            raise OptimizationError(f"draw_direction: two_sided must be true or false, got {two_sided!r}")
        if parting is not None and not two_sided:
            raise OptimizationError("draw_direction: parting (the parting plane) needs two_sided = true")
        if isinstance(direction, str):
            direction_vector(direction, 3, "draw_direction")
        else:
            direction = [float(v) for v in np.asarray(direction, dtype=float).ravel()]
        self.direction = direction
        self.two_sided = two_sided
        self.parting = None if parting is None else float(parting)

    def columns(self, mesh) -> Columns:
        vector = direction_vector(self.direction, mesh.dim, "draw_direction")
        return Columns(mesh, vector, self.two_sided, self.parting)

    def stage(self, model, design):
        return DrawStage(self.columns(model_mesh(model)))

    def violation(self, model, density) -> float:
        """Fraction of solid cells (by volume) with a void cell below them in their column (an undercut)."""
        mesh = model_mesh(model)
        density = check_density(mesh, density, "draw_direction check")
        cols = self.columns(mesh)
        solid = density > SOLID
        void_below = np.zeros(mesh.n_cells, dtype=bool)    # a void somewhere below, in the column
        for c in cols.order[::-1]:                            # children first
            p = cols.parent[c]
            if p >= 0 and (void_below[c] or not solid[c]):
                void_below[p] = True
        return solid_fraction(mesh, void_below, solid)

    def describe(self) -> dict:
        out = {"type": self.name, "direction": self.direction, "two_sided": self.two_sided}
        if self.parting is not None:
            out["parting"] = self.parting
        return out
