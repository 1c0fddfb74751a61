"""The target interface and the one function that prices a candidate on a target."""

from __future__ import annotations

from abc import ABC, abstractmethod

from spaces.plan import BlockPlan, HeadPlan, NetworkPlan, StemPlan
from targets.cost import Cost, Latency, layer_kelems, peak_memory_kb, precision_of, size_kb
from targets.profile import FEATURES, Calibration, UnpriceableError

Layer = StemPlan | BlockPlan | HeadPlan
MIN_SHARE = 0.05  # a calibrated layer keeps at least this share of its own lookup: never 0

__all__ = ["FEATURES", "Layer", "Target", "UnpriceableError", "network_features"]


def network_features(layers, lookups: list[Latency]) -> dict[str, float]:
    """The calibration's features of a network: summed lookups and boundary traffic by precision."""
    f = dict.fromkeys(FEATURES, 0.0)
    for layer, lat in zip(layers, lookups):
        p = precision_of(layer.w_bits, layer.a_bits)
        f[f"{p}_ms"] += lat.mean_ms
        f[f"{p}_kelems"] += layer_kelems(layer)
    return f


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

    def ensure_calibrated(self, config, input_shape, num_classes, progress=None) -> bool:
        """Make the latency model fit this space's whole networks; True when it measured. A
        profile file was calibrated where it was measured, so by default there is nothing to do."""
        return False

    def lookups(self, plan: NetworkPlan) -> list[Latency]:
        return [self.layer_latency(layer) for layer in plan.layers]

    def price(self, plan: NetworkPlan) -> Cost:
        """Latency (layer lookups, calibrated on whole networks, plus overhead), size and peak memory.

        The breakdown has one part per layer plus ``overhead`` and adds up to the total: a layer's
        part is its lookup scaled and corrected for boundary traffic as the calibration says
        (never below ``MIN_SHARE`` of its lookup).
        """
        cal = self.calibration
        coef = cal.coefficients()
        parts = []
        for layer, lat in zip(plan.layers, self.lookups(plan)):
            p = precision_of(layer.w_bits, layer.a_bits)
            ms = coef[f"{p}_ms"] * lat.mean_ms + coef[f"{p}_kelems"] * layer_kelems(layer)
            parts.append((layer.name, max(ms, MIN_SHARE * lat.mean_ms)))
        parts.append(("overhead", max(self.overhead().mean_ms + cal.offset_ms, 0.0)))
        latency = sum(ms for _, ms in parts)
        if not latency > 0:
            raise UnpriceableError(f"target {self.name!r} prices {plan.candidate.to_string()} at {latency} ms")
        return Cost(latency_ms=latency, size_kb=size_kb(plan), peak_memory_kb=peak_memory_kb(plan),
                    blocks=tuple(parts))
