"""The physics of one design iteration, computed on demand: :class:`Analysis` and :class:`DesignState`.

An :class:`Analysis` is built once per optimization run: the model, its discretization, the
stiffness law (:class:`~lightweight.fem.interpolation.Interpolation`), the solver choice and the
cell volumes. For each design it makes a :class:`DesignState` holding the physical densities ρ̄;
the static solve runs the first time a response asks for ``state.static`` (a
:class:`~lightweight.fem.system.StaticState` with U, F and adjoint solves), so a problem whose
responses need no static solve never pays for one, and one solve serves every response of
the iteration. Other analyses (e.g. modes) are cached per state in ``state.cache`` by the
responses that need them.

On a structured grid every cell has the same volume, so ``Analysis.cell_volumes`` is a
read-only stride-0 view of that one number (8 B per cell less for the whole run; its readers
only read it, and a write would raise instead of passing silently).
"""

from __future__ import annotations

import numpy as np


class Analysis:
    """Model, discretization, stiffness law and solver of one optimization run."""

    def __init__(self, model, interpolation, solver: str = "auto"):
        self.model = model
        self.system = model.system()
        self.interpolation = interpolation
        self.solver = solver
        thickness = model.thickness if model.dim == 2 else 1.0
        uniform = model.mesh.uniform_cell_volume()
        if uniform is None:
            volumes = model.mesh.cell_volumes() * thickness
        else:
            # a structured grid: one number for every cell, held as a read-only stride-0 view
            # (the same entries as the full vector, 8 B per cell less for the whole run)
            volumes = np.broadcast_to(np.float64(uniform * thickness), (model.mesh.n_cells,))
        self.cell_volumes = volumes               # (n_cells,) in the user's units (area x thickness in 2D)
        self.total_volume = float(volumes.sum())
        self.case_names = list(self.system.case_names)
        self.n_cells = model.mesh.n_cells
        self.last_displacements = None            # warm start of iterative solvers, (n_cases, n_dofs)

    def state(self, rho: np.ndarray) -> "DesignState":
        """A state for physical densities rho (n_cells,)."""
        return DesignState(self, np.asarray(rho, dtype=float))

    def volume_fraction(self, rho: np.ndarray) -> float:
        volumes = self.cell_volumes
        if volumes.size and volumes.strides[0] == 0:        # a uniform grid (see __init__)
            return float(volumes[0] * np.sum(rho) / self.total_volume)
        return float(volumes @ rho / self.total_volume)


class DesignState:
    """Physical densities of one design and its analyses, computed when first asked for."""

    def __init__(self, analysis: Analysis, rho: np.ndarray):
        self.analysis = analysis
        self.rho = rho
        self.cache: dict = {}
        self._static = None

    @property
    def system(self):
        return self.analysis.system

    @property
    def stiffness_scale(self) -> np.ndarray:
        """E(ρ̄)/E0 per cell (n_cells,)."""
        if "stiffness_scale" not in self.cache:
            self.cache["stiffness_scale"] = self.analysis.interpolation.stiffness(self.rho)
        return self.cache["stiffness_scale"]

    @property
    def stiffness_derivative(self) -> np.ndarray:
        """d(E/E0)/dρ̄ per cell (n_cells,)."""
        if "stiffness_derivative" not in self.cache:
            self.cache["stiffness_derivative"] = self.analysis.interpolation.derivative(self.rho)
        return self.cache["stiffness_derivative"]

    @property
    def static(self):
        """The static analysis of this design (solved on first access): a StaticState."""
        if self._static is None:
            a = self.analysis
            self._static = a.system.analyse(self.stiffness_scale, mass_scale=self.rho, solver=a.solver,
                                            x0=a.last_displacements)
            a.last_displacements = self._static.U
        return self._static

    @property
    def has_static(self) -> bool:
        return self._static is not None

    def compliances(self) -> np.ndarray:
        """f_c · u_c per load case (n_cases,)."""
        s = self.static
        return np.einsum("cd,cd->c", s.F, s.U)
