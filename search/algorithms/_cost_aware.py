"""The cost-aware sampler: Bayesian optimisation that models only what is unknown.

A candidate's latency, size and peak memory are known before it trains: the target prices it from
its profile in about a millisecond. Only its accuracy costs a training run. The generic samplers
(TPE, NSGA-II, Optuna's GP) learn every objective, costs included, from finished trials, and learn
the budget by proposing candidates over it. This one prices candidates itself before it proposes
one, so it

- never proposes a candidate over budget (a trial spent on nothing);
- models accuracy alone: a Gaussian process on features of the network (multiply-adds,
  parameters, depth, bit widths, distillation temperature and weight);
- proposes the candidate with the largest expected hypervolume improvement (EHVI), exact in the
  known costs and in closed form over the predicted accuracy (a normal distribution).

For each trial it draws a pool of candidates (random ones, and neighbours of the current front:
one or two choices changed), prices them and scores the feasible ones. Before the model has
``n_startup`` trained trials to learn from, it proposes a maximin design instead: the feasible
pool member farthest, in feature space, from every candidate trained or in flight.

Contract:
- every proposal is a candidate of the space (the parameters :func:`hwsearch.spaces.space` asks for), and
  fits the budget unless no pool member does, when the cheapest is proposed (the budget's share of
  the space is then below 1 in ``pool``; ``hwsearch validate`` reports that share);
- proposals depend only on the seed, the trial number and the study's history, so a resumed run
  proposes what an uninterrupted one would have;
- trials with fixed parameters (seeded corners, re-queued candidates) keep them;
- trials in flight (several workers) count as front members at their predicted accuracy (the
  "kriging believer"), so parallel workers are not given the same region;
- used from one thread (the driver's), as every Optuna sampler is.

The runner attaches the prices (:meth:`CostAwareSampler.use_prices`) once the data's input shape
and the target are known; asking before that raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from hwsearch.search.algorithms._pareto import dominates, hypervolume
from hwsearch.search.study._records import Status, TrialRecord
from hwsearch.spaces import space
from hwsearch.spaces._candidate import Candidate
from hwsearch.spaces._config import SpaceSpec
from hwsearch.spaces._plan import NetworkPlan
from hwsearch.targets._cost import network_macs

__all__ = ["CostAwareSampler", "Priced", "expected_hvi", "features"]

FEATURES = ("log_macs", "log_params", "log_blocks", "log_w_bits", "log_a_bits", "kd_alpha", "log_kd_temperature")


@dataclass(frozen=True)
class Priced:
    """A candidate as the sampler sees it: its plan, and its cost per cost objective."""

    plan: NetworkPlan
    costs: dict[str, float]


Prices = Callable[[Candidate], Priced]


def features(plan: NetworkPlan) -> np.ndarray:
    """What the accuracy model sees of a network (see ``FEATURES``): capacity (multiply-adds,
    parameters and depth), precision (the lowest weight and activation bit widths of any stage)
    and distillation.

    Depth is there because a cost the model cannot tell from accuracy is only ever a cost to it:
    without it, two networks of equal multiply-adds and parameters looked equally accurate, the
    deeper one slower (more layers, each with its per-call overhead), so the expected improvement
    always preferred the shallow one. In the CIFAR-10 benchmark against ResNet-8, 40 of 40 proposed
    candidates had one block per stage in a space of up to 3, while ResNet-8's layout in that space,
    seeded by hand, read 2.5 points above all of them at the search's fidelity."""
    cand = plan.candidate
    return np.array([
        math.log(network_macs(plan)), math.log(plan.params), math.log(len(plan.blocks)),
        math.log2(min(s.w_bits for s in cand.stages)), math.log2(min(s.a_bits for s in cand.stages)),
        cand.alpha if cand.distils else 0.0, math.log(cand.temperature) if cand.distils else 0.0,
    ])


class _Draw:
    """An Optuna-trial stand-in for :func:`hwsearch.spaces.space`: returns ``fixed`` values where it has
    valid ones and draws the others with ``rng``; ``params`` holds every value it was asked for."""

    def __init__(self, rng: np.random.Generator, fixed: dict[str, Any] | None = None) -> None:
        self.rng, self.fixed = rng, fixed or {}
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence) -> Any:
        value = self.fixed.get(name, self)
        if value is self or value not in choices:
            value = choices[int(self.rng.integers(len(choices)))]
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        value = self.fixed.get(name)
        if not isinstance(value, float) or not low <= value <= high:
            value = (math.exp(self.rng.uniform(math.log(low), math.log(high))) if log
                     else float(self.rng.uniform(low, high)))
        self.params[name] = value
        return value


def _matern52(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum((((a[:, None, :] - b[None, :, :]) / lengthscales) ** 2).sum(-1), 0.0))
    s = math.sqrt(5.0) * d
    return (1.0 + s + s * s / 3.0) * np.exp(-s)


class _GaussianProcess:
    """Regression of accuracy on features scaled to [0, 1]: constant mean, Matern 5/2 kernel with
    one lengthscale per feature, observation noise; hyperparameters by maximum marginal
    likelihood (L-BFGS-B, a log-normal prior keeping lengthscales near the features' range)."""

    LENGTHSCALE = SIGNAL = (math.log(0.05), math.log(20.0))  # log bounds; features and y are scaled
    NOISE = (math.log(1e-2), math.log(1.0))

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from scipy.optimize import minimize

        self.x = x
        self.mean, self.scale = float(y.mean()), float(max(y.std(), 1e-3))
        self.y = (y - self.mean) / self.scale
        starts = [np.array([0.0] * x.shape[1] + [0.0, math.log(0.1)]),
                  np.array([math.log(0.3)] * x.shape[1] + [0.0, math.log(0.01)])]
        best = min(
            (
                minimize(
                    self._loss, s, method="L-BFGS-B", bounds=[self.LENGTHSCALE] * x.shape[1] + [self.SIGNAL, self.NOISE]
                )
                for s in starts
            ),
            key=lambda r: r.fun,
        )
        self._set(best.x)

    def _set(self, theta: np.ndarray) -> float:
        d = self.x.shape[1]
        self.lengthscales, self.signal, self.noise = np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1])
        k = self.signal * _matern52(self.x, self.x, self.lengthscales) + (self.noise + 1e-8) * np.eye(len(self.x))
        self.chol = np.linalg.cholesky(k)
        self.alpha = np.linalg.solve(self.chol.T, np.linalg.solve(self.chol, self.y))
        return 0.5 * self.y @ self.alpha + np.log(np.diag(self.chol)).sum()

    def _loss(self, theta: np.ndarray) -> float:
        try:
            nll = self._set(theta)
        except np.linalg.LinAlgError:
            return 1e10
        return nll + 0.5 * (theta[:self.x.shape[1]] ** 2).sum()  # log-lengthscale prior N(0, 1)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.signal * _matern52(x, self.x, self.lengthscales)
        mu = k @ self.alpha
        v = np.linalg.solve(self.chol, k.T)
        var = np.maximum(self.signal - (v * v).sum(0), 1e-12)
        return self.mean + self.scale * mu, self.scale * np.sqrt(var)


def _tail_integral(x: float, mu: float, sigma: float) -> float:
    """The integral from ``x`` to infinity of P(N(mu, sigma^2) > t) dt (expected improvement over x)."""
    if sigma <= 0:
        return max(mu - x, 0.0)
    z = (x - mu) / sigma
    return sigma * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + (mu - x) * 0.5 * math.erfc(z / math.sqrt(2))


def expected_hvi(mu: float, sigma: float, costs: Sequence[float], front: Sequence[tuple[float, Sequence[float]]],
                 reference: Sequence[float]) -> float:
    """The expected hypervolume improvement of a candidate whose costs are known and whose
    accuracy is N(mu, sigma^2), over ``front``: (accuracy, costs) pairs. Accuracy is maximised
    from a reference of 0, costs minimised up to ``reference``.

    For an accuracy ``t``, the candidate adds the part of the box between its costs and the
    reference that no front member more accurate than ``t`` dominates; that volume is a step
    function of ``t``, so the expectation is a sum over the front's accuracies, in closed form."""
    if any(c >= r for c, r in zip(costs, reference)):
        return 0.0
    box = math.prod(r - c for c, r in zip(costs, reference))
    ranked = sorted(front, key=lambda p: -p[0])
    clipped: list[tuple[float, ...]] = []
    total, upper = 0.0, math.inf  # accuracies in [level, upper) face the first len(clipped) members
    for acc, member in [*ranked, (0.0, None)]:
        level = max(acc, 0.0)
        # with accuracy the only objective, any more accurate member leaves nothing to add
        free = box if not clipped else box - hypervolume(clipped, reference) if reference else 0.0
        if free > 0 and upper > level:
            above = 0.0 if upper == math.inf else _tail_integral(upper, mu, sigma)
            total += free * (_tail_integral(level, mu, sigma) - above)
        if member is None:
            break
        clipped.append(tuple(max(m, c) for m, c in zip(member, costs)))
        upper = level
    return total


class CostAwareSampler(BaseSampler):
    """See the module's docstring. ``objectives``: the spec's (accuracy first or anywhere);
    ``limits``: the budget per cost metric; ``pool``: candidates drawn and priced per trial."""

    def __init__(self, config: SpaceSpec, objectives: Sequence[str], limits: dict[str, float], seed: int = 0,
                 n_startup: int = 4, pool: int = 512) -> None:
        self.config = config
        self.costs = [o for o in objectives if o != "accuracy"]
        self.limits = dict(limits)
        self.seed = seed
        self.n_startup = n_startup
        self.pool = pool
        self._prices: Prices | None = None
        self._priced: dict[str, Priced] = {}
        self._proposals: dict[int, dict[str, Any]] = {}
        self._random = RandomSampler(seed=seed)

    def use_prices(self, prices: Prices) -> None:
        """Attach the target's prices: ``prices(candidate) -> Priced``."""
        self._prices = prices

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "fixed_params" in trial.system_attrs:
            return  # enqueued: Optuna gives it its fixed parameters
        self._proposals[trial.number] = self.propose(study, trial.number)

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution) -> Any:
        proposal = self._proposals.get(trial.number, {})
        if param_name in proposal:
            value = proposal[param_name]
            if param_distribution._contains(param_distribution.to_internal_repr(value)):
                return value
        # Not in the proposal: a space that asks for more than hwsearch.spaces.space does.
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._proposals.pop(trial.number, None)

    # -- proposing -------------------------------------------------------------------------------

    def _price(self, cand: Candidate, keep: bool = False) -> Priced:
        """The candidate's plan and costs; ``keep``: remember them (tried candidates, priced again
        at every trial)."""
        key = cand.to_string()
        if key in self._priced:
            return self._priced[key]
        if self._prices is None:
            raise RuntimeError("the cost-aware sampler has no prices: the runner attaches the target's "
                               "(CostAwareSampler.use_prices) before the first trial")
        priced = self._prices(cand)
        if keep:
            self._priced[key] = priced
        return priced

    def _fits(self, p: Priced) -> bool:
        return all(p.costs[k] <= v for k, v in self.limits.items())

    def _violation(self, p: Priced) -> float:
        return sum(max(p.costs[k] / v - 1.0, 0.0) for k, v in self.limits.items())

    def _history(self, study: optuna.Study) -> tuple[list, list, set[str]]:
        """The trials trained to the end as (priced, accuracy, params), those in flight as (priced,
        params), and every candidate string tried (to propose none twice)."""
        trained, flying, tried = [], [], set()
        for t in study.get_trials(deepcopy=False):
            record = TrialRecord.of(t)
            key = record.candidate
            if key is None:
                continue
            tried.add(key)
            priced = self._price(Candidate.from_string(key), keep=True)
            if t.state == TrialState.COMPLETE and record.status == Status.FEASIBLE and record.accuracy is not None:
                trained.append((priced, float(record.accuracy), t.params))
            elif t.state == TrialState.RUNNING:
                flying.append((priced, t.params))
        return trained, flying, tried

    def _pool(self, rng: np.random.Generator, parents: list[dict[str, Any]]) -> list[tuple[dict, Priced]]:
        """Random candidates, and neighbours of ``parents`` (one or two of their choices drawn anew)."""
        out = []
        n_near = self.pool // 2 if parents else 0
        for i in range(self.pool):
            fixed = None
            if i < n_near:
                parent = parents[i % len(parents)]
                drop = set(rng.choice(sorted(parent), size=min(len(parent), int(rng.integers(1, 3))), replace=False))
                fixed = {k: v for k, v in parent.items() if k not in drop}
            draw = _Draw(rng, fixed)
            cand = space(draw, self.config)
            out.append((draw.params, self._price(cand)))
        return out

    def propose(self, study: optuna.Study, number: int) -> dict[str, Any]:
        """The parameters of trial ``number``'s candidate."""
        rng = np.random.default_rng([self.seed, number])
        trained, flying, tried = self._history(study)
        front = _front([(acc, self._cost_vector(p)) for p, acc, _ in trained])
        parents = [params for p, acc, params in trained
                   if (acc, self._cost_vector(p)) in front] if len(trained) >= self.n_startup else []
        pool = [(params, p) for params, p in self._pool(rng, parents) if p.plan.candidate.to_string() not in tried]
        feasible = [(params, p) for params, p in pool if self._fits(p)]
        if not feasible:  # nothing fits in this pool: the least over budget
            return min(pool, key=lambda item: self._violation(item[1]))[0] if pool else {}
        seen = [p for p, *_ in trained] + [p for p, _ in flying]
        x_all = np.array([features(p.plan) for p in [*seen, *(p for _, p in feasible)]])
        lo, span = x_all.min(0), np.maximum(x_all.max(0) - x_all.min(0), 1e-9)
        x_seen, x_pool = (x_all[:len(seen)] - lo) / span, (x_all[len(seen):] - lo) / span
        if len(trained) < self.n_startup:  # maximin design: the farthest from everything tried
            if not len(x_seen):
                return feasible[0][0]
            dist = np.sqrt(((x_pool[:, None, :] - x_seen[None, :, :]) ** 2).sum(-1)).min(1)
            return feasible[int(dist.argmax())][0]
        gp = _GaussianProcess(x_seen[:len(trained)], np.array([acc for _, acc, _ in trained]))
        if flying:  # believed at their predicted accuracy
            mu_f, _ = gp.predict(x_seen[len(trained):])
            front = _front(front + [(float(m), self._cost_vector(p)) for m, (p, _) in zip(mu_f, flying)])
        mu, sigma = gp.predict(x_pool)
        reference = self._reference([p for _, p in feasible])
        scale = np.array(reference)
        front_scaled = [(acc, tuple(np.array(c) / scale)) for acc, c in front]
        scores = [expected_hvi(float(m), float(s), tuple(np.array(self._cost_vector(p)) / scale), front_scaled,
                               (1.0,) * len(self.costs)) for m, s, (_, p) in zip(mu, sigma, feasible)]
        return feasible[int(np.argmax(scores))][0]

    def _cost_vector(self, p: Priced) -> tuple[float, ...]:
        return tuple(p.costs[c] for c in self.costs)

    def _reference(self, pool: list[Priced]) -> list[float]:
        """The worst value of each cost objective: its budget, or else the pool's largest."""
        return [self.limits.get(c) or max(p.costs[c] for p in pool) for c in self.costs]


def _front(points: list[tuple[float, tuple[float, ...]]]) -> list[tuple[float, tuple[float, ...]]]:
    """The (accuracy, costs) points no other point dominates (accuracy up, costs down)."""
    minimised = [(-acc, *costs) for acc, costs in points]
    return [p for p, v in zip(points, minimised) if not any(dominates(w, v) for w in minimised)]
