"""Stages of the density chain x -> ρ̄: each a forward map and its exact transpose on (k, n) rows.

The chain from the optimizer's variables x to the physical densities ρ̄ that the FE model sees
is a :class:`Pipeline` of :class:`Stage` objects::

    x --DesignMap--> ρ_cells --[Filter]--> ρ̃ --[Tie]--> --[Projection]--> --[manufacturing]--> --Passive--> ρ̄

A stage has ``forward(x)`` (one field (n_in,) -> (n_out,)) and ``backward(x, dy)`` (the chain
rule at the input ``x``: dy (k, n_out) -> (k, n_in), all k responses at once, which keeps our
batched gradients and fused kernels). ``linear`` says whether forward is affine in x: the OC
update's closed-form volume (V(x) = a·x + V(0), as in top99neo) is only used when every stage
of the pipeline is affine (:attr:`Pipeline.is_affine`), otherwise each bisection step runs the
pipeline. Stages that carry a continuation parameter (projection's β) expose it through
``parameters`` / ``set_parameter`` so a schedule can drive them.

Why this shape: pyMOTO's modules (a forward value and a backward sensitivity, one
finite-difference checker for all; Langelaar's overhang filter is one such module) make a new
manufacturing constraint one new class; we keep numpy arrays instead of pyMOTO's signal
objects because all our responses are evaluated in one batch of rows. A pipeline's forward
returns a :class:`Trace` (the input of every stage), so a backward pass never depends on which
forward ran last. Writing a stage: docs/architecture.md ("Adding a stage"); test it with
:func:`lightweight.optimize.checks.check_stage`.

top88's sensitivity filter (ft = 1) is not a map of densities but a heuristic on gradients:
:class:`SensitivityFilter` is an identity forward whose backward smooths only the rows the loop
marks as heuristic-eligible (non-linear responses); it is the one stage that is not an exact
transpose, and says so (``exact = False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OptimizationError


class Stage:
    """One map of the density chain (see module docstring)."""

    name = "stage"
    linear = True            # forward is affine in its input
    exact = True             # backward is the exact transpose of forward's derivative

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output field (n_out,) of an input field (n_in,)."""
        raise NotImplementedError

    def backward(self, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Gradient rows w.r.t. the input (k, n_in) from rows w.r.t. the output dy (k, n_out) at input x."""
        raise NotImplementedError

    def parameters(self) -> dict:
        """Continuation parameters this stage carries, {name: value} (e.g. {"beta": 8.0})."""
        return {}

    def set_parameter(self, name: str, value: float) -> None:
        raise OptimizationError(f"stage {self.name!r} has no parameter {name!r}")

    def describe(self) -> dict:
        return {"stage": self.name, **self.parameters()}


def _rows(dy: np.ndarray) -> np.ndarray:
    dy = np.asarray(dy, dtype=float)
    return dy[None, :] if dy.ndim == 1 else dy


class DesignMap(Stage):
    """Design variables -> cell densities: ρ = P x + fixed (passive cells), ties by symmetry/extrusion."""

    name = "design_map"

    def __init__(self, design):
        self.design = design

    def forward(self, x):
        if getattr(self.design, "is_identity", False):
            # P = I: the variables are the densities; stages never write into their input, so
            # the trace holds them once (a copy would stay alive through the analysis)
            return np.asarray(x, dtype=float)
        return self.design.expand(x)

    def backward(self, x, dy):
        if getattr(self.design, "is_identity", False):
            return _rows(dy)
        return self.design.reduce(_rows(dy))


class Tie(Stage):
    """Average each tied group (symmetry/extrusion) again after a filter broke the ties."""

    name = "tie"

    def __init__(self, design):
        self.design = design

    def forward(self, x):
        return self.design.tie(x)

    def backward(self, x, dy):
        return self.design.tie(_rows(dy))        # P diag(1/size) P^T is symmetric


class Passive(Stage):
    """Impose the fixed densities of non-design (1) and void (0) cells on the physical field."""

    name = "passive"

    def __init__(self, design):
        self.design = design

    def forward(self, x):
        if getattr(self.design, "is_identity", False):
            # no passive cell: the field as it is (stages never write into their input); a copy
            # stayed alive beside it through the analysis and the update (8 B per cell)
            return np.asarray(x, dtype=float)
        return self.design.impose(x)

    def backward(self, x, dy):
        if getattr(self.design, "is_identity", False):          # no passive cells: nothing to zero, no copy
            return _rows(dy)
        out = np.array(_rows(dy), dtype=float)
        out[:, self.design.passive] = 0.0
        return out


class Filter(Stage):
    """A linear density filter (convolution, grid stencil or Helmholtz PDE) as a stage."""

    name = "filter"

    def __init__(self, density_filter):
        self.filter = density_filter
        self.name = f"{getattr(density_filter, 'kind', 'density')}_filter"

    def forward(self, x):
        return self.filter.forward(x)

    def backward(self, x, dy):
        return self.filter.backward(_rows(dy))

    def describe(self) -> dict:
        return {"stage": self.name, "radius": float(self.filter.radius)}


class SensitivityFilter(Stage):
    """top88's sensitivity filter: identity on densities, H(ρ dc)/(Hs max(1e-3, ρ)) on gradients."""

    name = "sensitivity_filter"
    exact = False

    def __init__(self, density_filter):
        self.filter = density_filter

    def forward(self, x):
        return np.asarray(x, dtype=float)

    def backward(self, x, dy):
        return self.filter.filter_sensitivity(x, _rows(dy))

    def describe(self) -> dict:
        return {"stage": self.name, "radius": float(self.filter.radius)}


class Projection(Stage):
    """Smoothed Heaviside projection (Wang, Lazarov & Sigmund 2011) with continuation of β."""

    name = "projection"
    linear = False

    def __init__(self, projection):
        self.projection = projection

    def forward(self, x):
        return self.projection.forward(x)

    def backward(self, x, dy):
        return _rows(dy) * self.projection.derivative(np.asarray(x, dtype=float))[None, :]

    def parameters(self) -> dict:
        return {"beta": float(self.projection.beta), "eta": float(self.projection.eta)}

    def set_parameter(self, name, value):
        if name not in ("beta", "eta"):
            super().set_parameter(name, value)
        setattr(self.projection, name, float(value))


@dataclass
class Trace:
    """Inputs of every stage of one forward pass and the output (the physical densities)."""

    inputs: list
    output: np.ndarray


class Pipeline:
    """Stages applied in order (see module docstring)."""

    def __init__(self, stages):
        self.stages = list(stages)
        for stage in self.stages:
            if not isinstance(stage, Stage):
                raise OptimizationError(f"a pipeline holds lw stages (lightweight.optimize.stages.Stage), "
                                        f"got {type(stage).__name__}")

    @property
    def is_affine(self) -> bool:
        """True if ρ̄(x) is affine (every stage linear): OC may then compute volumes in closed form."""
        return all(stage.linear for stage in self.stages)

    def forward(self, x: np.ndarray) -> Trace:
        inputs = []
        value = np.asarray(x, dtype=float)
        for stage in self.stages:
            inputs.append(value)
            value = stage.forward(value)
        return Trace(inputs, value)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Physical densities ρ̄ of design variables x."""
        return self.forward(x).output

    def backward(self, trace: Trace, dy: np.ndarray, heuristic_rows=None) -> np.ndarray:
        """Gradient rows w.r.t. x (k, n_x) from rows w.r.t. ρ̄ (k, n_cells) at the traced design.

        heuristic_rows: boolean mask (k,) of the rows that inexact stages (the sensitivity
        filter) may change; the other rows (volume, mass: exact linear responses) pass through
        them unchanged. None: every row.
        """
        grads = np.array(_rows(dy), dtype=float)
        for stage, x in zip(reversed(self.stages), reversed(trace.inputs)):
            if stage.exact or heuristic_rows is None:
                grads = stage.backward(x, grads)
            else:
                rows = np.flatnonzero(heuristic_rows)
                if rows.size:
                    grads = np.array(grads)
                    grads[rows] = stage.backward(x, grads[rows])
        return grads

    def parameters(self) -> dict:
        """Continuation parameters of all stages, {name: value} (later stages win a clash)."""
        out = {}
        for stage in self.stages:
            out.update(stage.parameters())
        return out

    def set_parameter(self, name: str, value: float) -> bool:
        """Set a continuation parameter on every stage that has it; True if any did."""
        found = False
        for stage in self.stages:
            if name in stage.parameters():
                stage.set_parameter(name, value)
                found = True
        return found

    def find(self, kind: type):
        """The stages of a type, in order."""
        return [stage for stage in self.stages if isinstance(stage, kind)]

    def describe(self) -> list[dict]:
        return [stage.describe() for stage in self.stages]


def density_pipeline(design, density_filter=None, projection=None, sensitivity_filter: bool = False,
                     extra_stages=()) -> Pipeline:
    """The standard chain: design map, filter (+ tie), projection, extra stages, passive cells.

    extra_stages: stages inserted after the projection (manufacturing filters act on the
    projected field). A sensitivity filter (top88 ft = 1) replaces the density filter.
    """
    stages: list[Stage] = [DesignMap(design)]
    if density_filter is not None:
        if sensitivity_filter:
            stages.append(SensitivityFilter(density_filter))
        else:
            stages.append(Filter(density_filter))
            if design.has_ties:
                stages.append(Tie(design))
    if projection is not None:
        stages.append(Projection(projection))
    stages.extend(extra_stages)
    stages.append(Passive(design))
    return Pipeline(stages)
