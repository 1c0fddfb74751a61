"""Search algorithms: Pareto arithmetic (dominance, non-dominated sorting, crowding, the
hypervolume), early stopping (multi-objective successive halving), the sampler a spec names
(``make_sampler``) and the cost-aware sampler.

Owns decisions made from numbers. Must not import the engine or the outputs, nor torch; the
Pareto arithmetic imports nothing at all. optuna loads only with the cost-aware sampler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsearch._lazy import lazy_exports
from hwsearch.search.algorithms._early_stopping import ParetoHalving, rungs_for
from hwsearch.search.algorithms._pareto import crowding_distances, dominates, hypervolume, nondominated_ranks

if TYPE_CHECKING:
    from hwsearch.search.algorithms._cost_aware import CostAwareSampler
    from hwsearch.search.algorithms._samplers import make_sampler

__getattr__ = lazy_exports(__name__, {"._cost_aware": ("CostAwareSampler",), "._samplers": ("make_sampler",)})

__all__ = ["CostAwareSampler", "ParetoHalving", "crowding_distances", "dominates", "hypervolume", "make_sampler",
           "nondominated_ranks", "rungs_for"]
