"""End to end: real training, real onnxruntime pricing, real journal storage."""

import dataclasses
import json
import os
import signal
import subprocess
import time

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import hwsearch.search.engine._runner as runner
from hwsearch.search.outputs._results import RunResults
from hwsearch.search.spec import parse_spec
from hwsearch.search.study._study import load_study
from hwsearch.search.training._datasets import load_dataset
from hwsearch.search.training._evaluate import TrainSettings, TrialFailed, accuracy, evaluate, evaluation_steps
from hwsearch.spaces import Candidate, build_plan, network, space
from hwsearch.targets._cost import size_kb
from tests.conftest import REPO, hwsearch_cmd, tiny_spec

pytestmark = pytest.mark.slow


def median_size(spec) -> float:
    """A size budget that cuts the tiny space roughly in half."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    sizes = [size_kb(build_plan(space(study.ask(), spec.space), (1, 8, 8), 10)) for _ in range(60)]
    return float(np.median(sizes))


def test_infeasible_candidates_are_recorded_at_once_and_never_trained(tmp_path):
    spec = parse_spec(tiny_spec(search={"trials": 10, "sampler": "random"}))  # one that proposes over budget
    spec.budget.size_kb = median_size(spec)
    trained = []

    def recording(cand, *args, **kwargs):  # the real evaluation, noting each candidate it trains
        trained.append(cand.to_string())
        return (yield from evaluation_steps(cand, *args, **kwargs))

    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None, evaluator=recording)
    trials = study.get_trials()
    infeasible = [t for t in trials if t.user_attrs.get("status") == "infeasible"]
    feasible = [t for t in trials if t.user_attrs.get("status") == "feasible"]
    assert infeasible and feasible and len(trials) == 10
    for t in infeasible:
        assert t.constraints["size_kb"] > 0 and t.state == TrialState.COMPLETE
        assert t.user_attrs["candidate"] not in trained
        assert "curve" not in t.user_attrs and set(t.user_attrs["timings"]) == {"price_s"}
        assert "over budget: size_kb" in t.user_attrs["infeasible_reason"]
        assert not (tmp_path / "weights" / f"trial_{t.number}.pt").exists()
    assert sorted(trained) == sorted(t.user_attrs["candidate"] for t in feasible)
    for t in feasible:
        assert t.constraints["size_kb"] <= 0
        assert t.values[0] == t.user_attrs["accuracy"] and 0.0 <= t.values[0] <= 1.0
        assert [c["phase"] for c in t.user_attrs["curve"]] == ["dense", "finetune"]
        assert {"price_s", "train_s", "prune_s", "finetune_s"} <= set(t.user_attrs["timings"])
        assert (tmp_path / t.user_attrs["weights"]).exists()
        blocks = t.user_attrs["cost"]["blocks"]
        assert sum(ms for _, ms in blocks) == pytest.approx(t.user_attrs["latency_ms"])
    # only feasible trials reach the Pareto front
    assert {r.number for r in RunResults(tmp_path).pareto()} <= {t.number for t in feasible}
    # the study starts at the space's corners and at the largest and the deepest candidates the
    # budget admits
    assert [t.user_attrs.get("seeded") for t in trials[:5]] == [
        "cheapest latency_ms", "cheapest size_kb", "largest within budget", "deepest within budget", None]
    assert trials[2].user_attrs["status"] == trials[3].user_attrs["status"] == "feasible"


def seeded_corner(find, spec):
    """``(candidate, multiply-adds, target)`` of the seeded corner ``find`` gives on the tiny task,
    with a size budget that cuts the space in half (set on ``spec``)."""
    from hwsearch.targets import get_target

    spec.budget.size_kb = median_size(spec)
    target = get_target(spec.target)
    text, macs = find(spec, target, (1, 8, 8), 10)
    return Candidate.from_string(text), macs, target


def test_the_largest_candidate_within_budget_fits_it_and_no_single_change_that_fits_adds_work():
    from hwsearch.search.engine import largest_within_budget

    spec = parse_spec(tiny_spec())
    best, macs, target = seeded_corner(largest_within_budget, spec)

    def priced(cand):
        plan = build_plan(cand, (1, 8, 8), 10)
        return plan.macs, target.price(plan).size_kb

    assert priced(best) == (macs, pytest.approx(priced(best)[1])) and priced(best)[1] <= spec.budget.size_kb
    assert all(s.prune == 0 and s.w_bits == s.a_bits == 8 for s in best.stages)
    # locally maximal: every other choice of one stage's depth, width, expansion or squeeze-excite
    # either breaks the budget or does less work
    for i, (st, choices) in enumerate(zip(best.stages, spec.space.stages)):
        for name, values in {"depth": choices.depths, "width": choices.widths,
                             "expand": spec.space.expand_ratios, "se": spec.space.se}.items():
            for v in values:
                stages = list(best.stages)
                stages[i] = dataclasses.replace(st, **{name: v})
                work, size = priced(dataclasses.replace(best, stages=tuple(stages)))
                assert size > spec.budget.size_kb or work <= macs
    # more work than a random sample of the candidates that fit
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fitting = [w for w, size in (priced(space(study.ask(), spec.space)) for _ in range(60))
               if size <= spec.budget.size_kb]
    assert fitting and macs >= max(fitting)
    # no budget, no such candidate
    assert largest_within_budget(parse_spec(tiny_spec()), target, (1, 8, 8), 10) is None


def test_the_deepest_candidate_within_budget_fits_it_and_no_single_change_that_fits_adds_a_block():
    from hwsearch.search.engine import deepest_within_budget

    spec = parse_spec(tiny_spec(space={"stages": [{"widths": [8, 12], "depths": [1, 2]},
                                                  {"widths": [16], "depths": [1, 2, 3]}]}))
    best, macs, target = seeded_corner(deepest_within_budget, spec)

    def priced(cand):
        plan = build_plan(cand, (1, 8, 8), 10)
        return sum(s.depth for s in cand.stages), target.price(plan).size_kb

    depth, size = priced(best)
    assert size <= spec.budget.size_kb and build_plan(best, (1, 8, 8), 10).macs == macs
    for i, (st, choices) in enumerate(zip(best.stages, spec.space.stages)):
        for d in choices.depths:
            if d > st.depth:
                stages = list(best.stages)
                stages[i] = dataclasses.replace(st, depth=d)
                assert priced(dataclasses.replace(best, stages=tuple(stages)))[1] > spec.budget.size_kb
    # at least as deep as any of a random sample of the candidates that fit
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fitting = [d for d, s in (priced(space(study.ask(), spec.space)) for _ in range(60)) if s <= spec.budget.size_kb]
    assert fitting and depth >= max(fitting)
    # one depth per stage, or no budget: no such candidate
    assert deepest_within_budget(parse_spec(tiny_spec()), target, (1, 8, 8), 10) is None
    one_depth = parse_spec(tiny_spec(space={"stages": [{"widths": [8], "depths": [1]},
                                                       {"widths": [16], "depths": [2]}]}))
    one_depth.budget.size_kb = 1e6
    assert deepest_within_budget(one_depth, target, (1, 8, 8), 10) is None


def test_the_specs_own_seeds_are_tried_first_and_once_and_a_seed_added_later_continues_the_study(tmp_path):
    base = parse_spec(tiny_spec())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    first, second = (space(study.ask(), base.space).to_string() for _ in range(2))
    assert first != second

    def run(trials: int, seeds: list[str]):
        spec = parse_spec(tiny_spec(search={"trials": trials, "seed_corners": False, "seeds": seeds}))
        return runner.run_search(spec, tmp_path, progress=False, log=lambda m: None).get_trials()

    trials = run(3, [first])
    assert trials[0].user_attrs["candidate"] == first
    assert trials[0].user_attrs["seeded"] == f"given in search.seeds: {first}"
    assert [t.user_attrs.get("seeded") for t in trials[1:]] == [None, None]
    # a seed added to a continued study is tried (seeds do not change what a trial measures); the
    # first is not tried again, and neither is a seed the study has already met
    trials = run(6, [first, second, trials[1].user_attrs["candidate"]])
    assert len(trials) == 6
    assert [t.user_attrs["candidate"] for t in trials].count(first) == 1
    assert trials[3].user_attrs["candidate"] == second and trials[3].user_attrs["seeded"].endswith(second)
    assert [t.user_attrs.get("seeded") for t in trials[4:]] == [None, None]


def test_a_seed_outside_the_space_is_refused_when_the_spec_loads_naming_it():
    outside = "c8:ir_r1_k3_e1_c99_re:ir_r1_k3_e1_c16_re"  # no width 99 in its first stage
    with pytest.raises(ValueError, match=rf"search.seeds\[0\] '{outside}' is not a candidate of the spec's "
                                         r"space: .*width.*99"):
        parse_spec(tiny_spec(search={"seeds": [outside]}))
    with pytest.raises(ValueError, match=r"search.seeds\[0\] 'resnet8' is not a candidate"):
        parse_spec(tiny_spec(search={"seeds": ["resnet8"]}))


def test_a_failing_candidate_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path):
    spec = parse_spec(tiny_spec(search={"trials": 4}, space={"distill": False}))
    calls = []

    def second_fails(cand, *args, **kwargs):
        calls.append(cand)
        if len(calls) == 2:
            raise FloatingPointError("loss exploded on purpose")
        return (yield from evaluation_steps(cand, *args, **kwargs))

    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None, evaluator=second_fails)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 3
    failed = next(t for t in study.get_trials() if t.state == TrialState.FAIL)
    assert "FloatingPointError: loss exploded on purpose" in failed.user_attrs["failure_reason"]


def test_nan_loss_fails_the_trial(tmp_path):
    data = load_dataset(parse_spec(tiny_spec()).dataset, 0)
    cand = Candidate.from_string("c8:ir_r1_k3_e3_c8_re_w32a32:ir_r1_k3_e1_c16_re_w32a32")
    with pytest.raises(TrialFailed, match="loss became"):
        evaluate(cand, data, None, TrainSettings(epochs=2, lr=1e30), seed=0)


def test_evaluation_is_deterministic_given_the_seed():
    data = load_dataset(parse_spec(tiny_spec()).dataset, 0)
    cand = Candidate.from_string("c8:ir_r1_k3_e3_c8_re_p0.5_w8a8:ir_r1_k3_e1_c16_re_w8a8")
    settings = TrainSettings(epochs=1, finetune_epochs=1)
    a, b = (evaluate(cand, data, None, settings, seed=7) for _ in range(2))
    assert a.accuracy == b.accuracy and a.curve == b.curve


def test_post_training_quantization_fine_tunes_in_float_then_quantizes():
    """PTQ (the benchmarks' hand-made baseline) and QAT differ only in when the quantizers turn on:
    with no fine-tuning they are the same network, with fine-tuning PTQ trains in float."""
    data = load_dataset(parse_spec(tiny_spec()).dataset, 0)
    cand = Candidate.from_string("c8:ir_r1_k3_e3_c8_re_p0.5_w4a8:ir_r1_k3_e1_c16_re_w4a8")

    def run(mode: str, finetune: int):
        return evaluate(cand, data, None, TrainSettings(epochs=3, finetune_epochs=finetune, quantization=mode),
                        seed=3, keep_weights=True)

    assert run("ptq", 0).accuracy == run("qat", 0).accuracy
    ptq, qat = run("ptq", 1), run("qat", 1)
    assert [c["phase"] for c in ptq.curve] == ["dense"] * 3 + ["finetune"]
    assert any(not torch.equal(ptq.state_dict[k], qat.state_dict[k]) for k in ptq.state_dict)
    # PTQ leaves the fine-tuned float weights as they were: without quantizers they score what the
    # float fine-tune epoch scored, with them what the evaluation reported
    net = network.fold_batchnorm(network.prune(network.build(build_plan(cand, data.input_shape,
                                                                        data.num_classes))))
    net.load_state_dict(ptq.state_dict)
    xv, yv = torch.as_tensor(data.x_val), torch.as_tensor(data.y_val)
    assert accuracy(net, xv, yv) == ptq.curve[-1]["val_accuracy"]
    assert accuracy(network.enable_quantization(net), xv, yv) == ptq.accuracy
    with pytest.raises(ValueError, match="quantization must be"):
        run("int8", 0)


def _write_spec(tmp_path, **overrides):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(**overrides)))
    return path


def _completed(run_dir) -> dict[int, tuple]:
    try:
        study = load_study(run_dir)
    except (FileNotFoundError, ValueError):
        return {}
    return {t.number: tuple(t.values) for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE}


def test_killing_a_run_and_rerunning_it_keeps_every_completed_trial(tmp_path):
    spec = _write_spec(tmp_path, search={"trials": 12})
    run_dir = tmp_path / "run"
    cmd = [*hwsearch_cmd(), "run", str(spec), "--out", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while len(_completed(run_dir)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _completed(run_dir)
    assert 4 <= len(before) < 12, "the kill must land mid-search"

    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr
    study = load_study(run_dir)
    after = {t.number: t for t in study.get_trials()}
    for number, values in before.items():  # nothing completed was lost or changed
        assert after[number].state == TrialState.COMPLETE and tuple(after[number].values) == values
    assert len(after) == len({t._trial_id for t in after.values()})  # numbers not reused
    counted = [t for t in after.values() if not t.user_attrs.get("requeued")]
    assert len(counted) == 12 and all(t.state.is_finished() for t in after.values())
    for t in after.values():
        if t.user_attrs.get("requeued"):  # cut by the kill: failed with the reason, candidate re-run
            assert t.state == TrialState.FAIL and "interrupted" in t.user_attrs["failure_reason"]
            if t.params:  # a kill before the trial drew its candidate leaves nothing to queue
                assert any(u.user_attrs.get("requeued_from") == t.number for u in after.values())


def test_rerunning_continues_the_same_study_and_pareto_reads_it(tmp_path):
    spec = _write_spec(tmp_path, search={"trials": 3})
    run_dir = tmp_path / "run"
    base = [*hwsearch_cmd(), "run", str(spec), "--out", str(run_dir), "--no-progress"]
    assert subprocess.run(base, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    first = _completed(run_dir)
    # Only the trial count and the workers change: the study goes on.
    _write_spec(tmp_path, search={"trials": 3, "workers": 1, "sampler": "random"})
    assert subprocess.run([*base, "--trials", "5"], cwd=REPO, capture_output=True, timeout=300).returncode == 0
    second = _completed(run_dir)
    assert len(second) == 5 and all(second[n] == v for n, v in first.items())
    # The training budget changes: refused, naming the field, the run's spec.yaml kept.
    kept = (run_dir / "spec.yaml").read_text()
    _write_spec(tmp_path, search={"trials": 6, "epochs": 2})
    refused = subprocess.run([*base], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert "search.epochs: 1 -> 2" in refused.stderr and "--out" in refused.stderr
    assert "search.trials" not in refused.stderr and "Traceback" not in refused.stderr
    assert (run_dir / "spec.yaml").read_text() == kept and _completed(run_dir) == second
    out = subprocess.run([*hwsearch_cmd(), "pareto", str(run_dir), "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    rows = json.loads(out.stdout)
    assert rows and all(r["state"] == "complete" and r["candidate"] for r in rows)
    text = subprocess.run([*hwsearch_cmd(), "pareto", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=120).stdout
    assert "feasible Pareto-optimal" in text and rows[0]["candidate"] in text


def test_two_workers_train_in_parallel_processes(tmp_path):
    spec = parse_spec(tiny_spec(search={"trials": 4, "workers": 2}))
    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    assert len({t.user_attrs["candidate"] for t in done}) == 4  # the sampler did not repeat itself


def test_the_gaussian_process_sampler_proposes_within_the_space_and_the_budget(tmp_path):
    """The ``gp`` sampler runs the real search: after its random start-up trials, its own proposals
    are candidates of the space, priced and trained like any other."""
    spec = parse_spec(tiny_spec(search={"trials": 8, "sampler": "gp", "epochs": 1, "finetune_epochs": 0}))
    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None)
    trials = study.get_trials()
    assert type(study.sampler).__name__ == "GPSampler"
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    proposed = [t for t in trials if t.number >= 4]  # start-up: min(10, max(4, 8 // 4)) = 4
    assert all(Candidate.from_string(t.user_attrs["candidate"]) == space(optuna.trial.FixedTrial(t.params), spec.space)
               for t in proposed)
