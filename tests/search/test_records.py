"""The typed trial record: what the driver writes is what every reader reads, old runs included."""

import typing

import optuna
import pytest

from hwsearch.search import Budget, SearchError, Spec
from hwsearch.search.study import RECORD_VERSION, Status, TrialRecord
from hwsearch.targets import COST_METRICS


def _trial_with(attrs: dict) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.5], user_attrs=attrs)


def test_a_record_written_on_a_trial_reads_back_the_same():
    study = optuna.create_study()
    trial = study.ask()
    priced = TrialRecord(candidate="c8:ir_r1_k3_e1_c8_re_w8a8", cost={"latency_ms": 0.1}, params_count=1234,
                         latency_ms=0.1, size_kb=2.5, peak_memory_kb=4.0)
    priced.write(trial)
    TrialRecord(status=Status.FEASIBLE, accuracy=0.9, timings={"price_s": 0.01}, rungs={"2": 0.7}).write(trial)
    study.tell(trial, 0.9)
    record = TrialRecord.of(study.trials[0])
    assert record.status is Status.FEASIBLE and record.accuracy == 0.9 and record.rungs == {"2": 0.7}
    assert record.candidate == priced.candidate and record.params_count == 1234  # the first part is kept
    assert [record.metric(m) for m in COST_METRICS] == [0.1, 2.5, 4.0]
    assert study.trials[0].user_attrs["record_version"] == RECORD_VERSION
    assert study.trials[0].user_attrs["status"] == "feasible"  # plain JSON for any Optuna tool


def test_records_from_before_versioning_read_and_newer_ones_are_refused():
    old = TrialRecord.of(_trial_with({"status": "infeasible", "infeasible_reason": "over budget: size_kb",
                                      "candidate": "c8", "latency_ms": 0.2, "an_unknown_key": 1}))
    assert old.status is Status.INFEASIBLE and old.reason == "over budget: size_kb" and old.latency_ms == 0.2
    with pytest.raises(SearchError, match="newer hwsearch"):
        TrialRecord.of(_trial_with({"record_version": RECORD_VERSION + 1, "status": "feasible"}))
    with pytest.raises(KeyError, match="never priced"):
        TrialRecord().metric("size_kb")
    with pytest.raises(KeyError, match="not a cost metric"):
        TrialRecord().metric("accuracy")


def test_one_constant_names_the_cost_metrics_the_spec_accepts():
    (objective,) = typing.get_args(Spec.model_fields["objectives"].annotation)
    assert set(typing.get_args(objective)) == {"accuracy", *COST_METRICS}
    assert tuple(Budget.model_fields) == COST_METRICS
