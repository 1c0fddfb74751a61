"""Read-only access to a run: the API that ``hwsearch pareto``, export and the app use.

It never writes to the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search.study import is_feasible, load_study


@dataclass(frozen=True)
class Row:
    """One trial as the user sees it."""

    number: int
    state: str  # complete | infeasible | failed | running | ...
    candidate: str | None
    accuracy: float | None
    latency_ms: float | None
    size_kb: float | None
    peak_memory_kb: float | None
    reason: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class RunResults:
    """A finished or running search, read from its study (journal file or storage URL)."""

    def __init__(self, run_dir: str | Path, storage: str | None = None, name: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.study = load_study(self.run_dir, storage, name)

    @property
    def objectives(self) -> list[str]:
        return list(self.study.user_attrs.get("objectives", []))

    @property
    def budget(self) -> dict[str, float]:
        return dict(self.study.user_attrs.get("budget", {}))

    @staticmethod
    def row(t) -> Row:
        ua = t.user_attrs
        state = ua.get("status") or t.state.name.lower()
        if state == "feasible":
            state = "complete"
        return Row(t.number, state, ua.get("candidate"), ua.get("accuracy"), ua.get("latency_ms"),
                   ua.get("size_kb"), ua.get("peak_memory_kb"),
                   ua.get("failure_reason") or ua.get("infeasible_reason"))

    def rows(self) -> list[Row]:
        return [self.row(t) for t in self.study.get_trials(deepcopy=False)]

    def pareto(self) -> list[Row]:
        """The feasible Pareto-optimal trials, by accuracy (best first)."""
        front = [t for t in self.study.best_trials if is_feasible(t)]
        return sorted((self.row(t) for t in front), key=lambda r: (-(r.accuracy or 0), r.latency_ms or 0))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows():
            out[r.state] = out.get(r.state, 0) + 1
        return out
