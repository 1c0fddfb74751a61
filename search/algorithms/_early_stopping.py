"""Early stopping: multi-objective asynchronous successive halving (MO-ASHA) on accuracy.

Latency, size and peak memory are known before a candidate trains; only accuracy needs training,
so only accuracy has a fidelity (dense epochs). Plain ASHA ranks on accuracy alone and would stop
exactly the fast, small candidates that make one end of the front. Here a candidate reaching a
rung is ranked among every candidate that reached that rung by non-dominated sorting on
(accuracy at the rung, its costs), ties broken by crowding distance (Schmucker et al., "Multi-
objective Asynchronous Successive Halving", 2021). It goes on when it is in the top
``1/reduction_factor`` of that order, or when no candidate at the rung is at least as cheap in
every cost and more accurate by ``margin`` or more; otherwise it stops and is recorded as pruned
with the accuracy it had.

The margin is there because an early accuracy is a noisy forecast of the final one: on the
quickstart, a candidate 0.3 points behind a cheaper one after 6 dense epochs ended 11 points
ahead of it once both were pruned and quantized. Rungs are at ``min_epochs * reduction_factor**k``
dense epochs, below the spec's epochs; the first should come after the learning-rate warm-up (at
one epoch of eight most candidates are still near chance, and slow starters are the accurate ones).

The decision is taken when a candidate arrives (asynchronously, never waiting for others): the
first candidate at a rung always goes on, as in ASHA.
"""

from __future__ import annotations

from collections.abc import Sequence

from hwsearch.search.algorithms._pareto import crowding_distances, nondominated_ranks


def rungs_for(epochs: int, min_epochs: int, reduction_factor: int) -> list[int]:
    """The dense epochs at which candidates are compared: ``min_epochs * eta**k < epochs``."""
    out, e = [], min_epochs
    while e < epochs:
        out.append(e)
        e *= reduction_factor
    return out


class ParetoHalving:
    """The rung records of one search and the promotion rule. Holds no trial objects: the driver
    feeds it ``(trial number, epoch, accuracy, costs)`` and rebuilds it from the study on resume.

    ``costs`` are minimised objectives other than accuracy (e.g. latency_ms, size_kb), the same
    ones for every record. Recording a trial twice at a rung (a retried trial) replaces its record.
    """

    def __init__(self, rungs: Sequence[int], reduction_factor: int, margin: float = 0.0) -> None:
        self.rungs = list(rungs)
        self.eta = reduction_factor
        self.margin = margin
        self._records: dict[int, dict[int, tuple[float, ...]]] = {r: {} for r in self.rungs}

    def next_rung(self, epoch: int | None) -> int | None:
        """The first rung after ``epoch`` (None: the first rung); None when no rung is left."""
        later = [r for r in self.rungs if epoch is None or r > epoch]
        return later[0] if later else None

    def record(self, number: int, epoch: int, accuracy: float, costs: Sequence[float]) -> bool:
        """Record a candidate at rung ``epoch``; True when it should go on training."""
        records = self._records[epoch]
        records[number] = (-accuracy, *costs)
        numbers = list(records)
        points = [records[n] for n in numbers]
        mine = records[number]
        if not any(p[0] <= mine[0] - self.margin and all(c <= m for c, m in zip(p[1:], mine[1:])) and p != mine
                   for p in points):
            return True  # nothing at this rung is both more accurate (by the margin) and as cheap
        ranks = nondominated_ranks(points)
        me = numbers.index(number)
        keep = len(numbers) // self.eta
        if keep == 0:
            return False
        order = _ranked(points, ranks)
        return order.index(me) < keep


def _ranked(points: list[tuple[float, ...]], ranks: list[int]) -> list[int]:
    """Indices ordered best first: by front, then by crowding distance within the front."""
    crowd = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(members, crowding_distances([points[i] for i in members])):
            crowd[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i]))
