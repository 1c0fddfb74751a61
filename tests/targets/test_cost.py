import json

import pytest

from hwsearch.spaces import Candidate, build_plan
from hwsearch.targets import Cost, Latency, Profile, ProfileError, UnpriceableError, get_target, layer_key, list_targets
from hwsearch.targets._cost import network_macs, peak_memory_kb, size_kb
from hwsearch.targets._profile_targets import LocalCpuTarget, ProfileTarget

CAND = "c8:ir_r1_k3_e3_c8_re_p0.5_w8a8:ir_r2_k3_e4_c16_se_hs_w4a32"


def test_size_is_exact_arithmetic_at_bit_widths():
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e1_c8_re_w32a32"), (1, 8, 8), 10)
    # stem 1*8*9 + 8 ; block: dw 8*9+8, project 8*8+8 ; head 8*10+10 -- all 32-bit
    params = (72 + 8) + (72 + 8 + 64 + 8) + (80 + 10)
    assert plan.params == params
    assert size_kb(plan) == pytest.approx(params * 4 / 1024)
    low = build_plan(Candidate.from_string("c8:ir_r1_k3_e1_c8_re_w4a8"), (1, 8, 8), 10)
    # weights at 4 bits in the block, 8 bits in stem/head (end layers stay >= 8), biases at 32
    bits = (72 * 8 + 8 * 32) + ((72 + 64) * 4 + 16 * 32) + (80 * 8 + 10 * 32)
    assert size_kb(low) == pytest.approx(bits / 8 / 1024)


def test_peak_memory_counts_live_activations_at_activation_bits():
    tail = ":ir_r1_k3_e1_c8_re_w32a32:ir_r1_k3_e1_c8_re_w32a32"  # 3 stages: the first keeps 8x8
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e4_c8_re_w32a32" + tail), (1, 8, 8), 10)
    assert plan.blocks[0].residual and plan.blocks[0].stride == 1
    # residual block at 8x8: input 8ch held, expanded 32ch in and out of the depthwise conv
    x, mid = 8 * 64, 32 * 64
    assert peak_memory_kb(plan) == pytest.approx((mid + mid + x) * 4 / 1024)
    plan8 = build_plan(Candidate.from_string(("c8:ir_r1_k3_e4_c8_re_w32a32" + tail).replace("a32", "a8")
                                             .replace("w32", "w8")), (1, 8, 8), 10)
    assert peak_memory_kb(plan8) == pytest.approx(peak_memory_kb(plan) / 4)


def test_cost_round_trips_and_latency_adds():
    c = Cost(0.5, 10.0, 2.0, (("stem", 0.1), ("s0.b0", 0.4)))
    assert Cost.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    total = Latency(1.0, 0.3) + Latency(2.0, 0.4)
    assert total.mean_ms == 3.0 and total.std_ms == pytest.approx(0.5)


def test_local_cpu_measures_with_onnxruntime_and_caches(tmp_path):
    target = LocalCpuTarget(threads=1, path=tmp_path / "p.json")
    plan = build_plan(Candidate.from_string(CAND), (1, 8, 8), 10)
    cost = target.price(plan)
    assert cost.latency_ms > 0
    names = [n for n, _ in cost.blocks]
    assert names == ["stem", "s0.b0", "s1.b0", "s1.b1", "head", "overhead"]
    assert sum(ms for _, ms in cost.blocks) == pytest.approx(cost.latency_ms)
    assert all(ms > 0 for _, ms in cost.blocks)
    saved = Profile.load(tmp_path / "p.json")
    assert saved.device.measured and saved.device.threads == 1
    assert {layer_key(layer) for layer in plan.layers} <= set(saved.entries)
    assert all(e.count >= 50 for e in saved.entries.values())  # many timed repeats
    again = LocalCpuTarget(threads=1, path=tmp_path / "p.json")  # loads instead of measuring
    assert again.price(plan) == cost


def test_local_cpu_measures_the_space_grid_before_a_search_and_records_layouts(tmp_path):
    """The grid first, before anything trains (layers timed on first use between trials read low),
    each entry with the layouts at its edges; a cache from before layouts were recorded is measured
    again."""
    from hwsearch.spaces import SpaceSpec
    from hwsearch.spaces._plan import reachable_layers
    from hwsearch.targets._profiling import select_grid
    from tests.conftest import TINY_SPACE

    config = SpaceSpec(**TINY_SPACE)
    target = LocalCpuTarget(threads=1, path=tmp_path / "p.json")
    assert target.profile.layouts
    assert target.ensure_calibrated(config, (1, 8, 8), 10, networks=8)
    saved = Profile.load(tmp_path / "p.json")
    grid = select_grid(reachable_layers(config, (1, 8, 8), 10))
    assert {layer_key(layer) for layer in grid} <= set(saved.entries)
    int8 = [e for k, e in saved.entries.items() if k.endswith("int8") and k.startswith("ir|")]
    assert int8 and all(e.layout_in == "nhwc" for e in int8)  # int8 kernels run NHWC, converted at the edges
    assert not target.ensure_calibrated(config, (1, 8, 8), 10)  # once per space
    saved.layouts = False
    saved.save(tmp_path / "old.json")
    assert not LocalCpuTarget(threads=1, path=tmp_path / "old.json").profile.entries


def test_int8_and_fp32_layers_are_measured_separately(tmp_path):
    target = LocalCpuTarget(threads=1, path=tmp_path / "p.json")
    fp = build_plan(Candidate.from_string("c8:ir_r1_k3_e3_c16_re_w32a32"), (1, 8, 8), 10)
    q = build_plan(Candidate.from_string("c8:ir_r1_k3_e3_c16_re_w8a8"), (1, 8, 8), 10)
    assert layer_key(fp.blocks[0]).endswith("fp32") and layer_key(q.blocks[0]).endswith("int8")
    target.price(fp), target.price(q)
    assert layer_key(fp.blocks[0]) in target.profile.entries and layer_key(q.blocks[0]) in target.profile.entries


def test_profile_target_raises_on_a_layer_it_cannot_price(tmp_path):
    local = LocalCpuTarget(threads=1, path=tmp_path / "p.json")
    plan = build_plan(Candidate.from_string(CAND), (1, 8, 8), 10)
    local.price(plan)
    path = tmp_path / "copy.json"
    local.profile.save(path)
    target = ProfileTarget.load(path)
    assert target.price(plan).latency_ms == pytest.approx(local.price(plan).latency_ms)
    wider = build_plan(Candidate.from_string(CAND.replace("c16", "c24")), (1, 8, 8), 10)
    with pytest.raises(UnpriceableError, match="s1.b0"):
        target.price(wider)


def test_profile_load_names_file_and_field(tmp_path):
    local = LocalCpuTarget(threads=1, path=tmp_path / "p.json")
    data = json.loads(local.profile.model_dump_json())
    bad_version = tmp_path / "v.json"
    bad_version.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ProfileError, match="v.json: schema_version is 99"):
        Profile.load(bad_version)
    missing = tmp_path / "m.json"
    del data["device"]["threads"]
    missing.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"m.json.*device\.threads"):
        Profile.load(missing)
    corrupt = tmp_path / "c.json"
    corrupt.write_text("{not json")
    with pytest.raises(ProfileError, match="c.json: not a readable JSON"):
        Profile.load(corrupt)


def test_registry_lists_local_cpu_and_refuses_unknown_names():
    assert "local-cpu" in list_targets()
    with pytest.raises(KeyError, match="unknown target 'pi5'"):
        get_target("pi5")


def test_network_macs_match_the_multiply_adds_the_built_pruned_network_performs():
    """``network_macs`` (the estimated targets' compute and the cost-aware sampler's capacity
    feature) equals what the pruned network's convolutions and classifier compute, counted from
    their inputs and outputs in a forward pass."""
    import optuna
    import torch

    from hwsearch.spaces import SpaceSpec, network, space

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            counted.append(output.numel() * module.in_channels // module.groups * k)
        else:
            counted.append(output.numel() * module.in_features)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    for shape in [(3, 32, 32), (1, 8, 8), (3, 96, 96)]:
        for _ in range(8):
            cand = space(study.ask(), SpaceSpec())
            plan = build_plan(cand, shape, 10)
            small = network.prune(network.build(plan).eval())
            counted: list[int] = []
            hooks = [m.register_forward_hook(count) for m in small.modules()
                     if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
            with torch.no_grad():
                small(torch.zeros(1, *shape))
            for h in hooks:
                h.remove()
            assert sum(counted) == network_macs(plan), cand
