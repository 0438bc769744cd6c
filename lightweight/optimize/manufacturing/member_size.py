"""Member size: minimum size of solid members and holes, maximum size of solid members.

Minimum size, approach: a smooth morphological open-close stage (Sigmund 2007, "Morphology-based
black and white filters for topology optimization"), chosen over the robust
eroded/intermediate/dilated formulation of Wang, Lazarov & Sigmund (2011) because the robust one
needs the problem analysed on three designs per iteration, and our loop evaluates every response
on one physical field; the open-close stage fits the chain as one more stage and its guarantee
can be checked exactly. With a ball B of radius R = minimum / 2 (cells whose centres lie within
R; top-hat weights by cell volume, row-normalised, so it works on any mesh)::

    erode(z)  = H(T z; β, 1 - δ)      solid only where the whole ball is solid
    dilate(z) = H(T z; β, δ)          solid where any cell of the ball is solid
    output    = erode(dilate(dilate(erode(x))))      (opening, then closing)

H is the tanh projection and δ = half the weight of one cell in a full ball, so that as β grows
the stage becomes exactly binary opening then closing with B (the tests compare it with
scipy.ndimage at β = 1000). Proof of the size it enforces, in the binary limit: an opening is a
union of translated balls B, so every solid point lies in a solid ball of diameter ``minimum``
(no thinner member); a closing is the complement of an opening of the void, so every void
point lies in a void ball of that diameter (no smaller hole); the closing only adds material
in gaps narrower than B, next to members that already contain balls. β follows the
projection's continuation (the stage carries ``beta``); without a projection it stays at
``beta`` (default 8).

Maximum size, approach: a local volume constraint (Guest 2009; Wu, Aage, Westermann & Sigmund
2018): the local solid fraction l_c = (T_max ρ̄)_c in a ball of radius ``maximum`` about each
cell must stay below the fraction a straight member of width ``maximum`` fills there (0.609 in
2D; for a plate through a 3D ball 11/16) plus ``margin``, aggregated over cells by a
p-mean (p = 16) into one constraint for MMA. A thicker member fills more of the ball and is
pushed to thin out or to open holes.

Shapes: densities (n_cells,), gradient rows (k, n_cells).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ...errors import OptimizationError
from ..projection import _heaviside_derivative, heaviside
from ..responses.base import Constraint, Response
from ..stages import Stage, _rows
from .base import SOLID, Rule, cell_size, check_density, model_mesh, register_rule

P_MEAN = 16.0


def ball_average(mesh, radius: float) -> sp.csr_matrix:
    """Row-normalised top-hat average over cells whose centres lie within ``radius`` (n_cells, n_cells)."""
    centers = mesh.cell_centers()
    volumes = mesh.cell_volumes()
    pairs = cKDTree(centers).query_pairs(radius * (1 + 1e-9), output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(mesh.n_cells)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(mesh.n_cells)])
    weights = sp.csr_matrix((volumes[cols], (rows, cols)), shape=(mesh.n_cells, mesh.n_cells))
    return sp.diags(1.0 / np.asarray(weights.sum(axis=1)).ravel()) @ weights


def _ball_threshold(mesh, radius: float) -> float:
    """δ: half the weight one cell has in a full ball (so one cell of difference decides)."""
    ball = math.pi * radius ** 2 if mesh.dim == 2 else 4.0 / 3.0 * math.pi * radius ** 3
    return float(min(0.25, 0.5 * np.mean(mesh.cell_volumes()) / ball))


class OpenCloseStage(Stage):
    """Smooth opening then closing with a ball (see module docstring): (n_cells,) -> (n_cells,)."""

    name = "member_size"
    linear = False

    def __init__(self, average: sp.csr_matrix, delta: float, beta: float = 8.0):
        self.average = average.tocsr()
        self.average_t = average.T.tocsr()
        self.delta = float(delta)
        self.beta = float(beta)
        # erode, dilate, dilate, erode: thresholds of the four projections
        self.thresholds = (1.0 - self.delta, self.delta, self.delta, 1.0 - self.delta)

    def _sweep(self, x):
        inputs = []
        z = np.asarray(x, dtype=float)
        for eta in self.thresholds:
            smoothed = self.average @ z
            inputs.append(smoothed)
            z = heaviside(smoothed, self.beta, eta)
        return z, inputs

    def forward(self, x):
        return self._sweep(x)[0]

    def backward(self, x, dy):
        _, inputs = self._sweep(x)
        grad = _rows(dy)
        for eta, smoothed in zip(reversed(self.thresholds), reversed(inputs)):
            grad = grad * _heaviside_derivative(smoothed, self.beta, eta)[None, :]
            grad = (self.average_t @ grad.T).T
        return np.asarray(grad)

    def parameters(self) -> dict:
        return {"beta": self.beta}

    def set_parameter(self, name, value):
        if name != "beta":
            super().set_parameter(name, value)
        self.beta = float(value)

    def describe(self) -> dict:
        return {"stage": self.name, "beta": self.beta, "delta": self.delta}


def strip_fraction(dim: int, ratio: float) -> float:
    """Fraction of a ball of radius R filled by a centred straight member of width ratio x R (ratio <= 2)."""
    half = min(1.0, ratio / 2.0)
    if dim == 2:
        theta = math.asin(half)
        return (2.0 / math.pi) * (theta + math.sin(theta) * math.cos(theta))
    # 3D plate of thickness ratio R through the centre of a ball: volume of the slab / ball
    return 0.5 * (3 * half - half ** 3)


class LocalVolume(Response):
    """p-mean over cells of the local solid fraction in a ball of radius ``radius`` (dimensionless)."""

    name = "local_volume"

    def __init__(self, model, radius: float, power: float = P_MEAN):
        super().__init__(model)
        self.radius = float(radius)
        self.power = float(power)
        self.average = ball_average(model.mesh, self.radius)
        volumes = model.mesh.cell_volumes()
        self.weights = volumes / volumes.sum()

    def evaluate(self, state):
        local = self.average @ state.rho
        mean = float(self.weights @ local ** self.power)
        value = mean ** (1.0 / self.power)
        d_local = value / mean * self.weights * local ** (self.power - 1) if mean > 0 else np.zeros_like(local)
        return np.array([value]), (self.average.T @ d_local)[None, :]

    def describe(self) -> dict:
        return {**super().describe(), "radius": self.radius, "power": self.power}


def _binary_erode(average, solid: np.ndarray) -> np.ndarray:
    return (average @ solid.astype(float)) >= 1.0 - 1e-9


def _binary_dilate(average, solid: np.ndarray) -> np.ndarray:
    return (average @ solid.astype(float)) > 1e-9


@register_rule("member_size")
class MemberSize(Rule):
    """Minimum size of members and holes (``minimum``), maximum size of members (``maximum``), mesh units.

    margin: extra local solid fraction allowed by the maximum-size constraint; beta: the
    open-close stage's projection sharpness when no projection drives it.
    """

    name = "member_size"

    def __init__(self, minimum: float | None = None, maximum: float | None = None, margin: float = 0.0,
                 beta: float = 8.0):
        for key, value in (("minimum", minimum), ("maximum", maximum)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise OptimizationError(f"member_size: {key} must be a positive length, got {value!r}")
        if minimum is None and maximum is None:
            raise OptimizationError("member_size: give minimum, maximum or both")
        if minimum is not None and maximum is not None and maximum < minimum:
            raise OptimizationError(f"member_size: maximum {maximum} is below minimum {minimum}")
        self.minimum = None if minimum is None else float(minimum)
        self.maximum = None if maximum is None else float(maximum)
        self.margin = float(margin)
        self.beta = float(beta)

    def _check_scale(self, mesh, length: float, what: str) -> None:
        size = float(np.median(cell_size(mesh)))
        if length < 2 * size:
            raise OptimizationError(f"member_size: {what} {length:g} is below two cells ({2 * size:.3g} on "
                                    f"this mesh); refine the mesh or raise it")

    def stage(self, model, design):
        if self.minimum is None:
            return None
        mesh = model_mesh(model)
        self._check_scale(mesh, self.minimum, "minimum")
        radius = self.minimum / 2
        return OpenCloseStage(ball_average(mesh, radius), _ball_threshold(mesh, radius), self.beta)

    def local_limit(self, dim: int) -> float:
        return min(0.99, strip_fraction(dim, 1.0) + self.margin)

    def constraints(self, model) -> list:
        if self.maximum is None:
            return []
        self._check_scale(model.mesh, self.maximum, "maximum")
        return [Constraint(LocalVolume(model, self.maximum), self.local_limit(model.dim))]

    def violation(self, model, density) -> float:
        """Solid cells outside every solid ball of diameter minimum, void cells outside every void
        ball (holes too small), and solid cells at the centre of a solid ball of diameter above
        maximum (members too thick), by volume over the solid volume."""
        mesh = model_mesh(model)
        density = check_density(mesh, density, "member_size check")
        solid = density > SOLID
        bad = np.zeros(mesh.n_cells, dtype=bool)
        if self.minimum is not None:
            ball = ball_average(mesh, self.minimum / 2)
            opened = _binary_dilate(ball, _binary_erode(ball, solid))
            # outside the mesh counts as void here: a gap between the part and the design
            # space's boundary is not a hole
            closed = _binary_erode(ball, _binary_dilate(ball, solid)) & _whole_ball(mesh, ball)
            bad |= solid & ~opened            # thin members
            bad |= ~solid & closed            # small holes (counted against the solid volume)
        if self.maximum is not None:
            ball = ball_average(mesh, self.maximum / 2)
            bad |= solid & _binary_erode(ball, solid) & _whole_ball(mesh, ball)
        volumes = mesh.cell_volumes()
        total = float(volumes[solid].sum())
        return float(volumes[bad].sum()) / total if total > 0 else 0.0

    def describe(self) -> dict:
        return {"type": self.name, "minimum": self.minimum, "maximum": self.maximum}


def _whole_ball(mesh, ball) -> np.ndarray:
    """Cells whose ball lies inside the mesh (volume of its cells >= 95 % of the largest such volume).

    Outside the mesh counts as void for the maximum size: a member along the boundary is as thick
    as it looks, which a ball cut by the boundary would overstate.
    """
    volumes = mesh.cell_volumes()
    indicator = ball.copy()
    indicator.data[:] = 1.0
    ball_volume = indicator @ volumes
    return ball_volume >= 0.95 * ball_volume.max()
