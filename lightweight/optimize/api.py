"""Public entry points: ``minimize_compliance`` and ``minimize_mass`` (stable public names, docs/architecture.md).

They turn keyword arguments into the loop's parts (design map, filter, projection,
interpolation, formulation, optimizer) and validate them up front, so a wrong set name or an
impossible volume fraction fails in milliseconds, not after the first FE solve.
"""

from __future__ import annotations

import inspect

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import OptimizationError
from .analysis import Analysis
from .design import DesignSpace
from .filters import make_filter
from .interpolation import SELF_WEIGHT_LINEAR_BELOW, Interpolation
from .loop import LoopSettings, SimpLoop
from .problem import Problem, Schedule
from .problems import DisplacementLimit
from .projection import HeavisideProjection
from .responses import Compliance, Constraint, Displacement, VolumeFraction
from .stages import density_pipeline

FILTERS = ("sensitivity", "density", "helmholtz", None)
# projection of minimize_mass with local stress constraints when none is given (projection="auto")
STRESS_PROJECTION = {"beta": 1.0, "beta_max": 8.0}


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
           solver, problem: str, extra_parameters: dict, manufacturing=(), settle_iterations: int = 10,
           mma_asymptotes: str = "bounds", shrink_move_with_beta: bool = True):
    """Validate the options and make the run's parts: (pipeline, analysis, settings, schedule, parameters)."""
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
    if optimizer not in ("oc", "mma"):
        raise OptimizationError(f"optimizer must be 'oc', 'mma' or 'auto', got {optimizer!r}")
    if mma_asymptotes not in ("bounds", "move"):
        raise OptimizationError(f"mma_asymptotes must be 'bounds' (Svanberg's first asymptotes) or 'move' "
                                f"(from the move-limited box, TopOpt_in_PETSc's), got {mma_asymptotes!r}")
    if not isinstance(shrink_move_with_beta, (bool, np.bool_)):
        raise OptimizationError(f"shrink_move_with_beta must be True (MMA's move limit shrinks above "
                                f"projection beta 8) or False (fixed), got {shrink_move_with_beta!r}")
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
    design = DesignSpace(model.mesh, non_design=non_design, void=void, symmetry=symmetry, extrusion=extrusion,
                         ties=[rule for rule in manufacturing or () if hasattr(rule, "ties")])
    density_filter = make_filter(model.mesh, filter_radius, kind=filter) if filter else None
    linear_below = SELF_WEIGHT_LINEAR_BELOW if (model.has_self_weight() and interpolation == "simp") else 0.0
    interp = Interpolation(kind=interpolation, penalty=start, min_stiffness=min_stiffness,
                           linear_below=linear_below)
    extra_stages = _manufacturing_stages(model, design, manufacturing)
    pipeline = density_pipeline(design, density_filter, proj, sensitivity_filter=(filter == "sensitivity"),
                                extra_stages=extra_stages)
    settings = LoopSettings(
        optimizer=optimizer, max_iterations=int(max_iterations), tolerance=float(tolerance),
        objective_tolerance=float(objective_tolerance), move=float(move), mma_asymptotes=mma_asymptotes,
        shrink_move_with_beta=bool(shrink_move_with_beta),
        settle_iterations=int(settle_iterations), verbose=bool(verbose),
        checkpoint=None if checkpoint is None else str(checkpoint), checkpoint_every=int(checkpoint_every))
    schedule = Schedule(penalty=(start, end, 0.5), beta=None if proj is None else (proj.beta, beta_end),
                        interval=int(continuation_interval))
    parameters = {"problem": problem, "filter": filter, "filter_radius": filter_radius,
                  "projection": projection, "optimizer": optimizer, "penalty": penalty,
                  "interpolation": interpolation, "min_stiffness": min_stiffness,
                  "linear_below": linear_below,
                  "non_design": list(_names(non_design)), "void": list(_names(void)),
                  "symmetry": symmetry, "extrusion": extrusion, "max_iterations": int(max_iterations),
                  "tolerance": tolerance, "objective_tolerance": objective_tolerance, "move": move,
                  "continuation_interval": continuation_interval, "solver": solver,
                  **({"manufacturing": [getattr(m, "describe", lambda: repr(m))() for m in manufacturing]}
                     if manufacturing else {}),
                  # recorded only when not the default: earlier checkpoints keep their resume key
                  **({"mma_asymptotes": mma_asymptotes} if mma_asymptotes != "bounds" else {}),
                  **({"shrink_move_with_beta": False} if not shrink_move_with_beta else {}),
                  **extra_parameters}
    analysis = Analysis(model, interp, solver=solver)
    return pipeline, analysis, settings, schedule, parameters


def _manufacturing_stages(model, design, manufacturing) -> list:
    """Stages of the manufacturing rules (each rule object makes its own stage for this model).

    A rule (lightweight.optimize.manufacturing) may act through a stage (overhang, draw
    direction, member size), through ties in the design map (symmetry, extrusion, patterns:
    ``rule.ties(mesh)``, given to the DesignSpace) or through constraints
    (:func:`_with_manufacturing_constraints`); ``stage`` returns None for the latter two.
    """
    stages = []
    for rule in manufacturing or ():
        make = getattr(rule, "stage", None)
        if make is None:
            raise OptimizationError(f"manufacturing rules are lw.Overhang, lw.DrawDirection, lw.MemberSize, "
                                    f"lw.Pattern ..., got {rule!r}")
        stage = make(model, design)
        if stage is not None:
            stages.append(stage)
    return stages


def _manufacturing_constraints(model, manufacturing) -> list:
    """Constraints the rules add to the problem (e.g. maximum member size: a local volume bound)."""
    return [con for rule in manufacturing or () for con in (getattr(rule, "constraints", None) or (lambda m: []))(model)]


def _with_manufacturing_constraints(problem: Problem, manufacturing) -> Problem:
    """The problem with the rules' constraints appended (the same problem if they add none)."""
    extra = _manufacturing_constraints(problem.model, manufacturing)
    if not extra:
        return problem
    return Problem(problem.objective, list(problem.constraints) + extra, name=problem.name)


def _names(names) -> Sequence[str]:
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def _displacement_constraints(model, displacement_limits) -> list:
    constraints = []
    for lim in displacement_limits or ():
        if not isinstance(lim, DisplacementLimit):
            raise OptimizationError(f"displacement_limits must hold lw.DisplacementLimit(...), got {lim!r}")
        if not (lim.limit > 0):
            raise OptimizationError(f"displacement limit on {lim.set!r} must be positive, got {lim.limit}")
        # (δ/limit)^2 - 1 <= 0 bounds |δ| smoothly
        constraints.append(Constraint(Displacement(model, lim.set, lim.component, lim.case), lim.limit,
                                      absolute=True))
    return constraints


def _per_case_limits(model, value, what: str) -> dict[str, float]:
    """A number (every load case) or {case: value} -> {case: float}, unknown cases named."""
    names = list(model.load_cases)
    if isinstance(value, Mapping):
        limits = {str(k): v for k, v in value.items()}
        unknown = [c for c in limits if c not in names]
        if unknown:
            raise OptimizationError(f"{what} for unknown load case{'s' if len(unknown) > 1 else ''} "
                                    f"{', '.join(map(repr, unknown))}; cases: {', '.join(names) or '(none)'}")
    else:
        limits = {c: value for c in names}
    out = {}
    for case, v in limits.items():
        try:
            out[case] = float(v)
        except (TypeError, ValueError):
            raise OptimizationError(f"{what} for load case {case!r} must be a number, got {v!r}") from None
        if not (np.isfinite(out[case]) and out[case] > 0):
            raise OptimizationError(f"{what} for load case {case!r} must be positive, got {v!r}")
    return out


def stress_limits(model, max_stress=None, min_safety_factor=None) -> dict[str, float]:
    """Allowed peak von Mises stress per load case from ``max_stress`` or ``min_safety_factor``.

    max_stress: a stress (every case) or {case: stress}, in the units of E; min_safety_factor:
    a number or {case: factor}, giving yield_strength / factor (needs the material's
    ``yield_strength``). Returns {} when neither is given.
    """
    if max_stress is not None and min_safety_factor is not None:
        raise OptimizationError("give max_stress or min_safety_factor, not both "
                                "(min_safety_factor F means max_stress = yield_strength / F)")
    if max_stress is not None:
        return _per_case_limits(model, max_stress, "max_stress")
    if min_safety_factor is None:
        return {}
    factors = _per_case_limits(model, min_safety_factor, "min_safety_factor")
    strength = model.material.yield_strength
    if strength is None:
        raise OptimizationError("min_safety_factor needs the material's yield strength: "
                                "lw.Material(..., yield_strength=...) ([material] yield_strength)")
    return {case: float(strength) / f for case, f in factors.items()}


def _stress_constraints(model, limits: Mapping[str, float], stress_options) -> list:
    """[Stress(model, cases, **stress_options) <= limits] or [] (see responses/stress.py)."""
    if not limits:
        if stress_options:
            raise OptimizationError("stress_options given without max_stress or min_safety_factor")
        return []
    from .responses.stress import Stress
    options = dict(stress_options or {})
    if options.get("aggregation") == "al":
        raise OptimizationError("stress_options: aggregation 'al' (local stress constraints by the augmented "
                                "Lagrangian) is minimize_mass's formulation; here use 'pnorm' or 'ks'")
    if "cases" in options:
        raise OptimizationError("stress_options: the load cases come from max_stress / min_safety_factor")
    try:
        response = Stress(model, cases=list(limits), **options)
    except TypeError as exc:
        raise OptimizationError(f"stress_options: {exc}") from None
    return [response <= [limits[c] for c in response.cases]]


def _stress_objective(model, base, limits: Mapping[str, float], stress_options, filter_radius=None):
    """The objective ``base`` plus the augmented-Lagrangian penalty of local stress constraints
    (:class:`~lightweight.optimize.responses.stress.StressLagrangian`), or None when the stress
    options ask for an aggregated constraint (``aggregation`` "pnorm" or "ks") or there is no limit."""
    options = dict(stress_options or {})
    aggregation = options.get("aggregation", "al")
    if limits and aggregation not in ("al", "pnorm", "ks"):
        # checked here, where all three forms are known (the aggregated Stress knows only its two)
        raise OptimizationError(f"stress_options: aggregation must be 'al' (local constraints, the default), "
                                f"'pnorm' or 'ks', got {aggregation!r}")
    if not limits or aggregation != "al":
        return None
    options.pop("aggregation", None)
    if "singular_radius" not in options:
        # the corner field is judged at the smallest radius the filtered design can draw: the filter's
        # diameter (or four cell sizes without a filter)
        cell = float(np.mean(model.mesh.cell_volumes()) ** (1.0 / model.dim))
        options["singular_radius"] = 2.0 * float(filter_radius) if filter_radius else 4.0 * cell
    if "cases" in options:
        raise OptimizationError("stress_options: the load cases come from max_stress / min_safety_factor")
    from .responses.stress import StressLagrangian
    try:
        return StressLagrangian(model, base, dict(limits), **options)
    except TypeError as exc:
        raise OptimizationError(f"stress_options: {exc} (the local-constraint formulation, aggregation "
                                f"'al', takes relaxation, q, epsilon, q_floor, exclude, multiplier_penalty, "
                                f"penalty_growth, penalty_max, update_every, tolerance, sampling, singular_radius, singular_floor)") from None


def _frequency_constraints(model, min_frequency, frequency_options) -> list:
    """[Frequency(model, **options) >= min_frequency] or [] (see responses/frequency.py).

    By default the lowest 3 frequencies are aggregated (a KS soft minimum, a lower bound of the
    first), which keeps the constraint smooth when the first two coincide or cross.
    """
    if min_frequency is None:
        if frequency_options:
            raise OptimizationError("frequency_options given without min_frequency")
        return []
    from .responses.frequency import Frequency
    try:
        floor = float(min_frequency)
    except (TypeError, ValueError):
        raise OptimizationError(f"min_frequency must be a frequency in Hz, got {min_frequency!r}") from None
    if not (np.isfinite(floor) and floor > 0):
        raise OptimizationError(f"min_frequency must be a positive frequency in Hz, got {min_frequency!r}")
    options = dict(frequency_options or {})
    if "mode" not in options:
        options.setdefault("n_modes", 3)
    try:
        response = Frequency(model, **options)
    except TypeError as exc:
        raise OptimizationError(f"frequency_options: {exc}") from None
    return [response >= floor]


def _frequency_parameters(min_frequency, frequency_options) -> dict:
    """What a run records about its frequency floor (provenance, resume key)."""
    if min_frequency is None:
        return {}
    return {"min_frequency": float(min_frequency), "frequency_options": dict(frequency_options or {})}


def make_loop(model, problem: Problem, *, initial: float = 0.5, filter_radius: float | None = None,
              filter: str | None = "density", projection=None, optimizer: str = "mma", penalty=3.0,
              interpolation: str = "simp", min_stiffness: float = 1e-9, non_design=(), void=(),
              symmetry=None, extrusion=None, manufacturing=(), max_iterations: int = 200,
              tolerance: float = 0.01, objective_tolerance: float = 1e-3, move: float = 0.1,
              continuation_interval: int = 25, callback=None, checkpoint=None,
              checkpoint_every: int = 10, solver: str = "auto", verbose: bool = True,
              settle_iterations: int = 10, record: dict | None = None,
              mma_asymptotes: str = "bounds", shrink_move_with_beta: bool = True) -> SimpLoop:
    """The SimpLoop that :func:`optimize_problem` runs (for stepping it by hand: benchmarks, notebooks).

    record: more parameters to record in the result's provenance (a preset's own arguments).
    mma_asymptotes: "bounds" (Svanberg's first asymptotes at +-0.5 of [0, 1], the default) or
    "move" (first asymptotes from the move-limited box, TopOpt_in_PETSc's first step).
    shrink_move_with_beta: MMA's move limit divided by β / 8 once the projection's β exceeds 8
    (the default; False keeps it fixed; see :mod:`lightweight.optimize.loop`).
    """
    if not isinstance(problem, Problem):
        raise OptimizationError(f"optimize_problem() takes a lw.Problem, got {type(problem).__name__}")
    if problem.model is not model:
        raise OptimizationError("the problem's responses were built for another model")
    if optimizer == "auto":
        optimizer = "mma"
    parts = _build(model, filter_radius=filter_radius, filter=filter, projection=projection,
                   optimizer=optimizer, penalty=penalty, interpolation=interpolation,
                   min_stiffness=min_stiffness, non_design=non_design, void=void, symmetry=symmetry,
                   extrusion=extrusion, max_iterations=max_iterations, tolerance=tolerance,
                   objective_tolerance=objective_tolerance, move=move,
                   continuation_interval=continuation_interval, verbose=verbose,
                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, solver=solver,
                   problem=problem.name,
                   extra_parameters={**(record or {}), "problem_definition": problem.describe()},
                   manufacturing=manufacturing, settle_iterations=settle_iterations,
                   mma_asymptotes=mma_asymptotes, shrink_move_with_beta=shrink_move_with_beta)
    pipeline, analysis, settings, schedule, parameters = parts
    problem = _with_manufacturing_constraints(problem, manufacturing)
    return SimpLoop(problem, pipeline, analysis, settings, schedule, initial, callback=callback,
                    parameters=parameters)


def optimize_problem(model, problem: Problem, *, resume=None, **options):
    """Solve a user-composed :class:`~lightweight.optimize.problem.Problem` with the SIMP loop.

    problem: objective and constraints from :mod:`lightweight.optimize.responses`
    (``Problem(Mass(model), [Compliance(model) <= 40.0])``); options as :func:`make_loop`
    (those of :func:`minimize_compliance`: filter_radius, filter, projection, optimizer
    (default "mma"), penalty, non_design, manufacturing, max_iterations, ...); resume: a
    checkpoint path. Returns an OptimizationResult.
    """
    return _run(model, problem, options, {}, resume)


def minimize_compliance(model, volume_fraction: float = 0.5, filter_radius: float | None = None,
                        filter: str | None = "density", projection=None, optimizer: str = "auto",
                        penalty=3.0, interpolation: str = "simp", min_stiffness: float = 1e-9,
                        non_design=(), void=(), symmetry=None, extrusion=None, manufacturing=(),
                        case_weights: Mapping[str, float] | None = None,
                        displacement_limits: Sequence[DisplacementLimit] = (),
                        max_stress=None, min_safety_factor=None, stress_options=None,
                        min_frequency=None, frequency_options=None,
                        max_iterations: int = 200, tolerance: float = 0.01,
                        objective_tolerance: float = 1e-3, move: float = 0.2,
                        continuation_interval: int = 25, initial: float | None = None,
                        callback=None, checkpoint=None, checkpoint_every: int = 10, resume=None,
                        solver: str = "auto", verbose: bool = True, settle_iterations: int = 10,
                        mma_asymptotes: str = "bounds", shrink_move_with_beta: bool = True):
    """Stiffest layout for a volume fraction: min Σ w_k c_k s.t. V(ρ̄) <= volume_fraction.

    filter_radius is in the mesh's length units (top88's rmin for unit elements). penalty: a
    number or (start, end) for continuation. projection: None, "heaviside" or a dict
    {beta, beta_max, eta}. optimizer: "oc" (top88), "mma" or "auto". non_design / void: set
    names kept solid / empty. symmetry: "x" | ("x", position) | list; extrusion: "z".
    settle_iterations: a projected run at its final β stops once the objective has moved less
    than objective_tolerance in each of this many iterations (constraints holding).
    mma_asymptotes: "bounds" (default) or "move": MMA's first step bounded by the move limit
    (TopOpt_in_PETSc's), see :func:`make_loop`. shrink_move_with_beta: MMA's move limit divided
    by β / 8 above β = 8 with projection (default True), see :func:`make_loop`.
    max_stress / min_safety_factor: a stress limit per load case (number or {case: value};
    see :func:`stress_limits`), bounded by the aggregated relaxed von Mises stress
    (:class:`~lightweight.optimize.responses.stress.Stress`, options in ``stress_options``).
    min_frequency: a floor in Hz on the lowest natural frequency
    (:class:`~lightweight.optimize.responses.frequency.Frequency`, options in
    ``frequency_options``, e.g. {"n_modes": 3, "mass_law": "pedersen"}).
    Returns an :class:`~lightweight.optimize.result.OptimizationResult`.
    """
    options = _loop_options(locals())
    max_stresses = stress_limits(model, max_stress, min_safety_factor)
    extra_constraints = _stress_constraints(model, max_stresses, stress_options)
    extra_constraints += _frequency_constraints(model, min_frequency, frequency_options)
    needs_mma = bool(displacement_limits) or model.has_self_weight() or bool(extra_constraints)
    needs_mma = needs_mma or bool(_manufacturing_constraints(model, manufacturing))
    if optimizer == "auto":
        optimizer = "mma" if needs_mma else "oc"
    if optimizer == "oc" and needs_mma:
        raise OptimizationError("optimizer='oc' handles only compliance minimization under a volume "
                                "constraint without self-weight or displacement limits; use optimizer='mma'")
    if not (0 < volume_fraction <= 1):
        raise OptimizationError(f"volume_fraction must be in (0, 1], got {volume_fraction}")
    problem = compliance_problem(model, volume_fraction, case_weights, displacement_limits, extra_constraints)
    options.update(optimizer=optimizer, initial=volume_fraction if initial is None else initial)
    record = {"volume_fraction": volume_fraction, "case_weights": case_weights,
              "displacement_limits": [vars(d) for d in displacement_limits],
              **_stress_parameters(max_stresses, stress_options),
              **_frequency_parameters(min_frequency, frequency_options)}
    return _run(model, problem, options, record, resume)


def _loop_options(arguments: dict) -> dict:
    """A preset's arguments that are options of :func:`make_loop` (filter, penalty, iterations, ...)."""
    accepted = inspect.signature(make_loop).parameters
    return {k: v for k, v in arguments.items() if k in accepted and k not in ("model", "problem", "record")}


def _run(model, problem: Problem, options: dict, record: dict, resume):
    loop = make_loop(model, problem, record=record, **options)
    if resume is not None:
        loop.load_checkpoint(str(resume))
    return loop.run()


def _stress_parameters(max_stresses, stress_options) -> dict:
    """What a run records about its stress limits (provenance, resume key)."""
    return {"max_stress": dict(max_stresses), "stress_options": dict(stress_options or {})} if max_stresses else {}


def compliance_problem(model, volume_fraction: float, case_weights=None, displacement_limits=(),
                       extra_constraints=()) -> Problem:
    """min Σ w_k c_k s.t. volume fraction <= volume_fraction (displacement limits, other constraints)."""
    weights = dict(case_weights) if case_weights else {c: 1.0 for c in model.load_cases}
    objective = Compliance(model, weights=weights)
    constraints = [VolumeFraction(model) <= volume_fraction]
    constraints += _displacement_constraints(model, displacement_limits)
    constraints += list(extra_constraints)
    return Problem(objective, constraints, name="min_compliance")


def mass_problem(model, compliance_limits: Mapping[str, float], displacement_limits=(),
                 extra_constraints=(), objective=None) -> Problem:
    """min volume fraction s.t. c_k <= limit_k for every limited load case (displacement limits,
    other constraints such as stress or frequency). objective: a response replacing the volume
    fraction (the volume fraction plus the stress penalty of :func:`_stress_objective`)."""
    names = list(model.load_cases)
    # unknown names first: a typo in a case name also leaves that case without a limit
    for c in compliance_limits:
        if c not in names:
            raise OptimizationError(f"compliance limit for unknown load case {c!r}; cases: {', '.join(names)}")
    missing = [c for c in names if c not in compliance_limits]
    if missing and not displacement_limits and not extra_constraints and objective is None:
        raise OptimizationError(f"no compliance limit for load cases {missing}")
    limited = [c for c in names if c in compliance_limits]
    constraints = []
    if limited:
        for c in limited:
            if not float(compliance_limits[c]) > 0:
                raise OptimizationError(f"compliance limit for {c!r} must be positive, got {compliance_limits[c]}")
        constraints.append(Compliance(model, cases=limited) <= [float(compliance_limits[c]) for c in limited])
    constraints += _displacement_constraints(model, displacement_limits)
    constraints += list(extra_constraints)
    if not constraints and objective is None:
        raise OptimizationError("minimize_mass needs a compliance or displacement limit")
    return Problem(VolumeFraction(model) if objective is None else objective, constraints, name="min_mass")


def minimize_mass(model, max_compliance=None, max_compliance_factor: float | None = None,
                  filter_radius: float | None = None, filter: str | None = "density",
                  projection="auto", optimizer: str = "mma", penalty=3.0, interpolation: str = "simp",
                  min_stiffness: float = 1e-9, non_design=(), void=(), symmetry=None, extrusion=None,
                  manufacturing=(), displacement_limits: Sequence[DisplacementLimit] = (),
                  max_stress=None, min_safety_factor=None, stress_options=None,
                  min_frequency=None, frequency_options=None, max_iterations: int = 200,
                  tolerance: float = 0.01, objective_tolerance: float = 1e-3, move: float = 0.1,
                  continuation_interval: int = 25, initial: float = 0.5, callback=None,
                  checkpoint=None, checkpoint_every: int = 10, resume=None, solver: str = "auto",
                  verbose: bool = True, settle_iterations: int = 10, mma_asymptotes: str = "bounds",
                  shrink_move_with_beta: bool = True):
    """Lightest layout that is stiff enough: min V(ρ̄) s.t. c_k <= limit_k for every load case.

    max_compliance: a number (every case) or {case: limit}, in the model's units (force x length);
    or max_compliance_factor: limit = factor x the compliance of the fully solid design.
    displacement_limits: [lw.DisplacementLimit(set, component, limit, case=None), ...].
    max_stress / min_safety_factor: stress limits per load case (see :func:`minimize_compliance`);
    with them alone the compliance is free. min_frequency: a floor in Hz on the lowest natural
    frequency (see :func:`minimize_compliance`). Other arguments as :func:`minimize_compliance`.
    Solved with MMA. Stress limits are by default local constraints at every sampling point
    (integration points and cell corners), held by an augmented Lagrangian in the objective
    (:class:`~lightweight.optimize.responses.stress.StressLagrangian`; ``stress_options=
    {"aggregation": "pnorm"}`` gives one aggregated constraint instead); projection="auto" is then
    Heaviside β 1 -> 8 (``STRESS_PROJECTION``), otherwise none.
    """
    from ..fem.static import solve
    options = _loop_options(locals())
    if max_compliance is not None and max_compliance_factor is not None:
        raise OptimizationError("give max_compliance or max_compliance_factor, not both")
    max_stresses = stress_limits(model, max_stress, min_safety_factor)
    # stress limits: by default local constraints in the objective (augmented Lagrangian)
    objective = _stress_objective(model, VolumeFraction(model), max_stresses, stress_options, filter_radius)
    extra_constraints = [] if objective is not None else _stress_constraints(model, max_stresses, stress_options)
    extra_constraints += _frequency_constraints(model, min_frequency, frequency_options)
    cases = model.load_cases
    if max_compliance is None and max_compliance_factor is None:
        if not displacement_limits and not extra_constraints and objective is None:
            raise OptimizationError("minimize_mass needs max_compliance, max_compliance_factor, "
                                    "displacement_limits, max_stress, min_safety_factor or min_frequency")
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
    if optimizer == "oc":
        raise OptimizationError("optimizer='oc' handles only compliance minimization under a volume "
                                "constraint; minimize_mass needs optimizer='mma'")
    problem = mass_problem(model, limits, displacement_limits, extra_constraints, objective=objective)
    options.update(optimizer="mma" if optimizer == "auto" else optimizer)
    if isinstance(projection, str) and projection == "auto":
        # local stress constraints: Heaviside β 1 -> 8 (gray cells would carry η(ρ̄) σ below the
        # material's stress; sharper than 8, the staircase boundary's own notches take over)
        options["projection"] = STRESS_PROJECTION if objective is not None and filter in ("density", "helmholtz") \
            else None
    record = {"compliance_limits": limits, "max_compliance_factor": max_compliance_factor,
              "displacement_limits": [vars(d) for d in displacement_limits],
              **_stress_parameters(max_stresses, stress_options),
              **_frequency_parameters(min_frequency, frequency_options)}
    return _run(model, problem, options, record, resume)


def frequency_problem(model, volume_fraction: float, n_modes: int = 3, frequency_options=None) -> Problem:
    """max f_KS (the lowest n_modes frequencies, soft minimum) s.t. volume fraction <= volume_fraction.

    The objective is -f_KS / f_1(solid part), O(1) for MMA.
    """
    from ..fem.modal import modes
    from .responses.frequency import Frequency, Scaled
    if not (0 < volume_fraction <= 1):
        raise OptimizationError(f"volume_fraction must be in (0, 1], got {volume_fraction}")
    options = dict(frequency_options or {})
    if "mode" not in options:
        options.setdefault("n_modes", n_modes)
    try:
        response = Frequency(model, **options)
    except TypeError as exc:
        raise OptimizationError(f"frequency_options: {exc}") from None
    reference = float(modes(model, n=1).frequencies[0])
    if not reference > 0:
        raise OptimizationError("the solid part's first frequency is 0: the model needs supports that "
                                "hold it (a free body has rigid-body modes at 0 Hz)")
    return Problem(Scaled(response, -1.0 / reference), [VolumeFraction(model) <= volume_fraction],
                   name="max_frequency")


def maximize_frequency(model, volume_fraction: float = 0.5, n_modes: int = 3, frequency_options=None,
                       resume=None, **options):
    """Stiffest layout against vibration: max lowest natural frequency s.t. V(ρ̄) <= volume_fraction.

    The lowest ``n_modes`` frequencies are aggregated by a KS soft minimum (repeated eigenvalues
    stay differentiable); mass ∝ ρ̄ with Pedersen's low-density stiffness (no spurious modes in
    the void); frequency_options as :class:`~lightweight.optimize.responses.frequency.Frequency`.
    The model needs supports and no load case. Other options as :func:`optimize_problem`
    (filter_radius, filter, projection, penalty, non_design, max_iterations, ...); solved with MMA.
    Returns an OptimizationResult (``history`` records the frequency each iteration).
    """
    problem = frequency_problem(model, volume_fraction, n_modes, frequency_options)
    options.setdefault("initial", volume_fraction)
    record = {"volume_fraction": volume_fraction, "n_modes": n_modes,
              "frequency_options": dict(frequency_options or {})}
    return _run(model, problem, options, record, resume)
