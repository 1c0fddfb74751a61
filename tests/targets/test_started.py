"""Layers measured in the state a network runs them in: at more than one thread, a layer's entry is
the smaller of its time alone and what one more copy of it costs beside the first (``layer_method``
'started'), for real with onnxruntime."""

import numpy as np
import pytest

from hwsearch.spaces import Candidate, build_plan
from hwsearch.targets._cost import Latency
from hwsearch.targets._meter import random_feed, session
from hwsearch.targets._onnx_graph import layer_model, layer_shapes, random_weights
from hwsearch.targets._profile_format import Profile, ProfileError
from hwsearch.targets._profile_targets import LocalCpuTarget
from hwsearch.targets._profiling import COPIES, layer_method, measure_layer_entries, measure_layers

CAND = "c8:ir_r1_k3_e3_c8_re_w8a8:ir_r1_k3_e4_c16_s2_se_hs_w32a32:ir_r1_k3_e1_c16_fu_re_w8a8"


def test_copies_side_by_side_each_compute_the_layer_on_the_same_input():
    plan = build_plan(Candidate.from_string(CAND), (3, 16, 16), 10)
    rng = np.random.default_rng(0)
    for layer in plan.layers:  # stem, an int8 block, an fp32 block with squeeze-excite, a fused block, head
        weights = [random_weights(layer, rng) for _ in range(3)]
        side_by_side = session(layer_model(layer, weights).SerializeToString())
        feed = random_feed(side_by_side, layer_shapes(layer)[0])
        outs = side_by_side.run(None, feed)
        assert len(outs) == 3 and all(o.shape == layer_shapes(layer)[1] for o in outs)
        for w, out in zip(weights, outs):
            alone = session(layer_model(layer, w).SerializeToString())
            np.testing.assert_allclose(alone.run(None, feed)[0], out, rtol=1e-5, atol=1e-5, err_msg=layer.name)
        assert not np.array_equal(outs[0], outs[1])  # each copy has its own weights: nothing is shared


def test_one_thread_measures_layers_alone_and_more_measure_them_started():
    assert layer_method(1) == "alone" and layer_method(2) == "started" and layer_method(4) == "started"
    assert COPIES >= 3


def test_a_two_thread_profile_measures_layers_started_and_says_so(tmp_path):
    path = tmp_path / "p.json"
    target = LocalCpuTarget(threads=2, path=path)
    plan = build_plan(Candidate.from_string(CAND), (1, 8, 8), 10)
    cost = target.price(plan)
    assert cost.latency_ms > 0 and all(ms > 0 for _, ms in cost.blocks)
    saved = Profile.load(path)
    assert saved.layer_method == "started" and saved.device.threads == 2
    assert all(e.mean_ms > 0 and e.count >= 3 for e in saved.entries.values())
    # Entries measured alone do not add up with started ones: such a cache is measured again ...
    saved.layer_method = "alone"
    saved.save(path)
    again = LocalCpuTarget(threads=2, path=path)
    assert again.profile.layer_method == "started" and not again.profile.entries
    # ... and a profile is never topped up by the other method.
    with pytest.raises(ProfileError, match="do not add up"):
        measure_layers(saved, plan.layers, None, 2, "CPUExecutionProvider")


class RecordingMeter:
    """A meter at 2 threads that hands back given times: the arithmetic of an entry, without timing."""

    threads = 2

    def __init__(self, ms: dict[int, float]) -> None:
        self.ms, self.models = ms, []

    def measure(self, models, shapes):
        self.models += models
        return [Latency(self.ms[len(m.graph.output)], 0.001, 50) for m in models]


def test_a_started_entry_is_one_more_copy_over_the_first():
    plan = build_plan(Candidate.from_string(CAND), (1, 8, 8), 10)
    m = RecordingMeter({1: 0.010, COPIES: 0.010 + (COPIES - 1) * 0.003})
    (entry,) = measure_layer_entries(plan.layers[1:2], 0.004, m)
    assert [len(g.graph.output) for g in m.models] == [1, COPIES]  # the layer, then its copies, together
    assert entry.mean_ms == pytest.approx(0.003)  # below alone's 0.010 - 0.004: the wake-up is not in it
    # A copy costing more than the layer alone (its output handed back outweighs a tiny layer): alone
    (small,) = measure_layer_entries(plan.layers[1:2], 0.004, RecordingMeter({1: 0.006, COPIES: 0.006 + 3 * 0.005}))
    assert small.mean_ms == pytest.approx(0.002)
    # Noise can make the copies read no slower than one: the entry stays a small positive share, never 0.
    (floor,) = measure_layer_entries(plan.layers[1:2], 0.004, RecordingMeter({1: 0.010, COPIES: 0.009}))
    assert floor.mean_ms == pytest.approx(0.05 * 0.010)
