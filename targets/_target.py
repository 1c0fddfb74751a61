"""The target interface and the one function that prices a candidate on a target."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from hwsearch.spaces._plan import BlockPlan, Layer, NetworkPlan
from hwsearch.targets._cost import Cost, Latency, layer_kelems, peak_memory_kb, precision_of, size_kb
from hwsearch.targets._layouts import Layout, boundary_terms
from hwsearch.targets._meter import DEFAULT_PROVIDER, host_name
from hwsearch.targets._profile_format import FEATURES, Calibration, Profile, UnpriceableError, layer_terms

if TYPE_CHECKING:
    from hwsearch.spaces._config import SpaceSpec

MIN_SHARE = 0.05  # a calibrated layer keeps at least this share of its own lookup: never 0

__all__ = ["FEATURES", "Layer", "Progress", "Runtime", "Target", "UnpriceableError", "network_features"]

_T = TypeVar("_T")


class Progress(Protocol):
    """Reports progress over work done in parts: ``progress(parts, label, total)`` returns the
    parts, in order, as it goes through them (a tqdm bar, say)."""

    def __call__(self, parts: Iterable[_T], label: str, total: int, /) -> Iterable[_T]: ...


@dataclass(frozen=True)
class Runtime:
    """How a target's latencies were measured: the onnxruntime settings a measurement must use to
    be compared with them, and where. ``host`` is the CPU model the profile was measured on
    (None for an estimate); ``version`` the onnxruntime version it was measured with."""

    threads: int = 1
    provider: str = DEFAULT_PROVIDER
    host: str | None = None
    version: str | None = None

    def elsewhere(self) -> str | None:
        """None when a measurement on this host compares with the target's latencies (the same CPU
        model and onnxruntime version); otherwise why not, as a sentence's end."""
        if self.host is None:
            return "its latencies are estimates, not measurements"
        if self.host != host_name():
            return f"it was measured on {self.host}, not on this host ({host_name()})"
        import onnxruntime as ort

        if self.version != ort.__version__:
            return f"it was measured with onnxruntime {self.version}, this host has {ort.__version__}"
        return None

    @property
    def here(self) -> bool:
        """True when this host is where the latencies were measured (see :meth:`elsewhere`)."""
        return self.elsewhere() is None


def _terms(layers: Sequence[Layer], lookups: list[Latency],
           layouts: Sequence[Layout | None] | None = None) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    prev: str | None = None
    edges = boundary_terms(layers, layouts) if layouts else [{} for _ in layers]
    for layer, lat, edge in zip(layers, lookups, edges):
        p = precision_of(layer.w_bits, layer.a_bits)
        se = isinstance(layer, BlockPlan) and layer.se > 0
        out.append(layer_terms(layer.kind, p, lat.mean_ms, layer_kelems(layer), prev not in (None, p), se) | edge)
        prev = p
    return out


def _shares(raw: list[float], floors: list[float], total: float) -> list[float]:
    """Layer parts that add up to ``total`` (where the floors allow): each at least its floor, the
    layers above their floors scaled together to make up the rest."""
    low = [r < f for r, f in zip(raw, floors)]
    fixed = sum(f for f, lo in zip(floors, low) if lo)
    free = sum(r for r, lo in zip(raw, low) if not lo)
    if not any(low) or free <= 0 or total - fixed <= 0:
        return [max(r, f) for r, f in zip(raw, floors)]
    k = (total - fixed) / free
    return [f if lo else max(r * k, f) for r, f, lo in zip(raw, floors, low)]


def network_features(layers: Sequence[Layer], lookups: list[Latency],
                     layouts: Sequence[Layout | None] | None = None) -> dict[str, float]:
    """The calibration's features of a network: its layers' :func:`layer_terms` summed, and, where
    the layers' layouts are known, the conversions their edges save (:func:`boundary_terms`)."""
    f = dict.fromkeys(FEATURES, 0.0)
    for terms in _terms(layers, lookups, layouts):
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
    profile: Profile | None = None  # the profile it prices from, if any

    def runtime(self) -> Runtime:
        """The settings its latencies were measured with (estimates: 1 CPU thread, nowhere)."""
        if self.profile is None:
            return Runtime()
        d = self.profile.device
        return Runtime(d.threads, d.provider, d.host if d.measured else None, d.runtime_version)

    def flush(self, force: bool = False) -> None:  # noqa: B027 (a hook: most targets never change)
        """Save what was measured since the last flush (a target that measures on first use);
        by default there is nothing to save."""

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

    def ensure_calibrated(self, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int,
                          progress: Progress | None = None) -> bool:
        """Make the latency model fit this space's whole networks; True when it measured. A
        profile file was calibrated where it was measured, so by default there is nothing to do."""
        return False

    def needs_measuring(self, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int) -> bool:
        """Whether pricing this space would first measure on this host (minutes: the layers, the
        calibration networks and the self-check). A profile file never measures."""
        return False

    def adapter_latency(self, input_shape: tuple[int, int, int], dtype: str) -> Latency:
        """The time an exported file's input adapter adds (raw ``dtype`` pixels, NHWC, to the
        network's normalised NCHW input), or :class:`UnpriceableError` where it is not known."""
        raise UnpriceableError(f"target {self.name!r} does not price input adapters")

    def prepare(self, plans: Sequence[NetworkPlan]) -> None:  # noqa: B027 (a hook: most targets have nothing to prepare)
        """Get ready to price these plans (a target that measures on first use measures what
        they need, together); by default there is nothing to do."""

    def lookups(self, plan: NetworkPlan) -> list[Latency]:
        return [self.layer_latency(layer) for layer in plan.layers]

    def layouts(self, plan: NetworkPlan) -> list[Layout | None]:
        """The layouts at each layer's edges, where the target knows them (None: it does not, and a
        network's edges save nothing in its price)."""
        return [None] * len(plan.layers)

    def price(self, plan: NetworkPlan) -> Cost:
        """Latency (layer lookups, calibrated on whole networks, plus overhead), size and peak memory.

        The latency is the calibration's sum, exactly as it was fitted and checked. The breakdown
        has one part per layer plus ``overhead`` and adds up to it: a layer's part is its share
        of that sum, never below ``MIN_SHARE`` of its own lookup (a negative share, which a fit
        of many coefficients can give a tiny layer, is raised to that floor and the other layers'
        shares shrink to keep the total). Where the floors exceed the sum (a calibration used far
        outside the networks it was fitted on), each part is its floor or more and the total is
        theirs: never zero or negative.
        """
        cal = self.calibration
        lookups = self.lookups(plan)
        raw = [cal.layer_ms(terms) for terms in _terms(plan.layers, lookups, self.layouts(plan))]
        floors = [MIN_SHARE * lat.mean_ms for lat in lookups]
        overhead = max(self.overhead().mean_ms + cal.offset_ms, 0.0)
        fitted = sum(raw) + self.overhead().mean_ms + cal.offset_ms
        shares = _shares(raw, floors, fitted - overhead)
        parts = [(layer.name, ms) for layer, ms in zip(plan.layers, shares)] + [("overhead", overhead)]
        latency = sum(ms for _, ms in parts)
        if not latency > 0:
            raise UnpriceableError(f"target {self.name!r} prices {plan.candidate.to_string()} at {latency} ms")
        return Cost(latency_ms=latency, size_kb=size_kb(plan), peak_memory_kb=peak_memory_kb(plan),
                    blocks=tuple(parts))
