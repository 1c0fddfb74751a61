"""Value objects for what a candidate costs on a target, and the exact size/memory arithmetic."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any

from hwsearch.spaces._plan import BlockPlan, FusedBlockPlan, HeadPlan, Layer, NetworkPlan, StemPlan

BIAS_BITS = 32
PRECISIONS = ("fp32", "int8")


def precision_of(w_bits: int, a_bits: int) -> str:
    """How a CPU runtime executes a layer: integer kernels need both weights and activations <= 8
    bits (weights below 8 bits are stored on their grid inside int8); anything else runs in fp32."""
    return "int8" if w_bits <= 8 and a_bits <= 8 else "fp32"


# Every cost a target prices, in the order they are reported: the objectives besides accuracy
# and a budget's limits are drawn from these.
COST_METRICS = ("latency_ms", "size_kb", "peak_memory_kb")

@dataclass(frozen=True)
class Latency:
    """A measured time in milliseconds: median-based mean, spread, and how many runs."""

    mean_ms: float
    std_ms: float = 0.0
    count: int = 1

    def __add__(self, other: Latency) -> Latency:
        return Latency(self.mean_ms + other.mean_ms, math.hypot(self.std_ms, other.std_ms),
                       min(self.count, other.count))

    def scaled(self, factor: float) -> Latency:
        return Latency(self.mean_ms * factor, self.std_ms * abs(factor), self.count)


@dataclass(frozen=True)
class Cost:
    """What a candidate costs on one target.

    ``latency_ms`` is the predicted end-to-end latency of one image; ``blocks`` is its
    breakdown (name, milliseconds) including the fixed per-call overhead, so the parts add up to
    the total. ``size_kb`` is the weights at their bit widths (biases at 32 bits), ``peak_memory_kb``
    the largest set of activations alive at once; both KiB (1024 bytes), exact.
    """

    latency_ms: float
    size_kb: float
    peak_memory_kb: float
    blocks: tuple[tuple[str, float], ...] = field(default=())

    def to_dict(self) -> dict[str, float | list[list[str | float]]]:
        return {"latency_ms": self.latency_ms, "size_kb": self.size_kb,
                "peak_memory_kb": self.peak_memory_kb, "blocks": [list(b) for b in self.blocks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cost:
        """The cost of :meth:`to_dict`, as read back from JSON."""
        return cls(float(d["latency_ms"]), float(d["size_kb"]), float(d["peak_memory_kb"]),
                   tuple((str(n), float(ms)) for n, ms in d.get("blocks", ())))

    def metric(self, name: str) -> float:
        if name not in COST_METRICS:
            raise KeyError(f"unknown cost metric {name!r}")
        value: float = getattr(self, name)
        return value


def layer_size_bits(layer: Layer) -> int:
    """Storage of one layer's deployed parameters, in bits: weights at its weight bit width,
    biases at ``BIAS_BITS``."""
    return layer.weights * layer.w_bits + layer.biases * BIAS_BITS


@singledispatch
def layer_peak_bits(layer: Layer) -> int:
    """Largest activation footprint while the layer runs, in bits (one rule per layer kind).

    Each operator holds its input and output; a residual block also holds its input until the
    final add. Activations are stored at the layer's activation bit width.
    """
    raise TypeError(f"no peak memory rule for a {type(layer).__name__}: register one with layer_peak_bits.register")


@layer_peak_bits.register
def _stem_peak_bits(layer: StemPlan) -> int:
    (h, w), (ho, wo) = layer.hw_in, layer.hw_out
    return (layer.cin * h * w + layer.cout * ho * wo) * layer.a_bits


@layer_peak_bits.register(FusedBlockPlan)  # the same rule, branching on ``fused``
@layer_peak_bits.register
def _block_peak_bits(b: BlockPlan) -> int:
    (h, w), (ho, wo) = b.hw_in, b.hw_out
    x, mid_in, mid_out, out = b.cin * h * w, b.cmid * h * w, b.cmid * ho * wo, b.cout * ho * wo
    held = x if b.residual else 0
    # depthwise (a fused block's dense kxk: from the input), project
    steps = [(x if b.fused else mid_in) + mid_out + held, mid_out + out + held]
    if b.has_expand:
        steps.append(x + mid_in)
    if b.se:
        steps.append(2 * mid_out + b.cmid + b.se + held)
    if b.residual:
        steps.append(x + 2 * out)
    return max(steps) * b.a_bits


@layer_peak_bits.register
def _head_peak_bits(layer: HeadPlan) -> int:
    h, w = layer.hw_in
    return (layer.cin * h * w + layer.cin + layer.num_classes) * layer.a_bits


def size_kb(plan: NetworkPlan) -> float:
    return sum(layer_size_bits(layer) for layer in plan.layers) / 8 / 1024


def peak_memory_kb(plan: NetworkPlan) -> float:
    return max(layer_peak_bits(layer) for layer in plan.layers) / 8 / 1024


def layer_kelems(layer: Layer) -> float:
    """Thousands of activation values entering and leaving a layer (its boundary traffic)."""
    return (math.prod(layer.in_shape) + math.prod(layer.out_shape)) / 1000


def network_macs(plan: NetworkPlan) -> int:
    """Multiply-accumulates of one inference of a whole network (batch 1): its layers' sum."""
    return sum(layer.macs for layer in plan.layers)
