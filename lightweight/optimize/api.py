"""Public entry points: ``minimize_compliance`` and ``minimize_mass`` (names fixed by DESIGN.md).

They turn keyword arguments into the loop's parts (design map, filter, projection,
interpolation, formulation, optimizer) and validate them up front, so a wrong set name or an
impossible volume fraction fails in milliseconds, not after the first FE solve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import OptimizationError
from .design import DesignSpace
from .filters import make_filter
from .interpolation import Interpolation
from .loop import LoopSettings, SimpLoop
from .problems import DisplacementLimit, MinCompliance, MinMass, StructuralResponses
from .projection import HeavisideProjection

FILTERS = ("sensitivity", "density", "helmholtz", None)


def _penalty_schedule(penalty) -> tuple[float, float]:
    if isinstance(penalty, (tuple, list)):
        if len(penalty) != 2:
            raise OptimizationError(f"penalty continuation is (start, end), got {penalty!r}")
        start, end = map(float, penalty)
    else:
        start = end = float(penalty)
    if not (0 <= start <= end):
        raise OptimizationError(f"penalty must satisfy 0 <= start <= end, got {penalty!r}")
    return start, end


def _projection(projection):
    """None | "heaviside" | {"beta": 1, "beta_max": 32, "eta": 0.5} -> (projection, beta_end)."""
    if projection is None or projection is False:
        return None, 0.0
    if projection is True or projection == "heaviside":
        projection = {}
    if not isinstance(projection, Mapping):
        raise OptimizationError(f"projection must be None, 'heaviside' or a dict like "
                                f"{{'beta': 1, 'beta_max': 32, 'eta': 0.5}}, got {projection!r}")
    unknown = set(projection) - {"beta", "beta_max", "eta"}
    if unknown:
        raise OptimizationError(f"unknown projection options {sorted(unknown)}; use beta, beta_max, eta")
    beta = float(projection.get("beta", 1.0))
    beta_max = float(projection.get("beta_max", 32.0))
    return HeavisideProjection(beta=beta, eta=float(projection.get("eta", 0.5))), beta_max


def _build(model, *, filter_radius, filter, projection, optimizer, penalty, interpolation,
           min_stiffness, non_design, void, symmetry, extrusion, max_iterations, tolerance,
           objective_tolerance, move, continuation_interval, verbose, checkpoint, checkpoint_every,
           solver, needs_mma: bool, problem: str, extra_parameters: dict):
    from ..fem.model import Model
    if not isinstance(model, Model):
        raise OptimizationError(f"expected a lw.Model, got {type(model).__name__}")
    if filter not in FILTERS:
        raise OptimizationError(f"filter must be one of 'sensitivity', 'density', 'helmholtz' or None, got {filter!r}")
    if filter is not None and not (filter_radius and filter_radius > 0):
        raise OptimizationError(f"filter_radius must be a positive length (in the mesh's units), got {filter_radius!r}")
    if int(max_iterations) < 1:
        raise OptimizationError(f"max_iterations must be >= 1, got {max_iterations}")
    if not (0 < move <= 1):
        raise OptimizationError(f"move must be in (0, 1], got {move}")
    if optimizer == "auto":
        optimizer = "mma" if needs_mma else "oc"
    if optimizer not in ("oc", "mma"):
        raise OptimizationError(f"optimizer must be 'oc', 'mma' or 'auto', got {optimizer!r}")
    if optimizer == "oc" and needs_mma:
        raise OptimizationError("optimizer='oc' handles only compliance minimization under a volume "
                                "constraint without self-weight or displacement limits; use optimizer='mma'")
    if filter == "sensitivity" and projection:
        raise OptimizationError("projection needs filter='density' or 'helmholtz' (a sensitivity filter "
                                "leaves the densities unfiltered, so there is nothing to project)")
    start, end = _penalty_schedule(penalty)
    if interpolation == "simp" and start < 1.0:
        # p < 1 rewards gray material and p = 0 makes the stiffness independent of the design
        # (zero sensitivities: OC would divide by zero)
        raise OptimizationError(f"SIMP penalty must be >= 1 (1: variable-thickness sheet, 3: the usual "
                                f"choice), got {penalty!r}")
    proj, beta_end = _projection(projection)
    design = DesignSpace(model.mesh, non_design=non_design, void=void, symmetry=symmetry, extrusion=extrusion)
    density_filter = make_filter(model.mesh, filter_radius, kind=filter) if filter else None
    interp = Interpolation(kind=interpolation, penalty=start, min_stiffness=min_stiffness,
                           linear_below=0.1 if (model.has_self_weight() and interpolation == "simp") else 0.0)
    settings = LoopSettings(
        optimizer=optimizer, max_iterations=int(max_iterations), tolerance=float(tolerance),
        objective_tolerance=float(objective_tolerance), move=float(move), penalty_start=start,
        penalty_end=end, beta_start=None if proj is None else proj.beta, beta_end=beta_end,
        continuation_interval=int(continuation_interval), sensitivity_filter=(filter == "sensitivity"),
        verbose=bool(verbose), checkpoint=None if checkpoint is None else str(checkpoint),
        checkpoint_every=int(checkpoint_every))
    parameters = {"problem": problem, "filter": filter, "filter_radius": filter_radius,
                  "projection": projection, "optimizer": optimizer, "penalty": penalty,
                  "interpolation": interpolation, "min_stiffness": min_stiffness,
                  "non_design": list(_names(non_design)), "void": list(_names(void)),
                  "symmetry": symmetry, "extrusion": extrusion, "max_iterations": int(max_iterations),
                  "tolerance": tolerance, "objective_tolerance": objective_tolerance, "move": move,
                  "continuation_interval": continuation_interval, "solver": solver, **extra_parameters}
    responses = StructuralResponses(model, interp, solver=solver)
    return design, density_filter, proj, interp, settings, parameters, responses


def _names(names) -> Sequence[str]:
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def _run(model, formulation, design, density_filter, proj, interp, settings, parameters,
         initial, callback, resume):
    loop = SimpLoop(model, formulation, design, density_filter, proj, interp, settings, initial,
                    callback=callback, parameters=parameters)
    if resume is not None:
        loop.load_checkpoint(str(resume))
    return loop.run()


def minimize_compliance(model, volume_fraction: float = 0.5, filter_radius: float | None = None,
                        filter: str | None = "density", projection=None, optimizer: str = "auto",
                        penalty=3.0, interpolation: str = "simp", min_stiffness: float = 1e-9,
                        non_design=(), void=(), symmetry=None, extrusion=None,
                        case_weights: Mapping[str, float] | None = None,
                        displacement_limits: Sequence[DisplacementLimit] = (),
                        max_iterations: int = 200, tolerance: float = 0.01,
                        objective_tolerance: float = 1e-3, move: float = 0.2,
                        continuation_interval: int = 25, initial: float | None = None,
                        callback=None, checkpoint=None, checkpoint_every: int = 10, resume=None,
                        solver: str = "auto", verbose: bool = True):
    """Stiffest layout for a volume fraction: min Σ w_k c_k s.t. V(ρ̄) <= volume_fraction.

    filter_radius is in the mesh's length units (top88's rmin for unit elements). penalty: a
    number or (start, end) for continuation. projection: None, "heaviside" or a dict
    {beta, beta_max, eta}. optimizer: "oc" (top88), "mma" or "auto". non_design / void: set
    names kept solid / empty. symmetry: "x" | ("x", position) | list; extrusion: "z".
    Returns an :class:`~lightweight.optimize.result.OptimizationResult`.
    """
    needs_mma = bool(displacement_limits) or model.has_self_weight()
    parts = _build(model, filter_radius=filter_radius, filter=filter, projection=projection,
                   optimizer=optimizer, penalty=penalty, interpolation=interpolation,
                   min_stiffness=min_stiffness, non_design=non_design, void=void, symmetry=symmetry,
                   extrusion=extrusion, max_iterations=max_iterations, tolerance=tolerance,
                   objective_tolerance=objective_tolerance, move=move,
                   continuation_interval=continuation_interval, verbose=verbose,
                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, solver=solver,
                   needs_mma=needs_mma, problem="min_compliance",
                   extra_parameters={"volume_fraction": volume_fraction,
                                     "case_weights": case_weights,
                                     "displacement_limits": [vars(d) for d in displacement_limits]})
    design, density_filter, proj, interp, settings, parameters, responses = parts
    formulation = MinCompliance(responses, volume_fraction, case_weights, displacement_limits)
    start = volume_fraction if initial is None else initial
    return _run(model, formulation, design, density_filter, proj, interp, settings, parameters,
                start, callback, resume)


def minimize_mass(model, max_compliance=None, max_compliance_factor: float | None = None,
                  filter_radius: float | None = None, filter: str | None = "density",
                  projection=None, optimizer: str = "mma", penalty=3.0, interpolation: str = "simp",
                  min_stiffness: float = 1e-9, non_design=(), void=(), symmetry=None, extrusion=None,
                  displacement_limits: Sequence[DisplacementLimit] = (), max_iterations: int = 200,
                  tolerance: float = 0.01, objective_tolerance: float = 1e-3, move: float = 0.1,
                  continuation_interval: int = 25, initial: float = 0.5, callback=None,
                  checkpoint=None, checkpoint_every: int = 10, resume=None, solver: str = "auto",
                  verbose: bool = True):
    """Lightest layout that is stiff enough: min V(ρ̄) s.t. c_k <= limit_k for every load case.

    max_compliance: a number (every case) or {case: limit}, in the model's units (force x length);
    or max_compliance_factor: limit = factor x the compliance of the fully solid design.
    displacement_limits: [lw.DisplacementLimit(set, component, limit, case=None), ...].
    Other arguments as :func:`minimize_compliance`. Solved with MMA.
    """
    from ..fem.static import solve
    if max_compliance is not None and max_compliance_factor is not None:
        raise OptimizationError("give max_compliance or max_compliance_factor, not both")
    cases = model.load_cases
    if max_compliance is None and max_compliance_factor is None:
        if not displacement_limits:
            raise OptimizationError("minimize_mass needs max_compliance, max_compliance_factor or "
                                    "displacement_limits")
        limits = {}
    elif max_compliance_factor is not None:
        if not (max_compliance_factor >= 1.0):
            raise OptimizationError(f"max_compliance_factor must be >= 1 (the solid part is the "
                                    f"stiffest), got {max_compliance_factor}")
        solid = solve(model, solver=solver)
        limits = {c: float(max_compliance_factor) * solid.compliance[c] for c in cases}
    elif isinstance(max_compliance, Mapping):
        limits = {str(k): float(v) for k, v in max_compliance.items()}
    else:
        limits = {c: float(max_compliance) for c in cases}
    parts = _build(model, filter_radius=filter_radius, filter=filter, projection=projection,
                   optimizer="mma" if optimizer == "auto" else optimizer, penalty=penalty,
                   interpolation=interpolation, min_stiffness=min_stiffness, non_design=non_design,
                   void=void, symmetry=symmetry, extrusion=extrusion, max_iterations=max_iterations,
                   tolerance=tolerance, objective_tolerance=objective_tolerance, move=move,
                   continuation_interval=continuation_interval, verbose=verbose,
                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, solver=solver,
                   needs_mma=True, problem="min_mass",
                   extra_parameters={"compliance_limits": limits,
                                     "max_compliance_factor": max_compliance_factor,
                                     "displacement_limits": [vars(d) for d in displacement_limits]})
    design, density_filter, proj, interp, settings, parameters, responses = parts
    formulation = MinMass(responses, limits, displacement_limits)
    return _run(model, formulation, design, density_filter, proj, interp, settings, parameters,
                initial, callback, resume)
