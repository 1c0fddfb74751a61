"""The engine: the driver that asks the sampler, prices, trains through an executor and tells
(:func:`run_search`); the executors (this process, a process pool, Ray actors); and what a
budget leaves of a space, found by pricing alone.

Owns the order of events in a run. Must not import the outputs; the executors never see the study.
"""

from __future__ import annotations

from hwsearch.search.engine._executors import (
           InlineExecutor,
           PoolExecutor,
           RayExecutor,
           TrialWorker,
           WorkerLost,
           WorkerSetup,
)
from hwsearch.search.engine._feasibility import (
           NotMeasuredYet,
           Survey,
           check_reachable,
           deepest_within_budget,
           largest_within_budget,
           survey,
)
from hwsearch.search.engine._final import FinalTraining, train_final
from hwsearch.search.engine._runner import make_executor, run_search
from hwsearch.search.study import DEEPEST, GIVEN, LARGEST  # the seeded trials' labels, recorded there

__all__ = ["DEEPEST", "GIVEN", "LARGEST", "FinalTraining", "InlineExecutor", "NotMeasuredYet", "PoolExecutor",
           "RayExecutor", "Survey", "TrialWorker", "WorkerLost", "WorkerSetup", "check_reachable",
           "deepest_within_budget", "largest_within_budget", "make_executor", "run_search", "survey", "train_final"]
