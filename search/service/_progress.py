"""How far a job has got: its study's trials, read from its run directory (read only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwsearch.search.service._jobs import Job


@dataclass(frozen=True)
class JobProgress:
    """Trials of a job's study so far; ``best_accuracy`` among the feasible ones."""

    done: int  # trials that count toward the budget (not those cut by a stop: they run again)
    feasible: int
    failed: int
    best_accuracy: float | None


def job_progress(job: Job) -> JobProgress:
    """Read the job's study (nothing yet before its first trial: all zeros)."""
    from hwsearch.search.outputs import RunResults
    from hwsearch.search.study import counts_toward_budget

    try:
        results = RunResults(Path(job.run_dir))
    except (FileNotFoundError, ValueError):
        return JobProgress(0, 0, 0, None)
    trials = [t for t in results.study.get_trials(deepcopy=False) if counts_toward_budget(t)]
    rows = [results.row(t) for t in trials]
    feasible = [r for r in rows if r.state == "complete"]
    best = max((r.accuracy for r in feasible if r.accuracy is not None), default=None)
    return JobProgress(len(rows), len(feasible), sum(r.state == "failed" for r in rows), best)
