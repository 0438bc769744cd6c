"""Optimization layer: stages of the density chain, responses, problems, OC/MMA, the loop.

Presets: :func:`minimize_compliance`, :func:`minimize_mass`; a composed problem:
:func:`optimize_problem` with a :class:`Problem` of responses (docs/architecture.md).
"""

from . import responses, stages
from .analysis import Analysis, DesignState
from .api import (compliance_problem, make_loop, mass_problem, minimize_compliance, minimize_mass,
                  optimize_problem)
from .api import frequency_problem, maximize_frequency, stress_limits
from .problem import Problem, Schedule
from .problems import DisplacementLimit
from .responses import Compliance, Constraint, Displacement, Mass, Response, VolumeFraction
from .result import OptimizationResult
from .stages import Pipeline, Stage

__all__ = ["minimize_compliance", "minimize_mass", "optimize_problem", "make_loop", "compliance_problem", "mass_problem",
           "maximize_frequency", "frequency_problem", "stress_limits",
           "Problem", "Schedule", "Analysis", "DesignState", "DisplacementLimit", "OptimizationResult",
           "Response", "Constraint", "Compliance", "Displacement", "Mass", "VolumeFraction",
           "Stage", "Pipeline", "responses", "stages"]
