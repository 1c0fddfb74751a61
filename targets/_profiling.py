"""Measure a device profile with onnxruntime, on whatever host this runs on.

``hwsearch profile`` calls :func:`profile_space`: it enumerates the layer configurations a space
can reach for an input, keeps a grid of expanded (pruned) widths to measure (the rest are
interpolated by :meth:`Profile.lookup`), times each layer alone as ONNX, then measures whole
random networks of the space end to end and fits the profile's calibration on them. The file is
saved every few seconds, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

import numpy as np

from hwsearch.spaces._plan import Layer, NetworkPlan, build_plan, reachable_layers
from hwsearch.targets._cost import Latency
from hwsearch.targets._layouts import LAYOUT_FEATURES, layer_layout
from hwsearch.targets._meter import DEFAULT_PROVIDER, CpuMark, Meter, cpu_mark, meter, neighbours_since
from hwsearch.targets._onnx_graph import (
    identity_model,
    layer_model,
    layer_shapes,
    network_model,
    random_network_weights,
    random_weights,
)
from hwsearch.targets._profile_format import (
    FEATURE_SET,
    FEATURES,
    PASS_TAU,
    PASS_WITHIN_10PCT,
    PRIOR,
    BlockKey,
    Calibration,
    Entry,
    Profile,
    ProfileError,
    Reference,
    Sample,
    SelfCheck,
    adapter_key,
    block_key,
    now,
)

if TYPE_CHECKING:
    import onnx

    from hwsearch.spaces._config import SpaceSpec
    from hwsearch.targets._profile_format import LayerMethod
    from hwsearch.targets._target import Progress, Target

OVERHEAD_SHAPE = (1, 3, 32, 32)
MAX_GRID_RATIO = 2.0  # measured expanded widths of one alignment class are at most 2x apart
SAVE_EVERY_S = 5.0
CALIBRATION_SEED = 0  # latency-check samples its networks with another seed: held-out by design
CALIBRATION_NETWORKS = 100  # 40 left the per-kind model under-determined: 84% within 10% against 100%
BATCH = 24  # graphs measured together, interleaved round by round
SPREAD_POOL = 8  # calibration networks are picked across the cost range of 8x as many random ones


def profile_meter(profile: Profile, threads: int | None = None, provider: str | None = None) -> Meter:
    """The process's :class:`~hwsearch.targets._meter.Meter` for a profile's settings, converting to the
    profile's scale (its reference's time when it was started)."""
    d, ref = profile.device, profile.reference
    if ref is None:
        return meter(threads or d.threads, provider or d.provider)
    return meter(threads or d.threads, provider or d.provider, ref.ms, (ref.candidate, ref.input_shape))


def measure_reference(threads: int = 1, provider: str = DEFAULT_PROVIDER, seconds: float = 1.0) -> Reference:
    """Time the reference network of this thread count (:func:`~hwsearch.targets._meter.reference_for`)
    for about ``seconds`` (its quiet-host time sets a new profile's scale)."""
    from hwsearch.targets._meter import reference_for

    candidate, input_shape = reference_for(threads)
    m = meter(threads, provider)
    m.time_reference(seconds)
    host, ms = m.host(), m.reference_here_ms()
    speedup = None
    if threads > 1:  # what the extra threads buy on this host: the same network at 1 thread
        one = meter(1, provider, reference=(candidate, input_shape))
        one.time_reference(seconds)
        speedup = one.reference_here_ms() / ms
    return Reference(candidate=candidate, input_shape=input_shape, ms=ms, noise=host["noise"], speedup=speedup,
                     spinning=threads > 1)


# At more threads, a profile whose reference runs less than this much faster than at 1 thread: the
# extra threads buy little on this host (shared vCPUs, or networks too small to split), and where
# a host's second vCPU is not dependably there its 2-thread latencies swing (the Intel Xeon VM:
# 0.58-0.72x, with the workers stopped after every run as sessions were until 2026-12-07; the
# AMD EPYC VM with them spinning: 1.04-1.05x, its 2-thread cells held all the same).
MIN_SPEEDUP = 1.15


def parallel_warning(profile: Profile) -> str | None:
    """A sentence when the profile's extra threads do not pay on its host (see ``MIN_SPEEDUP``)."""
    ref, threads = profile.reference, profile.device.threads
    if ref is None or ref.speedup is None or ref.speedup >= MIN_SPEEDUP:
        return None
    return (f"at {threads} threads this host ran the reference network {ref.speedup:.2f}x as fast as at 1 thread: "
            f"the extra threads buy little here (a VM whose vCPUs are shared, or networks too small to split), and "
            f"on a VM whose vCPUs are descheduled latencies at {threads} threads swing from run to run (the profile's "
            "self-check says whether they did); 1 thread (--threads 1) prices nearly the same latencies on fewer "
            "cores, or profile a host with dedicated cores")


def measure_overhead(threads: int = 1, provider: str = DEFAULT_PROVIDER, reference_ms: float | None = None) -> Latency:
    """The runtime's fixed per-call cost: an empty graph's run time."""
    return meter(threads, provider, reference_ms).measure([identity_model(OVERHEAD_SHAPE)], [OVERHEAD_SHAPE])[0]


COPIES = 4  # a layer's copies side by side, measured at more than one thread (see layer_method)


def layer_method(threads: int) -> LayerMethod:
    """How a profile at ``threads`` measures a layer's entry.

    ``alone`` (one thread): the layer's graph timed alone, less the per-call overhead, which a
    network pays once. ``started`` (more): the smaller of that and what one more copy of the layer
    costs once the runtime is started: its graph against :data:`COPIES` copies of it side by side,
    ``(t_K - t_1) / (K - 1)``. Both overstate the layer's share of a network, each in its own way.
    A layer timed alone pays its parallel set-up (and, while sessions' workers were stopped after
    every run as in the figures below, a worker's wake-up; see ``_meter.session``) that a layer
    inside a network, the workers busy from the layer before, does not; a copy hands its own
    output back, which a layer inside a network does not, and which outweighs a tiny layer. On the
    2-core AMD EPYC host at 2 threads, 12 random networks per scale (``bench/latency_why.py``), the
    layers' sum over their network (median, range; within 10%):

    ============  ======================  ======================  ======================
    scale         alone                   one more copy           the smaller
    ============  ======================  ======================  ======================
    1x8x8         1.07, 0.85-1.32; 42%    1.19, 0.97-1.64; 25%    1.07, 0.91-1.48; 67%
    3x32x32       1.23, 1.07-1.55; 8%     1.05, 0.94-1.37; 58%    1.03, 0.91-1.26; 58%
    3x96x96       1.26, 1.11-1.75; 0%     1.06, 0.96-1.35; 75%    1.05, 0.94-1.32; 75%
    ============  ======================  ======================  ======================

    At one thread there is no worker to wake, and alone stays the method (83% within 10% at
    3x32x32 and 3x96x96 against 67% and 75% for the smaller; 42% against 75% at 1x8x8, where the
    calibration on whole networks makes up the difference: the 1-thread cells of the latency
    matrix hold).
    """
    return "started" if threads > 1 else "alone"


def measure_layer_entries(layers: Sequence[Layer], overhead_ms: float, m: Meter,
                          rng: np.random.Generator | None = None) -> list[Entry]:
    """Layers' entries, by the meter's thread count's :func:`layer_method`, timed interleaved
    (random weights: values do not change a dense kernel's speed), with the layouts at their edges
    (:func:`~hwsearch.targets._layouts.layer_layout`)."""
    rng = rng or np.random.default_rng(0)
    shapes = [layer_shapes(layer)[0] for layer in layers]
    models = [layer_model(layer, random_weights(layer, rng)) for layer in layers]
    layouts = [layer_layout(layer, model) for layer, model in zip(layers, models)]
    if layer_method(m.threads) == "alone":
        entries = [entry_of(lat, overhead_ms) for lat in m.measure(models, shapes)]
    else:
        copies = [copies_model(layer, rng) for layer in layers]
        lats = m.measure(models + copies, shapes + shapes)
        entries = [entry_of(one, overhead_ms, k) for one, k in zip(lats[:len(layers)], lats[len(layers):])]
    return [entry.with_layout(layout) for entry, layout in zip(entries, layouts)]


def copies_model(layer: Layer, rng: np.random.Generator) -> onnx.ModelProto:
    """:data:`COPIES` copies of a layer side by side, each with its own random weights."""
    return layer_model(layer, [random_weights(layer, rng) for _ in range(COPIES)])


def entry_of(one: Latency | Entry, overhead_ms: float, copies: Latency | Entry | None = None) -> Entry:
    """A layer's entry from its graph's time and, measured ``started``, its copies' time: the
    smaller of the time alone less the per-call overhead and one more copy's cost (see
    :func:`layer_method`), at least 5% of the graph's time (noise can make a tiny layer's
    difference read zero or less)."""
    alone = one.mean_ms - overhead_ms
    if copies is not None and (started := (copies.mean_ms - one.mean_ms) / (COPIES - 1)) < alone:
        return Entry(mean_ms=max(started, 0.05 * one.mean_ms), count=min(one.count, copies.count),
                     std_ms=float(np.hypot(one.std_ms, copies.std_ms)) / (COPIES - 1))
    return Entry(mean_ms=max(alone, 0.05 * one.mean_ms), std_ms=one.std_ms, count=one.count)


def batch_size(threads: int) -> int:
    """Layers measured together: :data:`BATCH` graphs, one or two per layer."""
    return BATCH if layer_method(threads) == "alone" else BATCH // 2


def measure_adapter(input_shape: tuple[int, int, int], dtype: str, overhead_ms: float, m: Meter) -> Entry:
    """Time an exported file's input adapter alone (raw pixels in, normalised NCHW out), less the
    per-call overhead; its values do not change its speed."""
    from onnx import TensorProto

    from hwsearch.targets._onnx_graph import input_adapter_model

    c, h, w = input_shape
    onnx_type = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    model = input_adapter_model(input_shape, 1 / 255, (0.0,) * c, (1.0,) * c, onnx_type, batch=1)
    (lat,) = m.measure([model], [(1, h, w, c)])
    return Entry(mean_ms=max(lat.mean_ms - overhead_ms, 0.05 * lat.mean_ms), std_ms=lat.std_ms, count=lat.count)


def measure_networks(plans: list[NetworkPlan], m: Meter, rng: np.random.Generator | None = None) -> list[Latency]:
    """Time whole networks end to end (random weights), as the deployed model runs, interleaved."""
    rng = rng or np.random.default_rng(0)
    return m.measure([network_model(p, random_network_weights(p, rng)) for p in plans],
                     [(1, *p.input_shape) for p in plans])


def measure_network(plan: NetworkPlan, threads: int = 1, provider: str = DEFAULT_PROVIDER,
                    rng: np.random.Generator | None = None) -> Latency:
    """Time one whole network end to end (random weights), as the deployed model runs."""
    return measure_networks([plan], meter(threads, provider), rng)[0]


def select_grid(layers: Iterable[Layer], every_width: bool = False) -> list[Layer]:
    """The layers to measure: one per key, and of the expanded widths that differ only by pruning,
    a grid per SIMD alignment class: its narrowest and widest, and enough between that measured
    neighbours are at most ``MAX_GRID_RATIO`` apart. The others are interpolated."""
    unique: dict[BlockKey, Layer] = {}
    for layer in layers:
        unique.setdefault(block_key(layer), layer)
    if every_width:
        return list(unique.values())
    groups: dict[tuple[BlockKey, int], list[BlockKey]] = {}
    chosen: list[Layer] = []
    for key, layer in unique.items():
        if key.prunable:
            groups.setdefault((key.family, key.align), []).append(key)
        else:
            chosen.append(layer)
    for keys in groups.values():
        keys.sort(key=lambda k: k.mid)
        kept = [keys[0]]
        for i in range(1, len(keys)):
            nxt = keys[i + 1] if i + 1 < len(keys) else None
            if nxt is None or nxt.mid / kept[-1].mid > MAX_GRID_RATIO:
                kept.append(keys[i])
        chosen.extend(unique[k] for k in kept)
    return chosen


def space_fingerprint(config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int) -> str:
    text = json.dumps([config.model_dump(mode="json"), list(input_shape), num_classes], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cheaper_half(values: Sequence[int]) -> list[int]:
    ranked = sorted(values)
    return ranked[:max(1, (len(ranked) + 1) // 2)]


def _corner(config: SpaceSpec, pick: Callable[[Sequence[int]], list[int]], **also: list[float]) -> SpaceSpec:
    """The part of the space ``pick`` keeps of every width, kernel and expand ratio, with the
    fewest blocks and no squeeze-excite where the space allows it (and the fields in ``also``)."""
    stages = [st.model_copy(update={"widths": pick(st.widths), "depths": [min(st.depths)]}) for st in config.stages]
    return config.model_copy(update={
        "stem_widths": pick(config.stem_widths), "stages": stages, "kernels": pick(list(config.kernels)),
        "expand_ratios": pick(list(config.expand_ratios)), "se": [False] if False in config.se else list(config.se),
        "fused": [False] if False in config.fused else list(config.fused),
        **also})


def cheap_corner(config: SpaceSpec) -> SpaceSpec:
    """The space's cheap end: the cheaper half of every width, kernel and expand ratio, the
    fewest blocks, no squeeze-excite where the space allows it; activations, pruning and bit
    widths as they are. Its networks are networks of ``config``."""
    return _corner(config, _cheaper_half)


def floor_corner(config: SpaceSpec) -> SpaceSpec:
    """The space's floor: the narrowest width of every stage and stem, its smallest kernel and
    expand ratio, the fewest blocks, the most pruning, no squeeze-excite where the space allows
    it; activations and bit widths as they are. The cheapest networks a search can reach, where
    the per-call overhead is most of their time and fronts end."""
    return _corner(config, lambda values: [min(values)], prune_ratios=[max(config.prune_ratios)])


def sample_plans(config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int, n: int, seed: int,
                 spread: bool = False) -> list[NetworkPlan]:
    """``n`` random candidates of the space (Optuna's random sampler, seeded), laid out.

    ``spread``: 40% of them uniform, 30% picked evenly across the range of multiply-adds of
    ``SPREAD_POOL`` times as many (the cheapest and the costliest included), 20% uniform in the
    space's :func:`cheap_corner` and 10% in its :func:`floor_corner`. Uniform samples cluster in
    the middle of the space, but a search's front lives at its cheap end: fitted on uniform
    samples only, the quickstart front's small fp32 networks came out 7-10% slower than
    predicted; fitted on spread samples only,
    random networks were predicted worse (92-94% within 10% instead of 98%). And the cheapest of
    800 random networks is still far from the corner where fronts end up (small, shallow, no
    squeeze-excite): on the AMD EPYC host the quickstart's smallest fp32 calibration network
    took 13.7 us, and the fp32 files exported from its front, 9-11 us, came out 11-52% slower
    than predicted, extrapolated. On the Intel Xeon host, with the cheap corner's 20%, the
    cheapest calibration network of the quickstart took 19 us and the front's fp32 networks
    16-17 us, predicted 18-26% too fast: the floor's networks bracket them.
    """
    import optuna

    from hwsearch.spaces._space import space
    from hwsearch.targets._cost import network_macs

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def draw(cfg: SpaceSpec, k: int, sampler_seed: int) -> list[NetworkPlan]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
        return [build_plan(space(study.ask(), cfg), input_shape, num_classes) for _ in range(k)]

    if not spread or n < 5:
        return draw(config, n, seed)
    n_uniform, n_spread, n_floor = 2 * n // 5, max(2, 3 * n // 10), max(1, n // 10)
    pool = draw(config, n_uniform + n_spread * SPREAD_POOL, seed)
    uniform, rest = pool[:n_uniform], sorted(pool[n_uniform:], key=network_macs)
    picked = [rest[round(i * (len(rest) - 1) / (n_spread - 1))] for i in range(n_spread)]
    cheap = draw(cheap_corner(config), n - n_uniform - n_spread - n_floor, seed + 7919)
    return uniform + picked + cheap + draw(floor_corner(config), n_floor, seed + 104729)


RIDGES = (1e-3, 1e-2, 1e-1, 1.0)  # regularisation towards the plain sum, per sample, on standardised features
FOLDS = 5  # the ridge is the one of RIDGES with the lowest error on held-out folds of the samples


def _solve(a: np.ndarray, b: np.ndarray, prior: np.ndarray, ridge: float) -> np.ndarray:
    scale = np.sqrt((a**2).mean(axis=0)) + 1e-12
    an, lam = a / scale, ridge * len(b)
    sol: np.ndarray = np.linalg.solve(an.T @ an + lam * np.eye(len(scale)), an.T @ b + lam * prior * scale) / scale
    return sol


def _held_out_error(a: np.ndarray, b: np.ndarray, prior: np.ndarray, ridge: float) -> float:
    """Mean absolute relative error on held-out folds (``FOLDS``, fixed by the samples' order)."""
    folds = np.arange(len(b)) % FOLDS
    errors = []
    for k in range(FOLDS):
        train = folds != k
        sol = _solve(a[train], b[train], prior, ridge)
        errors.append(np.abs(a[~train] @ sol - b[~train]))
    return float(np.mean(np.concatenate(errors)))


def choose_ridge(a: np.ndarray, b: np.ndarray, prior: np.ndarray) -> float:
    """The ridge of ``RIDGES`` whose fits predict held-out samples best (``FOLDS``-fold
    cross-validation, mean absolute relative error)."""
    return min(RIDGES, key=lambda ridge: _held_out_error(a, b, prior, ridge))


def fit_calibration(samples: list[Sample], overhead_ms: float, previous: Calibration | None = None) -> Calibration:
    """Least squares on relative error, ``measured ~ sum(coef * feature) + overhead + offset``,
    regularised towards ``PRIOR`` (the lookups' plain sum).

    Cross-validation on the samples (``FOLDS`` folds) chooses how strongly (``RIDGES``) and
    whether the per-kind features are used or only the per-precision ones: with 100 noisy
    networks and 31 coefficients, either can predict held-out networks better (the per-kind ones
    only with 2 networks or more per coefficient). With fewer than 8 networks only one scale is
    fitted; with fewer than ``4 * FOLDS``, the per-precision features with the weakest ridge.
    The fit's error on its own networks is recorded; the self-check and latency-check report the
    error on networks it has not seen.
    """
    keep = previous.model_dump(include={"spaces"}) if previous else {}
    if not samples:
        return Calibration(**keep, feature_set=FEATURE_SET)
    y = np.array([s.measured_ms for s in samples])
    every = [f for f in FEATURES if any(s.features.get(f, 0.0) for s in samples)]
    coarse = [f for f in every if f.split("_")[0] in ("fp32", "int8") or f in LAYOUT_FEATURES]
    ridge = None
    if len(samples) >= 8:
        b = (y - overhead_ms) / y

        def design(used: list[str]) -> tuple[np.ndarray, np.ndarray]:
            feats = np.array([[s.features.get(f, 0.0) for f in used] for s in samples])
            return (np.column_stack([feats, np.ones(len(y))]) / y[:, None],
                    np.array([PRIOR.get(f, 0.0) for f in used] + [0.0]))

        if len(samples) >= 4 * FOLDS:
            options = {"every": every, "coarse": coarse} if len(samples) >= 2 * (len(every) + 1) else {"coarse": coarse}
            designs = {k: design(v) for k, v in options.items()}
            best, ridge = min(((k, r) for k in options for r in RIDGES),
                              key=lambda c: _held_out_error(designs[c[0]][0], b, designs[c[0]][1], c[1]))
            used, (a, prior) = options[best], designs[best]
        else:
            used, ridge = coarse, RIDGES[0]
            a, prior = design(used)
        sol = _solve(a, b, prior, ridge)
        coef, offset = dict(zip(used, map(float, sol[:-1]))), float(sol[-1])
    else:
        used = coarse
        feats = np.array([[s.features.get(f, 0.0) for f in used] for s in samples])
        ms = [f for f in used if f in PRIOR]
        total = feats[:, [used.index(f) for f in ms]].sum(axis=1)
        k = float(np.sum((y - overhead_ms) * total / y**2) / np.sum(total**2 / y**2))
        coef, offset = dict.fromkeys(ms, k), 0.0
    cal = Calibration(coef=coef, offset_ms=offset, fitted_on=len(samples), samples=samples, ridge=ridge,
                      feature_set=FEATURE_SET, **keep)
    feats = np.array([[s.features.get(f, 0.0) for f in used] for s in samples])
    pred = feats @ np.array([coef.get(f, 0.0) for f in used]) + overhead_ms + offset
    cal.fit_mape = float(np.mean(np.abs(pred / y - 1)))
    return cal


class _Saver:
    """Saves a profile at most every ``SAVE_EVERY_S`` seconds (atomic writes), and on demand."""

    def __init__(self, profile: Profile, path: Path | None) -> None:
        self.profile, self.path, self.last = profile, path, time.monotonic()

    def tick(self, force: bool = False) -> None:
        if self.path and (force or time.monotonic() - self.last > SAVE_EVERY_S):
            self.profile.save(self.path)
            self.last = time.monotonic()


def measure_layers(profile: Profile, layers: Sequence[Layer], path: Path | None, threads: int, provider: str,
                   progress: Progress | None = None) -> int:
    """Measure the layers the profile has no entry for, in interleaved batches; returns how many
    were measured. Saved every few seconds, so a killed run loses one batch at most."""
    if profile.entries and profile.layer_method != layer_method(threads):
        raise ProfileError(f"the profile's entries were measured {profile.layer_method!r}, at {threads} thread(s) "
                           f"layers are measured {layer_method(threads)!r}: the two do not add up; measure the "
                           "profile again from scratch")
    profile.layer_method = layer_method(threads)
    todo = list(
        {str(block_key(layer)): layer for layer in layers if str(block_key(layer)) not in profile.entries}.values()
    )
    saver, rng, m = _Saver(profile, path), np.random.default_rng(0), profile_meter(profile, threads, provider)
    since, size, mark = len(m.ref_bursts), batch_size(threads), cpu_mark()
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    for batch in progress(batches, f"layer batches of {size}", len(batches)) if progress else batches:
        for layer, entry in zip(batch, measure_layer_entries(batch, profile.overhead_ms.mean_ms, m, rng)):
            profile.add(block_key(layer), entry)
        saver.tick()
    note_noise(profile, m, since, mark=mark)
    saver.tick(force=bool(todo))
    return len(todo)


def note_noise(profile: Profile, m: Meter, since: int = 0, settle: bool = True, mark: CpuMark | None = None) -> None:
    """Record in the profile what its meter saw of the host's noise, and (``settle``) its scale
    and the CPU time others took beside the run since ``mark`` (``reference.neighbours``: the most
    over the profile's runs, for the entries measured then stay; see :func:`contention`).

    The scale (``reference.ms``) is the reference's quiet-host time (``Meter.reference_here_ms``)
    over the profile's measuring runs, weighted by bursts: one second at the start is not enough
    on a host whose speed changes from second to second, so each profiling or calibrating run
    refines it and the profile's times
    are rescaled to match (their ratios to the reference are what was measured). Layers measured
    on first use during a search do not settle it, so prices already given do not move."""
    ref = profile.reference
    if ref is None:
        return
    bursts = m.ref_bursts[since:]
    if bursts and settle:
        here, n = m.reference_here_ms(since), len(bursts)
        settled = (ref.ms * ref.bursts + here * n) / (ref.bursts + n) if ref.bursts else here
        profile.rescale(settled / ref.ms)
        ref.bursts += n
        m.reference_ms = ref.ms
        beside = neighbours_since(mark)
        if (taken := _taken(beside)) is not None:
            ref.neighbours, ref.cpus = max(ref.neighbours or 0.0, taken), _cpus(beside)
    cis = [1.96 * e.std_ms / e.mean_ms for e in profile.entries.values() if e.mean_ms > 0]
    host = m.host()
    ref.noise = host["noise"]
    ref.rejected_rounds = int(host["rejected_rounds"])  # a count
    ref.entry_ci = float(np.median(cis)) if cis else None


def calibrate(profile: Profile, lookup: Callable[[NetworkPlan], list[Latency]], config: SpaceSpec,
              input_shape: tuple[int, int, int], num_classes: int, n: int, path: Path | None, threads: int,
              provider: str, progress: Progress | None = None,
              prepare: Callable[[Sequence[NetworkPlan]], None] | None = None) -> Calibration:
    """Measure ``n`` random networks of the space end to end (those not measured yet, so a killed
    run resumes), add them to the profile's samples, and refit its calibration on all of them.
    ``lookup(plan)`` returns the plan's per-layer latencies; ``prepare(plans)``, if given, measures
    beforehand what the lookups will need."""
    from hwsearch.targets._target import network_features

    fingerprint = space_fingerprint(config, input_shape, num_classes)
    if profile.calibration.samples and profile.calibration.feature_set != FEATURE_SET:
        # features of another version: those networks are measured again (their features would mix)
        profile.calibration = Calibration(feature_set=FEATURE_SET)
    plans = sample_plans(config, input_shape, num_classes, n, CALIBRATION_SEED, spread=True)
    done = {(s.candidate, tuple(s.input_shape)) for s in profile.calibration.samples}
    todo = [p for p in plans if (p.candidate.to_string(), p.input_shape) not in done]
    if prepare and todo:
        prepare(todo)
    saver, rng, m = _Saver(profile, path), np.random.default_rng(1), profile_meter(profile, threads, provider)
    since, mark = len(m.ref_bursts), cpu_mark()
    batches = [todo[i:i + BATCH] for i in range(0, len(todo), BATCH)]
    for batch in progress(batches, f"network batches of {BATCH}", len(batches)) if progress else batches:
        for plan, lat in zip(batch, measure_networks(batch, m, rng)):
            profile.calibration.samples.append(Sample(
                candidate=plan.candidate.to_string(), input_shape=plan.input_shape,
                features=network_features(plan.layers, lookup(plan), [profile.layout(x) for x in plan.layers]),
                measured_ms=lat.mean_ms))
        saver.tick()
    note_noise(profile, m, since, mark=mark)
    cal = fit_calibration(profile.calibration.samples, profile.overhead_ms.mean_ms, profile.calibration)
    if fingerprint not in cal.spaces:
        cal.spaces.append(fingerprint)
    profile.calibration = cal
    saver.tick(force=True)
    return cal


def profile_space(profile: Profile, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int,
                  path: Path | None, threads: int = 1, provider: str = DEFAULT_PROVIDER, networks: int = 100,
                  every_width: bool = False, progress: Progress | None = None,
                  log: Callable[[str], None] = print) -> Profile:
    """Profile every layer a space can reach for this input, then calibrate on whole networks."""
    layers = reachable_layers(config, input_shape, num_classes)
    grid = select_grid(layers, every_width)
    n_keys = len({block_key(layer) for layer in layers})
    have = sum(str(block_key(layer)) in profile.entries for layer in grid)
    log(f"{n_keys} layer configurations reachable; measuring {len(grid)} ({n_keys - len(grid)} interpolated "
        f"between measured widths), {have} already in {path or 'the profile'}")
    measure_layers(profile, grid, path, threads, provider, progress)
    m = profile_meter(profile, threads, provider)
    for dtype in ("uint8", "float32"):  # an exported file's input adapter, for either kind of pixels
        key = adapter_key(input_shape, dtype)
        if key not in profile.adapters:
            profile.adapters[key] = measure_adapter(input_shape, dtype, profile.overhead_ms.mean_ms, m)

    def lookup(plan: NetworkPlan) -> list[Latency]:
        return [profile.lookup(layer) for layer in plan.layers]

    log(f"calibrating on {networks} whole networks of the space, measured end to end")
    cal = calibrate(profile, lookup, config, input_shape, num_classes, networks, path, threads, provider, progress)
    log(f"calibration fitted on {cal.fitted_on} networks: error on them {cal.fit_mape:.1%} (mean absolute)")
    from hwsearch.targets._profile_targets import ProfileTarget

    log("checking the latency model on 30 fresh networks of the space (another seed than the fit's)")
    check = self_check(profile, ProfileTarget(profile), config, input_shape, num_classes, path=path,
                       progress=progress)
    log(describe_check(check))
    for warning in profile_warnings(profile):
        log(f"warning: {warning}")
    return profile


def profile_warnings(profile: Profile) -> list[str]:
    """What makes a profile's figures doubtful on the whole, in sentences: extra threads that do
    not pay (:func:`parallel_warning`), others busy beside its measuring runs (:func:`contention`)."""
    ref = profile.reference
    busy = contention(ref.neighbours, ref.cpus) if ref else None
    out = [f"while this profile was measured, {busy}; its layers and calibration were measured then: profile "
           "again from scratch on a quiet host"] if busy else []
    if warning := parallel_warning(profile):
        out.append(warning)
    return out


def describe_check(check: SelfCheck) -> str:
    """One line saying how a self-check went, and what to do when it failed."""
    text = (f"self-check on {check.n} fresh networks: {check.within_10pct:.0%} within +-10%, mean error "
            f"{check.mape:.1%}, Kendall's tau {check.kendall_tau:.2f}: ")
    quiet = check.busy is not None and check.busy <= BUSY_WARN and abs(check.host_drift - 1) <= DRIFT_WARN
    if check.passed:
        text += "passed"
    elif quiet and unsteady(check.misses, check.misses_confirmed):
        misses, same = check.misses or 0, check.misses_confirmed or 0
        text += (f"FAILED (under {PASS_WITHIN_10PCT:.0%} within +-10% or tau under {PASS_TAU}) on a host whose "
                 f"timings moved during the check: {misses - same} of its {misses} "
                 f"misses read more than {AGAIN_AGREE:.0%} differently when measured again, though runs were at "
                 f"{check.busy:.2f}x their quiet time on the whole; measure again when the host is steadier")
    elif quiet:
        # Not noise: on the Intel Xeon VM at 3x96x96, two checks of the same 50 networks in two
        # processes agreed within 10% for all of them while the model predicted 80-90% within 10%.
        # Where the misses were measured twice (the check does since 2026-12-07), that is shown.
        confirmed = (f"; {check.misses_confirmed} of its {check.misses} misses read the same when measured again"
                     if check.misses else "")
        text += (f"FAILED (under {PASS_WITHIN_10PCT:.0%} within +-10% or tau under {PASS_TAU}) on a quiet host "
                 f"(runs at {check.busy:.2f}x their quiet time{confirmed}): this is the latency model's own error "
                 "on this space, not the host's noise; more calibration networks (--networks) may narrow it")
    else:
        text += (f"FAILED (under {PASS_WITHIN_10PCT:.0%} within +-10% or tau under {PASS_TAU}): measure again on a "
                 "quiet host")
        if check.busy is not None and check.busy > BUSY_WARN:
            text += f" (runs took {check.busy:.2f}x their quiet time during the check)"
    if abs(check.host_drift - 1) > DRIFT_WARN:
        text += (f"; the host ran {check.host_drift:.2f}x as slow as while profiling (a busy neighbour?): "
                 "latencies measured now differ from the profile's by that much")
    if busy := contention(check.neighbours, check.cpus):
        text += f"; during the check {busy}"
    return text


CHECK_SEED = 1
DRIFT_WARN = 0.10  # the host's speed (the reference's time) moved this much since profiling: say so
# Runs took this many times their quiet time during a check: its figures are not to be trusted.
# Measured on the 2-core AMD EPYC VM with a CPU-bound neighbour (3x32x32, 1 thread): at 1.92x, two
# checks of the same networks in two processes agreed within 10% for 74% of them (98-100% quiet).
BUSY_WARN = 1.5
# Other processes, or on a VM other guests (steal), took this share of the host's CPUs on average
# beside a measurement: its figures are doubtful, and wherever they are shown that is said. Why not
# the reference's slowdown alone (``busy``): on the 2-core AMD EPYC VM, with one CPU-bound neighbour
# (`python -c "while True: pass"`, 1.00 of 2 CPUs taken by others; 0.01 idle) the 1-thread matrix
# cells held 100%, 78% and 94% of networks within 10% (quickstart, 3x32x32, 3x96x96; 96-100% quiet),
# while ``busy`` read 1.06-1.23x, as on quiet runs (1.04-1.14x): the neighbour ran on the other
# core, and what it shares with the measured one (caches, memory) slows kernels unevenly.
CONTENDED = 0.2


def _taken(host: dict[str, float]) -> float | None:
    """The CPUs others took beside a measurement (other processes and the hypervisor; see
    :func:`~hwsearch.targets._meter.neighbours_since`), if known."""
    return host["others_cpu"] + host["steal_cpu"] if "others_cpu" in host else None


def _cpus(host: dict[str, float]) -> int | None:
    return int(host["cpus"]) if "cpus" in host else None


def beside_warning(host: dict[str, float]) -> str | None:
    """:func:`contention`'s clause for what others took beside a measurement, as
    :func:`~hwsearch.targets._meter.neighbours_since` gives it (unknown: None)."""
    return contention(_taken(host), _cpus(host))


def contention(neighbours: float | None, cpus: int | None) -> str | None:
    """A clause when others took :data:`CONTENDED` or more of the host's CPUs beside a measurement
    (``neighbours``, in CPUs, of ``cpus``; unknown: None)."""
    cpus = cpus or os.cpu_count() or 1
    if neighbours is None or neighbours < CONTENDED * cpus:
        return None
    return (f"other processes (or the hypervisor's other guests) kept {neighbours:.1f} of this host's {cpus} CPUs "
            "busy on average: latencies measured beside a busy neighbour differ from a quiet host's unevenly "
            "(up to 20% on the AMD EPYC VM), so these figures may not hold once it stops")
# A check measures its misses a second time. One whose two readings agree within AGAIN_AGREE is the
# model's error, not noise; when CONFIRMED_SHARE of the misses are, a busy host is not to blame. (On
# the Intel Xeon VM with a CPU-bound neighbour, 3x96x96: the host at 1.72x, two checks in two
# processes agreed within 10% on 96% of the networks while the model missed 14%.)
AGAIN_AGREE = 0.05
CONFIRMED_SHARE = 0.75
# On a host that was not busy on the whole, a check with this many misses of which under half read the
# same twice was unsteady, and says so. (On the 2-core AMD EPYC VM at 2 threads, quickstart space:
# 31 misses of 100 networks, 6 of them read the same twice, the others 1.1-1.4x their first reading;
# 90% within 10% with the second readings against 69% with the first. The host's median run was at
# 1.20x its quiet time, under BUSY_WARN.)
UNSTEADY_MISSES = 3


def unsteady(misses: int | None, confirmed: int | None) -> bool:
    """Whether a check's misses say that the host's timings moved during it: ``UNSTEADY_MISSES`` or
    more, under half of them reading the same when measured again (unknown: False)."""
    return misses is not None and confirmed is not None and misses >= UNSTEADY_MISSES and confirmed < misses / 2


def check_warnings(report: LatencyCheck) -> list[str]:
    """What makes a check's figures doubtful, in sentences (empty: nothing)."""
    out = []
    host = report["host"]
    if busy := beside_warning(host):
        out.append(f"during the check {busy}; check again on a quiet host before trusting them")
    if abs(report["host_drift"] - 1) > DRIFT_WARN:
        out.append(f"this host runs {report['host_drift']:.2f}x as slow as when {report['target']} was profiled (a "
                   "busy neighbour, or another host state): measured latencies now differ by that much")
    again = report.get("misses_again")
    if report["busy"] > BUSY_WARN:
        if again and again["misses"] and again["confirmed"] >= CONFIRMED_SHARE * again["misses"]:
            out.append(f"the host was busy during the check (runs took {report['busy']:.2f}x their quiet time), but "
                       f"{again['confirmed']} of its {again['misses']} misses read within {AGAIN_AGREE:.0%} of their "
                       "first reading when measured again: those are the latency model's own error on this space, "
                       "not the host's noise")
        else:
            out.append(f"the host was busy during the check (runs took {report['busy']:.2f}x their quiet time): "
                       "measurements of the same networks disagree by more than 10% at such times; check again "
                       "on a quiet host before trusting these figures")
    elif again and unsteady(again["misses"], again["confirmed"]):
        out.append(f"{again['misses'] - again['confirmed']} of the check's {again['misses']} misses read more than "
                   f"{AGAIN_AGREE:.0%} differently when measured again ({again['within_10pct_again']:.0%} within "
                   "10% with their second readings): the host's timings moved during the check, though its runs "
                   f"were not slow on the whole ({report['busy']:.2f}x their quiet time), so these misses are "
                   "partly the host's noise; check again before trusting these figures")
    if report["host"].get("busy_batches"):
        out.append(f"{int(report['host']['busy_batches'])} batch(es) waited in vain for a quiet moment and were "
                   "measured busy")
    return out


class CheckRow(TypedDict):
    """One network of a latency check (``measured_again_ms``: a miss, measured a second time)."""

    candidate: str
    predicted_ms: float
    measured_ms: float
    error: float  # predicted / measured - 1
    measured_again_ms: NotRequired[float]


class MissesAgain(TypedDict):
    """The networks a check missed (beyond 10%), measured a second time in their own batch."""

    misses: int
    confirmed: int  # read within AGAIN_AGREE of their first reading: the model's error, not noise
    within_10pct_again: float  # the share of every network within 10%, the misses at their second reading


class CheckFigures(TypedDict):
    within_10pct: float  # a fraction
    mape: float
    kendall_tau: float


class LatencyCheck(CheckFigures):
    """What :func:`check_latency` reports (a JSON object)."""

    n: int
    worst: list[CheckRow]
    target: str
    input_shape: list[int]
    threads: int
    provider: str
    host_drift: float
    host: dict[str, float]
    busy: float
    raw: CheckFigures
    rows: list[CheckRow]
    misses_again: MissesAgain
    warnings: list[str]  # what makes the figures doubtful (a busy or changed host); empty when nothing


def check_figures(predicted: Sequence[float], measured: Sequence[float]) -> CheckFigures:
    """The share of networks predicted within 10%, the mean absolute error and Kendall's tau."""
    from scipy.stats import kendalltau

    err = np.abs(np.array(predicted) / np.array(measured) - 1)
    tau = kendalltau(predicted, measured)[0] if len(predicted) > 1 else 1.0
    return {"within_10pct": float(np.mean(err <= 0.10)), "mape": float(np.mean(err)), "kendall_tau": float(tau)}


def check_latency(target: Target, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int,
                  n: int = 50, seed: int = CHECK_SEED, progress: Progress | None = None) -> LatencyCheck:
    """Predicted vs measured end-to-end latency of ``n`` random networks of the space (not those
    the calibration was fitted on), measured here with the target's thread count and provider.

    Networks are measured as the profile's entries were: against the reference network, in
    interleaved rounds (:mod:`hwsearch.targets._meter`), so ``measured_ms`` is a quiet host's latency on
    the profile's scale. ``host_drift`` is the quiet host's speed now against the profile's (the
    reference's fastest 5% of bursts): beyond 10%, the host is not the one profiled, or it was
    busy all along. ``busy`` is the reference's median burst now against the profile's quiet
    time (1.0: a quiet host), and ``raw`` repeats the figures with the measurements at that
    typical speed: what timing the networks one after another would give at this moment.

    The networks missed by more than 10% are measured a second time, in a batch of their own
    (``misses_again``: how many read within ``AGAIN_AGREE`` of their first reading, and the share
    within 10% with their second readings): misses that read the same twice are the model's error,
    whatever the host's state, and the busy-host warning says so. The figures stay the first
    pass's.

    Returns ``n``, ``within_10pct`` (a fraction), ``mape``, ``kendall_tau``, the five ``worst``
    cases (candidate, predicted, measured, error), ``host_drift``, ``busy``, ``host``, ``raw``,
    every network's ``rows``, ``misses_again`` and ``warnings`` (:func:`check_warnings`).
    """
    if seed == CALIBRATION_SEED:
        raise ValueError(f"seed {seed} samples the calibration's own networks; use another")
    profile, runtime = target.profile, target.runtime()
    threads, provider = runtime.threads, runtime.provider
    plans = sample_plans(config, input_shape, num_classes, n, seed)
    target.prepare(plans)
    predicted = [target.price(plan).latency_ms for plan in plans]
    m = profile_meter(profile, threads, provider) if profile else meter(threads, provider)
    start, mark = len(m.ref_bursts), cpu_mark()
    rng = np.random.default_rng(2)
    measured: list[float] = []
    batches = [plans[i:i + BATCH] for i in range(0, len(plans), BATCH)]
    for batch in progress(batches, f"network batches of {BATCH}", len(batches)) if progress else batches:
        measured += [lat.mean_ms for lat in measure_networks(batch, m, rng)]
    missed = [i for i, (pr, me) in enumerate(zip(predicted, measured)) if abs(pr / me - 1) > 0.10]
    again = dict(zip(missed, (lat.mean_ms for lat in measure_networks([plans[i] for i in missed], m, rng)))) \
        if missed else {}
    drift = m.reference_here_ms(start) / m.reference_ms  # the quiet host's speed, now against then
    busy = float(np.median(m.ref_bursts[start:])) / m.reference_ms  # what a run takes now, typically
    rows: list[CheckRow] = [{"candidate": p.candidate.to_string(), "predicted_ms": pr, "measured_ms": me,
                             "error": pr / me - 1} for p, pr, me in zip(plans, predicted, measured)]
    for i, ms in again.items():
        rows[i]["measured_again_ms"] = ms
    misses_again: MissesAgain = {
        "misses": len(missed),
        "confirmed": sum(abs(ms / measured[i] - 1) <= AGAIN_AGREE for i, ms in again.items()),
        "within_10pct_again": check_figures(predicted, [again.get(i, me) for i, me in enumerate(measured)])[
            "within_10pct"]}

    def figures(meas: list[float]) -> CheckFigures:
        return check_figures(predicted, meas)

    worst = sorted(rows, key=lambda r: -abs(r["error"]))[:5]
    host = {**{k: v for k, v in m.host().items() if k != "bursts"}, **neighbours_since(mark)}
    report: LatencyCheck = {
        "n": n, **figures(measured), "worst": worst, "target": target.name, "input_shape": list(input_shape),
        "threads": threads, "provider": provider, "host_drift": drift, "host": host, "busy": busy,
        "raw": figures([x * busy for x in measured]), "rows": rows, "misses_again": misses_again, "warnings": []}
    report["warnings"] = check_warnings(report) + (profile_warnings(profile) if profile else [])
    return report


def self_check(profile: Profile, target: Target, config: SpaceSpec, input_shape: tuple[int, int, int],
               num_classes: int, n: int = 30, path: Path | None = None, progress: Progress | None = None) -> SelfCheck:
    """Check the profile's latency model on ``n`` fresh networks (seed ``CHECK_SEED``, not the
    calibration's) and store the figures in the profile; see :func:`check_latency`."""
    report = check_latency(target, config, input_shape, num_classes, n=n, progress=progress)
    passed = report["within_10pct"] >= PASS_WITHIN_10PCT and report["kendall_tau"] >= PASS_TAU
    check = SelfCheck(space=space_fingerprint(config, input_shape, num_classes), input_shape=input_shape, n=n,
                      seed=CHECK_SEED, within_10pct=report["within_10pct"], mape=report["mape"],
                      kendall_tau=report["kendall_tau"], host_drift=report["host_drift"], busy=report["busy"],
                      misses=report["misses_again"]["misses"], misses_confirmed=report["misses_again"]["confirmed"],
                      neighbours=_taken(report["host"]), cpus=_cpus(report["host"]), passed=passed,
                      checked_at=now())
    profile.checks = [c for c in profile.checks if c.space != check.space] + [check]
    if path:
        profile.save(path)
    return check
