"""The define-by-run search space: ``space(trial, config) -> Candidate``.

A parameter is asked for only where it matters: no pruning ratio for a stage without expansion
or when pruning is off, per-stage bits only when ``bits_per_stage``, no temperature when the
space does not distil. A choice with a single option is not asked at all. Parameter names are
stable (``s{i}_width``, ``w_bits`` ...): they are the study's record, so renaming one breaks
resuming an older study.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, cast

from hwsearch.spaces._candidate import Candidate, Stage
from hwsearch.spaces._config import SpaceSpec

Choice = None | bool | int | float | str  # what a categorical parameter may take (as in Optuna)
_C = TypeVar("_C", bound=Choice)


class Trial(Protocol):
    """What :func:`space` asks of a trial: an Optuna ``Trial`` or ``FixedTrial``, or a stand-in.
    ``suggest_categorical`` returns one of ``choices``; ``suggest_float`` a value in
    ``[low, high]`` (drawn on a log scale when ``log``)."""

    def suggest_categorical(self, name: str, choices: Sequence[Choice]) -> Choice: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


def _choose(trial: Trial, name: str, choices: Sequence[_C]) -> _C:
    if len(choices) == 1:
        return choices[0]
    return cast(_C, trial.suggest_categorical(name, list(choices)))  # one of the choices, by contract


def space(trial: Trial, config: SpaceSpec) -> Candidate:
    """Sample one candidate from ``config`` through an Optuna trial (or ``FixedTrial``)."""
    stem = _choose(trial, "stem", config.stem_widths)
    if not config.bits_per_stage:
        w_bits = _choose(trial, "w_bits", config.weight_bits)
        a_bits = _choose(trial, "a_bits", config.activation_bits)
    stages = []
    for i, st in enumerate(config.stages):
        expand = _choose(trial, f"s{i}_expand", config.expand_ratios)
        prune = _choose(trial, f"s{i}_prune", config.prune_ratios) if expand > 1 else 0.0
        if config.bits_per_stage:
            w_bits = _choose(trial, f"s{i}_w_bits", config.weight_bits)
            a_bits = _choose(trial, f"s{i}_a_bits", config.activation_bits)
        stages.append(Stage(
            depth=_choose(trial, f"s{i}_depth", st.depths),
            kernel=_choose(trial, f"s{i}_kernel", config.kernels),
            expand=expand,
            width=_choose(trial, f"s{i}_width", st.widths),
            se=_choose(trial, f"s{i}_se", config.se),
            act=_choose(trial, f"s{i}_act", config.activations),
            prune=float(prune), w_bits=w_bits, a_bits=a_bits,
            fused=_choose(trial, f"s{i}_fused", config.fused), stride=st.stride,
        ))
    temperature, alpha = 1.0, 0.0
    if config.distill:
        lo, hi = config.temperature
        temperature = trial.suggest_float("kd_temperature", lo, hi, log=True) if lo < hi else lo
        lo, hi = config.alpha
        alpha = trial.suggest_float("kd_alpha", lo, hi) if lo < hi else lo
    # Rounded so that candidate strings stay readable; the trial keeps the exact values.
    return Candidate(stem=stem, stages=tuple(stages), temperature=round(temperature, 2),
                     alpha=round(alpha, 2))


def extremes(config: SpaceSpec) -> list[Candidate]:
    """The smallest architecture of the space at every bit-width choice.

    Size and memory are monotone in every architectural choice, so the smallest architecture
    with the fewest bits reaches the space's minimum size exactly. Latency is not monotone in bit
    width on real runtimes (int8 can be slower than fp32), so each bit-width pair is returned and
    the caller takes the fastest as measured.
    """
    expand = min(config.expand_ratios)
    prune = max(config.prune_ratios) if expand > 1 else 0.0
    out = []
    for w in config.weight_bits:
        for a in config.activation_bits:
            stages = tuple(Stage(depth=min(s.depths), kernel=min(config.kernels), expand=expand,
                                 width=min(s.widths), se=min(config.se), act="relu" if "relu" in
                                 config.activations else config.activations[0],
                                 prune=prune, w_bits=w, a_bits=a, fused=min(config.fused), stride=s.stride)
                           for s in config.stages)
            out.append(Candidate(stem=min(config.stem_widths), stages=stages))
    return out


def params_of(candidate: Candidate, config: SpaceSpec) -> dict[str, Choice]:
    """The trial parameters for which :func:`space` returns ``candidate`` (to enqueue it).

    A candidate without distillation, in a space that distils, gets the middle of the
    temperature and alpha ranges. Raises ``ValueError`` when the candidate is outside the space.
    """
    params: dict[str, Choice] = {}

    def put(name: str, value: Choice, choices: Sequence[Choice]) -> None:
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not among the space's choices {list(choices)}")
        if len(choices) > 1:
            params[name] = value

    if len(candidate.stages) != len(config.stages):
        raise ValueError(f"the candidate has {len(candidate.stages)} stages, the space {len(config.stages)}")
    put("stem", candidate.stem, config.stem_widths)
    first = candidate.stages[0]
    if not config.bits_per_stage:
        put("w_bits", first.w_bits, config.weight_bits)
        put("a_bits", first.a_bits, config.activation_bits)
    for i, (st, choices) in enumerate(zip(candidate.stages, config.stages)):
        put(f"s{i}_expand", st.expand, config.expand_ratios)
        if st.expand > 1:
            put(f"s{i}_prune", st.prune, config.prune_ratios)
        if config.bits_per_stage:
            put(f"s{i}_w_bits", st.w_bits, config.weight_bits)
            put(f"s{i}_a_bits", st.a_bits, config.activation_bits)
        put(f"s{i}_depth", st.depth, choices.depths)
        put(f"s{i}_kernel", st.kernel, config.kernels)
        put(f"s{i}_width", st.width, choices.widths)
        put(f"s{i}_se", st.se, config.se)
        put(f"s{i}_act", st.act, config.activations)
        put(f"s{i}_fused", st.fused, config.fused)
        if st.stride != choices.stride:
            raise ValueError(f"stage {i}'s stride {st.stride} is not the space's {choices.stride}")
    if config.distill:
        (t_lo, t_hi), (a_lo, a_hi) = config.temperature, config.alpha
        if t_lo < t_hi:
            params["kd_temperature"] = candidate.temperature if candidate.distils else (t_lo * t_hi) ** 0.5
        if a_lo < a_hi:
            params["kd_alpha"] = candidate.alpha if candidate.distils else (a_lo + a_hi) / 2
    return params
