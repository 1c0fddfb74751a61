"""A candidate laid out for a given input: every layer's shapes, strides and bit widths.

The plan is the one place where shapes are computed. The torch builder, the cost model and the
ONNX emitter all read it, so they can never disagree about a layer.

Downsampling depends on the input, so tiny inputs still work: the stem strides by 2 only for
inputs of 64 pixels or more, then the *last* ``k`` stages downsample by 2 in their first block,
where ``k`` is as many as keep the final feature map at least 2 pixels wide (8x8 -> 8, 4, 2;
32x32 -> 16, 8, 4 for three stages). A space may fix a stage's stride instead (``stride`` of its
stage; the candidate's stage carries it): strides 1, 2, 2 keep CIFAR ResNets' 32, 16, 8.

Parameter counts are those of the deployed network: batch norm folded into its convolution, so
each convolution has weights plus one bias per output channel.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from hwsearch.spaces._candidate import Candidate, Stage

if TYPE_CHECKING:
    from hwsearch.spaces._config import SpaceSpec

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


ConvShape = tuple[tuple[int, int, int, int], int]  # a convolution's weight shape (out, in/groups, k, k), groups


class _LayerPlan(ABC):
    """What every layer plan (:data:`Layer`) has, all of it shape arithmetic and naming.

    Each kind declares ``kind`` (its name in profile keys), the fields ``name``, ``cin``,
    ``hw_in``, ``w_bits`` and ``a_bits``, and the properties ``in_shape`` and ``out_shape``
    (C, H, W, or the logits' (classes,); batch excluded), ``convs`` (every convolution's weight
    shape and groups, by role, in the order they run) and ``macs`` (multiply-accumulates of one
    inference, batch 1). The counts below follow from ``convs``. What depends on a target
    (memory, latency, ONNX graphs, profile keys) is registered per kind in :mod:`hwsearch.targets`.
    """

    cin: int
    hw_in: tuple[int, int]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The input (C, H, W), batch excluded."""
        return (self.cin, *self.hw_in)

    @property
    @abstractmethod
    def convs(self) -> dict[str, ConvShape]:
        """Every convolution's weight shape and groups, by role, in the order they run."""

    @property
    def weights(self) -> int:
        """Weights of the deployed convolutions (batch norm folded into them)."""
        return sum(math.prod(shape) for shape, _ in self.convs.values())

    @property
    def biases(self) -> int:
        """Biases of the deployed convolutions: one per output channel."""
        return sum(shape[0] for shape, _ in self.convs.values())

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass(frozen=True)
class StemPlan(_LayerPlan):
    """A kxk convolution of the image and its activation."""

    kind: ClassVar[Literal["stem"]] = "stem"

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
    def out_shape(self) -> tuple[int, ...]:
        return (self.cout, *self.hw_out)

    @property
    def convs(self) -> dict[str, ConvShape]:
        return {"conv": ((self.cout, self.cin, self.kernel, self.kernel), 1)}

    @property
    def macs(self) -> int:
        ho, wo = self.hw_out
        return self.cin * self.cout * self.kernel**2 * ho * wo


@dataclass(frozen=True)
class BlockPlan(_LayerPlan):
    """One inverted residual block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project
    (:class:`FusedBlockPlan`, a subclass, for a fused stage's blocks)."""

    kind: ClassVar[Literal["ir", "fmb"]] = "ir"
    fused: ClassVar[bool] = False

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
    def out_shape(self) -> tuple[int, ...]:
        return (self.cout, *self.hw_out)

    def _front(self) -> tuple[dict[str, ConvShape], int]:
        """The convolutions before squeeze-excite and the projection, and their multiply-adds:
        [1x1 expand] (at the input's size), kxk depthwise (at the output's)."""
        (h, w), (ho, wo) = self.hw_in, self.hw_out
        shapes: dict[str, ConvShape] = {}
        macs = self.cmid * self.kernel**2 * ho * wo
        if self.has_expand:
            shapes["expand"] = ((self.cmid, self.cin, 1, 1), 1)
            macs += self.cin * self.cmid * h * w
        shapes["dw"] = ((self.cmid, 1, self.kernel, self.kernel), self.cmid)
        return shapes, macs

    @property
    def convs(self) -> dict[str, ConvShape]:
        shapes = self._front()[0]
        if self.se:
            shapes["se_reduce"] = ((self.se, self.cmid, 1, 1), 1)
            shapes["se_expand"] = ((self.cmid, self.se, 1, 1), 1)
        shapes["project"] = ((self.cout, self.cmid, 1, 1), 1)
        return shapes

    @property
    def macs(self) -> int:
        ho, wo = self.hw_out
        return self._front()[1] + 2 * self.cmid * self.se + self.cmid * self.cout * ho * wo


@dataclass(frozen=True)
class FusedBlockPlan(BlockPlan):
    """One fused inverted residual block (Fused-MBConv): kxk dense convolution to the expanded
    channels -> [SE] -> 1x1 project. ``cmid`` is ``cin * expand``, less what pruning removes; at
    expand 1 the kxk convolution keeps the input's width and the projection still follows (as
    timm's ``EdgeResidual``). Its own kind: its profile entries and calibration terms are its own."""

    kind: ClassVar[Literal["ir", "fmb"]] = "fmb"
    fused: ClassVar[bool] = True

    @property
    def has_expand(self) -> bool:
        return False  # no 1x1 expansion: the kxk convolution expands

    def _front(self) -> tuple[dict[str, ConvShape], int]:
        ho, wo = self.hw_out
        return ({"fused": ((self.cmid, self.cin, self.kernel, self.kernel), 1)},
                self.cin * self.cmid * self.kernel**2 * ho * wo)


@dataclass(frozen=True)
class HeadPlan(_LayerPlan):
    """Global average pool and a linear classifier."""

    kind: ClassVar[Literal["head"]] = "head"

    cin: int
    num_classes: int
    hw_in: tuple[int, int]
    w_bits: int
    a_bits: int
    name: str = "head"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.num_classes,)

    @property
    def convs(self) -> dict[str, ConvShape]:
        return {"fc": ((self.num_classes, self.cin, 1, 1), 1)}  # a 1x1 convolution on the pooled map

    @property
    def macs(self) -> int:
        return self.cin * self.num_classes


Layer = StemPlan | BlockPlan | FusedBlockPlan | HeadPlan
LAYER_KINDS: tuple[type[Layer], ...] = get_args(Layer)  # every kind, for contract tests


@dataclass(frozen=True)
class NetworkPlan:
    candidate: Candidate
    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    stem: StemPlan
    blocks: tuple[BlockPlan, ...]  # fused ones are BlockPlans too
    head: HeadPlan

    @property
    def params(self) -> int:
        return self.stem.params + sum(b.params for b in self.blocks) + self.head.params

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one image through the network (the pruned form)."""
        return sum(layer.macs for layer in self.layers)

    @property
    def layers(self) -> tuple[Layer, ...]:
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


def _block(si: int, bi: int, cin: int, stage: Stage, stride: int, hw: tuple[int, int]) -> BlockPlan:
    hw_out = _after(hw, stride)
    dense = cin * stage.expand
    kind = FusedBlockPlan if stage.fused else BlockPlan
    return kind(
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
        stride = stride if stage.stride is None else stage.stride
        for bi in range(stage.depth):
            blocks.append(_block(si, bi, cin, stage, stride if bi == 0 else 1, hw))
            cin, hw = stage.width, blocks[-1].hw_out
    head = _head(cin, num_classes, hw, last.w_bits, last.a_bits)
    return NetworkPlan(candidate, (c, h, w), num_classes, stem, tuple(blocks), head)


def reachable_layers(config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int) -> list[Layer]:
    """Every layer configuration that some candidate of ``config`` (a :class:`SpaceSpec`) has,
    for this input: what a device profile of the space must price. Layers are built by the same
    functions as :func:`build_plan`, so the two cannot disagree; names are not meaningful here."""
    from itertools import product

    _check_input(input_shape, num_classes)
    c, h, w = input_shape
    stem_stride, strides = stage_strides(min(h, w), len(config.stages))
    bits = list(product(config.weight_bits, config.activation_bits))
    shapes = [(k, e, p, se, act, fu) for k, e, se, act, fu in product(config.kernels, config.expand_ratios, config.se,
                                                                       config.activations, config.fused)
              for p in (config.prune_ratios if e > 1 else [0.0])]
    stems = [_stem(c, (h, w), stem_stride, cout, act, wb, ab) for cout, act, (wb, ab)
             in product(config.stem_widths, config.activations, bits)]
    layers: list[Layer] = list(stems)
    cins, hw = list(config.stem_widths), stems[0].hw_out
    for si, (st, stride) in enumerate(zip(config.stages, strides)):
        stride = stride if st.stride is None else st.stride
        hw_next = _after(hw, stride)
        # (input channels, stride, input size): the stage's first block, then its repeats.
        entries: list[tuple[int | None, int, tuple[int, int]]] = [(cin, stride, hw) for cin in cins]
        if max(st.depths) > 1:
            entries += [(None, 1, hw_next)]
        for cin, s, hw_in in entries:
            for width, (k, e, p, se, act, fu), (wb, ab) in product(st.widths, shapes, bits):
                stage = Stage(depth=1, kernel=k, expand=e, width=width, se=se, act=act, prune=p,
                              w_bits=wb, a_bits=ab, fused=fu, stride=st.stride)
                layers.append(_block(si, 0, width if cin is None else cin, stage, s, hw_in))
        cins, hw = list(st.widths), hw_next
    layers += [_head(cin, num_classes, hw, wb, ab) for cin, (wb, ab) in product(cins, bits)]
    return layers

