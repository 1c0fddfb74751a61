import pytest
import torch
import torch.nn.functional as F

from hwsearch.spaces import Candidate, build_plan, network


def make(cand: str, shape=(1, 8, 8), classes=10, seed=0):
    plan = build_plan(Candidate.from_string(cand), shape, classes)
    return plan, network.build(plan, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 224, 224), (1, 28, 28)])
def test_builder_works_for_any_input_and_downsamples_to_fit(shape):
    plan, net = make("c8:ir_r1_k3_e3_c16_re_w32a32:ir_r2_k5_e4_c24_se_hs_w32a32:ir_r1_k3_e6_c32_re_w32a32", shape)
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert min(plan.head.hw_in) >= 2  # tiny inputs are not downsampled away


def test_pruning_removes_channels_physically_by_the_expected_amount():
    cand = "c16:ir_r2_k3_e4_c24_se_hs_p0.5_w32a32:ir_r1_k5_e6_c32_re_p0.25_w32a32:ir_r1_k3_e1_c32_re_w32a32"
    plan, dense = make(cand)
    dense.eval()
    small = network.prune(dense)
    # every expanded layer shrinks to the planned width: 16*4=64 -> 32, 24*4=96 -> 48, 24*6=144 -> 108
    assert [b.expand.conv.out_channels for b in small.blocks if b.expand is not None] == [32, 48, 108]
    assert [b.dw.conv.out_channels for b in small.blocks] == [32, 48, 108, 32]
    # the deployed parameter count drops by exactly the removed channels' weights
    expected_removed = 0
    for b in plan.blocks:
        removed = b.cmid_dense - b.cmid
        per_channel = (b.cin + 1) + (b.kernel**2 + 1) + b.cout + ((2 * b.se + 1) if b.se else 0)
        expected_removed += removed * per_channel
    assert network.deployed_param_count(dense) - network.deployed_param_count(small) == expected_removed
    assert network.deployed_param_count(small) == plan.params
    x = torch.randn(5, 1, 8, 8)
    assert small(x).shape == dense(x).shape == (5, 10)


def test_pruning_keeps_the_most_important_channels():
    plan, dense = make("c8:ir_r1_k3_e4_c8_re_p0.5_w32a32")
    dense.eval()
    block = dense.blocks[0]
    importance = network.channel_importance(block)
    keep = torch.topk(importance, plan.blocks[0].cmid).indices.sort().values
    small = network.prune(dense)
    torch.testing.assert_close(small.blocks[0].expand.conv.weight, block.expand.conv.weight[keep])
    torch.testing.assert_close(small.blocks[0].project.conv.weight, block.project.conv.weight[:, keep])


def test_recalibrated_batch_norms_hold_the_pruned_networks_own_statistics():
    """After pruning, each batch norm's running mean and variance are those of the activations it
    now sees (one batch of all the images here: the cumulative average is that batch's)."""
    _, dense = make("c8:ir_r1_k3_e4_c8_re_p0.5_w32a32:ir_r1_k3_e6_c16_fu_re_p0.5_w32a32")
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    dense.train()
    for _ in range(20):  # running statistics of the dense network
        dense(x * 3 + 1)
    small = network.prune(dense.eval())
    seen = {}
    bns = {m: name for name, m in small.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(bns[m], i[0].detach())) for m in bns]
    assert network.recalibrate_batchnorm(small, x, batch=64) is small and not small.training
    for h in hooks:
        h.remove()
    for m, name in bns.items():
        torch.testing.assert_close(m.running_mean, seen[name].mean(dim=(0, 2, 3)), msg=name)
        torch.testing.assert_close(m.running_var, seen[name].var(dim=(0, 2, 3), unbiased=True), msg=name)
        assert m.momentum == 0.1  # restored
    # the stale statistics were far from these: pruning and the dense network's inputs moved them
    stale = network.prune(dense.eval()).blocks[0].project.bn.running_mean
    assert not torch.allclose(stale, small.blocks[0].project.bn.running_mean, atol=0.05)


def test_unpruned_network_is_unchanged_by_prune():
    _, dense = make("c8:ir_r1_k3_e4_c8_re_w32a32:ir_r1_k3_e1_c16_hs_w32a32")
    dense.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(network.prune(dense)(x), dense(x))


def test_batchnorm_folding_preserves_outputs():
    _, net = make("c8:ir_r2_k3_e4_c16_se_hs_p0.25_w32a32:ir_r1_k5_e3_c24_re_w32a32")
    for m in net.modules():  # give batch norms non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    small = network.prune(net)
    x = torch.randn(4, 1, 8, 8)
    before = small(x)
    network.fold_batchnorm(small)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in small.modules())
    torch.testing.assert_close(small(x), before, atol=1e-5, rtol=1e-4)


def _gradients_with_relu_inplace(cand: str, inplace: bool, quantized: bool) -> list[torch.Tensor]:
    _, net = make(cand)
    if quantized:
        net.eval()
        net = network.enable_quantization(network.fold_batchnorm(network.prune(net)), "lsq", 8)
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = inplace
    net.train()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    F.cross_entropy(net(x), torch.tensor([0, 1, 2, 3])).backward()
    return [p.grad for p in net.parameters() if p.grad is not None]


@pytest.mark.parametrize("quantized", [False, True])
def test_relu_in_place_trains_exactly_as_out_of_place(quantized):
    """Training runs its ReLUs in place for speed: the gradients must be those of the plain ReLU,
    dense and quantization-aware (learned steps and ranges included), with fused blocks, SE and
    hard-swish beside them."""
    cand = "c8:ir_r1_k3_e3_c16_fu_se_re_p0.5_w4a4:ir_r2_k3_e4_c16_se_hs_w8a8:ir_r1_k3_e1_c24_re_w2a8"
    _, built = make(cand)
    assert any(isinstance(m, torch.nn.ReLU) and m.inplace for m in built.modules())
    inplace = _gradients_with_relu_inplace(cand, True, quantized)
    plain = _gradients_with_relu_inplace(cand, False, quantized)
    assert len(inplace) == len(plain) > 10
    for a, b in zip(inplace, plain):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quant_leaves_at_most_2_to_the_b_values_per_output_channel(bits):
    w = torch.randn(16, 64, 3, 3, generator=torch.Generator().manual_seed(0)).requires_grad_()
    q = network.quantize_weight(w, bits)
    for channel in q.detach():
        assert len(torch.unique(channel)) <= 2**bits
    assert len(torch.unique(q.detach()[0])) > 2 ** (bits - 2)  # the grid is really used
    q.sum().backward()  # straight-through: the gradient passes as if quantization were identity
    torch.testing.assert_close(w.grad, torch.ones_like(w))


def test_quantization_aware_network_has_low_bit_weights_in_its_forward():
    plan, net = make("c8:ir_r1_k3_e3_c8_re_w4a8:ir_r1_k3_e1_c16_re_w4a8")
    net.eval()
    small = network.enable_quantization(network.fold_batchnorm(network.prune(net)))
    conv = small.blocks[0].expand.conv
    assert conv.w_bits == 4 and conv.act_quant.bits == 8
    wq = network.quantize_weight(conv.weight, conv.w_bits).detach()
    assert max(len(torch.unique(c)) for c in wq) <= 16
    small.train()
    small(torch.randn(8, 1, 8, 8))  # calibrates activation ranges
    small.eval()
    y = small.blocks[0].expand.conv.act_quant(torch.randn(1000))
    assert len(torch.unique(y)) <= 2**8


def test_distillation_loss_at_alpha_zero_is_cross_entropy():
    torch.manual_seed(0)
    s, t, y = torch.randn(32, 10), torch.randn(32, 10), torch.randint(0, 10, (32,))
    torch.testing.assert_close(network.distillation_loss(s, t, y, temperature=4.0, alpha=0.0),
                               F.cross_entropy(s, y))


def test_distillation_loss_at_alpha_one_is_scaled_kl_and_zero_for_identical_logits():
    torch.manual_seed(0)
    s, t, y = torch.randn(32, 10), torch.randn(32, 10), torch.randint(0, 10, (32,))
    T = 3.0
    expected = T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    torch.testing.assert_close(network.distillation_loss(s, t, y, T, 1.0), expected)
    assert network.distillation_loss(t, t, y, T, 1.0).abs() < 1e-6
    with pytest.raises(ValueError, match="teacher"):
        network.distillation_loss(s, None, y, T, 0.5)


def test_plan_params_match_the_built_pruned_network_for_random_candidates():
    import optuna

    from hwsearch.spaces import SpaceSpec, space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        cand = space(study.ask(), SpaceSpec())
        plan = build_plan(cand, (3, 32, 32), 10)
        small = network.prune(network.build(plan).eval())
        assert network.deployed_param_count(small) == plan.params, cand

