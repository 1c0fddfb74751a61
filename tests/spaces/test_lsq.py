"""Learned low-bit quantization (hwsearch.spaces.network, quantizer "lsq"): learned per-channel
weight steps and activation ranges below 8 bits, max-abs scales otherwise, and old state dicts."""

import math

import numpy as np
import pytest
import torch

from hwsearch.search.training import Data, Recipe, TrainSettings, evaluate, optimizer_for, trained_network
from hwsearch.spaces import Candidate, build_plan, network

TINY = "c8:ir_r1_k3_e3_c16_re_w4a4"


def deployed(cand: str, quantizer: str, seed: int = 0, learned_below: int = network.LEARNED_BELOW):
    """A pruned, folded network of ``cand`` (random weights) with quantization on."""
    plan = build_plan(Candidate.from_string(cand), (1, 8, 8), 10)
    net = network.fold_batchnorm(network.prune(network.build(plan, torch.Generator().manual_seed(seed)).eval()))
    return network.enable_quantization(net, quantizer, learned_below)


def random_data(n: int = 192, seed: int = 0) -> Data:
    """Four classes a small network can learn: the signs of two channels' means."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    y = (x[:, 0].mean((1, 2)) > 0).astype(np.int64) + 2 * (x[:, 1].mean((1, 2)) > 0).astype(np.int64)
    cut = n * 3 // 4
    return Data(x[:cut], y[:cut], x[cut:], y[cut:], ("a", "b", "c", "d"), 1.0, (0.0,) * 3, (1.0,) * 3)


def settings(quantizer: str, learned_below: int = network.LEARNED_BELOW) -> TrainSettings:
    return TrainSettings(1, 1, 32, 3e-3, recipe=Recipe(quantizer=quantizer, learned_below=learned_below))


def old_quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The max-abs quantizer as it was before learned steps (the reference ``maxabs`` keeps)."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-8) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    return w + (q - w)  # the straight-through form, computed as it was


def old_act_quant(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / levels, min=1e-8)
    zero = torch.clamp(torch.round(-lo / scale), 0, levels)
    q = (torch.clamp(torch.round(x / scale) + zero, 0, levels) - zero) * scale
    return x + (q - x)


def test_learned_steps_and_ranges_receive_gradients_and_move_without_weight_decay():
    net = deployed(TINY, "lsq").train()
    conv = net.blocks[0].expand.conv
    assert conv.w_step is not None and conv.w_step.shape == (conv.out_channels,)
    assert net.stem.conv.w_step is None and net.classifier.w_step is None  # 8 bits: max-abs
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    net(x)  # the first training batch initialises the learned activation ranges
    aq = conv.act_quant
    assert aq.step is not None and aq.offset is not None and bool(aq.seen)
    before = {"w_step": conv.w_step.detach().clone(), "a_step": aq.step.detach().clone(),
              "offset": aq.offset.detach().clone()}
    opt = optimizer_for(net, Recipe(weight_decay=0.1), lr=1e-2)
    learned = {id(p) for m in net.modules() for p in (getattr(m, "w_step", None), getattr(m, "step", None),
                                                      getattr(m, "offset", None)) if p is not None}
    decayed, free = opt.param_groups
    assert learned and learned <= {id(p) for p in free["params"]} and free["weight_decay"] == 0.0
    assert not learned & {id(p) for p in decayed["params"]}
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        assert conv.w_step.grad is not None and conv.w_step.grad.abs().sum() > 0
        assert aq.step.grad is not None and aq.step.grad != 0
        opt.step()
    assert not torch.equal(conv.w_step.detach(), before["w_step"])
    assert aq.step.item() != before["a_step"].item()


def test_the_step_gradient_is_lsqs_scaled_by_one_over_sqrt_n_qp():
    bits, qmax = 4, 7
    w = torch.tensor([[0.3, -1.3, 0.05, 2.0]], requires_grad=True)
    step = torch.tensor([0.2], requires_grad=True)
    network.quantize_weight(w, bits, step).sum().backward()
    v = w.detach() / 0.2  # 1.5, -6.5, 0.25, 10 (clipped at 7)
    inside = torch.where(v.abs() < qmax, torch.round(v) - v, torch.sign(v) * qmax)
    expected = inside.sum() / math.sqrt(w.numel() * qmax)
    torch.testing.assert_close(step.grad, expected.reshape(1))
    torch.testing.assert_close(w.grad, (v.abs() < qmax).float())  # straight through, nothing where clipped


@pytest.mark.parametrize("bits", [2, 4])
def test_weights_lie_on_the_learned_grid(bits):
    qmax = 2 ** (bits - 1) - 1
    net = deployed(TINY.replace("w4a4", f"w{bits}a{bits}"), "lsq")
    for m in net.modules():
        if isinstance(m, network.QConv2d) and m.w_bits == bits:
            with torch.no_grad():  # a step per channel, some coarse enough that nothing reaches the clamp
                m.w_step.mul_(torch.linspace(0.5, 3.0, len(m.w_step)))
            wq, step = m.quantized_weight().detach(), m.grid_step()
            s = step.view(-1, *[1] * (wq.dim() - 1))
            k = torch.round(wq / s)
            assert torch.equal(k * s, wq) and k.abs().max() <= qmax  # integer multiples of the step, exactly
            assert max(len(torch.unique(c)) for c in wq) <= 2**bits - 1
            assert not torch.allclose(step, network.weight_scale(m.weight, bits).flatten())  # not max-abs


@pytest.mark.parametrize("bits", [2, 4])
def test_activations_are_quantized_into_their_learned_range_on_2_to_the_b_levels(bits):
    aq = network.ActQuant()
    aq.bits = bits
    aq.learn_range()
    gen = torch.Generator().manual_seed(0)
    aq.train()
    aq(torch.randn(256, generator=gen) * 2 - 0.5)  # initialises the range
    with torch.no_grad():
        aq.step.mul_(1.3), aq.offset.sub_(0.2)  # as training would move them
    aq.eval()
    y = aq(torch.randn(10_000, generator=gen) * 3)
    scale, zero = aq.scale_zero_point()
    levels = 2**bits - 1
    lo, hi = -zero * scale, (levels - zero) * scale
    assert y.min() >= lo and y.max() <= hi and y.min() == lo and y.max() == hi  # clipped at both ends
    k = y / scale + zero
    assert torch.allclose(k, torch.round(k), atol=1e-4) and len(torch.unique(y)) == 2**bits
    assert 0.0 in y.tolist()  # 0 is on the grid (an integer zero point)
    assert zero == torch.round(torch.clamp(-aq.offset.detach() / scale, 0, levels))


def test_maxabs_is_todays_quantizer_exactly():
    net = deployed("c8:ir_r1_k3_e3_c16_se_hs_w2a4:ir_r1_k3_e1_c16_re_w4a2", "maxabs").train()
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    net(x)  # tracks the activation ranges
    net.eval()
    assert not any(k.endswith(("w_step", ".step", ".offset")) for k in net.state_dict())
    for m in net.modules():
        if isinstance(m, (network.QConv2d, network.QLinear)):
            assert torch.equal(m.quantized_weight().detach(), old_quantize_weight(m.weight.detach(), m.w_bits))
            aq = m.act_quant
            probe = torch.randn(500) * 4
            assert torch.equal(aq(probe), old_act_quant(probe, aq.lo, aq.hi, aq.bits))


def test_maxabs_gradients_pass_straight_through_with_nothing_else_recorded():
    """The max-abs grids' backward is the identity, as ``x + (q - x).detach()`` gave, and autograd
    keeps one node for it: the rounding, clamping and scaling run unrecorded."""
    net = deployed("c8:ir_r1_k3_e3_c16_re_w4a8", "maxabs").train()
    net(torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)))
    conv = next(m for m in net.modules() if isinstance(m, network.QConv2d) and m.w_bits < 32)
    r = torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(4))
    w = conv.weight.detach().clone().requires_grad_()
    q = network.quantize_weight(w, conv.w_bits)
    (q * r).sum().backward()
    assert torch.equal(w.grad, r)
    assert [type(f).__name__ for f, _ in q.grad_fn.next_functions] == ["AccumulateGrad", "NoneType"]  # w, q
    probe = (torch.randn(500, generator=torch.Generator().manual_seed(5)) * 4).requires_grad_()
    out = conv.act_quant(probe)
    out.backward(torch.ones(500))
    assert torch.equal(probe.grad, torch.ones(500))
    assert [type(f).__name__ for f, _ in out.grad_fn.next_functions] == ["AccumulateGrad", "NoneType"]


def test_lsq_leaves_8_bit_layers_as_maxabs_and_training_stays_deterministic():
    data = random_data()
    cand = Candidate.from_string("c8:ir_r1_k3_e3_c16_re_w8a8")
    runs = {q: evaluate(cand, data, None, settings(q), seed=3, keep_weights=True) for q in ("lsq", "maxabs")}
    assert runs["lsq"].curve == runs["maxabs"].curve  # nothing below 8 bits: nothing learned, same numbers
    assert all(torch.equal(v, runs["maxabs"].state_dict[k]) for k, v in runs["lsq"].state_dict.items())
    low = Candidate.from_string(TINY)
    a, b = (evaluate(low, data, None, settings("lsq"), seed=3, keep_weights=True) for _ in range(2))
    assert a.curve == b.curve and a.accuracy == b.accuracy
    assert a.state_dict.keys() == b.state_dict.keys() and any(k.endswith("w_step") for k in a.state_dict)
    assert all(torch.equal(v, b.state_dict[k]) for k, v in a.state_dict.items())
    # asked to, lsq learns 8-bit grids too, and then trains otherwise
    learned8 = evaluate(cand, data, None, settings("lsq", learned_below=9), seed=3, keep_weights=True)
    assert any(k.endswith("w_step") for k in learned8.state_dict)
    assert learned8.curve[-1] != runs["maxabs"].curve[-1]


def test_trained_network_rebuilds_learned_steps_and_loads_old_state_dicts_as_maxabs():
    data = random_data()
    cand = Candidate.from_string(TINY)
    x = torch.as_tensor(data.x_val)
    for quantizer in ("lsq", "maxabs"):
        ev = evaluate(cand, data, None, settings(quantizer), seed=1, keep_weights=True)
        steps = sorted(k for k in ev.state_dict if k.endswith(("w_step", ".step", ".offset")))
        assert bool(steps) == (quantizer == "lsq")
        net = trained_network(cand, data.input_shape, data.num_classes, ev.state_dict)
        assert sorted(k for k in net.state_dict() if k.endswith(("w_step", ".step", ".offset"))) == steps
        assert (net(x).argmax(1).numpy() == data.y_val).mean() == ev.accuracy  # the same network
    # a state dict from before learned steps: the max-abs layout, no step parameters anywhere
    net = trained_network(cand, data.input_shape, data.num_classes, ev.state_dict)
    assert all(m.w_step is None for m in net.modules() if isinstance(m, network.WeightQuant))
    assert all(m.step is None for m in net.modules() if isinstance(m, network.ActQuant))
    conv = net.blocks[0].expand.conv
    assert torch.equal(conv.quantized_weight(), old_quantize_weight(conv.weight, 4))


def test_the_spec_chooses_the_quantizer_and_it_is_part_of_the_studys_contract():
    from hwsearch.search.spec import parse_spec
    from hwsearch.search.study._contract import SpecChanged, check_contract, contract_of
    from hwsearch.search.training import train_settings
    from tests.conftest import tiny_spec

    lsq, maxabs = parse_spec(tiny_spec()), parse_spec(tiny_spec(training={"quantizer": "maxabs"}))
    assert lsq.training.quantizer == "lsq" and train_settings(lsq, 8).recipe.quantizer == "lsq"
    assert train_settings(maxabs, 8).recipe.quantizer == "maxabs"
    assert contract_of(lsq)["training.quantizer"] == "lsq"
    with pytest.raises(SpecChanged, match="training.quantizer: 'lsq' -> 'maxabs'"):
        check_contract(contract_of(lsq), maxabs, "runs/x")
    with pytest.raises(ValueError, match="quantizer must be one of lsq, maxabs"):
        Recipe(quantizer="pact")
