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
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from spaces.plan import NetworkPlan, build_plan, reachable_layers
from targets.cost import Latency
from targets.measure import DEFAULT_PROVIDER, time_model
from targets.onnx_graph import identity_model, layer_model, layer_shapes, network_model, random_network_weights, random_weights
from targets.profile import FEATURES, BlockKey, Calibration, Entry, Profile, Sample, block_key

OVERHEAD_SHAPE = (1, 3, 32, 32)
MAX_GRID_RATIO = 2.0  # measured expanded widths of one alignment class are at most 2x apart
SAVE_EVERY_S = 5.0
CALIBRATION_SEED = 0  # latency-check samples its networks with another seed: held-out by design
SPREAD_POOL = 8  # calibration networks are picked across the cost range of 8x as many random ones


def measure_overhead(threads: int = 1, provider: str = DEFAULT_PROVIDER) -> Latency:
    """The runtime's fixed per-call cost: an empty graph's run time."""
    return time_model(identity_model(OVERHEAD_SHAPE), OVERHEAD_SHAPE, threads, provider)


def measure_layer(layer, overhead_ms: float, threads: int = 1, provider: str = DEFAULT_PROVIDER,
                  rng: np.random.Generator | None = None) -> Entry:
    """Time one layer alone (random weights: values do not change a dense kernel's speed). The
    per-call overhead is subtracted: a network pays it once, not once per layer."""
    rng = rng or np.random.default_rng(0)
    lat = time_model(layer_model(layer, random_weights(layer, rng)), layer_shapes(layer)[0], threads, provider)
    return Entry(mean_ms=max(lat.mean_ms - overhead_ms, 0.05 * lat.mean_ms), std_ms=lat.std_ms, count=lat.count)


def measure_network(plan: NetworkPlan, threads: int = 1, provider: str = DEFAULT_PROVIDER,
                    rng: np.random.Generator | None = None) -> Latency:
    """Time a whole network end to end (random weights), as the deployed model runs."""
    rng = rng or np.random.default_rng(0)
    return time_model(network_model(plan, random_network_weights(plan, rng)), (1, *plan.input_shape),
                      threads, provider)


def select_grid(layers: Iterable, every_width: bool = False) -> list:
    """The layers to measure: one per key, and of the expanded widths that differ only by pruning,
    a grid per SIMD alignment class: its narrowest and widest, and enough between that measured
    neighbours are at most ``MAX_GRID_RATIO`` apart. The others are interpolated."""
    unique: dict[BlockKey, object] = {}
    for layer in layers:
        unique.setdefault(block_key(layer), layer)
    if every_width:
        return list(unique.values())
    groups: dict[tuple, list[BlockKey]] = {}
    chosen = []
    for key, layer in unique.items():
        if key.kind == "ir" and key.mid > 0:
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


def space_fingerprint(config, input_shape: tuple[int, int, int], num_classes: int) -> str:
    text = json.dumps([config.model_dump(mode="json"), list(input_shape), num_classes], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sample_plans(config, input_shape: tuple[int, int, int], num_classes: int, n: int, seed: int,
                 spread: bool = False) -> list[NetworkPlan]:
    """``n`` random candidates of the space (Optuna's random sampler, seeded), laid out.

    ``spread``: half of them uniform, the other half picked evenly across the range of
    multiply-adds of ``SPREAD_POOL`` times as many (the cheapest and the costliest included).
    Uniform samples cluster in the middle of the space, but a search's front lives at its cheap
    end: fitted on uniform samples only, the quickstart front's small fp32 networks came out 7-10%
    slower than predicted; fitted on spread samples only, random networks were predicted worse
    (92-94% within 10% instead of 98%). Half of each serves both.
    """
    import optuna

    from spaces.space import space
    from targets.cost import network_macs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    pool = [build_plan(space(study.ask(), config), input_shape, num_classes)
            for _ in range(n * SPREAD_POOL if spread else n)]
    if not spread or n < 4:
        return pool[:n]
    uniform, rest = pool[:n // 2], sorted(pool[n // 2:], key=network_macs)
    k = n - len(uniform)
    return uniform + [rest[round(i * (len(rest) - 1) / (k - 1))] for i in range(k)]


def fit_calibration(samples: list[Sample], overhead_ms: float, previous: Calibration | None = None) -> Calibration:
    """Least squares on relative error: ``measured ~ sum(coef * feature) + overhead + offset``.

    With fewer than 8 networks only one scale is fitted. The fit's error on its own networks is
    recorded; latency-check reports the error on networks the fit has not seen.
    """
    keep = previous.model_dump(include={"spaces"}) if previous else {}
    if not samples:
        return Calibration(**keep)
    y = np.array([s.measured_ms for s in samples])
    feats = np.array([[s.features.get(f, 0.0) for f in FEATURES] for s in samples])
    if len(samples) >= 8:
        x = np.column_stack([feats, np.ones(len(y))])
        coef, *_ = np.linalg.lstsq(x / y[:, None], (y - overhead_ms) / y, rcond=None)
        fp32, int8, fp32_el, int8_el, offset = (float(c) for c in coef)
    else:
        total = feats[:, 0] + feats[:, 1]
        scale = float(np.sum((y - overhead_ms) * total / y**2) / np.sum(total**2 / y**2))
        fp32, int8, fp32_el, int8_el, offset = scale, scale, 0.0, 0.0, 0.0
    cal = Calibration(fp32_scale=fp32, int8_scale=int8, fp32_ms_per_kelem=fp32_el, int8_ms_per_kelem=int8_el,
                      offset_ms=offset, fitted_on=len(samples), samples=samples, **keep)
    pred = feats @ np.array([fp32, int8, fp32_el, int8_el]) + overhead_ms + offset
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


def measure_layers(profile: Profile, layers: list, path: Path | None, threads: int, provider: str,
                   progress: Callable[[Iterable, str, int], Iterable] | None = None) -> int:
    """Measure the layers the profile has no entry for; returns how many were measured."""
    todo = [layer for layer in layers if str(block_key(layer)) not in profile.entries]
    saver, rng = _Saver(profile, path), np.random.default_rng(0)
    items = progress(todo, "layers", len(todo)) if progress else todo
    for layer in items:
        profile.add(block_key(layer), measure_layer(layer, profile.overhead_ms.mean_ms, threads, provider, rng))
        saver.tick()
    saver.tick(force=bool(todo))
    return len(todo)


def calibrate(profile: Profile, lookup: Callable, config, input_shape: tuple[int, int, int], num_classes: int,
              n: int, path: Path | None, threads: int, provider: str, progress=None) -> Calibration:
    """Measure ``n`` random networks of the space end to end (those not measured yet, so a killed
    run resumes), add them to the profile's samples, and refit its calibration on all of them.
    ``lookup(plan)`` returns the plan's per-layer latencies (measuring what it must)."""
    from targets.base import network_features

    fingerprint = space_fingerprint(config, input_shape, num_classes)
    plans = sample_plans(config, input_shape, num_classes, n, CALIBRATION_SEED, spread=True)
    done = {(s.candidate, tuple(s.input_shape)) for s in profile.calibration.samples}
    todo = [p for p in plans if (p.candidate.to_string(), p.input_shape) not in done]
    saver, rng = _Saver(profile, path), np.random.default_rng(1)
    items = progress(todo, "networks", len(todo)) if progress else todo
    for plan in items:
        feats = network_features(plan.layers, lookup(plan))
        measured = measure_network(plan, threads, provider, rng).mean_ms
        profile.calibration.samples.append(Sample(candidate=plan.candidate.to_string(), input_shape=plan.input_shape,
                                                  features=feats, measured_ms=measured))
        saver.tick()
    cal = fit_calibration(profile.calibration.samples, profile.overhead_ms.mean_ms, profile.calibration)
    if fingerprint not in cal.spaces:
        cal.spaces.append(fingerprint)
    profile.calibration = cal
    saver.tick(force=True)
    return cal


def profile_space(profile: Profile, config, input_shape: tuple[int, int, int], num_classes: int,
                  path: Path | None, threads: int = 1, provider: str = DEFAULT_PROVIDER, networks: int = 40,
                  every_width: bool = False, progress=None, log: Callable[[str], None] = print) -> Profile:
    """Profile every layer a space can reach for this input, then calibrate on whole networks."""
    layers = reachable_layers(config, input_shape, num_classes)
    grid = select_grid(layers, every_width)
    n_keys = len({block_key(layer) for layer in layers})
    have = sum(str(block_key(layer)) in profile.entries for layer in grid)
    log(f"{n_keys} layer configurations reachable; measuring {len(grid)} ({n_keys - len(grid)} interpolated "
        f"between measured widths), {have} already in {path or 'the profile'}")
    measure_layers(profile, grid, path, threads, provider, progress)

    def lookup(plan):
        return [profile.lookup(layer) for layer in plan.layers]

    log(f"calibrating on {networks} whole networks of the space, measured end to end")
    cal = calibrate(profile, lookup, config, input_shape, num_classes, networks, path, threads, provider, progress)
    log(f"calibration fitted on {cal.fitted_on} networks: error on them {cal.fit_mape:.1%} (mean absolute)")
    return profile


CHECK_SEED = 1


def check_latency(target, config, input_shape: tuple[int, int, int], num_classes: int, n: int = 50,
                  seed: int = CHECK_SEED, progress=None) -> dict:
    """Predicted vs measured end-to-end latency of ``n`` random networks of the space (not those
    the calibration was fitted on), measured here with the target's thread count and provider.

    Returns ``n``, ``within_10pct`` (a fraction), ``mape``, ``kendall_tau`` and the five
    ``worst`` cases (candidate, predicted, measured, error).
    """
    from scipy.stats import kendalltau

    if seed == CALIBRATION_SEED:
        raise ValueError(f"seed {seed} samples the calibration's own networks; use another")
    profile = getattr(target, "profile", None)
    threads = profile.device.threads if profile else 1
    provider = profile.device.provider if profile else DEFAULT_PROVIDER
    plans = sample_plans(config, input_shape, num_classes, n, seed)
    rng = np.random.default_rng(2)
    rows = []
    for plan in (progress(plans, "networks", len(plans)) if progress else plans):
        predicted = target.price(plan).latency_ms
        measured = measure_network(plan, threads, provider, rng).mean_ms
        rows.append({"candidate": plan.candidate.to_string(), "predicted_ms": predicted, "measured_ms": measured,
                     "error": predicted / measured - 1})
    err = np.array([abs(r["error"]) for r in rows])
    tau = kendalltau([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])[0] if n > 1 else 1.0
    worst = sorted(rows, key=lambda r: -abs(r["error"]))[:5]
    return {"n": n, "within_10pct": float(np.mean(err <= 0.10)), "mape": float(np.mean(err)),
            "kendall_tau": float(tau), "worst": worst, "target": target.name,
            "input_shape": list(input_shape), "threads": threads, "provider": provider}
