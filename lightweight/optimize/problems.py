"""Formulations: objective and constraint values with analytic gradients w.r.t. cell densities.

All gradients are with respect to the *physical* density ρ (n_cells,); the loop chains them back
through projection, filter and the design map. Responses:

- compliance per load case c_k = f_k · u_k. With design-independent loads
  dc_k/dρ_e = -E'(ρ_e) u_e^T K_e u_e; with self-weight (f depends on ρ) the adjoint adds
  2 u · df/dρ_e (c = f^T K^-1 f).
- volume fraction V(ρ) = Σ v_e ρ_e / Σ v_e (mass is proportional to it).
- displacement of a node set: δ = mean of one component over the set's nodes, δ = l · u;
  adjoint K λ = l gives dδ/dρ_e = -E'(ρ_e) λ_e^T K_e u_e + λ · df/dρ_e.

Formulations (``n_constraints`` constraints written g_i(ρ) <= 0, normalised to O(1)):
:class:`MinCompliance` (weighted sum of case compliances, volume fraction limit, optional
displacement limits) and :class:`MinMass` (volume fraction subject to one compliance limit per
load case and optional displacement limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import OptimizationError
from .interpolation import Interpolation


@dataclass(frozen=True)
class DisplacementLimit:
    """|mean displacement component over node set ``set``| <= ``limit`` (case None: every case)."""

    set: str
    component: str
    limit: float
    case: str | None = None


class StructuralResponses:
    """Solves the model for a density field and returns responses with gradients."""

    def __init__(self, model, interpolation: Interpolation, solver: str = "auto"):
        self.model = model
        self.system = model.system()
        self.interpolation = interpolation
        self.solver = solver
        volumes = model.mesh.cell_volumes() * (model.thickness if model.dim == 2 else 1.0)
        self.cell_volumes = volumes
        self.total_volume = float(volumes.sum())
        # relative volumes: exactly 1 on uniform grids, so OC reproduces top88's sum(xPhys)
        self.relative_volumes = volumes / volumes.mean()
        self.case_names = self.system.case_names
        self.U = None
        self.F = None
        self.stiffness_scale = None

    def volume_fraction(self, rho: np.ndarray) -> float:
        return float(self.cell_volumes @ rho / self.total_volume)

    def volume_fraction_gradient(self) -> np.ndarray:
        return self.cell_volumes / self.total_volume

    def analyse(self, rho: np.ndarray) -> None:
        """Solve all load cases for physical densities rho (n_cells,)."""
        self.rho = rho
        self.stiffness_scale = self.interpolation.stiffness(rho)
        self.U, self.F = self.system.solve(self.stiffness_scale, mass_scale=rho, solver=self.solver,
                                           x0=self.U)

    def compliance(self) -> tuple[np.ndarray, np.ndarray]:
        """Compliance per case (n_cases,) and gradient (n_cases, n_cells) at the last analysis."""
        energies = self.system.element_energies(self.U)          # u_e^T K_e u_e at full E
        values = np.einsum("cd,cd->c", self.F, self.U)
        grads = -self.interpolation.derivative(self.rho)[None, :] * energies
        if self.system.has_body_loads:
            grads += 2.0 * self.system.body_load_gradient(self.U)
        return values, grads

    def displacement(self, limit: DisplacementLimit) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """δ per selected case (k,), gradients (k, n_cells) and the case names."""
        dim = self.model.dim
        if limit.component not in "xyz"[:dim] or len(limit.component) != 1:
            raise OptimizationError(f"displacement limit on {limit.set!r}: component must be one of "
                                    f"{', '.join('xyz'[:dim])}, got {limit.component!r}")
        nodes = self.model.mesh.node_set(limit.set)
        selector = np.zeros(self.system.n_dofs)
        selector[nodes * dim + "xyz".index(limit.component)] = 1.0 / nodes.size
        cases = self.case_names if limit.case is None else [limit.case]
        for c in cases:
            if c not in self.case_names:
                raise OptimizationError(f"displacement limit on {limit.set!r}: unknown load case {c!r}; "
                                        f"cases: {', '.join(self.case_names)}")
        idx = [self.case_names.index(c) for c in cases]
        U = self.U[idx]
        values = U @ selector
        lam = self.system.solve_adjoint(np.repeat(selector[None, :], len(idx), axis=0))
        cross = self.system.element_cross_energies(U, lam)
        grads = -self.interpolation.derivative(self.rho)[None, :] * cross
        if self.system.has_body_loads:
            body = self.system.body_load_gradient(lam if len(idx) == len(self.case_names) else
                                                  _embed(lam, idx, len(self.case_names)))
            grads += body[idx]
        return values, grads, cases


def _embed(rows: np.ndarray, idx: list[int], n: int) -> np.ndarray:
    out = np.zeros((n, rows.shape[1]))
    out[idx] = rows
    return out


class Formulation:
    """Base: evaluate(rho) -> (objective, constraints (m,), d_objective (n,), d_constraints (m, n))."""

    n_constraints: int
    constraint_names: list[str]
    linear_constraints: list[bool]       # True: volume-type (not sensitivity-filtered)

    def __init__(self, responses: StructuralResponses, displacement_limits=()):
        self.responses = responses
        self.displacement_limits = list(displacement_limits or [])
        for lim in self.displacement_limits:
            if not isinstance(lim, DisplacementLimit):
                raise OptimizationError(f"displacement_limits must hold lw.DisplacementLimit(...), got {lim!r}")
            if not (lim.limit > 0):
                raise OptimizationError(f"displacement limit on {lim.set!r} must be positive, got {lim.limit}")
            responses.model.mesh.node_set(lim.set)

    def _displacement_constraints(self):
        values, grads, names = [], [], []
        for lim in self.displacement_limits:
            delta, d_delta, cases = self.responses.displacement(lim)
            # (δ/limit)^2 - 1 <= 0 bounds |δ| smoothly
            values.extend((delta / lim.limit) ** 2 - 1.0)
            grads.extend(2 * delta[:, None] / lim.limit ** 2 * d_delta)
            names.extend(f"displacement[{lim.set}.{lim.component}, {c}]" for c in cases)
            self.last_info.setdefault("displacement", {}).update(
                {f"{lim.set}.{lim.component}:{c}": float(d) for c, d in zip(cases, delta)})
        return values, grads, names


class MinCompliance(Formulation):
    """Minimize Σ_k w_k c_k subject to V(ρ) <= volume_fraction (and displacement limits)."""

    def __init__(self, responses, volume_fraction: float, case_weights: Mapping | None = None,
                 displacement_limits=()):
        super().__init__(responses, displacement_limits)
        if not (0 < volume_fraction <= 1):
            raise OptimizationError(f"volume_fraction must be in (0, 1], got {volume_fraction}")
        self.volume_fraction = float(volume_fraction)
        names = responses.case_names
        weights = dict(case_weights or {c: 1.0 for c in names})
        unknown = set(weights) - set(names)
        if unknown:
            raise OptimizationError(f"case_weights name unknown load cases {sorted(unknown)}; "
                                    f"cases: {', '.join(names)}")
        self.weights = np.array([float(weights.get(c, 0.0)) for c in names])
        self.constraint_names = ["volume_fraction"]
        self.linear_constraints = [True]
        self.n_constraints = 1 + sum(len(responses.case_names) if lim.case is None else 1
                                     for lim in self.displacement_limits)

    def evaluate(self, rho):
        r = self.responses
        r.analyse(rho)
        c, dc = r.compliance()
        self.last_info = {"compliance": dict(zip(r.case_names, map(float, c)))}
        objective = float(self.weights @ c)
        d_objective = self.weights @ dc
        vf = r.volume_fraction(rho)
        constraints = [vf / self.volume_fraction - 1.0]
        d_constraints = [r.volume_fraction_gradient() / self.volume_fraction]
        values, grads, names = self._displacement_constraints()
        self.constraint_names = ["volume_fraction"] + names
        self.linear_constraints = [True] + [False] * len(names)
        return objective, np.array(constraints + values), d_objective, np.array(d_constraints + grads)


class MinMass(Formulation):
    """Minimize V(ρ) subject to c_k <= limit_k for every load case (and displacement limits)."""

    def __init__(self, responses, compliance_limits: Mapping[str, float], displacement_limits=()):
        super().__init__(responses, displacement_limits)
        names = responses.case_names
        # unknown names first: a typo in a case name also leaves that case without a limit
        for c in compliance_limits:
            if c not in names:
                raise OptimizationError(f"compliance limit for unknown load case {c!r}; cases: {', '.join(names)}")
        missing = [c for c in names if c not in compliance_limits]
        if missing and not self.displacement_limits:
            raise OptimizationError(f"no compliance limit for load cases {missing}")
        self.limits = {c: float(v) for c, v in compliance_limits.items()}
        for c, v in self.limits.items():
            if not v > 0:
                raise OptimizationError(f"compliance limit for {c!r} must be positive, got {v}")
        self.limited = [c for c in names if c in self.limits]
        self.n_constraints = len(self.limited) + sum(len(names) if lim.case is None else 1
                                                     for lim in self.displacement_limits)
        if self.n_constraints == 0:
            raise OptimizationError("minimize_mass needs a compliance or displacement limit")

    def evaluate(self, rho):
        r = self.responses
        r.analyse(rho)
        c, dc = r.compliance()
        self.last_info = {"compliance": dict(zip(r.case_names, map(float, c)))}
        objective = r.volume_fraction(rho)
        d_objective = r.volume_fraction_gradient()
        idx = [r.case_names.index(k) for k in self.limited]
        lim = np.array([self.limits[k] for k in self.limited])
        constraints = list(c[idx] / lim - 1.0)
        d_constraints = list(dc[idx] / lim[:, None])
        values, grads, names = self._displacement_constraints()
        self.constraint_names = [f"compliance[{k}]" for k in self.limited] + names
        self.linear_constraints = [False] * self.n_constraints
        return objective, np.array(constraints + values), d_objective, np.array(d_constraints + grads)
