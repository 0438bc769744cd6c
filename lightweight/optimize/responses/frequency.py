"""Natural frequency (Hz) of the design as a response: a floor (``Frequency(model) >= F``) or an
objective to maximize, with a low-density interpolation that keeps void regions from ringing.

Approach.

- Eigenproblem: K(ρ̄) φ = λ M(ρ̄) φ with the consistent mass of :mod:`lightweight.fem.mass`, solved
  by :func:`lightweight.fem.modal.modes` (shift-invert Lanczos with our direct solver, or
  AMG-LOBPCG), once per design and cached on the design state. f = √λ / 2π in Hz from the
  user's units (N, mm, t/mm³ -> Hz).
- Interpolation against spurious local modes: with SIMP stiffness ρ^p and mass ρ, a low-density
  cell has stiffness/mass ρ^(p-1) -> 0, so void regions carry artificial modes of vanishing
  frequency that the optimizer cannot remove. Two published fixes, ``mass_law=``:

  - ``"pedersen"`` (Pedersen 2000, the default): mass ∝ ρ̄; stiffness as the static law above
    ρ̄ = 0.1 and linear in ρ̄ below (through E_min at 0 and the law's value at 0.1), so the
    stiffness/mass ratio of thin material stays bounded below. The static responses keep the
    static law; only the modal stiffness is modified.
  - ``"du_olhoff"`` (Du & Olhoff 2007): stiffness as the static law, mass ρ̄ above 0.1 and
    10⁵ ρ̄⁶ below (continuous at 0.1), which makes the void's mass vanish faster than its
    stiffness.
- Gradient of a simple eigenvalue with a mass-normalised shape (φᵀMφ = 1):
  dλ/dρ̄_e = φ_eᵀ (k'(ρ̄_e) K_e - λ m'(ρ̄_e) M_e) φ_e (no adjoint solve).
- Repeated eigenvalues: a single eigenvalue of a multiple pair is not differentiable (the pair
  splits in either order under a perturbation). ``n_modes=n`` aggregates the n lowest
  eigenvalues with a Kreisselmeier-Steinhauser soft minimum,
  λ_KS = -(λ_ref/β) ln Σ_i exp(-β λ_i/λ_ref), a symmetric function of the cluster, hence smooth
  where the lowest eigenvalues coincide (its gradient is Σ_i w_i dλ_i, w the softmax weights),
  and a lower bound of λ_1 (by at most λ_ref ln(n)/β): a conservative floor. λ_ref is fixed at
  the first design evaluated (so the function does not change under the optimizer) unless given.
  ``mode=k`` is the k-th frequency alone (for well-separated modes).

Values: Hz, one per response. The lower bound ``Frequency(...) >= F`` is an :class:`AtLeast`
constraint g = 1 - f/F <= 0; :class:`Scaled` turns a frequency into an objective to minimize
(``Scaled(Frequency(model), -1 / f_ref)`` maximizes it).
"""

from __future__ import annotations

import numpy as np

from ...errors import OptimizationError
from .base import Constraint, Response, register_response

MASS_LAWS = ("pedersen", "du_olhoff")
LOW_DENSITY = 0.1                 # below this density both laws switch (Pedersen 2000; Du & Olhoff 2007)
DU_OLHOFF_FACTOR = 1e5            # m = 1e5 ρ^6 below 0.1: continuous with m = ρ at 0.1
DU_OLHOFF_EXPONENT = 6.0


def modal_interpolation(rho: np.ndarray, law, mass_law: str = "pedersen"):
    """Per-cell stiffness and mass multipliers of the modal problem and their derivatives.

    rho: physical densities (n_cells,); law: the static stiffness
    :class:`~lightweight.fem.interpolation.Interpolation`; mass_law: "pedersen" | "du_olhoff".
    Returns (k, dk/dρ, m, dm/dρ), each (n_cells,), dimensionless multipliers of E and density.
    """
    rho = np.asarray(rho, dtype=float)
    if mass_law not in MASS_LAWS:
        raise OptimizationError(f"mass_law must be one of {', '.join(MASS_LAWS)}, got {mass_law!r}")
    k, dk = law.stiffness(rho), law.derivative(rho)
    m, dm = rho.copy(), np.ones_like(rho)
    low = rho <= LOW_DENSITY
    if mass_law == "pedersen":
        k0 = float(law.stiffness(np.float64(LOW_DENSITY)))
        slope = (k0 - law.min_stiffness) / LOW_DENSITY
        k = np.where(low, law.min_stiffness + slope * rho, k)
        dk = np.where(low, slope, dk)
    else:
        m = np.where(low, DU_OLHOFF_FACTOR * rho ** DU_OLHOFF_EXPONENT, m)
        dm = np.where(low, DU_OLHOFF_EXPONENT * DU_OLHOFF_FACTOR * rho ** (DU_OLHOFF_EXPONENT - 1), dm)
    return k, dk, m, dm


class AtLeast(Constraint):
    """response >= limit, written g = 1 - value / limit <= 0 (limits positive, one per value)."""

    def normalise(self, values, grads):
        return 1.0 - values / self.limits, -grads / self.limits[:, None]

    def describe(self) -> dict:
        return {**super().describe(), "bound": "lower"}


class Scaled(Response):
    """factor x another response (e.g. -1/f_ref x a frequency: an objective that maximizes it)."""

    def __init__(self, response: Response, factor: float):
        super().__init__(response.model)
        if not (np.isfinite(factor) and factor != 0):
            raise OptimizationError(f"scale factor must be finite and non-zero, got {factor!r}")
        self.response, self.factor = response, float(factor)
        self.name = f"{factor:g} * {response.name}"

    def labels(self):
        return [f"{self.factor:g} * {label}" for label in self.response.labels()]

    def evaluate(self, state):
        values, grads = self.response.evaluate(state)
        return self.factor * np.asarray(values), self.factor * np.asarray(grads)

    def describe(self) -> dict:
        return {"response": "scaled", "factor": self.factor, "of": self.response.describe()}

    def __getattr__(self, item):
        # the loop's optional hooks (e.g. end_iteration) reach the wrapped response
        if item in ("end_iteration", "resume", "stress_scale"):
            return getattr(self.response, item)
        raise AttributeError(item)


@register_response("frequency")
class Frequency(Response):
    """Natural frequency in Hz: the ``mode``-th alone, or a KS soft minimum of the lowest ``n_modes``.

    mode: 1-based mode number (default 1 when n_modes is None); n_modes: aggregate the lowest n
    (handles repeated eigenvalues, see module docstring); beta: KS sharpness; reference: λ_ref in
    (rad/time)² (None: λ_1 of the first design evaluated); mass_law: "pedersen" | "du_olhoff";
    method / solver: as :func:`lightweight.modes`.
    """

    name = "frequency"

    def __init__(self, model, mode: int | None = None, n_modes: int | None = None, beta: float = 50.0,
                 reference: float | None = None, mass_law: str = "pedersen", method: str = "auto",
                 solver: str = "auto"):
        super().__init__(model)
        if mode is not None and n_modes is not None:
            raise OptimizationError("frequency: give mode (one frequency) or n_modes (the lowest n, "
                                    "aggregated), not both")
        if mode is None and n_modes is None:
            mode = 1
        count = mode if mode is not None else n_modes
        if not (isinstance(count, (int, np.integer)) and count >= 1):
            raise OptimizationError(f"frequency: {'mode' if mode is not None else 'n_modes'} must be a "
                                    f"positive integer, got {count!r}")
        if mass_law not in MASS_LAWS:
            raise OptimizationError(f"frequency: mass_law must be one of {', '.join(MASS_LAWS)}, got {mass_law!r}")
        if not (beta > 0):
            raise OptimizationError(f"frequency: beta must be positive, got {beta!r}")
        if reference is not None and not (reference > 0):
            raise OptimizationError(f"frequency: reference must be a positive eigenvalue, got {reference!r}")
        if not model.material.density > 0:
            raise OptimizationError("a frequency response needs the material's density: "
                                    "lw.Material(..., density=...) > 0 (t/mm^3 with N and mm)")
        self.mode = None if mode is None else int(mode)
        self.n_modes = None if n_modes is None else int(n_modes)
        self.n_solve = int(count)
        self.beta = float(beta)
        self.reference = None if reference is None else float(reference)
        self.mass_law = mass_law
        self.method, self.solver = method, solver

    def labels(self):
        if self.mode is not None:
            return [f"frequency[{self.mode}]"]
        return [f"frequency[lowest {self.n_modes}]"]

    def describe(self) -> dict:
        return {**super().describe(), "mode": self.mode, "n_modes": self.n_modes, "beta": self.beta,
                "mass_law": self.mass_law}

    def __ge__(self, limit) -> AtLeast:
        return AtLeast(self, limit)

    def modes(self, state):
        """The lowest modes of the design under this response's interpolation, cached per state.

        Returns (eigenvalues (n,), shapes (n, n_dofs) mass-normalised, k, dk, m, dm (n_cells,)).
        """
        key = ("frequency.modes", self.mass_law, self.n_solve, self.method, self.solver)
        if key not in state.cache:
            from ...fem.modal import modes
            k, dk, m, dm = modal_interpolation(state.rho, state.analysis.interpolation, self.mass_law)
            result = modes(self.model, n=self.n_solve, stiffness_scale=k, mass_scale=m,
                           method=self.method, solver=self.solver)
            shapes = result.shapes.reshape(result.n_modes, -1)
            state.cache[key] = (np.asarray(result.eigenvalues, dtype=float), shapes, k, dk, m, dm)
        return state.cache[key]

    def eigenvalue_gradients(self, state) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (n,) and dλ_i/dρ̄ (n, n_cells) of the lowest n modes (simple eigenvalues)."""
        from ...fem.mass import element_mass_forms
        lam, Phi, k, dk, m, dm = self.modes(state)
        system = state.system
        stiffness_forms = system.element_energies(Phi)           # φ_eᵀ K_e φ_e, unit modulus
        mass_forms = element_mass_forms(system, Phi)             # φ_eᵀ M_e φ_e, material density
        return lam, dk[None, :] * stiffness_forms - lam[:, None] * dm[None, :] * mass_forms

    def evaluate(self, state):
        lam, dlam = self.eigenvalue_gradients(state)
        if self.mode is not None:
            value, grad = lam[self.mode - 1], dlam[self.mode - 1]
        else:
            if self.reference is None:
                self.reference = float(max(lam[0], 1e-300))    # frozen from now on
            z = -self.beta * lam / self.reference
            zmax = float(z.max())
            e = np.exp(z - zmax)
            value = -self.reference / self.beta * (zmax + np.log(e.sum()))
            grad = (e / e.sum()) @ dlam
        value = max(float(value), 0.0)
        frequency = np.sqrt(value) / (2 * np.pi)
        # df/dλ = 1 / (8 π² f)
        scale = 1.0 / (8 * np.pi ** 2 * frequency) if frequency > 0 else 0.0
        return np.array([frequency]), (scale * grad)[None, :]


def frequency_figures(model, density, n: int = 3, law=None) -> dict:
    """First ``n`` natural frequencies of a design for reports: {"frequency_1": Hz, ...}.

    density: per-cell field in [0, 1] or None (solid part); law: the design's stiffness
    :class:`~lightweight.fem.interpolation.Interpolation` (None: top88's SIMP). The modal
    stiffness/mass follow Pedersen's low-density law (as the optimizer's frequency response), so
    void cells of a SIMP design do not ring; a solid part (density None) is analysed as it is.
    """
    from ...fem.interpolation import Interpolation
    from ...fem.modal import modes
    if density is None:
        result = modes(model, n=int(n))
    else:
        from ...fem.static import check_density
        rho = check_density(density, model.mesh.n_cells)
        law = Interpolation() if law is None else law
        k, _, m, _ = modal_interpolation(rho, law, "pedersen")
        result = modes(model, n=int(n), stiffness_scale=k, mass_scale=m)
    return {f"frequency_{i + 1}": float(f) for i, f in enumerate(result.frequencies)}
