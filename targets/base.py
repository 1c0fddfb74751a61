"""The target interface and the one function that prices a candidate on a target."""

from __future__ import annotations

from abc import ABC, abstractmethod

from spaces.plan import BlockPlan, HeadPlan, NetworkPlan, StemPlan
from targets.cost import Cost, Latency, layer_kelems, peak_memory_kb, precision_of, size_kb
from targets.profile import FEATURES, Calibration, UnpriceableError, block_key, layer_terms

Layer = StemPlan | BlockPlan | HeadPlan
MIN_SHARE = 0.05  # a calibrated layer keeps at least this share of its own lookup: never 0

__all__ = ["FEATURES", "Layer", "Target", "UnpriceableError", "network_features"]


def _terms(layers, lookups: list[Latency]) -> list[dict[str, float]]:
    out, prev = [], None
    for layer, lat in zip(layers, lookups):
        p = precision_of(layer.w_bits, layer.a_bits)
        out.append(layer_terms(block_key(layer).kind, p, lat.mean_ms, layer_kelems(layer), prev not in (None, p)))
        prev = p
    return out


def network_features(layers, lookups: list[Latency]) -> dict[str, float]:
    """The calibration's features of a network: its layers' :func:`layer_terms` summed."""
    f = dict.fromkeys(FEATURES, 0.0)
    for terms in _terms(layers, lookups):
        for k, v in terms.items():
            f[k] += v
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

    def adapter_latency(self, input_shape: tuple[int, int, int], dtype: str) -> Latency:
        """The time an exported file's input adapter adds (raw ``dtype`` pixels, NHWC, to the
        network's normalised NCHW input), or :class:`UnpriceableError` where it is not known."""
        raise UnpriceableError(f"target {self.name!r} does not price input adapters")

    def prepare(self, plans) -> None:
        """Get ready to price these plans (a target that measures on first use measures what
        they need, together); by default there is nothing to do."""

    def lookups(self, plan: NetworkPlan) -> list[Latency]:
        return [self.layer_latency(layer) for layer in plan.layers]

    def price(self, plan: NetworkPlan) -> Cost:
        """Latency (layer lookups, calibrated on whole networks, plus overhead), size and peak memory.

        The breakdown has one part per layer plus ``overhead`` and adds up to the total: a layer's
        part is its lookup scaled and corrected for boundary traffic as the calibration says
        (never below ``MIN_SHARE`` of its lookup).
        """
        cal = self.calibration
        parts = []
        lookups = self.lookups(plan)
        for layer, lat, terms in zip(plan.layers, lookups, _terms(plan.layers, lookups)):
            parts.append((layer.name, max(cal.layer_ms(terms), MIN_SHARE * lat.mean_ms)))
        parts.append(("overhead", max(self.overhead().mean_ms + cal.offset_ms, 0.0)))
        latency = sum(ms for _, ms in parts)
        if not latency > 0:
            raise UnpriceableError(f"target {self.name!r} prices {plan.candidate.to_string()} at {latency} ms")
        return Cost(latency_ms=latency, size_kb=size_kb(plan), peak_memory_kb=peak_memory_kb(plan),
                    blocks=tuple(parts))
