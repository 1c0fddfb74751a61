"""The local backend: searches run as supervised worker processes under a concurrency limit.

A worker (:mod:`hwsearch.search.service._worker`) is a session leader that runs ``hwsearch run``
on the job's spec and run directory and, when it ends, writes its exit record into the job's
folder. The supervisor (:class:`Supervisor`, the ``hwsearch service`` process) starts queued
jobs while fewer than ``concurrency`` run, and settles a running job from its exit record. The
workers do not depend on the supervisor: one killed (even with SIGKILL) and started again
finds its running jobs still running (the worker's process is alive, its command line names
the job) or finished (the exit record), and a job whose worker died without a record is queued
again: it resumes its run directory, finished trials intact. Stopping sends SIGINT to the
worker's process group: the search ends as after Ctrl-C, keeping every finished trial.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hwsearch.search.service._jobs import Job, JobError, JobStore, read_exit

MAX_ATTEMPTS = 3  # a job whose worker died this many times without an exit record has failed
STOPPED_RC = 130  # the exit code of ``hwsearch run`` after an interrupt
CONFIG_FILE, LOCK_FILE, SERVICE_LOG = "service.json", "service.lock", "service.log"
DEFAULT_CONCURRENCY = 1


def read_config(root: Path) -> dict[str, Any]:
    """The service root's settings: ``concurrency``, ``data_roots`` and ``storage`` (the database
    jobs keep their studies in; None: their run directories); defaults where unset."""
    try:
        data: dict[str, Any] = json.loads((root / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("concurrency", DEFAULT_CONCURRENCY)
    data.setdefault("data_roots", [])
    data.setdefault("storage", None)
    return data


def write_config(root: Path, **values: Any) -> dict[str, Any]:
    config = {**read_config(root), **{k: v for k, v in values.items() if v is not None}}
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    tmp.replace(root / CONFIG_FILE)
    return config


def _alive(pid: int | None, job: Job) -> bool:
    """Whether ``pid`` is this job's worker, running (not a zombie, not a reused pid)."""
    if not pid:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if "\nState:\tZ" in status:
        return False
    return os.fsencode(job.job_dir) in cmdline


def worker_command(job: Job, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "hwsearch.search.service._worker", "--job-dir", job.job_dir, "--run-dir", job.run_dir]
    return cmd + (["--trials", str(job.trials)] if job.trials else [])


def signal_stop(job: Job) -> bool:
    """SIGINT to a running local job's worker and its children; False if none is running."""
    if not _alive(job.pid, job):
        return False
    assert job.pid is not None
    try:
        os.killpg(job.pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True


class Supervisor:
    """Starts and settles the local jobs of a :class:`JobStore` (one supervisor per root)."""

    def __init__(self, store: JobStore, concurrency: int | None = None, python: str = sys.executable,
                 log: Callable[[str], None] | None = None) -> None:
        self.store, self.python = store, python
        self.concurrency = concurrency or int(read_config(store.root)["concurrency"])
        self.log = log or (lambda msg: print(msg, flush=True))
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._signalled: set[int] = set()
        self._lock: IO[str] | None = None

    # ------------------------------------------------------------------ one pass

    def step(self) -> None:
        """Settle what finished, forward stop requests, start what the limit allows."""
        for job in self.store.list(["running"]):
            if job.backend == "local":
                self._settle(job)
            else:  # Ray runs it; mirror its state (an unreachable cluster is said, and asked again next pass)
                from hwsearch.search.service._ray import sync

                try:
                    sync(self.store, job)
                except JobError as e:
                    self.log(f"job {job.id} ({job.name}): {e}")
        running = len([j for j in self.store.list(["running"]) if j.backend == "local"])
        for job in self.store.list(["queued"]):
            if job.backend != "local":  # the cluster queues its own jobs: hand it over (again, if it was down)
                self._hand_to_ray(job)
                continue
            if running >= self.concurrency:
                break
            self._start(job)
            running += 1

    def _settle(self, job: Job) -> None:
        child = self._children.get(job.id)
        if child is not None and child.poll() is not None:
            del self._children[job.id]
        record = read_exit(job)
        if record is not None:
            rc = int(record["returncode"])
            if rc == 0:
                state, message = "succeeded", "finished"
            elif rc == STOPPED_RC or job.stop_requested:
                state, message = "stopped", "stopped; 'hwsearch resume' continues it"
            else:
                state, message = "failed", _last_error(job) or f"the search exited with {rc}"
            self.store.update(job.id, expect=("running",), state=state, returncode=rc, message=message,
                              finished_at=float(record.get("finished_at") or time.time()), pid=None)
            self.log(f"job {job.id} ({job.name}) {state}: {message}")
        elif _alive(job.pid, job):
            if job.stop_requested and job.id not in self._signalled:
                signal_stop(job)
                self._signalled.add(job.id)
        elif job.stop_requested:
            self.store.update(job.id, expect=("running",), state="stopped", pid=None, finished_at=time.time(),
                              message="stopped (its worker ended without an exit record)")
        elif job.attempts >= MAX_ATTEMPTS:
            self.store.update(job.id, expect=("running",), state="failed", pid=None, finished_at=time.time(),
                              message=f"its worker died {job.attempts} times without finishing; see its log")
        else:
            self.store.update(job.id, expect=("running",), state="queued", pid=None,
                              message="its worker was lost; queued to resume (finished trials are kept)")
            self.log(f"job {job.id} ({job.name}): worker lost, queued to resume")

    def _hand_to_ray(self, job: Job) -> None:
        from hwsearch.search.service._ray import submit_to_ray

        try:
            submit_to_ray(self.store, job)
            self.log(f"job {job.id} ({job.name}) submitted to Ray at {job.address}")
        except JobError as e:
            self.log(f"job {job.id} ({job.name}): {e}")

    def _start(self, job: Job) -> None:
        job.exit_path.unlink(missing_ok=True)
        with job.log_path.open("ab") as log:
            log.write(f"--- hwsearch service: attempt {job.attempts + 1}, {time.ctime()}\n".encode())
            log.flush()
            child = subprocess.Popen(worker_command(job, self.python), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.store.root)
        self._children[job.id] = child
        self._signalled.discard(job.id)
        try:
            self.store.update(job.id, expect=("queued",), state="running", pid=child.pid,
                              attempts=job.attempts + 1, started_at=time.time(), message="running")
        except Exception:
            os.killpg(child.pid, signal.SIGINT)  # stopped meanwhile: its worker must not run on
            raise
        self.log(f"job {job.id} ({job.name}) started: pid {child.pid}, run directory {job.run_dir}")

    # ------------------------------------------------------------------ the service loop

    def acquire(self) -> bool:
        """Take the root's supervisor lock; False if another supervisor holds it."""
        self._lock = (self.store.root / LOCK_FILE).open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            return False
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        return True

    def serve(self, poll_s: float = 0.5, until_idle: bool = False) -> int:
        """Run passes every ``poll_s`` until SIGTERM or SIGINT (``until_idle``: until nothing is
        queued or running). Workers keep running when the service stops, and are found again
        by the next one."""
        if not self.acquire():
            self.log(f"a supervisor already runs for {self.store.root}")
            return 1
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.log(f"hwsearch service: {self.store.root}, {self.concurrency} job(s) at once, pid {os.getpid()}")
        while not stopping:
            self.step()
            if until_idle and not self.store.list(["queued", "running"]):
                break
            time.sleep(poll_s)
        self.log("hwsearch service: stopped (running jobs keep running; the next service finds them)")
        return 0


def last_error_line(text: str) -> str:
    """The last 'error:' (or ``SomethingError:``) line of a job's output, if any."""
    errors = [line for line in text.splitlines() if line.startswith("error:") or "Error" in line.split(":")[0]]
    return errors[-1].strip() if errors else ""


def _last_error(job: Job) -> str:
    try:
        return last_error_line(job.log_path.read_text(errors="replace"))
    except OSError:
        return ""


def supervisor_running(root: Path) -> bool:
    """Whether a supervisor holds the root's lock."""
    path = root / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def start_supervisor(root: Path, python: str = sys.executable) -> bool:
    """Start ``hwsearch service`` for ``root`` in the background unless one runs; True if started."""
    if supervisor_running(root):
        return False
    with (root / SERVICE_LOG).open("ab") as log:
        subprocess.Popen([python, "-m", "hwsearch.search.cli", "service", "--root", str(root)], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=root)
    return True
