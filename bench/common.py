"""Helpers the benchmarks share: the quickstart spec with overrides, and where results go."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The shipped profile measured on this host: pricing is a look-up, never a measurement, so
# benchmarks of the search itself do not time onnxruntime filling a cache.
TARGET = "x86-epyc-1t"


def quickstart_spec(name: str, budget: dict | None = None, space: dict | None = None, **search):
    """examples/quickstart.yaml, renamed, priced on :data:`TARGET`, with overrides."""
    import yaml

    from hwsearch.search.spec import parse_spec

    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data.update(name=name, target=TARGET)
    if budget is not None:
        data["budget"] = budget
    data["space"].update(space or {})
    data["search"].update(search)
    return parse_spec(data, ROOT / "examples")


def host_slug(host: str | None = None) -> str:
    """A CPU model as a file name's part: 'Intel(R) Xeon(R) Processor' -> 'intel-xeon-processor'."""
    import re

    from hwsearch.targets import host_name

    words = re.sub(r"\((r|tm)\)", "", (host or host_name()).lower())
    return "-".join(re.findall(r"[a-z0-9]+", words)) or "unknown-host"


def host_results(name: str) -> Path:
    """The results file of a benchmark whose figures belong to the host they were measured on:
    ``bench/results/NAME.<cpu-model>.json``, one per CPU model, so a run on another kind of host
    adds its figures beside the others instead of replacing them."""
    return ROOT / "bench" / "results" / f"{name}.{host_slug()}.json"


def write_results(name: str, results: dict, per_host: bool = False) -> Path:
    """``bench/results/NAME.json``, or with ``per_host`` :func:`host_results`' file."""
    dest = host_results(name) if per_host else ROOT / "bench" / "results" / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=1) + "\n")
    return dest
