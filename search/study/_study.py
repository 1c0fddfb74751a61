"""The Optuna study of a run: storage, objectives as directions, budgets as constraints.

The study is the single record of a search. Locally it is an append-only journal file in the run
directory; a spec may name an RDB URL instead. Only the driver writes it, and it holds the run
directory's lock (:func:`run_lock`) while it does, so a second driver on the same run is refused
rather than interleaved. Readers (``hwsearch pareto``, the app) never write and need no lock.

Every reader and the driver open the journal through :func:`storage_for`, which reads it strictly
(Optuna's own reader silently skips an unparsable last line, and a writer that goes on after a
record torn by a crash glues its next record onto the fragment, after which the file cannot be read
at all). A journal is one JSON record per line, so damage shows as a line that is not one:

- an incomplete last line (no newline) is the record a crash cut off while it was being written;
  nothing relied on it. Readers leave it out and warn (:class:`TornRecordWarning`: it may also be
  a record a running search is writing at that instant); the driver, which alone writes under the
  run lock, cuts it off the file before it appends, and warns with the bytes it dropped;
- a complete line that is not a journal record, anywhere, is damage a crash cannot explain:
  :class:`CorruptJournal`, for readers and the driver alike, and nothing is written.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

from hwsearch.search.errors import SearchError
from hwsearch.search.study._contract import (
    BEFORE_THE_FIELD,
    CONTRACT_ATTR,
    check_contract,
    contract_of,
    spelled_out,
)
from hwsearch.search.study._records import TrialRecord

JOURNAL = "study.journal"
INFEASIBLE_ACCURACY = 0.0  # told for a candidate over budget: it was never trained


LOCK = "run.lock"


class RunLocked(SearchError, RuntimeError):
    """Another process is running the search in this run directory."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's exclusive lock (an ``flock``, released by the kernel if the holder
    dies, so a killed run never leaves a stale lock)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise RunLocked(f"{run_dir}: a search is already running here (pid {holder}); wait for it, "
                            "or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class CorruptJournal(SearchError, RuntimeError):
    """The run's journal holds a complete line that is not a journal record: the file was damaged
    (edited, or corrupted on disk), which a crash mid-write cannot explain. Nothing after the
    damage can be trusted, so the study is not read, and nothing is written to it."""


class TornRecordWarning(UserWarning):
    """The run's journal ends in an incomplete record, cut off by a crash while it was written."""


# Journal operations after which the file is fsynced: a finished trial or a study attribute.
# Parameters and attributes in between are flushed to the OS (a killed driver keeps them) but not
# forced to the disk one by one; the next fsync covers them.
_DURABLE_OPS = {JournalOperation.CREATE_STUDY, JournalOperation.SET_STUDY_USER_ATTR,
                JournalOperation.SET_STUDY_SYSTEM_ATTR, JournalOperation.SET_TRIAL_STATE_VALUES}
_OPS = {int(op) for op in JournalOperation}  # the format is Optuna's (a private enum of its journal)


def _record(line: bytes) -> dict:
    """The journal record on ``line`` (its newline included); ValueError says why it is not one."""
    try:
        log = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(log, dict) or log.get("op_code") not in _OPS or not isinstance(log.get("worker_id"), str):
        raise ValueError(f"JSON, but not a journal record: {line[:80]!r}")
    return log


class _Journal(JournalFileBackend):
    """The run's journal file, read strictly (see the module's docstring); appends as Optuna's
    backend does, under its lock file.

    It keeps where the last read stopped, so a long-lived reader (the app) reads only what was
    appended since."""

    def __init__(self, path: Path, lock_obj=None) -> None:
        super().__init__(str(path), lock_obj=lock_obj)
        self._resume = (0, 0)  # (record number, byte offset) where the next unread record starts
        self._torn_at: int | None = None  # the offset of the incomplete last line last warned about

    def read_logs(self, log_number_from: int):
        number, offset = self._resume if self._resume[0] <= log_number_from else (0, 0)
        with open(self._file_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                raise CorruptJournal(f"{self._file_path}: the file shrank to {size} bytes while open (it had "
                                     f"{offset} bytes of records): it was cut or replaced under this reader")
            f.seek(offset)
            while offset < size:
                line = f.readline(size - offset)  # what is appended meanwhile is read next time
                if not line.endswith(b"\n"):
                    self._incomplete(offset, line, size)
                    return
                try:
                    log = _record(line)
                except ValueError as e:
                    after = size - offset - len(line)
                    raise CorruptJournal(
                        f"{self._file_path}: line {number + 1} (bytes {offset}-{offset + len(line)}, {after} bytes "
                        f"after it) is not a journal record: {e}. A crash while writing can only cut off the last "
                        "line, so the file was damaged afterwards (edited, or corrupted on disk) and nothing from "
                        f"this line on can be trusted. Restore it from a copy, or keep the {number} records before "
                        f"the damage: head -c {offset} {self._file_path} > repaired && mv repaired "
                        f"{self._file_path}") from None
                offset += len(line)
                number += 1
                self._resume = (number, offset)
                if number > log_number_from:
                    yield log

    def _incomplete(self, offset: int, line: bytes, size: int) -> None:
        """The file ends in ``line``, a record without its newline: being written, or torn."""
        if self._torn_at != offset:
            self._torn_at = offset
            warnings.warn(TornRecordWarning(
                f"{self._file_path}: the last {len(line)} bytes (from byte {offset}) are an incomplete record, "
                "left out: a running search is writing it, or one was killed while writing it (the next "
                "'hwsearch run' of this run drops it)"), stacklevel=2)


class _NoFileLock:
    """The journal's per-append lock, unneeded under :func:`run_lock`: one writer per run."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class _RunJournal(_Journal):
    """The run's journal, written by its one driver: no lock file per append, and an fsync only
    when a trial finishes or the study changes (about 1 ms per trial instead of 9).

    Under :func:`run_lock` no one else appends, so an incomplete last line is a record torn by a
    crash: it is cut off before anything is appended after it (else the next record would be glued
    onto the fragment), with a warning naming the bytes dropped."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, lock_obj=_NoFileLock())

    def _incomplete(self, offset: int, line: bytes, size: int) -> None:
        with open(self._file_path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
        warnings.warn(TornRecordWarning(
            f"{self._file_path}: dropped its last {len(line)} bytes (bytes {offset}-{size}): a record cut off by a "
            f"crash while it was being written (nothing relied on it): {line[:60]!r}"), stacklevel=2)

    def append_logs(self, logs: list[dict]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        with open(self._file_path, "ab") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            if any(log.get("op_code") in _DURABLE_OPS for log in logs):
                os.fsync(f.fileno())


def storage_for(run_dir: Path, url: str | None = None, writer: bool = False):
    """The study storage: the spec's URL, or the journal file in ``run_dir``, read strictly (a
    damaged journal raises :class:`CorruptJournal`; a torn last record warns). ``writer``: the
    driver's, under :func:`run_lock`; it drops a torn last record before it appends. A reader of
    a database holds no connection once it is done (no pool: the app and ``hwsearch jobs`` open
    studies often, and a server's connections are few)."""
    if url:
        if writer:
            return url
        from sqlalchemy.pool import NullPool

        return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / JOURNAL
    return JournalStorage(_RunJournal(path) if writer else _Journal(path))


class RunMismatch(SearchError, ValueError):
    """The run directory holds a study the spec cannot continue (other objectives)."""


def open_study(spec, run_dir: Path, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create the run's study, or load it when it exists (re-running continues it), proposing
    with ``sampler`` (the driver's: :func:`hwsearch.search.algorithms.make_sampler`; Optuna's
    default where only the record is wanted). The caller holds :func:`run_lock`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage_for(run_dir, spec.storage, writer=True), study_name=spec.name,
        directions=spec.directions, sampler=sampler,
        load_if_exists=True)
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise RunMismatch(f"the study {spec.name!r} in {run_dir} was created with other objectives; "
                         "use another name or run directory")
    recorded = study.user_attrs.get(CONTRACT_ATTR) or _legacy_contract(study, run_dir)
    if recorded is not None:
        check_contract(recorded, spec, str(run_dir))  # before anything in the run is written
    study.set_user_attr(CONTRACT_ATTR, contract_of(spec))
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", list(spec.objectives))
        study.set_user_attr("budget", spec.budget.limits())
        study.set_user_attr("target", spec.target)
    return study


def _legacy_contract(study: optuna.Study, run_dir: Path) -> dict | None:
    """The contract of a study created before contracts were stored: its run's spec.yaml, when it
    holds trials and that file still reads as a spec (else nothing to check against)."""
    from hwsearch.search.spec import SpecError, load_spec

    path = run_dir / "spec.yaml"
    if not study.get_trials(deepcopy=False) or not path.is_file():
        return None
    try:
        contract = contract_of(load_spec(path))
        written = spelled_out(path)
    except SpecError:
        return None
    # a field the file does not hold was filled with today's default: the trials had the value
    # from before the field (BEFORE_THE_FIELD), which the check supplies when the field is absent
    return {k: v for k, v in contract.items() if k not in BEFORE_THE_FIELD or k in written}


def run_storage(run_dir: Path, storage: str | None = None, name: str | None = None) -> tuple[str | None, str | None]:
    """Where a run's study is: the storage URL and study name given, else, for a run with no
    journal, those of its ``spec.yaml`` when it names a database (``storage:``, e.g. a service job
    on a shared PostgreSQL server); a URL of None is the journal in ``run_dir``."""
    from hwsearch.search.spec import SpecError, load_spec

    path = run_dir / "spec.yaml"
    if storage is not None or (run_dir / JOURNAL).exists() or not path.is_file():
        return storage, name
    try:
        spec = load_spec(path)
    except SpecError:
        return storage, name
    return (spec.storage, name or spec.name) if spec.storage else (storage, name)


def load_study(run_dir: Path, storage: str | None = None, name: str | None = None) -> optuna.Study:
    """Open an existing run's study for reading (a damaged journal raises :class:`CorruptJournal`):
    the one in ``storage`` if given, else the run's journal, else the database its spec names."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name = run_storage(run_dir, storage, name)
    store = storage_for(run_dir, storage) if storage or (run_dir / JOURNAL).exists() else None
    if store is None:
        raise FileNotFoundError(f"{run_dir}: no study here (expected {JOURNAL})")
    names = optuna.get_all_study_names(store)
    if not names:
        raise FileNotFoundError(f"{run_dir}: the storage holds no study yet")
    if name is None:
        if len(names) > 1:
            raise ValueError(f"{run_dir}: several studies ({', '.join(names)}); name one")
        name = names[0]
    return optuna.load_study(study_name=name, storage=store)


def trial_seed(seed: int, number: int) -> int:
    """The training seed of trial ``number`` of a run seeded with ``seed`` (export retrains with it)."""
    return seed * 100_003 + number


def is_feasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished trials count toward the spec's trial budget, except those cut by an interruption
    (their candidates are queued again)."""
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return False
    return not (trial.state == TrialState.FAIL and TrialRecord.of(trial).requeued)


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a killed driver as failed, and queue their parameters again.

    Completed trials are never touched, and trial numbers are never reused: the re-queued
    candidates get new numbers.
    """
    storage = study._storage  # the public Study API has no way to end another process's trial
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # A kill can land between a trial's creation and its first suggestion: it has no candidate
        # to queue again, and the sampler draws a fresh one in its place.
        when = "mid-trial" if t.params else "before the trial drew its candidate"
        cut = TrialRecord(failure_reason=f"interrupted: the search was killed {when}", requeued=True)
        for key, value in cut.attrs().items():
            storage.set_trial_user_attr(t._trial_id, key, value)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs=TrialRecord(requeued_from=t.number).attrs(), skip_if_exists=False)
        recovered.append(t.number)
    return recovered
