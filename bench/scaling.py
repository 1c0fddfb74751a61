"""Trials per minute with 1 and 2 workers on the quickstart, on this machine.

    python bench/scaling.py [--trials 30] [--repeats 2] [--ray]

Each worker gets one CPU (``cpus_per_trial: 1``, one torch thread), as a Ray trial reserves its
CPUs: the ratio is then the framework's parallel efficiency. For context the script also runs the
default single worker, which lets torch use every core for one trial at a time (intra-op
threads): on 2 cores that already takes part of the second core for the larger candidates, so a
second worker adds less over it.

Both runs see the same candidates in the same order: the sampler is random with the quickstart's
seed (TPE's proposals depend on timing once trials run in parallel, which would compare
different candidates). Pricing uses the shipped profile of this host, so no run pays for
measuring layers. Throughput is counted over the search loop (after the data and teacher are
ready): trials that count toward the budget, per minute. The runs alternate 1, 2, 1, 2 ... so
that the machine's noise hits both; the ratio is taken within each pair.

Writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import TARGET, quickstart_spec, write_results


def throughput(trials: int, workers: int, backend: str, cpus: float | None = 1) -> dict:
    from hwsearch.search.engine import run_search
    from hwsearch.search.study import Status, TrialRecord, counts_toward_budget

    spec = quickstart_spec(f"scaling-{backend}-{workers}", sampler="random", trials=trials, workers=workers,
                           backend=backend, cpus_per_trial=cpus)
    with tempfile.TemporaryDirectory() as tmp:
        study = run_search(spec, Path(tmp), progress=False, log=lambda m: None)
        counted = [t for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)]
        trained = sum(TrialRecord.of(t).status == Status.FEASIBLE for t in counted)
        timing = study.user_attrs["timing"]
    return {
        "workers": workers,
        "backend": backend,
        "cpus_per_trial": cpus or "default (all cores)",
        "trials": len(counted),
        "trained": trained,
        "search_s": round(timing["search_s"], 1),
        "setup_s": round(timing["setup_s"], 1),
        "trials_per_min": round(len(counted) / timing["search_s"] * 60, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ray", action="store_true", help="also run 2 workers on Ray actors")
    args = ap.parse_args()
    from hwsearch.targets import host_name

    pairs = []
    for _ in range(args.repeats):
        one, two = throughput(args.trials, 1, "local"), throughput(args.trials, 2, "local")
        pairs.append({"one": one, "two": two, "speedup": round(two["trials_per_min"] / one["trials_per_min"], 2)})
        print(f"1 worker {one['trials_per_min']:.1f} trials/min, 2 workers {two['trials_per_min']:.1f}: "
              f"x{pairs[-1]['speedup']}", flush=True)
    results = {"host": host_name(), "target": TARGET, "command": "python bench/scaling.py", "pairs": pairs,
               "speedup_median": statistics.median(p["speedup"] for p in pairs), "goal": 1.7}
    default = throughput(args.trials, 1, "local", cpus=None)
    results["one_worker_all_cores"] = default
    results["speedup_vs_one_worker_all_cores"] = round(
        statistics.median(p["two"]["trials_per_min"] for p in pairs) / default["trials_per_min"], 2)
    print(f"1 worker with torch on every core: {default['trials_per_min']:.1f} trials/min; 2 workers do "
          f"x{results['speedup_vs_one_worker_all_cores']} of that", flush=True)
    if args.ray:
        ray2 = throughput(args.trials, 2, "ray")
        results["ray_two"] = ray2
        results["ray_speedup_vs_last_one"] = round(ray2["trials_per_min"] / pairs[-1]["one"]["trials_per_min"], 2)
        print(f"2 Ray workers {ray2['trials_per_min']:.1f} trials/min: x{results['ray_speedup_vs_last_one']}")
    print(f"median speed-up {results['speedup_median']}; wrote {write_results('scaling', results)}")


if __name__ == "__main__":
    main()
