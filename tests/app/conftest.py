"""A finished tiny run for the app's tests: trained, over-budget and failed trials."""

import pytest

from hwsearch.search.engine._runner import run_search
from hwsearch.search.spec import parse_spec
from hwsearch.search.training._evaluate import TrialFailed, evaluation_steps
from tests.conftest import TINY_SPACE, tiny_spec

# The tiny space with the quickstart's stage widths (a corner of the quickstart space), which every
# shipped profile prices (x86-epyc-1t measured, the others estimated): the run measures nothing, and
# it can be re-priced on any shipped target.
PRICED_SPACE = {**TINY_SPACE, "stages": [{"widths": [8], "depths": [1]}, {"widths": [16], "depths": [1]},
                                         {"widths": [24], "depths": [1, 2]}]}
FAILING_TRIAL = 3  # the third candidate sent to training fails, with this reason
FAILURE = "loss became nan on purpose"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """10 trials on x86-epyc-1t (5 epochs each, enough to tell candidates apart), under a size budget
    that about half the space meets."""
    sent = []

    def one_fails(cand, *args, **kwargs):  # the real evaluation, except for one candidate
        sent.append(cand)
        if len(sent) == FAILING_TRIAL:
            raise TrialFailed(FAILURE)
        return (yield from evaluation_steps(cand, *args, **kwargs))

    spec = parse_spec(tiny_spec(target="x86-epyc-1t", space=PRICED_SPACE, budget={"size_kb": 5.0},
                                search={"trials": 10, "epochs": 5}))
    run_dir = tmp_path_factory.mktemp("app") / "tiny"
    run_search(spec, run_dir, progress=False, log=lambda m: None, evaluator=one_fails)
    return run_dir
