"""Search quality on CIFAR-10: samplers compared at an equal number of trials, over several seeds.

    python bench/search_quality.py [--data ../shared/datasets/cifar10/train] [--trials 40]
                                   [--samplers tpe nsga2 random gp cost-aware] [--seeds 0 1 2]
                                   [--jobs 2]

Every run searches the task of ``bench/cifar10.py`` (the same data, training budget, target,
budget and space) with one sampler and one seed, one trial at a time (so a run is reproducible).
``--jobs`` runs go at once, each training on ``cpus / jobs`` threads (or CUDA when present).
Each seed's teacher is trained once and shared by that seed's runs (it does not depend on the
sampler). Runs live in ``--work`` and resume where they stopped.

Reported, with the fixed reference point written in the results:
- the hypervolume of each run's feasible trials after every trial (accuracy, latency, size);
- how many trials each sampler needs to reach random search's final hypervolume (same seed), and
  the training time those trials took against random's for its whole run;
- each run's feasible trials, for the fronts, and its wall time and counts.

Results: ``bench/results/search_quality.json``; ``bench/front.py`` draws the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from itertools import accumulate
from pathlib import Path

from cifar10 import (
    DEFAULT_DATA,
    DEFAULT_WORK,
    OBJECTIVES,
    REFERENCE,
    check_data,
    load_task_data,
    prepare_profile,
    task_spec,
    use_cache,
)
from common import ROOT, write_results

RESULTS = ROOT / "bench" / "results"


def _run_one(data: str, sampler: str, seed: int, trials: int, device: str, threads: int,
             run_dir: str, work: str) -> dict:
    """One run, in a worker process: the search, then what the report needs from it."""
    use_cache(Path(work))
    from hwsearch.search.engine import run_search

    spec = task_spec(f"{sampler}-s{seed}", Path(data), sampler=sampler, seed=seed, trials=trials,
                     device=device, threads=threads)
    t0 = time.perf_counter()
    run_search(spec, Path(run_dir), progress=False, log=lambda msg: None)
    return {"wall_s": time.perf_counter() - t0}


def _train_teacher(data: str, seed: int, device: str, threads: int, folder: str, work: str) -> float:
    use_cache(Path(work))
    import torch

    from hwsearch.search.training import teacher_logits

    torch.set_num_threads(threads)
    spec = task_spec(f"teacher-s{seed}", Path(data), seed=seed, device=device, threads=threads)
    t0 = time.perf_counter()
    teacher_logits(spec, load_task_data(Path(data)), Path(folder), log=lambda msg: None)
    return time.perf_counter() - t0


def _done_trials(run_dir: Path) -> int:
    from hwsearch.search.study import counts_toward_budget, load_study

    try:
        return sum(counts_toward_budget(t) for t in load_study(run_dir).get_trials(deepcopy=False))
    except (FileNotFoundError, ValueError):
        return 0


def _summarise(run_dir: Path, trials: int) -> dict:
    from hwsearch.search.outputs import RunResults
    from hwsearch.search.study import TrialRecord

    res = RunResults(run_dir)
    history = res.hypervolume_history(REFERENCE, points=trials)
    rows = res.rows()
    trials_ = res.study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials_ if t.datetime_start]
    ends = [t.datetime_complete for t in trials_ if t.datetime_complete]
    trained = [r for r in rows if r.accuracy is not None]
    spent = list(accumulate(sum(v for k, v in (TrialRecord.of(t).timings or {}).items() if k != "price_s")
                            for t in sorted(trials_, key=lambda t: t.number)))
    feasible = [r for r in rows if r.state == "complete"]
    return {
        "hypervolume": [hv for _, hv in history],
        "counts": res.counts(),
        "trained": len(trained),
        "feasible": [{"number": r.number, "candidate": r.candidate, "accuracy": r.accuracy,
                      "latency_ms": r.latency_ms, "size_kb": r.size_kb} for r in feasible],
        "pareto": [r.number for r in res.pareto()],
        "train_s": spent[-1] if spent else 0.0,
        # training time spent up to and including each trial (the compute behind each hypervolume)
        "train_s_cumulative": spent,
        # first trial's start to last trial's end: the run's search time, across resumptions
        "search_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
    }


def trials_to_reach(history: list[float], level: float) -> int | None:
    """The number of trials after which ``history`` first reaches ``level`` (None if never)."""
    return next((i + 1 for i, hv in enumerate(history) if hv >= level - 1e-12), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 as an image folder")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="runs, teachers and the profile cache")
    ap.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "random", "gp", "cost-aware"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: CPUs / jobs)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    check_data(args.data)
    if "random" not in args.samplers:
        sys.exit("error: --samplers must include random (the others are measured against it)")
    work = args.work.resolve()
    use_cache(work)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    t_start = time.perf_counter()

    print("measuring the local-cpu profile of the task (once; cached in --work)", flush=True)
    t0 = time.perf_counter()
    prepare_profile()
    profile_s = time.perf_counter() - t0

    from tqdm import tqdm

    runs = [(s, seed) for seed in args.seeds for s in args.samplers]
    run_dirs = {(s, seed): work / "runs" / f"{s}-s{seed}" for s, seed in runs}
    teachers = {seed: work / "teachers" / f"s{seed}" for seed in args.seeds}
    walls: dict[str, float] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        t0 = time.perf_counter()
        futures = {pool.submit(_train_teacher, str(args.data), seed, args.device, threads, str(folder),
                               str(work)): seed for seed, folder in teachers.items()}
        for fut in tqdm(futures, desc="teachers", unit="teacher"):
            fut.result()
        teacher_s = time.perf_counter() - t0
        for key, run_dir in run_dirs.items():  # each seed's teacher, as the run would train it
            if not (run_dir / "teacher").exists():
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copytree(teachers[key[1]] / "teacher", run_dir / "teacher")
        pending = {pool.submit(_run_one, str(args.data), s, seed, args.trials, args.device, threads,
                               str(run_dirs[(s, seed)]), str(work)): (s, seed) for s, seed in runs}
        bar = tqdm(total=len(runs) * args.trials, desc="trials", unit="trial")
        while pending:
            done, _ = wait(pending, timeout=15, return_when=FIRST_COMPLETED)
            for fut in done:
                s, seed = pending.pop(fut)
                walls[f"{s}-s{seed}"] = fut.result()["wall_s"]
                tqdm.write(f"{s} seed {seed}: done in {walls[f'{s}-s{seed}'] / 60:.1f} min")
            bar.n = sum(_done_trials(d) for d in run_dirs.values())
            bar.refresh()
        bar.close()

    results: dict = {"task": task_spec("task", args.data).model_dump(mode="json", exclude={"name"}),
                     "reference": REFERENCE, "objectives": OBJECTIVES, "trials": args.trials,
                     "seeds": args.seeds, "samplers": args.samplers, "threads_per_run": threads,
                     "jobs": args.jobs, "runs": {}}
    results["task"]["dataset"]["path"] = str(args.data)
    for (s, seed), run_dir in run_dirs.items():
        results["runs"][f"{s}-s{seed}"] = {"sampler": s, "seed": seed, "wall_s": walls.get(f"{s}-s{seed}"),
                                           **_summarise(run_dir, args.trials)}
    summary = {}
    for s in args.samplers:
        per_seed = []
        for seed in args.seeds:
            target = results["runs"][f"random-s{seed}"]["hypervolume"][-1]
            hv = results["runs"][f"{s}-s{seed}"]["hypervolume"]
            reach = trials_to_reach(hv, target)
            spent = results["runs"][f"{s}-s{seed}"]["train_s_cumulative"]
            per_seed.append({"seed": seed, "final_hv": hv[-1], "hv_at_half": hv[len(hv) // 2 - 1],
                             "random_final_hv": target, "trials_to_random_final": reach,
                             # the training time that took, against random's for its whole run
                             "train_s_to_random_final": spent[reach - 1] if reach else None,
                             "random_train_s": results["runs"][f"random-s{seed}"]["train_s_cumulative"][-1]})
        reached = [p["trials_to_random_final"] for p in per_seed]
        summary[s] = {
            "per_seed": per_seed,
            "mean_final_hv": sum(p["final_hv"] for p in per_seed) / len(per_seed),
            # a run that never reaches it counts as needing every trial (and is flagged)
            "mean_share_of_trials": sum((r or args.trials) / args.trials for r in reached) / len(reached),
            "all_reached": all(r is not None for r in reached),
            "mean_trained": sum(results["runs"][f"{s}-s{seed}"]["trained"] for seed in args.seeds) / len(args.seeds),
            # training time to reach random's final hypervolume over random's own, mean over seeds
            # (a run that never reaches it counts as its whole training time)
            "mean_train_time_ratio": sum(
                (p["train_s_to_random_final"] or results["runs"][f"{s}-s{p['seed']}"]["train_s"]) / p["random_train_s"]
                for p in per_seed
            )
            / len(per_seed),
        }
    results["summary"] = summary
    best = max(args.samplers, key=lambda s: (summary[s]["mean_final_hv"]))
    results["best_sampler"] = best
    results["wall_s"] = {"total": time.perf_counter() - t_start, "profile": profile_s, "teachers": teacher_s,
                         "runs": walls}
    # Runs resume, so one result may take several invocations: keep each one's wall time.
    previous = RESULTS / "search_quality.json"
    invocations = json.loads(previous.read_text()).get("invocations", []) if previous.exists() else []
    searched = {k: v for k, v in walls.items() if v > 60}  # the others were done already
    if searched:
        invocations.append({"at": time.strftime("%Y-%m-%d %H:%M"), "runs_searched": sorted(searched),
                            "jobs": args.jobs, **results["wall_s"]})
    results["invocations"] = invocations
    dest = write_results("search_quality", results)

    print(f"\n{len(runs)} runs x {args.trials} trials; hypervolume reference {REFERENCE} "
          f"(share of the box up to accuracy 1, latency 0, size 0)")
    print(f"{'sampler':10} {'final HV (mean)':>14} {'HV at half':>11} {'trials to random final':>24} "
          f"{'share':>6} {'trained':>8} {'train time to it':>17}")
    for s in args.samplers:
        m = summary[s]
        reach = ", ".join(str(p["trials_to_random_final"] or f">{args.trials}") for p in m["per_seed"])
        half = sum(p["hv_at_half"] for p in m["per_seed"]) / len(m["per_seed"])
        print(f"{s:10} {m['mean_final_hv']:14.4f} {half:11.4f} {reach:>24} {m['mean_share_of_trials']:6.0%} "
              f"{m['mean_trained']:8.1f} {m['mean_train_time_ratio']:17.0%}")
    print(f"best sampler: {best}; total {results['wall_s']['total'] / 60:.1f} min; results in {dest}")


if __name__ == "__main__":
    main()
