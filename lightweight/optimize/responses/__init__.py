"""Responses of the optimization layer, one module each (see :mod:`.base`).

Registered names: compliance, volume_fraction, mass, displacement, reaction (and those added by other
modules of this package). ``response <= limit`` is a constraint.
"""

from .base import RESPONSES, Constraint, Response, make_response, register_response
from .compliance import Compliance
from .displacement import Displacement
from .reaction import Reaction
from .volume import Mass, VolumeFraction
from .stress import Stress
from .frequency import Frequency

__all__ = ["RESPONSES", "Constraint", "Response", "make_response", "register_response",
           "Compliance", "Displacement", "Mass", "Reaction", "VolumeFraction"]
