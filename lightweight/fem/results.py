"""Results of a static analysis: plain arrays per load case, saved through meshio.

Every per-case result is a dict keyed by load-case name (DESIGN.md). ``save`` writes point
data ``displacement:<case>``, cell data ``von_mises:<case>``, ``strain_energy:<case>``,
``stress:<case>`` and ``density``, plus a JSON provenance record (package version, hashes of
the model and the density, solver) that :func:`lightweight.mesh.io.read_metadata` reads back.
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
    stress: dict[str, np.ndarray]                # {case: (n_cells, n_voigt)} at cell centres
    von_mises: dict[str, np.ndarray]             # {case: (n_cells,)}
    von_mises_nodal: dict[str, np.ndarray]       # {case: (n_nodes,)} averaged from cells
    reactions: dict[str, dict[str, np.ndarray]]  # {case: {support set: (dim,)}}
    max_displacement: dict[str, float]           # {case: largest nodal |u|}
    density: np.ndarray | None                   # (n_cells,) or None for solid
    volume: float                                # material volume (area*thickness in 2D)
    mass: float                                  # volume * material density
    provenance: dict = field(default_factory=dict)
    solver_info: dict = field(default_factory=dict, repr=False)

    @property
    def mesh(self):
        return self.model.mesh

    @property
    def max_von_mises(self) -> dict[str, float]:
        return {case: float(np.max(v)) for case, v in self.von_mises.items()}

    def safety_factor(self) -> dict[str, float] | None:
        """yield_strength / max von Mises per case, or None without a yield strength."""
        ys = self.model.material.yield_strength
        if ys is None:
            return None
        return {case: (float(ys / m) if m > 0 else float("inf")) for case, m in self.max_von_mises.items()}

    def summary(self) -> dict:
        """JSON-able scalar results."""
        return {"compliance": dict(self.compliance), "max_displacement": dict(self.max_displacement),
                "max_von_mises": self.max_von_mises, "volume": self.volume, "mass": self.mass,
                "reactions": {c: {s: v.tolist() for s, v in r.items()} for c, r in self.reactions.items()}}

    def point_data(self) -> dict[str, np.ndarray]:
        data = {f"displacement:{c}": u for c, u in self.displacement.items()}
        data.update({f"von_mises_nodal:{c}": v for c, v in self.von_mises_nodal.items()})
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
