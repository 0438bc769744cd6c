"""Material interpolation for the optimizer: the law itself lives in :mod:`lightweight.fem.interpolation`.

Kept as an import path of the optimization layer; there is one definition of SIMP/RAMP.
"""

from ..fem.interpolation import SELF_WEIGHT_LINEAR_BELOW, Interpolation

__all__ = ["Interpolation", "SELF_WEIGHT_LINEAR_BELOW"]
