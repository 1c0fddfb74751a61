"""The whole-network latency model: its features, its fit and the price it gives."""

import numpy as np
import pytest

from hwsearch.spaces import Candidate, build_plan
from hwsearch.targets._meter import PARALLEL_REFERENCE_INPUT, REFERENCE_INPUT, Meter, reference_for
from hwsearch.targets._profile_format import (
    FEATURE_SET,
    FEATURES,
    Calibration,
    Entry,
    Profile,
    Reference,
    Sample,
    block_key,
    layer_terms,
)
from hwsearch.targets._profile_targets import ProfileTarget, new_profile
from hwsearch.targets._profiling import RIDGES, calibrate, choose_ridge, fit_calibration, profile_meter
from hwsearch.targets._target import network_features
from tests.conftest import TINY_SPACE

SHAPE = (1, 8, 8)
SE_NET = "c8:ir_r1_k3_e3_c8_se_re_w8a8:ir_r1_k3_e1_c16_hs_w32a32"


def profile_for(candidate: str, ms: float = 0.01) -> tuple[Profile, object]:
    p = new_profile("test-device")
    p.overhead_ms = Entry(mean_ms=0.005, std_ms=0.0, count=1)
    plan = build_plan(Candidate.from_string(candidate), SHAPE, 10)
    for layer in plan.layers:
        p.add(block_key(layer), Entry(mean_ms=ms, std_ms=0.0, count=1))
    return p, plan


def test_a_squeeze_excite_block_has_its_own_features():
    assert {"se_fp32_ms", "se_int8_ms", "se_int8_layers"} <= set(FEATURES)
    plain = layer_terms("ir", "int8", 0.01, 2.0, False)
    se = layer_terms("ir", "int8", 0.01, 2.0, False, se=True)
    assert set(se) - set(plain) == {"se_int8_ms", "se_int8_kelems", "se_int8_layers"}
    p, plan = profile_for(SE_NET)
    f = network_features(plan.layers, ProfileTarget(p).lookups(plan))
    assert f["se_int8_layers"] == 1 and f["se_fp32_layers"] == 0 and f["ir_int8_layers"] == 1


def test_the_price_is_the_fitted_sum_even_where_a_layer_share_is_negative():
    """A fit of many coefficients can give a tiny layer a negative share; the network's price is
    still the sum the fit predicts (clipping that share alone priced networks above it)."""
    p, plan = profile_for(SE_NET)
    p.calibration = Calibration(coef={"fp32_ms": 1.0, "int8_ms": 1.2, "head_fp32_ms": -3.0}, offset_ms=0.002)
    target = ProfileTarget(p)
    f = network_features(plan.layers, target.lookups(plan))
    fitted = sum(p.calibration.coef.get(k, 0.0) * v for k, v in f.items()) + 0.005 + 0.002
    cost = target.price(plan)
    assert cost.latency_ms == pytest.approx(fitted)
    assert sum(ms for _, ms in cost.blocks) == pytest.approx(cost.latency_ms)
    head = dict(cost.blocks)["head"]
    assert head == pytest.approx(0.05 * 0.01)  # raised to its floor; the others shrank to keep the sum


def test_the_ridge_is_chosen_by_cross_validation():
    """Few noisy samples, many features: held-out folds prefer a stronger pull to the plain sum
    than clean, plentiful samples do."""
    rng = np.random.default_rng(0)

    def problem(n: int, noise: float):
        a = rng.uniform(0.1, 1.0, (n, 6))
        truth = np.array([1.0, 0.2, -0.1, 0.05, 0.0, 0.0])
        b = a @ truth + rng.normal(0, noise, n)
        return a, b, np.array([1.0, 0, 0, 0, 0, 0])

    clean, noisy = choose_ridge(*problem(400, 0.0)), choose_ridge(*problem(24, 0.5))
    assert clean in RIDGES and noisy in RIDGES
    assert clean == RIDGES[0] and noisy > clean


def test_a_fit_records_its_ridge_and_feature_set():
    rng = np.random.default_rng(1)
    samples = []
    for i in range(60):
        f = {"fp32_ms": rng.uniform(0.01, 0.1), "int8_ms": rng.uniform(0.01, 0.1), "se_int8_layers": float(i % 3)}
        y = 0.9 * f["fp32_ms"] + 1.1 * f["int8_ms"] + 0.002 * f["se_int8_layers"] + 0.005
        samples.append(Sample(candidate=f"c{i}", input_shape=SHAPE, features=f, measured_ms=y))
    cal = fit_calibration(samples, overhead_ms=0.005)
    assert cal.ridge in RIDGES and cal.feature_set == FEATURE_SET
    assert cal.coef["se_int8_layers"] == pytest.approx(0.002, rel=0.2)
    assert cal.fit_mape < 0.02


def test_samples_of_an_older_feature_set_are_measured_again(tmp_path):
    from hwsearch.spaces import SpaceSpec
    from hwsearch.targets._profile_targets import LocalCpuTarget

    config = SpaceSpec(**TINY_SPACE)
    p = new_profile("test-device")
    stale = Sample(candidate="c8:ir_r1_k3_e1_c8_re_w8a8", input_shape=SHAPE, features={"fp32_ms": 0.1}, measured_ms=0.2)
    p.calibration = Calibration(samples=[stale], fitted_on=1, feature_set=1, spaces=["another"])
    local = LocalCpuTarget(1, path=tmp_path / "local.json")
    local.profile = p
    cal = calibrate(p, local.lookups, config, SHAPE, 10, 8, None, 1, "CPUExecutionProvider", prepare=local.prepare)
    assert cal.feature_set == FEATURE_SET and cal.fitted_on == 8
    assert all(s.features != stale.features for s in cal.samples)
    assert "another" not in cal.spaces  # its calibration rested on the dropped samples


def test_more_than_one_thread_is_measured_against_a_parallel_reference():
    assert reference_for(1)[1] == REFERENCE_INPUT and reference_for(2)[1] == PARALLEL_REFERENCE_INPUT
    p = new_profile("test-device", threads=1)
    p.reference = Reference(candidate=reference_for(2)[0], input_shape=reference_for(2)[1], ms=0.03, noise=1.0)
    m = profile_meter(p)
    assert isinstance(m, Meter) and m.reference == reference_for(2) and m.reference_ms == 0.03
    assert m.threads == 1  # the profile's own reference, whatever the thread count's default


def test_a_check_on_a_busy_or_changed_host_says_so():
    from hwsearch.targets._profiling import check_warnings

    quiet = {"host_drift": 1.02, "busy": 1.1, "host": {"busy_batches": 0}, "target": "local-cpu"}
    assert check_warnings(quiet) == []
    busy = check_warnings({**quiet, "busy": 1.92, "host": {"busy_batches": 3}})
    assert any("busy during the check" in w and "1.92x" in w for w in busy) and any("3 batch" in w for w in busy)
    assert "1.54x as slow" in check_warnings({**quiet, "host_drift": 1.54})[0]
    # Busy, but the misses read the same when measured again: the model's error, said as such.
    again = {"misses": 4, "confirmed": 3, "within_10pct_again": 0.9}
    (model,) = check_warnings({**quiet, "busy": 1.72, "misses_again": again})
    assert "1.72x" in model and "3 of its 4 misses" in model and "model's own error" in model
    (noise,) = check_warnings({**quiet, "busy": 1.72, "misses_again": {**again, "confirmed": 2}})
    assert "check again on a quiet host" in noise
    # Not busy on the whole, but most misses read otherwise a second time: unsteady, said as such.
    (unsteady,) = check_warnings({**quiet, "misses_again": {"misses": 31, "confirmed": 6, "within_10pct_again": 0.9}})
    assert "25 of the check's 31 misses" in unsteady and "90% within 10%" in unsteady and "noise" in unsteady
    assert check_warnings({**quiet, "misses_again": {"misses": 31, "confirmed": 20, "within_10pct_again": 0.8}}) == []
    assert check_warnings({**quiet, "misses_again": {"misses": 2, "confirmed": 0, "within_10pct_again": 1.0}}) == []
    # Others kept a CPU of two busy beside the check: said, whatever the reference's own slowdown.
    beside = {"busy_batches": 0, "others_cpu": 0.97, "steal_cpu": 0.03, "cpus": 2.0}
    (neighbour,) = check_warnings({**quiet, "host": beside})
    assert "1.0 of this host's 2 CPUs" in neighbour and "quiet host" in neighbour
    assert check_warnings({**quiet, "host": {**beside, "others_cpu": 0.02, "steal_cpu": 0.0}}) == []


def test_calibration_networks_reach_the_floor_of_the_space():
    """A search's front ends at the space's floor (narrowest, shallowest, most pruned, no
    squeeze-excite): the calibration networks include networks there, so the front's cheapest
    networks are interpolated, not extrapolated."""
    from hwsearch.spaces import SpaceSpec
    from hwsearch.targets._profiling import floor_corner, sample_plans

    config = SpaceSpec(**TINY_SPACE)
    floor = floor_corner(config)
    assert floor.stem_widths == [8] and [s.widths for s in floor.stages] == [[8], [16]]
    assert [s.depths for s in floor.stages] == [[1], [1]] and floor.se == [False]
    assert floor.prune_ratios == [0.5] and floor.expand_ratios == [1]
    plans = sample_plans(config, (1, 8, 8), 10, 20, seed=3, spread=True)
    assert len(plans) == 20
    others = sample_plans(config, (1, 8, 8), 10, 200, seed=4)
    assert min(p.macs for p in plans) <= min(p.macs for p in others)
    assert plans[-1].macs == min(p.macs for p in plans)
    assert len(sample_plans(config, (1, 8, 8), 10, 5, seed=3, spread=True)) == 5
