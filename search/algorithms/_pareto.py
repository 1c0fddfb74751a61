"""Pareto arithmetic on points to be minimised: dominance, non-dominated sorting, crowding
distance and the hypervolume.

Callers turn their objectives into minimisation first (accuracy becomes ``-accuracy``). Points are
tuples of floats of one length; nothing here knows about trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Each point's front number: 0 for the non-dominated, 1 for those only the first front
    dominates, and so on (NSGA-II's fast non-dominated sort, O(n^2) in the number of points)."""
    n = len(points)
    beaten_by = [0] * n
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif dominates(points[j], points[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if beaten_by[i] == 0]
    rank = 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = rank
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    nxt.append(j)
        front, rank = nxt, rank + 1
    return ranks


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II's crowding distance within one front: infinite at the extremes of any objective,
    otherwise the normalised sum of the gaps to each neighbour. Larger is more isolated."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        lo, hi = points[order[0]][k], points[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            dist[i] += (points[b][k] - points[a][k]) / (hi - lo)
    return dist


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (exact, by slicing along the
    first objective; fine for the few objectives and hundreds of points a search has). Points not
    strictly better than the reference in every objective add nothing."""
    pts = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference))]
    if not pts:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in pts)
    pts.sort(key=lambda p: p[0])
    if len(reference) == 2:  # a sweep along the first objective: O(n log n) rather than n 1-D slices
        volume, best = 0.0, reference[1]
        for i, (x, y) in enumerate(pts):
            best = min(best, y)
            upper = pts[i + 1][0] if i + 1 < len(pts) else reference[0]
            volume += (upper - x) * (reference[1] - best)
        return volume
    volume = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else reference[0]
        if upper > p[0]:
            # between p[0] and the next point's first coordinate, the points so far dominate the slice
            volume += (upper - p[0]) * hypervolume([q[1:] for q in pts[:i + 1]], reference[1:])
    return volume
