"""Additive manufacturing: every cell is supported from below within the overhang angle.

Approach: Langelaar's AM filter (Langelaar 2016, "An additive manufacturing filter for topology
optimization of print-ready designs", and 2017 for 3D). The part is built layer by layer
along ``build_direction``; the first layer sits on the baseplate and is printed as designed.
Each later cell can only be printed as dense as the support beneath it::

    printed_c = smin(blueprint_c, S_v(c)),   S_v = smax over the stencil of printed voxels in the layer below

The stencil holds the voxels of the layer below whose centres lie within ``h / tan(angle)`` of
the voxel's axis (h: layer height), i.e. three cells in 2D and five (a cross) in 3D at 45° on
square cells, as in the papers. smax is Langelaar's p-mean ``(Σ x^P)^(1/Q)`` with
``Q = P + log N / log 0.5`` (so N cells of 0.5 give 0.5; P = 40) and smin is
``0.5 (a + b - sqrt((a - b)^2 + ε) + sqrt ε)`` (ε = 1e-4). The layers are processed in order,
and the sensitivities come from the layer-wise adjoint (from the top layer down), exact, so
the stage passes :func:`~lightweight.optimize.checks.check_stage`.

Meshes: the filter runs on a grid of voxels aligned with the axes. On a structured grid
(``mesh.grid``) the voxels are the cells themselves. On an unstructured mesh (tets, triangles)
each cell is assigned to the voxel of a background grid that holds its centre (voxel edge
``voxel_size``, default twice the edge of a cube of the mean cell volume, so that a voxel holds
several cells and few voxels inside the part are empty); a voxel's printed density is the mean
of the printed densities of its cells, and each cell is limited by the support of the voxel
layer below its own voxel. Empty voxels (outside the part) support nothing, which is the truth
for a printer: a design space whose own shape overhangs needs support structures there. This
is the "map to a background grid" choice rather than a refusal, because the bracket example is
a tet mesh; the price is that the overhang is resolved to the voxel size, not the cell size.

Shapes: densities (n_cells,), gradient rows (k, n_cells).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import OptimizationError
from ..stages import Stage, _rows
from .base import (SOLID, Rule, check_density, model_mesh, parse_axis_direction, register_rule,
                   smooth_min, solid_fraction)

SMAX_POWER = 40.0          # Langelaar's P
SMIN_EPSILON = 1e-4        # Langelaar's ε


class VoxelLayers:
    """Cells assigned to the voxels of an axis-aligned grid, counted in layers along the build direction.

    Attributes: layer (n_cells,) layer index (0 = on the baseplate); slot (n_cells,) flat index of
    the voxel within its layer; count (n_layers, n_slots) cells per voxel; slice_shape: voxel
    counts across the build direction; stencil: (n_offsets, dim - 1) offsets of the supporting
    voxels in the layer below.
    """

    def __init__(self, mesh, axis: int, sign: int, angle: float, voxel_size: float | None = None):
        dim = mesh.dim
        centers = mesh.cell_centers()
        if mesh.grid is not None and mesh.grid_spacing is not None and voxel_size is None:
            spacing = np.asarray(mesh.grid_spacing, dtype=float)
            origin = np.asarray(mesh.grid_origin if mesh.grid_origin is not None else np.zeros(dim), dtype=float)
            shape = np.asarray(mesh.grid, dtype=int)
            self.background = False
        else:
            lo, hi = mesh.bounding_box()
            if voxel_size is None:
                voxel_size = 2.0 * float(np.mean(mesh.cell_volumes())) ** (1.0 / dim)
            if not (voxel_size > 0 and math.isfinite(voxel_size)):
                raise OptimizationError(f"overhang: voxel_size must be a positive length, got {voxel_size!r}")
            spacing = np.full(dim, float(voxel_size))
            origin = lo
            shape = np.maximum(1, np.ceil((hi - lo) / spacing - 1e-9).astype(int))
            self.background = True
        index = np.floor((centers - origin) / spacing).astype(np.int64)
        index = np.clip(index, 0, shape - 1)
        if sign < 0:
            index[:, axis] = shape[axis] - 1 - index[:, axis]
        across = [d for d in range(dim) if d != axis]
        self.n_layers = int(shape[axis])
        self.slice_shape = tuple(int(shape[d]) for d in across)
        self.n_slots = int(np.prod(self.slice_shape))
        self.layer = index[:, axis]
        self.slot = np.ravel_multi_index(tuple(index[:, d] for d in across), self.slice_shape) \
            if across else np.zeros(len(centers), dtype=np.int64)
        self.count = np.zeros((self.n_layers, self.n_slots))
        np.add.at(self.count, (self.layer, self.slot), 1.0)
        order = np.argsort(self.layer, kind="stable")
        bounds = np.searchsorted(self.layer[order], np.arange(self.n_layers + 1))
        self.cells_of_layer = [order[bounds[i]:bounds[i + 1]] for i in range(self.n_layers)]
        # supporting voxels: centres within h / tan(angle) of the voxel's axis, in the layer below
        reach = spacing[axis] / math.tan(math.radians(angle)) * (1 + 1e-9)
        span = [int(math.floor(reach / spacing[d])) for d in across]
        grids = np.meshgrid(*[np.arange(-s, s + 1) for s in span], indexing="ij")
        offsets = np.stack([g.ravel() for g in grids], axis=1) if across else np.zeros((1, 0), dtype=int)
        distance = np.sqrt(((offsets * spacing[across]) ** 2).sum(axis=1)) if across else np.zeros(1)
        self.stencil = offsets[distance <= reach]
        self.pad = [int(np.abs(self.stencil[:, i]).max()) for i in range(len(across))]
        self.spacing = spacing
        self.axis = axis

    # -------------------------------------------------------------- stencil windows
    def windows(self, values: np.ndarray) -> np.ndarray:
        """Values of the stencil's voxels for every voxel of a layer: (n_offsets, n_slots) from (n_slots,)."""
        padded = np.pad(values.reshape(self.slice_shape), [(p, p) for p in self.pad])
        out = np.empty((len(self.stencil), self.n_slots))
        for i, offset in enumerate(self.stencil):
            window = tuple(slice(p + o, p + o + n) for p, o, n in zip(self.pad, offset, self.slice_shape))
            out[i] = padded[window].ravel()
        return out

    def scatter(self, contributions: np.ndarray) -> np.ndarray:
        """Transpose of :meth:`windows` for k rows: (k, n_offsets, n_slots) -> (k, n_slots)."""
        k = contributions.shape[0]
        padded = np.zeros((k,) + tuple(n + 2 * p for n, p in zip(self.slice_shape, self.pad)))
        for i, offset in enumerate(self.stencil):
            window = (slice(None),) + tuple(slice(p + o, p + o + n)
                                            for p, o, n in zip(self.pad, offset, self.slice_shape))
            padded[window] += contributions[:, i].reshape((k,) + self.slice_shape)
        core = (slice(None),) + tuple(slice(p, p + n) for p, n in zip(self.pad, self.slice_shape))
        return padded[core].reshape(k, self.n_slots)

    def voxel_mean(self, layer: int, cell_values: np.ndarray) -> np.ndarray:
        """Mean of a per-cell field over each voxel of a layer (n_slots,); 0 in empty voxels."""
        cells = self.cells_of_layer[layer]
        total = np.bincount(self.slot[cells], weights=cell_values[cells], minlength=self.n_slots)
        count = self.count[layer]
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def langelaar_smax(windows: np.ndarray, power: float = SMAX_POWER):
    """Langelaar's smooth max over axis 0 of (N, n) values in [0, 1]: value (n,) and derivative (N, n).

    (Σ x^P)^(1/Q), Q = P + log N / log 0.5, computed relative to the largest entry so that
    P = 40 neither underflows nor overflows; the derivative of an all-zero column is set to 0.
    """
    n_terms = windows.shape[0]
    q = power + math.log(n_terms) / math.log(0.5)
    largest = windows.max(axis=0)
    safe = np.where(largest > 0, largest, 1.0)
    ratio = np.clip(windows / safe, 0.0, None)
    sigma = (ratio ** power).sum(axis=0)
    sigma = np.where(largest > 0, sigma, 1.0)         # all-zero columns: ratio 0, sigma would be 0
    value = np.where(largest > 0, safe ** (power / q) * sigma ** (1.0 / q), 0.0)
    derivative = (power / q) * value * ratio ** (power - 1) / (safe * sigma)
    derivative[:, largest <= 0] = 0.0
    return value, derivative


class OverhangStage(Stage):
    """Langelaar's AM filter as a stage: blueprint densities (n_cells,) -> printable densities (n_cells,)."""

    name = "overhang"
    linear = False

    def __init__(self, layers: VoxelLayers, power: float = SMAX_POWER, epsilon: float = SMIN_EPSILON):
        self.layers = layers
        self.power = float(power)
        self.epsilon = float(epsilon)

    def _sweep(self, x):
        """Forward pass keeping what the adjoint needs: (printed, per layer (cells, d/dx, d/dS, dsmax))."""
        lay = self.layers
        x = np.asarray(x, dtype=float)
        printed = x.copy()
        tape = [None]
        below = lay.voxel_mean(0, printed)
        for layer in range(1, lay.n_layers):
            cells = lay.cells_of_layer[layer]
            support, d_support = langelaar_smax(lay.windows(below), self.power)
            value, d_blueprint, d_cap = smooth_min(x[cells], support[lay.slot[cells]], self.epsilon)
            printed[cells] = value
            tape.append((cells, d_blueprint, d_cap, d_support))
            below = lay.voxel_mean(layer, printed)
        return printed, tape

    def forward(self, x):
        return self._sweep(x)[0]

    def backward(self, x, dy):
        lay = self.layers
        dy = _rows(dy)
        k = dy.shape[0]
        _, tape = self._sweep(x)
        grad = np.zeros_like(dy)
        from_above = np.zeros((k, lay.n_slots))      # adjoint of this layer's voxel means
        for layer in range(lay.n_layers - 1, -1, -1):
            cells = lay.cells_of_layer[layer]
            slots = lay.slot[cells]
            count = lay.count[layer][slots]
            adjoint = dy[:, cells] + from_above[:, slots] / np.where(count > 0, count, 1.0)
            if layer == 0:
                grad[:, cells] = adjoint
                break
            _, d_blueprint, d_cap, d_support = tape[layer]
            grad[:, cells] = adjoint * d_blueprint
            to_support = np.stack([np.bincount(slots, weights=row * d_cap, minlength=lay.n_slots)
                                   for row in adjoint])
            from_above = lay.scatter(to_support[:, None, :] * d_support[None, :, :])
        return grad

    def describe(self) -> dict:
        return {"stage": self.name, "axis": "xyz"[self.layers.axis], "layers": self.layers.n_layers,
                "stencil": len(self.layers.stencil), "background_grid": self.layers.background}


@register_rule("overhang")
class Overhang(Rule):
    """Printable without supports along ``build_direction`` ("+y", "-z", ...): every cell rests on material.

    angle: the steepest allowed overhang, degrees from the baseplate (45: three cells below in
    2D, five in 3D on square cells); voxel_size: edge of the background grid of unstructured
    meshes (mesh units; default: twice the mean cell size). The first layer is the baseplate.
    """

    name = "overhang"

    def __init__(self, build_direction="+z", angle: float = 45.0, voxel_size: float | None = None):
        if isinstance(build_direction, str):
            parse_axis_direction(build_direction, 3, "overhang")
        else:
            raise OptimizationError(f"overhang: build_direction must be an axis like '+z' or '-y' "
                                    f"(printers build along an axis), got {build_direction!r}")
        if not (isinstance(angle, (int, float)) and 0 < float(angle) < 90):
            raise OptimizationError(f"overhang: angle must be in (0, 90) degrees from the baseplate, got {angle!r}")
        self.build_direction = build_direction
        self.angle = float(angle)
        self.voxel_size = None if voxel_size is None else float(voxel_size)

    def layers(self, mesh) -> VoxelLayers:
        axis, sign = parse_axis_direction(self.build_direction, mesh.dim, "overhang")
        return VoxelLayers(mesh, axis, sign, self.angle, self.voxel_size)

    def stage(self, model, design):
        return OverhangStage(self.layers(model_mesh(model)))

    def violation(self, model, density) -> float:
        """Fraction of solid cells (by volume) above the first layer with no solid voxel in their stencil below."""
        mesh = model_mesh(model)
        density = check_density(mesh, density, "overhang check")
        lay = self.layers(mesh)
        solid = density > SOLID
        solid_voxels = np.stack([lay.voxel_mean(layer, solid.astype(float)) > SOLID
                                 for layer in range(lay.n_layers)])
        supported = np.ones(mesh.n_cells, dtype=bool)
        for layer in range(1, lay.n_layers):
            cells = lay.cells_of_layer[layer]
            below = lay.windows(solid_voxels[layer - 1].astype(float)).max(axis=0) > 0
            supported[cells] = below[lay.slot[cells]]
        return solid_fraction(mesh, ~supported, solid)

    def describe(self) -> dict:
        out = {"type": self.name, "build_direction": self.build_direction, "angle": self.angle}
        if self.voxel_size is not None:
            out["voxel_size"] = self.voxel_size
        return out
