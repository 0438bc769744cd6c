"""Stress responses with adjoint gradients: the peak von Mises stress per load case aggregated over every
integration point (:class:`Stress`, a constraint), and local stress constraints at every point held by an
augmented Lagrangian (:class:`StressLagrangian`, an objective; the default of ``minimize_mass``).

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

Local constraints by the augmented Lagrangian (:class:`StressLagrangian`, the default of
``minimize_mass(max_stress=...)``). Approach of Senhora, Giraldo-Londoño, Menezes & Paulino
(2020) and PolyStress (Giraldo-Londoño & Paulino 2021), chosen over the p-norm because it bounds
every point, not an aggregate that must be re-normalised: one constraint
g_i = a_i η(ρ̄_e) vm_i / S - 1 per sampling point i, all held in the objective

    J = V(ρ̄) + (1/N) Σ_i [λ_i h_i + μ/2 h_i²],   h_i = max(g_i, -λ_i/μ),

minimised by MMA without constraint rows; every 5 iterations λ_i <- max(0, λ_i + μ g_i) and
μ <- min(1.1 μ, 10^4) (μ0 = 10), PolyStress's values. The gradient of the whole sum is one adjoint
solve per load case, like the p-norm's. What the p-norm did on the L-bracket (measured, see
docs/stress_and_modes.md): with P = 8 the corner stayed solid, with P = 16 the run rounded it at
50 x 50 only on a quiet machine and collapsed to an empty design at 100 x 100 and under load.
Two additions of ours:

- ``sampling="corners"`` (default): besides the integration points, D B u_e is sampled at the
  cell's corner nodes, where a re-entrant boundary of the material shows its peak (at the
  integration points a member's outer fibre is read 0.2 h inside).
- a_i, the corner amplification: at a re-entrant corner of the mesh's boundary (2D: a boundary
  node whose cells' angles sum to ω > π) the stress is unbounded, σ ~ r^(λ-1) (Williams 1952,
  1 - λ = 0.4555 at ω = 3π/2), and a mesh samples it at r ~ h/5 only: material run into the
  corner meets the limit on one mesh and not on a finer one. a_i = max(1, (R / r_i)^(1-λ))
  judges the corner field at R = ``singular_radius`` (the presets: the filter diameter), the
  same length on every mesh. r_i is clipped at ``singular_floor`` x R (0.002): the corner
  sample at the vertex itself (r = 0) gets (1/0.002)^(1-λ) = 17 at 3π/2, so a cell that touches
  the singular point must be void (η(ρ̄) vm <= S/17), and the design rounds the corner instead of
  running members into it. A floor of 0.1 (a factor of 2.9, the earlier value) let the members
  meet at the vertex with every point within its limit (the vertex cells at ρ̄ 0.8-1); 0.01,
  0.003 and 0.001 rounded fewer of the L-bracket cases measured than 0.002 (docs/stress_and_modes.md),
  and larger radii R only blunted the corner with more material. A re-entrant vertex that is
  supported or loaded gets no factor (the design must keep material there, and the stress there
  is the idealised support's or load's). 3D re-entrant edges are not detected.

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
# reference coordinates of the corner nodes of each cell type (VTK order), where corner sampling
# evaluates D B u_e besides the integration points
CELL_CORNERS = {"quad": [(-1, -1), (1, -1), (1, 1), (-1, 1)], "triangle": [(0, 0), (1, 0), (0, 1)],
                "hexahedron": [(-1, -1, -1), (1, -1, -1), (1, 1, -1), (-1, 1, -1),
                               (-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1)],
                "tetra": [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)],
                "tetra10": [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]}
SAMPLINGS = ("integration", "corners")
# cells x points x voigt x dof above which the D B operators are rebuilt per call, not kept (memory)
_KEEP_OPERATORS_MAX_ENTRIES = 25_000_000


def _is_number(value) -> bool:
    """A real number (not a bool, string or None): what the numeric options must be before their range is checked."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


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
        if relaxation == "qp" and not (_is_number(q) and 0 < q < 10):
            raise OptimizationError(f"stress relaxation exponent q must be positive (and below the SIMP "
                                    f"penalty p), got {q!r}")
        if relaxation == "epsilon" and not (_is_number(epsilon) and 0 < epsilon < 1):
            raise OptimizationError(f"stress relaxation epsilon must be in (0, 1), got {epsilon!r}")
        if not (_is_number(q_floor) and 0 < q_floor < 1):
            raise OptimizationError(f"stress relaxation q_floor must be in (0, 1), got {q_floor!r}")
        p = (8.0 if aggregation == "pnorm" else 30.0) if p is None else p
        if not (_is_number(p) and p >= 1 and np.isfinite(p)):
            raise OptimizationError(f"stress aggregation exponent p must be >= 1, got {p!r}")
        p = float(p)
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
        v = self._values(state)
        c = self.correction
        grads = c[:, None] * self._weighted_gradient(state, v["weights"])
        return c * v["aggregate"], grads

    def _weighted_gradient(self, state, weights: np.ndarray) -> np.ndarray:
        """d/dρ̄ of Σ_eq w_keq η(ρ̄_e) vm_keq per case: weights (k, n_cells, n_q) -> (k, n_cells).

        One adjoint solve for all k cases (right-hand sides Σ_q w η (D B_q)^T ∂vm/∂s), sharing
        the static solve's factorization or multigrid hierarchy.
        """
        from ...fem.stress import von_mises_gradient
        model, system = self.model, state.system
        local = self.local(state)
        eta, deta = self.stress_scale(state.rho), self.stress_scale_derivative(state.rho)
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
        # keyed by this response: its previous design's adjoint starts the next solve
        lam = static.adjoint(rhs, key=f"stress-{id(self)}")
        U = static.U[self.index]
        implicit = -state.stiffness_derivative[None, :] * system.element_cross_energies(U, lam)
        if system.has_body_loads:
            full = np.zeros((len(system.case_names), system.n_dofs))
            full[self.index] = lam
            implicit += system.body_load_gradient(full)[self.index]
        return explicit + implicit

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


@register_response("stress_al")
class StressLagrangian(Stress):
    """Objective with local stress constraints by the augmented Lagrangian: one value (dimensionless).

    J = s_f f(ρ̄) + (1/N) Σ_i [λ_i h_i + μ/2 h_i²],  h_i = max(g_i, -λ_i/μ),  g_i = η(ρ̄_e) vm_i / S_k - 1,
    over the N included integration points i of every load case k (limits S_k, stress units of E).
    base: the response minimised (one value, e.g. VolumeFraction); limits: {case: S_k};
    base_scale s_f (1: a volume fraction is already O(1)). multiplier_penalty μ0 (10),
    penalty_growth (μ <- min(growth μ, penalty_max) at each update), penalty_max (1e4),
    update_every: iterations between multiplier updates λ <- max(0, λ + μ g) (5).
    tolerance: the constraints count as met when max_i g_i <= tolerance (the loop does not
    declare convergence before). relaxation, q, epsilon, q_floor, exclude: as :class:`Stress`.
    """

    name = "stress_al"

    def __init__(self, model, base, limits, relaxation: str = "qp", q: float = 0.5, epsilon: float = 0.2,
                 exclude=(), q_floor: float = 1e-3, base_scale: float = 1.0, multiplier_penalty: float = 10.0,
                 penalty_growth: float = 1.1, penalty_max: float = 1e4, update_every: int = 5,
                 tolerance: float = 0.01, sampling: str = "corners", singular_radius: float | None = None,
                 singular_floor: float = 0.002):
        if not isinstance(base, Response) or base.size != 1:
            raise OptimizationError(f"the augmented Lagrangian needs a base response with one value, got {base!r}")
        if not isinstance(limits, dict) or not limits:
            raise OptimizationError(f"stress limits must be {{case: limit}}, got {limits!r}")
        super().__init__(model, cases=list(limits), relaxation=relaxation, q=q, epsilon=epsilon,
                         aggregation="pnorm", adaptive=False, exclude=exclude, q_floor=q_floor)
        if sampling not in SAMPLINGS:
            raise OptimizationError(f"stress sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if sampling == "corners" and model.mesh.cell_type not in CELL_CORNERS:
            raise OptimizationError(f"stress sampling 'corners' is not available for {model.mesh.cell_type} cells")
        self.sampling = sampling
        if singular_radius is not None and not (_is_number(singular_radius) and np.isfinite(singular_radius)
                                                and singular_radius > 0):
            raise OptimizationError(f"stress_options: singular_radius must be a positive length, got {singular_radius!r}")
        self.singular_radius = None if singular_radius is None else float(singular_radius)
        if not (_is_number(singular_floor) and np.isfinite(singular_floor) and 0 < singular_floor < 1):
            raise OptimizationError(f"stress_options: singular_floor must be a fraction of singular_radius in "
                                    f"(0, 1), got {singular_floor!r}")
        self.singular_floor = float(singular_floor)
        self._amplification = None
        self.limits = np.array([float(limits[c]) for c in self.cases])
        if not np.all(np.isfinite(self.limits) & (self.limits > 0)):
            raise OptimizationError(f"stress limits must be positive, got {limits!r}")
        for label, value, low in (("multiplier_penalty", multiplier_penalty, 0.0), ("penalty_max", penalty_max, 0.0),
                                  ("base_scale", base_scale, 0.0)):
            if not (_is_number(value) and np.isfinite(value) and value > low):
                raise OptimizationError(f"stress_options: {label} must be positive, got {value!r}")
        if not (penalty_growth >= 1.0):
            raise OptimizationError(f"stress_options: penalty_growth must be >= 1, got {penalty_growth!r}")
        if int(update_every) < 1:
            raise OptimizationError(f"stress_options: update_every must be >= 1 iteration, got {update_every!r}")
        if not (tolerance >= 0):
            raise OptimizationError(f"stress_options: tolerance must be >= 0, got {tolerance!r}")
        self.base = base
        self.base_scale = float(base_scale)
        self.mu = float(multiplier_penalty)
        self.mu_start = float(multiplier_penalty)
        self.penalty_growth, self.penalty_max = float(penalty_growth), float(penalty_max)
        self.update_every, self.tolerance = int(update_every), float(tolerance)
        self.multipliers = None         # λ (k, n_cells, n_q), zero at the first evaluation
        self.iterations = 0

    def labels(self):
        return [f"{self.base.labels()[0]} + stress penalty"]

    # ------------------------------------------------------------------ sampling points
    def _reference_points(self) -> np.ndarray:
        """Reference coordinates of the sampling points: the integration points (+ the corner nodes)."""
        from ...mesh.cell_types import quadrature
        xi, _ = quadrature(self.model.mesh.cell_type)
        if self.sampling == "corners":
            xi = np.vstack([xi, np.asarray(CELL_CORNERS[self.model.mesh.cell_type], dtype=float)])
        return xi

    def _stress_operators(self, system, cells=None) -> np.ndarray:
        """D B at the sampling points, (1 | n, n_points, n_voigt, n_dof_e)."""
        if self.sampling == "integration":
            return super()._stress_operators(system, cells)
        if cells is None and self._operators is not None:
            return self._operators
        from ...fem.elements import _stress_operator_kernel
        from ...mesh.cell_types import shape_functions
        mesh = system.mesh
        _, dN = shape_functions(mesh.cell_type, self._reference_points())
        chosen = mesh.cells[:1] if system.is_grid else (mesh.cells if cells is None else mesh.cells[cells])
        coords = np.ascontiguousarray(mesh.points[chosen], dtype=np.float64)
        D = np.ascontiguousarray(system.D, dtype=np.float64)
        out = np.empty((coords.shape[0], dN.shape[0], D.shape[0], coords.shape[1] * coords.shape[2]))
        _stress_operator_kernel(coords, np.ascontiguousarray(dN), D, out)
        if cells is None:
            self._operators = out
        return out

    def local(self, state) -> dict:
        """Solid-material stresses at the sampling points, cached per state.

        Returns {"points": (k, n_cells, n_p, n_voigt) solid stresses s, "vm": (k, n_cells, n_p)}.
        """
        if self.sampling == "integration":
            return super().local(state)
        key = ("stress.local.corners", tuple(self.index))
        if key not in state.cache:
            from ...fem.elements import von_mises
            model, system = self.model, state.system
            U = state.static.U[self.index]
            ue = U[:, system.cell_dofs]                                   # (k, n_cells, n_dof_e)
            n_p, n_voigt, n_dof = self._reference_points().shape[0], system.D.shape[0], ue.shape[2]
            if system.is_grid or system.n_cells * n_p * n_voigt * n_dof <= _KEEP_OPERATORS_MAX_ENTRIES:
                ops = self._stress_operators(system)
                if ops.shape[0] == 1:
                    points = np.einsum("pvd,kcd->kcpv", ops[0], ue)
                else:
                    points = np.einsum("cpvd,kcd->kcpv", ops, ue)
            else:                                   # large meshes: operators per block of cells (memory)
                points = np.empty((ue.shape[0], system.n_cells, n_p, n_voigt))
                block = max(1, _KEEP_OPERATORS_MAX_ENTRIES // (n_p * n_voigt * n_dof))
                for start in range(0, system.n_cells, block):
                    cells = np.arange(start, min(system.n_cells, start + block))
                    points[:, cells] = np.einsum("cpvd,kcd->kcpv", self._stress_operators(system, cells), ue[:, cells])
            vm = von_mises(points, model.dim, model.plane, model.material.nu)
            state.cache[key] = {"points": points, "vm": vm}
        return state.cache[key]

    def describe(self) -> dict:
        return {**Response.describe(self), "base": self.base.describe(), "relaxation": self.relaxation,
                "q" if self.relaxation == "qp" else "epsilon": self.q if self.relaxation == "qp" else self.epsilon,
                "limits": dict(zip(self.cases, self.limits.tolist())), "multiplier_penalty": self.mu_start,
                "penalty_growth": self.penalty_growth, "penalty_max": self.penalty_max,
                "update_every": self.update_every, "tolerance": self.tolerance, "sampling": self.sampling,
                "singular_radius": self.singular_radius, "singular_floor": self.singular_floor,
                "exclude": self.exclude}

    def amplification(self, system=None) -> np.ndarray:
        """Factor a on the stress at each sampling point (n_cells, n_points): 1, or near a re-entrant corner
        of the domain max(1, (singular_radius / r)^(1-λ)) (r: distance to the corner, 1-λ its singularity exponent).

        Why: at a re-entrant corner the stress is unbounded and a mesh samples it at r ~ h/5 only, so a
        design that runs material into the corner meets its limit on one mesh and not on a finer one; the
        factor evaluates the corner field as if sampled at singular_radius (a length in the mesh's units,
        by default the filter radius), the same on every mesh.

        system: the model's LinearElasticSystem (built if None); a re-entrant corner that is supported
        or loaded is skipped: the design must keep material there, and its stress is an artefact of
        the idealised support or load, like the stress the ``exclude`` option leaves out.
        """
        if self._amplification is None:
            mesh = self.model.mesh
            xi = self._reference_points()
            factor = np.ones((mesh.n_cells, xi.shape[0]))
            where, angles, nodes = reentrant_corners(mesh, return_nodes=True) if self.singular_radius \
                else (np.zeros((0, 2)), (), ())
            if len(angles):
                free = self._free_nodes(nodes, system)
                where, angles = where[free], np.asarray(angles)[free]
            if len(angles):
                from ...mesh.cell_types import shape_functions
                N, _ = shape_functions(mesh.cell_type, xi)
                positions = np.einsum("pn,cnd->cpd", N, mesh.points[mesh.cells])       # (n_cells, n_p, dim)
                for corner, angle in zip(where, angles):
                    r = np.linalg.norm(positions - corner, axis=2)
                    exponent = singularity_exponent(float(angle))
                    # points at the vertex itself (corner sampling, r = 0) are judged at singular_floor x R:
                    # a large but finite factor ((1/0.002)^(1-λ) = 17 at 3π/2), so material may not touch
                    # the singular point, while the penalty's scale stays finite for MMA
                    factor = np.maximum(factor, (self.singular_radius
                                                 / np.maximum(r, self.singular_floor * self.singular_radius))
                                        ** exponent)
            self._amplification = factor
        return self._amplification

    def _free_nodes(self, nodes, system) -> np.ndarray:
        """Mask of ``nodes`` (indices) that are neither supported nor loaded in any load case."""
        if system is None:
            system = self.model.system()
        dim = self.model.dim
        held = np.zeros(self.model.mesh.n_nodes, dtype=bool)
        held[np.asarray(system.fixed_dofs, dtype=np.int64) // dim] = True
        held[np.asarray(system.loaded_dofs, dtype=np.int64) // dim] = True
        return ~held[np.asarray(nodes, dtype=np.int64)]

    def _constraints(self, state) -> np.ndarray:
        """g = a η vm / S_k - 1 per case, cell and point (k, n_cells, n_p); excluded cells -1 (a: :meth:`amplification`)."""
        key = ("stress_al.g", id(self))
        if key not in state.cache:
            sigma = (self.stress_scale(state.rho)[None, :, None] * self.local(state)["vm"]
                     * self.amplification(state.system)[None])
            g = sigma / self.limits[:, None, None] - 1.0
            g[:, ~self.included] = -1.0
            state.cache[key] = g
            if self.multipliers is None:
                self.multipliers = np.zeros_like(g)
        return state.cache[key]

    def evaluate(self, state):
        base_value, base_grad = self.base.evaluate(state)
        g = self._constraints(state)
        lam, mu = self.multipliers, self.mu
        h = np.maximum(g, -lam / mu)
        active = g > -lam / mu
        h[:, ~self.included] = 0.0
        active[:, ~self.included] = False
        n_constraints = int(self.included.sum()) * g.shape[0] * g.shape[2]
        penalty = float(np.sum(lam * h + 0.5 * mu * h ** 2)) / n_constraints
        # dP/dg_i = (λ_i + μ h_i) / N where h_i = g_i, else 0 (h_i = -λ_i/μ does not depend on ρ̄)
        weights = np.where(active, lam + mu * h, 0.0) * self.amplification(state.system)[None] \
            / (n_constraints * self.limits[:, None, None])
        grad = self.base_scale * np.asarray(base_grad[0], dtype=float)
        if np.any(active):
            grad = grad + self._weighted_gradient(state, weights).sum(axis=0)
        value = self.base_scale * float(base_value[0]) + penalty
        return np.array([value]), grad[None, :]

    def peak(self, state) -> np.ndarray:
        """True maximum of the relaxed stress over the included points, per case (k,)."""
        g = self._constraints(state)
        return (g.reshape(len(self.cases), -1).max(axis=1) + 1.0) * self.limits

    def satisfied(self, state) -> bool:
        """Every included point's relaxed stress within (1 + tolerance) of its limit."""
        return bool(self._constraints(state).max() <= self.tolerance)

    def end_iteration(self, state) -> dict:
        """Every update_every iterations: λ <- max(0, λ + μ g), then μ <- min(growth μ, penalty_max).

        Returns figures for the history record (peak relaxed stress per case, its ratio to the limit,
        the penalty μ and the number of active points).
        """
        g = self._constraints(state)
        record = {}
        peaks = self.peak(state)
        for k, case in enumerate(self.cases):
            record[f"max_stress[{case}]"] = float(peaks[k])
            record[f"stress_ratio[{case}]"] = float(peaks[k] / self.limits[k])
        record["stress_penalty_mu"] = self.mu
        self.iterations += 1
        if self.iterations % self.update_every == 0:
            self.multipliers = np.maximum(0.0, self.multipliers + self.mu * g)
            self.multipliers[:, ~self.included] = 0.0
            self.mu = min(self.penalty_growth * self.mu, self.penalty_max)
        record["stress_active_points"] = int(np.count_nonzero(self.multipliers))
        return record

    def checkpoint_arrays(self) -> dict:
        """State to resume bit-identically: the multipliers, μ and the iteration count."""
        lam = np.zeros(0) if self.multipliers is None else self.multipliers.copy()
        return {"multipliers": lam, "mu": np.array(self.mu),
                "iterations": np.array(self.iterations)}

    def load_checkpoint_arrays(self, arrays: dict) -> None:
        """Take back what :meth:`checkpoint_arrays` returned."""
        lam = np.array(arrays["multipliers"], dtype=float)
        self.multipliers = None if lam.size == 0 else lam
        self.mu = float(arrays["mu"])
        self.iterations = int(arrays["iterations"])

    def resume(self, record: dict) -> None:
        """Nothing to take from the history record: the state travels in :meth:`checkpoint_arrays`."""


# ---------------------------------------------------------------------- re-entrant corners (2D)
def reentrant_corners(mesh, min_angle: float = np.pi * (1 + 1e-3), return_nodes: bool = False):
    """Boundary nodes of a 2D mesh where the domain's interior angle exceeds π: (positions (m, 2), angles (m,) rad),
    and with ``return_nodes`` their node indices (m,) as a third item.

    The interior angle at a node is the sum of the corner angles of the cells that hold it (a
    node inside the mesh sums to 2π, one on a straight edge to π). 3D meshes return none (their
    re-entrant edges are not detected).
    """
    from ...mesh.cell_types import cell_type
    if mesh.dim != 2:
        empty = (np.zeros((0, mesh.points.shape[1])), np.zeros(0))
        return (*empty, np.zeros(0, dtype=np.int64)) if return_nodes else empty
    corners = cell_type(mesh.cell_type).n_corners
    cells = mesh.cells[:, :corners]
    pts = mesh.points[:, :2]
    angle_sum = np.zeros(mesh.n_nodes)
    for a in range(corners):
        here = pts[cells[:, a]]
        prev = pts[cells[:, (a - 1) % corners]] - here
        nxt = pts[cells[:, (a + 1) % corners]] - here
        cos = np.einsum("ij,ij->i", prev, nxt) / (np.linalg.norm(prev, axis=1) * np.linalg.norm(nxt, axis=1))
        np.add.at(angle_sum, cells[:, a], np.arccos(np.clip(cos, -1.0, 1.0)))
    used = np.zeros(mesh.n_nodes, dtype=bool)
    used[cells.ravel()] = True
    # inside nodes sum to 2π; re-entrant boundary nodes to (π, 2π)
    chosen = used & (angle_sum > min_angle) & (angle_sum < 2 * np.pi * (1 - 1e-6))
    if return_nodes:
        return mesh.points[chosen], angle_sum[chosen], np.flatnonzero(chosen)
    return mesh.points[chosen], angle_sum[chosen]


def singularity_exponent(angle: float) -> float:
    """1 - λ of the mode I corner field σ ~ r^(λ-1) at a notch of interior angle ``angle`` (rad, > π).

    λ is the smallest root in (0.5, 1) of sin(λ ω) + λ sin(ω) = 0 (Williams 1952); 0.4555 at 3π/2,
    0.5 for a crack (2π), 0 for a straight edge (π).
    """
    from scipy.optimize import brentq
    if angle <= np.pi:
        return 0.0
    if angle >= 2 * np.pi - 1e-9:
        return 0.5
    lam = brentq(lambda x: np.sin(x * angle) + x * np.sin(angle), 0.5 + 1e-12, 1.0 - 1e-12)
    return 1.0 - lam
