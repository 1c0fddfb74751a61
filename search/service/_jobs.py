"""The job table: searches submitted to the service, persisted in one SQLite file.

A job is a spec (validated and written into the job's folder, its paths resolved) plus a run
directory under the service's runs root, in one of the states ``queued``, ``running``,
``succeeded``, ``failed`` and ``stopped``. Every process that reads or changes jobs (the
supervisor, the ``hwsearch`` commands, the app) opens the same file; each change is one SQLite
transaction, so a reader never sees half of one and a killed writer loses none.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hwsearch.search.errors import SearchError

State = Literal["queued", "running", "succeeded", "failed", "stopped"]
STATES: tuple[State, ...] = ("queued", "running", "succeeded", "failed", "stopped")
FINISHED: tuple[State, ...] = ("succeeded", "failed", "stopped")
DB_FILE = "jobs.sqlite"


class JobError(SearchError):
    """A job that does not exist, or a change its state does not allow; the message says which."""


class SubmitError(JobError, ValueError):
    """A submitted spec refused before anything was queued; ``problems`` has one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Job:
    """One row of the table (times in seconds since the epoch; ``None`` where not reached)."""

    id: int
    name: str
    state: State
    trials: int | None  # the total asked for; None: the spec's
    job_dir: str  # spec.yaml, log.txt and the worker's exit record
    run_dir: str
    backend: str  # local | ray
    address: str | None  # the Ray dashboard's URL, for the ray backend
    submission_id: str | None  # Ray's job id, for the ray backend
    pid: int | None  # the worker's process (local backend), a session leader
    attempts: int  # times the worker was started
    stop_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    returncode: int | None
    message: str  # why it failed or stopped, or what the supervisor did last

    @property
    def spec_path(self) -> Path:
        return Path(self.job_dir) / "spec.yaml"

    @property
    def log_path(self) -> Path:
        return Path(self.job_dir) / "log.txt"

    @property
    def exit_path(self) -> Path:
        return Path(self.job_dir) / "exit.json"

    def when(self, field: str) -> str:
        value = getattr(self, field)
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


_COLUMNS = [f.name for f in fields(Job)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    trials INTEGER,
    job_dir TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    backend TEXT NOT NULL,
    address TEXT,
    submission_id TEXT,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    returncode INTEGER,
    message TEXT NOT NULL DEFAULT ''
)
"""


class JobStore:
    """The job table of a service root: ``ROOT/jobs.sqlite``, job folders under ``ROOT/jobs/``
    and run directories under ``ROOT/runs/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.jobs_dir, self.runs_dir = self.root / "jobs", self.root / "runs"
        for d in (self.jobs_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / DB_FILE, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: committed on success, rolled back on an exception
                yield db
        finally:
            db.close()

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        values = dict(row)
        values["stop_requested"] = bool(values["stop_requested"])
        return Job(**values)

    def add(self, name: str, spec_yaml: str | Callable[[int], str], trials: int | None, backend: str = "local",
            address: str | None = None) -> Job:
        """Queue a job whose spec is already validated (see :func:`~hwsearch.search.service.submit`);
        ``spec_yaml`` may be a function of the new job's id (written in the same transaction)."""
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO jobs (name, state, trials, job_dir, run_dir, backend, address, created_at) "
                "VALUES (?, 'queued', ?, '', '', ?, ?, ?)", (name, trials, backend, address, time.time()))
            job_id = int(cur.lastrowid or 0)
            job_dir, run_dir = self.jobs_dir / str(job_id), self.runs_dir / f"{name}-{job_id}"
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / "spec.yaml").write_text(spec_yaml(job_id) if callable(spec_yaml) else spec_yaml)
            db.execute("UPDATE jobs SET job_dir = ?, run_dir = ? WHERE id = ?", (str(job_dir), str(run_dir), job_id))
        return self.get(job_id)

    def get(self, job_id: int | str) -> Job:
        try:
            key = int(job_id)
        except ValueError:
            raise JobError(f"no job {job_id!r}: job ids are numbers (see 'hwsearch jobs')") from None
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (key,)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id} in {self.root} (see 'hwsearch jobs')")
        return self._job(row)

    def list(self, states: Sequence[State] | None = None) -> list[Job]:
        """Jobs in submission order, of these states only if given."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        jobs = [self._job(r) for r in rows]
        return [j for j in jobs if states is None or j.state in states]

    def update(self, job_id: int, expect: Sequence[State] | None = None, **values: Any) -> Job:
        """Change a job's fields; with ``expect``, only while it is in one of those states (else
        :class:`JobError`): the check and the change are one transaction."""
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        with self._db() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobError(f"no job {job_id} in {self.root}")
            if expect is not None and row["state"] not in expect:
                raise JobError(f"job {job_id} is {row['state']}, not {' or '.join(expect)}")
            if values:
                sets = ", ".join(f"{k} = ?" for k in values)
                db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))  # noqa: S608
        return self.get(job_id)

    def request_stop(self, job_id: int | str) -> Job:
        """Mark a job to stop: a queued one stops at once, a running one when its worker has
        finished the trials in flight (the supervisor or the worker records it)."""
        job = self.get(job_id)
        if job.state == "queued":
            return self.update(job.id, expect=("queued",), state="stopped", stop_requested=True,
                               finished_at=time.time(), message="stopped before it started")
        return self.update(job.id, expect=("running",), stop_requested=True, message="stop requested")

    def requeue(self, job_id: int | str) -> Job:
        """Queue a stopped or failed job again: it resumes its run directory (finished trials kept)."""
        job = self.get(job_id)
        return self.update(job.id, expect=("stopped", "failed"), state="queued", stop_requested=False, pid=None,
                           returncode=None, finished_at=None, message="resumed")


def read_exit(job: Job) -> dict[str, Any] | None:
    """The worker's exit record (``returncode``, ``finished_at``), if it wrote one."""
    try:
        data: dict[str, Any] = json.loads(job.exit_path.read_text())
        return data
    except (OSError, ValueError):
        return None
