"""Run a search on this machine: the driver asks the sampler, prices, trains, and tells.

For each trial:

1. the sampler proposes parameters and :func:`spaces.space` turns them into a ``Candidate``;
2. the target prices it (no training): a candidate over budget is told at once as infeasible
   (constraint values > 0) and never takes a training slot;
3. a feasible one is trained, pruned, quantized and scored, in this process (``workers: 1``) or
   in a pool of worker processes that received the dataset and teacher logits once;
4. the driver records values, constraints and attributes. It alone writes the study.

A failure (NaN loss, an exception) is recorded with its reason and the search goes on. Killing
the driver loses only the trials in flight: re-running continues the same study, and their
candidates are queued again.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from search.datasets import Data, load_dataset
from search.evaluate import Evaluation, TrainSettings, evaluate
from search.feasibility import check_reachable
from search.study import (INFEASIBLE_ACCURACY, counts_toward_budget, is_feasible, open_study,
                          recover_interrupted)
from spaces import build_plan, params_of, space
from spaces.candidate import Candidate


@dataclass
class Tally:
    feasible: int = 0
    infeasible: int = 0
    failed: int = 0
    best_accuracy: float = float("nan")

    def add(self, trial: optuna.trial.FrozenTrial) -> None:
        status = trial.user_attrs.get("status")
        if trial.state == TrialState.FAIL:
            self.failed += 1
        elif status == "infeasible":
            self.infeasible += 1
        elif status == "feasible":
            self.feasible += 1
            acc = trial.user_attrs.get("accuracy", float("nan"))
            if not acc <= self.best_accuracy:
                self.best_accuracy = acc

    def postfix(self) -> dict:
        best = "-" if math.isnan(self.best_accuracy) else f"{self.best_accuracy:.2%}"
        return {"feasible": self.feasible, "over budget": self.infeasible, "failed": self.failed,
                "best acc": best}


# Worker side: the dataset and teacher logits arrive once per process, not once per trial.
_WORKER: dict = {}


def _init_worker(data: Data, teacher: np.ndarray | None, settings: TrainSettings, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(data=data, teacher=teacher, settings=settings)


def _evaluate_in_worker(candidate: str, seed: int, keep: bool) -> Evaluation:
    return evaluate(Candidate.from_string(candidate), _WORKER["data"], _WORKER["teacher"],
                    _WORKER["settings"], seed, keep_weights=keep)


def run_search(spec, run_dir: Path, trials: int | None = None, progress: bool = True,
               log=None) -> optuna.Study:
    """Run (or continue) the search of ``spec`` in ``run_dir`` until ``trials`` trials are done."""
    from tqdm import tqdm

    from search.evaluate import resolve_device
    from targets import UnpriceableError, get_target

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.yaml").write_text(spec.to_yaml())
    n_total = trials or spec.search.trials
    s = spec.search
    settings = TrainSettings(s.epochs, s.finetune_epochs, s.batch_size, s.lr, resolve_device(s.device))

    study = open_study(spec, run_dir)
    recovered = recover_interrupted(study)
    if recovered:
        log(f"resuming: trials {recovered} were interrupted; their candidates are queued again")
    history = study.get_trials(deepcopy=False)
    done = sum(counts_toward_budget(t) for t in history)
    if done >= n_total:
        log(f"{spec.name}: {done} trials already done (asked for {n_total}); nothing to run")
        return study

    t0 = time.perf_counter()
    data = load_dataset(spec.dataset, s.seed)
    target = get_target(spec.target)
    study.set_user_attr("input_shape", list(data.input_shape))
    study.set_user_attr("num_classes", data.num_classes)
    if target.ensure_calibrated(spec.space, data.input_shape, data.num_classes):
        log(f"calibrated {target.name}'s latency model on whole networks of this space (once per space)")
    corners = check_reachable(spec, data)  # an impossible budget is reported before anything trains
    if spec.search.seed_corners and not history:
        # Anchor the front at both ends: the fastest and the smallest candidate of the space.
        for metric in ("latency_ms", "size_kb"):
            cand = Candidate.from_string(corners.cheapest_candidate[metric])
            study.enqueue_trial(params_of(cand, spec.space), user_attrs={"seeded": f"cheapest {metric}"},
                                skip_if_exists=True)
    teacher = None
    if spec.space.distill:
        from search.teacher import teacher_logits

        teacher, meta = teacher_logits(spec, data, run_dir, log=log)
        study.set_user_attr("teacher", {k: v for k, v in meta.items() if k != "key"})
    log(f"data and teacher ready in {time.perf_counter() - t0:.1f}s; searching {n_total - done} trials "
        f"on {target.name} with {s.workers} worker(s)")

    limits = spec.budget.limits()
    tally = Tally()
    for t in history:
        tally.add(t)
    bar = tqdm(total=n_total, initial=done, desc=spec.name, unit="trial", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    bar.set_postfix(tally.postfix())
    weights_dir = run_dir / "weights"

    def finish(trial: optuna.Trial, values=None, state=TrialState.COMPLETE) -> None:
        frozen = study.tell(trial, values, state=state)
        tally.add(frozen)
        bar.update(1)
        bar.set_postfix(tally.postfix())

    def fail(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("failure_reason", reason[-2000:])
        finish(trial, state=TrialState.FAIL)

    def propose():
        """Ask for trials until one needs training; price and record the others at once."""
        nonlocal done
        while done < n_total:
            trial = study.ask()
            done += 1
            t_price = time.perf_counter()
            try:
                cand = space(trial, spec.space)
                plan = build_plan(cand, data.input_shape, data.num_classes)
                cost = target.price(plan)
            except (ValueError, UnpriceableError) as e:
                fail(trial, f"cannot price the candidate: {e}")
                continue
            trial.set_user_attr("candidate", cand.to_string())
            trial.set_user_attr("cost", cost.to_dict())
            trial.set_user_attr("params_count", plan.params)
            for name in ("latency_ms", "size_kb", "peak_memory_kb"):
                trial.set_user_attr(name, cost.metric(name))
            violations = {name: cost.metric(name) - limit for name, limit in limits.items()}
            for name, v in violations.items():
                trial.set_constraint(name, v)
            price_s = time.perf_counter() - t_price
            if any(v > 0 for v in violations.values()):
                trial.set_user_attr("status", "infeasible")
                trial.set_user_attr("timings", {"price_s": price_s})
                over = ", ".join(f"{k} {cost.metric(k):.4g} > {limits[k]:.4g}"
                                 for k, v in violations.items() if v > 0)
                trial.set_user_attr("infeasible_reason", f"over budget: {over}")
                finish(trial, [INFEASIBLE_ACCURACY if o == "accuracy" else cost.metric(o)
                               for o in spec.objectives])
                continue
            return trial, cand, cost, price_s
        return None

    def complete(trial, cand, cost, price_s, ev: Evaluation) -> None:
        trial.set_user_attr("status", "feasible")
        trial.set_user_attr("accuracy", ev.accuracy)
        trial.set_user_attr("curve", ev.curve)
        trial.set_user_attr("timings", {"price_s": price_s, **ev.timings})
        if ev.state_dict is not None:
            import torch

            weights_dir.mkdir(exist_ok=True)
            torch.save(ev.state_dict, weights_dir / f"trial_{trial.number}.pt")
            trial.set_user_attr("weights", f"weights/trial_{trial.number}.pt")
        finish(trial, [ev.accuracy if o == "accuracy" else cost.metric(o) for o in spec.objectives])

    def seed_of(trial) -> int:
        return s.seed * 100_003 + trial.number

    try:
        if s.workers == 1:
            while (job := propose()) is not None:
                trial, cand = job[0], job[1]
                try:
                    ev = evaluate(cand, data, teacher, settings, seed_of(trial), keep_weights=s.keep_weights)
                except Exception as e:  # recorded with its reason; the search goes on
                    fail(trial, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
                    continue
                complete(*job, ev)
        else:
            import multiprocessing as mp

            threads = max(1, (os.cpu_count() or 1) // s.workers)
            with ProcessPoolExecutor(s.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                     initargs=(data, teacher, settings, threads)) as pool:
                running: dict[Future, tuple] = {}
                while True:
                    while len(running) < s.workers and (job := propose()) is not None:
                        fut = pool.submit(_evaluate_in_worker, job[1].to_string(), seed_of(job[0]),
                                          s.keep_weights)
                        running[fut] = job
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        job = running.pop(fut)
                        try:
                            complete(*job, fut.result())
                        except Exception as e:
                            fail(job[0], f"{type(e).__name__}: {e}")
    finally:
        bar.close()
        if hasattr(target, "flush"):
            target.flush()
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    log(f"{spec.name}: {tally.feasible} trained, {tally.infeasible} over budget, {tally.failed} failed; "
        f"{len(feasible)} feasible in the study; {time.perf_counter() - t0:.0f}s")
    return study
