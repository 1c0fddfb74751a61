"""Fused inverted residual blocks (Fused-MBConv): the string form, the space, the plan against the
torch network, pruning, the ONNX graphs against torch, pricing, and old spaces' fingerprints."""

import numpy as np
import pytest
import torch
from optuna.trial import FixedTrial

from hwsearch.spaces import Candidate, FusedBlockPlan, SpaceSpec, build_plan, network, params_of, space
from hwsearch.spaces._plan import reachable_layers
from hwsearch.targets._profile_format import BlockKey, block_key
from tests.conftest import TINY_SPACE
from tests.spaces.test_candidate import random_candidates

FUSED = SpaceSpec(fused=[False, True])
CAND = "c16:ir_r2_k3_e4_c24_fu_re_p0.25_w8a8:ir_r1_k5_e1_c32_fu_se_hs_w8a8:ir_r1_k3_e6_c48_re_w8a8"


def test_the_string_form_marks_fused_stages_and_round_trips():
    cand = Candidate.from_string(CAND)
    assert [s.fused for s in cand.stages] == [True, True, False]
    assert cand.to_string() == CAND
    assert "fused inverted residual" in cand.describe()
    cands = random_candidates(300, FUSED)
    assert {s.fused for c in cands for s in c.stages} == {False, True}
    for c in cands:
        assert Candidate.from_string(c.to_string()) == c
        assert space(FixedTrial(params_of(c, FUSED)), FUSED).stages == c.stages


def test_a_space_without_fused_blocks_asks_nothing_new_and_keeps_its_fingerprint():
    from hwsearch.targets._profiling import space_fingerprint

    config = SpaceSpec(**TINY_SPACE)
    assert "fused" not in config.model_dump() and "fused" not in config.model_dump(mode="json")
    assert not any(s.fused for c in random_candidates(50, config) for s in c.stages)
    trial = FixedTrial(params_of(random_candidates(1, config)[0], config))
    space(trial, config)
    assert not any(name.endswith("_fused") for name in trial.params)
    fused = SpaceSpec(**TINY_SPACE, fused=[False, True])
    assert fused.model_dump()["fused"] == [False, True] and SpaceSpec.model_validate(fused.model_dump()) == fused
    assert space_fingerprint(fused, (1, 8, 8), 10) != space_fingerprint(config, (1, 8, 8), 10)
    assert fused.size() == 2 ** len(fused.stages) * config.size()


def test_the_plan_counts_what_the_built_pruned_network_holds():
    plan = build_plan(Candidate.from_string(CAND), (3, 32, 32), 10)
    first = plan.blocks[0]
    assert isinstance(first, FusedBlockPlan) and first.kind == "fmb" and not first.has_expand
    assert first.cmid_dense == 16 * 4 and first.cmid == 48  # 25% of the expanded channels pruned
    assert set(first.convs) == {"fused", "project"} and first.convs["fused"] == ((48, 16, 3, 3), 1)
    ho, wo = first.hw_out
    assert first.macs == 16 * 48 * 9 * ho * wo + 48 * 24 * ho * wo
    for cand in [Candidate.from_string(CAND), *random_candidates(15, FUSED, seed=3)]:
        plan = build_plan(cand, (3, 32, 32), 10)
        small = network.prune(network.build(plan).eval())
        assert network.deployed_param_count(small) == plan.params, cand


def test_pruning_a_fused_block_keeps_its_most_important_channels_and_their_outputs():
    cand = Candidate.from_string("c8:ir_r1_k3_e4_c16_fu_re_p0.5_w32a32")
    plan = build_plan(cand, (1, 8, 8), 10)
    big = network.build(plan, torch.Generator().manual_seed(0)).eval()
    block, small = big.block_modules()[0], network.prune(big).block_modules()[0]
    keep = torch.sort(torch.topk(network.channel_importance(block), 16).indices).values
    assert small.dw.conv.weight.shape == (16, 8, 3, 3) and small.dw.conv.groups == 1
    assert torch.equal(small.dw.conv.weight, block.dw.conv.weight[keep])
    assert torch.equal(small.project.conv.weight, block.project.conv.weight[:, keep])
    with torch.no_grad():  # the kept channels compute what they computed in the dense block
        block.project.conv.weight[:, [c for c in range(32) if c not in set(keep.tolist())]] = 0
    x = torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(small(x), block(x))


@pytest.mark.parametrize("bits", [32, 8])
def test_the_onnx_network_computes_what_the_torch_network_computes(bits, tmp_path):
    import onnxruntime as ort

    from hwsearch.search.outputs._export import _float_activations, layer_weights, precision_variant, quantize_int8
    from hwsearch.targets._onnx_graph import network_model
    from tests.search.test_export import _assert_exact_grids

    cand = Candidate.from_string(CAND.replace("w8a8", f"w{bits}a{bits}"))
    plan = build_plan(cand, (3, 16, 16), 10)
    net = network.fold_batchnorm(network.prune(network.build(plan, torch.Generator().manual_seed(0)).eval()))
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    if bits < 32:
        network.enable_quantization(net, "lsq").train()
        net(x)  # initialises the activation ranges
    net.eval()
    fp32 = network_model(build_plan(precision_variant(cand, "fp32"), (3, 16, 16), 10), layer_weights(net, plan),
                         batch="N")
    sess = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x.numpy()})[0], _float_activations(net)(x).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    if bits < 32:
        _assert_exact_grids(fp32, quantize_int8(fp32, x.numpy(), tmp_path))  # the int8 file keeps the trained grid


def test_fused_layers_have_their_own_profile_keys_time_alone_in_onnxruntime_and_are_priced():
    from hwsearch.targets import UnpriceableError, get_target
    from hwsearch.targets._meter import session
    from hwsearch.targets._onnx_graph import layer_model, layer_shapes, random_weights

    config = SpaceSpec(**TINY_SPACE, fused=[False, True])
    layers = [layer for layer in reachable_layers(config, (1, 8, 8), 10) if isinstance(layer, FusedBlockPlan)]
    assert layers and {block_key(layer).kind for layer in layers} == {"fmb"}
    for layer in layers[:6]:
        key = block_key(layer)
        assert BlockKey.parse(str(key)) == key and str(key).startswith("fmb|") and key.prunable
        model = layer_model(layer, random_weights(layer, np.random.default_rng(0)))
        sess = session(model.SerializeToString())
        feed = sess.get_inputs()[0]
        x = np.zeros(feed.shape, np.float32 if feed.type == "tensor(float)" else np.uint8)
        assert sess.run(None, {feed.name: x})[0].shape == layer_shapes(layer)[1]
    plan = build_plan(Candidate.from_string(CAND), (3, 32, 32), 10)
    depthwise = build_plan(Candidate.from_string(CAND.replace("_fu", "")), (3, 32, 32), 10)
    for name in ("rpi4-a72", "mcu-m7"):  # roofline estimates: a fused block prices as its dense work
        fused, dw = dict(get_target(name).price(plan).blocks), dict(get_target(name).price(depthwise).blocks)
        assert fused["s0.b0"] > dw["s0.b0"] > 0
    with pytest.raises(UnpriceableError, match="fmb"):  # a measured profile without them says so: never free
        get_target("x86-epyc-1t").price(plan)


def test_a_fixed_stage_stride_keeps_resolution_and_an_unfixed_space_keeps_its_fingerprint():
    from hwsearch.targets._profiling import space_fingerprint

    stages = [{"widths": [8, 12], "depths": [1, 2], "stride": 1}, {"widths": [16], "depths": [1], "stride": 2}]
    config = SpaceSpec(**{**TINY_SPACE, "stages": stages}, fused=[False, True])
    cands = random_candidates(100, config)
    layers = {block_key(layer) for layer in reachable_layers(config, (3, 32, 32), 10)}
    for c in cands:
        assert [s.stride for s in c.stages] == [1, 2]
        assert Candidate.from_string(c.to_string()) == c and "_s1_" in c.to_string()
        assert space(FixedTrial(params_of(c, config)), config).stages == c.stages
        plan = build_plan(c, (3, 32, 32), 10)
        # 32x32 through the first stage (the rule alone downsamples every stage: 16, 8)
        assert [b.hw_out for b in plan.blocks][0] == (32, 32) and plan.blocks[-1].hw_out == (16, 16)
        assert {block_key(layer) for layer in plan.layers} <= layers  # the profile can price it
    auto = build_plan(Candidate.from_string(cands[0].to_string().replace("_s1", "").replace("_s2", "")),
                      (3, 32, 32), 10)
    assert [b.hw_out for b in auto.blocks][0] == (16, 16)
    with pytest.raises(ValueError, match="stride"):
        params_of(Candidate.from_string(cands[0].to_string().replace("_s1", "")), config)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        Candidate.from_string("c8:ir_r1_k3_e1_c8_s3_re_w8a8")
    # a space that fixes no stride dumps as before: its fingerprint and its studies' contracts hold
    plain = SpaceSpec(**TINY_SPACE)
    assert all("stride" not in s for s in plain.model_dump()["stages"])
    fixed = SpaceSpec(**{**TINY_SPACE, "stages": stages})
    assert SpaceSpec.model_validate(fixed.model_dump()) == fixed
    assert space_fingerprint(fixed, (1, 8, 8), 10) != space_fingerprint(plain, (1, 8, 8), 10)
