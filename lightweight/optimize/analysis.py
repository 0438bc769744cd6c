"""The physics of one design iteration, computed on demand: :class:`Analysis` and :class:`DesignState`.

An :class:`Analysis` is built once per optimization run: the model, its discretization, the
stiffness law (:class:`~lightweight.fem.interpolation.Interpolation`), the solver choice and the
cell volumes. For each design it makes a :class:`DesignState` holding the physical densities ρ̄;
the static solve runs the first time a response asks for ``state.static`` (a
:class:`~lightweight.fem.system.StaticState` with U, F and adjoint solves), so a problem whose
responses need no static solve never pays for one, and one solve serves every response of
the iteration. Other analyses (e.g. modes) are cached per state in ``state.cache`` by the
responses that need them.

The static solves of the loop stop at a looser relative residual than a lone analysis where
they run on AMG-PCG (unstructured meshes): :data:`DESIGN_SOLVER_RTOL`, 1e-4 against the
solver's 1e-6. Each design iteration only steers the next, and a solve warm started from the
last displacements reaches 1e-4 in fewer iterations: on the 63k-tet Gmsh bracket (three load
cases, amg-reuse, 40 MMA iterations) PCG took 8-28 iterations instead of 13-38 and the run 59.8
instead of 90.5 s, while every compliance of the history stayed within 1.5e-7 (relative) of the
1e-6 run and the final densities within 5.5e-6; on a saved 422k-tet iterate the compliance is
1e-7 from the converged one (docs/performance.md, "A design-loop tolerance"). Stopping the
state solves of an optimization loop early is the inexact-solve idea of Amir, Aage and Lazarov
("On multigrid-CG for efficient topology optimization", SMO 2014), who stop CG on the accuracy
the design update needs; we keep a fixed tolerance that measurement showed invisible in the
designs. Direct solvers are exact either way. The grid multigrid keeps its 1e-6: there the
same stop moved the compliance history of the TopOpt_in_PETSc cantilever (64x32x32, 12
iterations) by up to 8.5e-6 for 20 % less time, more than the 1e-6 to which that history
agrees with the direct solver's, and the grid's time targets are met without it.
``Analysis(solver_rtol=None)`` keeps each solver's own tolerance (the gradient checks use it).

On a structured grid every cell has the same volume, so ``Analysis.cell_volumes`` is a
read-only stride-0 view of that one number (8 B per cell less for the whole run; its readers
only read it, and a write would raise instead of passing silently).
"""

from __future__ import annotations

import sys

import numpy as np

# relative residual ||K u - f|| / ||f|| at which the design loop's AMG-PCG solves stop (the grid
# multigrid keeps its own; see the module docstring for the measurements)
DESIGN_SOLVER_RTOL = 1e-4


class Analysis:
    """Model, discretization, stiffness law and solver of one optimization run.

    solver_rtol: the iterative solvers' stopping tolerance for this run's static and adjoint
    solves ("design": :data:`DESIGN_SOLVER_RTOL`, read when the Analysis is made; None: the
    solver's own; or a number in (0, 1)).
    """

    def __init__(self, model, interpolation, solver: str = "auto", solver_rtol="design"):
        self.model = model
        self.system = model.system()
        self.interpolation = interpolation
        self.solver = solver
        if isinstance(solver_rtol, str) and solver_rtol == "design":
            solver_rtol = None if self._grid_multigrid(solver) else DESIGN_SOLVER_RTOL
        self.solver_rtol = None if solver_rtol is None else float(solver_rtol)
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

    def _grid_multigrid(self, solver) -> bool:
        """Whether the static solves run on the grid multigrid (which keeps its own rtol)."""
        from ..errors import LightweightError
        try:
            return bool(self.system.uses_multigrid(solver))
        except LightweightError:
            return False            # the analysis itself reports a solver that cannot run

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
        # cache keys whose entries only gradients read (release_gradients drops them)
        self.gradient_keys: set = {"stiffness_derivative"}
        self._static = None

    def release_gradients(self) -> None:
        """Drop the cached arrays that only gradients need (the stiffness derivative, the
        compliance gradients, ...: ``gradient_keys``), once the optimizer holds its gradients.

        The design loop calls it before its update, whose temporaries would otherwise sit on
        top of them (16 B per cell of a compliance run); a response that needs them again
        computes them again.
        """
        for key in self.gradient_keys:
            self.cache.pop(key, None)

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
            guess, a.last_displacements = a.last_displacements, None
            # nothing else holds the previous displacements (the previous design's state is
            # gone: only this local and getrefcount's argument remain): hand them over, so the
            # grid multigrid builds the new U in their memory (25 B/hex less at its peak)
            disposable = guess is not None and sys.getrefcount(guess) == 2
            try:
                self._static = a.system.analyse(self.stiffness_scale, mass_scale=self.rho, solver=a.solver,
                                                x0=guess, rtol=a.solver_rtol, x0_disposable=disposable)
            except BaseException:
                a.last_displacements = guess       # a finite start for a retry, whatever it holds now
                raise
            a.last_displacements = self._static.U
        return self._static

    @property
    def has_static(self) -> bool:
        return self._static is not None

    def compliances(self) -> np.ndarray:
        """f_c · u_c per load case (n_cases,)."""
        return self.static.load_work()
