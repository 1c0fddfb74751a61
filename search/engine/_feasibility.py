"""What a budget leaves of a space, found by pricing alone (no training).

The cheapest size is exact: the smallest architecture with the fewest bits. The cheapest latency
is the fastest of the smallest architecture at every bit-width choice, and of the sampled
candidates, as priced on the target; latency is not monotone in bit width, so each is priced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hwsearch.search.spec import SpecError
from hwsearch.targets import COST_METRICS, TargetError


@dataclass
class Survey:
    samples: int
    feasible: int
    cheapest: dict[str, float]  # metric -> lowest reachable value
    cheapest_candidate: dict[str, str]
    limits: dict[str, float]
    unreachable: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = []
        if self.samples:
            lines.append(f"  feasible share: {self.feasible}/{self.samples} sampled candidates "
                         f"({self.feasible / self.samples:.0%}) fit the budget")
        for metric, value in self.cheapest.items():
            limit = self.limits.get(metric)
            lines.append(f"  cheapest {metric}: {value:.4g}" + (f" (budget {limit:.4g})" if limit else "")
                         + f"  [{self.cheapest_candidate[metric]}]")
        return "\n".join(lines)


class NotMeasuredYet(TargetError):
    """Pricing the spec's space would first measure it on this host, and the caller said not to."""


def survey(spec, samples: int = 100, data=None, measure: bool = True) -> Survey:
    """Price the space's extremes and ``samples`` random candidates against the budget. With
    ``measure=False``, a target that would first measure this space on this host (``local-cpu``
    on a space it has not profiled: minutes) raises :class:`NotMeasuredYet` instead."""
    import optuna

    from hwsearch.search.training._datasets import load_dataset
    from hwsearch.spaces import build_plan, extremes, space
    from hwsearch.targets import get_target

    data = data or load_dataset(spec.dataset, spec.data_seed)
    target = get_target(spec.target)
    if not measure and target.needs_measuring(spec.space, data.input_shape, data.num_classes):
        raise NotMeasuredYet(
            f"{spec.target} has not measured this space on {'x'.join(map(str, data.input_shape))} inputs "
            "yet: the job measures it when it starts (a few minutes), or "
            f"run 'hwsearch profile --target {spec.target} --spec SPEC' first; the budget is checked then")
    target.ensure_calibrated(spec.space, data.input_shape, data.num_classes)
    limits = spec.budget.limits()
    metrics = COST_METRICS
    best: dict[str, tuple[float, str]] = {}

    def consider(cand) -> bool:
        cost = target.price(build_plan(cand, data.input_shape, data.num_classes))
        for m in metrics:
            if m not in best or cost.metric(m) < best[m][0]:
                best[m] = (cost.metric(m), cand.to_string())
        return all(cost.metric(m) <= v for m, v in limits.items())

    for cand in extremes(spec.space):
        consider(cand)
    feasible = 0
    if samples:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
        for _ in range(samples):
            feasible += consider(space(study.ask(), spec.space))
    target.flush()
    report = Survey(samples, feasible, {m: v for m, (v, _) in best.items()},
                    {m: c for m, (_, c) in best.items()}, limits)
    for m, limit in limits.items():
        if best[m][0] > limit:
            report.unreachable.append(
                f"budget.{m}: {limit:g} cannot be met: the cheapest candidate of the space reaches "
                f"{best[m][0]:.4g} on {spec.target} (latency {best['latency_ms'][0]:.4g} ms, size "
                f"{best['size_kb'][0]:.4g} KiB at best); raise the budget or allow smaller choices in 'space'")
    return report


def check_reachable(spec, data) -> Survey:
    """Raise :class:`SpecError` when no candidate of the space can meet the budget; else return
    the survey of the space's corners."""
    report = survey(spec, samples=0, data=data)
    if report.unreachable:
        raise SpecError(report.unreachable)
    return report
