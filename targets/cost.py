"""Value objects for what a candidate costs on a target, and the exact size/memory arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spaces.plan import BlockPlan, HeadPlan, NetworkPlan, StemPlan

BIAS_BITS = 32
PRECISIONS = ("fp32", "int8")


def precision_of(w_bits: int, a_bits: int) -> str:
    """How a CPU runtime executes a layer: integer kernels need both weights and activations <= 8
    bits (weights below 8 bits are stored on their grid inside int8); anything else runs in fp32."""
    return "int8" if w_bits <= 8 and a_bits <= 8 else "fp32"


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

    def to_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "size_kb": self.size_kb,
                "peak_memory_kb": self.peak_memory_kb, "blocks": [list(b) for b in self.blocks]}

    @classmethod
    def from_dict(cls, d: dict) -> Cost:
        return cls(float(d["latency_ms"]), float(d["size_kb"]), float(d["peak_memory_kb"]),
                   tuple((str(n), float(ms)) for n, ms in d.get("blocks", ())))

    def metric(self, name: str) -> float:
        if name not in ("latency_ms", "size_kb", "peak_memory_kb"):
            raise KeyError(f"unknown cost metric {name!r}")
        return getattr(self, name)


def _weight_bits(n_weights: int, n_bias: int, bits: int) -> int:
    return n_weights * bits + n_bias * BIAS_BITS


def layer_size_bits(layer: StemPlan | BlockPlan | HeadPlan) -> int:
    """Storage of one layer's deployed parameters, in bits."""
    if isinstance(layer, StemPlan):
        return _weight_bits(layer.cin * layer.cout * layer.kernel**2, layer.cout, layer.w_bits)
    if isinstance(layer, HeadPlan):
        return _weight_bits(layer.cin * layer.num_classes, layer.num_classes, layer.w_bits)
    b = layer
    weights = b.cmid * b.kernel**2 + b.cmid * b.cout
    biases = b.cmid + b.cout
    if b.has_expand:
        weights, biases = weights + b.cin * b.cmid, biases + b.cmid
    if b.se:
        weights, biases = weights + 2 * b.cmid * b.se, biases + b.se + b.cmid
    return _weight_bits(weights, biases, b.w_bits)


def layer_peak_bits(layer: StemPlan | BlockPlan | HeadPlan) -> int:
    """Largest activation footprint while the layer runs, in bits.

    Each operator holds its input and output; a residual block also holds its input until the
    final add. Activations are stored at the layer's activation bit width.
    """
    if isinstance(layer, StemPlan):
        (h, w), (ho, wo) = layer.hw_in, layer.hw_out
        return (layer.cin * h * w + layer.cout * ho * wo) * layer.a_bits
    if isinstance(layer, HeadPlan):
        h, w = layer.hw_in
        return (layer.cin * h * w + layer.cin + layer.num_classes) * layer.a_bits
    b = layer
    (h, w), (ho, wo) = b.hw_in, b.hw_out
    x, mid_in, mid_out, out = b.cin * h * w, b.cmid * h * w, b.cmid * ho * wo, b.cout * ho * wo
    held = x if b.residual else 0
    steps = [mid_in + mid_out + held, mid_out + out + held]  # depthwise, project
    if b.has_expand:
        steps.append(x + mid_in)
    if b.se:
        steps.append(2 * mid_out + b.cmid + b.se + held)
    if b.residual:
        steps.append(x + 2 * out)
    return max(steps) * b.a_bits


def size_kb(plan: NetworkPlan) -> float:
    return sum(layer_size_bits(layer) for layer in plan.layers) / 8 / 1024


def peak_memory_kb(plan: NetworkPlan) -> float:
    return max(layer_peak_bits(layer) for layer in plan.layers) / 8 / 1024


def layer_kelems(layer: StemPlan | BlockPlan | HeadPlan) -> float:
    """Thousands of activation values entering and leaving a layer (its boundary traffic)."""
    h, w = layer.hw_in
    if isinstance(layer, HeadPlan):
        return (layer.cin * h * w + layer.num_classes) / 1000
    ho, wo = layer.hw_out
    return (layer.cin * h * w + layer.cout * ho * wo) / 1000


def layer_macs(layer: StemPlan | BlockPlan | HeadPlan) -> int:
    """Multiply-accumulates of one inference of a layer (batch 1)."""
    if isinstance(layer, StemPlan):
        ho, wo = layer.hw_out
        return layer.cin * layer.cout * layer.kernel**2 * ho * wo
    if isinstance(layer, HeadPlan):
        return layer.cin * layer.num_classes
    b = layer
    (h, w), (ho, wo) = b.hw_in, b.hw_out
    macs = b.cmid * b.kernel**2 * ho * wo + b.cmid * b.cout * ho * wo
    if b.has_expand:
        macs += b.cin * b.cmid * h * w
    if b.se:
        macs += 2 * b.cmid * b.se
    return macs


def network_macs(plan) -> int:
    """Multiply-accumulates of one inference of a whole network (batch 1): its layers' sum."""
    return sum(layer_macs(layer) for layer in plan.layers)
