"""The final training stage (``hwsearch train``): the chosen trials of a finished search trained
again at the final fidelity, on the search's executors (this process, a process pool, Ray actors).

Each candidate trains from scratch: all of the data (:class:`~hwsearch.search.study.Fidelity`),
the full schedule, distillation from a teacher trained at the final fidelity (or the run's ONNX
teacher), then pruning and quantization-aware fine-tuning as in the search, with the trial's own
seed. Resumable at two grains: a finished candidate (``final/trial_N/record.json``) is not trained
again, and an unfinished one resumes from its last finished epoch (a checkpoint per epoch under
``final/checkpoints``). The search's study is never written.

On a multi-node Ray cluster the checkpoints are written where each actor runs: resuming per epoch
there needs the run directory on a shared file system (finished candidates always come back to
the driver).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hwsearch.search.engine._executors import Rung, WorkerLost, WorkerSetup
from hwsearch.search.engine._runner import RETRIES, _reason, _threads, make_executor
from hwsearch.search.errors import SearchError
from hwsearch.search.study._final import FINAL_DIR, Fidelity, FinalRecord, final_records, final_spec, write_final_record
from hwsearch.search.study._records import Status, TrialRecord
from hwsearch.search.study._study import RunLocked, load_study, run_lock, trial_seed
from hwsearch.search.training._datasets import load_dataset
from hwsearch.search.training._evaluate import Checkpoint, Evaluation, train_settings
from hwsearch.spaces._candidate import Candidate

__all__ = ["FinalTraining", "train_final"]


@dataclass
class _Job:
    number: int
    candidate: str
    search_accuracy: float | None
    seed: int
    epoch: int = 0  # dense epochs done
    attempt: int = 0
    started: float = 0.0


@dataclass
class FinalTraining:
    """What one ``hwsearch train`` did: records of the trials it trained or found done, and the
    trials that failed, with why."""

    records: dict[int, FinalRecord]
    skipped: list[int]  # finished before, at the same fidelity
    failed: dict[int, str]


def _chosen(run_dir: Path, spec, numbers: list[int]) -> list[_Job]:
    study = load_study(run_dir, spec.storage, spec.name)
    trials = study.get_trials(deepcopy=False)
    jobs = []
    for n in numbers:
        if not 0 <= n < len(trials):
            raise SearchError(f"run {run_dir} has no trial {n} (it has trials 0..{len(trials) - 1})")
        record = TrialRecord.of(trials[n])
        if record.status != Status.FEASIBLE or record.candidate is None:
            why = f": {record.reason}" if record.reason else ""
            raise SearchError(f"trial {n} is {record.status or trials[n].state.name.lower()}{why}; only trained, "
                              "feasible trials go to final training ('hwsearch pareto RUN' lists the front)")
        jobs.append(_Job(n, record.candidate, record.accuracy, trial_seed(spec.search.seed, n)))
    return jobs


def train_final(run_dir: str | Path, numbers: list[int], fidelity: Fidelity, *, workers: int | None = None,
                backend: str | None = None, address: str | None = None, progress: bool = True,
                log=print) -> FinalTraining:
    """Train trials ``numbers`` of the run in ``run_dir`` at ``fidelity`` (see the module's
    docstring). A trial finished before at another fidelity is refused, naming its folder."""
    from hwsearch.search.spec import load_spec

    run_dir = Path(run_dir)
    if not (run_dir / "spec.yaml").exists():
        raise SearchError(f"{run_dir} is not a run directory (no spec.yaml): give the folder 'hwsearch run' wrote")
    spec = load_spec(run_dir / "spec.yaml")
    jobs = _chosen(run_dir, spec, numbers)
    done = final_records(run_dir)
    for job in jobs:
        old = done.get(job.number)
        if old is not None and old.fidelity != fidelity:
            raise SearchError(f"trial {job.number} was trained at another final fidelity ({old.fidelity.describe()}, "
                              f"{run_dir / FINAL_DIR / f'trial_{job.number}'}); delete that folder to train it at "
                              f"{fidelity.describe()}")
    skipped = [j.number for j in jobs if j.number in done]
    todo = [j for j in jobs if j.number not in done]
    records = {n: done[n] for n in skipped}
    if not todo:
        return FinalTraining(records, skipped, {})

    fspec = final_spec(spec, fidelity)
    s = fspec.search
    if workers:
        s.workers = workers
    if backend:
        s.backend = backend
    if address:
        s.backend, s.address = "ray", address
    try:
        with run_lock(run_dir / FINAL_DIR):
            failed = _Stage(run_dir, fspec, fidelity, log).run(todo, records, progress)
    except RunLocked:
        raise RunLocked(f"{run_dir}: a final training is already running here; wait for it") from None
    return FinalTraining(records, skipped, failed)


class _Stage:
    """Data, teacher and executor at the final fidelity, and the loop over the candidates."""

    def __init__(self, run_dir: Path, fspec, fidelity: Fidelity, log) -> None:
        self.run_dir, self.spec, self.fidelity, self.log = run_dir, fspec, fidelity, log

    def run(self, todo: list[_Job], records: dict[int, FinalRecord], progress: bool) -> dict[int, str]:
        from tqdm import tqdm

        spec, folder = self.spec, self.run_dir / FINAL_DIR
        t0 = time.perf_counter()
        self.data = data = load_dataset(spec.dataset, spec.data_seed)
        self.teacher, self.teacher_meta = None, None
        if any(Candidate.from_string(j.candidate).distils for j in todo):
            from hwsearch.search.training._teacher import teacher_logits

            self.teacher, meta = teacher_logits(spec, data, folder, log=self.log)
            self.teacher_meta = {k: v for k, v in meta.items() if k != "key"}
        self.settings = train_settings(spec, data.input_shape[1], checkpoint_dir=str(folder / "checkpoints"))
        for job in todo:
            at = self._checkpoint(job).progress()
            job.epoch = spec.search.epochs if at and at["phase"] == "finetune" else (at or {}).get("epoch", 0)
        executor = make_executor(spec, WorkerSetup(data, self.teacher, self.settings, _threads(spec)), self.log)
        self.log(f"final training of {len(todo)} candidate(s) at {self.fidelity.describe()} "
                 f"({len(data.y_train)} training, {len(data.y_val)} validation images; data and teacher ready in "
                 f"{time.perf_counter() - t0:.1f}s) with {executor.slots} worker(s) ({executor.name})")
        epochs = spec.search.epochs
        bar = tqdm(total=len(todo) * epochs, initial=sum(j.epoch for j in todo), desc="final training",
                   unit="epoch", disable=not progress, dynamic_ncols=True)
        failed: dict[int, str] = {}
        queue = deque(todo)
        slots: list[_Job | None] = [None] * executor.slots

        def until(job: _Job) -> int | None:
            return job.epoch + 1 if job.epoch < epochs else None

        try:
            while True:
                for i, busy in enumerate(slots):
                    if busy is None and queue:
                        job = slots[i] = queue.popleft()
                        job.started = time.perf_counter()
                        executor.submit(i, "start", job.candidate, job.seed, True, until(job))
                if not any(slots):
                    break
                for slot, outcome in executor.poll():
                    job = slots[slot]
                    assert job is not None
                    if isinstance(outcome, Rung):
                        bar.update(outcome.epoch - job.epoch)
                        job.epoch = outcome.epoch
                        executor.submit(slot, "advance", until(job))
                        continue
                    slots[slot] = None
                    if isinstance(outcome, Evaluation):
                        records[job.number] = self._finish(job, outcome)
                        bar.update(epochs - job.epoch)
                    elif isinstance(outcome, WorkerLost) and job.attempt < RETRIES:
                        executor.replace(slot)
                        job.attempt += 1
                        queue.appendleft(job)  # resumes from its last checkpoint
                    else:
                        if isinstance(outcome, WorkerLost):
                            executor.replace(slot)
                        failed[job.number] = _reason(outcome)
                        self.log(f"trial {job.number}: final training failed: {failed[job.number]}")
        finally:
            bar.close()
            executor.close()
        return failed

    def _checkpoint(self, job: _Job) -> Checkpoint:
        return Checkpoint.of(Candidate.from_string(job.candidate), self.data, self.settings, job.seed)

    def _finish(self, job: _Job, ev: Evaluation) -> FinalRecord:
        import torch

        from hwsearch.search.training._evaluate import resolve_device
        from hwsearch.targets import host_name

        folder = self.run_dir / FINAL_DIR / f"trial_{job.number}"
        folder.mkdir(parents=True, exist_ok=True)
        assert ev.state_dict is not None
        weights = folder / "weights.pt"
        tmp = weights.with_name("weights.pt.tmp")
        torch.save(ev.state_dict, tmp)
        tmp.replace(weights)
        device = resolve_device(self.settings.device)
        train_s = ev.timings.get("train_s", 0.0)
        record = FinalRecord(
            trial=job.number, candidate=job.candidate, fidelity=self.fidelity, accuracy=ev.accuracy,
            search_accuracy=job.search_accuracy, train_images=len(self.data.y_train),
            val_images=len(self.data.y_val), weights=str(weights.relative_to(self.run_dir)),
            images_per_s=len(self.data.y_train) * self.spec.search.epochs / train_s if train_s else 0.0,
            device=device, host=host_name(),
            gpu=torch.cuda.get_device_name(0) if device == "cuda" else None,
            curve=ev.curve, timings=ev.timings, teacher=self.teacher_meta if Candidate.from_string(
                job.candidate).distils else None,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
        write_final_record(self.run_dir, record)
        self._checkpoint(job).remove()
        search = f"{job.search_accuracy:.2%}" if job.search_accuracy is not None else "-"
        self.log(f"trial {job.number}: final accuracy {ev.accuracy:.2%} (search {search}) in "
                 f"{time.perf_counter() - job.started:.0f}s")
        return record
