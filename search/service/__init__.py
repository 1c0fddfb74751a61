"""The search service: a persisted table of jobs (spec + run directory), a supervisor that runs
them as worker processes under a concurrency limit, and submission confined to data roots.

Owns jobs and their states. Sits above the rest of ``hwsearch.search``: it runs searches through
``hwsearch run`` (a worker process) and reads their progress through the outputs; nothing below
imports it.
"""

from __future__ import annotations

from hwsearch.search.service._commands import default_root
from hwsearch.search.service._control import resume_job, stop_job, synced_jobs
from hwsearch.search.service._gate import is_loopback, serve_gate
from hwsearch.search.service._jobs import FINISHED, STATES, Job, JobError, JobStore, State, SubmitError, read_exit
from hwsearch.search.service._local import (
    Supervisor,
    read_config,
    signal_stop,
    start_supervisor,
    supervisor_running,
    write_config,
)
from hwsearch.search.service._progress import JobProgress, job_progress
from hwsearch.search.service._ray import client as ray_client
from hwsearch.search.service._ray import logs as ray_logs
from hwsearch.search.service._ray import submit_to_ray
from hwsearch.search.service._submit import confinement_problems, read_spec, submit

__all__ = ["FINISHED", "STATES", "Job", "JobError", "JobProgress", "JobStore", "State", "SubmitError", "Supervisor",
           "confinement_problems", "default_root", "is_loopback", "job_progress", "ray_client", "ray_logs",
           "read_config", "read_exit", "read_spec", "resume_job", "serve_gate", "signal_stop", "start_supervisor",
           "stop_job", "submit", "submit_to_ray", "supervisor_running", "synced_jobs", "write_config"]
