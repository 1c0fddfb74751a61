"""Run a search: the driver asks the sampler, prices, trains through an executor, and tells.

For each trial:

1. the sampler proposes parameters and :func:`spaces.space` turns them into a ``Candidate``;
2. the target prices it (no training): a candidate over budget is told at once as infeasible
   (constraint values > 0) and never takes a worker;
3. a feasible one is trained, pruned, quantized and scored on a worker of the executor
   (:mod:`search.executors`: this process, a local process pool, or Ray actors). With early
   stopping on, it pauses at each rung and the driver decides whether it goes on;
4. the driver records values, constraints and attributes. It alone writes the study.

A failure (NaN loss, an exception) is recorded with its reason and the search goes on. A worker
that dies mid-trial (killed, out of memory, node lost) is replaced and the trial retried once,
then recorded as failed. Killing the driver loses only the trials in flight: re-running continues
the same study, and their candidates are queued again under new trial numbers.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.datasets import load_dataset
from search.early_stopping import ParetoHalving, rungs_for
from search.evaluate import Evaluation, TrainSettings
from search.executors import Rung, WorkerLost, WorkerSetup
from search.feasibility import check_reachable
from search.cost_aware import CostAwareSampler, Priced
from search.study import (INFEASIBLE_ACCURACY, counts_toward_budget, is_feasible, open_study,
                          recover_interrupted, run_lock, trial_seed)
from spaces import build_plan, params_of, space
from spaces.candidate import Candidate

RETRIES = 1  # a trial whose worker died is run once more, then recorded as failed


@dataclass
class Tally:
    feasible: int = 0
    infeasible: int = 0
    pruned: int = 0
    failed: int = 0
    best_accuracy: float = float("nan")

    def add(self, trial: optuna.trial.FrozenTrial) -> None:
        status = trial.user_attrs.get("status")
        if trial.state == TrialState.FAIL:
            self.failed += 1
        elif status == "infeasible":
            self.infeasible += 1
        elif status == "pruned":
            self.pruned += 1
        elif status == "feasible":
            self.feasible += 1
            acc = trial.user_attrs.get("accuracy", float("nan"))
            if not acc <= self.best_accuracy:
                self.best_accuracy = acc

    def postfix(self) -> dict:
        best = "-" if math.isnan(self.best_accuracy) else f"{self.best_accuracy:.2%}"
        out = {"trained": self.feasible, "over budget": self.infeasible}
        if self.pruned:
            out["stopped early"] = self.pruned
        return {**out, "failed": self.failed, "best acc": best}


@dataclass
class Running:
    """A trial on a worker slot."""

    trial: optuna.Trial
    candidate: Candidate
    cost: object
    price_s: float
    attempt: int = 0


def _reason(e: BaseException) -> str:
    """A failure reason: the exception, and where it came from unless it is a known failure."""
    from search.evaluate import TrialFailed

    text = f"{type(e).__name__}: {e}"
    if isinstance(e, TrialFailed) or e.__traceback__ is None:
        return text
    return text + "\n" + "".join(traceback.format_tb(e.__traceback__)[-3:])


def make_executor(spec, setup: WorkerSetup, log):
    """The executor the spec asks for: inline (1 local worker), a process pool (several local
    workers) or Ray actors."""
    from search import executors

    s = spec.search
    if s.backend == "ray":
        return executors.RayExecutor(setup, s.workers, s.address, s.cpus_per_trial or 1.0, s.gpus_per_trial, log)
    if s.workers == 1:
        return executors.InlineExecutor(setup)
    return executors.PoolExecutor(setup, s.workers)


def _threads(spec) -> int | None:
    s = spec.search
    if s.cpus_per_trial:
        return max(1, round(s.cpus_per_trial))
    if s.backend == "ray":
        return 1
    return None if s.workers == 1 else max(1, (os.cpu_count() or 1) // s.workers)


def _halving(spec, study: optuna.Study) -> ParetoHalving | None:
    """The early-stopping rule, with the rung records of the study's earlier trials (on resume)."""
    es = spec.search.early_stopping
    rungs = rungs_for(spec.search.epochs, es.min_epochs, es.reduction_factor)
    if not es.enabled or not rungs:
        return None
    halving = ParetoHalving(rungs, es.reduction_factor, es.margin)
    costs = [o for o in spec.objectives if o != "accuracy"]
    for t in study.get_trials(deepcopy=False):
        for epoch, acc in t.user_attrs.get("rungs", {}).items():
            if int(epoch) in halving.rungs:
                halving.record(t.number, int(epoch), acc, [t.user_attrs[c] for c in costs])
    return halving


def _priced(candidate: Candidate, target, data) -> Priced:
    """A candidate's plan and every cost metric on ``target`` (the cost-aware sampler's prices)."""
    plan = build_plan(candidate, data.input_shape, data.num_classes)
    cost = target.price(plan)
    return Priced(plan, {name: cost.metric(name) for name in ("latency_ms", "size_kb", "peak_memory_kb")})


def run_search(spec, run_dir: Path, trials: int | None = None, progress: bool = True,
               log=None, evaluator=None) -> optuna.Study:
    """Run (or continue) the search of ``spec`` in ``run_dir`` until ``trials`` trials are done.

    ``evaluator`` replaces :func:`search.evaluate.evaluation_steps` (same signature, a module-level
    generator function); benchmarks use it to time the framework around trials that do nothing.
    """
    with run_lock(run_dir):  # one driver per run directory; a second one is refused
        return _search(spec, run_dir, trials, progress, log, evaluator)


def _search(spec, run_dir: Path, trials: int | None, progress: bool, log, evaluator) -> optuna.Study:
    from tqdm import tqdm

    from search.evaluate import resolve_device
    from targets import UnpriceableError, get_target

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
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
    data = load_dataset(spec.dataset, spec.data_seed)
    target = get_target(spec.target)
    study.set_user_attr("input_shape", list(data.input_shape))
    study.set_user_attr("num_classes", data.num_classes)
    if target.ensure_calibrated(spec.space, data.input_shape, data.num_classes):
        log(f"calibrated {target.name}'s latency model on whole networks of this space (once per space)")
    corners = check_reachable(spec, data)  # an impossible budget is reported before anything trains
    if isinstance(study.sampler, CostAwareSampler):
        study.sampler.use_prices(lambda cand: _priced(cand, target, data))
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
    setup = WorkerSetup(data, teacher, settings, _threads(spec), **({"evaluator": evaluator} if evaluator else {}))
    executor = make_executor(spec, setup, log)
    halving = _halving(spec, study)
    log(f"data and teacher ready in {time.perf_counter() - t0:.1f}s; searching {n_total - done} trials "
        f"on {target.name} with {executor.slots} worker(s) ({executor.name})"
        + (f"; early stopping at epochs {halving.rungs}" if halving else ""))

    limits = spec.budget.limits()
    tally = Tally()
    for t in history:
        tally.add(t)
    t_search = time.perf_counter()
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

    def complete(run: Running, ev: Evaluation) -> None:
        trial = run.trial
        trial.set_user_attr("status", "feasible")
        trial.set_user_attr("accuracy", ev.accuracy)
        trial.set_user_attr("curve", ev.curve)
        trial.set_user_attr("timings", {"price_s": run.price_s, **ev.timings})
        if ev.state_dict is not None:
            import torch

            weights_dir.mkdir(exist_ok=True)
            torch.save(ev.state_dict, weights_dir / f"trial_{trial.number}.pt")
            trial.set_user_attr("weights", f"weights/trial_{trial.number}.pt")
        finish(trial, [ev.accuracy if o == "accuracy" else run.cost.metric(o) for o in spec.objectives])

    def stop_early(run: Running, rung: Rung) -> None:
        trial = run.trial
        trial.set_user_attr("status", "pruned")
        trial.set_user_attr("accuracy", rung.accuracy)
        trial.set_user_attr("pruned_reason", f"stopped after {rung.epoch} dense epochs: other candidates at "
                                              "that epoch were more accurate and at least as cheap")
        finish(trial, state=TrialState.PRUNED)

    def start(slot: int, run: Running) -> None:
        until = halving.next_rung(None) if halving else None
        executor.submit(slot, "start", run.candidate.to_string(), trial_seed(s.seed, run.trial.number), s.keep_weights, until)

    costs = [o for o in spec.objectives if o != "accuracy"]
    slots: list[Running | None] = [None] * executor.slots
    try:
        while True:
            for i, busy in enumerate(slots):
                if busy is None and (job := propose()) is not None:
                    slots[i] = Running(*job)
                    start(i, slots[i])
            if not any(slots):
                break
            for slot, outcome in executor.poll():
                run = slots[slot]
                slots[slot] = None
                if isinstance(outcome, WorkerLost):
                    executor.replace(slot)
                    if run.attempt < RETRIES:
                        log(f"trial {run.trial.number}: {outcome}; retrying it on a new worker")
                        run.trial.set_user_attr("retried_after", str(outcome))
                        run.attempt += 1
                        slots[slot] = run
                        start(slot, run)
                    else:
                        fail(run.trial, f"{outcome} (after {RETRIES} retry)")
                elif isinstance(outcome, Rung):
                    rungs = {**run.trial.user_attrs.get("rungs", {}), str(outcome.epoch): outcome.accuracy}
                    run.trial.set_user_attr("rungs", rungs)
                    if halving.record(run.trial.number, outcome.epoch, outcome.accuracy,
                                      [run.cost.metric(c) for c in costs]):
                        slots[slot] = run
                        executor.submit(slot, "advance", halving.next_rung(outcome.epoch))
                    else:
                        stop_early(run, outcome)
                elif isinstance(outcome, Evaluation):
                    complete(run, outcome)
                else:  # the exception the trial raised: recorded with its reason; the search goes on
                    fail(run.trial, _reason(outcome))
    finally:
        bar.close()
        executor.close()
        if hasattr(target, "flush"):
            target.flush()
    search_s = time.perf_counter() - t_search
    study.set_user_attr("timing", {"setup_s": t_search - t0, "search_s": search_s})
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    log(f"{spec.name}: {tally.feasible} trained, {tally.pruned} stopped early, {tally.infeasible} over budget, "
        f"{tally.failed} failed; {len(feasible)} feasible in the study; {time.perf_counter() - t0:.0f}s")
    return study
