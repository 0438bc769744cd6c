"""Public limit records of the presets: :class:`DisplacementLimit`.

The responses themselves live in :mod:`lightweight.optimize.responses` (one module each), the
problem in :mod:`lightweight.optimize.problem`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DisplacementLimit:
    """|mean displacement component over node set ``set``| <= ``limit`` (case None: every case)."""

    set: str
    component: str
    limit: float
    case: str | None = None
