"""Read-only access to a run: the API that ``hwsearch pareto``, export and the app use.

It never writes to the study.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from search.pareto import dominates
from search.pareto import hypervolume as _hypervolume
from search.study import is_feasible, load_study


@dataclass(frozen=True)
class Row:
    """One trial as the user sees it."""

    number: int
    state: str  # complete | infeasible | pruned (stopped early) | failed | running | ...
    candidate: str | None
    accuracy: float | None
    latency_ms: float | None
    size_kb: float | None
    peak_memory_kb: float | None
    reason: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def value(self, objective: str) -> float:
        return getattr(self, objective)


def _minimised(row: Row, objectives: list[str]) -> tuple[float, ...]:
    return tuple(-row.value(o) if o == "accuracy" else row.value(o) for o in objectives)


def non_dominated(rows: list[Row], objectives: list[str]) -> list[Row]:
    """The rows no other row dominates (accuracy maximised, costs minimised)."""
    vals = [_minimised(r, objectives) for r in rows]
    return [r for r, v in zip(rows, vals) if not any(dominates(w, v) for w in vals)]


def hypervolume(rows: list[Row], objectives: list[str], reference: dict[str, float]) -> float:
    """The share of the box between ``reference`` and the ideal point (accuracy 1, every cost 0)
    that ``rows`` dominate: 0 when nothing beats the reference, 1 for a perfect, free model.
    ``reference`` gives a worst value per cost objective (the budget is the natural one);
    accuracy's reference is 0."""
    missing = [o for o in objectives if o != "accuracy" and o not in reference]
    if missing:
        raise ValueError(f"no reference value for {', '.join(missing)}: give a budget or a reference")
    scale = {o: 1.0 if o == "accuracy" else reference[o] for o in objectives}
    points = [tuple(v / scale[o] for v, o in zip(_minimised(r, objectives), objectives)) for r in rows]
    ref = tuple(0.0 if o == "accuracy" else 1.0 for o in objectives)
    return _hypervolume(points, ref)


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
                   ua.get("failure_reason") or ua.get("infeasible_reason") or ua.get("pruned_reason"))

    def rows(self) -> list[Row]:
        return [self.row(t) for t in self.study.get_trials(deepcopy=False)]

    def pareto(self) -> list[Row]:
        """The feasible Pareto-optimal trials, by accuracy (best first)."""
        front = [t for t in self.study.best_trials if is_feasible(t)]
        return sorted((self.row(t) for t in front), key=lambda r: (-(r.accuracy or 0), r.latency_ms or 0))

    def hypervolume(self, reference: dict[str, float] | None = None) -> float:
        """The feasible trials' hypervolume (see :func:`hypervolume`), against the run's budget
        unless ``reference`` is given."""
        rows = [self.row(t) for t in self.study.get_trials(deepcopy=False) if is_feasible(t)]
        return hypervolume(rows, self.objectives, reference or self.budget)

    def input(self) -> tuple[tuple[int, int, int], int]:
        """The input shape (C, H, W) and class count the run's candidates were built for."""
        ua = self.study.user_attrs
        if "input_shape" in ua:
            return tuple(ua["input_shape"]), int(ua["num_classes"])
        # Runs from before these were recorded: read the dataset the spec names.
        from search.datasets import load_dataset
        from search.spec import load_spec

        spec = load_spec(self.run_dir / "spec.yaml")
        data = load_dataset(spec.dataset, spec.search.seed)
        return data.input_shape, data.num_classes

    def repriced(self, target: str) -> list[Row]:
        """Every trained trial, its latency, size and peak memory priced on another target
        (a registered name or a profile path), without retraining. ``state`` says whether it
        fits the run's budget there: ``complete`` or ``infeasible``."""
        from spaces import Candidate, build_plan
        from targets import get_target

        tgt = get_target(target)
        shape, classes = self.input()
        limits, out = self.budget, []
        for r in self.rows():
            if r.accuracy is None or r.candidate is None or r.state != "complete":  # pruned: partial accuracy
                continue
            cost = tgt.price(build_plan(Candidate.from_string(r.candidate), shape, classes))
            over = [m for m, v in limits.items() if cost.metric(m) > v]
            out.append(replace(r, latency_ms=cost.latency_ms, size_kb=cost.size_kb,
                               peak_memory_kb=cost.peak_memory_kb,
                               state="infeasible" if over else r.state,
                               reason=f"over budget on {tgt.name}: {', '.join(over)}" if over else None))
        return out

    def pareto_on(self, target: str) -> list[Row]:
        """The Pareto-optimal trained candidates when priced on ``target``, by accuracy (best
        first), whether or not they fit the budget there (see each row's ``state``)."""
        front = non_dominated(self.repriced(target), self.objectives or ["accuracy", "latency_ms", "size_kb"])
        return sorted(front, key=lambda r: (-(r.accuracy or 0), r.latency_ms or 0))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows():
            out[r.state] = out.get(r.state, 0) + 1
        return out
