"""Device profiles: versioned JSON files of measured (or estimated) per-layer latencies.

A profile is data, validated by pydantic on load; a corrupt file or another schema version
fails with the file and the field named. Entries are keyed by a :class:`BlockKey`, a typed key of
everything that changes a layer's run time: kind, input size, channels, kernel, stride,
squeeze-excite, activation, residual and the precision the runtime executes it at. Pruned widths
between measured ones are interpolated (:meth:`Profile.lookup`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import singledispatch
from pathlib import Path
from typing import Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from hwsearch.spaces._plan import LAYER_KINDS, BlockPlan, FusedBlockPlan, HeadPlan, Layer, StemPlan
from hwsearch.targets._cost import Latency, precision_of
from hwsearch.targets._errors import TargetError
from hwsearch.targets._extend import Anchors, Extension, extend_price
from hwsearch.targets._layouts import LAYOUT_FEATURES, Layout, LayoutName
from hwsearch.targets._published import Validation
from hwsearch.targets._roofline import RooflineFigures, roofline_ms

SCHEMA_VERSION: Final = 3
READABLE_VERSIONS = (2, 3)  # version 2 files (no reference, no self-check) still load
ALIGN_CAP = 16  # SIMD alignment classes: a channel count's largest power-of-two divisor, up to 16


class ProfileError(TargetError, ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


LOCAL_ADVICE = "profile the space with 'hwsearch profile'"  # how this host fills a missing layer


class UnpriceableError(TargetError, LookupError):
    """A target has no latency for a layer configuration; the message names what is missing."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


DeviceKind = Literal["cpu", "gpu", "npu", "mcu"]
LayerMethod = Literal["alone", "started"]  # how entries were measured: see _profiling.layer_method


class DeviceFacts(_Model):
    name: str
    kind: DeviceKind
    runtime: str = "onnxruntime"
    runtime_version: str
    provider: str = "CPUExecutionProvider"
    threads: int = Field(ge=1)
    host: str = Field(description="the CPU or GPU model")
    measured_at: str
    measured: bool
    sources: list[str] = Field(default_factory=list, description="public figures an estimate rests on")


class BitSupport(_Model):
    native: list[int] = Field(description="bit widths the runtime has kernels for")
    executed_as: dict[str, str] = Field(description="bit width -> how it runs (precision and storage)")


class Entry(_Model):
    mean_ms: float = Field(ge=0)
    std_ms: float = Field(ge=0)
    count: int = Field(ge=1)
    layout_in: LayoutName | None = Field(
        default=None, description="the layout the layer's first kernel takes its input in, alone (see _layouts)")
    layout_out: LayoutName | None = Field(default=None, description="the layout its last kernel gives its output in")
    split_act: int = Field(default=0, ge=0, description="its operators alone that a network fuses into a kernel")

    @property
    def layout(self) -> Layout:
        return Layout(self.layout_in, self.layout_out, self.split_act)

    def with_layout(self, layout: Layout) -> Entry:
        return self.model_copy(update={"layout_in": layout.in_, "layout_out": layout.out,
                                       "split_act": layout.split_act})

    def latency(self) -> Latency:
        return Latency(self.mean_ms, self.std_ms, self.count)

    @classmethod
    def of(cls, lat: Latency) -> Entry:
        return cls(mean_ms=lat.mean_ms, std_ms=lat.std_ms, count=lat.count)


class Sample(_Model):
    """One whole network measured end to end, with the features the calibration fits."""

    candidate: str
    input_shape: tuple[int, int, int]
    features: dict[str, float]
    measured_ms: float = Field(gt=0)


class Reference(_Model):
    """The reference network every measurement of the profile is relative to (see
    :mod:`hwsearch.targets._meter`): its ONNX graph is fixed by ``candidate`` and ``input_shape``; ``ms`` is
    its median time when the profile was started, the scale its ratios are stored in."""

    candidate: str
    input_shape: tuple[int, int, int]
    ms: float = Field(gt=0)
    bursts: int = Field(
        default=0, ge=0, description="reference bursts ``ms`` is the median of, over every measuring run"
    )
    noise: float = Field(ge=0, description="median / 5th-percentile burst time of the reference: 1.0 is a quiet host")
    rejected_rounds: int = Field(default=0, ge=0, description="rounds dropped as spikes or outliers and measured again")
    entry_ci: float | None = Field(
        default=None, description="median ~95% interval of the entries, relative: the noise floor"
    )
    speedup: float | None = Field(
        default=None, description="the reference's time at 1 thread / at the profile's thread count (None at 1), "
        "the latter as refined over every measuring run (see ``ms``)"
    )
    neighbours: float | None = Field(
        default=None, description="the most CPU time other processes and the hypervisor took beside one of the "
        "profile's measuring runs, on average, in CPUs (see hwsearch.targets._meter.neighbours_since); None: unknown"
    )
    cpus: int | None = Field(default=None, description="the host's CPU count when ``neighbours`` was measured")
    spinning: bool = Field(
        default=False, description="measured at more than one thread with the sessions' workers spinning between runs, "
        "as onnxruntime's default does (hwsearch.targets._meter.session; before 2026-12-07 they were stopped after "
        "every run)"
    )


class SelfCheck(_Model):
    """The profile's latency model checked on fresh networks (a seed other than the fit's)."""

    space: str = Field(description="fingerprint of the space, input and classes checked")
    input_shape: tuple[int, int, int]
    n: int
    seed: int
    within_10pct: float
    mape: float
    kendall_tau: float
    host_drift: float = Field(description="the reference's time during the check / the profile's")
    busy: float | None = Field(
        default=None, description="the reference's median burst during the check / the profile's quiet time"
    )
    misses: int | None = Field(default=None, description="networks predicted beyond 10%, measured a second time")
    misses_confirmed: int | None = Field(
        default=None, description="misses whose second reading agreed with the first: the model's error, not noise"
    )
    neighbours: float | None = Field(
        default=None, description="CPU time other processes and the hypervisor took during the check, on average, in "
        "CPUs; None: unknown"
    )
    cpus: int | None = Field(default=None, description="the host's CPU count when ``neighbours`` was measured")
    passed: bool
    checked_at: str


PASS_WITHIN_10PCT, PASS_TAU = 0.9, 0.9  # a self-check passes with this share within 10% and this tau


KINDS = tuple(kind.kind for kind in LAYER_KINDS)  # ("stem", "ir", "fmb", "head"): one per layer kind
PRIOR = {"fp32_ms": 1.0, "int8_ms": 1.0}  # uncalibrated: the lookups' sum, as measured
_LEGACY = {"fp32_scale": "fp32_ms", "int8_scale": "int8_ms", "fp32_ms_per_kelem": "fp32_kelems",
           "int8_ms_per_kelem": "int8_kelems"}  # version 2 files' coefficient fields


def layer_terms(kind: str, precision: str, lookup_ms: float, kelems: float, switch: bool,
                se: bool = False) -> dict[str, float]:
    """The features one layer adds to its network: for its precision, for its kind at that
    precision and, for a block with squeeze-excite, for ``se`` at that precision, the lookup's
    milliseconds (``_ms``), the thousands of activation values at its boundary (``_kelems``) and
    one layer (``_layers``); ``switches`` counts a change of precision from the previous layer (a
    quantize or dequantize the network runs there).

    Why squeeze-excite has its own group: its five small operators (pool, two 1x1 convolutions,
    gate, multiply) cost a network other than what they cost alone. Measured on the 2-core AMD
    EPYC VM at 2 threads (3x32x32, 100 networks fitted, 3 x 50 held out): 66-68% of held-out
    networks within 10% without the group, 80-88% with it.
    """
    t: dict[str, float] = {}
    groups = (precision, f"{kind}_{precision}", *((f"se_{precision}",) if se else ()))
    for group in groups:
        t[f"{group}_ms"] = lookup_ms
        t[f"{group}_kelems"] = kelems
        t[f"{group}_layers"] = 1.0
    if switch:
        t["switches"] = 1.0
    return t


_GROUPS = ("fp32", "int8", *(f"{k}_{p}" for k in (*KINDS, "se") for p in ("fp32", "int8")))
FEATURES = tuple(f"{g}_{x}" for g in _GROUPS for x in ("ms", "kelems", "layers")) + ("switches", *LAYOUT_FEATURES)
FEATURE_SET = 3  # version of the features (layer_terms' and boundary_terms'): samples of another are measured again


class Calibration(_Model):
    """Whole-network model of latency from the layers' lookups, fitted on networks measured end
    to end::

        latency = sum over layers and their features f of coef[f] * f  +  overhead + offset_ms

    A layer's features (:func:`layer_terms`) are its lookup, its boundary traffic and a count,
    each once for its precision and once for its kind (stem, inverted residual, head) at that
    precision, once more for a block with squeeze-excite, plus a count of precision switches.
    Why it is not just the lookups' sum: a layer timed alone converts its input and output
    between the graph's layout and the kernel's (NCHWc reorders, NHWC transposes) and pays a
    graph's fixed costs (at 2 threads, waking the worker thread); inside a network the layouts
    of its neighbours decide what is converted, once: where the profile records its layers'
    layouts (:attr:`Profile.layouts`), the conversions two neighbours keep and the operators a
    network fuses are features too (:func:`~hwsearch.targets._layouts.boundary_terms`; refitted on
    the latency matrix's profiles of the AMD EPYC host, they took its 50 held-out networks within
    10% from 98% to 100% at 1x8x8 and 3x96x96 at one thread, and from 88% to 92% (1x8x8) and 92% to
    94% (3x32x32) at two). The fit is least squares on relative
    error, regularised towards the plain sum (``PRIOR``), so coefficients that the networks do
    not pin down stay near it; how strongly is chosen by cross-validation on the samples
    (``ridge``). :meth:`~hwsearch.targets._target.Target.price` gives a network exactly this
    sum: the model that was fitted and checked is the one that prices.
    """

    coef: dict[str, float] = Field(default_factory=lambda: dict(PRIOR))
    offset_ms: float = 0.0
    fitted_on: int = Field(default=0, description="networks measured end to end for the fit")
    spaces: list[str] = Field(default_factory=list, description="fingerprints of the spaces sampled")
    fit_mape: float | None = Field(default=None, description="mean absolute % error on the fit networks")
    ridge: float | None = Field(default=None, description="regularisation chosen by cross-validation on the samples")
    feature_set: int = Field(default=1, description="version of the features the samples hold (FEATURE_SET)")
    samples: list[Sample] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_version_2(cls, data: object) -> object:
        if isinstance(data, dict) and any(k in data for k in _LEGACY):
            data = dict(data)
            coef = {"fp32_ms": 1.0, "int8_ms": 1.0}
            for old, new in _LEGACY.items():
                if old in data:
                    coef[new] = data.pop(old)
            data.setdefault("coef", coef)
        return data

    def layer_ms(self, terms: dict[str, float]) -> float:
        """A layer's share of the network's latency, from its :func:`layer_terms`."""
        return sum(self.coef.get(f, 0.0) * v for f, v in terms.items())


class BlockKey(NamedTuple):
    """The typed key of a layer's entry; its string form is the key in the file, e.g.
    ``ir|8x8|16-48-24|k3|s1|se12|hswish|res|int8`` (``mid`` 0: no expand convolution), or
    ``fmb|...`` in the same form for a fused block (``mid``: the dense kxk's output channels)."""

    kind: Literal["stem", "ir", "fmb", "head"]
    h: int
    w: int
    cin: int
    mid: int
    cout: int
    kernel: int
    stride: int
    se: int
    act: str
    residual: bool
    precision: str

    def __str__(self) -> str:
        hw = f"{self.h}x{self.w}"
        if self.kind == "stem":
            return f"stem|{hw}|{self.cin}-{self.cout}|k{self.kernel}|s{self.stride}|{self.act}|{self.precision}"
        if self.kind == "head":
            return f"head|{hw}|{self.cin}-{self.cout}|{self.precision}"
        return (f"{self.kind}|{hw}|{self.cin}-{self.mid}-{self.cout}|k{self.kernel}|s{self.stride}|se{self.se}|"
                f"{self.act}|{'res' if self.residual else 'nores'}|{self.precision}")

    @classmethod
    def parse(cls, text: str) -> BlockKey:
        try:
            f = text.split("|")
            h, w = map(int, f[1].split("x"))
            if f[0] == "stem" and len(f) == 7:
                cin, cout = map(int, f[2].split("-"))
                return cls("stem", h, w, cin, 0, cout, int(f[3][1:]), int(f[4][1:]), 0, f[5], False, f[6])
            if f[0] == "head" and len(f) == 4:
                cin, cout = map(int, f[2].split("-"))
                return cls("head", h, w, cin, 0, cout, 1, 1, 0, "none", False, f[3])
            if f[0] in ("ir", "fmb") and len(f) == 9 and f[7] in ("res", "nores"):
                cin, mid, cout = map(int, f[2].split("-"))
                return cls("fmb" if f[0] == "fmb" else "ir", h, w, cin, mid, cout, int(f[3][1:]), int(f[4][1:]),
                           int(f[5][2:]), f[6], f[7] == "res", f[8])
        except (ValueError, IndexError):
            pass
        raise ValueError(f"not a layer key: {text!r} (expected e.g. 'ir|8x8|16-48-24|k3|s1|se12|relu|res|int8')")

    @property
    def prunable(self) -> bool:
        """A block with expanded channels: pruning changes ``mid``, so its latency is interpolated
        between the widths measured of its :attr:`family`."""
        return self.kind in ("ir", "fmb") and self.mid > 0

    @property
    def family(self) -> BlockKey:
        """The key with its expanded width left out: entries that differ only by pruning."""
        return self._replace(mid=-1)

    @property
    def align(self) -> int:
        """SIMD alignment class of the expanded width: kernels change with it, so latency is
        interpolated only between widths of the same class."""
        return min(self.mid & -self.mid, ALIGN_CAP)


@singledispatch
def block_key(layer: Layer) -> BlockKey:
    """The typed profile key of a layer (one rule per layer kind)."""
    raise TypeError(f"no profile key for a {type(layer).__name__}: register one with block_key.register")


@block_key.register
def _stem_key(layer: StemPlan) -> BlockKey:
    (h, w), prec = layer.hw_in, precision_of(layer.w_bits, layer.a_bits)
    return BlockKey(layer.kind, h, w, layer.cin, 0, layer.cout, layer.kernel, layer.stride, 0, layer.act, False, prec)


@block_key.register(FusedBlockPlan)  # the same rule, branching on ``fused``
@block_key.register
def _block_key(b: BlockPlan) -> BlockKey:
    (h, w), prec = b.hw_in, precision_of(b.w_bits, b.a_bits)
    mid = b.cmid if b.has_expand or b.fused else 0
    return BlockKey(b.kind, h, w, b.cin, mid, b.cout, b.kernel, b.stride, b.se, b.act, b.residual, prec)


@block_key.register
def _head_key(layer: HeadPlan) -> BlockKey:
    (h, w), prec = layer.hw_in, precision_of(layer.w_bits, layer.a_bits)
    return BlockKey(layer.kind, h, w, layer.cin, 0, layer.num_classes, 1, 1, 0, "none", False, prec)


def layer_key(layer: Layer) -> str:
    """The profile key of a layer, e.g. ``ir|8x8|16-48-24|k3|s1|se12|hswish|res|int8``."""
    return str(block_key(layer))


# A classifier head's time per extra multiply-add of its linear layer, in ns, where a profile has no
# two class counts of one head to fit it from: measured on the 2-core Intel Xeon host, heads of
# 2..1000 classes on 2x2..12x12 maps with 32..160 channels (int8 runs as QDQ: slower per MAC).
HEAD_NS_PER_MAC = {"fp32": 0.05, "int8": 0.3}
HEAD_FLOOR = 0.5  # a modelled head keeps at least this share of the measured head it starts from


class Profile(_Model):
    schema_version: Literal[2, 3] = SCHEMA_VERSION
    device: DeviceFacts
    bits: BitSupport
    overhead_ms: Entry = Field(description="fixed per-inference cost of the runtime")
    entries: dict[str, Entry] = Field(default_factory=dict, description="layer key -> its latency (layer_method)")
    layer_method: LayerMethod = Field(default="alone", description=(
        "how entries were measured: 'alone' (the layer's graph less the per-call overhead) or 'started' (the "
        "smaller of that and one more copy of it side by side, the runtime's workers already running), see "
        "_profiling.layer_method"))
    calibration: Calibration = Field(default_factory=Calibration)
    reference: Reference | None = Field(default=None, description="what the measurements are relative to")
    checks: list[SelfCheck] = Field(default_factory=list, description="self-checks, one per space, newest last")
    adapters: dict[str, Entry] = Field(default_factory=dict, description=(
        "input adapter key (adapter_key) -> its time inside a file: raw pixels to the network's input"))
    roofline: RooflineFigures | None = Field(default=None, description=(
        "an estimate's figures: every layer is priced from them on demand (entries are not used)"))
    validation: Validation | None = Field(default=None, description=(
        "an estimate against published measurements of real networks on that class of device: its expected error"))
    extension: Extension | None = Field(default=None, description=(
        "a model fitted on the entries that prices the layers they lack, with its measured error "
        "('hwsearch extend')"))
    layouts: bool = Field(default=False, description=(
        "whether its entries record the layouts at the layers' edges (_layouts), as onnxruntime optimised each "
        "layer where it was measured (here, or on the device a bundle was measured on); never for an estimate"))
    # (family, alignment class) -> (expanded width, entry) of the measured pruned widths, by width
    _index: dict[tuple[BlockKey, int], list[tuple[int, Entry]]] | None = PrivateAttr(default=None)
    _anchors: Anchors | None = PrivateAttr(default=None)  # the entries by configuration, for the extension
    _head_index: dict[tuple[int, int, int, str], dict[int, Entry]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _keys_parse(self) -> Profile:
        for k in self.entries:
            BlockKey.parse(k)  # raises ValueError naming the key
        return self

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProfileError(f"{path}: no such profile file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProfileError(f"{path}: not a readable JSON profile ({e})") from None
        if not isinstance(data, dict):
            raise ProfileError(f"{path}: a profile is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if "schema_version" not in data:
            raise ProfileError(f"{path}: no schema_version: not an hwsearch device profile "
                               f"(those are written by 'hwsearch profile', version {SCHEMA_VERSION})")
        if version not in READABLE_VERSIONS:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
            advice = ("it was written by a newer hwsearch: upgrade this one" if newer else
                      "measure the device again with 'hwsearch profile'")
            raise ProfileError(f"{path}: schema_version is {version!r}, this hwsearch reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}; {advice}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            errors = e.errors()
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: "
                                 f"{err['msg'].removeprefix('Value error, ')}" for err in errors[:5])
            more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
            raise ProfileError(f"{path}: invalid profile: {problems}{more}") from None

    def rescale(self, factor: float) -> None:
        """Multiply every time in the profile by ``factor`` (a new estimate of its scale)."""
        for e in (*self.entries.values(), *self.adapters.values(), self.overhead_ms):
            e.mean_ms, e.std_ms = e.mean_ms * factor, e.std_ms * factor
        cal = self.calibration
        for sample in cal.samples:
            sample.measured_ms *= factor
            sample.features = {k: v * factor if k.endswith("_ms") else v for k, v in sample.features.items()}
        cal.coef = {k: v if k.endswith("_ms") else v * factor for k, v in cal.coef.items()}
        cal.offset_ms *= factor
        if self.reference:
            self.reference.ms *= factor
            if self.reference.speedup:  # its time at 1 thread, timed once, over the refined one here
                self.reference.speedup /= factor
        self._index = self._anchors = self._head_index = None

    def check_for(self, fingerprint: str) -> SelfCheck | None:
        """The newest self-check of a space (by fingerprint), if any."""
        return next((c for c in reversed(self.checks) if c.space == fingerprint), None)

    def save(self, path: str | Path) -> None:
        """Write atomically (a reader never sees half a file), as the current schema version."""
        self.schema_version = SCHEMA_VERSION
        path = Path(path)
        from hwsearch.targets._bundle_measure import write_atomically

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, self.model_dump_json(indent=1))

    def add(self, key: BlockKey | str, entry: Entry) -> None:
        text = str(key)
        replaced = text in self.entries
        self.entries[text] = entry
        self._anchors = self._head_index = None
        if self._index is not None:
            if replaced:
                self._index = None  # rare: rebuilt on the next lookup
            else:
                _index_one(self._index, BlockKey.parse(text) if isinstance(key, str) else key, entry)

    def _families(self) -> dict[tuple[BlockKey, int], list[tuple[int, Entry]]]:
        index = self._index
        if index is None:
            # built aside and published whole: a build cut short (a Streamlit rerun stops its thread
            # mid-call) or read by another thread meanwhile never leaves a half index that misses layers
            index = {}
            for text, entry in list(self.entries.items()):
                _index_one(index, BlockKey.parse(text), entry)
            self._index = index
        return index

    def lookup(self, layer: Layer) -> Latency:
        """A layer's latency alone. An estimate prices it from its roofline. A table gives its
        entry; else a linear interpolation in the expanded width between the nearest measured
        widths of the same alignment class, same everything else; else, for a head, the measured
        head of another class count adjusted (:meth:`_head_for`); else the profile's
        :attr:`extension`, where it has one. Raises :class:`UnpriceableError` naming the key when
        none of these prices it."""
        if self.roofline is not None:
            return Latency(roofline_ms(layer, self.roofline), 0.0, 1)
        key = block_key(layer)
        entry = self.entries.get(str(key))
        if entry is not None:
            return entry.latency()
        try:
            return self._from_table(layer, key)
        except UnpriceableError:
            if self.extension is None:
                raise
            if self._anchors is None:
                self._anchors = Anchors([(BlockKey.parse(k), e.mean_ms) for k, e in list(self.entries.items())])
            ms = extend_price(self.extension, key, self._anchors)
            if ms is None:
                raise
            band = self.extension.band if self._anchors.nearest(key) else self.extension.band_alone
            return Latency(ms, ms * band, 1)

    def layout(self, layer: Layer) -> Layout | None:
        """The layouts at a layer's edges (:class:`~hwsearch.targets._layouts.Layout`): its entry's,
        else, for a width :meth:`lookup` interpolates, the nearer measured width's of the same
        alignment class (the NCHWc block follows the alignment), for a head of another class count
        the head it is priced from; None where the profile does not record them."""
        if not self.layouts or self.roofline is not None:
            return None
        key = block_key(layer)
        entry = self.entries.get(str(key))
        if entry is not None:
            return entry.layout
        if key.kind == "head":
            near = self._nearest_head(key)
            return near[1].layout if near else None
        if key.prunable:
            points = self._families().get((key.family, key.align), [])
            if points:
                return min(points, key=lambda p: (abs(p[0] - key.mid), p[0]))[1].layout
        return None

    def priced_by(self, layer: Layer) -> str:
        """How :meth:`lookup` prices a layer: ``roofline`` (an estimate), ``entry`` (measured),
        ``interpolated`` (between measured pruned widths), ``head model`` (a measured head of
        another class count), ``extension`` (the fitted model) or ``missing`` (it raises)."""
        if self.roofline is not None:
            return "roofline"
        key = block_key(layer)
        if str(key) in self.entries:
            return "entry"
        try:
            self._from_table(layer, key)
            return "head model" if key.kind == "head" else "interpolated"
        except UnpriceableError:
            try:
                self.lookup(layer)
                return "extension"
            except UnpriceableError:
                return "missing"

    def _from_table(self, layer: Layer, key: BlockKey) -> Latency:
        if key.kind == "head":
            return self._head_for(layer, key)
        if key.prunable:
            points = self._families().get((key.family, key.align), [])
            below = [p for p in points if p[0] < key.mid]
            above = [p for p in points if p[0] > key.mid]
            if below and above:
                (m0, e0), (m1, e1) = below[-1], above[0]
                t = (key.mid - m0) / (m1 - m0)
                return Latency(e0.mean_ms + t * (e1.mean_ms - e0.mean_ms), max(e0.std_ms, e1.std_ms),
                               min(e0.count, e1.count))
            measured = ", ".join(str(m) for m, _ in points) or "none"
            raise UnpriceableError(
                f"no latency for layer {layer.name} ({key}) on {self.device.name!r}: expanded widths "
                f"measured in its alignment class: {measured}; {LOCAL_ADVICE}")
        raise UnpriceableError(f"no latency for layer {layer.name} ({key}) on {self.device.name!r}; {LOCAL_ADVICE}")

    def _heads(self) -> dict[tuple[int, int, int, str], dict[int, Entry]]:
        """Measured heads by (input height, width, channels, precision): class count -> entry (built
        once, on first need: a search prices a head per trial)."""
        if self._head_index is None:
            out: dict[tuple[int, int, int, str], dict[int, Entry]] = {}
            for text, entry in list(self.entries.items()):
                if text.startswith("head|"):
                    k = BlockKey.parse(text)
                    out.setdefault((k.h, k.w, k.cin, k.precision), {})[k.cout] = entry
            self._head_index = out
        return self._head_index

    def head_ns_per_mac(self, precision: str) -> tuple[float, bool]:
        """A head's time per multiply-add of its classifier at ``precision``, and whether it was
        fitted on this profile (the median slope over heads measured at two class counts or more)
        rather than taken from :data:`HEAD_NS_PER_MAC`."""
        slopes = []
        for (_, _, cin, prec), by_classes in self._heads().items():
            if prec == precision and len(by_classes) > 1:
                (c0, e0), (c1, e1) = min(by_classes.items()), max(by_classes.items())
                slopes.append((e1.mean_ms - e0.mean_ms) * 1e6 / (cin * (c1 - c0)))
        if not slopes:
            return HEAD_NS_PER_MAC.get(precision, HEAD_NS_PER_MAC["fp32"]), False
        return max(sorted(slopes)[len(slopes) // 2], 0.0), True

    def _nearest_head(self, key: BlockKey) -> tuple[int, Entry] | None:
        """The measured head of the same map, channels and precision nearest in class count (its
        class count and entry), or None."""
        by_classes = self._heads().get((key.h, key.w, key.cin, key.precision))
        if not by_classes:
            return None
        near = min(by_classes, key=lambda c: (abs(c - key.cout), c))
        return near, by_classes[near]

    def _head_for(self, layer: Layer, key: BlockKey) -> Latency:
        """A head at a class count the profile has not measured: the measured head of the same map,
        channels and precision nearest in classes, plus (or less) the classifier's multiply-adds
        in between at :meth:`head_ns_per_mac`. Its spread states the error: the whole modelled part."""
        nearest = self._nearest_head(key)
        if nearest is None:
            raise UnpriceableError(
                f"no latency for layer {layer.name} ({key}) on {self.device.name!r}: no head on a {key.h}x{key.w} "
                f"map of {key.cin} channels at {key.precision} is measured, for any class count; {LOCAL_ADVICE}")
        near, base = nearest
        extra = self.head_ns_per_mac(key.precision)[0] * key.cin * (key.cout - near) / 1e6
        ms = max(base.mean_ms + extra, HEAD_FLOOR * base.mean_ms)
        return Latency(ms, base.std_ms + abs(ms - base.mean_ms), base.count)


def _index_one(index: dict[tuple[BlockKey, int], list[tuple[int, Entry]]], k: BlockKey, entry: Entry) -> None:
    if k.prunable:
        points = index.setdefault((k.family, k.align), [])
        points.append((k.mid, entry))
        points.sort(key=lambda p: p[0])


def adapter_key(input_shape: tuple[int, int, int], dtype: str) -> str:
    """The key of an input adapter's entry, e.g. ``adapter|32x32x3|uint8`` (H x W x C pixels in)."""
    c, h, w = input_shape
    return f"adapter|{h}x{w}x{c}|{dtype}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
