"""The analysis model: mesh + material + supports + load cases, checked on construction.

``Model`` validates everything a user can get wrong (set names, components, vector lengths,
material, plane/thickness) at once, with messages that name the set or load, so a script fails
before any expensive work. The discretization (element matrices, sparsity pattern, load
vectors) is built lazily by :meth:`Model.system` and cached: the optimizer solves the same
model hundreds of times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..errors import BoundaryConditionError, LightweightError
from ..mesh.mesh import Mesh
from ..provenance import hash_inputs
from .loads import (COMPONENTS, BodyForce, Coupling, Force, Gravity, NodalForces, Pressure, PointLoad, Spring,
                    Traction)
from .material import Material


def _parse_components(spec, dim: int, set_name: str) -> dict[int, float]:
    """'xz' -> {0: 0, 2: 0}; {'x': 0.1} -> {0: 0.1}."""
    allowed = COMPONENTS[:dim]
    if isinstance(spec, str):
        spec_items = {c: 0.0 for c in spec.lower().replace(" ", "").replace(",", "")}
        if spec.lower() == "all":
            spec_items = {c: 0.0 for c in allowed}
    elif isinstance(spec, Mapping):
        spec_items = {str(k).lower(): v for k, v in spec.items()}
    else:
        raise BoundaryConditionError(f"support {set_name!r}: give fixed components as a string like "
                                     f"'{allowed}' or a dict like {{'x': 0.0}}, got {spec!r}")
    out = {}
    for comp, value in spec_items.items():
        if comp not in allowed:
            raise BoundaryConditionError(f"support {set_name!r}: component {comp!r} is not one of "
                                         f"{', '.join(allowed)} for a {dim}D model")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise BoundaryConditionError(f"support {set_name!r}: prescribed {comp} must be a number, "
                                         f"got {value!r}") from None
        if not np.isfinite(value):
            raise BoundaryConditionError(f"support {set_name!r}: prescribed {comp} is not finite")
        out[allowed.index(comp)] = value
    if not out:
        raise BoundaryConditionError(f"support {set_name!r} fixes no component")
    return out


class Model:
    """Linear-elastic static model with named supports and load cases.

    mesh: a :class:`~lightweight.mesh.Mesh`; material: :class:`Material`;
    supports: {set name or predicate(points)->mask: 'xyz' | {'x': value, ...}};
    loads: {case name: [PointLoad | Traction | Pressure | BodyForce | Gravity, ...]} (a single
    load or list is accepted as one case named "default");
    plane: 'stress' | 'strain' and thickness (2D only).
    """

    def __init__(self, mesh: Mesh, material: Material, supports: Mapping, loads,
                 plane: str = "stress", thickness: float = 1.0):
        if not isinstance(mesh, Mesh):
            raise LightweightError(f"Model needs a lightweight Mesh, got {type(mesh).__name__}; "
                                   f"use lw.read_mesh(path) or lw.structured_grid(shape)")
        if not isinstance(material, Material):
            raise LightweightError(f"Model material must be lw.Material(E=..., nu=...), got {material!r}")
        self.mesh = mesh
        self.material = material
        if mesh.dim == 2:
            if plane not in ("stress", "strain"):
                raise BoundaryConditionError(f"plane must be 'stress' or 'strain', got {plane!r}")
            if not (np.isfinite(thickness) and thickness > 0):
                raise BoundaryConditionError(f"thickness must be positive, got {thickness}")
        self.plane = plane
        self.thickness = float(thickness) if mesh.dim == 2 else 1.0
        mesh.check_cells()
        self.springs: list[Spring] = []      # bushings (stiffness to ground), filled by _check_supports
        self.supports = self._check_supports(supports)
        self.loads = self._check_loads(loads)
        self._system = None

    # ------------------------------------------------------------------ validation
    def _check_supports(self, supports) -> dict[str, dict[int, float]]:
        # no supports is valid for modal analysis (lw.modes: rigid-body modes come first); a
        # static analysis refuses it as a mechanism when it builds its system
        out = {}
        if not supports:
            return out
        for i, (key, spec) in enumerate(dict(supports).items()):
            if isinstance(spec, Spring):
                if str(key) != spec.set:
                    raise BoundaryConditionError(f"support {key!r}: the Spring names set {spec.set!r}; "
                                                 f"give it under its own set name")
                self.mesh.node_set(spec.set)
                self.springs.append(spec)
                continue
            if callable(key):
                name = getattr(key, "__name__", "predicate")
                name = f"support_{i}" if name == "<lambda>" else name
                self.mesh.add_node_set(name, key)
            else:
                name = str(key)
                self.mesh.node_set(name)           # raises UnknownSetError listing known sets
            out[name] = _parse_components(spec, self.mesh.dim, name)
        return out

    def _check_loads(self, loads) -> dict[str, list]:
        if loads is None or (isinstance(loads, Mapping) and not loads):
            return {}     # valid for modal analysis; a static analysis refuses it (system.py)
        if not isinstance(loads, Mapping):
            loads = {"default": loads}
        out = {}
        for case, items in loads.items():
            if not isinstance(items, (list, tuple)):
                items = [items]
            if not items:
                raise BoundaryConditionError(f"load case {case!r} has no loads")
            for load in items:
                where = f"load case {case!r}"
                if isinstance(load, PointLoad):
                    self.mesh.node_set(load.set)
                elif isinstance(load, (Traction, Pressure, Force)):
                    self.mesh.face_set(load.set)
                elif isinstance(load, Coupling):
                    self.mesh.node_set(load.set)
                elif isinstance(load, NodalForces):
                    pass                                  # shape checked when assembled
                elif isinstance(load, (BodyForce, Gravity)):
                    if load.set is not None:
                        self.mesh.cell_set(load.set)
                    if isinstance(load, Gravity) and self.material.density <= 0:
                        raise BoundaryConditionError(f"{where}: Gravity needs Material(density=...) > 0")
                else:
                    raise BoundaryConditionError(f"{where}: {load!r} is not a load; use lw.PointLoad, "
                                                 f"lw.Traction, lw.Pressure, lw.Force, lw.Coupling, lw.BodyForce or lw.Gravity")
            out[str(case)] = list(items)
        return out

    # ------------------------------------------------------------------ facts
    @property
    def dim(self) -> int:
        return self.mesh.dim

    @property
    def load_cases(self) -> list[str]:
        return list(self.loads)

    def has_self_weight(self) -> bool:
        return any(isinstance(ld, Gravity) for items in self.loads.values() for ld in items)

    def describe(self) -> dict:
        """JSON-able description of the model (for provenance and reports)."""
        return {
            "cell_type": self.mesh.cell_type, "n_cells": self.mesh.n_cells,
            "n_nodes": self.mesh.n_nodes, "dim": self.dim, "source": self.mesh.source,
            "material": self.material.to_dict(),
            "supports": {k: {COMPONENTS[c]: v for c, v in s.items()} for k, s in self.supports.items()},
            **({"springs": [s.describe() for s in self.springs]} if self.springs else {}),
            "loads": {case: [ld.describe() for ld in items] for case, items in self.loads.items()},
            "plane": self.plane if self.dim == 2 else None, "thickness": self.thickness,
        }

    def fingerprint(self) -> str:
        """SHA-256 of mesh arrays, sets used and the model description."""
        return hash_inputs(self.mesh.points, self.mesh.cells,
                           {k: self.mesh.node_set(k) for k in self.supports}, self.describe())

    def system(self):
        """The cached discretization (:class:`~lightweight.fem.system.LinearElasticSystem`)."""
        if self._system is None:
            from .system import LinearElasticSystem
            self._system = LinearElasticSystem(self)
        return self._system
