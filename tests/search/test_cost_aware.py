"""The cost-aware sampler: its expected hypervolume improvement, its accuracy model, and real
searches with it (real training, real onnxruntime prices)."""

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import hwsearch.search.engine._runner as runner
from hwsearch.search.algorithms._cost_aware import CostAwareSampler, _GaussianProcess, expected_hvi
from hwsearch.search.algorithms._pareto import hypervolume
from hwsearch.search.spec import parse_spec
from hwsearch.spaces import Candidate, space
from tests.conftest import tiny_spec
from tests.search.test_search import median_size


def monte_carlo_hvi(mu, sigma, costs, front, reference, n, rng):
    """The mean, and its standard error, of the exact hypervolume improvement over draws of the
    accuracy (points in minimisation form: -accuracy against a reference of 0)."""
    ref = (0.0, *reference)
    pts = [(-a, *c) for a, c in front]
    base = hypervolume(pts, ref)
    gains = np.array([hypervolume(pts + [(-acc, *costs)], ref) - base for acc in rng.normal(mu, sigma, n)])
    return gains.mean(), gains.std() / math.sqrt(n)


@pytest.mark.parametrize("n_costs", [0, 1, 2, 3])
def test_expected_hvi_matches_the_mean_exact_improvement_over_sampled_accuracies(n_costs):
    rng = np.random.default_rng(n_costs)
    reference = (1.0,) * n_costs
    for case in range(6):
        front = [(float(rng.uniform(0.2, 0.8)), tuple(rng.uniform(0.05, 0.9, n_costs))) for _ in range(6)]
        costs = tuple(rng.uniform(0.0, 0.7, n_costs))
        mu, sigma = float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.02, 0.3))
        closed = expected_hvi(mu, sigma, costs, front, reference)
        mean, se = monte_carlo_hvi(mu, sigma, costs, front, reference, 3000, rng)
        assert abs(closed - mean) <= 4 * se + 1e-9, (case, closed, mean, se)
        if n_costs:
            assert closed > 0 or mean == 0


def test_expected_hvi_without_uncertainty_is_the_exact_improvement():
    front = [(0.6, (0.5, 0.2)), (0.4, (0.2, 0.3)), (0.8, (0.9, 0.9))]
    for acc, costs in [(0.7, (0.3, 0.25)), (0.5, (0.1, 0.1)), (0.3, (0.6, 0.6)), (0.95, (0.05, 0.95))]:
        pts = [(-a, *c) for a, c in front]
        exact = hypervolume(pts + [(-acc, *costs)], (0, 1, 1)) - hypervolume(pts, (0, 1, 1))
        assert expected_hvi(acc, 0.0, costs, front, (1.0, 1.0)) == pytest.approx(exact, abs=1e-12)
    # over budget (a cost at the reference) or dominated: nothing to gain
    assert expected_hvi(0.99, 0.1, (1.0, 0.1), front, (1.0, 1.0)) == 0
    assert expected_hvi(0.3, 0.0, (0.6, 0.6), front, (1.0, 1.0)) == 0


def test_the_accuracy_model_interpolates_and_is_unsure_far_from_its_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (30, 6))
    truth = lambda x: 0.3 + 0.3 * x[:, 0] - 0.1 * x[:, 2] ** 2  # noqa: E731
    y = truth(x) + rng.normal(0, 0.005, 30)
    gp = _GaussianProcess(x, y)
    test = rng.uniform(0, 1, (200, 6))
    mu, sigma = gp.predict(test)
    assert np.sqrt(((mu - truth(test)) ** 2).mean()) < 0.2 * y.std()
    _, near = gp.predict(x[:5])
    _, far = gp.predict(np.full((1, 6), 3.0))
    assert far[0] > 5 * near.max()


def test_the_sampler_asks_for_prices_before_it_proposes():
    spec = parse_spec(tiny_spec(search={"sampler": "cost-aware"}))
    sampler = CostAwareSampler(spec.space, spec.objectives, spec.budget.limits())
    study = optuna.create_study(directions=spec.directions, sampler=sampler)
    with pytest.raises(RuntimeError, match="use_prices"):
        study.ask()


def test_the_accuracy_model_sees_depth_so_a_search_where_depth_pays_goes_deep():
    """Depth costs latency (a layer more, and its per-call overhead): a model blind to it reads a
    deeper network as a slower one of the same worth. Here accuracy depends on depth alone (the
    last stage's: 1 or 2 blocks), the rest of each candidate only adds cost; after the start-up the
    sampler must find that out and propose deep candidates, real prices included."""
    from hwsearch.search.algorithms._cost_aware import FEATURES, features
    from hwsearch.search.engine._runner import _priced
    from hwsearch.search.study._records import Status, TrialRecord
    from hwsearch.search.training._datasets import load_dataset
    from hwsearch.spaces import build_plan
    from hwsearch.targets import get_target

    assert "log_blocks" in FEATURES
    spec = parse_spec(tiny_spec(search={"sampler": "cost-aware"}, space={"distill": False}))
    data = load_dataset(spec.dataset, spec.data_seed)
    target = get_target(spec.target)
    shallow, deep = (Candidate.from_string(f"c8:ir_r1_k3_e1_c8_re:ir_r{d}_k3_e1_c16_re") for d in (1, 2))
    f_shallow, f_deep = (features(build_plan(c, data.input_shape, data.num_classes)) for c in (shallow, deep))
    assert f_deep[FEATURES.index("log_blocks")] > f_shallow[FEATURES.index("log_blocks")]

    sampler = CostAwareSampler(spec.space, spec.objectives, {}, seed=0, n_startup=4, pool=128)
    sampler.use_prices(lambda cand: _priced(cand, target, data))
    study = optuna.create_study(directions=spec.directions, sampler=sampler)
    depths = []
    for _ in range(14):
        trial = study.ask()
        cand = space(trial, spec.space)
        depth = cand.stages[-1].depth
        priced = _priced(cand, target, data)
        accuracy = 0.5 + 0.3 * (depth - 1)
        TrialRecord(status=Status.FEASIBLE, candidate=cand.to_string(), accuracy=accuracy).write(trial)
        study.tell(trial, [accuracy, *(priced.costs[o] for o in spec.objectives if o != "accuracy")])
        depths.append(depth)
    assert sum(d == 2 for d in depths[4:]) >= 7, depths


def candidates(study) -> list[str]:
    return [t.user_attrs.get("candidate") for t in study.get_trials()]


@pytest.mark.slow
def test_a_search_never_proposes_over_budget_and_resumes_as_if_never_stopped(tmp_path):
    """With a size budget that cuts the space in half, every candidate the sampler proposes fits
    (random search would waste about half its trials); its proposals are the space's candidates;
    and a run stopped after 6 trials and continued proposes exactly what an uninterrupted run
    proposes (training is seeded per trial, and proposals depend only on the seed and history)."""
    spec = parse_spec(tiny_spec(search={"trials": 12, "sampler": "cost-aware", "epochs": 2, "finetune_epochs": 0}))
    spec.budget.size_kb = median_size(spec)
    quiet = dict(progress=False, log=lambda m: None)
    whole = runner.run_search(spec, tmp_path / "whole", **quiet)
    assert type(whole.sampler).__name__ == "CostAwareSampler"
    trials = whole.get_trials()
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    proposed = [t for t in trials if "seeded" not in t.user_attrs]
    assert [t.user_attrs.get("seeded") for t in trials[:4]] == [
        "cheapest latency_ms", "cheapest size_kb", "largest within budget", "deepest within budget"]
    assert len(proposed) == 8
    assert all(t.user_attrs["status"] == "feasible" and t.user_attrs["size_kb"] <= spec.budget.size_kb
               for t in proposed)
    assert all(Candidate.from_string(t.user_attrs["candidate"]) == space(optuna.trial.FixedTrial(t.params), spec.space)
               for t in proposed)
    assert len(set(candidates(whole))) == 12  # never the same candidate twice

    runner.run_search(spec, tmp_path / "resumed", trials=6, **quiet)
    resumed = runner.run_search(spec, tmp_path / "resumed", **quiet)
    assert candidates(resumed) == candidates(whole)


@pytest.mark.slow
def test_two_workers_get_different_candidates_while_one_trial_is_in_flight(tmp_path):
    """With two workers, the sampler proposes while the other worker's trial runs: that trial
    counts as a front member at its predicted accuracy, and its candidate is not proposed again."""
    spec = parse_spec(tiny_spec(search={"trials": 8, "sampler": "cost-aware", "epochs": 2, "finetune_epochs": 0,
                                        "workers": 2}))
    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None)
    trials = study.get_trials()
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len(set(candidates(study))) == 8
    # proposals after the start-up were made while the other worker's trial was running
    overlapping = [t for t in trials[4:] if any(o.datetime_start < t.datetime_start < o.datetime_complete
                                                for o in trials if o.number != t.number)]
    assert overlapping
