"""What hwsearch records on a trial, typed: one :class:`TrialRecord` written and read everywhere.

A trial's record lives in its Optuna user attributes (JSON values), so that any Optuna tool can
read a run. Those keys are written here and read here only; the driver, the results API, the
cost-aware sampler, export, the app and the benchmarks go through :class:`TrialRecord`.

The record is versioned (``record_version``). A record without one was written before records
were versioned and reads as version 1, which has the same keys; a newer version than this code
knows is refused rather than misread.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from hwsearch.search.errors import SearchError
from hwsearch.targets._cost import COST_METRICS

__all__ = ["COST_METRICS", "DEEPEST", "GIVEN", "LARGEST", "RECORD_VERSION", "Status", "TrialRecord"]

RECORD_VERSION = 1
# why a trial was queued rather than sampled (TrialRecord.seeded), besides "cheapest <metric>"
LARGEST = "largest within budget"  # the candidate with the most multiply-adds the budget admits
DEEPEST = "deepest within budget"  # the one with the most blocks
GIVEN = "given in search.seeds"  # a prefix: the spec's own seed, the candidate string after ": "


class Status(StrEnum):
    """What became of a trial (stored as its string value)."""

    FEASIBLE = "feasible"  # trained and scored
    INFEASIBLE = "infeasible"  # priced over budget; never trained
    PRUNED = "pruned"  # stopped early at a rung
    FAILED = "failed"  # could not be priced, raised, or lost its worker twice


@dataclass(frozen=True)
class TrialRecord:
    """A trial's record; ``None`` is "not recorded". Written in parts as the trial goes on
    (priced, then trained or not): :meth:`write` sets only the fields given."""

    status: Status | None = None
    candidate: str | None = None  # the Candidate's string form
    cost: dict[str, Any] | None = None  # Cost.to_dict(): the priced cost with its breakdown
    params_count: int | None = None
    latency_ms: float | None = None
    size_kb: float | None = None
    peak_memory_kb: float | None = None
    accuracy: float | None = None
    curve: list[dict[str, Any]] | None = None  # per epoch: phase, epoch, loss, val_accuracy
    timings: dict[str, float] | None = None  # seconds: price_s, train_s, prune_s, ...
    weights: str | None = None  # trained weights, relative to the run directory
    rungs: dict[str, float] | None = None  # early stopping: dense epoch -> accuracy there
    failure_reason: str | None = None
    infeasible_reason: str | None = None
    pruned_reason: str | None = None
    retried_after: str | None = None  # the worker loss a retry followed
    seeded: str | None = None  # why the search queued it itself: LARGEST, DEEPEST, CHEAPEST... or GIVEN: <seed>
    requeued: bool | None = None  # cut by an interruption (not counted); its candidate, if drawn, queued again
    requeued_from: int | None = None  # the interrupted trial this one runs again

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """The record of an Optuna trial (frozen or running); keys it does not know are ignored."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        version = attrs.get("record_version", 1)
        if version > RECORD_VERSION:
            raise SearchError(f"a trial record of version {version}: written by a newer hwsearch "
                              f"(this one reads up to {RECORD_VERSION}); upgrade hwsearch to read this run")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in attrs.items() if k in known}
        if values.get("status") is not None:
            values["status"] = Status(values["status"])
        return cls(**values)

    def attrs(self) -> dict[str, Any]:
        """The user attributes this record sets (only the fields given), with its version."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if "status" in out:
            out["status"] = str(out["status"])
        return {**out, "record_version": RECORD_VERSION}

    def write(self, trial: Any) -> None:
        """Set this record's fields on a running Optuna trial (others stay as they were)."""
        for key, value in self.attrs().items():
            trial.set_user_attr(key, value)

    def metric(self, name: str) -> float:
        """A priced cost metric (one of :data:`COST_METRICS`); KeyError where it was not priced."""
        if name not in COST_METRICS:
            raise KeyError(f"{name!r} is not a cost metric; they are {', '.join(COST_METRICS)}")
        value = getattr(self, name)
        if value is None:
            raise KeyError(f"the trial has no {name}: it was never priced")
        return float(value)

    @property
    def reason(self) -> str | None:
        """Why the trial did not train to the end: its failure, budget or early-stopping reason."""
        return self.failure_reason or self.infeasible_reason or self.pruned_reason
