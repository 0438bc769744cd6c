"""The SIMP loop: filter -> project -> analyse -> chain rule -> update, until converged.

This is top88's loop (Andreassen et al. 2011) with the pieces passed in::

    x  --design map-->  ρ_cells  --filter-->  ρ̃  --projection-->  ρ̄ (physical; passive cells imposed)
    ρ̄  --formulation (FE solve, adjoints)-->  f, g, df/dρ̄, dg/dρ̄
    df/dx = P^T F^T (H'(ρ̃) df/dρ̄)          (density filter), or top88's sensitivity filter
    x  <-  OC (volume-constrained compliance) or MMA (anything)

Continuation: the SIMP penalty rises from its start to its end value and the projection
sharpness β doubles every ``continuation_interval`` iterations (or as soon as the design has
settled at the current level); convergence is only declared at the final level.
Stopping rule: the largest design change is <= ``tolerance`` *and* the objective moved by less
than ``objective_tolerance`` (relative) in the last iteration *and* constraints hold to 1e-3;
or the iteration cap. Every iteration appends a history record, calls ``callback`` (which can
stop the run by returning True) and optionally writes a checkpoint from which a run resumes
with bit-identical results.
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


@dataclass
class LoopSettings:
    """Knobs of the loop (see module docstring)."""

    optimizer: str = "oc"
    max_iterations: int = 200
    tolerance: float = 0.01
    objective_tolerance: float = 1e-3
    move: float = 0.2
    penalty_start: float = 3.0
    penalty_end: float = 3.0
    penalty_step: float = 0.5
    beta_start: float | None = None        # None: no projection
    beta_end: float = 32.0
    continuation_interval: int = 25
    sensitivity_filter: bool = False        # top88's ft = 1
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
    """One optimization run; :meth:`run` returns an OptimizationResult."""

    def __init__(self, model, formulation, design, density_filter, projection, interpolation,
                 settings: LoopSettings, initial: float, callback=None, parameters=None):
        self.model = model
        self.formulation = formulation
        self.responses = formulation.responses
        self.design = design
        self.filter = density_filter
        self.projection = projection
        self.interpolation = interpolation
        self.settings = settings
        self.callback = callback
        self.parameters = dict(parameters or {})
        self.x = design.initial(initial)
        self.iteration = 0
        self.history: list[dict] = []
        self.mma = None
        if settings.optimizer == "mma":
            self.mma = MMA(design.n_variables, formulation.n_constraints, 0.0, 1.0,
                           move_limit=settings.move)
        interpolation.penalty = settings.penalty_start
        if projection is not None:
            projection.beta = settings.beta_start
        self.level_start = 0          # iteration at which the current continuation level began

    # ------------------------------------------------------------------ the map x -> ρ̄
    def physical(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rho_cells = self.design.expand(x)
        if self.filter is None or self.settings.sensitivity_filter:
            filtered = rho_cells
        else:
            filtered = self.design.tie(self.filter.forward(rho_cells))
        projected = filtered if self.projection is None else self.projection.forward(filtered)
        return rho_cells, filtered, self.design.impose(projected)

    def chain_rule(self, rho_cells, filtered, grads: np.ndarray, filter_sensitivity: np.ndarray):
        """Gradients w.r.t. ρ̄ (k, n_cells) -> w.r.t. design variables (k, n_variables)."""
        grads = np.array(grads, dtype=float)
        grads[:, self.design.passive] = 0.0
        if self.projection is not None:
            grads = np.array([self.projection.backward(filtered, g) for g in grads])
        if self.filter is not None:
            if self.settings.sensitivity_filter:
                for k in np.flatnonzero(filter_sensitivity):
                    grads[k] = self.filter.filter_sensitivity(rho_cells, grads[k])
            else:
                grads = self.filter.backward(self.design.tie(grads))
        return self.design.reduce(grads)

    # ------------------------------------------------------------------ continuation
    def at_final_level(self) -> bool:
        s = self.settings
        penalty_done = self.interpolation.penalty >= s.penalty_end
        beta_done = self.projection is None or self.projection.beta >= s.beta_end
        return penalty_done and beta_done

    def advance_continuation(self, settled: bool) -> bool:
        s = self.settings
        if self.at_final_level():
            return False
        if not settled and self.iteration - self.level_start < s.continuation_interval:
            return False
        if self.interpolation.penalty < s.penalty_end:
            self.interpolation.penalty = min(s.penalty_end, self.interpolation.penalty + s.penalty_step)
        elif self.projection is not None:
            self.projection.beta = min(s.beta_end, 2 * self.projection.beta)
        self.level_start = self.iteration
        if self.mma is not None:
            # the problem changed: restart the asymptotes from the current design
            self.mma = MMA(self.design.n_variables, self.formulation.n_constraints, 0.0, 1.0,
                           move_limit=s.move)
        return True

    # ------------------------------------------------------------------ one iteration
    def step(self) -> tuple[bool, str]:
        s = self.settings
        t0 = time.perf_counter()
        self.iteration += 1
        rho_cells, filtered, rho = self.physical(self.x)
        f, g, df, dg = self.formulation.evaluate(rho)
        filter_rows = np.array([True] + [not lin for lin in self.formulation.linear_constraints])
        grads = self.chain_rule(rho_cells, filtered, np.vstack([df[None, :], dg]), filter_rows)
        d_objective, d_constraints = grads[0], grads[1:]
        if s.optimizer == "oc":
            vf = self.formulation.volume_fraction
            volumes = self.responses.relative_volumes
            # top88 uses dv = 1 per element (not the normalised constraint gradient): the
            # bisection's stopping point depends on the scale of dc/dv, so keep it identical.
            dv = self.chain_rule(rho_cells, filtered, volumes[None, :], np.array([False]))[0]
            if self.projection is None:
                # Without projection the physical volume is affine in x (filter and design map
                # are linear): V(x) = dv . x + V(0), as in top99neo; no filtering per bisection step.
                offset = float(volumes @ self.physical(np.zeros_like(self.x))[2])

                def volume_of(x_new):
                    return float(dv @ x_new) + offset
            else:
                def volume_of(x_new):
                    return float(volumes @ self.physical(x_new)[2])
            x_new = oc_update(self.x, d_objective, dv, volume_of, vf * volumes.sum(), move=s.move)
        else:
            x_new = self.mma.update(self.x, f, d_objective, g, d_constraints)
        change = float(np.max(np.abs(x_new - self.x)))
        self.x = x_new
        previous = self.history[-1]["objective"] if self.history else None
        rel_change = abs(f - previous) / max(abs(previous), 1e-300) if previous is not None else np.inf
        volumes = self.responses.cell_volumes
        record = {
            "iteration": self.iteration, "objective": float(f),
            "constraints": [float(v) for v in g],
            "volume_fraction": self.responses.volume_fraction(rho),
            "change": change, "objective_change": float(rel_change),
            "grayness": grayness(rho, volumes),
            "penalty": float(self.interpolation.penalty),
            "beta": None if self.projection is None else float(self.projection.beta),
            "seconds": 0.0,
        }
        record.update({f"compliance:{k}": v for k, v in self.formulation.last_info["compliance"].items()})
        record.update({f"displacement:{k}": v for k, v in self.formulation.last_info.get("displacement", {}).items()})
        feasible = bool(np.all(g <= 1e-3))
        settled = change <= s.tolerance and rel_change <= s.objective_tolerance and feasible
        stop, message = False, ""
        if settled and self.at_final_level():
            stop, message = True, (f"converged: design change {change:.3g} <= {s.tolerance}, objective "
                                   f"change {rel_change:.2g} <= {s.objective_tolerance}, constraints hold")
        else:
            self.advance_continuation(settled)
        record["seconds"] = time.perf_counter() - t0
        self.history.append(record)
        self.last = (rho, f, g)
        if s.verbose:
            cons = " ".join(f"{v:+.3f}" for v in g[:4])
            print(f"it {self.iteration:4d}  obj {f:11.5g}  g [{cons}]  vol {record['volume_fraction']:.4f}  "
                  f"change {change:.3f}  gray {record['grayness']:.3f}  p {self.interpolation.penalty:.2f}"
                  f"{'' if self.projection is None else f'  beta {self.projection.beta:g}'}  "
                  f"{record['seconds']:.2f} s", file=sys.stdout, flush=True)
        if self.callback is not None:
            state = IterationState(self.iteration, self.x.copy(), rho.copy(), float(f), g.copy(), record)
            if self.callback(state) is True:
                stop, message = True, "stopped by callback"
        if s.checkpoint and (stop or self.iteration % s.checkpoint_every == 0):
            self.save_checkpoint(s.checkpoint)
        return stop, message

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
        _, _, rho = self.physical(self.x)
        # final analysis of the final design (the history holds the previous one)
        self.responses.analyse(rho)
        system = self.responses.system
        solution = build_solution(self.model, self.responses.U, self.responses.F, rho,
                                  self.responses.stiffness_scale,
                                  penalty=float(self.interpolation.penalty),
                                  min_stiffness=self.interpolation.min_stiffness)
        vf = self.responses.volume_fraction(rho)
        volume = float(self.responses.cell_volumes @ rho)
        prov = provenance(model_sha256=self.model.fingerprint(), density_sha256=hash_inputs(rho),
                          parameters=self.parameters, solver=system.last_solve_info.get("solver"))
        return OptimizationResult(
            model=self.model, density=rho, design_variables=self.x.copy(), history=self.history,
            problem=self.parameters.get("problem", ""), converged=converged, message=message,
            compliance=dict(solution.compliance), volume_fraction=vf, volume=volume,
            mass=volume * self.model.material.density, solution=solution,
            parameters=self.parameters, provenance=prov)

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
        if self.responses.U is not None:
            arrays["U"] = self.responses.U
        meta = {"iteration": self.iteration, "history": self.history, "level_start": self.level_start,
                "penalty": self.interpolation.penalty,
                "beta": None if self.projection is None else self.projection.beta,
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
        self.level_start = meta["level_start"]
        self.interpolation.penalty = meta["penalty"]
        if self.projection is not None:
            self.projection.beta = meta["beta"]
        if "U" in data:
            self.responses.U = data["U"].copy()
        if meta["mma"] is not None:
            state = dict(meta["mma"])
            for key in data.files:
                if key.startswith("mma."):
                    state[key[4:]] = data[key].copy()
            self.mma = MMA.from_state(state)


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)
