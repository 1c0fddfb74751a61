"""The framework's own cost per trial, measured around trials that do nothing.

    python bench/overhead.py [--trials 100] [--skip-tune]

Four measurements on the quickstart space, priced with the shipped ``x86-epyc-1t`` profile (pure
look-ups: measuring a new layer on ``local-cpu`` is a one-time cost per layer, not per trial):

1. **no-op trials**, every one feasible, through each executor: inline (1 local worker), the local
   process pool (2 workers) and Ray actors (2 workers, a private local Ray). Per-trial overhead =
   the search loop's wall time / trials: sampler (TPE), pricing, the journal writes, the round
   trip to a worker, tell. Ray's and the pool's start-up are reported apart: they are paid once.
2. **infeasible candidates**: a latency budget only ~5% of the space meets; each infeasible
   trial's cost is its ask-to-tell time in the study (sampling, pricing, recording, telling), with
   TPE and with the random sampler (whose proposals cost almost nothing, leaving the framework's
   own part); the evaluator's call count shows that none reached a worker.
3. **a plain Ray Tune trial** (``tune.Tuner`` with ``OptunaSearch``), the reference the executors
   are compared with (``--skip-tune`` leaves it out).

Writes bench/results/overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import TARGET, quickstart_spec, write_results

from hwsearch.search.study import Status, TrialRecord
from hwsearch.search.training import Evaluation


def noop_trial(candidate, data, teacher, settings, seed, keep_weights):
    """A trial that does nothing: what is left of its wall time is the framework's."""
    return Evaluation(accuracy=0.5)
    yield  # unreachable: makes this a generator function, as evaluators are


def _spec(name: str, trials: int, **search):
    """The quickstart space, no budget, no distillation (no teacher to train), no seeded corners."""
    return quickstart_spec(name, budget={}, space={"distill": False}, trials=trials, seed_corners=False, **search)


def noop_overhead(trials: int, backend: str, workers: int) -> dict:
    from hwsearch.search.engine import run_search

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        study = run_search(_spec(f"noop-{backend}-{workers}", trials, backend=backend, workers=workers),
                           Path(tmp), progress=False, log=lambda m: None, evaluator=noop_trial)
        wall = time.perf_counter() - t0
        timing = study.user_attrs["timing"]
        done = [t for t in study.get_trials(deepcopy=False) if TrialRecord.of(t).status == Status.FEASIBLE]
        assert len(done) == trials, f"{len(done)} of {trials} no-op trials completed"
    return {"backend": backend, "workers": workers, "trials": trials,
            "per_trial_s": round(timing["search_s"] / trials, 4),
            "startup_s": round(wall - timing["search_s"], 2), "wall_s": round(wall, 2)}


def infeasible_cost(trials: int, sampler: str = "tpe") -> dict:
    import optuna

    from hwsearch.search.engine import run_search
    from hwsearch.spaces import build_plan, space
    from hwsearch.targets import get_target

    spec = _spec(f"infeasible-{sampler}", trials, sampler=sampler)
    target = get_target(TARGET)
    survey = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    lat = sorted(target.price(build_plan(space(survey.ask(), spec.space), (1, 8, 8), 10)).latency_ms
                 for _ in range(400))
    spec.budget.latency_ms = lat[len(lat) // 20]  # ~5% of the space fits
    calls = []

    def counting(candidate, *args):
        calls.append(candidate)
        return (yield from noop_trial(candidate, *args))

    with tempfile.TemporaryDirectory() as tmp:
        study = run_search(spec, Path(tmp), progress=False, log=lambda m: None, evaluator=counting)
        trials_ = study.get_trials(deepcopy=False)
    infeasible = [t for t in trials_ if TrialRecord.of(t).status == Status.INFEASIBLE]
    feasible = [t for t in trials_ if TrialRecord.of(t).status == Status.FEASIBLE]
    ms = sorted((t.datetime_complete - t.datetime_start).total_seconds() * 1000 for t in infeasible)
    # the sampler's cost grows with the study (TPE reads every earlier trial): by half of the run
    halves = {}
    for label, lo, hi in (("first_half", 0, trials // 2), ("second_half", trials // 2, trials)):
        part = [(t.datetime_complete - t.datetime_start).total_seconds() * 1000 for t in infeasible
                if lo <= t.number < hi]
        halves[label] = round(statistics.median(part), 2) if part else None
    price = sorted(TrialRecord.of(t).timings["price_s"] * 1000 for t in infeasible)
    return {
        "sampler": sampler,
        "trials": trials,
        "latency_budget_ms": spec.budget.latency_ms,
        "infeasible": len(infeasible),
        "feasible": len(feasible),
        "evaluator_calls": len(calls),
        "reached_a_worker": sum(1 for t in infeasible if TrialRecord.of(t).candidate in {c.to_string() for c in calls}),
        "ask_to_tell_ms": {
            "median": round(statistics.median(ms), 2),
            "p90": round(ms[int(len(ms) * 0.9)], 2),
            "max": round(ms[-1], 2),
            "median_by_half": halves,
        },
        "price_ms_median": round(statistics.median(price), 2),
    }


def tune_overhead(trials: int) -> dict:
    """A plain Ray Tune trial, driven by OptunaSearch: the alternative to our executors."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config):
        return {"accuracy": 0.5}

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING", configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tuner = tune.Tuner(
                trainable,
                param_space={"x": tune.uniform(0, 1), "k": tune.choice([3, 5])},
                tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="accuracy", mode="max", seed=0),
                                            num_samples=trials, max_concurrent_trials=2),
                run_config=tune.RunConfig(storage_path=tmp, verbose=0))
            t0 = time.perf_counter()
            results = tuner.fit()
            wall = time.perf_counter() - t0
        assert len(results) == trials
    finally:
        ray.shutdown()
    return {"backend": "ray tune (OptunaSearch)", "workers": 2, "trials": trials,
            "per_trial_s": round(wall / trials, 4), "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--skip-tune", action="store_true")
    args = ap.parse_args()
    from hwsearch.targets import host_name

    runs = [noop_overhead(args.trials, "local", 1), noop_overhead(args.trials, "local", 2),
            noop_overhead(args.trials, "ray", 2)]
    if not args.skip_tune:
        runs.append(tune_overhead(max(10, args.trials // 5)))
    # TPE (the default) pays a proposal cost that grows with the study; the random sampler's is
    # near zero, which leaves the framework's own cost (pricing, recording, telling)
    infeasible = [infeasible_cost(args.trials * 2, "tpe"), infeasible_cost(args.trials * 2, "random")]
    results = {"host": host_name(), "target": TARGET, "command": "python bench/overhead.py", "noop": runs,
               "infeasible": infeasible,
               "goals": {"local_per_trial_s": 0.2, "ray_per_trial_s": 0.5, "infeasible_ms": 10}}
    dest = write_results("overhead", results)
    print(f"{'executor':<28} {'workers':>7} {'trials':>6} {'per trial':>10} {'start-up':>9}")
    for r in runs:
        print(f"{r['backend']:<28} {r['workers']:>7} {r['trials']:>6} {r['per_trial_s'] * 1000:>8.1f}ms "
              f"{r.get('startup_s', float('nan')):>8.2f}s")
    for i in infeasible:
        a = i["ask_to_tell_ms"]
        print(f"infeasible ({i['sampler']}): {i['infeasible']} of {i['trials']} trials; ask-to-tell median "
              f"{a['median']} ms (first half {a['median_by_half']['first_half']}, second half "
              f"{a['median_by_half']['second_half']}), p90 {a['p90']} ms; {i['reached_a_worker']} reached a worker "
              f"({i['evaluator_calls']} evaluator calls for {i['feasible']} feasible)")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
