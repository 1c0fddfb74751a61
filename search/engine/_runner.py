"""Run a search: the driver asks the sampler, prices, trains through an executor, and tells.

For each trial:

1. the sampler proposes parameters and :func:`hwsearch.spaces.space` turns them into a ``Candidate``;
2. the target prices it (no training): a candidate over budget is told at once as infeasible
   (constraint values > 0) and never takes a worker;
3. a feasible one is trained, pruned, quantized and scored on a worker of the executor
   (:mod:`hwsearch.search.engine._executors`: this process, a local process pool, or Ray actors). With early
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

from hwsearch.search.algorithms._cost_aware import CostAwareSampler, Priced
from hwsearch.search.algorithms._early_stopping import ParetoHalving, rungs_for
from hwsearch.search.algorithms._samplers import make_sampler
from hwsearch.search.engine._executors import Rung, WorkerLost, WorkerSetup
from hwsearch.search.engine._feasibility import check_reachable, deepest_within_budget, largest_within_budget
from hwsearch.search.study._records import COST_METRICS, DEEPEST, GIVEN, LARGEST, Status, TrialRecord
from hwsearch.search.study._study import (
    INFEASIBLE_ACCURACY,
    counts_toward_budget,
    is_feasible,
    open_study,
    recover_interrupted,
    run_lock,
    trial_seed,
)
from hwsearch.search.training._datasets import load_dataset
from hwsearch.search.training._evaluate import Evaluation
from hwsearch.spaces import build_plan, params_of, space
from hwsearch.spaces._candidate import Candidate
from hwsearch.targets import Cost

RETRIES = 1  # a trial whose worker died is run once more, then recorded as failed


@dataclass
class Tally:
    feasible: int = 0
    infeasible: int = 0
    pruned: int = 0
    failed: int = 0
    best_accuracy: float = float("nan")

    def add(self, trial: optuna.trial.FrozenTrial) -> None:
        record = TrialRecord.of(trial)
        if trial.state == TrialState.FAIL:
            self.failed += 1
        elif record.status == Status.INFEASIBLE:
            self.infeasible += 1
        elif record.status == Status.PRUNED:
            self.pruned += 1
        elif record.status == Status.FEASIBLE:
            self.feasible += 1
            acc = record.accuracy if record.accuracy is not None else float("nan")
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
    cost: Cost
    price_s: float
    attempt: int = 0


def _reason(e: BaseException) -> str:
    """A failure reason: the exception, and where it came from unless it is a known failure."""
    from hwsearch.search.training._evaluate import TrialFailed

    text = f"{type(e).__name__}: {e}"
    if isinstance(e, TrialFailed) or e.__traceback__ is None:
        return text
    return text + "\n" + "".join(traceback.format_tb(e.__traceback__)[-3:])


def make_executor(spec, setup: WorkerSetup, log):
    """The executor the spec asks for: inline (1 local worker), a process pool (several local
    workers) or Ray actors."""
    from hwsearch.search.engine import _executors as executors

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
        record = TrialRecord.of(t)
        for epoch, acc in (record.rungs or {}).items():
            if int(epoch) in halving.rungs:
                halving.record(t.number, int(epoch), acc, [record.metric(c) for c in costs])
    return halving


def _priced(candidate: Candidate, target, data) -> Priced:
    """A candidate's plan and every cost metric on ``target`` (the cost-aware sampler's prices)."""
    plan = build_plan(candidate, data.input_shape, data.num_classes)
    cost = target.price(plan)
    return Priced(plan, {name: cost.metric(name) for name in COST_METRICS})


def run_search(spec, run_dir: Path, trials: int | None = None, progress: bool = True,
               log=None, evaluator=None) -> optuna.Study:
    """Run (or continue) the search of ``spec`` in ``run_dir`` until ``trials`` trials are done.

    ``evaluator`` replaces :func:`hwsearch.search.training.evaluation_steps` (same signature, a
    module-level generator function); benchmarks use it to time the framework around trials that
    do nothing.
    """
    from tqdm import tqdm

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    new = not run_dir.exists()
    try:
        with run_lock(run_dir):  # one driver per run directory; a second one is refused
            study = open_study(spec, run_dir, make_sampler(spec))
            recovered = recover_interrupted(study)
            if recovered:
                log(f"resuming: trials {recovered} were interrupted; their candidates are queued again")
            n_total = trials or spec.search.trials
            done = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
            if done >= n_total:
                log(f"{spec.name}: {done} trials already done (asked for {n_total}); nothing to run")
                return study
            return _Driver(spec, run_dir, study, log).run(done, n_total, progress, evaluator)
    except Exception:
        # A run that this call created and that failed before its first trial leaves nothing
        # behind (an interrupt keeps what is there: re-running continues from its caches).
        if new and run_dir.is_dir() and not _told_any(run_dir):
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _told_any(run_dir: Path) -> bool:
    """Whether the run directory's journal holds a finished trial (a result worth keeping)."""
    from hwsearch.search.study._study import load_study

    try:
        study = load_study(run_dir)
    except Exception:  # no journal, or no study in it: nothing worth keeping
        return False
    return any(t.state.is_finished() for t in study.get_trials(deepcopy=False))


class _Driver:
    """One search session: prepares the data, target, teacher and executor, then keeps every
    worker slot busy, telling the study each outcome. It alone writes the study."""

    def __init__(self, spec, run_dir: Path, study: optuna.Study, log) -> None:
        self.spec, self.run_dir, self.study, self.log = spec, run_dir, study, log
        self.limits = spec.budget.limits()
        self.costs = [o for o in spec.objectives if o != "accuracy"]
        self.tally = Tally()
        self.done = 0
        self.n_total = 0

    # ------------------------------------------------------------------ preparation

    def run(self, done: int, n_total: int, progress: bool, evaluator) -> optuna.Study:
        from tqdm import tqdm

        self.done, self.n_total = done, n_total
        history = self.study.get_trials(deepcopy=False)
        t0 = time.perf_counter()
        self._prepare(fresh=not history, evaluator=evaluator)
        for t in history:
            self.tally.add(t)
        t_search = time.perf_counter()
        self.bar = tqdm(total=n_total, initial=done, desc=self.spec.name, unit="trial", disable=not progress,
                        dynamic_ncols=True, file=sys.stderr)
        self.bar.set_postfix(self.tally.postfix())
        try:
            self._drive()
        finally:
            self.bar.close()
            self.executor.close()
            self.target.flush()
        self.study.set_user_attr("timing", {"setup_s": t_search - t0, "search_s": time.perf_counter() - t_search})
        feasible = [t for t in self.study.get_trials(deepcopy=False) if is_feasible(t)]
        tally = self.tally
        self.log(f"{self.spec.name}: {tally.feasible} trained, {tally.pruned} stopped early, {tally.infeasible} "
                 f"over budget, {tally.failed} failed; {len(feasible)} feasible in the study; "
                 f"{time.perf_counter() - t0:.0f}s")
        return self.study

    def _prepare(self, fresh: bool, evaluator) -> None:
        """Data, target (calibrated), reachability, corner seeds, teacher, executor, early stopping."""
        from hwsearch.search.training._evaluate import train_settings
        from hwsearch.targets import get_target

        spec, study = self.spec, self.study
        t0 = time.perf_counter()
        (self.run_dir / "spec.yaml").write_text(spec.to_yaml())
        self.data = data = load_dataset(spec.dataset, spec.data_seed)
        settings = train_settings(spec, data.input_shape[1])
        self.target = target = get_target(spec.target)
        study.set_user_attr("input_shape", list(data.input_shape))
        study.set_user_attr("num_classes", data.num_classes)
        if target.ensure_calibrated(spec.space, data.input_shape, data.num_classes):
            self.log(f"calibrated {target.name}'s latency model on whole networks of this space (once per space)")
            self._say_check(target)
        corners = check_reachable(spec, data)  # an impossible budget is reported before anything trains
        if isinstance(study.sampler, CostAwareSampler):
            study.sampler.use_prices(lambda cand: _priced(cand, target, data))
        self._seed(corners, fresh)
        teacher = None
        if spec.space.distill:
            from hwsearch.search.training._teacher import teacher_logits

            teacher, meta = teacher_logits(spec, data, self.run_dir, log=self.log)
            study.set_user_attr("teacher", {k: v for k, v in meta.items() if k != "key"})
        setup = WorkerSetup(data, teacher, settings, _threads(spec), **({"evaluator": evaluator} if evaluator else {}))
        self.executor = make_executor(spec, setup, self.log)
        self.halving = _halving(spec, study)
        self.log(f"data and teacher ready in {time.perf_counter() - t0:.1f}s; searching {self.n_total - self.done} "
                 f"trials on {target.name} with {self.executor.slots} worker(s) ({self.executor.name})"
                 + (f"; early stopping at epochs {self.halving.rungs}" if self.halving else ""))

    def _say_check(self, target) -> None:
        """Log how the latency model's self-check on this space went, and what makes the profile doubtful."""
        from hwsearch.targets import describe_check, profile_warnings, space_fingerprint

        data, profile = self.data, target.profile
        if profile is None:
            return
        if check := profile.check_for(space_fingerprint(self.spec.space, data.input_shape, data.num_classes)):
            self.log(describe_check(check))
        for warning in profile_warnings(profile):
            self.log(f"warning: {warning}")

    def _seed(self, corners, fresh: bool) -> None:
        """Queue the spec's own ``search.seeds`` first, then, with ``seed_corners``, anchor the front
        at both ends: the fastest and the smallest candidate of the space, the largest the budget
        admits (:func:`largest_within_budget`) and the deepest (:func:`deepest_within_budget`). A
        study started before a seed existed (a kind of corner, or a line added to ``search.seeds``)
        gets it when continued; a seed already tried is never queued again."""
        spec, study, data = self.spec, self.study, self.data
        seeds = {f"{GIVEN}: {text}": text for text in spec.search.seeds}
        if spec.search.seed_corners:
            if fresh:
                seeds |= {f"cheapest {m}": corners.cheapest_candidate[m] for m in ("latency_ms", "size_kb")}
            for label, find in ((LARGEST, largest_within_budget), (DEEPEST, deepest_within_budget)):
                if (found := find(spec, self.target, data.input_shape, data.num_classes)) is not None:
                    seeds[label] = found[0]
        def candidate(params: dict) -> str | None:  # as the trial builds it (distillation settings rounded)
            try:
                return space(optuna.trial.FixedTrial(params), spec.space).to_string()
            except ValueError:  # a trial that failed before all its parameters were drawn
                return None

        trials = study.get_trials(deepcopy=False)
        had = {TrialRecord.of(t).seeded for t in trials}
        tried = {candidate(t.system_attrs.get("fixed_params", t.params)) for t in trials}  # queued: fixed ones
        for why, text in seeds.items():
            params = params_of(Candidate.from_string(text), spec.space)
            if why not in had and candidate(params) not in tried:  # a candidate is tried once, whoever seeds it
                study.enqueue_trial(params, user_attrs=TrialRecord(seeded=why).attrs())
                tried.add(candidate(params))
                if not fresh:
                    kind = "search.seeds'" if why.startswith(GIVEN) else f"the {why}"
                    self.log(f"queued {kind} candidate, which this study predates: {text}")

    # ------------------------------------------------------------------ the loop

    def _drive(self) -> None:
        """Fill free slots with proposals; hand each outcome to its handler; stop when none runs."""
        slots: list[Running | None] = [None] * self.executor.slots
        while True:
            for i, busy in enumerate(slots):
                if busy is None and (run := self._propose()) is not None:
                    slots[i] = run
                    self._start(i, run)
            if not any(slots):
                return
            for slot, outcome in self.executor.poll():
                run = slots[slot]
                slots[slot] = None
                if isinstance(outcome, WorkerLost):
                    slots[slot] = self._lost(slot, run, outcome)
                elif isinstance(outcome, Rung):
                    slots[slot] = self._rung(slot, run, outcome)
                elif isinstance(outcome, Evaluation):
                    self._complete(run, outcome)
                else:  # the exception the trial raised: recorded with its reason; the search goes on
                    self._fail(run.trial, _reason(outcome))

    def _propose(self) -> Running | None:
        """Ask for trials until one needs training; price and record the others at once."""
        from hwsearch.targets import UnpriceableError

        spec, data = self.spec, self.data
        while self.done < self.n_total:
            trial = self.study.ask()
            self.done += 1
            t_price = time.perf_counter()
            try:
                cand = space(trial, spec.space)
                plan = build_plan(cand, data.input_shape, data.num_classes)
                cost = self.target.price(plan)
            except (ValueError, UnpriceableError) as e:
                self._fail(trial, f"cannot price the candidate: {e}")
                continue
            TrialRecord(candidate=cand.to_string(), cost=cost.to_dict(), params_count=plan.params,
                        latency_ms=cost.latency_ms, size_kb=cost.size_kb,
                        peak_memory_kb=cost.peak_memory_kb).write(trial)
            violations = {name: cost.metric(name) - limit for name, limit in self.limits.items()}
            for name, v in violations.items():
                trial.set_constraint(name, v)
            price_s = time.perf_counter() - t_price
            if any(v > 0 for v in violations.values()):
                over = ", ".join(f"{k} {cost.metric(k):.4g} > {self.limits[k]:.4g}"
                                 for k, v in violations.items() if v > 0)
                TrialRecord(status=Status.INFEASIBLE, timings={"price_s": price_s},
                            infeasible_reason=f"over budget: {over}").write(trial)
                self._finish(trial, [INFEASIBLE_ACCURACY if o == "accuracy" else cost.metric(o)
                                     for o in spec.objectives])
                continue
            return Running(trial, cand, cost, price_s)
        return None

    def _start(self, slot: int, run: Running) -> None:
        s = self.spec.search
        until = self.halving.next_rung(None) if self.halving else None
        self.executor.submit(
            slot, "start", run.candidate.to_string(), trial_seed(s.seed, run.trial.number), s.keep_weights, until
        )

    # ------------------------------------------------------------------ outcomes

    def _finish(self, trial: optuna.Trial, values=None, state=TrialState.COMPLETE) -> None:
        frozen = self.study.tell(trial, values, state=state)
        self.tally.add(frozen)
        self.bar.update(1)
        self.bar.set_postfix(self.tally.postfix())

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        TrialRecord(status=Status.FAILED, failure_reason=reason[-2000:]).write(trial)
        self._finish(trial, state=TrialState.FAIL)

    def _lost(self, slot: int, run: Running, outcome: WorkerLost) -> Running | None:
        """A worker died mid-trial: replace it and retry the trial once, then record it failed."""
        self.executor.replace(slot)
        if run.attempt >= RETRIES:
            self._fail(run.trial, f"{outcome} (after {RETRIES} retry)")
            return None
        self.log(f"trial {run.trial.number}: {outcome}; retrying it on a new worker")
        TrialRecord(retried_after=str(outcome)).write(run.trial)
        run.attempt += 1
        self._start(slot, run)
        return run

    def _rung(self, slot: int, run: Running, outcome: Rung) -> Running | None:
        """A trial reached a rung: it goes on to the next one, or is stopped early."""
        assert self.halving is not None  # only trials started with a rung to reach pause at one
        rungs = {**(TrialRecord.of(run.trial).rungs or {}), str(outcome.epoch): outcome.accuracy}
        TrialRecord(rungs=rungs).write(run.trial)
        if self.halving.record(run.trial.number, outcome.epoch, outcome.accuracy,
                               [run.cost.metric(c) for c in self.costs]):
            self.executor.submit(slot, "advance", self.halving.next_rung(outcome.epoch))
            return run
        TrialRecord(status=Status.PRUNED, accuracy=outcome.accuracy,
                    pruned_reason=f"stopped after {outcome.epoch} dense epochs: other candidates at that epoch "
                                  "were more accurate and at least as cheap").write(run.trial)
        self._finish(run.trial, state=TrialState.PRUNED)
        return None

    def _complete(self, run: Running, ev: Evaluation) -> None:
        trial = run.trial
        weights = None
        if ev.state_dict is not None:
            import torch

            weights_dir = self.run_dir / "weights"
            weights_dir.mkdir(exist_ok=True)
            torch.save(ev.state_dict, weights_dir / f"trial_{trial.number}.pt")
            weights = f"weights/trial_{trial.number}.pt"
        TrialRecord(status=Status.FEASIBLE, accuracy=ev.accuracy, curve=ev.curve,
                    timings={"price_s": run.price_s, **ev.timings}, weights=weights).write(trial)
        self._finish(trial, [ev.accuracy if o == "accuracy" else run.cost.metric(o) for o in self.spec.objectives])
