"""Manufacturing rules: parts of the density chain that make a design castable, printable, sized.

Each rule is a :class:`~lightweight.optimize.manufacturing.base.Rule` (hooks: stage, ties,
constraints, violation; see that module). ``manufacturing=[...]`` on the presets takes them;
case files name them in ``[[optimize.manufacturing]]`` tables (``type = "overhang"``, the other
keys are the rule's arguments), and :func:`check_manufacturing` measures any design against them.

=================  ==========================================  =====================
rule               what it guarantees                          acts through
=================  ==========================================  =====================
Overhang           printable without supports (AM filter)      stage
DrawDirection      castable: no undercut along the draw        stage
MemberSize         minimum solid/hole size; maximum size       stage; constraint
Pattern            cyclic sectors / repeats along an axis      design-map ties
Symmetry           mirror symmetry                             design-map ties
Extrusion          constant cross-section                      design-map ties
=================  ==========================================  =====================
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...errors import LightweightError, OptimizationError
from .base import MANUFACTURING, SOLID, Rule, register_rule
from .draw import DrawDirection, DrawStage
from .member_size import LocalVolume, MemberSize, OpenCloseStage
from .overhang import Overhang, OverhangStage
from .pattern import Extrusion, Pattern, Symmetry, TieRule

__all__ = ["MANUFACTURING", "Rule", "register_rule", "make_rule", "check_manufacturing",
           "manufacturing_report", "Overhang", "OverhangStage", "DrawDirection", "DrawStage",
           "Pattern", "Symmetry", "Extrusion", "TieRule", "SOLID",
           "MemberSize", "OpenCloseStage", "LocalVolume"]


def make_rule(table: Mapping, where: str = "manufacturing") -> Rule:
    """A rule from a case-file table: {"type": "overhang", "build_direction": "+y", "angle": 45}.

    where: the table's place in the file, named in errors (``optimize.manufacturing[0]``).
    """
    if not isinstance(table, Mapping) or "type" not in table:
        raise OptimizationError(f"{where}: a manufacturing rule is a table with a type "
                                f"({', '.join(MANUFACTURING.names())}), got {table!r}")
    options = {k: v for k, v in table.items() if k != "type"}
    try:
        cls = MANUFACTURING.get(str(table["type"]))
    except LightweightError as exc:
        raise OptimizationError(f"{where}.type: {exc}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise OptimizationError(f"{where}: {exc} (type = {table['type']!r})") from None
    except LightweightError as exc:
        raise OptimizationError(f"{where}: {exc}") from None


def _rules(rules) -> list:
    rules = [rules] if isinstance(rules, (Rule, Mapping)) else list(rules)
    return [make_rule(r, f"rule {i}") if isinstance(r, Mapping) else r for i, r in enumerate(rules)]


def manufacturing_report(model, density, rules) -> dict:
    """{rule label: fraction of solid material (ρ > 0.5, by volume) violating the rule} for one design.

    model: the lw.Model (or a Mesh); density: (n_cells,) physical densities; rules: rule objects
    or case-file tables. Labels are ``rule.label()``, e.g. "overhang(build_direction='+y', angle=45.0)".
    """
    report = {}
    for rule in _rules(rules):
        if not isinstance(rule, Rule):
            raise OptimizationError(f"manufacturing rules are lw.Overhang, lw.DrawDirection, lw.MemberSize, "
                                    f"lw.Pattern, lw.Symmetry, lw.Extrusion; got {rule!r}")
        report[rule.label()] = float(rule.violation(model, density))
    return report


def check_manufacturing(design, rules, model=None) -> dict:
    """Fraction of solid material violating each rule: {rule label: fraction in [0, 1]}.

    design: an OptimizationResult (its model and density), a Solution with a density, or a
    density array (n_cells,) together with ``model=``; also (density, model) as a tuple.
    """
    density = design
    if isinstance(design, tuple) and len(design) == 2:
        density, model = design
    elif hasattr(design, "density") and hasattr(design, "model"):
        density, model = design.density, design.model
    if model is None:
        raise OptimizationError("check_manufacturing: give a result, or a density array with model=")
    if density is None:
        raise OptimizationError("check_manufacturing: the design has no density field (a solid part "
                                "violates nothing that a layout rule can see)")
    return manufacturing_report(model, np.asarray(density, dtype=float), rules)
