"""Design parametrization: design variables -> per-cell densities, with passive regions.

One design variable per cell by default. Cells in ``non_design`` sets stay solid (ρ = 1), cells
in ``void`` sets stay empty (ρ = 0); both are removed from the design vector and imposed on the
physical density after filtering and projection, so a bolt boss is exactly solid. Symmetry
planes and extrusion directions tie cells together: every group of tied cells shares one
variable. The map is a sparse 0/1 matrix P (n_cells x n_variables): ρ_cells = P x, and gradients
go back with P^T. Ties come from tie rules (lightweight/optimize/manufacturing/pattern.py:
Symmetry, Extrusion, Pattern), found geometrically (mirrored, rotated or shifted cell centres
matched with a KD-tree), so they work on grids and on unstructured meshes that are symmetric (or
extruded) as meshed; a cell without a mirror image is an error naming it.

The common case, every cell a free variable of its own (no passive cells, no ties), is the
identity map: then nothing per cell is stored (P, P^T, the passive mask, the fixed densities,
the active cell ids and the group sizes would be ~57 B per cell, ~10 % of what a 3D
multigrid run keeps per hex between iterations) and :meth:`expand` / :meth:`reduce` copy
their input, which is what P x + 0 and P^T g give bit for bit with P = I. Those attributes
are still there for callers who read them, built on demand (``is_identity`` says which case).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..errors import OptimizationError


class DesignSpace:
    """Map from design variables to cell densities (see module docstring).

    mesh: the model's mesh; non_design / void: set names (cell sets, or node/face sets: cells
    touching them); symmetry: plane specs like "x" (mirror about the mesh's mid-plane normal to
    x) or ("x", 50.0) (plane x = 50); extrusion: axis name ("z"): densities constant along it;
    ties: more tie rules (lw.Symmetry, lw.Extrusion, lw.Pattern: objects with ``ties(mesh)``).
    """

    def __init__(self, mesh, non_design: Sequence[str] = (), void: Sequence[str] = (),
                 symmetry=None, extrusion=None, ties: Sequence = ()):
        self.mesh = mesh
        n = mesh.n_cells
        self.solid_cells = self._cells_of(non_design, "non_design")
        self.void_cells = self._cells_of(void, "void")
        both = np.intersect1d(self.solid_cells, self.void_cells)
        if both.size:
            raise OptimizationError(f"cells {both[:10].tolist()} are both non_design (solid) and void; "
                                    f"make the sets disjoint")
        self.n_cells = n
        self.symmetry = symmetry
        self.extrusion = extrusion
        has_passive = self.solid_cells.size + self.void_cells.size > 0
        if has_passive and np.union1d(self.solid_cells, self.void_cells).size == n:
            raise OptimizationError("every cell is non_design or void: nothing is left to optimize")
        rules = self._tie_rules(symmetry, extrusion, ties)
        links = self._ties(rules)
        if not has_passive and links is None:
            # the identity map: nothing per cell is kept (see module docstring)
            self.is_identity = True
            self.n_variables = n
            self.has_ties = False
            self._passive = self._fixed_density = self._active_cells = None
            self._P = self._PT = self._group_size = None
            return
        self.is_identity = False
        passive = np.zeros(n, dtype=bool)
        passive[self.solid_cells] = True
        passive[self.void_cells] = True
        self._passive = passive
        self._fixed_density = np.zeros(n)
        self._fixed_density[self.solid_cells] = 1.0
        self._active_cells = np.flatnonzero(~passive)
        # tie groups (symmetry/extrusion) among all cells, then drop passive ones
        if links is None:
            links = (np.arange(n), np.arange(n))
        adjacency = sp.coo_matrix((np.ones(len(links[0])), links), shape=(n, n))
        _, group = connected_components(adjacency, directed=False)
        active_groups, variable_of = np.unique(group[self._active_cells], return_inverse=True)
        self.n_variables = active_groups.size
        self._P = sp.csr_matrix((np.ones(self._active_cells.size), (self._active_cells, variable_of)),
                                shape=(n, self.n_variables))
        self._PT = self._P.T.tocsr()
        self._group_size = np.asarray(self._P.sum(axis=0)).ravel()
        self.has_ties = self.n_variables < self._active_cells.size

    # The per-cell arrays of the map; on the identity map built on demand (not kept).
    @property
    def passive(self) -> np.ndarray:
        """(n_cells,) bool: non_design or void cells."""
        return np.zeros(self.n_cells, dtype=bool) if self.is_identity else self._passive

    @property
    def fixed_density(self) -> np.ndarray:
        """(n_cells,) the density passive cells keep (1 solid, 0 void; 0 elsewhere)."""
        return np.zeros(self.n_cells) if self.is_identity else self._fixed_density

    @property
    def active_cells(self) -> np.ndarray:
        """Ids of the cells that follow the design variables."""
        return np.arange(self.n_cells) if self.is_identity else self._active_cells

    @property
    def P(self):
        """The map as a SciPy CSR matrix (n_cells, n_variables): rho_cells = P x + fixed."""
        return sp.identity(self.n_cells, format="csr") if self.is_identity else self._P

    @property
    def PT(self):
        """P^T as CSR (gradients w.r.t. cells -> w.r.t. variables)."""
        return sp.identity(self.n_cells, format="csr") if self.is_identity else self._PT

    @property
    def group_size(self) -> np.ndarray:
        """(n_variables,) number of cells each variable drives."""
        return np.ones(self.n_variables) if self.is_identity else self._group_size

    def _cells_of(self, names, what: str) -> np.ndarray:
        if names is None:
            return np.zeros(0, dtype=np.int64)
        if isinstance(names, str):
            names = [names]
        cells = [self.mesh.cells_touching(name) for name in names]
        return np.unique(np.concatenate(cells)) if cells else np.zeros(0, dtype=np.int64)

    @staticmethod
    def _tie_rules(symmetry, extrusion, rules=()) -> list:
        """The tie rules: symmetry / extrusion build :class:`~lightweight.optimize.manufacturing.Symmetry` /
        :class:`~lightweight.optimize.manufacturing.Extrusion`; rules: more of those or
        :class:`~lightweight.optimize.manufacturing.Pattern` (objects with ``ties(mesh)``)."""
        from .manufacturing.pattern import Extrusion, Symmetry
        specs = [] if symmetry is None else symmetry
        if isinstance(specs, (str, tuple, Symmetry)):
            specs = [specs]
        return [Symmetry.from_spec(spec) for spec in specs] + \
            ([] if extrusion is None else [extrusion if isinstance(extrusion, Extrusion) else Extrusion(extrusion)]) + \
            list(rules)

    def _ties(self, rules):
        """(rows, cols) of tied cell pairs: every cell with itself, plus each tie rule's pairs;
        None when no rule ties any cells (rules acting through a stage or a constraint only)."""
        mesh = self.mesh
        rows, cols = [np.arange(mesh.n_cells)], [np.arange(mesh.n_cells)]
        for rule in rules:
            pairs = rule.ties(mesh)
            if pairs is None:          # a rule acting through a stage or a constraint instead
                continue
            cells, partners = pairs
            rows.append(np.asarray(cells, dtype=np.int64))
            cols.append(np.asarray(partners, dtype=np.int64))
        if len(rows) == 1:
            return None
        return np.concatenate(rows), np.concatenate(cols)

    # ------------------------------------------------------------------ maps
    def initial(self, value: float) -> np.ndarray:
        """Uniform starting design (n_variables,)."""
        return np.full(self.n_variables, float(value))

    def expand(self, x: np.ndarray) -> np.ndarray:
        """Cell densities (n_cells,) from design variables; passive cells get their fixed value (a new array)."""
        if self.is_identity:
            return np.array(x, dtype=float)
        return self._P @ x + self._fixed_density

    def impose(self, rho: np.ndarray) -> np.ndarray:
        """Set passive cells of a physical density field to their fixed value (copy)."""
        out = np.array(rho, dtype=float)
        if not self.is_identity:
            out[self._passive] = self._fixed_density[self._passive]
        return out

    def reduce(self, grad_cells: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. design variables from a gradient w.r.t. cell densities (k, n_cells) or (n_cells,) (a new array)."""
        if self.is_identity:
            return np.array(grad_cells, dtype=float)
        g = np.asarray(grad_cells)
        return (self._PT @ g.T).T if g.ndim == 2 else self._PT @ g

    def tie(self, field: np.ndarray) -> np.ndarray:
        """Average a cell field (n_cells,) or (k, n_cells) over each tied group.

        Filtering a tied design near a boundary breaks the ties again (truncated filter
        neighbourhoods); averaging afterwards restores them. The operator P diag(1/size) P^T is
        symmetric, so it is its own adjoint in the chain rule. Passive cells pass through.
        """
        if not self.has_ties:
            return field
        f = np.asarray(field, dtype=float)
        tied = self._P @ ((self._PT @ f.T).T / self._group_size).T
        out = f.copy()
        if f.ndim == 2:
            out[:, self._active_cells] = tied.T[:, self._active_cells]
        else:
            out[self._active_cells] = tied[self._active_cells]
        return out

    def describe(self) -> dict:
        return {"n_variables": int(self.n_variables), "solid_cells": int(self.solid_cells.size),
                "void_cells": int(self.void_cells.size), "symmetry": self.symmetry,
                "extrusion": self.extrusion}
