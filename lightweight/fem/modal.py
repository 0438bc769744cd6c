"""Modal analysis: ``lw.modes(model, n=6, density=None)`` -> natural frequencies and mode shapes.

The generalized eigenproblem K phi = lambda M phi (consistent mass, :mod:`lightweight.fem.mass`)
is solved on the free DOFs (supports eliminated by removing their rows and columns, so they add
no spurious eigenvalues; a prescribed non-zero support value counts as held at zero, and load
cases are ignored). Frequencies come from the user's units: with N, mm and t/mm^3,
lambda is in (rad/s)^2 and f = sqrt(lambda) / (2 pi) in Hz. Shapes are mass-normalised
(phi^T M phi = 1) and the sign of each is fixed so that its largest component is positive.

Solvers, the approach of the established FE codes (CalculiX, Abaqus: shift-invert Lanczos):

- ``"lanczos"``: ARPACK's shift-invert mode (``scipy.sparse.linalg.eigsh`` with ``sigma``)
  with our direct solver's factorization of K - sigma M as the inverse operator
  (:func:`lightweight.fem.solvers.make_solver`, PARDISO / CHOLMOD / SuperLU). ARPACK then
  finds the eigenvalues nearest sigma in a handful of factor solves per mode.
- ``"lobpcg"``: ``scipy.sparse.linalg.lobpcg`` preconditioned by a smoothed-aggregation AMG
  V-cycle of K - sigma M (pyamg, rigid-body modes as near-null space, the preconditioner of our
  static AMG-PCG). No factorization: memory grows linearly, for models a direct solver cannot
  factor.
- ``"auto"``: Lanczos whenever ``make_solver("auto")`` would pick a direct solver for a model
  of this size, LOBPCG otherwise.

The shift sigma is slightly negative (``SHIFT_FRACTION`` of the mean diagonal ratio of K to M,
far below the first elastic eigenvalue of any practical mesh), so K - sigma M is positive
definite even for an unsupported body: its six (2D: three) rigid-body modes come out first,
at frequencies near zero, before the elastic ones.

Density: like :func:`lightweight.solve`, a per-cell density field scales the stiffness through
the SIMP law and the mass linearly. ``stiffness_scale=`` and ``mass_scale=`` arrays replace it
for callers with their own interpolation (e.g. a low-density mass penalization against local
modes in void regions).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import LightweightError, SolverError
from ..provenance import hash_inputs, provenance
from .mass import mass_matrix

# sigma = -SHIFT_FRACTION * mean(diag K / diag M) over the free DOFs
SHIFT_FRACTION = 1e-8
# LOBPCG: residual ||K x - lambda M x|| of K, M scaled to unit mean diagonal; iteration limit
LOBPCG_TOL = 1e-9
LOBPCG_MAXITER = 500


@dataclass(eq=False)
class Modes:
    """Natural frequencies and mass-normalised mode shapes of a Model.

    frequencies (n_modes,) in Hz from the user's units, ascending (rigid-body modes ~0);
    eigenvalues (n_modes,) lambda = omega^2; shapes (n_modes, n_nodes, dim) with
    phi^T M phi = 1; density (n_cells,) or None for the solid part.
    """

    model: object = field(repr=False)
    frequencies: np.ndarray
    eigenvalues: np.ndarray
    shapes: np.ndarray = field(repr=False)
    density: np.ndarray | None = field(default=None, repr=False)
    provenance: dict = field(default_factory=dict, repr=False)
    solver_info: dict = field(default_factory=dict, repr=False)

    @property
    def mesh(self):
        return self.model.mesh

    @property
    def n_modes(self) -> int:
        return int(self.frequencies.shape[0])

    def summary(self) -> dict:
        """JSON-able results: frequencies in Hz and eigenvalues."""
        return {"frequencies": self.frequencies.tolist(), "eigenvalues": self.eigenvalues.tolist()}

    def save(self, path) -> None:
        """Write the mesh with each shape as point data ``mode_<k>`` (k from 1) and provenance."""
        from ..mesh.io import write_mesh
        point_data = {f"mode_{k + 1}": self.shapes[k] for k in range(self.n_modes)}
        cell_data = {"density": (np.ones(self.mesh.n_cells) if self.density is None
                                 else np.asarray(self.density, dtype=float))}
        meta = {"provenance": json.dumps(self.provenance), "summary": json.dumps(self.summary())}
        write_mesh(path, self.mesh, point_data=point_data, cell_data=cell_data, metadata=meta)


def modal_system(model):
    """The model's LinearElasticSystem for modal analysis, cached.

    A fully supported model shares the static analysis' system (one set of element matrices);
    an unsupported one gets its own, built without the mechanism check.
    """
    from ..errors import SingularStiffnessError
    system = getattr(model, "_system", None) or getattr(model, "_modal_system", None)
    if system is not None:
        return system
    if model.supports:
        try:
            return model.system()
        except SingularStiffnessError:
            pass                       # partly supported: rigid-body modes remain
    from .system import LinearElasticSystem
    model._modal_system = LinearElasticSystem(model, check_mechanisms=False)
    return model._modal_system


def _scales(model, density, stiffness_scale, mass_scale, penalty, min_stiffness):
    from .interpolation import Interpolation
    from .static import check_density
    n_cells = model.mesh.n_cells
    if density is not None and (stiffness_scale is not None or mass_scale is not None):
        raise LightweightError("lw.modes: give either density= or stiffness_scale=/mass_scale=, not both")
    rho = None
    if density is not None:
        rho = check_density(density, n_cells)
        return rho, Interpolation("simp", penalty, min_stiffness).stiffness(rho), rho
    out = []
    for name, value in (("stiffness_scale", stiffness_scale), ("mass_scale", mass_scale)):
        if value is None:
            out.append(np.ones(n_cells))
            continue
        arr = np.asarray(value, dtype=float).ravel()
        if arr.shape != (n_cells,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise LightweightError(f"lw.modes: {name} must be {n_cells} finite values >= 0 (one per cell), "
                                   f"got shape {np.shape(value)}")
        out.append(arr)
    return rho, out[0], out[1]


def modes(model, n: int = 6, density=None, penalty: float = 3.0, min_stiffness: float = 1e-9,
          stiffness_scale=None, mass_scale=None, method: str = "auto", solver: str = "auto",
          shift: float | None = None, mass_integration: str = "exact") -> Modes:
    """The ``n`` lowest natural frequencies (Hz) and mass-normalised mode shapes of ``model``.

    density: per-cell field in [0, 1] (stiffness through SIMP with ``penalty`` and
    ``min_stiffness``, mass linear), None for the solid part; or stiffness_scale / mass_scale
    (n_cells,) multipliers of E and of the material density. method: "auto", "lanczos"
    (shift-invert, direct solver ``solver``) or "lobpcg" (AMG-preconditioned). shift: sigma in
    (rad/time)^2, default slightly negative (see module docstring). The model needs no load
    case; without supports its rigid-body modes come first. mass_integration: "exact" or
    "stiffness" (CalculiX's choice, see :mod:`lightweight.fem.mass`).
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise LightweightError(f"lw.modes: n (number of modes) must be a positive integer, got {n!r}")
    if model.material.density <= 0:
        raise LightweightError("lw.modes needs the material's mass: give lw.Material(density=...) > 0 "
                               "(t/mm^3 with N and mm, e.g. 7.85e-9 for steel)")
    if mass_integration not in ("exact", "stiffness"):
        raise LightweightError(f"lw.modes: mass_integration must be 'exact' or 'stiffness', "
                               f"got {mass_integration!r}")
    method = str(method).lower()
    if method not in ("auto", "lanczos", "lobpcg"):
        raise LightweightError(f"lw.modes: method must be 'auto', 'lanczos' or 'lobpcg', got {method!r}")
    rho, k_scale, m_scale = _scales(model, density, stiffness_scale, mass_scale, penalty, min_stiffness)
    system = modal_system(model)
    t0 = time.perf_counter()
    free = system.free_mask
    n_free = int(free.sum())
    if n > n_free - 1:
        raise LightweightError(f"lw.modes: asked for {n} modes but the model has only {n_free} free DOFs")
    K = system.stiffness_matrix(k_scale)[free][:, free].tocsr()
    M = mass_matrix(system, m_scale, mass_integration)[free][:, free].tocsr()
    dK, dM = K.diagonal(), M.diagonal()
    positive = dM > 0
    if not np.any(positive):
        raise LightweightError("lw.modes: the mass matrix is zero (mass_scale all 0?)")
    sigma = (-SHIFT_FRACTION * float(np.mean(dK[positive] / dM[positive])) if shift is None
             else float(shift))
    if method == "auto":
        from .solvers import make_solver
        method = ("lanczos" if make_solver("auto", n_dofs=n_free, dim=system.dim, reused=False).direct
                  else "lobpcg")
    t1 = time.perf_counter()
    if method == "lanczos":
        values, vectors, info = _shift_invert(K, M, n, sigma, solver, system.dim)
    else:
        points = system.mesh.points
        values, vectors, info = _lobpcg(K, M, n, sigma, free, points)
    order = np.argsort(values)[:n]
    values, vectors = values[order], vectors[:, order]
    # mass-normalise, fix the sign (largest component positive)
    norms = np.sqrt(np.einsum("ik,ik->k", vectors, M @ vectors))
    vectors = vectors / norms
    big = np.abs(vectors).argmax(axis=0)
    vectors *= np.sign(vectors[big, np.arange(vectors.shape[1])])
    full = np.zeros((n, system.n_dofs))
    full[:, free] = vectors.T
    frequencies = np.sqrt(np.clip(values, 0.0, None)) / (2 * np.pi)
    info.update(method=method, sigma=sigma, n_free_dofs=n_free, assembly_seconds=t1 - t0,
                eigen_seconds=time.perf_counter() - t1)
    prov = provenance(model_sha256=model.fingerprint(),
                      density_sha256=hash_inputs(rho) if rho is not None else None,
                      parameters={"n": int(n), "penalty": penalty, "min_stiffness": min_stiffness,
                                  "method": method, "sigma": sigma, "mass_integration": mass_integration},
                      solver=info.get("solver"))
    return Modes(model=model, frequencies=frequencies, eigenvalues=values,
                 shapes=full.reshape(n, system.mesh.n_nodes, system.dim), density=rho,
                 provenance=prov, solver_info=info)


def _shift_invert(K, M, n, sigma, solver, dim):
    """ARPACK shift-invert with a direct factorization of K - sigma M: (values, vectors, info)."""
    from .solvers import make_solver
    shifted = (K - sigma * M).tocsr()
    shifted.sort_indices()
    # the same rule as method="auto" above: one matrix, one setup
    lin = make_solver(solver, n_dofs=K.shape[0], dim=dim, reused=False)
    if not lin.direct:
        raise SolverError(f"lw.modes method='lanczos' needs a direct solver, got {lin.name!r}; "
                          f"use solver='direct' or method='lobpcg'")
    lin.factorize(shifted)
    solves = [0]

    def apply_inverse(b):
        solves[0] += 1
        return lin.solve(np.ascontiguousarray(b, dtype=float))

    op = spla.LinearOperator(K.shape, matvec=apply_inverse, dtype=float)
    values, vectors = spla.eigsh(K, k=n, M=M, sigma=sigma, which="LM", OPinv=op, tol=0.0)
    return values, vectors, {"solver": lin.name, "factor_solves": solves[0]}


def _lobpcg(K, M, n, sigma, free, points):
    """LOBPCG on K phi = lambda M phi, AMG V-cycle of K - sigma M as preconditioner.

    LOBPCG's tolerance is absolute, so the problem is solved with K and M divided by their
    mean diagonals (eigenvalues scale by the ratio, vectors do not change).
    """
    import warnings

    import pyamg

    from .solvers import rigid_body_modes
    k_unit, m_unit = float(np.mean(K.diagonal())), float(np.mean(M.diagonal()))
    Kn, Mn = (K / k_unit).tocsr(), (M / m_unit).tocsr()
    sigma_n = sigma * m_unit / k_unit
    shifted = (Kn - sigma_n * Mn).tocsr()
    near_null = rigid_body_modes(points)[free]
    hierarchy = pyamg.smoothed_aggregation_solver(shifted, B=near_null, max_coarse=500)
    precondition = hierarchy.aspreconditioner(cycle="V")
    # Rigid-body motions the supports leave free are exact null vectors of K: LOBPCG breaks
    # down on them (singular Gram matrices), so they are found here, M-orthonormalised, and
    # handed to LOBPCG as constraints (it iterates in their M-orthogonal complement).
    null = np.zeros((K.shape[0], 0))
    if near_null.shape[1]:
        small_k = near_null.T @ (Kn @ near_null)
        small_m = near_null.T @ (Mn @ near_null)
        lam, coeff = scipy.linalg.eigh(small_k, small_m)
        null = near_null @ coeff[:, lam < 1e-12]            # M-orthonormal by eigh
    n_null = null.shape[1]
    values = np.zeros(0)
    vectors = np.zeros((K.shape[0], 0))
    history = []
    if n > n_null:
        block = min(K.shape[0] - 1 - n_null, (n - n_null) + max(4, (n - n_null) // 2))
        rng = np.random.default_rng(0)
        X = rng.standard_normal((K.shape[0], block))
        with warnings.catch_warnings():
            # convergence is judged below on the modes asked for, not on the extra block vectors
            warnings.simplefilter("ignore", UserWarning)
            values, vectors, history = spla.lobpcg(Kn, X, B=Mn, M=precondition, Y=null if n_null else None,
                                                   largest=False, tol=LOBPCG_TOL, maxiter=LOBPCG_MAXITER,
                                                   retResidualNormsHistory=True)
    values = np.concatenate([np.zeros(n_null), np.asarray(values)])
    vectors = np.hstack([null, np.asarray(vectors)])
    order = np.argsort(values)[:n]
    residual = (np.linalg.norm(Kn @ vectors[:, order] - (Mn @ vectors[:, order]) * values[order], axis=0)
                / np.sqrt(np.einsum("ik,ik->k", vectors[:, order], Mn @ vectors[:, order])))
    if np.any(residual > 1e3 * LOBPCG_TOL):
        raise SolverError(f"lw.modes: LOBPCG did not converge in {LOBPCG_MAXITER} iterations "
                          f"(residuals {np.array2string(residual, precision=2)}); use method='lanczos'")
    info = {"solver": "lobpcg+amg", "iterations": len(history), "residual_norms": residual.tolist(),
            "rigid_modes": n_null}
    return values * (k_unit / m_unit), vectors, info
