"""Errors a user can cause: one hierarchy, each message says what is wrong and how to fix it.

Internal invariants use ``assert``; everything reachable from bad input raises a subclass of
:class:`LightweightError` so scripts and the batch evaluator can catch one type.
"""

from __future__ import annotations


class LightweightError(Exception):
    """Base class of every error a user of lightweight can cause."""

    #: set by the optimization loop when an iteration fails: the OptimizationResult of the last
    #: completed iteration (None before the first), so a long run's work is not lost
    partial_result = None


class MeshError(LightweightError):
    """The mesh is malformed: bad shapes, unknown element type, inverted or degenerate cells."""


class MeshFileError(MeshError):
    """A mesh file cannot be read or written (missing, unreadable, unsupported format)."""


class UnknownSetError(LightweightError, KeyError):
    """A named node/face/cell set was asked for that the mesh does not have."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0]) if self.args else ""


class MaterialError(LightweightError):
    """Material constants are out of their physical range."""


class BoundaryConditionError(LightweightError):
    """Supports or loads are wrong: unknown components, wrong vector length, empty sets."""


class SingularStiffnessError(LightweightError):
    """The stiffness matrix is singular: the structure can move as a mechanism."""


class SolverError(LightweightError):
    """A linear solver failed or was asked for by a name that is not available."""


class OptimizationError(LightweightError):
    """Optimization parameters are inconsistent (volume fraction, radius, limits...)."""


class CaseFileError(LightweightError):
    """A case (TOML) file is malformed or refers to something that does not exist."""
