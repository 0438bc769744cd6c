"""``solve(model, density)``: one static analysis with all results, as a Solution.

The density field is a per-cell multiplier of the material through the SIMP law
E_e = E_min + rho_e^p (E0 - E_min); ``density=None`` is the solid part. Self-weight scales
linearly with rho (mass is proportional to density).
"""

from __future__ import annotations

import numpy as np

from ..errors import LightweightError
from ..provenance import hash_inputs, provenance
from .interpolation import DEFAULT_MIN_STIFFNESS, DEFAULT_PENALTY, Interpolation
from .results import Solution


def simp_scale(density: np.ndarray, penalty: float = DEFAULT_PENALTY,
               min_stiffness: float = DEFAULT_MIN_STIFFNESS) -> np.ndarray:
    """SIMP stiffness multiplier min_stiffness + rho^p (1 - min_stiffness), (n_cells,)."""
    return Interpolation("simp", penalty, min_stiffness).stiffness(np.asarray(density, dtype=float))


def check_density(density, n_cells: int, what: str = "density") -> np.ndarray:
    """Validate a per-cell density field in [0, 1]; returns a float array (n_cells,)."""
    rho = np.asarray(density, dtype=float).ravel()
    if rho.shape != (n_cells,):
        raise LightweightError(f"{what} must have one value per cell ({n_cells}), got {rho.shape[0]}")
    if not np.all(np.isfinite(rho)):
        raise LightweightError(f"{what} has non-finite values at cells {np.flatnonzero(~np.isfinite(rho))[:10].tolist()}")
    if rho.min() < 0 or rho.max() > 1:
        bad = np.flatnonzero((rho < 0) | (rho > 1))
        raise LightweightError(f"{what} must lie in [0, 1]; cells {bad[:10].tolist()} are outside")
    return rho


def solve(model, density=None, penalty: float = DEFAULT_PENALTY,
          min_stiffness: float = DEFAULT_MIN_STIFFNESS, solver: str = "auto",
          interpolation: Interpolation | None = None) -> Solution:
    """Solve every load case of ``model`` for a density field (None: solid) -> Solution.

    The density scales the stiffness through ``interpolation`` (an
    :class:`~lightweight.fem.interpolation.Interpolation`; default SIMP with ``penalty`` and
    ``min_stiffness``), and the self-weight linearly.
    solver: "auto", "multigrid" (structured quad/hex grids), "direct", "pardiso", "cholmod",
    "superlu" or "amg" (see :meth:`~lightweight.fem.system.LinearElasticSystem.solve`).
    """
    system = model.system()
    n_cells = model.mesh.n_cells
    law = Interpolation("simp", penalty, min_stiffness) if interpolation is None else interpolation
    if density is None:
        rho = None
        scale = np.ones(n_cells)
    else:
        rho = check_density(density, n_cells)
        scale = law.stiffness(rho)
    state = system.analyse(scale, mass_scale=rho, solver=solver)
    return build_solution(model, state, rho, **law.to_parameters())


def build_solution(model, state, rho, stress_scale=None, **parameters) -> Solution:
    """Assemble a Solution from a :class:`~lightweight.fem.system.StaticState` of ``model``.

    rho: the density field (n_cells,) the state was solved for, or None for the solid part;
    stress_scale: per-cell stress multiplier (n_cells,), default the stiffness multiplier (a
    stress-constrained design passes its relaxation ρ^q, see fem/stress.py); parameters: the
    stiffness law's parameters, recorded in the provenance.
    """
    system = model.system()
    U, F, scale = state.U, state.F, state.stiffness_scale
    dim = model.dim
    names = system.case_names
    energies = system.element_energies(U) * scale[None, :]
    # stresses at the integration points (fem/stress.py), times stress_scale per cell: a
    # stress-constrained design passes its relaxation, the default is the stiffness multiplier
    from .stress import stress_results
    stress_scale = scale if stress_scale is None else np.asarray(stress_scale, dtype=float)
    stresses = stress_results(system, U, stress_scale)
    reactions = state.reactions()
    # f.u plus the work of prescribed displacements = u^T K u
    u_fixed = U[:, system.fixed_dofs]
    residual_fixed = (state.internal_forces() - F)[:, system.fixed_dofs]
    compliance = np.einsum("cd,cd->c", F, U) + np.einsum("cd,cd->c", residual_fixed, u_fixed)
    volumes = model.mesh.cell_volumes() * (model.thickness if dim == 2 else 1.0)
    volume = float(volumes.sum() if rho is None else volumes @ rho)
    disp = {c: U[i].reshape(-1, dim) for i, c in enumerate(names)}
    prov = provenance(model_sha256=model.fingerprint(),
                      density_sha256=hash_inputs(rho) if rho is not None else None,
                      parameters=parameters, solver=state.info.get("solver"))
    return Solution(
        model=model,
        displacement=disp,
        compliance={c: float(compliance[i]) for i, c in enumerate(names)},
        strain_energy={c: 0.5 * energies[i] for i, c in enumerate(names)},
        stress={c: stresses["stress"][i] for i, c in enumerate(names)},
        von_mises={c: stresses["von_mises"][i] for i, c in enumerate(names)},
        von_mises_nodal={c: stresses["von_mises_nodal"][i] for i, c in enumerate(names)},
        stress_nodal={c: stresses["stress_nodal"][i] for i, c in enumerate(names)},
        stress_scale=stress_scale,
        reactions={c: reactions[i] for i, c in enumerate(names)},
        max_displacement={c: float(np.linalg.norm(disp[c], axis=1).max()) for c in names},
        density=rho,
        volume=volume,
        mass=volume * model.material.density,
        provenance=prov,
        solver_info=dict(state.info),
    )
