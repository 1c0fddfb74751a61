"""Pareto arithmetic and the early-stopping rule (no training)."""

import itertools
import random

import pytest

from hwsearch.search.algorithms._early_stopping import ParetoHalving, rungs_for
from hwsearch.search.algorithms._pareto import crowding_distances, dominates, hypervolume, nondominated_ranks
from hwsearch.search.outputs._results import Row
from hwsearch.search.outputs._results import normalized_hypervolume as run_hypervolume


def brute_force_hypervolume(points, reference, steps=40):
    """The dominated share of a grid over the reference box: slow, obviously right."""
    axes = [[r * (i + 0.5) / steps for i in range(steps)] for r in reference]
    inside = sum(any(all(p[k] <= c[k] for k in range(len(c))) for p in points) for c in itertools.product(*axes))
    volume = 1.0
    for r in reference:
        volume *= r
    return volume * inside / steps ** len(reference)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_hypervolume_matches_a_brute_force_count(dims):
    rng = random.Random(dims)
    points = [tuple(rng.random() for _ in range(dims)) for _ in range(12)]
    exact = hypervolume(points, (1.0,) * dims)
    assert exact == pytest.approx(brute_force_hypervolume(points, (1.0,) * dims), abs=0.03)


def test_hypervolume_of_known_fronts():
    assert hypervolume([(0.5, 0.5)], (1, 1)) == pytest.approx(0.25)
    assert hypervolume([(0.0, 0.5), (0.5, 0.0)], (1, 1)) == pytest.approx(0.75)
    assert hypervolume([(0.2, 0.2), (0.5, 0.5)], (1, 1)) == pytest.approx(0.64)  # a dominated point adds nothing
    assert hypervolume([(1.5, 0.0)], (1, 1)) == 0.0  # outside the reference box


def test_ranks_and_crowding():
    pts = [(0, 3), (1, 1), (3, 0), (2, 2), (3, 3)]
    assert nondominated_ranks(pts) == [0, 0, 0, 1, 2]
    assert dominates((1, 1), (2, 2)) and not dominates((1, 1), (1, 1)) and not dominates((0, 3), (3, 0))
    crowd = crowding_distances(pts[:3])
    assert crowd[0] == crowd[2] == float("inf") and 0 < crowd[1] < float("inf")


def test_run_hypervolume_is_against_the_budget():
    row = Row(0, "complete", "c", accuracy=0.9, latency_ms=0.05, size_kb=20, peak_memory_kb=1, reason=None)
    hv = run_hypervolume([row], ["accuracy", "latency_ms", "size_kb"], {"latency_ms": 0.1, "size_kb": 40})
    assert hv == pytest.approx(0.9 * 0.5 * 0.5)
    with pytest.raises(ValueError, match="size_kb"):
        run_hypervolume([row], ["accuracy", "size_kb"], {})


def test_rungs():
    assert rungs_for(8, 1, 3) == [1, 3]
    assert rungs_for(9, 1, 3) == [1, 3]
    assert rungs_for(10, 1, 3) == [1, 3, 9]
    assert rungs_for(2, 2, 3) == []


def test_a_candidate_stops_only_when_dominated_at_its_rung_and_outside_the_quota():
    h = ParetoHalving([1, 3], reduction_factor=2)
    assert h.record(0, 1, 0.80, [1.0])  # first at the rung: nothing dominates it
    assert h.record(1, 1, 0.60, [0.5])  # worse but cheaper: not dominated, goes on
    assert not h.record(2, 1, 0.50, [2.0])  # less accurate and dearer than trial 0: stopped (3 // 2 = 1 kept)
    assert h.record(3, 1, 0.90, [0.4])  # dominates everyone
    assert h.next_rung(None) == 1 and h.next_rung(1) == 3 and h.next_rung(3) is None
    # a retried trial replaces its own record rather than competing with itself
    assert h.record(2, 1, 0.95, [2.0]) and len(h._records[1]) == 4


def test_the_quota_keeps_the_best_ranked_dominated_candidates():
    h = ParetoHalving([1], reduction_factor=2)
    for n, (acc, cost) in enumerate([(0.9, 1.0), (0.8, 2.0), (0.7, 3.0), (0.6, 4.0)]):
        h.record(n, 1, acc, [cost])
    # trial 4 is dominated (by 0), but among 5 records 2 go on: 0 (front 0), then 1 (front 1)
    assert not h.record(4, 1, 0.75, [3.5])
    assert h.record(1, 1, 0.8, [2.0])
