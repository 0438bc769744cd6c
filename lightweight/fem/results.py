"""Results of a static analysis: plain arrays per load case, saved through meshio.

Every per-case result is a dict keyed by load-case name (docs/architecture.md). Stresses are evaluated at
the integration points (:mod:`lightweight.fem.stress`): ``von_mises`` per cell is the maximum
over the cell's points, ``max_von_mises`` the maximum over all points, nodal values are
extrapolated from the points and averaged over the cells sharing a node (CalculiX/Abaqus).
``save`` writes point data ``displacement:<case>``, ``von_mises_nodal:<case>``,
``stress_nodal:<case>`` and ``principal_stress:<case>`` (3 values, largest first), cell data
``von_mises:<case>``, ``strain_energy:<case>``, ``stress:<case>`` (mean over the cell's points)
and ``density``, plus a JSON provenance record (package version, hashes of the model and the
density, solver) that :func:`lightweight.mesh.io.read_metadata` reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Solution:
    """Static solution of a Model for one density field (see module docstring for shapes)."""

    model: object = field(repr=False)
    displacement: dict[str, np.ndarray]          # {case: (n_nodes, dim)}
    compliance: dict[str, float]                 # {case: f.u (+ work of prescribed displacements)}
    strain_energy: dict[str, np.ndarray]         # {case: (n_cells,)} 1/2 u_e^T K_e u_e (scaled)
    stress: dict[str, np.ndarray]                # {case: (n_cells, n_voigt)} mean over the cell's points
    von_mises: dict[str, np.ndarray]             # {case: (n_cells,)} max over the cell's points
    von_mises_nodal: dict[str, np.ndarray]       # {case: (n_nodes,)} of the nodal stress tensor
    reactions: dict[str, dict[str, np.ndarray]]  # {case: {support set: (dim,)}}
    max_displacement: dict[str, float]           # {case: largest nodal |u|}
    density: np.ndarray | None                   # (n_cells,) or None for solid
    volume: float                                # material volume (area*thickness in 2D)
    mass: float | None                           # volume * material density; None: no density given
    provenance: dict = field(default_factory=dict)
    solver_info: dict = field(default_factory=dict, repr=False)
    # {case: (n_nodes, n_voigt)} point stresses extrapolated to the nodes and averaged
    stress_nodal: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # (n_cells,) multiplier of the solid-material stress used for every stress above (None: 1)
    stress_scale: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # without a material density the mass is unknown, not 0 (a 0 would pass any max_mass)
        if not getattr(self.model.material, "density", 0.0):
            self.mass = None

    @property
    def mesh(self):
        return self.model.mesh

    @property
    def max_von_mises(self) -> dict[str, float]:
        return {case: float(np.max(v)) for case, v in self.von_mises.items()}

    def integration_point_stresses(self, case: str) -> np.ndarray:
        """Stresses at every integration point of load case ``case``, (n_cells, n_points, n_voigt)."""
        from .stress import integration_point_stresses
        if case not in self.displacement:
            from ..errors import LightweightError
            raise LightweightError(f"unknown load case {case!r}; cases: {', '.join(self.displacement)}")
        return integration_point_stresses(self.model, self.displacement[case].reshape(1, -1),
                                          self.stress_scale)[0]

    def principal_stresses(self, case: str) -> np.ndarray:
        """Principal stresses of the nodal stress tensor of ``case``, (n_nodes, 3), largest first."""
        from .stress import principal_stresses
        return principal_stresses(self.stress_nodal[case], self.model.dim, self.model.plane,
                                  self.model.material.nu)

    def safety_factor(self) -> dict[str, float] | None:
        """yield_strength / max von Mises per case, or None without a yield strength."""
        from .material import safety_factor
        ys = self.model.material.yield_strength
        if ys is None:
            return None
        return {case: safety_factor(ys, m) for case, m in self.max_von_mises.items()}

    def summary(self) -> dict:
        """JSON-able scalar results."""
        return {"compliance": dict(self.compliance), "max_displacement": dict(self.max_displacement),
                "max_von_mises": self.max_von_mises, "volume": self.volume, "mass": self.mass,
                "reactions": {c: {s: v.tolist() for s, v in r.items()} for c, r in self.reactions.items()}}

    def point_data(self) -> dict[str, np.ndarray]:
        data = {f"displacement:{c}": u for c, u in self.displacement.items()}
        data.update({f"von_mises_nodal:{c}": v for c, v in self.von_mises_nodal.items()})
        data.update({f"stress_nodal:{c}": v for c, v in self.stress_nodal.items()})
        data.update({f"principal_stress:{c}": self.principal_stresses(c) for c in self.stress_nodal})
        return data

    def cell_data(self) -> dict[str, np.ndarray]:
        data: dict[str, np.ndarray] = {}
        for c in self.displacement:
            data[f"von_mises:{c}"] = self.von_mises[c]
            data[f"strain_energy:{c}"] = self.strain_energy[c]
            data[f"stress:{c}"] = self.stress[c]
        data["density"] = (np.ones(self.model.mesh.n_cells) if self.density is None
                           else np.asarray(self.density, dtype=float))
        return data

    def save(self, path) -> None:
        """Write mesh + results (.vtu, .xdmf or any meshio format) with provenance."""
        from ..mesh.io import write_mesh
        meta = {"provenance": json.dumps(self.provenance), "summary": json.dumps(self.summary())}
        write_mesh(path, self.model.mesh, point_data=self.point_data(), cell_data=self.cell_data(),
                   metadata=meta)
