"""The SIMP loop: stages -> analyse -> chain rule -> update, until converged.

This is top88's loop (Andreassen et al. 2011) with the pieces passed in::

    x  --pipeline of stages (design map, filter, projection, ..., passive cells)-->  ρ̄
    ρ̄  --problem (one FE solve, responses, adjoints)-->  f, g, df/dρ̄, dg/dρ̄
    df/dx = pipeline.backward(df/dρ̄)       (every stage's transpose, all rows at once)
    x  <-  OC (volume-constrained compliance) or MMA (anything)

Continuation (:class:`~lightweight.optimize.problem.Schedule`): the SIMP penalty rises from its
start to its end value and the projection sharpness β doubles every ``continuation_interval``
iterations (or as soon as the design has settled at the current level); convergence is only
declared at the final level.
Stopping rule: the largest design change is <= ``tolerance`` *and* the objective moved by less
than ``objective_tolerance`` (relative) in the last iteration *and* constraints hold to 1e-3;
or, with projection at its final β, the objective has moved by less than
``objective_tolerance`` in each of the last ``settle_iterations`` iterations with the
constraints holding (a sharp projection keeps a few boundary elements flipping, so the design
change alone never settles); or the iteration cap. Every iteration appends a history record,
calls ``callback`` (which can stop the run by returning True) and optionally writes a
checkpoint from which a run resumes with bit-identical results.

MMA's move limit follows the projection: above β = ``FULL_MOVE_UP_TO_BETA`` (8) it is ``move``
divided by β / 8 (0.1 and 0.05 at β = 16 and 32 for the default 0.2), set each time the
continuation restarts MMA. The projection's slope at its threshold grows like β / 2, so a fixed
move in x lets the physical densities jump across a member's width in one step; chained
projections (the member-size rule's opening and closing, four projections at the loop's β)
multiply that. Measured on the 60 x 20 MBB with a 3-cell minimum member size (MMA, Heaviside
1 -> 32): with the fixed move the compliance jumped from 194 to 1 122-28 045 when β reached 32
and ended at 554 (MMA's dual subproblem) or 195 (its interior point: the outcome hung on the
last digits); with the move shrinking above β = 8, 193.3 (0.2 % of the solid violating) and
194.0 (none). Shrinking from β = 4 on did better there (193.1 / 193.5, no spike on the way) but
changed the stress-constrained runs, whose projection ends at β = 8 and which were measured
with the full move: the L-bracket's re-entrant corner kept material 0.41 and 0.70 dense within
two elements at n = 50 and 80 (0.07 at n = 50 with the full move in the same session; the
example's table has 0.20 at n = 80), so up to β = 8 the move stays whole. OC keeps
top88's fixed move. ``shrink_move_with_beta=False`` keeps the fixed move.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import LightweightError, OptimizationError
from ..provenance import hash_inputs, provenance
from .mma import MMA
from .oc import oc_update
from .result import OptimizationResult

#: MMA's move limit is the full ``move`` up to this projection β, then move * this / β
FULL_MOVE_UP_TO_BETA = 8.0


@dataclass
class LoopSettings:
    """Knobs of the loop (see module docstring)."""

    optimizer: str = "oc"
    max_iterations: int = 200
    tolerance: float = 0.01
    objective_tolerance: float = 1e-3
    move: float = 0.2
    mma_asymptotes: str = "bounds"          # MMA's first asymptotes: "bounds" or "move" (PETSc's)
    shrink_move_with_beta: bool = True      # MMA's move / (β / 8) above β = 8 (module docstring)
    settle_iterations: int = 10             # projected runs: objective settled this long -> converged
    verbose: bool = True
    checkpoint: str | None = None
    checkpoint_every: int = 10
    extra: dict = field(default_factory=dict)


@dataclass
class IterationState:
    """What the callback sees after each iteration."""

    iteration: int
    design: np.ndarray          # optimizer variables x (n_variables,)
    density: np.ndarray         # physical densities ρ̄ (n_cells,)
    objective: float
    constraints: np.ndarray
    record: dict


def grayness(rho: np.ndarray, volumes: np.ndarray) -> float:
    """Volume-weighted 4 ρ (1 - ρ): 0 for a black-and-white design, 1 for all-gray 0.5."""
    return float(4 * volumes @ (rho * (1 - rho)) / volumes.sum())


class SimpLoop:
    """One optimization run; :meth:`run` returns an OptimizationResult.

    problem: a :class:`~lightweight.optimize.problem.Problem`; pipeline: the stage
    :class:`~lightweight.optimize.stages.Pipeline` from design variables to ρ̄; analysis: the
    :class:`~lightweight.optimize.analysis.Analysis` (model, law, solver); schedule: the
    continuation; initial: the starting value of every design variable.
    """

    def __init__(self, problem, pipeline, analysis, settings: LoopSettings, schedule, initial: float,
                 callback=None, parameters=None):
        from .stages import DesignMap
        self.problem = problem
        self.pipeline = pipeline
        self.analysis = analysis
        self.model = analysis.model
        maps = pipeline.find(DesignMap)
        if len(maps) != 1 or pipeline.stages[0] is not maps[0]:
            raise OptimizationError("the pipeline must start with exactly one DesignMap stage")
        self.design = maps[0].design
        self.settings = settings
        self.schedule = schedule
        schedule.attach(analysis.interpolation, pipeline)
        self.callback = callback
        self.parameters = dict(parameters or {})
        self.x = self.design.initial(initial)
        self.iteration = 0
        self.history: list[dict] = []
        self.mma = None
        if settings.optimizer == "oc":
            self._check_oc()
        if settings.optimizer == "mma":
            self.mma = self._new_mma()

    def _new_mma(self):
        return MMA(self.design.n_variables, self.problem.n_constraints, 0.0, 1.0, move_limit=self.mma_move(),
                   initial_asymptotes=self.settings.mma_asymptotes)

    def mma_move(self) -> float:
        """MMA's move limit at the projection's current β (module docstring), in design units."""
        beta = self.schedule.beta
        if not self.settings.shrink_move_with_beta or beta is None or beta <= FULL_MOVE_UP_TO_BETA:
            return self.settings.move
        return self.settings.move * FULL_MOVE_UP_TO_BETA / beta

    def _check_oc(self) -> None:
        """OC is top88's update: a non-linear objective under one linear (volume-type) constraint."""
        p = self.problem
        if p.objective.linear or len(p.constraints) != 1 or p.constraints[0].size != 1 \
                or not p.constraints[0].linear:
            raise OptimizationError(
                "optimizer='oc' handles only compliance minimization under a volume constraint "
                f"(this problem: minimize {p.objective.name} subject to "
                f"{', '.join(p.constraint_names()) or 'nothing'}); use optimizer='mma'")
        if not hasattr(p.constraints[0].response, "coefficients"):
            raise OptimizationError("optimizer='oc' needs the constraint's constant gradient "
                                    "(a response with `coefficients`, like VolumeFraction)")

    # ------------------------------------------------------------------ the map x -> ρ̄
    def physical(self, x: np.ndarray) -> np.ndarray:
        """Physical densities ρ̄ (n_cells,) of design variables x."""
        return self.pipeline(x)

    def evaluate(self, x: np.ndarray):
        """Objective, constraints and their gradients w.r.t. x at design x.

        Returns (trace, state, f, g (m,), df/dx (n_variables,), dg/dx (m, n_variables), values).
        """
        trace = self.pipeline.forward(x)
        state = self.analysis.state(trace.output)
        f, g, df, dg, values = self.problem.evaluate(state)
        heuristic = ~self.problem.linear_rows()
        grads = self.pipeline.backward(trace, np.vstack([df[None, :], dg]), heuristic_rows=heuristic)
        return trace, state, f, g, grads[0], grads[1:], values

    # ------------------------------------------------------------------ optimizer updates
    def _oc_step(self, trace, d_objective):
        s = self.settings
        constraint = self.problem.constraints[0]
        coefficients = constraint.response.coefficients
        # top88 uses dv = 1 per element (relative cell volumes), not the normalised constraint
        # gradient: the bisection's stopping point depends on the scale of dc/dv.
        scale = 1.0 / coefficients.mean()
        relative = coefficients * scale
        target = float(constraint.limits[0]) * scale
        dv = self.pipeline.backward(trace, relative[None, :], heuristic_rows=np.array([False]))[0]
        if self.pipeline.is_affine:
            # every stage is affine: V(x) = dv . x + V(0) (top99neo), no pipeline run per bisection step
            offset = float(relative @ self.pipeline(np.zeros_like(self.x)))

            def volume_of(x_new):
                return float(dv @ x_new) + offset
        else:
            def volume_of(x_new):
                return float(relative @ self.pipeline(x_new))
        return oc_update(self.x, d_objective, dv, volume_of, target, move=s.move,
                         affine_volume=(dv, offset) if self.pipeline.is_affine else None)

    # ------------------------------------------------------------------ one iteration
    def step(self) -> tuple[bool, str]:
        s = self.settings
        t0 = time.perf_counter()
        self.iteration += 1
        trace, state, f, g, d_objective, d_constraints, values = self.evaluate(self.x)
        rho = trace.output
        state.release_gradients()         # the update's temporaries need the room
        if s.optimizer == "oc":
            x_new = self._oc_step(trace, d_objective)
        else:
            x_new = self.mma.update(self.x, f, d_objective, g, d_constraints)
        change = float(np.max(np.abs(x_new - self.x)))
        self.x = x_new
        previous = self.history[-1]["objective"] if self.history else None
        rel_change = abs(f - previous) / max(abs(previous), 1e-300) if previous is not None else np.inf
        volumes = self.analysis.cell_volumes
        record = {
            "iteration": self.iteration, "objective": float(f),
            "constraints": [float(v) for v in g],
            "volume_fraction": self.analysis.volume_fraction(rho),
            "change": change, "objective_change": float(rel_change),
            "grayness": grayness(rho, volumes),
            "penalty": self.schedule.penalty,
            "beta": self.schedule.beta,
            "seconds": 0.0,
        }
        if state.has_static:
            record.update({f"compliance:{k}": float(v)
                           for k, v in zip(self.analysis.case_names, state.compliances())})
            record["solver"] = state.static.info.get("solver")
            its = state.static.info.get("iterations")
            if its is not None:
                record["solver_iterations"] = int(np.max(its))
            if state.static.info.get("rtol") is not None:
                record["solver_rtol"] = float(state.static.info["rtol"])
        # every response value by its label, e.g. "displacement[tip.y, brake]", "mass"
        record.update({label: value for label, value in values.items() if label not in record})
        # responses that adapt between iterations (the stress aggregate's normalisation) do it
        # now, after the optimizer has used this iteration's values; their figures go on record
        for response in self._responses():
            if hasattr(response, "end_iteration"):
                record.update(response.end_iteration(state))
        # responses that hold constraints inside the objective (the stress augmented Lagrangian)
        # say themselves whether those are met
        feasible = bool(np.all(g <= 1e-3)) and all(
            response.satisfied(state) for response in self._responses() if hasattr(response, "satisfied"))
        settled = change <= s.tolerance and rel_change <= s.objective_tolerance and feasible
        stop, message = False, ""
        final = self.schedule.at_final_level()
        if settled and final:
            stop, message = True, (f"converged: design change {change:.3g} <= {s.tolerance}, objective "
                                   f"change {rel_change:.2g} <= {s.objective_tolerance}, constraints hold")
        elif final and self.schedule.beta is not None and feasible and self._objective_settled(rel_change):
            stop, message = True, (
                f"converged: objective moved < {s.objective_tolerance:g} (relative) in each of the last "
                f"{s.settle_iterations} iterations at the final projection beta {self.schedule.beta:g} "
                f"with the constraints holding; the design change ({change:.3g}) stays above "
                f"{s.tolerance} only because single boundary elements keep flipping")
        else:
            if self.schedule.advance(self.iteration, settled) and self.mma is not None:
                # the problem changed: restart the asymptotes from the current design
                self.mma = self._new_mma()
        record["seconds"] = time.perf_counter() - t0
        self.history.append(record)
        if s.verbose:
            self._print_progress(record, f, g)
        if self.callback is not None:
            cb_state = IterationState(self.iteration, self.x.copy(), rho.copy(), float(f), g.copy(), record)
            if self.callback(cb_state) is True:
                stop, message = True, "stopped by callback"
        if s.checkpoint and (stop or self.iteration % s.checkpoint_every == 0):
            self.save_checkpoint(s.checkpoint)
        return stop, message

    def _responses(self) -> list:
        """The objective and every constrained response of the problem."""
        return [self.problem.objective] + [c.response for c in self.problem.constraints]

    def _objective_settled(self, rel_change: float) -> bool:
        """True if this and the previous settle_iterations - 1 objective changes are all small, at one β."""
        n = self.settings.settle_iterations
        if n < 1:
            return False
        recent = self.history[len(self.history) - (n - 1):] if n > 1 else []
        if len(recent) < n - 1 or any(rec["beta"] != self.schedule.beta for rec in recent):
            return False
        tolerance = self.settings.objective_tolerance
        return rel_change <= tolerance and all(rec["objective_change"] <= tolerance for rec in recent)

    def _print_progress(self, record, f, g) -> None:
        cons = " ".join(f"{v:+.3f}" for v in g[:4])
        remaining = self.settings.max_iterations - self.iteration
        recent = [rec["seconds"] for rec in self.history[-5:]]
        eta = remaining * float(np.mean(recent)) if recent else 0.0
        solver = record.get("solver")
        its = record.get("solver_iterations")
        solver_text = "" if solver is None else f"  {solver}{'' if its is None else f' {its} it'}"
        beta = record["beta"]
        print(f"it {self.iteration:4d}  obj {f:11.5g}  g [{cons}]  vol {record['volume_fraction']:.4f}  "
              f"change {record['change']:.3f}  gray {record['grayness']:.3f}  p {record['penalty']:.2f}"
              f"{'' if beta is None else f'  beta {beta:g}'}  {record['seconds']:.2f} s{solver_text}"
              f"  (at most {_duration(eta)} left)", file=sys.stdout, flush=True)

    def run(self) -> OptimizationResult:
        """Iterate to convergence or the cap.

        If an iteration fails (a LightweightError, or Ctrl-C), the exception is re-raised with
        ``partial_result``: the OptimizationResult of the last completed iteration (None if
        there was none or it cannot be analysed), so a long run's work is not lost.
        """
        message = f"iteration cap {self.settings.max_iterations} reached"
        converged = False
        while self.iteration < self.settings.max_iterations:
            try:
                stop, msg = self.step()
            except (LightweightError, KeyboardInterrupt) as exc:
                exc.partial_result = self._partial_result(exc)
                raise
            if stop:
                message, converged = msg, msg.startswith("converged")
                break
        return self.result(converged, message)

    def _partial_result(self, exc: BaseException):
        """The result of the design of the last completed iteration, or None."""
        completed = len(self.history)
        if completed == 0:
            return None
        # a failed step can advance the counter and continuation before it raises: report the
        # state the last history record describes
        self.iteration = self.history[-1]["iteration"]
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        try:
            return self.result(False, f"stopped after iteration {self.iteration} ({reason})")
        except (LightweightError, KeyboardInterrupt):
            return None

    def result(self, converged: bool, message: str) -> OptimizationResult:
        from ..fem.static import build_solution
        rho = self.physical(self.x)
        # final analysis of the final design (the history holds the previous one)
        law = self.analysis.interpolation
        # a model without load cases (modal problems) has no static solution to report
        static = self.analysis.state(rho).static if self.analysis.case_names else None
        # a stress-constrained design reports the relaxed stress its constraint bounds
        scales = [r.stress_scale(rho) for r in self._responses() if hasattr(r, "stress_scale")]
        # no solve follows: the solver's factor or AMG hierarchy goes before the result's
        # fields are built (they were the run's memory peak on large parts, ~160 B per tet4)
        self.analysis.system.release_solver()
        solution = None if static is None else build_solution(
            self.model, static, rho, **law.to_parameters(), **({"stress_scale": scales[0]} if scales else {}))
        vf = self.analysis.volume_fraction(rho)
        volume = float(self.analysis.cell_volumes @ rho)
        parameters = {**self.parameters, "final_penalty": float(law.penalty),
                      "linear_below": float(law.linear_below)}
        prov = provenance(model_sha256=self.model.fingerprint(), density_sha256=hash_inputs(rho),
                          parameters=parameters, solver=None if static is None else static.info.get("solver"))
        return OptimizationResult(
            model=self.model, density=rho, design_variables=self.x.copy(), history=self.history,
            problem=self.parameters.get("problem", ""), converged=converged, message=message,
            compliance={} if solution is None else dict(solution.compliance), volume_fraction=vf, volume=volume,
            mass=volume * self.model.material.density, solution=solution,
            parameters=parameters, provenance=prov)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str) -> None:
        """Write everything needed to resume bit-identically (npz: arrays + JSON meta)."""
        arrays = {"x": self.x}
        mma_meta = None
        if self.mma is not None:
            mma_state = self.mma.state()
            mma_meta = {}
            for key, value in mma_state.items():
                if isinstance(value, np.ndarray):
                    arrays[f"mma.{key}"] = value
                else:
                    mma_meta[key] = value
        if self.analysis.last_displacements is not None:
            arrays["U"] = self.analysis.last_displacements
        for i, response in enumerate(self._responses()):       # e.g. the stress multipliers
            if hasattr(response, "checkpoint_arrays"):
                arrays.update({f"response{i}.{k}": v for k, v in response.checkpoint_arrays().items()})
        meta = {"iteration": self.iteration, "history": self.history, **self.schedule.state(),
                "mma": mma_meta, "parameters_sha256": self._resume_key(),
                "n_variables": int(self.design.n_variables)}
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, meta=np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8),
                 **arrays)
        import os
        os.replace(tmp, path)      # atomic: a crash never leaves a half-written checkpoint

    def _resume_key(self) -> str:
        """Hash of what must match to resume: the model and every option but the iteration cap."""
        options = {k: v for k, v in self.parameters.items() if k != "max_iterations"}
        return hash_inputs(self.model.fingerprint(), options)

    def load_checkpoint(self, path: str) -> None:
        try:
            data = np.load(path)
            meta = json.loads(bytes(data["meta"]).decode())
        except (OSError, ValueError, KeyError) as exc:
            raise OptimizationError(f"cannot read checkpoint {path}: {exc}") from None
        if meta["n_variables"] != self.design.n_variables:
            raise OptimizationError(f"checkpoint {path} has {meta['n_variables']} design variables, "
                                    f"this problem has {self.design.n_variables}: not the same problem")
        if meta["parameters_sha256"] != self._resume_key():
            raise OptimizationError(f"checkpoint {path} was written with other parameters; "
                                    f"resume with the same model and options")
        self.x = data["x"].copy()
        self.iteration = meta["iteration"]
        self.history = meta["history"]
        for i, response in enumerate(self._responses()):
            if hasattr(response, "resume") and self.history:
                response.resume(self.history[-1])
            if hasattr(response, "load_checkpoint_arrays"):
                prefix = f"response{i}."
                response.load_checkpoint_arrays({k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)})
        self.schedule.load_state(meta)
        if "U" in data:
            self.analysis.last_displacements = data["U"].copy()
        if meta["mma"] is not None:
            state = dict(meta["mma"])
            for key in data.files:
                if key.startswith("mma."):
                    state[key[4:]] = data[key].copy()
            self.mma = MMA.from_state(state)


def _duration(seconds: float) -> str:
    """A rough duration for the progress line: 45 s, 12 min, 2.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)
