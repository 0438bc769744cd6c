"""The discretized model: element matrices, CSR pattern, loads, constraints and solves.

Built once per :class:`~lightweight.fem.model.Model` and reused: every call of
:meth:`LinearElasticSystem.solve` takes one stiffness multiplier per cell (SIMP's E_e / E0)
and, for self-weight, one mass multiplier per cell, refills K on the fixed pattern, applies
the supports symmetrically and solves all load cases with one factorization.

Structured quad/hex grids (``mesh.grid``) can take a second path, ``solver="multigrid"``
(picked by ``"auto"`` above :data:`MULTIGRID_AUTO_MIN_DOFS`): the geometric multigrid-PCG of
:mod:`lightweight.fem.multigrid` with a matrix-free fine level. That path never builds the
assembled CSR pattern, the element DOF table or per-cell matrices (all three are built lazily,
on first use by a direct solve or a post-processing step that needs them); element energies
come from a grid kernel with the one shared element matrix. Nonzero prescribed displacements
are lifted to the right-hand side with a matrix-free K u_p.

Reactions and internal forces K u need the unconstrained K, but the solver holds only the
constrained one (fixed rows and columns zeroed, a replacement diagonal). An analysis does not
keep a second, unconstrained copy of K for them (one more CSR data array, ~200 B per tet):
it keeps the few values that the elimination zeroed (:class:`SupportCoupling`, the entries in
fixed rows or columns, a few B per tet) and forms K u = K_c u + K_s u with the fixed rows of
K_c u replaced (:meth:`StaticState.internal_forces`). The fixed rows, hence reactions and
compliance, come out bit for bit as K u of the full matrix; free rows too whenever u vanishes on
the free or on the fixed DOFs (the solve's own u, a reaction selector), and to round-off otherwise.

Loads: without body loads the loads do not depend on the design, so every analysis shares
one read-only view of the fixed loads as its ``F`` (the solves only read it) instead of a
copy per analysis (one (n_cases, n_dofs) vector, 25 B per hex of a 3D grid, kept as long as
the state); :meth:`LinearElasticSystem.load_vectors` and :meth:`LinearElasticSystem.solve`
still hand their callers a new, writable array.

Arrays: displacements ``U`` are (n_cases, n_dofs) with node-major DOFs; per-cell results are
(n_cases, n_cells). Nothing here knows about design variables.
"""

from __future__ import annotations

import hashlib
import time
import weakref

import numpy as np
import scipy.sparse.csgraph as csgraph
import scipy.sparse as sp

from ..errors import BoundaryConditionError, SingularStiffnessError, SolverError
from ..mesh.cell_types import CELL_TYPES
from .assembly import (COMPUTED_CELL_TYPES, DirichletMask, add_to_diagonal, build_pattern,
                       element_dofs, refill, refill_from_geometry, refill_packed)
from .elements import (element_stiffness, element_stress, packed_element_stiffness,
                       unpack_symmetric, von_mises)
from .solvers import rigid_body_modes
from .loads import (COMPONENTS, BodyForce, Gravity, body_force_density, cell_shape_integrals,
                    nodal_forces)

# "auto" switches structured grids to geometric multigrid above these DOF counts (per dim).
# Measured per design iteration against PARDISO (OC, density filter r=1.5, docs/performance.md):
# 3D 12 675 DOFs direct 93 ms / MG 175 ms, 28 611 DOFs 477 / 95 ms, 54 243 DOFs 1414 / 199 ms;
# 2D 60 802 DOFs 73 / 97 ms, 241 602 DOFs 584 / 482 ms (2D fill-in is mild, so direct wins longer).
MULTIGRID_AUTO_MIN_DOFS = {2: 150_000, 3: 20_000}
# 2D grids whose hierarchy suits the serial one-call solver (lightweight/fem/multigrid2d.py)
# switch to it from this size on (measured against PARDISO per design iteration, docs/performance.md)
MULTIGRID_2D_SERIAL_AUTO_MIN_DOFS = 20_000
# Largest coarsest level (DOFs) of the hierarchy, solved directly; in 2D a 4k-DOF coarse grid
# refactorizes in ~5 ms against ~25 ms at 15k (MBB 300x100). None: GridMultigrid's own choice
# (3D: 20 000, or 1 000 from a million DOFs on, lightweight/fem/multigrid.py).
MULTIGRID_COARSE_MAX_DOFS = {2: 5_000, 3: None}
# Relative residual ||r_free|| / ||f_free|| at which multigrid-PCG stops.
MULTIGRID_RTOL = 1e-6
#: multigrid adjoint solutions kept as warm starts (one per response key or constant
#: right-hand side; a run has a handful), the oldest dropped beyond this
ADJOINT_GUESSES_KEPT = 8


def _keep_guess(guesses: dict, key, solution: np.ndarray) -> None:
    """Store an adjoint solution as the newest warm start; keep at most ADJOINT_GUESSES_KEPT."""
    guesses.pop(key, None)
    guesses[key] = solution
    while len(guesses) > ADJOINT_GUESSES_KEPT:
        guesses.pop(next(iter(guesses)))


_MODE_NAMES_2D = ("translation in x", "translation in y", "rotation about z")
_MODE_NAMES_3D = ("translation in x", "translation in y", "translation in z",
                  "rotation about x", "rotation about y", "rotation about z")


class LinearElasticSystem:
    """Discretization of a Model (see module docstring)."""

    def __init__(self, model, check_mechanisms: bool = True):
        mesh = model.mesh
        self.model = model
        # modal analysis (fem/modal.py) of an unsupported body opts out of the mechanism check
        self.check_mechanisms = check_mechanisms
        self.mesh = mesh
        self.dim = dim = mesh.dim
        self.n_cells = mesh.n_cells
        self.n_dofs = mesh.n_nodes * dim
        self.case_names = model.load_cases
        mat = model.material
        self.D = mat.elasticity_matrix(dim, model.plane)
        self.D_unit = self.D / mat.E
        # Structured grids share one element matrix (all cells are translated copies).
        self.shared_element_matrix = mesh.grid is not None
        # Unstructured linear tets keep no element matrices: the refill and the energies
        # recompute them from the node coordinates (1.7 kB per tet less, lightweight/fem/assembly.py)
        self.computes_element_matrices = (not self.shared_element_matrix
                                          and mesh.cell_type in COMPUTED_CELL_TYPES)
        self._element_matrices = None
        # other unstructured cells (tet10, hex8, quadratic triangles...) keep their matrices as
        # packed upper triangles: half the bytes (3.7 instead of 7.2 kB per tet10), same numbers
        self._packed_element_matrices = None
        if self.shared_element_matrix:
            self._element_matrices, _ = element_stiffness(mesh.cell_type, mesh.points[mesh.cells[:1]],
                                                          self.D, model.thickness)
        elif not self.computes_element_matrices:
            self._packed_element_matrices = packed_element_stiffness(
                mesh.cell_type, mesh.points, mesh.cells, self.D, model.thickness)
        self.is_grid = mesh.grid is not None and mesh.cell_type in ("quad", "hexahedron")
        self._cell_dofs = None
        self._pattern = None
        self._dirichlet = None
        self._support_coupling = None
        self._setup_constraints()
        self._setup_loads()
        self.solver = None
        self.solver_name = None
        self._solver_default_rtol = None     # the iterative solver's own rtol (made here), else None
        self.multigrid = None
        self._multigrid_default_rtol = MULTIGRID_RTOL
        # keyword arguments of GridMultigrid (e.g. coarse_max_dofs, n_levels), read when it is built
        self.multigrid_options: dict = {}
        # multigrid adjoint solutions by right-hand side (its hash, or the caller's key): warm
        # starts for the next design's adjoints of the same right-hand side (a cache, not
        # call-order state); at most ADJOINT_GUESSES_KEPT, the oldest dropped first
        self._adjoint_guesses: dict = {}
        # counts analyses: a StaticState answers adjoint solves only while its factorization
        # (or multigrid hierarchy) is still the system's current one
        self._generation = 0
        self.last_solve_info: dict = {}

    # ------------------------------------------------------------------ lazily built tables
    @property
    def element_matrices(self) -> np.ndarray:
        """Unit-scale element stiffness matrices, (n_cells, n_dof_e, n_dof_e) or (1, n, n) on grids.

        Where :attr:`computes_element_matrices` (unstructured linear tets) they are computed on
        each access and not kept (1152 B per tet): the solver path never asks for them.
        """
        if self._element_matrices is not None:
            return self._element_matrices
        if self._packed_element_matrices is not None:
            return unpack_symmetric(self._packed_element_matrices, self.n_dof_e)
        mesh = self.mesh
        return element_stiffness(mesh.cell_type, mesh.points[mesh.cells], self.D,
                                 self.model.thickness)[0]

    @property
    def n_dof_e(self) -> int:
        """DOFs per cell (nodes per cell x dim)."""
        return int(self.mesh.cells.shape[1] * self.dim)

    @property
    def cell_dofs(self) -> np.ndarray:
        """Global DOFs of each cell (n_cells, n_dof_e) int64, built on first use."""
        if self._cell_dofs is None:
            self._cell_dofs = element_dofs(self.mesh.cells, self.dim)
        return self._cell_dofs

    def block_cell_dofs(self, cells: slice) -> np.ndarray:
        """Global DOFs of a contiguous range of cells, (n, n_dof_e) int64.

        A slice of :attr:`cell_dofs` where that table is kept, else computed for the range alone
        and not kept (unstructured tets build no table: 96 B per tet for a 12-DOF cell).
        """
        if self._cell_dofs is not None:
            return self._cell_dofs[cells]
        return element_dofs(self.mesh.cells[cells], self.dim)

    @property
    def pattern(self):
        """CSR sparsity pattern of K (:class:`~lightweight.fem.assembly.SparsityPattern`), built on first use.

        On unstructured meshes its rows follow a locality order of the nodes
        (:attr:`node_order`, see :mod:`lightweight.fem.assembly`), not the mesh's numbering.
        """
        if self._pattern is None:
            self._pattern = build_pattern(self.mesh.cells, self.mesh.n_nodes, self.dim,
                                          renumber=self.mesh.grid is None)
        return self._pattern

    @property
    def node_order(self):
        """The :class:`~lightweight.fem.assembly.NodeOrder` of K's rows, None where K follows the
        mesh's node numbering (structured grids). Everything the system returns (U, F, the
        matrices of :meth:`stiffness_matrix`) is in mesh numbering; only :attr:`pattern`, its
        CSR data and the solver work in K's."""
        return self.pattern.node_order

    def matrix_dofs(self, mesh_dofs: np.ndarray) -> np.ndarray:
        """K's row ids of mesh DOF ids (int64, same shape)."""
        order = self.node_order
        return np.asarray(mesh_dofs, dtype=np.int64) if order is None else order.dofs(mesh_dofs)

    def to_matrix_order(self, V: np.ndarray) -> np.ndarray:
        """(..., n_dofs) in mesh numbering -> a new float array in K's numbering."""
        order = self.node_order
        return np.array(V, dtype=float) if order is None else order.to_matrix(np.asarray(V, dtype=float))

    def to_mesh_order(self, V: np.ndarray) -> np.ndarray:
        """(..., n_dofs) in K's numbering -> a new float array in mesh numbering."""
        order = self.node_order
        return np.array(V, dtype=float) if order is None else order.to_mesh(np.asarray(V, dtype=float))

    @property
    def matrix_points(self) -> np.ndarray:
        """Node coordinates (n_nodes, dim) in K's node order (rigid-body modes of K's rows)."""
        order = self.node_order
        return self.mesh.points if order is None else order.points(self.mesh.points)

    def mesh_matrix(self, data: np.ndarray) -> sp.csr_matrix:
        """A global matrix given by its CSR ``data`` on :attr:`pattern` (nnz,), as a CSR in the
        mesh's DOF numbering (a permuted copy where :attr:`node_order` is set)."""
        A = self.pattern.matrix(data)
        order = self.node_order
        return A if order is None else order.matrix_to_mesh(A)

    @property
    def dirichlet(self) -> DirichletMask:
        """Symmetric elimination of the fixed DOFs on :attr:`pattern` (K's numbering), built on first use."""
        if self._dirichlet is None:
            self._dirichlet = DirichletMask(self.pattern, self.matrix_dofs(self.fixed_dofs))
        return self._dirichlet

    @property
    def support_coupling(self) -> "SupportCoupling":
        """The entries of K in fixed rows or columns as their own CSR, built on first use."""
        if self._support_coupling is None:
            self._support_coupling = SupportCoupling(self.pattern, self.dirichlet.entries)
        return self._support_coupling

    # ------------------------------------------------------------------ supports
    def _setup_constraints(self) -> None:
        mesh, dim = self.mesh, self.dim
        fixed = {}
        self.support_nodes = {}
        for name, comps in self.model.supports.items():
            nodes = mesh.node_set(name)
            self.support_nodes[name] = nodes
            for comp, value in comps.items():
                for dof in nodes * dim + comp:
                    fixed[int(dof)] = value
        # Nodes no cell uses have no stiffness: hold them in place instead of failing.
        used = np.zeros(mesh.n_nodes, dtype=bool)
        used[mesh.cells.ravel()] = True
        self.orphan_nodes = np.flatnonzero(~used)
        for node in self.orphan_nodes:
            for comp in range(dim):
                fixed.setdefault(int(node * dim + comp), 0.0)
        self.fixed_dofs = np.array(sorted(fixed), dtype=np.int64)
        self.fixed_values = np.array([fixed[d] for d in self.fixed_dofs])
        # springs to ground (bushings): (dofs, stiffness) added to K's diagonal after each refill
        spring_parts = [s.node_stiffness(mesh) for s in getattr(self.model, "springs", ())]
        self.spring_dofs = (np.concatenate([d for d, _ in spring_parts]) if spring_parts
                            else np.zeros(0, dtype=np.int64))
        self.spring_stiffness = (np.concatenate([k for _, k in spring_parts]) if spring_parts
                                 else np.zeros(0))
        if self.check_mechanisms:
            self._check_mechanisms()

    @property
    def free_mask(self) -> np.ndarray:
        """(n_dofs,) bool, False on supported DOFs: built at each read from :attr:`fixed_dofs`
        (its readers build a solver or a modal problem once; a design iteration reads none)."""
        mask = np.ones(self.n_dofs, dtype=bool)
        mask[self.fixed_dofs] = False
        return mask

    def _check_mechanisms(self) -> None:
        """Raise SingularStiffnessError if supports leave a rigid-body motion free.

        Per connected part of the mesh: the rigid-body modes restricted to the fixed DOFs must
        have full column rank; a null vector of that restriction is a free motion.
        """
        mesh, dim = self.mesh, self.dim
        if mesh.grid is not None:
            n_parts, labels = 1, np.zeros(mesh.n_nodes, dtype=np.int8)   # a box is connected
        else:
            n_cells, n_per = mesh.cells.shape
            rows = np.repeat(np.arange(n_cells), n_per)
            incidence = sp.csr_matrix((np.ones(rows.size), (rows, mesh.cells.ravel())),
                                      shape=(n_cells, mesh.n_nodes))
            n_parts, labels = csgraph.connected_components(incidence.T @ incidence, directed=False)
        used = np.zeros(mesh.n_nodes, dtype=bool)
        used[mesh.cells.ravel()] = True
        fixed_node_comp = np.zeros((mesh.n_nodes, dim), dtype=bool)
        fixed_node_comp.reshape(-1)[self.fixed_dofs] = True
        fixed_node_comp.reshape(-1)[self.spring_dofs] = True      # a spring holds its DOF too
        names = _MODE_NAMES_2D if dim == 2 else _MODE_NAMES_3D
        for part in range(n_parts):
            nodes = np.flatnonzero((labels == part) & used)
            if nodes.size == 0:
                continue
            pts = mesh.points[nodes]
            center = pts.mean(axis=0)
            held = nodes[fixed_node_comp[nodes].any(axis=1)]   # only fixed rows matter
            del pts
            # (n*dim, n_modes); no held node (no supports: a model meant for lw.modes) -> none
            modes = (rigid_body_modes(mesh.points[held]) if held.size
                     else np.zeros((0, len(names))))
            mask = fixed_node_comp[held].reshape(-1)
            restricted = modes[mask]
            if restricted.shape[0] == 0:
                free = np.eye(modes.shape[1])
            else:
                # SVD of the small triangular factor: same singular values and right vectors,
                # without the (rows x rows) left factor a full SVD of a large support would build
                r = np.linalg.qr(restricted, mode="r")
                _, s, vt = np.linalg.svd(r, full_matrices=True)
                rank = int(np.sum(s > 1e-8 * max(s.max(), 1e-300)))
                free = vt[rank:]
            if free.shape[0]:
                motions = []
                for vec in free:
                    dominant = np.flatnonzero(np.abs(vec) > 0.3 * np.abs(vec).max())
                    motions.append(" + ".join(names[i] for i in dominant))
                where = (f" (part {part + 1} of {n_parts}: {nodes.size} nodes around "
                         f"{np.round(center, 6).tolist()})" if n_parts > 1 else "")
                raise SingularStiffnessError(
                    f"the structure is a mechanism{where}: the supports leave free "
                    f"{'; '.join(motions)}. The stiffness matrix is singular; add supports that "
                    f"stop these motions (supports so far: {list(self.model.supports) or 'none'})")

    # ------------------------------------------------------------------ loads
    def _setup_loads(self) -> None:
        mesh, model = self.mesh, self.model
        n_cases = len(self.case_names)
        dense = np.zeros((n_cases, self.n_dofs))
        # body loads: per case a list of (force per volume (dim,), cell weights (n_cells,), is_gravity)
        self.body_loads: list[list[tuple[np.ndarray, np.ndarray, bool]]] = [[] for _ in range(n_cases)]
        self._shape_integrals = None
        for c, case in enumerate(self.case_names):
            for load in model.loads[case]:
                if isinstance(load, (BodyForce, Gravity)):
                    vec, cells = body_force_density(mesh, load, model.material.density)
                    weights = np.zeros(self.n_cells)
                    weights[cells] = 1.0
                    self.body_loads[c].append((vec, weights, isinstance(load, Gravity)))
                else:
                    dense[c] += nodal_forces(mesh, load, model.thickness).reshape(-1)
        if any(self.body_loads):
            self._shape_integrals = cell_shape_integrals(mesh, model.thickness)
        # Kept as the loaded DOFs and their values only: loads act on a few faces or nodes, and
        # a dense (n_cases, n_dofs) copy held for the whole run was 25 B per hex of a
        # 128x64x64 grid run (a fifth of its solver's vectors); each analysis scatters a
        # fresh dense vector that the grid solve then uses as its residual's memory.
        loaded = np.flatnonzero(np.any(dense != 0.0, axis=0))
        self.loaded_dofs = loaded.astype(np.int32 if self.n_dofs < 2 ** 31 else np.int64)
        self.loaded_dofs.flags.writeable = False
        self._load_values = np.ascontiguousarray(dense[:, loaded])
        self._load_values.flags.writeable = False
        del dense

    @property
    def fixed_loads(self) -> np.ndarray:
        """The design-independent loads (n_cases, n_dofs), point and surface loads: a new
        read-only array at every read (the system keeps only :attr:`loaded_dofs` and their
        values, so a write into it would change nothing: numpy refuses it instead)."""
        F = self._dense_fixed_loads()
        F.flags.writeable = False
        return F

    def _dense_fixed_loads(self) -> np.ndarray:
        F = np.zeros((len(self.case_names), self.n_dofs))
        F[:, self.loaded_dofs] = self._load_values
        return F

    def fixed_load_work(self, U: np.ndarray) -> np.ndarray:
        """sum_d F[c, d] U[c, d] of the fixed loads per case, (n_cases,), read at the loaded DOFs
        only (no dense F); U (n_cases, n_dofs)."""
        U = np.asarray(U)
        return np.einsum("cd,cd->c", self._load_values, U[:, self.loaded_dofs])

    @property
    def has_body_loads(self) -> bool:
        return any(self.body_loads)

    def load_vectors(self, mass_scale: np.ndarray | None = None) -> np.ndarray:
        """External forces (n_cases, n_dofs); body forces scaled per cell by ``mass_scale``."""
        F = self._dense_fixed_loads()
        if not self.has_body_loads:
            return F
        scale = np.ones(self.n_cells) if mass_scale is None else np.asarray(mass_scale, dtype=float)
        for c, items in enumerate(self.body_loads):
            for vec, weights, _ in items:
                cell_nodal = self._shape_integrals * (scale * weights)[:, None]      # (e, a)
                contrib = cell_nodal[:, :, None] * vec[None, None, :]               # (e, a, d)
                np.add.at(F[c], self.cell_dofs.ravel(), contrib.ravel())
        return F

    def _analysis_loads(self, mass_scale) -> np.ndarray:
        """The loads an analysis solves for (n_cases, n_dofs), a new array the analysis may use
        as work memory (:meth:`load_vectors`)."""
        return self.load_vectors(mass_scale)

    def body_load_gradient(self, U: np.ndarray) -> np.ndarray:
        """d(F_c . u_c)/d mass_scale_e at fixed u: (n_cases, n_cells)."""
        out = np.zeros((len(self.case_names), self.n_cells))
        if not self.has_body_loads:
            return out
        for c, items in enumerate(self.body_loads):
            u_cells = U[c][self.cell_dofs].reshape(self.n_cells, -1, self.dim)   # (e, a, d)
            for vec, weights, _ in items:
                out[c] += weights * np.einsum("ea,ead,d->e", self._shape_integrals, u_cells, vec)
        return out

    # ------------------------------------------------------------------ matrices and solves
    def stiffness_data(self, stiffness_scale: np.ndarray | None = None) -> np.ndarray:
        """CSR data of the unconstrained K on :attr:`pattern` for the given per-cell multipliers (nnz,)."""
        scale = self._check_scale(stiffness_scale)
        if self.computes_element_matrices:
            data = refill_from_geometry(self.pattern, self.mesh.cell_type, self.mesh.points, self.D,
                                        self.model.thickness, scale)
        else:
            data = (refill(self.pattern, self._element_matrices, scale)
                    if self._packed_element_matrices is None else
                    refill_packed(self.pattern, self._packed_element_matrices, self.n_dof_e, scale))
        if self.spring_dofs.size:
            add_to_diagonal(self.pattern, data, self.matrix_dofs(self.spring_dofs),
                            self.spring_stiffness)
        return data

    def stiffness_matrix(self, stiffness_scale: np.ndarray | None = None) -> sp.csr_matrix:
        """Unconstrained global stiffness K (n_dofs, n_dofs) in the mesh's DOF numbering."""
        return self.mesh_matrix(self.stiffness_data(stiffness_scale))

    def _get_solver(self, method):
        """The linear solver for ``method`` (a name or a LinearSolver instance), kept while it stays.

        An AMG instance made without ``points`` gets this system's node coordinates (in K's
        numbering) for its rigid-body modes.

        "auto" weighs factor flops and memory against AMG from K's pattern, nonzeros per row,
        element order and the number of load cases (:func:`~lightweight.fem.solvers.make_solver`).
        """
        from ..mesh.cell_types import CELL_TYPES
        from .solvers import make_solver
        if self.solver is None or self.solver_name != method:
            cell = CELL_TYPES[self.mesh.cell_type]
            pattern = self.pattern
            self.solver = make_solver(method, n_dofs=self.n_dofs, dim=self.dim, points=self.matrix_points,
                                      nnz_per_row=len(pattern.indices) / max(self.n_dofs, 1),
                                      n_rhs=max(1, len(self.case_names)),
                                      element_order=2 if cell.n_nodes > cell.n_corners else 1,
                                      pattern=pattern)
            self.solver_name = method
            # an iterative solver made here takes each analysis' tolerance (analyse's rtol,
            # else this default); one passed in as an instance keeps the caller's
            from .solvers import LinearSolver
            made_here = not isinstance(method, LinearSolver)
            if not made_here and getattr(self.solver, "points", False) is None:
                # an AMG instance made without the nodes (make_solver("amg-reuse", rtol=...))
                # would build its hierarchy on translations alone: 160-220 PCG iterations on
                # the 12k-tet bracket instead of 12-16 with the rigid-body modes of the nodes
                self.solver.points = np.asarray(self.matrix_points, dtype=float)
                self.solver.dim = self.dim
            self._solver_default_rtol = (float(self.solver.rtol) if made_here and not self.solver.direct
                                         and hasattr(self.solver, "set_rtol") else None)
        return self.solver

    def release_solver(self) -> bool:
        """Free the linear solver's factorization or AMG hierarchy (the design loop's largest
        working memory) once no more solves follow, e.g. before a result's fields are built.
        The last analysis' K stays for its reaction forces; its adjoint solves end (the state
        is no longer current); the next analysis sets the solver up again. True if memory
        was freed."""
        if self.solver is None:
            return False
        self._generation += 1
        return self.solver.drop_factorization()

    def uses_multigrid(self, solver: str = "auto") -> bool:
        """True if ``solver`` means geometric multigrid on this mesh.

        "multigrid" needs a structured quad/hex grid (else SolverError); "auto" picks it on such
        grids with more than MULTIGRID_AUTO_MIN_DOFS[dim] DOFs, where it beat the fastest
        direct solver per design iteration in our measurements (docs/performance.md).
        """
        if not isinstance(solver, str):
            return False        # a LinearSolver instance: solved by it on the assembled K
        key = solver.lower()
        if key in ("multigrid", "mg"):
            if self.spring_dofs.size:
                raise SolverError("solver='multigrid' does not model springs (lw.Spring supports); "
                                  "use solver='auto' or 'direct'")
            if not self.is_grid:
                raise SolverError(
                    "solver='multigrid' needs a structured quad or hexahedron grid "
                    "(lw.structured_grid); this mesh is " +
                    (f"a grid of {self.mesh.cell_type} cells" if self.mesh.grid is not None
                     else f"an unstructured {self.mesh.cell_type} mesh") +
                    ": use solver='auto', 'direct' or 'amg'")
            return True
        if key != "auto" or not self.is_grid or self.spring_dofs.size:
            return False
        if self.dim == 2:
            from .multigrid2d import GridMultigrid2D
            if GridMultigrid2D.fits(self.mesh.grid, MULTIGRID_COARSE_MAX_DOFS[2]):
                return self.n_dofs > MULTIGRID_2D_SERIAL_AUTO_MIN_DOFS
        return self.n_dofs > MULTIGRID_AUTO_MIN_DOFS[self.dim]

    def _get_multigrid(self):
        """The GridMultigrid of this grid and its supports (built once, updated per solve)."""
        if self.multigrid is None:
            from .multigrid import GridMultigrid
            options = {"rtol": MULTIGRID_RTOL, "coarse_max_dofs": MULTIGRID_COARSE_MAX_DOFS[self.dim],
                       **self.multigrid_options}
            args = (self.mesh.grid, self.mesh.grid_spacing, self.element_matrices[0], ~self.free_mask)
            if self.dim == 2:
                # the serial one-call 2D solver where its hierarchy fits (even cell counts,
                # an affordable coarsest band), else the general class
                from .multigrid2d import GridMultigrid2D
                try:
                    self.multigrid = GridMultigrid2D(*args, **options)
                except SolverError:
                    self.multigrid = None
            if self.multigrid is None:
                self.multigrid = GridMultigrid(*args, **options)
            self._multigrid_default_rtol = float(self.multigrid.rtol)
        return self.multigrid

    def _check_scale(self, stiffness_scale) -> np.ndarray:
        scale = np.ones(self.n_cells) if stiffness_scale is None else np.asarray(stiffness_scale, float)
        if scale.shape != (self.n_cells,):
            raise ValueError(f"stiffness_scale must have shape ({self.n_cells},), got {scale.shape}")
        return scale

    def solve(self, stiffness_scale: np.ndarray | None = None, mass_scale: np.ndarray | None = None,
              solver: str = "auto", x0: np.ndarray | None = None):
        """Displacements of all load cases, (n_cases, n_dofs), and the load vectors used.

        Shorthand for :meth:`analyse` when no adjoint solve follows.
        """
        state = self.analyse(stiffness_scale, mass_scale, solver=solver, x0=x0)
        return state.U, np.array(state.F)          # the caller's own, writable loads

    def analyse(self, stiffness_scale: np.ndarray | None = None, mass_scale: np.ndarray | None = None,
                solver: str = "auto", x0: np.ndarray | None = None,
                rtol: float | None = None, x0_disposable: bool = False) -> "StaticState":
        """Solve all load cases -> :class:`StaticState` (U, F, scales, adjoint solves).

        stiffness_scale / mass_scale: per-cell multipliers (n_cells,) of E and of the
        self-weight (None: 1); solver: "auto", "multigrid" (structured grids) or a name or
        instance of :func:`~lightweight.fem.solvers.make_solver`; x0 (n_cases, n_dofs): initial
        guess for the iterative solvers (e.g. the previous design iteration's displacements);
        rtol: the relative residual ||K u - f|| / ||f|| at which an iterative solver made here
        stops for this analysis and its adjoint solves (None: its own default, 1e-6 for
        amg-reuse and the grid multigrid; the design loop passes a looser one to AMG, see
        :data:`lightweight.optimize.analysis.DESIGN_SOLVER_RTOL`). Direct solvers and a solver
        instance passed in keep their own accuracy. x0_disposable: the caller no longer needs x0,
        so the grid multigrid may build the solution in its memory (the design loop hands over
        the previous displacements when nothing else holds them).
        """
        if rtol is not None and not (np.isfinite(rtol) and 0.0 < rtol < 1.0):
            raise SolverError(f"analysis rtol must lie in (0, 1), got {rtol!r}")
        self._generation += 1
        if not self.case_names:
            raise BoundaryConditionError(
                "the model has no load case: give loads={'case': [lw.PointLoad(...)]} "
                "(a model without loads serves modal analysis only: lw.modes)")
        if self.uses_multigrid(solver):
            return self._solve_multigrid(self._check_scale(stiffness_scale), mass_scale, x0, rtol,
                                         x0_disposable)
        t0 = time.perf_counter()
        if self.solver is not None:
            # the last analysis' K goes before this one is assembled (the two together were
            # the loop's memory peak); that analysis is no longer current (its adjoint raises)
            self.solver.drop_matrix()
        data = self.stiffness_data(stiffness_scale)
        coupling = self.support_coupling
        support_values = coupling.values(data)
        F = self._analysis_loads(mass_scale)
        # constrained in place: the unconstrained values are not kept (reactions need only
        # support_values, taken above)
        constrained, diag_value = self.dirichlet.apply(data, in_place=True)
        del data
        K = self.pattern.matrix(constrained)
        # Move the prescribed displacements to the right-hand side: f_free -= K_fp u_p. u_p
        # vanishes on the free DOFs, so K_fp u_p is the coupling's product (the full K's row
        # sums less their zero terms: the same numbers); its fixed rows are overwritten below.
        # K, the coupling and rhs are in K's numbering (node_order), F and U in the mesh's.
        fixed = self.dirichlet.fixed_dofs
        u_prescribed = np.zeros(self.n_dofs)
        u_prescribed[fixed] = self.fixed_values
        # F is this analysis' own array: without body loads the state reads the fixed loads
        # again when asked, so F itself becomes the rhs when K keeps the mesh's numbering
        rhs = F if (self.node_order is None and not self.has_body_loads) else self.to_matrix_order(F)
        F = F if self.has_body_loads else None
        if np.any(self.fixed_values != 0.0):
            rhs -= (coupling.matrix(support_values) @ u_prescribed)[None, :]
        rhs[:, fixed] = diag_value * self.fixed_values[None, :]
        t1 = time.perf_counter()
        lin = self._get_solver(solver)
        if self._solver_default_rtol is not None:
            lin.set_rtol(self._solver_default_rtol if rtol is None else rtol)
        lin.factorize(K)
        guess = None if x0 is None else np.ascontiguousarray(self.to_matrix_order(x0).T)
        U = lin.solve(np.ascontiguousarray(rhs.T), x0=guess)
        U = self.to_mesh_order(np.asarray(U).reshape(self.n_dofs, -1).T)
        if not np.all(np.isfinite(U)):
            raise SingularStiffnessError("the linear solve returned non-finite displacements: the "
                                         "stiffness matrix is singular or the loads are not finite")
        U[:, self.fixed_dofs] = self.fixed_values[None, :]
        self.last_solve_info = {"solver": getattr(lin, "name", solver), "assembly_seconds": t1 - t0,
                                "solve_seconds": time.perf_counter() - t1, **getattr(lin, "info", {})}
        if not lin.direct and hasattr(lin, "rtol"):
            self.last_solve_info["rtol"] = float(lin.rtol)
        return StaticState(self, U, F, self._check_scale(stiffness_scale), mass_scale, "direct",
                           dict(self.last_solve_info), self._generation, solver=lin,
                           constrained=K, support_values=support_values)

    def _solve_multigrid(self, scale: np.ndarray, mass_scale, x0, rtol: float | None = None,
                         x0_disposable: bool = False):
        """The multigrid path of :meth:`solve` (no assembled matrix), same returns."""
        from .multigrid import GridMultigrid, grid_matvec
        t0 = time.perf_counter()
        mg = self._get_multigrid()
        mg.rtol = self._multigrid_default_rtol if rtol is None else float(rtol)
        F = self._analysis_loads(mass_scale)
        mg.update(scale)
        t1 = time.perf_counter()
        # The solver ignores the fixed rows of the rhs except to set x[fixed], which is
        # overwritten with the prescribed values below. Lifting: f_free -= K_fp u_p with a
        # matrix-free K u_p. The rhs is this analysis' own array: the grid solve builds its
        # residual in it (one DOF vector per case less at the solve's peak).
        rhs = F
        if np.any(self.fixed_values != 0.0):
            u_prescribed = np.zeros(self.n_dofs)
            u_prescribed[self.fixed_dofs] = self.fixed_values
            rhs = F - grid_matvec(self.mesh.grid, self.element_matrices[0], scale, u_prescribed)[None, :]
        if self.has_body_loads:
            rhs = rhs.copy() if rhs is F else rhs      # the state keeps F: the solve gets a copy
        else:
            F = None                  # the state reads the fixed loads again when asked
        guess = None
        if x0 is not None and np.shape(x0) == rhs.shape and np.all(np.isfinite(x0)):
            guess = x0
        if isinstance(mg, GridMultigrid):
            U, info = mg.solve(rhs, x0=guess, overwrite_x0=bool(x0_disposable and guess is not None),
                               overwrite_rhs=True)
        else:
            U, info = mg.solve(rhs, x0=guess)
        del rhs, guess
        self._check_multigrid(U, info, "displacements")
        U[:, self.fixed_dofs] = self.fixed_values[None, :]
        self.last_solve_info = {"solver": "multigrid", "assembly_seconds": t1 - t0,
                                "solve_seconds": time.perf_counter() - t1, "rtol": float(mg.rtol),
                                **info}
        return StaticState(self, U, F, scale, mass_scale, "multigrid", dict(self.last_solve_info),
                           self._generation)

    @staticmethod
    def _check_multigrid(U, info, what):
        if not np.all(np.isfinite(U)):
            raise SingularStiffnessError(f"multigrid returned non-finite {what}: the stiffness "
                                         f"matrix is singular or the loads are not finite")
        if not info["converged"]:
            worst = max(info["residuals"])
            raise SolverError(
                f"multigrid-PCG did not converge for the {what} ({max(info['iterations'])} iterations, "
                f"relative residual {worst:.2g}): the design probably holds "
                f"stiff islands floating in void; use solver='direct' for it")

    # ------------------------------------------------------------------ post-processing
    def cell_displacements(self, U: np.ndarray) -> np.ndarray:
        """Element DOF vectors (n_cases, n_cells, n_dof_e) of U (n_cases, n_dofs)."""
        return U[:, self.cell_dofs]

    def element_energies(self, U: np.ndarray) -> np.ndarray:
        """u_e^T K_e u_e of the unscaled element matrices, (n_cases, n_cells)."""
        if self.is_grid:
            from .kernels import grid_element_bilinear_forms
            return grid_element_bilinear_forms(self.mesh.grid, self.element_matrices[0], U)
        if self.computes_element_matrices:
            from .kernels import tet4_element_bilinear_forms
            return tet4_element_bilinear_forms(self.mesh.points, self.mesh.cells, self.D,
                                               self.model.thickness, U)
        from .kernels import packed_element_forms
        return packed_element_forms(self._packed_element_matrices, self.cell_dofs, U)

    def element_cross_energies(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        """v_e^T K_e u_e of the unscaled element matrices, (n_cases, n_cells)."""
        if self.is_grid:
            from .kernels import grid_element_bilinear_forms
            return grid_element_bilinear_forms(self.mesh.grid, self.element_matrices[0], U, V)
        if self.computes_element_matrices:
            from .kernels import tet4_element_bilinear_forms
            return tet4_element_bilinear_forms(self.mesh.points, self.mesh.cells, self.D,
                                               self.model.thickness, U, V)
        from .kernels import packed_element_forms
        return packed_element_forms(self._packed_element_matrices, self.cell_dofs, U, V)

    def reactions(self, internal: np.ndarray, F: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Support forces per case and support set: sum of (K u - f) over the set's nodes.

        internal: K u of the unconstrained K, (n_cases, n_dofs); F: the loads (n_cases, n_dofs).
        """
        residual = internal - F                               # (n_cases, n_dofs)
        out = []
        for c in range(residual.shape[0]):
            per_node = residual[c].reshape(-1, self.dim)
            out.append({name: per_node[nodes].sum(axis=0) for name, nodes in self.support_nodes.items()})
        return out

    def stresses(self, U: np.ndarray, stiffness_scale: np.ndarray | None = None) -> np.ndarray:
        """Cell-centre stresses (n_cases, n_cells, n_voigt), scaled per cell.

        Solutions report the integration-point measure of :mod:`lightweight.fem.stress` instead.
        """
        if self.is_grid:
            # every cell is the same box: one (n_voigt, n_dof_e) stress matrix D B for all
            n_dof_e = self.element_matrices.shape[1]
            columns = element_stress(self.mesh.cell_type, self.mesh.points[self.mesh.cells[:1]],
                                     self.D, np.eye(n_dof_e)[:, None, :])[:, 0, :]   # (n_dof_e, n_voigt)
            from .kernels import grid_element_products
            s = grid_element_products(self.mesh.grid, columns.T, U)
        else:
            s = element_stress(self.mesh.cell_type, self.mesh.points[self.mesh.cells], self.D,
                               self.cell_displacements(U))
        if stiffness_scale is not None:
            s *= np.asarray(stiffness_scale)[None, :, None]
        return s

    def von_mises(self, stress: np.ndarray) -> np.ndarray:
        return von_mises(stress, self.dim, self.model.plane, self.model.material.nu)


class SupportCoupling:
    """The entries of K that the symmetric elimination of the fixed DOFs zeroes, as a CSR.

    Every entry of K's pattern in a fixed row or a fixed column (the fixed diagonal included),
    in K's row numbering and column order, so a fixed row of this matrix is that row of K whole
    and a free row holds K's entries in the fixed columns. positions: where its entries sit in
    K's CSR data (:attr:`DirichletMask.entries`, sorted). It holds the structure only; an
    analysis keeps the values (:meth:`values`), a few bytes per tet (the supports' share of K).
    """

    def __init__(self, pattern, positions: np.ndarray):
        self.n_dofs = pattern.n_dofs
        self.positions = positions
        index_dtype = pattern.indices.dtype
        rows = np.searchsorted(pattern.indptr, positions, side="right") - 1
        self.indptr = np.zeros(self.n_dofs + 1, dtype=index_dtype)
        np.cumsum(np.bincount(rows, minlength=self.n_dofs), out=self.indptr[1:])
        self.indices = np.ascontiguousarray(pattern.indices[positions], dtype=index_dtype)

    def values(self, data: np.ndarray) -> np.ndarray:
        """This matrix's values taken from K's CSR data (nnz of K,)."""
        return data[self.positions]

    def matrix(self, values: np.ndarray) -> sp.csr_matrix:
        """The coupling as a CSR matrix (n_dofs, n_dofs) holding ``values`` (no copy)."""
        M = sp.csr_matrix((values, self.indices, self.indptr), shape=(self.n_dofs, self.n_dofs),
                          copy=False)
        M.has_sorted_indices = True
        return M


class StaticState:
    """One static analysis: displacements, loads, scales, and adjoint solves with its operator.

    U, F: (n_cases, n_dofs) displacements and loads (F None: the system's fixed loads,
    built again at every read of :attr:`F`, none kept); stiffness_scale (n_cells,) the E
    multipliers solved with, mass_scale (n_cells,) or None the self-weight multipliers;
    method: "direct" (any assembled-matrix solver) or "multigrid"; info: solver figures.
    :meth:`adjoint` reuses the factorization (or multigrid hierarchy) of this analysis, so it
    is valid until the system analyses another design (then it raises: solve again).

    For :meth:`internal_forces` a direct analysis keeps the values of K in fixed rows and
    columns (``support_values``, see :class:`SupportCoupling`) and a weak reference to the
    constrained K it handed its solver: the solver holds that K while the analysis is current,
    and a state kept past the next analysis does not hold the old K alive beside the new one.
    Once that K is gone, internal forces reassemble the unconstrained K from stiffness_scale.
    """

    def __init__(self, system, U, F, stiffness_scale, mass_scale, method, info, generation,
                 solver=None, constrained=None, support_values=None):
        self.system = system
        self.U = U
        self._F = F
        self.stiffness_scale = stiffness_scale
        self.mass_scale = mass_scale
        self.method = method
        self.info = info
        self._generation = generation
        self._solver = solver
        self._constrained = None if constrained is None else weakref.ref(constrained)
        self._support_values = support_values

    @property
    def F(self) -> np.ndarray:
        """The loads solved for, (n_cases, n_dofs) (a new array each read when they are the
        system's fixed loads)."""
        return self.system.fixed_loads if self._F is None else self._F

    def load_work(self, V: np.ndarray | None = None) -> np.ndarray:
        """sum_d F[c, d] V[c, d] per case, (n_cases,) (V default U: the compliance f.u), read at
        the loaded DOFs only when F is the system's fixed loads."""
        V = self.U if V is None else V
        if self._F is None:
            return self.system.fixed_load_work(V)
        return np.einsum("cd,cd->c", self._F, V)

    @property
    def is_current(self) -> bool:
        """True while the system's solver still holds this analysis' operator."""
        return self._generation == self.system._generation

    def adjoint(self, rhs: np.ndarray, key: str | None = None) -> np.ndarray:
        """Solve K lam = rhs with this analysis' K (homogeneous supports), (k, n_dofs).

        key: names where rhs comes from (e.g. a stress response), so that a multigrid solve
        starts from the solution for the same key in the previous design; without it the
        start is the solution for an identical rhs (a displacement's selector), if any.
        """
        system = self.system
        if not self.is_current:
            raise RuntimeError("this StaticState's operator was replaced by a later analysis; "
                               "adjoint solves must follow their own analysis")
        b = np.array(np.atleast_2d(rhs), dtype=float)
        b[:, system.fixed_dofs] = 0.0
        if self.method == "multigrid":
            # warm start from the adjoint of the same right-hand side (or the same key) in the
            # previous design. Right-hand sides that change every design (stresses) need the
            # key: by hash they never matched and each design added a solution to the cache
            # (0.5 MB per iteration on a 300 x 100 MBB, 13 MB on a 128 x 64 x 64 grid)
            key = ("rhs", hashlib.sha1(b.tobytes()).hexdigest()) if key is None else ("key", key)
            guesses = system._adjoint_guesses
            guess = guesses.pop(key, None)
            lam, info = system.multigrid.solve(b, x0=guess if guess is not None
                                               and guess.shape == b.shape else None)
            system._check_multigrid(lam, info, "adjoint")
            lam[:, system.fixed_dofs] = 0.0
            _keep_guess(guesses, key, lam.copy())
            return lam
        b = system.to_matrix_order(b)
        # remember=False keeps adjoints out of amg-reuse's history of static solutions, from
        # which it projects the next static solve's start. No warm start here: on a tet part
        # the previous design's solution leaves a residual nearly as large as the right-hand
        # side (12k bracket, drifting designs, rtol 1e-8: 17-18 PCG iterations against 19)
        lam = np.asarray(self._solver.solve(np.ascontiguousarray(b.T), remember=False))
        lam = system.to_mesh_order(lam.reshape(system.n_dofs, -1).T)
        lam[:, system.fixed_dofs] = 0.0
        return lam

    def internal_forces(self, U: np.ndarray | None = None) -> np.ndarray:
        """K u of the unconstrained K of this analysis, (n_cases, n_dofs); U defaults to self.U.

        Direct analyses: K_c u + K_s u with K_c the solver's constrained K and K_s the support
        coupling (module docstring); the fixed rows are K_s u alone, bit for bit the full
        K's. When the solver no longer holds K_c, the unconstrained K is assembled again.
        """
        U = self.U if U is None else np.atleast_2d(U)
        system = self.system
        if self.method == "multigrid":
            from .multigrid import grid_matvec
            return grid_matvec(system.mesh.grid, system.element_matrices[0], self.stiffness_scale, U)
        constrained = None if self._constrained is None else self._constrained()
        # K_c and the coupling are in K's numbering (node_order); U and the result in the mesh's
        Um = system.to_matrix_order(U).T
        if constrained is None:
            K = system.pattern.matrix(system.stiffness_data(self.stiffness_scale))
            return system.to_mesh_order(np.asarray(K @ Um).T)
        out = np.asarray(constrained @ Um)
        # K_c's fixed rows hold only the replacement diagonal: the coupling has those rows whole
        out[system.dirichlet.fixed_dofs] = 0.0
        out += system.support_coupling.matrix(self._support_values) @ Um
        return system.to_mesh_order(out.T)

    def reactions(self) -> list[dict[str, np.ndarray]]:
        """Support forces per case and support set (see LinearElasticSystem.reactions)."""
        return self.system.reactions(self.internal_forces(), self.F)
