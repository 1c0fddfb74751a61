import os
import sys
from pathlib import Path

import pytest

TINY_SPACE = {
    "stem_widths": [8],
    "stages": [{"widths": [8, 12], "depths": [1]}, {"widths": [16], "depths": [1, 2]}],
    "kernels": [3],
    "expand_ratios": [1, 3],
    "se": [False, True],
    "activations": ["relu"],
    "prune_ratios": [0.0, 0.5],
    "weight_bits": [8, 32],
    "activation_bits": [8, 32],
}


@pytest.fixture(scope="session", autouse=True)
def _latency_cache(tmp_path_factory):
    """Layer latencies measured by tests go to one cache per test session, not the user's."""
    os.environ["HWSEARCH_CACHE"] = str(tmp_path_factory.mktemp("hwsearch-cache"))
    yield


def tiny_spec(**overrides) -> dict:
    """A spec that trains in well under a second per candidate on digits."""
    spec = {
        "name": "tiny",
        "dataset": {"name": "digits", "limit": 400},
        "space": dict(TINY_SPACE),
        "teacher": {"extra_epochs": 0},
        "search": {"trials": 6, "epochs": 1, "finetune_epochs": 1, "seed": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def hwsearch_cmd() -> list[str]:
    return [sys.executable, "-m", "search.cli"]


REPO = Path(__file__).resolve().parents[1]


def stop_process(proc, timeout: float = 10) -> None:
    """Terminate a server started by a test, and kill it if it does not stop in ``timeout`` s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
