"""Torch code that builds, prunes, quantizes and distils a candidate.

The life of a network here is the classic deployment pipeline:

1. :func:`build` makes the dense network of a plan (convolution + batch norm + activation);
2. :func:`prune` ranks each block's expanded channels by the L1 norm of their expand filters and
   builds a *smaller dense network* without the pruned ones (channels physically removed);
3. :func:`fold_batchnorm` folds every batch norm into its convolution (weights + bias), the form
   that is deployed;
4. :func:`enable_quantization` turns on fake quantization at the plan's bit widths: per-channel
   symmetric weights, per-tensor asymmetric activations (at the input of every convolution and of
   the classifier), straight-through gradients. Training on from there is quantization-aware.
   The grids are max-abs scales and EMA-tracked activation ranges, or, with the ``lsq`` quantizer,
   learned below 8 bits: per-channel weight steps and activation ranges trained with the network
   (LSQ, Esser et al. 2020; its gradient scale ``1 / sqrt(N * Qp)``). :func:`load_quantized`
   rebuilds either from a state dict.

:func:`distillation_loss` is the knowledge-distillation objective.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.spaces._plan import BlockPlan, NetworkPlan

__all__ = [
    "ActQuant",
    "ConvBNAct",
    "InvertedResidual",
    "LEARNED_BELOW",
    "Net",
    "QConv2d",
    "QLinear",
    "QUANTIZERS",
    "SqueezeExcite",
    "WeightQuant",
    "build",
    "channel_importance",
    "deployed_param_count",
    "distillation_loss",
    "enable_quantization",
    "fold_batchnorm",
    "load_quantized",
    "param_count",
    "prune",
    "quantize_weight",
    "weight_scale",
]

BN_EPS = 1e-5


# --------------------------------------------------------------------------------------------
# Fake quantization
# --------------------------------------------------------------------------------------------

QUANTIZERS = ("lsq", "maxabs")
LEARNED_BELOW = 8  # under "lsq", layers below this many bits learn their grid; 8 bits and up keep max-abs
MIN_STEP = 1e-8  # learned steps are clamped to this in the forward pass


class _RoundSTE(torch.autograd.Function):
    """``round(x)`` forward, identity backward: the straight-through estimator, in one pass
    (``round(x).detach() + (x - x.detach())`` took three, each recorded for the backward pass)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward (exactly), identity backward: the straight-through estimator."""
    out: torch.Tensor = _RoundSTE.apply(x)  # type: ignore[no-untyped-call]
    return out


class _StraightThrough(torch.autograd.Function):
    """``q`` forward, the gradient to ``x`` unchanged backward: ``x + (q - x).detach()`` without
    recording anything but this. :func:`_straight_through` makes ``q`` that very sum, to the bit,
    under ``torch.no_grad()``, so autograd neither records its operators nor keeps their inputs. On a
    MobileNet-style candidate at w8a8 (2-core AMD EPYC host, batch 128, ``bench/train_throughput.py``)
    the fake-quantized training step ran 1.76x as fast, with the same weights to the bit."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return q

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``x + (q - x).detach()`` to the bit, with the gradient to ``x`` unchanged backward
    (:class:`_StraightThrough`); ``q``, computed without autograd, is overwritten."""
    with torch.no_grad():
        q.sub_(x).add_(x)
    out: torch.Tensor = _StraightThrough.apply(x, q)  # type: ignore[no-untyped-call]
    return out


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward (exactly), its gradient times ``g`` backward: LSQ's step-size gradient scale."""
    y = x * g
    return x.detach() + (y - y.detach())


def quantize_weight(w: torch.Tensor, bits: int, step: torch.Tensor | None = None) -> torch.Tensor:
    """Per-output-channel symmetric fake quantization with a straight-through gradient.

    Values land on ``step * q`` with integer ``q`` in ``[-(2^(b-1) - 1), 2^(b-1) - 1]``, so a
    channel holds at most ``2^b - 1`` distinct values. ``step`` (one per output channel) is the
    grid's learned step (LSQ): the weights' gradient passes where they are not clipped, and the
    step's is scaled by ``1 / sqrt(weights per channel * (2^(b-1) - 1))``. Without it the step is
    :func:`weight_scale` (max-abs) and the gradient passes everywhere. ``bits >= 32`` returns ``w``
    unchanged.
    """
    if bits >= 32:
        return w
    qmax = 2 ** (bits - 1) - 1
    if step is None:
        with torch.no_grad():
            scale = weight_scale(w, bits)
            q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
        return _straight_through(w, q)
    g = 1.0 / math.sqrt(w[0].numel() * qmax)
    s = _grad_scale(step.clamp_min(MIN_STEP), g).view(-1, *([1] * (w.dim() - 1)))
    return _round_ste(torch.clamp(w / s, -qmax, qmax)) * s


def weight_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel max-abs scale of :func:`quantize_weight`, shaped to broadcast against ``w``."""
    qmax = 2 ** (bits - 1) - 1
    dims = tuple(range(1, w.dim()))
    scale: torch.Tensor = w.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-8) / qmax
    return scale


def _lsq_init(mean_abs: torch.Tensor, qp: int, widest: torch.Tensor) -> torch.Tensor:
    """LSQ's initial step ``2 mean|x| / sqrt(Qp)``, never coarser than max-abs's ``widest``."""
    return torch.minimum(2 * mean_abs / math.sqrt(qp), widest).clamp_min(MIN_STEP)


class WeightQuant:
    """What :class:`QConv2d` and :class:`QLinear` share: their weights' bit width and grid.

    ``w_step`` is None (max-abs scales, recomputed from the weights at every step) until
    :meth:`learn_step` makes it a parameter: one step per output channel, learned with LSQ."""

    weight: torch.Tensor
    w_bits: int
    w_step: torch.Tensor | None

    def quantized_weight(self) -> torch.Tensor:
        """The weights as the forward pass uses them: on their grid below 32 bits."""
        return quantize_weight(self.weight, self.w_bits, self.w_step)

    def grid_step(self) -> torch.Tensor:
        """The step of each output channel's grid (shape ``(out,)``), learned or max-abs: the
        quantized weights are exactly integer multiples of it."""
        if self.w_step is not None:
            return self.w_step.detach().clamp_min(MIN_STEP)
        return weight_scale(self.weight, self.w_bits).flatten()

    def learn_step(self) -> None:
        """Learn the weights' per-channel step from now on, starting from LSQ's initial step."""
        qmax = 2 ** (self.w_bits - 1) - 1
        w = self.weight.detach().flatten(1)
        init = _lsq_init(w.abs().mean(1), qmax, w.abs().amax(1) / qmax)
        cast(nn.Module, self).register_parameter("w_step", nn.Parameter(init))


class ActQuant(nn.Module):
    """Per-tensor asymmetric fake quantization of activations on ``2^b`` levels.

    The range is ``[-zero * scale, (2^b - 1 - zero) * scale]`` with an integer zero point, so 0 is
    always on the grid. It is tracked by an EMA of the batches' min and max in training mode, or,
    once :meth:`learn_range` was called, learned: a step and an offset, the range's low end (LSQ+,
    Bhalgat et al. 2020), with straight-through rounding and LSQ's gradient scale
    ``1 / sqrt(features per sample * (2^b - 1))``; the zero point is the offset rounded to the grid.
    Disabled (identity) until :func:`enable_quantization` sets ``bits`` below 32.
    """

    lo: torch.Tensor  # buffers: the tracked range, and whether any batch was seen
    hi: torch.Tensor
    seen: torch.Tensor
    step: torch.Tensor | None  # parameters once the range is learned: the step, the range's low end
    offset: torch.Tensor | None

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits = 32
        self.momentum = momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self.register_parameter("step", None)
        self.register_parameter("offset", None)

    def learn_range(self) -> None:
        """Learn the range from now on: a step and an offset, initialised from the first batch seen
        in training mode (LSQ's step, never coarser than the batch's min-max range), or from the
        tracked range when a batch was seen already."""
        self.step = nn.Parameter(torch.ones((), device=self.lo.device))
        self.offset = nn.Parameter(torch.zeros((), device=self.lo.device))
        if bool(self.seen):
            self._start_learning(None)

    @torch.no_grad()
    def _start_learning(self, x: torch.Tensor | None) -> None:
        assert self.step is not None and self.offset is not None
        if x is not None:
            self.lo.copy_(x.min()), self.hi.copy_(x.max()), self.seen.fill_(True)
        widest, zero = self._ema_scale_zero_point()
        step = _lsq_init(x.abs().mean(), 2**self.bits - 1, widest) if x is not None else widest
        self.step.copy_(step)
        self.offset.copy_(-zero * step)

    def _ema_scale_zero_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        levels = 2**self.bits - 1
        lo, hi = torch.clamp(self.lo, max=0.0), torch.clamp(self.hi, min=0.0)
        scale = torch.clamp((hi - lo) / levels, min=1e-8)
        zero = torch.clamp(torch.round(-lo / scale), 0, levels)
        return scale, zero

    def scale_zero_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid's step and integer zero point as the forward pass uses them (detached)."""
        if self.step is None or self.offset is None:
            return self._ema_scale_zero_point()
        s = self.step.detach().clamp_min(MIN_STEP)
        return s, torch.clamp(torch.round(-self.offset.detach() / s), 0, 2**self.bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits >= 32:
            return x
        levels = 2**self.bits - 1
        if self.step is not None and self.offset is not None:
            if self.training and not bool(self.seen):
                self._start_learning(x.detach())
            g = 1.0 / math.sqrt(x[0].numel() * levels)
            s = _grad_scale(self.step.clamp_min(MIN_STEP), g)
            zero = _round_ste(torch.clamp(-_grad_scale(self.offset, g) / s, 0, levels))
            learned: torch.Tensor = (_round_ste(torch.clamp(x / s + zero, 0, levels)) - zero) * s
            return learned
        if self.training:
            lo, hi = torch.aminmax(x.detach())
            if not bool(self.seen):
                self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
            else:
                self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)
        scale, zero = self._ema_scale_zero_point()
        with torch.no_grad():  # in place and unrecorded
            q = torch.div(x, scale).round_().add_(zero).clamp_(0, levels).sub_(zero).mul_(scale)
        return _straight_through(x, q)


class QConv2d(WeightQuant, nn.Conv2d):
    """A convolution whose input and weights are fake-quantized once bits are set below 32."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.w_bits = 32
        self.register_parameter("w_step", None)
        self.act_quant = ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self._conv_forward(self.act_quant(x), self.quantized_weight(), self.bias)
        return y


class QLinear(WeightQuant, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.w_bits = 32
        self.register_parameter("w_step", None)
        self.act_quant = ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------

ACTIVATION_MODULES = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def _activation(name: str | None) -> nn.Module:
    """The activation module after a batch norm (or, folded, a convolution): ReLU in place, which
    neither's backward pass reads (bench/train_throughput.py measures what it saves); hard-swish's
    backward reads its input, so it keeps its own output."""
    if not name:
        return nn.Identity()
    return nn.ReLU(inplace=True) if name == "relu" else ACTIVATION_MODULES[name]()


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu") -> None:
        super().__init__()
        self.conv = QConv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn(self.conv(x)))
        return y


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = QConv2d(channels, squeeze, 1, bias=True)
        self.expand = QConv2d(squeeze, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """An inverted residual block, or a fused one (``plan.fused``): then ``dw`` is the dense kxk
    convolution from the input to the expanded channels and there is no ``expand`` (the name is
    kept so that both kinds' weights share one layout of state)."""

    def __init__(self, plan: BlockPlan, cmid: int) -> None:
        super().__init__()
        self.plan = plan
        self.expand = ConvBNAct(plan.cin, cmid, 1, act=plan.act) if plan.has_expand else None
        if plan.fused:
            self.dw = ConvBNAct(plan.cin, cmid, plan.kernel, plan.stride, act=plan.act)
        else:
            self.dw = ConvBNAct(cmid, cmid, plan.kernel, plan.stride, groups=cmid, act=plan.act)
        self.se = SqueezeExcite(cmid, plan.se) if plan.se else None
        self.project = ConvBNAct(cmid, plan.cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.plan.residual else y


class Net(nn.Module):
    """The network of a :class:`NetworkPlan` (dense before pruning, or pruned)."""

    def __init__(self, plan: NetworkPlan, pruned: bool = False) -> None:
        super().__init__()
        self.plan = plan
        self.pruned = pruned
        st = plan.stem
        self.stem = ConvBNAct(st.cin, st.cout, st.kernel, st.stride, act=st.act)
        self.blocks = nn.Sequential(*(InvertedResidual(b, b.cmid if pruned else b.cmid_dense)
                                      for b in plan.blocks))
        self.classifier = QLinear(plan.head.cin, plan.head.num_classes)

    def block_modules(self) -> list[InvertedResidual]:
        """The blocks, in order, as their type (``blocks`` is an ``nn.Sequential`` of them)."""
        return cast(list[InvertedResidual], list(self.blocks))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.blocks(self.stem(x))
        return y.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.classifier(self.features(x))
        return y


def build(plan: NetworkPlan, generator: torch.Generator | None = None) -> Net:
    """The dense (unpruned) network of ``plan``, initialised from ``generator`` when given."""
    net = Net(plan, pruned=False)
    if generator is not None:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01, generator=generator)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def deployed_param_count(net: Net) -> int:
    """Parameters after batch norm folding: conv/linear weights + one bias per output channel."""
    n = 0
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n += m.weight.numel() + m.weight.shape[0]
    return n


# --------------------------------------------------------------------------------------------
# Structured pruning
# --------------------------------------------------------------------------------------------

def channel_importance(block: InvertedResidual) -> torch.Tensor:
    """L1 norm of each expanded channel's expand filter (the kxk filter of a fused block; the
    depthwise one when not expanded)."""
    w = block.expand.conv.weight if block.expand is not None else block.dw.conv.weight
    return w.detach().abs().sum(dim=(1, 2, 3))


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None, "a squeeze-excite convolution has a bias"
    return conv.bias


def _copy_bn(dst: nn.Module, src: nn.Module, keep: torch.Tensor) -> None:
    assert isinstance(dst, nn.BatchNorm2d) and isinstance(src, nn.BatchNorm2d), "prune before fold_batchnorm"
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data.copy_(getattr(src, name).data[keep])
    assert dst.num_batches_tracked is not None and src.num_batches_tracked is not None  # running stats are tracked
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def prune(net: Net) -> Net:
    """A new, smaller dense network with each block's least important expanded channels removed.

    Which share goes is the plan's (per stage). Layers without pruning are copied unchanged.
    """
    if net.pruned:
        raise ValueError("this network is already pruned")
    small = Net(net.plan, pruned=True)
    small.stem.load_state_dict(net.stem.state_dict())
    small.classifier.load_state_dict(net.classifier.state_dict())
    for big_b, small_b in zip(net.block_modules(), small.block_modules()):
        plan: BlockPlan = big_b.plan
        if plan.cmid == plan.cmid_dense:
            small_b.load_state_dict(big_b.state_dict())
            continue
        keep = torch.sort(torch.topk(channel_importance(big_b), plan.cmid).indices).values
        with torch.no_grad():
            if plan.has_expand:  # a fused block has none: its dense kxk below makes the expanded channels
                assert big_b.expand is not None and small_b.expand is not None
                small_b.expand.conv.weight.copy_(big_b.expand.conv.weight[keep])
                _copy_bn(small_b.expand.bn, big_b.expand.bn, keep)
            small_b.dw.conv.weight.copy_(big_b.dw.conv.weight[keep])  # depthwise, or a fused block's dense kxk
            _copy_bn(small_b.dw.bn, big_b.dw.bn, keep)
            if big_b.se is not None:
                assert small_b.se is not None
                small_b.se.reduce.weight.copy_(big_b.se.reduce.weight[:, keep])
                _bias(small_b.se.reduce).copy_(_bias(big_b.se.reduce))
                small_b.se.expand.weight.copy_(big_b.se.expand.weight[keep])
                _bias(small_b.se.expand).copy_(_bias(big_b.se.expand)[keep])
            small_b.project.conv.weight.copy_(big_b.project.conv.weight[:, keep])
            small_b.project.bn.load_state_dict(big_b.project.bn.state_dict())
    return small.train(net.training)


@torch.no_grad()
def recalibrate_batchnorm(net: Net, x: torch.Tensor, batches: int = 16, batch: int = 256) -> Net:
    """Estimate every batch norm's running statistics afresh on the images ``x`` (its first
    ``batches`` batches, in order, without augmentation), in place; returns ``net`` in eval mode.

    Pruning removes channels that the next convolution summed, so the batch norms after a pruned
    block hold the statistics of a network that no longer exists, and folding them shifts every
    activation from there on. Re-estimating them (adaptive batch norm: Li et al., EagleEye, ECCV
    2020) recovers most of a pruned network's accuracy before any fine-tuning. Measured on the
    2-core Intel Xeon host, CIFAR-10 at the reference benchmark's search fidelity (9,000 images,
    3 dense epochs, 50% of the last stage's expanded channels pruned): 14.6% right after pruning
    and folding without it, 42.5% with it; 48.5% and 50.8% after one fine-tuning epoch (dense
    52.4%)."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    net.train()
    for i in range(min(batches, math.ceil(len(x) / batch))):
        net(x[i * batch:(i + 1) * batch])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return net.eval()


# --------------------------------------------------------------------------------------------
# Batch norm folding and quantization-aware training
# --------------------------------------------------------------------------------------------

def fold_batchnorm(net: Net) -> Net:
    """Fold every batch norm into its convolution, in place (the deployed form). Returns ``net``."""
    for m in net.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            bn = m.bn
            assert bn.running_var is not None and bn.running_mean is not None  # running stats are tracked
            factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias.detach() - bn.running_mean * factor
            if m.conv.bias is not None:
                bias = bias + m.conv.bias.detach() * factor
            with torch.no_grad():
                m.conv.weight.mul_(factor.view(-1, 1, 1, 1))
            m.conv.bias = nn.Parameter(bias.clone())
            m.bn = nn.Identity()
    return net


def _quantized_layers(net: Net) -> list[tuple[QConv2d | QLinear, int, int]]:
    """Every fake-quantized layer of ``net`` with its plan's weight and activation bits."""
    plan = net.plan
    layers: list[tuple[QConv2d | QLinear, int, int]] = [(net.stem.conv, plan.stem.w_bits, plan.stem.a_bits)]
    for block in net.block_modules():
        layers += [(m, block.plan.w_bits, block.plan.a_bits) for m in block.modules() if isinstance(m, QConv2d)]
    layers.append((net.classifier, plan.head.w_bits, plan.head.a_bits))
    return layers


def enable_quantization(net: Net, quantizer: str = "maxabs", learned_below: int = LEARNED_BELOW) -> Net:
    """Turn on fake quantization at the plan's bit widths, in place. Returns ``net``.

    ``quantizer`` is one of :data:`QUANTIZERS`: ``maxabs`` scales weights by each channel's
    max-abs and tracks activation ranges by an EMA; ``lsq`` learns both for layers below
    ``learned_below`` bits (per-channel weight steps, initialised now from the weights; activation
    ranges, initialised from the first training batch, see :class:`ActQuant`), and treats the
    others as ``maxabs`` does."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
    for m, w_bits, a_bits in _quantized_layers(net):
        m.w_bits, m.act_quant.bits = w_bits, a_bits
        if quantizer == "lsq" and w_bits < learned_below:
            m.learn_step()
        if quantizer == "lsq" and a_bits < learned_below:
            m.act_quant.learn_range()
    return net


def load_quantized(net: Net, state_dict: dict[str, torch.Tensor]) -> Net:
    """Load a quantization-aware network's state into ``net`` (quantization enabled, max-abs),
    learning the steps and ranges of exactly the layers whose state holds them: a state dict
    saved before learned steps existed loads with max-abs everywhere. Strict otherwise."""
    for name, m in net.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, WeightQuant) and m.w_step is None and prefix + "w_step" in state_dict:
            m.learn_step()
        if isinstance(m, ActQuant) and m.step is None and prefix + "step" in state_dict:
            m.learn_range()
    net.load_state_dict(state_dict)
    return net


# --------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------

def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                      labels: torch.Tensor, temperature: float, alpha: float,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    ``teacher_T`` and ``student_T`` are the softmax at temperature ``T``; the ``T^2`` keeps the
    gradient scale independent of ``T`` (Hinton et al., 2015). ``alpha == 0`` is plain
    cross-entropy and needs no teacher. ``label_smoothing`` smooths the labels' term only.
    """
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if alpha == 0.0:
        return ce
    if teacher_logits is None:
        raise ValueError("alpha > 0 needs teacher logits")
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1.0 - alpha) * ce
