"""Early stopping (MO-ASHA) against full-fidelity training: same trials, hypervolume and wall time.

    python bench/early_stopping.py [--trials 30] [--samplers random tpe]

The quickstart (digits, 8 dense + 2 fine-tuning epochs per candidate), run twice per sampler:
every candidate trained in full, then with early stopping at the spec's defaults (rungs at 2 and
6 dense epochs, reduction factor 3, margin 1 point). One worker, so both runs ask in the same order:

- with the random sampler both runs propose the very same candidates, and a candidate trained to
  the end gets the same accuracy in both (same seed): the comparison isolates what early
  stopping loses (front members stopped by mistake) and saves (time);
- with TPE (the default) the stopped candidates also change what the sampler proposes next.

Hypervolume: the share of the budget box (accuracy 0..1, latency 0..budget, size 0..budget)
that the feasible trained candidates dominate. "Time to reach" is when the early-stopping run's
front first reached the full run's final hypervolume, measured from the start of the search loop.

Writes bench/results/early_stopping.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import TARGET, quickstart_spec, write_results


def search(trials: int, sampler: str, early: bool) -> dict:
    from hwsearch.search.engine import run_search
    from hwsearch.search.outputs import RunResults, normalized_hypervolume
    from hwsearch.search.study import is_feasible

    spec = quickstart_spec(f"es-{sampler}-{'on' if early else 'off'}", sampler=sampler, trials=trials,
                           early_stopping={"enabled": early})
    with tempfile.TemporaryDirectory() as tmp:
        study = run_search(spec, Path(tmp), progress=False, log=lambda m: None)
        res = RunResults(tmp)
        timing = study.user_attrs["timing"]
        trials_ = study.get_trials(deepcopy=False)
        start = min(t.datetime_start for t in trials_)
        # the front's hypervolume after each trial finished, in order of completion
        curve, done = [], []
        for t in sorted((t for t in trials_ if t.datetime_complete), key=lambda t: t.datetime_complete):
            if is_feasible(t):
                done.append(res.row(t))
            curve.append(((t.datetime_complete - start).total_seconds(),
                          normalized_hypervolume(done, res.objectives, res.budget)))
        counts = res.counts()
        front = res.pareto()
    return {"sampler": sampler, "early_stopping": early, "trials": len(trials_), "counts": counts,
            "hypervolume": round(curve[-1][1] if curve else 0.0, 5), "search_s": round(timing["search_s"], 1),
            "setup_s": round(timing["setup_s"], 1), "front": [r.candidate for r in front],
            "curve": [(round(s, 1), round(hv, 5)) for s, hv in curve]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--samplers", nargs="+", default=["random", "tpe"])
    args = ap.parse_args()
    from hwsearch.targets import host_name

    comparisons = []
    for sampler in args.samplers:
        full, early = search(args.trials, sampler, False), search(args.trials, sampler, True)
        reach = next((s for s, hv in early["curve"] if hv >= full["hypervolume"] - 1e-12), None)
        comparisons.append(
            {
                "sampler": sampler,
                "full": full,
                "early": early,
                "hypervolume_ratio": round(early["hypervolume"] / full["hypervolume"], 4),
                "wall_ratio": round(early["search_s"] / full["search_s"], 3),
                "wall_ratio_with_setup": round(
                    (early["search_s"] + early["setup_s"]) / (full["search_s"] + full["setup_s"]), 3
                ),
                "lost_front_members": sorted(set(full["front"]) - set(early["front"])) if sampler == "random" else None,
                "time_to_reach_full_hypervolume_s": reach,
            }
        )
        c = comparisons[-1]
        print(f"{sampler:>6}: full HV {full['hypervolume']:.4f} in {full['search_s']:.0f}s; early stopping HV "
              f"{early['hypervolume']:.4f} in {early['search_s']:.0f}s ({early['counts'].get('pruned', 0)} stopped): "
              f"HV x{c['hypervolume_ratio']}, wall x{c['wall_ratio']}; reached the full HV at "
              f"{reach if reach is not None else '-'}s", flush=True)
    results = {"host": host_name(), "target": TARGET, "command": "python bench/early_stopping.py",
               "goal": "early stopping reaches >= the full-fidelity hypervolume in <= 0.6 of its wall time",
               "comparisons": comparisons}
    print(f"wrote {write_results('early_stopping', results)}")


if __name__ == "__main__":
    main()
