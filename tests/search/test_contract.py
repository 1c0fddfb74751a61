"""A spec is a contract with its study (hwsearch.search.study._contract)."""

import pytest
import yaml

from hwsearch.search.spec import parse_spec
from hwsearch.search.study import SpecChanged, contract_of, open_study, run_lock
from hwsearch.search.study._contract import RUN_ONLY, changed_fields
from hwsearch.search.study._study import CONTRACT_ATTR
from tests.conftest import tiny_spec


def test_run_only_fields_stay_out_of_the_contract_and_every_other_field_is_in():
    spec = parse_spec(tiny_spec())
    contract = contract_of(spec)
    assert not [k for k in contract if any(k == f or k.startswith(f + ".") for f in RUN_ONLY)]
    for field in ("dataset.limit", "target", "budget.size_kb", "objectives", "space.stages[1].depths",
                  "space.stages.count", "teacher.extra_epochs", "search.epochs", "search.seed", "search.lr"):
        assert field in contract, field
    bigger = parse_spec(tiny_spec(budget={"size_kb": 5.0}, search={"trials": 99, "workers": 2}))
    assert changed_fields(contract, contract_of(bigger)) == ["budget.size_kb: None -> 5.0"]


def test_a_study_refuses_a_spec_that_measures_otherwise_and_takes_one_that_only_runs_otherwise(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        study = open_study(parse_spec(tiny_spec()), run)
        assert study.user_attrs[CONTRACT_ATTR] == contract_of(parse_spec(tiny_spec()))
        open_study(parse_spec(tiny_spec(search={"trials": 40, "sampler": "random", "device": "cpu"})), run)
        with pytest.raises(SpecChanged) as e:
            open_study(parse_spec(tiny_spec(dataset={"limit": 300}, space={"kernels": [3, 5]})), run)
    assert e.value.fields == ["dataset.limit", "space.kernels"]
    assert "dataset.limit: 400 -> 300" in str(e.value) and "--out" in str(e.value)


def test_a_study_from_before_contracts_is_checked_against_its_runs_spec_yaml(tmp_path):
    """Studies written before the contract was stored: their run's spec.yaml is the record."""
    import optuna

    run = tmp_path / "run"
    spec = parse_spec(tiny_spec())
    with run_lock(run):
        study = open_study(spec, run)
        study.set_user_attr(CONTRACT_ATTR, None)  # as an older hwsearch left it
        study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0, 1.0]))
        (run / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
        with pytest.raises(SpecChanged, match=r"search\.finetune_epochs: 1 -> 0"):
            open_study(parse_spec(tiny_spec(search={"finetune_epochs": 0})), run)
        open_study(parse_spec(tiny_spec(search={"trials": 7})), run)


def test_a_study_from_before_a_recipe_field_resumes_with_the_value_it_was_trained_with(tmp_path):
    """``training.quantizer`` came after studies existed, all trained with max-abs scales: such a
    study resumes with ``quantizer: maxabs``, and the new default (lsq) is refused as a change
    that says how to continue; likewise for a study from before contracts, whose spec.yaml lacks
    the field."""
    import optuna

    run = tmp_path / "run"
    old_spec = parse_spec(tiny_spec())
    with run_lock(run):
        study = open_study(old_spec, run)
        older = {k: v for k, v in contract_of(old_spec).items() if k != "training.quantizer"}
        study.set_user_attr(CONTRACT_ATTR, older)  # as the hwsearch before LSQ recorded it
        with pytest.raises(SpecChanged) as e:
            open_study(parse_spec(tiny_spec()), run)  # today's default: lsq
        assert e.value.fields == ["training.quantizer"]
        assert "'maxabs' (recorded before the field existed; set it to 'maxabs' to continue" in str(e.value)
        open_study(parse_spec(tiny_spec(training={"quantizer": "maxabs"})), run)

        study.set_user_attr(CONTRACT_ATTR, None)  # from before contracts: its spec.yaml is the record
        study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0, 1.0]))
        written = old_spec.model_dump(mode="json", exclude_none=True)
        del written["training"]["quantizer"]
        (run / "spec.yaml").write_text(yaml.safe_dump(written))
        with pytest.raises(SpecChanged, match=r"training\.quantizer: 'maxabs'"):
            open_study(parse_spec(tiny_spec()), run)
        open_study(parse_spec(tiny_spec(training={"quantizer": "maxabs"})), run)
