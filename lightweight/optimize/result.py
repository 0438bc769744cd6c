"""The outcome of an optimization: the design, its history and its provenance.

``OptimizationResult`` is a plain dataclass holding arrays and JSON-able records, so it can be
saved (``save``: mesh + density + final solution fields + history/provenance as metadata),
compared, and re-evaluated. ``history`` is a list of per-iteration records (dicts) with at
least: ``iteration``, ``objective``, ``constraints`` (list), ``volume_fraction``, ``change``,
``grayness``, ``seconds``, ``penalty`` and ``beta``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class OptimizationResult:
    """Final design of minimize_compliance / minimize_mass (see module docstring)."""

    model: object = field(repr=False)
    density: np.ndarray                 # (n_cells,) physical densities x̄ of the final design
    design_variables: np.ndarray = field(repr=False)  # (n_design,) optimizer variables x
    history: list[dict] = field(default_factory=list, repr=False)
    problem: str = ""                   # "min_compliance" | "min_mass"
    converged: bool = False
    message: str = ""
    compliance: dict[str, float] = field(default_factory=dict)   # {case: c} of the final design
    volume_fraction: float = 0.0        # sum(v_e x̄_e) / sum(v_e)
    volume: float = 0.0                 # material volume in user units
    mass: float | None = 0.0            # volume * material density; None: no density given
    solution: object = field(default=None, repr=False)          # final Solution (fem.results)
    parameters: dict = field(default_factory=dict, repr=False)
    provenance: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # without a material density the mass is unknown, not 0
        material = getattr(self.model, "material", None)
        if material is not None and not material.density:
            self.mass = None

    @property
    def mesh(self):
        return self.model.mesh

    @property
    def iterations(self) -> int:
        return len(self.history)

    def summary(self) -> dict:
        """JSON-able scalar facts of the final design."""
        return {"problem": self.problem, "converged": self.converged, "message": self.message,
                "iterations": self.iterations, "compliance": dict(self.compliance),
                "volume_fraction": self.volume_fraction, "volume": self.volume, "mass": self.mass}

    def history_array(self, key: str) -> np.ndarray:
        """One history column as an array, e.g. ``history_array("objective")``."""
        return np.array([rec[key] for rec in self.history])

    def save(self, path) -> None:
        """Write the design (.vtu/.xdmf/...) with density, solution fields and provenance."""
        from ..mesh.io import write_mesh
        cell_data = {}
        point_data = {}
        if self.solution is not None:
            cell_data.update(self.solution.cell_data())
            point_data.update(self.solution.point_data())
        cell_data["density"] = np.asarray(self.density, dtype=float)
        meta = {"provenance": json.dumps(self.provenance), "summary": json.dumps(self.summary()),
                "history": json.dumps(self.history), "parameters": json.dumps(self.parameters, default=str)}
        write_mesh(path, self.model.mesh, point_data=point_data, cell_data=cell_data, metadata=meta)
