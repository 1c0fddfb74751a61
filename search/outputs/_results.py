"""Read-only access to a run: the API that ``hwsearch pareto``, export and the app use.

It never writes to the study.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hwsearch.search.algorithms._pareto import dominates
from hwsearch.search.algorithms._pareto import hypervolume as _hypervolume
from hwsearch.search.study._final import FinalRecord, final_records
from hwsearch.search.study._records import Status, TrialRecord
from hwsearch.search.study._study import JOURNAL, is_feasible, load_study, run_storage, storage_for
from hwsearch.targets._cost import Cost


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
    final_accuracy: float | None = None  # after ``hwsearch train`` (the final fidelity), where it ran

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def value(self, objective: str) -> float:
        return getattr(self, objective)


def _minimised(row: Row, objectives: list[str]) -> tuple[float, ...]:
    return tuple(-row.value(o) if o == "accuracy" else row.value(o) for o in objectives)


def non_dominated(rows: list[Row], objectives: list[str]) -> list[Row]:
    """The rows no other row dominates (accuracy maximised, costs minimised)."""
    if not rows:
        return []
    vals = np.array([_minimised(r, objectives) for r in rows], dtype=float)
    # one row against all at a time: O(n^2) comparisons in numpy, O(n) memory
    return [r for r, v in zip(rows, vals) if not ((vals <= v).all(axis=1) & (vals < v).any(axis=1)).any()]


def normalized_hypervolume(rows: list[Row], objectives: list[str], reference: dict[str, float]) -> float:
    """The share of the box between ``reference`` and the ideal point (accuracy 1, every cost 0)
    that ``rows`` dominate: 0 when nothing beats the reference, 1 for a perfect, free model.
    ``reference`` gives a worst value per cost objective (the budget is the natural one);
    accuracy's reference is 0."""
    missing = [o for o in objectives if o != "accuracy" and o not in reference]
    if missing:
        raise ValueError(f"no reference value for {', '.join(missing)}: give a budget or a reference")
    scale = {o: 1.0 if o == "accuracy" else reference[o] for o in objectives}
    rows = non_dominated(rows, objectives)  # the dominated add nothing, and cost time
    points = [tuple(v / scale[o] for v, o in zip(_minimised(r, objectives), objectives)) for r in rows]
    ref = tuple(0.0 if o == "accuracy" else 1.0 for o in objectives)
    return _hypervolume(points, ref)


def storage_stamp(run_dir: str | Path, storage: str | None = None) -> tuple[int, int] | None:
    """When the run's study last changed, to key caches on: the modification time (ns) and size
    of its journal file, or of an SQLite database (``storage``, else the one the run's spec
    names). None where there is no file to look at: a database server, or a run with no study yet."""
    storage = run_storage(Path(run_dir), storage)[0]
    if storage:
        if not storage.startswith("sqlite:///"):
            return None
        path = Path(storage.removeprefix("sqlite:///"))
    else:
        path = Path(run_dir) / JOURNAL
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def study_names(run_dir: str | Path, storage: str | None = None) -> list[str]:
    """The names of the studies in a run's storage (the storage URL, its journal, or the database
    its spec names)."""
    import optuna

    storage = run_storage(Path(run_dir), storage)[0]
    return optuna.get_all_study_names(storage_for(Path(run_dir), storage))


@dataclass(frozen=True)
class TrialDetail:
    """Everything the search recorded about one trial."""

    row: Row
    cost: Cost | None  # as priced on the run's target during the search, with its per-layer breakdown
    curve: tuple[dict, ...]  # per epoch: phase (dense | finetune), epoch, loss, val_accuracy
    rungs: dict[int, float]  # early stopping: the accuracy at each rung it reached
    timings: dict[str, float]  # seconds: price_s, train_s, prune_s, finetune_s
    params_count: int | None
    weights: Path | None  # the trained weights, when the run kept them
    seeded: str | None  # why the trial was queued rather than sampled (a corner of the space)


@dataclass(frozen=True)
class Repricing:
    """The trained trials of a run priced on another target, without retraining."""

    target: str
    measured: bool  # False: the target's latencies are estimates, not measurements
    rows: list[Row]  # state ``infeasible`` where a row is over the run's budget on this target
    unpriceable: dict[int, str] = field(default_factory=dict)  # trial number -> why the target cannot price it


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
        r = TrialRecord.of(t)
        state = str(r.status) if r.status else t.state.name.lower()
        if r.status == Status.FEASIBLE:
            state = "complete"
        return Row(t.number, state, r.candidate, r.accuracy, r.latency_ms, r.size_kb, r.peak_memory_kb, r.reason)

    def rows(self) -> list[Row]:
        return self._with_final([self.row(t) for t in self.study.get_trials(deepcopy=False)])

    def pareto(self) -> list[Row]:
        """The feasible Pareto-optimal trials by the search's accuracy, best first."""
        front = [t for t in self.study.best_trials if is_feasible(t)]
        rows = sorted((self.row(t) for t in front), key=lambda r: (-(r.accuracy or 0), r.latency_ms or 0))
        return self._with_final(rows)

    @property
    def finals(self) -> dict[int, FinalRecord]:
        """The final training stage's records (``hwsearch train``), by trial number; read afresh
        on each call, since a final training may be writing them."""
        return final_records(self.run_dir)

    def final_pareto(self) -> list[Row]:
        """The front by final accuracy: the finally-trained trials that no other finally-trained
        trial dominates (final accuracy against the same costs), best final accuracy first. Empty
        when no final training ran."""
        finals = self.finals
        rows = [r for r in self.rows() if r.number in finals and r.state == "complete"]
        objectives = self.objectives or ["accuracy", "latency_ms", "size_kb"]
        by_final = {r.number: r for r in non_dominated([replace(r, accuracy=r.final_accuracy) for r in rows],
                                                       objectives)}
        front = [r for r in rows if r.number in by_final]
        return sorted(front, key=lambda r: (-(r.final_accuracy or 0), r.latency_ms or 0))

    def _with_final(self, rows: list[Row]) -> list[Row]:
        finals = self.finals
        return [replace(r, final_accuracy=finals[r.number].accuracy) if r.number in finals else r for r in rows]

    def hypervolume(self, reference: dict[str, float] | None = None) -> float:
        """The feasible trials' hypervolume (see :func:`normalized_hypervolume`), against the run's budget
        unless ``reference`` is given."""
        rows = [self.row(t) for t in self.study.get_trials(deepcopy=False) if is_feasible(t)]
        return normalized_hypervolume(rows, self.objectives, reference or self.budget)

    def input(self) -> tuple[tuple[int, int, int], int]:
        """The input shape (C, H, W) and class count the run's candidates were built for."""
        ua = self.study.user_attrs
        if "input_shape" in ua:
            return tuple(ua["input_shape"]), int(ua["num_classes"])
        # Runs from before these were recorded: read the dataset the spec names.
        from hwsearch.search.spec import load_spec
        from hwsearch.search.training._datasets import load_dataset

        spec = load_spec(self.run_dir / "spec.yaml")
        data = load_dataset(spec.dataset, spec.data_seed)
        return data.input_shape, data.num_classes

    @property
    def target(self) -> str | None:
        """The target the run priced its candidates on."""
        return self.study.user_attrs.get("target")

    @property
    def target_estimated(self) -> bool | None:
        """Whether the run's own target is an estimate (its profile's ``measured: false``, named or
        given by path); None when the target cannot be read here (a file moved or deleted)."""
        from hwsearch.targets import is_estimate

        if self.target is None:
            return None
        try:
            return is_estimate(self.target)
        except (KeyError, OSError, ValueError):
            return None

    def detail(self, number: int) -> TrialDetail:
        """What the search recorded about trial ``number`` (KeyError if the run has no such trial)."""
        trials = self.study.get_trials(deepcopy=False)
        t = trials[number] if 0 <= number < len(trials) and trials[number].number == number else None
        if t is None:
            raise KeyError(f"the run has no trial {number}")
        r = TrialRecord.of(t)
        return TrialDetail(
            row=self.row(t), cost=Cost.from_dict(r.cost) if r.cost is not None else None,
            curve=tuple(r.curve or ()), rungs={int(k): v for k, v in (r.rungs or {}).items()},
            timings=dict(r.timings or {}), params_count=r.params_count,
            weights=self.run_dir / r.weights if r.weights is not None else None, seeded=r.seeded)

    def plan(self, candidate: str):
        """The candidate laid out for the run's input (a :class:`spaces.NetworkPlan`): every
        layer's shapes, strides, pruned widths and bit widths."""
        from hwsearch.spaces import Candidate, build_plan

        shape, classes = self.input()
        return build_plan(Candidate.from_string(candidate), shape, classes)

    def cost_on(self, candidate: str, target: str) -> Cost:
        """The candidate priced on ``target`` (a name or profile path), with the per-layer breakdown."""
        from hwsearch.targets import get_target

        return get_target(target).price(self.plan(candidate))

    def reprice(self, target: str) -> Repricing:
        """Every trained trial, its latency, size and peak memory priced on another target
        (a registered name or a profile path), without retraining. A row's ``state`` says whether
        it fits the run's budget there: ``complete`` or ``infeasible``. A candidate the target
        cannot price is listed in ``unpriceable`` with the reason, never given a made-up cost."""
        from hwsearch.spaces import Candidate, build_plan
        from hwsearch.targets import UnpriceableError, get_target

        tgt = get_target(target)
        shape, classes = self.input()
        limits, out, unpriceable = self.budget, [], {}
        for r in self.rows():
            if r.accuracy is None or r.candidate is None or r.state != "complete":  # pruned: partial accuracy
                continue
            try:
                cost = tgt.price(build_plan(Candidate.from_string(r.candidate), shape, classes))
            except UnpriceableError as e:
                unpriceable[r.number] = str(e)
                continue
            over = [m for m, v in limits.items() if cost.metric(m) > v]
            out.append(replace(r, latency_ms=cost.latency_ms, size_kb=cost.size_kb,
                               peak_memory_kb=cost.peak_memory_kb,
                               state="infeasible" if over else r.state,
                               reason=f"over budget on {tgt.name}: {', '.join(over)}" if over else None))
        return Repricing(tgt.name, tgt.measured, out, unpriceable)

    def repriced(self, target: str) -> list[Row]:
        """The rows of :meth:`reprice`; raises :class:`targets.UnpriceableError` if the target
        cannot price one of the candidates."""
        from hwsearch.targets import UnpriceableError

        result = self.reprice(target)
        if result.unpriceable:
            raise UnpriceableError(next(iter(result.unpriceable.values())))
        return result.rows

    def hypervolume_history(self, reference: dict[str, float] | None = None,
                            points: int = 60) -> list[tuple[int, float]]:
        """How the front grew: (trial number, hypervolume of the feasible trials up to it) at up
        to ``points`` trials spread over the run, its last trial included. ``reference`` as in
        :meth:`hypervolume` (default: the budget). The hypervolume is computed on the front so
        far, and again only where the front changed."""
        trials = self.study.get_trials(deepcopy=False)
        if not trials:
            return []
        objectives = self.objectives
        reference = reference or self.budget
        n = len(trials)
        m = min(points, n)  # with fewer trials than points, every trial is a mark
        marks = {round(i * (n - 1) / max(m - 1, 1)) for i in range(m)}
        front: list[tuple[Row, tuple[float, ...]]] = []
        history, hv, changed = [], 0.0, False
        for i, t in enumerate(trials):
            if is_feasible(t):
                row = self.row(t)
                v = _minimised(row, objectives)
                if not any(dominates(w, v) or w == v for _, w in front):
                    front = [(r, w) for r, w in front if not dominates(v, w)] + [(row, v)]
                    changed = True
            if i in marks:
                if changed:
                    hv, changed = normalized_hypervolume([r for r, _ in front], objectives, reference), False
                history.append((t.number, hv))
        return history

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
