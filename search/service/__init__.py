"""The search service: a persisted table of jobs (spec + run directory), a supervisor that runs
them as worker processes under a concurrency limit, and submission confined to data roots.

Owns jobs and their states. Sits above the rest of ``hwsearch.search``: it runs searches through
``hwsearch run`` (a worker process) and reads their progress through the outputs; nothing below
imports it.
"""

from __future__ import annotations

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
from hwsearch.search.service._submit import confinement_problems, read_spec, submit

__all__ = ["FINISHED", "STATES", "Job", "JobError", "JobProgress", "JobStore", "State", "SubmitError", "Supervisor",
           "confinement_problems", "job_progress", "read_config", "read_exit", "read_spec", "signal_stop",
           "start_supervisor", "submit", "supervisor_running", "write_config"]
