"""Stopping and resuming a job, whatever runs it: the one path the commands and the app take."""

from __future__ import annotations

from pathlib import Path

from hwsearch.search.service._jobs import Job, JobError, JobStore
from hwsearch.search.service._local import signal_stop, start_supervisor

__all__ = ["resume_job", "stop_job", "synced_jobs"]


def stop_job(store: JobStore, job_id: int | str) -> Job:
    """Stop a job: a queued one at once; a running one ends its trials in flight and keeps the
    finished ones (SIGINT to a local worker, Ray's stop for a Ray job)."""
    job = store.request_stop(job_id)
    if job.state == "running":
        if job.backend == "ray":
            from hwsearch.search.service._ray import stop

            stop(job)
        else:
            signal_stop(job)
    return job


def resume_job(store: JobStore, job_id: int | str) -> tuple[Job, bool]:
    """Queue a stopped or failed job again, to continue its run directory; a Ray job is submitted
    to its cluster again, a local one waits for the supervisor (started if none runs). Returns
    the job and whether a supervisor was started."""
    job = store.requeue(job_id)
    if job.backend == "ray":
        from hwsearch.search.service._ray import submit_to_ray

        return submit_to_ray(store, job), False
    return job, start_supervisor(Path(store.root))


def synced_jobs(store: JobStore, warn=None) -> list[Job]:
    """Every job, Ray's brought up to date with their cluster (one that cannot be reached is left
    as it was, and ``warn`` is told why)."""
    from hwsearch.search.service._ray import sync

    out = []
    for job in store.list():
        try:
            out.append(sync(store, job))
        except JobError as e:
            if warn:
                warn(f"job {job.id}: {e}")
            out.append(job)
    return out
