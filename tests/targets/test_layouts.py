"""Layout conversions at layers' edges: read off onnxruntime's optimised graphs, stored with the
entries, and what neighbours in a network save on them priced (``_layouts``), for real."""

import numpy as np
import pytest

from hwsearch.spaces import Candidate, SpaceSpec, build_plan
from hwsearch.targets._layouts import (
    LAYOUT_FEATURES,
    Layout,
    boundary_terms,
    conversions,
    kept_conversions,
    layer_layout,
    optimized,
)
from hwsearch.targets._meter import meter
from hwsearch.targets._onnx_graph import layer_model, network_model, random_network_weights, random_weights
from hwsearch.targets._profile_format import FEATURES, Calibration, Entry, Profile, block_key
from hwsearch.targets._profile_targets import ProfileTarget, new_profile
from hwsearch.targets._profiling import measure_layer_entries, sample_plans
from hwsearch.targets._target import network_features
from tests.conftest import TINY_SPACE

SHAPE = (1, 8, 8)
FP32_CHAIN = "c16:ir_r2_k3_e3_c16_re_w32a32:ir_r1_k3_e3_c32_re_w32a32"  # stem, block, residual block, block, head
INT8_CHAIN = "c16:ir_r2_k3_e3_c16_re_w8a8:ir_r1_k3_e3_c32_re_w8a8"


def layouts_of(plan, rng):
    models = [layer_model(layer, random_weights(layer, rng)) for layer in plan.layers]
    return models, [layer_layout(layer, m) for layer, m in zip(plan.layers, models)]


def test_the_rule_predicts_the_conversions_onnxruntime_leaves_in_whole_networks():
    """Per network: the conversions of its layers alone, less those the rule says neighbours keep,
    against the conversions in the network onnxruntime optimises (the rule matched 406 of 410 random
    networks on the AMD EPYC host; here most of a small sample, and it saves some in most)."""
    space = {**TINY_SPACE, "activations": ["relu", "hswish"], "weight_bits": [8, 32], "activation_bits": [8, 32]}
    plans = sample_plans(SpaceSpec(**space), SHAPE, 10, 16, seed=3, spread=True)
    rng = np.random.default_rng(0)
    matched = saving = 0
    for plan in plans:
        models, layouts = layouts_of(plan, rng)
        alone = sum(conversions(optimized(m.SerializeToString())) for m in models)
        net = network_model(plan, random_network_weights(plan, rng))
        kept = kept_conversions(plan.layers, layouts)
        matched += alone - kept == conversions(optimized(net.SerializeToString()))
        saving += kept > 0
    assert matched >= 13, f"the rule matched {matched} of {len(plans)} networks"
    assert saving >= 8  # not vacuous: most networks keep a layout across an edge


@pytest.mark.parametrize("candidate", [FP32_CHAIN, INT8_CHAIN])
def test_neighbours_in_one_layout_keep_it_and_the_network_runs_fewer_conversions(candidate):
    plan = build_plan(Candidate.from_string(candidate), (3, 16, 16), 10)
    models, layouts = layouts_of(plan, np.random.default_rng(0))
    alone = sum(conversions(optimized(m.SerializeToString())) for m in models)
    net = conversions(optimized(network_model(plan, random_network_weights(plan, np.random.default_rng(1)))
                                .SerializeToString()))
    assert net < alone  # what a layer alone converts at its edges, a network hands over as it is
    assert kept_conversions(plan.layers, layouts) == alone - net


def test_boundary_terms_follow_the_rule():
    plan = build_plan(Candidate.from_string(FP32_CHAIN), (3, 16, 16), 10)
    stem, block, residual, _, _ = plan.layers
    assert residual.residual and not block.residual
    c = Layout("nchwc", "nchwc")
    terms = boundary_terms(plan.layers, [Layout(None, "nchwc", 1), c, c, c, Layout("nchwc", None)])
    kelems = np.prod(stem.out_shape) / 1000
    assert terms[0] == {"split_act": 1.0, "split_act_kelems": kelems}  # the stem's own fused operator
    assert terms[1] == {"nchwc_kept": 2.0, "nchwc_kept_kelems": 2 * kelems}
    # the residual block's add runs where its input is: NCHWc, so its output stays so
    assert [t["nchwc_kept"] for t in terms[2:]] == [2.0, 2.0, 2.0]
    # its input made NCHW (the block before gives NCHW), its add runs in NCHW: nothing kept after it
    broken = boundary_terms(plan.layers, [Layout(None, "nchwc"), Layout("nchwc", None), c, c, c])
    assert broken[2] == {} and broken[3] == {} and broken[4]["nchwc_kept"] == 2.0
    assert boundary_terms(plan.layers, [None] * 5) == [{}] * 5
    assert set(LAYOUT_FEATURES) <= set(FEATURES)


def test_entries_are_measured_with_the_layouts_onnxruntime_gives_them():
    plan = build_plan(Candidate.from_string(INT8_CHAIN), SHAPE, 10)
    entries = measure_layer_entries(plan.layers, 0.0, meter(1))
    _, expected = layouts_of(plan, np.random.default_rng(5))
    assert [e.layout for e in entries] == expected
    assert entries[1].layout == Layout("nhwc", "nhwc")  # int8 kernels run NHWC on every CPU


def profile_with(candidate: str, layouts: list[Layout] | None) -> tuple[Profile, object]:
    p = new_profile("test-device")
    p.overhead_ms = Entry(mean_ms=0.005, std_ms=0.0, count=1)
    p.layouts = layouts is not None
    plan = build_plan(Candidate.from_string(candidate), (3, 16, 16), 10)
    for i, layer in enumerate(plan.layers):
        entry = Entry(mean_ms=0.01, std_ms=0.0, count=1)
        p.add(block_key(layer), entry.with_layout(layouts[i]) if layouts else entry)
    return p, plan


def test_a_price_counts_the_conversions_kept_and_a_profile_without_layouts_prices_as_before():
    c = Layout("nchwc", "nchwc")
    cal = Calibration(coef={"fp32_ms": 1.0, "nchwc_kept": -0.0005, "split_act": 0.001}, feature_set=3)
    with_layouts, plan = profile_with(FP32_CHAIN, [Layout(None, "nchwc", 1), c, c, c, Layout("nchwc", None)])
    without, _ = profile_with(FP32_CHAIN, None)
    with_layouts.calibration = without.calibration = cal
    a, b = ProfileTarget(with_layouts), ProfileTarget(without)
    assert b.layouts(plan) == [None] * 5
    assert a.price(plan).latency_ms == pytest.approx(b.price(plan).latency_ms + 4 * 2 * -0.0005 + 0.001)
    f = network_features(plan.layers, a.lookups(plan), a.layouts(plan))
    assert f["nchwc_kept"] == 8.0 and f["split_act"] == 1.0
    # round trip: the layouts are part of the file
    assert Profile.model_validate_json(with_layouts.model_dump_json()).layout(plan.layers[1]) == c


def test_an_interpolated_width_takes_the_layout_of_the_nearer_measured_width():
    """Expanded widths 96 and 48 measured (alignment class 16), 80 and 64 interpolated between them."""
    def block(prune: float):
        return build_plan(Candidate.from_string(f"c16:ir_r1_k3_e6_c16_re_p{prune}_w32a32"), SHAPE, 10).layers[1]

    p = new_profile("test-device")
    p.layouts = True
    wide, narrow = Layout("nchwc", "nchwc"), Layout(None, "nchwc")
    for prune, layout in ((0.0, wide), (0.5, narrow)):
        p.add(block_key(block(prune)), Entry(mean_ms=0.01, std_ms=0.0, count=1).with_layout(layout))
    for prune, nearer in ((0.17, wide), (0.33, narrow)):
        assert p.priced_by(block(prune)) == "interpolated"
        assert p.layout(block(prune)) == nearer
    p.layouts = False  # a profile that does not record them (an older file, a bundle, an estimate)
    assert p.layout(block(0.0)) is None
