"""The target interface and the one function that prices a candidate on a target."""

from __future__ import annotations

from abc import ABC, abstractmethod

from spaces.plan import BlockPlan, HeadPlan, NetworkPlan, StemPlan
from targets.cost import Cost, Latency, peak_memory_kb, size_kb
from targets.profile import Calibration

Layer = StemPlan | BlockPlan | HeadPlan


class UnpriceableError(LookupError):
    """A target has no latency for a layer configuration; the message names what is missing."""


class Target(ABC):
    """A device that candidates are priced on.

    Contract: :meth:`layer_latency` returns the time of one layer alone, per-call overhead
    excluded, in milliseconds, or raises :class:`UnpriceableError`; never 0 for a missing entry.
    :meth:`price` is the only place where a whole network's cost is assembled, and it is pure for
    a given profile: the same plan prices the same. Targets are used from one thread at a time.
    """

    name: str
    description: str = ""

    @property
    @abstractmethod
    def measured(self) -> bool:
        """True when the latencies were measured on the device, False for estimates."""

    @abstractmethod
    def layer_latency(self, layer: Layer) -> Latency: ...

    @abstractmethod
    def overhead(self) -> Latency: ...

    @property
    def calibration(self) -> Calibration:
        return Calibration()

    def price(self, plan: NetworkPlan) -> Cost:
        """Latency (layer lookups summed, plus overhead, calibrated), size and peak memory."""
        parts = [(layer.name, self.layer_latency(layer)) for layer in plan.layers]
        parts.append(("overhead", self.overhead()))
        cal = self.calibration
        total = sum(lat.mean_ms for _, lat in parts)
        latency = cal.scale * total + cal.offset_ms
        # The breakdown is scaled like the total, so that its parts add up to what is reported.
        factor = latency / total if total > 0 else 1.0
        blocks = tuple((name, lat.mean_ms * factor) for name, lat in parts)
        return Cost(latency_ms=latency, size_kb=size_kb(plan), peak_memory_kb=peak_memory_kb(plan),
                    blocks=blocks)
