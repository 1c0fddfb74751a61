"""The roofline: a device's time for any layer from a few public figures (peak multiply-adds per
precision, sustained bandwidth, per-operator overhead). An estimated profile is these figures,
not a table: it prices any input size, channel count, class count, kernel and precision on demand.

A layer's time is ``max(compute, memory) + ops * op_overhead``: compute is its multiply-adds at
the device's peak for that precision times an efficiency (dense convolutions reach more of the
peak than depthwise ones), memory is its weights and activations over the sustained bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import singledispatch

from pydantic import BaseModel, ConfigDict, Field

from hwsearch.spaces._plan import BlockPlan, FusedBlockPlan, HeadPlan, Layer, StemPlan
from hwsearch.targets._cost import layer_size_bits, precision_of

# Share of the peak reached, by kind of work (typical of hand-tuned kernels on small tensors).
EFFICIENCY = {"dense": 0.5, "depthwise": 0.2, "small": 0.1}
ADAPTER_OPS = 3  # Cast, Transpose, a 1x1 Conv (hwsearch.targets._onnx_graph.input_adapter_model)


class RooflineFigures(BaseModel):
    """The figures an estimated profile prices every layer with (see the module)."""

    model_config = ConfigDict(extra="forbid")

    gmacs: dict[str, float] = Field(description="precision -> peak multiply-adds per second, 1e9")
    bandwidth_gbs: float = Field(gt=0, description="sustained memory bandwidth, GB/s")
    op_overhead_us: float = Field(ge=0, description="fixed cost per operator launch")
    efficiency: dict[str, float] = Field(default_factory=lambda: dict(EFFICIENCY),
                                         description="share of the peak reached: dense, depthwise, small work")


@dataclass(frozen=True)
class Work:
    """What a layer asks of a device: the operators a runtime launches for it, its multiply-adds
    by kind of work (dense convolutions, depthwise ones, small operations: squeeze-excite, the
    classifier), and the activation values its operators pass among themselves, counted once
    written and once read (those at its boundary follow from ``in_shape`` and ``out_shape``)."""

    ops: int
    dense_macs: int = 0
    depthwise_macs: int = 0
    small_macs: int = 0
    inner_elems: int = 0


@singledispatch
def layer_work(layer: Layer) -> Work:
    """A layer's :class:`Work` (one rule per layer kind)."""
    raise TypeError(f"no roofline rule for a {type(layer).__name__}: register one with layer_work.register")


@layer_work.register
def _stem_work(layer: StemPlan) -> Work:
    return Work(ops=1, dense_macs=layer.macs)


@layer_work.register(FusedBlockPlan)  # the same rule, branching on ``fused``
@layer_work.register
def _block_work(b: BlockPlan) -> Work:
    (h, w), (ho, wo) = b.hw_in, b.hw_out
    if b.fused:
        return Work(ops=2 + 4 * bool(b.se) + b.residual,
                    dense_macs=b.cin * b.cmid * b.kernel**2 * ho * wo + b.cmid * b.cout * ho * wo,
                    small_macs=2 * b.cmid * b.se, inner_elems=b.cmid * ho * wo * 2)
    return Work(ops=2 + b.has_expand + 4 * bool(b.se) + b.residual,
                dense_macs=b.cmid * b.cout * ho * wo + (b.cin * b.cmid * h * w if b.has_expand else 0),
                depthwise_macs=b.cmid * b.kernel**2 * ho * wo, small_macs=2 * b.cmid * b.se,
                inner_elems=b.cmid * (h * w + ho * wo) * 2)


@layer_work.register
def _head_work(layer: HeadPlan) -> Work:
    return Work(ops=2, small_macs=layer.macs)


def _compute_s(wk: Work, fig: RooflineFigures, prec: str) -> float:
    peak, eff = fig.gmacs[prec] * 1e9, fig.efficiency
    return (wk.dense_macs / (peak * eff["dense"]) + wk.depthwise_macs / (peak * eff["depthwise"])
            + wk.small_macs / (peak * eff["small"]))


ACT_BYTES = {"int8": 1, "fp16": 2, "fp32": 4}


def _bytes(layer: Layer, wk: Work, prec: str) -> float:
    acts = math.prod(layer.in_shape) + math.prod(layer.out_shape) + wk.inner_elems
    return layer_size_bits(layer) / 8 + acts * ACT_BYTES[prec]


def roofline_ms(layer: Layer, fig: RooflineFigures, precision: str | None = None) -> float:
    """A layer's estimated time alone, in milliseconds (see the module). ``precision`` overrides the
    one its bits imply (:func:`~hwsearch.targets._cost.precision_of`): "fp16" prices a published fp16
    run at the device's fp16 peak where its figures give one (the space itself runs 16 bits as fp32)."""
    prec, wk = precision or precision_of(layer.w_bits, layer.a_bits), layer_work(layer)
    if prec not in fig.gmacs:
        prec = "fp32"
    seconds = max(_compute_s(wk, fig, prec), _bytes(layer, wk, prec) / (fig.bandwidth_gbs * 1e9))
    return seconds * 1e3 + wk.ops * fig.op_overhead_us / 1e3


def roofline_adapter_ms(input_shape: tuple[int, int, int], dtype: str, fig: RooflineFigures) -> float:
    """An exported file's input adapter (raw pixels of ``dtype`` to normalised float NCHW): its
    pixels read, cast, transposed and scaled, over the bandwidth, plus its operators' overhead."""
    n = math.prod(input_shape)
    pixel_bytes = 1 if dtype == "uint8" else 4
    moved = n * pixel_bytes + 3 * 2 * n * 4  # read the pixels; each float operator reads and writes n floats
    return moved / (fig.bandwidth_gbs * 1e9) * 1e3 + ADAPTER_OPS * fig.op_overhead_us / 1e3
