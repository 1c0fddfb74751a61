"""WHAT can be searched: candidates, their string form, the define-by-run space and the
torch code that builds, prunes, quantizes and distils them (``spaces.network``, imported on
demand so that this package loads without torch)."""

from spaces.candidate import ACTIVATIONS, BIT_WIDTHS, EXPAND_RATIOS, KERNELS, Candidate, Stage
from spaces.config import SpaceSpec, StageSpace
from spaces.plan import BlockPlan, HeadPlan, NetworkPlan, StemPlan, build_plan
from spaces.space import extremes, params_of, space

__all__ = [
    "ACTIVATIONS", "BIT_WIDTHS", "EXPAND_RATIOS", "KERNELS", "BlockPlan", "Candidate", "HeadPlan",
    "NetworkPlan", "SpaceSpec", "Stage", "StageSpace", "StemPlan", "build_plan", "extremes", "params_of", "space",
]
