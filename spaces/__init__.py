"""WHAT can be searched: candidates, their string form, the define-by-run space and the
torch code that builds, prunes, quantizes and distils them (``hwsearch.spaces.network``, imported on
demand so that this package loads without torch)."""

from hwsearch.spaces._candidate import ACTIVATIONS, BIT_WIDTHS, EXPAND_RATIOS, KERNELS, Candidate, Stage
from hwsearch.spaces._config import SpaceSpec, StageSpace, space_presets
from hwsearch.spaces._plan import BlockPlan, FusedBlockPlan, HeadPlan, Layer, NetworkPlan, StemPlan, build_plan
from hwsearch.spaces._space import extremes, params_of, space

__all__ = [
    "ACTIVATIONS", "BIT_WIDTHS", "EXPAND_RATIOS", "KERNELS", "BlockPlan", "Candidate", "FusedBlockPlan", "HeadPlan",
    "Layer", "NetworkPlan", "SpaceSpec", "Stage", "StageSpace", "StemPlan", "build_plan", "extremes", "params_of",
    "space", "space_presets",
]
