"""Peak von Mises stress per load case, aggregated over every integration point, with its adjoint gradient.

Approach (Le, Norato, Bruns, Ha & Tortorelli 2010, "Stress-based topology optimization for
continua"), chosen because it is one smooth value per load case (one adjoint solve for all
cases together, whatever the mesh size) and because its adaptive normalisation makes the
constrained value track the true peak, so the limit the user gives is the limit the design meets:

1. Local stress at every integration point q of every cell e (the points at which
   :mod:`lightweight.fem.stress` reports stresses): the solid-material stress
   s_eq = D B_q u_e of the displacements u solved with the penalised stiffness E(ρ̄), relaxed
   per cell, σ_eq = η(ρ̄_e) vm(s_eq), so that void cells carry no stress (the "singularity"
   problem of stress constraints: a vanishing member would otherwise keep a finite stress):

   - ``relaxation="qp"``: η = ρ̄^q with q < p (default q = 0.5 with SIMP p = 3, as Le et al.);
   - ``relaxation="epsilon"``: η = ρ̄ / (ε (1 - ρ̄) + ρ̄), the ε-relaxation in the form of an
     interpolation (η(1) = 1, η(0) = 0, slope 1/ε at 0; Cheng & Guo 1997), default ε = 0.2.

   η(1) = 1: on solid cells σ is the stress of the material, the quantity a yield check needs.
2. Aggregation per load case over the points of the design (``exclude`` drops the cells of named
   sets, e.g. those at a point load, whose stress is a mesh artefact):

   - ``aggregation="pnorm"``: σ_PN = (Σ σ_i^P)^(1/P), an upper bound of the maximum;
   - ``aggregation="ks"``: σ_KS = σ_ref/P ln(mean exp(P σ_i/σ_ref)), a lower bound; σ_ref is a
     stress scale, fixed at the first design evaluated unless given.
3. Adaptive normalisation: the value is c σ_PN (c σ_KS) with c the ratio of the true maximum to
   the aggregate at the previous design, c_I = α max/agg|_(I-1) + (1 - α) c_(I-1) (α = 1: Le et
   al.'s plain update; the default 0.5 damps the oscillations they report). c is a constant for
   the gradient. The loop updates it once per iteration through :meth:`Stress.end_iteration`, so
   within one iteration (and within a finite-difference check) the response is one smooth
   function. ``adaptive=False`` keeps c = 1.

Gradient (adjoint): with w_i = ∂agg/∂σ_i and t_eq = ∂vm/∂s at point q (von_mises_gradient),
    dσ/dρ̄_e = c [Σ_q w_eq η'(ρ̄_e) vm_eq - E'(ρ̄_e) λ_e^T K_e u_e (+ λ·∂f/∂ρ̄_e with self-weight)],
    K λ = Σ_eq w_eq η_e (D B_q)^T t_eq        (one right-hand side per load case, one solve)
for every element type (the point operators D B_q of :func:`~lightweight.fem.stress.stress_operators`).

Reporting: a stress-constrained design reports the relaxed stress η(ρ̄) σ_solid
(:meth:`Stress.stress_scale` is passed to ``build_solution`` by the loop), the measure of the
constraint. Units: the model's stress units (E's), e.g. MPa.
"""

from __future__ import annotations

import numpy as np

from ...errors import OptimizationError
from .base import Response, register_response

RELAXATIONS = ("qp", "epsilon")
AGGREGATIONS = ("pnorm", "ks")
# cells x points x voigt x dof above which the D B operators are rebuilt per call, not kept (memory)
_KEEP_OPERATORS_MAX_ENTRIES = 25_000_000


@register_response("stress")
class Stress(Response):
    """Aggregated peak von Mises stress of the relaxed material per load case (stress units of E).

    cases: load case names (None: all), one value each. relaxation: "qp" (η = ρ̄^q, q < p) or
    "epsilon" (η = ρ̄/(ε(1-ρ̄)+ρ̄)); q: the exponent (default 0.5); epsilon: ε (default 0.2).
    aggregation: "pnorm" or "ks"; p: its exponent (default 8 for the p-norm, 30 for KS);
    stress_reference: KS scale (None: the first design's peak). adaptive: Le et al.'s adaptive
    normalisation with damping ``adaptive_damping`` α in (0, 1]. exclude: set names (cell sets,
    or node/face sets: the cells touching them) left out of the aggregate.
    """

    name = "stress"

    def __init__(self, model, cases=None, relaxation: str = "qp", q: float = 0.5, epsilon: float = 0.2,
                 aggregation: str = "pnorm", p: float | None = None, stress_reference: float | None = None,
                 adaptive: bool = True, adaptive_damping: float = 0.5, exclude=(), q_floor: float = 1e-3):
        super().__init__(model)
        if relaxation not in RELAXATIONS:
            raise OptimizationError(f"stress relaxation must be one of {', '.join(RELAXATIONS)}, got {relaxation!r}")
        if aggregation not in AGGREGATIONS:
            raise OptimizationError(f"stress aggregation must be one of {', '.join(AGGREGATIONS)}, "
                                    f"got {aggregation!r}")
        if relaxation == "qp" and not (0 < q < 10):
            raise OptimizationError(f"stress relaxation exponent q must be positive (and below the SIMP "
                                    f"penalty p), got {q!r}")
        if relaxation == "epsilon" and not (0 < epsilon < 1):
            raise OptimizationError(f"stress relaxation epsilon must be in (0, 1), got {epsilon!r}")
        if not (0 < q_floor < 1):
            raise OptimizationError(f"stress relaxation q_floor must be in (0, 1), got {q_floor!r}")
        p = (8.0 if aggregation == "pnorm" else 30.0) if p is None else float(p)
        if not (p >= 1 and np.isfinite(p)):
            raise OptimizationError(f"stress aggregation exponent p must be >= 1, got {p!r}")
        if not (0 < adaptive_damping <= 1):
            raise OptimizationError(f"adaptive_damping must be in (0, 1], got {adaptive_damping!r}")
        if stress_reference is not None and not (stress_reference > 0):
            raise OptimizationError(f"stress_reference must be a positive stress, got {stress_reference!r}")
        self.cases = self._case_names(cases, "stress")
        if not self.cases:
            raise OptimizationError("a stress response needs a load case; the model has none")
        names = list(model.load_cases)
        self.index = [names.index(c) for c in self.cases]
        self.relaxation, self.q, self.epsilon = relaxation, float(q), float(epsilon)
        self.q_floor = float(q_floor)
        self.aggregation, self.p = aggregation, p
        self.stress_reference = None if stress_reference is None else float(stress_reference)
        self.adaptive, self.adaptive_damping = bool(adaptive), float(adaptive_damping)
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        mesh = model.mesh
        self.included = np.ones(mesh.n_cells, dtype=bool)
        for set_name in self.exclude:
            self.included[mesh.cells_touching(set_name)] = False     # unknown set: UnknownSetError names it
        if not self.included.any():
            raise OptimizationError(f"stress: every cell is excluded by {self.exclude}; nothing left to bound")
        self.correction = np.ones(len(self.cases))     # c per case (adaptive normalisation)
        self._operators = None

    def labels(self):
        return [f"stress[{c}]" for c in self.cases]

    def describe(self) -> dict:
        return {**super().describe(), "relaxation": self.relaxation,
                "q" if self.relaxation == "qp" else "epsilon": self.q if self.relaxation == "qp" else self.epsilon,
                "aggregation": self.aggregation, "p": self.p, "adaptive": self.adaptive,
                "adaptive_damping": self.adaptive_damping, "exclude": self.exclude}

    # ------------------------------------------------------------------ relaxation η(ρ̄)
    def stress_scale(self, rho: np.ndarray) -> np.ndarray:
        """η(ρ̄) per cell (n_cells,): multiplier of the solid-material stress (1 at ρ̄ = 1, 0 at 0)."""
        rho = np.clip(np.asarray(rho, dtype=float), 0.0, 1.0)
        if self.relaxation == "qp":
            low = self.q_floor
            # below the floor a quadratic with η(0) = 0 and value and slope of ρ̄^q at the floor
            # (C1): ρ̄^q has an infinite slope at 0 that projected void cells (ρ̄ ~ 1e-10) reach
            below = (2.0 - self.q) * low ** (self.q - 1.0) * rho + (self.q - 1.0) * low ** (self.q - 2.0) * rho ** 2
            return np.where(rho >= low, rho ** self.q, below)
        return rho / (self.epsilon * (1.0 - rho) + rho)

    def stress_scale_derivative(self, rho: np.ndarray) -> np.ndarray:
        """dη/dρ̄ per cell (n_cells,); at most (2 - q) floor^(q-1) for the qp relaxation (47 at the defaults)."""
        rho = np.clip(np.asarray(rho, dtype=float), 0.0, 1.0)
        if self.relaxation == "qp":
            low = self.q_floor
            below = (2.0 - self.q) * low ** (self.q - 1.0) + 2.0 * (self.q - 1.0) * low ** (self.q - 2.0) * rho
            return np.where(rho >= low, self.q * np.maximum(rho, low) ** (self.q - 1.0), below)
        return self.epsilon / (self.epsilon * (1.0 - rho) + rho) ** 2

    # ------------------------------------------------------------------ local stresses
    def _stress_operators(self, system, cells=None) -> np.ndarray:
        """D B at the points, (1 | n, n_q, n_voigt, n_dof_e): kept if small, else rebuilt per block."""
        from ...fem.elements import element_stress_operators
        from ...fem.stress import stress_operators
        if system.is_grid:
            if self._operators is None:
                self._operators = stress_operators(system)
            return self._operators
        if cells is None:
            if self._operators is None:
                self._operators = stress_operators(system)
            return self._operators
        mesh = system.mesh
        return element_stress_operators(mesh.cell_type, mesh.points[mesh.cells[cells]], system.D)

    def local(self, state) -> dict:
        """Solid-material point stresses of the selected cases, cached per state.

        Returns {"points": (k, n_cells, n_q, n_voigt) solid stresses s, "vm": (k, n_cells, n_q)}.
        """
        key = ("stress.local", tuple(self.index))        # shared by stress responses of the same cases
        if key not in state.cache:
            from ...fem.elements import von_mises
            from ...fem.stress import integration_point_stresses
            model = self.model
            U = state.static.U[self.index]
            points = integration_point_stresses(state.system, U)
            vm = von_mises(points, model.dim, model.plane, model.material.nu)
            state.cache[key] = {"points": points, "vm": vm}
        return state.cache[key]

    def _aggregate(self, sigma: np.ndarray) -> tuple[float, np.ndarray]:
        """Aggregate of one case's relaxed stresses sigma (n_cells, n_q) and d agg / d sigma."""
        P = self.p
        top = float(sigma.max())
        if top <= 0:
            return 0.0, np.zeros_like(sigma)
        if self.aggregation == "pnorm":
            ratio = sigma / top                           # scaled by the peak: no overflow of σ^P
            total = float(np.sum(ratio ** P))
            value = top * total ** (1.0 / P)
            weights = total ** (1.0 / P - 1.0) * ratio ** (P - 1.0)
            return value, weights
        ref = self.stress_reference
        z = P * sigma / ref
        zmax = float(z.max())
        ez = np.exp(z - zmax)
        total = float(ez.sum())
        value = ref / P * (zmax + np.log(total / sigma.size))
        return value, ez / total

    def _values(self, state) -> dict:
        """Relaxed stresses, aggregates, true maxima and d agg/dσ per case, cached per state."""
        key = ("stress.values", id(self))                 # each response has its own η and aggregate
        if key not in state.cache:
            local = self.local(state)
            eta = self.stress_scale(state.rho)
            sigma = eta[None, :, None] * local["vm"]                      # (k, n_cells, n_q)
            sel = self.included
            if self.aggregation == "ks" and self.stress_reference is None:
                # a fixed scale for KS's exponent: the first design's peak (frozen from now on)
                self.stress_reference = max(float(sigma[:, sel].max()), 1e-300)
            aggregates, maxima, weights = [], [], []
            for k in range(len(self.cases)):
                value, w = self._aggregate(sigma[k, sel])
                aggregates.append(value)
                maxima.append(float(sigma[k, sel].max()))
                full = np.zeros(sigma.shape[1:])
                full[sel] = w
                weights.append(full)
            state.cache[key] = {"sigma": sigma, "aggregate": np.array(aggregates),
                                            "max": np.array(maxima), "weights": np.array(weights),
                                            "eta": eta}
        return state.cache[key]

    def evaluate(self, state):
        from ...fem.stress import von_mises_gradient
        model, system = self.model, state.system
        local = self.local(state)
        v = self._values(state)
        c = self.correction
        weights = v["weights"]                                            # (k, n_cells, n_q)
        eta, deta = v["eta"], self.stress_scale_derivative(state.rho)
        explicit = np.einsum("kcq,kcq->kc", weights, local["vm"]) * deta[None, :]
        # adjoint load: Σ_q w η (D B_q)^T ∂vm/∂s per cell, scattered to the global DOFs
        dvm = von_mises_gradient(local["points"], model.dim, model.plane, model.material.nu)
        t = (weights * eta[None, :, None])[..., None] * dvm               # (k, n_cells, n_q, n_voigt)
        n_cells = system.n_cells
        rhs = np.zeros((len(self.cases), system.n_dofs))
        dofs = system.cell_dofs
        n_q, n_voigt = t.shape[2], t.shape[3]
        ops_entries = n_cells * n_q * n_voigt * dofs.shape[1]
        if system.is_grid or ops_entries <= _KEEP_OPERATORS_MAX_ENTRIES:
            ops = self._stress_operators(system)
            for k in range(len(self.cases)):
                if ops.shape[0] == 1:
                    element = np.einsum("eqv,qvd->ed", t[k], ops[0])
                else:
                    element = np.einsum("eqv,eqvd->ed", t[k], ops)
                rhs[k] = np.bincount(dofs.ravel(), weights=element.ravel(), minlength=system.n_dofs)
        else:
            block = max(1, _KEEP_OPERATORS_MAX_ENTRIES // (n_q * n_voigt * dofs.shape[1]))
            for start in range(0, n_cells, block):
                cells = np.arange(start, min(n_cells, start + block))
                ops = self._stress_operators(system, cells)
                for k in range(len(self.cases)):
                    element = np.einsum("eqv,eqvd->ed", t[k, cells], ops)
                    rhs[k] += np.bincount(dofs[cells].ravel(), weights=element.ravel(), minlength=system.n_dofs)
        static = state.static
        lam = static.adjoint(rhs)
        U = static.U[self.index]
        implicit = -state.stiffness_derivative[None, :] * system.element_cross_energies(U, lam)
        if system.has_body_loads:
            full = np.zeros((len(system.case_names), system.n_dofs))
            full[self.index] = lam
            implicit += system.body_load_gradient(full)[self.index]
        grads = c[:, None] * (explicit + implicit)
        return c * v["aggregate"], grads

    # ------------------------------------------------------------------ once per loop iteration
    def peak(self, state) -> np.ndarray:
        """True maximum of the relaxed stress over the included points, per case (k,)."""
        return self._values(state)["max"].copy()

    def end_iteration(self, state) -> dict:
        """Adaptive normalisation after an iteration at ``state``: c <- α max/agg + (1-α) c.

        Returns figures for the iteration's history record (the peak and c per case); the loop
        calls it once per iteration, after the optimizer has used this iteration's values.
        """
        v = self._values(state)
        record = {}
        for k, case in enumerate(self.cases):
            record[f"max_stress[{case}]"] = float(v["max"][k])
            if self.adaptive and v["aggregate"][k] > 0:
                ratio = v["max"][k] / v["aggregate"][k]
                self.correction[k] = self.adaptive_damping * ratio + (1 - self.adaptive_damping) * self.correction[k]
            record[f"stress_correction[{case}]"] = float(self.correction[k])
        if self.aggregation == "ks":
            record["stress_reference"] = float(self.stress_reference)
        return record

    def resume(self, record: dict) -> None:
        """Take c (and the KS scale) back from a history record written by :meth:`end_iteration` (resume)."""
        for k, case in enumerate(self.cases):
            key = f"stress_correction[{case}]"
            if key in record:
                self.correction[k] = float(record[key])
        if "stress_reference" in record:
            self.stress_reference = float(record["stress_reference"])
