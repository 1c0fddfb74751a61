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


ANCHOR_BITS = 8  # the largest candidate is looked for at the widest bit width up to this


def largest_within_budget(spec, target, input_shape, num_classes) -> tuple[str, float] | None:
    """The candidate of the space with the most multiply-adds that the budget admits, as priced on
    ``target``, and its multiply-adds; None without a budget or when no candidate fits.

    The search's cheap fidelity cannot rank capacity: after a few epochs bigger networks read no
    better than small ones, so a front found at that fidelity can stop well short of the budget.
    Seeding the study with this candidate anchors the front's other end, and the final stage can
    train it. Multiply-adds stand in for capacity (the classic proxy, and a strong one among
    training-free proxies); the search is a deterministic greedy ascent, like a knapsack's: from the
    space's smallest unpruned architecture, every single change of one choice (stem width, a
    stage's depth, width, kernel, expansion, fused block, squeeze-excite) is priced, and the
    admissible change that adds the most multiply-adds per unit of budget spent is taken, until no
    admissible change adds any. Bits stay at the widest choice up to :data:`ANCHOR_BITS`, pruning at
    0 and the activation at the space's first (ReLU where offered): they change no multiply-add.
    """
    return _ascent(spec, target, input_shape, num_classes, deep=False)


def deepest_within_budget(spec, target, input_shape, num_classes) -> tuple[str, float] | None:
    """The candidate with the most blocks the budget admits, then the most multiply-adds at that
    depth, and its multiply-adds; None without a budget, when no candidate fits, or when the space
    offers one depth per stage.

    The same greedy ascent as :func:`largest_within_budget`, except that while a change adding a
    block fits, the one adding the most blocks per unit of budget is taken first. Depth costs
    latency at equal multiply-adds (a layer more, each with its per-call overhead), so a search
    ranking by expected improvement reaches deep networks last, if ever: in the CIFAR-10 benchmark
    against ResNet-8 all 40 proposals of one run had one block per stage. This seed puts a deep
    network in the study, and with it the accuracy model learns what depth is worth."""
    if all(len(st.depths) == 1 for st in spec.space.stages):
        return None
    return _ascent(spec, target, input_shape, num_classes, deep=True)


def _ascent(spec, target, input_shape, num_classes, deep: bool) -> tuple[str, float] | None:
    import dataclasses

    from hwsearch.spaces import Candidate, build_plan, extremes

    limits = spec.budget.limits()
    if not limits:
        return None
    space_ = spec.space
    w_bits = max((b for b in space_.weight_bits if b <= ANCHOR_BITS), default=min(space_.weight_bits))
    a_bits = max((b for b in space_.activation_bits if b <= ANCHOR_BITS), default=min(space_.activation_bits))
    smallest = extremes(space_)[0]  # the smallest architecture, unpruned, at the anchor's bits
    stages = tuple(dataclasses.replace(s, prune=0.0, w_bits=w_bits, a_bits=a_bits) for s in smallest.stages)
    priced: dict[Candidate, tuple[float, dict[str, float]] | None] = {}

    def price(cand: Candidate) -> tuple[float, dict[str, float]] | None:
        """(multiply-adds, cost per budgeted metric), or None over budget."""
        if cand not in priced:
            plan = build_plan(cand, input_shape, num_classes)
            cost = target.price(plan)
            use = {m: cost.metric(m) for m in limits}
            priced[cand] = (plan.macs, use) if all(use[m] <= v for m, v in limits.items()) else None
        return priced[cand]

    def blocks(cand: Candidate) -> int:
        return sum(st.depth for st in cand.stages)

    def neighbours(cand: Candidate):
        for stem in space_.stem_widths:
            yield dataclasses.replace(cand, stem=stem)
        for i, (st, choices) in enumerate(zip(cand.stages, space_.stages)):
            options = {"depth": choices.depths, "width": choices.widths, "kernel": space_.kernels,
                       "expand": space_.expand_ratios, "fused": space_.fused, "se": space_.se}
            for name, values in options.items():
                for v in values:
                    if v != getattr(st, name):
                        new = dataclasses.replace(st, **{name: v})
                        yield dataclasses.replace(cand, stages=(*cand.stages[:i], new, *cand.stages[i + 1:]))

    current = dataclasses.replace(smallest, stages=stages)
    here = price(current)
    while here is not None:
        step: tuple[tuple[float, float], Candidate, tuple[float, dict[str, float]]] | None = None
        for cand in neighbours(current):
            there = price(cand)
            if there is None:
                continue
            more = blocks(cand) - blocks(current) if deep else 0
            if more < 0 or (more == 0 and there[0] <= here[0]):
                continue  # depth first (when deep), then multiply-adds: never fewer blocks
            spent = max(sum(max(there[1][m] - here[1][m], 0.0) / limits[m] for m in limits), 1e-9)
            gain = (more / spent, (there[0] - here[0]) / spent)
            if step is None or gain > step[0]:
                step = (gain, cand, there)
        if step is None:
            return current.to_string(), float(here[0])
        _, current, here = step
    return None
