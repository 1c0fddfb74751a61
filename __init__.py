"""hwsearch: hardware-aware AutoML. One search over architecture, structured pruning, bit widths
and distillation, priced on a named device's latency profile.

The package is laid out in the order things depend on each other; each sub-package's docstring
says what it owns and what it must not import:

- :mod:`hwsearch.spaces`: WHAT is searched (candidates, the space, layer plans, torch networks);
- :mod:`hwsearch.targets`: WHERE it runs (device profiles, onnxruntime timing, pricing);
- :mod:`hwsearch.search`: HOW the search runs (spec, training, study, algorithms, engine,
  outputs, the ``hwsearch`` command);
- :mod:`hwsearch.app`: the Streamlit app (``hwsearch app``), a reader of runs.

Nothing heavy loads on ``import hwsearch``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hwsearch")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
