"""A candidate laid out for a given input: every layer's shapes, strides and bit widths.

The plan is the one place where shapes are computed. The torch builder, the cost model and the
ONNX emitter all read it, so they can never disagree about a layer.

Downsampling depends on the input, so tiny inputs still work: the stem strides by 2 only for
inputs of 64 pixels or more, then the *last* ``k`` stages downsample by 2 in their first block,
where ``k`` is as many as keep the final feature map at least 2 pixels wide (8x8 -> 8, 4, 2;
32x32 -> 16, 8, 4 for three stages).

Parameter counts are those of the deployed network: batch norm folded into its convolution, so
each convolution has weights plus one bias per output channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spaces.candidate import Candidate

STEM_KERNEL = 3
SE_RATIO = 0.25
MIN_BITS_END_LAYERS = 8  # stem and classifier stay at >= 8 bits, as is common practice


def se_channels(cmid_dense: int) -> int:
    """Squeeze channels of a block's squeeze-excite (fixed by the dense width, kept by pruning)."""
    return max(1, int(cmid_dense * SE_RATIO))


def kept_channels(cmid_dense: int, prune: float) -> int:
    """Expanded channels left after removing the share ``prune`` (at least one)."""
    return max(1, cmid_dense - int(round(cmid_dense * prune)))


def _conv_out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride  # 'same' padding


@dataclass(frozen=True)
class StemPlan:
    cin: int
    cout: int
    kernel: int
    stride: int
    hw_in: tuple[int, int]
    hw_out: tuple[int, int]
    act: str
    w_bits: int
    a_bits: int
    name: str = "stem"

    @property
    def params(self) -> int:
        return self.cin * self.cout * self.kernel**2 + self.cout


@dataclass(frozen=True)
class BlockPlan:
    """One inverted residual block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project."""

    name: str
    stage: int
    index: int
    cin: int
    cmid: int  # expanded channels after pruning
    cmid_dense: int  # expanded channels before pruning
    cout: int
    kernel: int
    stride: int
    se: int  # squeeze channels, 0 = no squeeze-excite
    act: str
    hw_in: tuple[int, int]
    hw_out: tuple[int, int]
    w_bits: int
    a_bits: int

    @property
    def has_expand(self) -> bool:
        return self.cmid_dense != self.cin or self.cmid != self.cin

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    @property
    def params(self) -> int:
        n = 0
        if self.has_expand:
            n += self.cin * self.cmid + self.cmid
        n += self.cmid * self.kernel**2 + self.cmid
        if self.se:
            n += self.cmid * self.se + self.se + self.se * self.cmid + self.cmid
        n += self.cmid * self.cout + self.cout
        return n


@dataclass(frozen=True)
class HeadPlan:
    """Global average pool and a linear classifier."""

    cin: int
    num_classes: int
    hw_in: tuple[int, int]
    w_bits: int
    a_bits: int
    name: str = "head"

    @property
    def params(self) -> int:
        return self.cin * self.num_classes + self.num_classes


@dataclass(frozen=True)
class NetworkPlan:
    candidate: Candidate
    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    stem: StemPlan
    blocks: tuple[BlockPlan, ...]
    head: HeadPlan

    @property
    def params(self) -> int:
        return self.stem.params + sum(b.params for b in self.blocks) + self.head.params

    @property
    def layers(self) -> tuple:
        return (self.stem, *self.blocks, self.head)


def stage_strides(hw: int, n_stages: int) -> tuple[int, tuple[int, ...]]:
    """Stem stride and per-stage strides for an input of ``hw`` pixels (the smaller side)."""
    stem = 2 if hw >= 64 else 1
    after_stem = _conv_out(hw, stem)
    k = min(n_stages, max(0, int(math.floor(math.log2(max(after_stem, 1) / 2)))))
    return stem, tuple([1] * (n_stages - k) + [2] * k)


def _after(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return (_conv_out(hw[0], stride), _conv_out(hw[1], stride))


def _stem(c: int, hw_in: tuple[int, int], stride: int, cout: int, act: str, w_bits: int, a_bits: int) -> StemPlan:
    hw = _after(hw_in, stride)
    return StemPlan(cin=c, cout=cout, kernel=STEM_KERNEL, stride=stride, hw_in=hw_in, hw_out=hw, act=act,
                    w_bits=max(MIN_BITS_END_LAYERS, w_bits), a_bits=max(MIN_BITS_END_LAYERS, a_bits))


def _block(si: int, bi: int, cin: int, stage, stride: int, hw: tuple[int, int]) -> BlockPlan:
    hw_out = _after(hw, stride)
    dense = cin * stage.expand
    return BlockPlan(
        name=f"s{si}.b{bi}", stage=si, index=bi, cin=cin,
        cmid=kept_channels(dense, stage.prune) if stage.expand > 1 else dense,
        cmid_dense=dense, cout=stage.width, kernel=stage.kernel, stride=stride,
        se=se_channels(dense) if stage.se else 0, act=stage.act, hw_in=hw, hw_out=hw_out,
        w_bits=stage.w_bits, a_bits=stage.a_bits,
    )


def _head(cin: int, num_classes: int, hw: tuple[int, int], w_bits: int, a_bits: int) -> HeadPlan:
    return HeadPlan(cin=cin, num_classes=num_classes, hw_in=hw, w_bits=max(MIN_BITS_END_LAYERS, w_bits),
                    a_bits=max(MIN_BITS_END_LAYERS, a_bits))


def _check_input(input_shape: tuple[int, int, int], num_classes: int) -> None:
    c, h, w = input_shape
    if not (1 <= c <= 4 and 4 <= h <= 1024 and 4 <= w <= 1024):
        raise ValueError(f"input shape (C, H, W) = {input_shape} is outside 1-4 channels, 4-1024 pixels")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")


def build_plan(candidate: Candidate, input_shape: tuple[int, int, int], num_classes: int) -> NetworkPlan:
    _check_input(input_shape, num_classes)
    c, h, w = input_shape
    stem_stride, strides = stage_strides(min(h, w), len(candidate.stages))
    first, last = candidate.stages[0], candidate.stages[-1]
    stem = _stem(c, (h, w), stem_stride, candidate.stem, first.act, first.w_bits, first.a_bits)
    blocks, cin, hw = [], candidate.stem, stem.hw_out
    for si, (stage, stride) in enumerate(zip(candidate.stages, strides)):
        for bi in range(stage.depth):
            blocks.append(_block(si, bi, cin, stage, stride if bi == 0 else 1, hw))
            cin, hw = stage.width, blocks[-1].hw_out
    head = _head(cin, num_classes, hw, last.w_bits, last.a_bits)
    return NetworkPlan(candidate, (c, h, w), num_classes, stem, tuple(blocks), head)


def reachable_layers(config, input_shape: tuple[int, int, int], num_classes: int) -> list:
    """Every layer configuration that some candidate of ``config`` (a :class:`SpaceSpec`) has,
    for this input: what a device profile of the space must price. Layers are built by the same
    functions as :func:`build_plan`, so the two cannot disagree; names are not meaningful here."""
    from itertools import product

    from spaces.candidate import Stage

    _check_input(input_shape, num_classes)
    c, h, w = input_shape
    stem_stride, strides = stage_strides(min(h, w), len(config.stages))
    bits = list(product(config.weight_bits, config.activation_bits))
    shapes = [(k, e, p, se, act) for k, e, se, act in product(config.kernels, config.expand_ratios, config.se,
                                                               config.activations)
              for p in (config.prune_ratios if e > 1 else [0.0])]
    layers: list = [_stem(c, (h, w), stem_stride, cout, act, wb, ab) for cout, act, (wb, ab)
                    in product(config.stem_widths, config.activations, bits)]
    cins, hw = list(config.stem_widths), layers[0].hw_out
    for si, (st, stride) in enumerate(zip(config.stages, strides)):
        hw_next = _after(hw, stride)
        # (input channels, stride, input size): the stage's first block, then its repeats.
        entries = [(cin, stride, hw) for cin in cins]
        if max(st.depths) > 1:
            entries += [(None, 1, hw_next)]
        for cin, s, hw_in in entries:
            for width, (k, e, p, se, act), (wb, ab) in product(st.widths, shapes, bits):
                stage = Stage(depth=1, kernel=k, expand=e, width=width, se=se, act=act, prune=p,
                              w_bits=wb, a_bits=ab)
                layers.append(_block(si, 0, width if cin is None else cin, stage, s, hw_in))
        cins, hw = list(st.widths), hw_next
    layers += [_head(cin, num_classes, hw, wb, ab) for cin, (wb, ab) in product(cins, bits)]
    return layers

