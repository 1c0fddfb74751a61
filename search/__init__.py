"""HOW the search runs: the spec, the training of one candidate, the study record, the search
algorithms, the engine that drives trials, and the outputs (results, export); plus the
``hwsearch`` command (:mod:`hwsearch.search.cli`).

Sub-packages, in import order (each may import only those above it, and ``spaces``/``targets``):

- :mod:`~hwsearch.search.spec` and :mod:`~hwsearch.search.errors`: the spec; the error root;
- :mod:`~hwsearch.search.training`: datasets, evaluating one candidate, the teacher (worker side);
- :mod:`~hwsearch.search.study`: the Optuna study of a run, its storage and trial records;
- :mod:`~hwsearch.search.algorithms`: Pareto arithmetic, early stopping, the cost-aware sampler;
- :mod:`~hwsearch.search.engine`: the driver, the executors, what a budget leaves of a space;
- :mod:`~hwsearch.search.outputs`: the read-only results API and ONNX export.

Importing this package loads only the spec (pydantic, and numpy through the light part of
:mod:`hwsearch.targets`); the sub-packages load their libraries (torch, optuna, onnx) when
imported.
"""

from __future__ import annotations

from hwsearch.search.errors import SearchError
from hwsearch.search.spec import OBJECTIVES, Budget, DatasetSpec, SearchSettings, Spec, SpecError, load_spec, parse_spec

__all__ = ["OBJECTIVES", "Budget", "DatasetSpec", "SearchError", "SearchSettings", "Spec", "SpecError",
           "load_spec", "parse_spec"]
