"""The Ray backend: a job runs through Ray's Job Submission API, on the dashboard of a cluster's
head (``http://HEAD:8265``).

The job's entrypoint is the same worker the local backend starts
(:mod:`hwsearch.search.service._worker`: ``hwsearch run`` on the job's spec and run directory,
then its exit record), run by the cluster's ``python``: hwsearch must be installed on the head
(and its nodes), and the service root (job folders and run directories) must be on a file system
the head shares, so that the app and ``hwsearch jobs`` read the study where the job writes it.

Ray keeps the job's state and output; the job table mirrors them whenever a command, the
supervisor or the app looks (:func:`sync`). Stopping asks Ray to stop the job: the worker takes
Ray's SIGTERM as an interrupt, the search ends as after Ctrl-C and keeps every finished trial,
and ``resume`` submits the job again under a new submission id to continue its run directory.
"""

from __future__ import annotations

import secrets
import shlex
import time
from typing import Any

from hwsearch.search.service._jobs import Job, JobError, JobStore, read_exit
from hwsearch.search.service._local import STOPPED_RC, last_error_line, worker_command

__all__ = ["client", "logs", "stop", "submit_to_ray", "sync"]

PYTHON = "python"  # the cluster's interpreter, as Ray runs entrypoints: in the head's environment


def client(address: str) -> Any:
    """A Job Submission client of the dashboard at ``address``; :class:`JobError` if unreachable.
    With token authentication on (``RAY_AUTH_MODE=token``), Ray's SDK sends the token."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise JobError(f"cannot reach the Ray dashboard at {address} ({str(e).splitlines()[0]}); is 'ray start "
                       "--head' running there, with its dashboard (pip install 'ray[default]')?") from None


def submit_to_ray(store: JobStore, job: Job) -> Job:
    """Hand a queued ray job to its cluster: running, with Ray's submission id recorded. The row
    is claimed first (queued -> running, one transaction), so that two processes never submit
    the same job twice; a submission Ray refuses puts it back in the queue."""
    if job.backend != "ray" or not job.address:
        raise JobError(f"job {job.id} is not a Ray job")
    c = client(job.address)
    attempt = job.attempts + 1
    submission_id = f"hwsearch-{job.id}-{attempt}-{secrets.token_hex(3)}"  # unique across service roots
    claimed = store.update(job.id, expect=("queued",), state="running", submission_id=submission_id,
                           attempts=attempt, started_at=time.time(),
                           message=f"submitted to Ray at {job.address} as {submission_id}")
    claimed.exit_path.unlink(missing_ok=True)
    entrypoint = " ".join(shlex.quote(part) for part in worker_command(claimed, PYTHON))
    try:
        c.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                     runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}},
                     metadata={"hwsearch_job": str(job.id), "name": job.name})
    except Exception as e:  # the SDK raises RuntimeError for HTTP errors, others for the network
        store.update(job.id, expect=("running",), state="queued", attempts=job.attempts,
                     message=f"Ray refused the submission ({type(e).__name__}: {str(e).splitlines()[0]})")
        raise JobError(f"job {job.id}: Ray at {job.address} refused the submission: {e}") from None
    return claimed


def sync(store: JobStore, job: Job) -> Job:
    """The job's row brought up to date with Ray's state of it (a running ray job only)."""
    if job.backend != "ray" or job.state != "running" or not job.submission_id or not job.address:
        return job  # ray is not even imported: a process that only runs local jobs never loads it
    from ray.job_submission import JobStatus

    c = client(job.address)
    info = c.get_job_info(job.submission_id)
    if not info.status.is_terminal():
        return job
    record = read_exit(job)
    rc = int(record["returncode"]) if record else None
    if info.status == JobStatus.SUCCEEDED and rc in (0, None):
        state, message = "succeeded", "finished"
    elif info.status == JobStatus.STOPPED or rc == STOPPED_RC or job.stop_requested:
        state, message = "stopped", "stopped; 'hwsearch resume' continues it"
    else:
        state = "failed"
        message = last_error_line(c.get_job_logs(job.submission_id)) or info.message or f"Ray says {info.status}"
    finished = float(record["finished_at"]) if record else (info.end_time or time.time() * 1000) / 1000
    return store.update(job.id, expect=("running",), state=state, returncode=rc, message=message,
                        finished_at=finished)


def logs(job: Job) -> str:
    """The job's output as Ray keeps it (its current submission's)."""
    if not job.submission_id or not job.address:
        return ""
    text: str = client(job.address).get_job_logs(job.submission_id)
    return text


def stop(job: Job) -> bool:
    """Ask Ray to stop the job's submission; False if it had already ended."""
    if not job.submission_id or not job.address:
        return False
    stopped: bool = client(job.address).stop_job(job.submission_id)
    return stopped
