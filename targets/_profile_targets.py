"""Targets backed by a profile: a file as given, or ``local-cpu`` measured here on first use."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwsearch.spaces._plan import NetworkPlan
from hwsearch.targets._cost import Cost, Latency
from hwsearch.targets._layouts import Layout
from hwsearch.targets._meter import DEFAULT_PROVIDER, host_name
from hwsearch.targets._profile_format import (
    FEATURE_SET,
    LOCAL_ADVICE,
    BitSupport,
    BlockKey,
    Calibration,
    DeviceFacts,
    DeviceKind,
    Entry,
    Profile,
    ProfileError,
    adapter_key,
    block_key,
    now,
)
from hwsearch.targets._target import Layer, Progress, Target, UnpriceableError

if TYPE_CHECKING:
    from hwsearch.spaces._config import SpaceSpec

CPU_BITS = BitSupport(native=[8, 32], executed_as={
    "2": "int8 kernels, weights on a 2-bit grid held in int8",
    "4": "int8 kernels, weights on a 4-bit grid held in int8 (no 4-bit CPU kernels)",
    "8": "int8", "16": "fp32 (fp16 on CPU inserts casts around fp32 kernels)", "32": "fp32"})


class ProfileTarget(Target):
    """Prices with a profile's entries (interpolating pruned widths); a layer it has no entry for
    is unpriceable."""

    profile: Profile  # always one

    def __init__(self, profile: Profile, name: str | None = None, path: Path | None = None) -> None:
        self.profile = profile
        self.name = name or profile.device.name
        self.path = path
        d = profile.device
        kind = "measured" if d.measured else "ESTIMATED from spec sheets"
        if profile.layer_method == "started":
            kind += STARTED_WORDS
        if not d.measured and profile.validation is not None:
            kind += f" ({profile.validation.band()})"
        self.description = f"{d.host}, {d.kind}, {d.provider}, {d.threads} thread(s), {kind}"

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> ProfileTarget:
        return cls(Profile.load(path), name=name, path=Path(path))

    @property
    def measured(self) -> bool:
        return self.profile.device.measured

    @property
    def calibration(self) -> Calibration:
        return self.profile.calibration

    def overhead(self) -> Latency:
        return self.profile.overhead_ms.latency()

    def layouts(self, plan: NetworkPlan) -> list[Layout | None]:
        return [self.profile.layout(layer) for layer in plan.layers]

    def layer_latency(self, layer: Layer) -> Latency:
        try:
            return self.profile.lookup(layer)
        except UnpriceableError as e:
            raise UnpriceableError(str(e).replace(LOCAL_ADVICE, self.missing_advice())) from None

    def missing_advice(self) -> str:
        """How the layers this profile lacks are filled: measured on the device it was measured on
        (a bundle: 'hwsearch profile --bundle'), or modelled from its entries ('hwsearch extend')."""
        d = self.profile.device
        where = self.path or f"{self.name}.json"
        return (f"this profile was measured on {d.host}, not here. Measure the space on that device: "
                f"'hwsearch profile --bundle {self.name}-bundle --spec SPEC --threads {d.threads} --provider "
                f"{d.provider}', copy the folder there and run 'python3 {self.name}-bundle/measure.py' (numpy and "
                f"onnxruntime only), then 'hwsearch profile --import {self.name}-bundle/timings.json "
                "--out DEVICE.json'; "
                f"or model the layers it lacks from its entries, with a measured error: 'hwsearch extend {where}'")

    def adapter_latency(self, input_shape: tuple[int, int, int], dtype: str) -> Latency:
        if self.profile.roofline is not None:
            from hwsearch.targets._roofline import roofline_adapter_ms

            return Latency(roofline_adapter_ms(input_shape, dtype, self.profile.roofline), 0.0, 1)
        entry = self.profile.adapters.get(adapter_key(input_shape, dtype))
        if entry is None:
            raise UnpriceableError(f"no input adapter for {adapter_key(input_shape, dtype)} on {self.name!r}: "
                                   "profile it on the device with 'hwsearch profile' and a spec")
        return entry.latency()


STARTED_WORDS = " (layers as started: the smaller of alone and one more copy)"  # a description's, see layer_method


def cache_dir() -> Path:
    """Where measured profiles are cached: ``$HWSEARCH_CACHE`` or ``~/.cache/hwsearch``."""
    return Path(os.environ.get("HWSEARCH_CACHE") or Path.home() / ".cache" / "hwsearch")


def new_profile(name: str, threads: int = 1, provider: str = DEFAULT_PROVIDER,
                kind: DeviceKind | None = None) -> Profile:
    """An empty profile of this host: the reference network timed (it sets the profile's
    scale) and the runtime's per-call overhead measured against it."""
    import onnxruntime as ort

    from hwsearch.targets._profiling import layer_method, measure_overhead, measure_reference

    kind = kind or ("gpu" if provider.startswith(("CUDA", "Tensorrt", "ROCM", "Dml")) else "cpu")
    facts = DeviceFacts(name=name, kind=kind, runtime_version=ort.__version__, provider=provider, threads=threads,
                        host=host_name(), measured_at=now(), measured=True)
    ref = measure_reference(threads, provider)
    return Profile(device=facts, bits=CPU_BITS, reference=ref, layer_method=layer_method(threads), layouts=True,
                   overhead_ms=Entry.of(measure_overhead(threads, provider, ref.ms)))


class LocalCpuTarget(ProfileTarget):
    """This host's CPU with onnxruntime at a fixed thread count, measured layer by layer on first
    use and cached (``cache_dir()/local-cpu-<threads>t.json``); ``hwsearch profile --target
    local-cpu`` fills the same file ahead of time.

    A layer is looked up, else interpolated between measured pruned widths, else measured now:
    exported alone as ONNX (fp32, or int8 QDQ when its weights and activations are at most 8
    bits) and timed with warm-up and many repeats (median), less the runtime's per-call overhead,
    which a network pays once. Before a search, :meth:`ensure_calibrated` measures the space's
    whole grid and whole networks of it once, so the sum of layers is calibrated to what a network
    really takes and no layer of the space is timed between trials.
    """

    name = "local-cpu"
    path: Path  # where it is cached: always one

    def __init__(self, threads: int = 1, path: Path | None = None) -> None:
        import onnxruntime as ort

        from hwsearch.targets._profiling import layer_method

        self.threads = threads
        path = path or cache_dir() / f"local-cpu-{threads}t.json"
        profile = None
        if path.exists():
            try:
                profile = Profile.load(path)
            except ProfileError as e:
                print(f"warning: {e}; measuring again", file=sys.stderr)
            if profile and (profile.device.runtime_version != ort.__version__ or profile.device.host != host_name()
                            or profile.reference is None or profile.layer_method != layer_method(threads)
                            or not profile.layouts or (threads > 1 and not profile.reference.spinning)):
                # another runtime, CPU or way of measuring layers, no reference or layouts, or workers stopped
                # after every run (see hwsearch.targets._meter.session): measured again
                profile = None
        super().__init__(profile or new_profile("local-cpu", threads), name="local-cpu", path=path)
        self.description = (f"this host's CPU ({host_name()}), onnxruntime {ort.__version__}, {threads} thread(s), "
                            "measured on first use" + (STARTED_WORDS if layer_method(threads) == "started" else ""))
        self._rng = np.random.default_rng(0)
        self._dirty = False

    def layer_latency(self, layer: Layer) -> Latency:
        try:
            return self.profile.lookup(layer)
        except UnpriceableError:
            self._measure([layer])
            return self.profile.lookup(layer)

    def adapter_latency(self, input_shape: tuple[int, int, int], dtype: str) -> Latency:
        """Looked up, else measured now (alone, less the per-call overhead) and cached."""
        key = adapter_key(input_shape, dtype)
        if key not in self.profile.adapters:
            from hwsearch.targets._profiling import measure_adapter, profile_meter

            self.profile.adapters[key] = measure_adapter(input_shape, dtype, self.overhead().mean_ms,
                                                         profile_meter(self.profile))
            self._dirty = True
            self.flush()
        return self.profile.adapters[key].latency()

    def prepare(self, plans: Sequence[NetworkPlan]) -> None:
        """Measure, together, the layers of these plans that can be neither looked up nor
        interpolated."""
        missing: dict[BlockKey, Layer] = {}
        for plan in plans:
            for layer in plan.layers:
                try:
                    self.profile.lookup(layer)
                except UnpriceableError:
                    missing.setdefault(block_key(layer), layer)
        if missing:
            self._measure(list(missing.values()))

    def _measure(self, layers: list[Layer]) -> None:
        from hwsearch.targets._profiling import batch_size, measure_layer_entries, note_noise, profile_meter

        m = profile_meter(self.profile)
        since, size = len(m.ref_bursts), batch_size(self.threads)
        for i in range(0, len(layers), size):
            batch = layers[i:i + size]
            for layer, entry in zip(batch, measure_layer_entries(batch, self.overhead().mean_ms, m, self._rng)):
                self.profile.add(block_key(layer), entry)
        note_noise(self.profile, m, since, settle=False)
        self._dirty = True

    def price(self, plan: NetworkPlan) -> Cost:
        try:
            self.prepare([plan])  # measured together first: a measurement may rescale the profile
            return super().price(plan)
        finally:
            self.flush()

    def _calibrated(self, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int) -> tuple[str, bool]:
        """This space's fingerprint, and whether the latency model was fitted on its networks."""
        from hwsearch.targets._profiling import space_fingerprint

        fingerprint = space_fingerprint(config, input_shape, num_classes)
        cal = self.profile.calibration
        return fingerprint, fingerprint in cal.spaces and cal.feature_set == FEATURE_SET

    def needs_measuring(self, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int) -> bool:
        fingerprint, calibrated = self._calibrated(config, input_shape, num_classes)
        return not (calibrated and self.profile.check_for(fingerprint))

    def ensure_calibrated(self, config: SpaceSpec, input_shape: tuple[int, int, int], num_classes: int,
                          progress: Progress | None = None, *, networks: int | None = None) -> bool:
        """Unless done before (once per space, input and host): measure every layer of the space's
        grid (as ``hwsearch profile`` does), calibrate on ``networks`` (default 100) whole networks of
        it, then check the model on 30 fresh ones and store the check in the profile. Returns True
        when it measured.

        Why the whole grid first, and not each layer on its first use: a layer first used during a
        search is timed between trials, in the process that trains, and such timings read low. In a
        fresh-cache quickstart on the AMD EPYC host, fp32 entries timed so came out 0.31, 1.34 and
        1.88 us where the grid measured up front gave 1.29, 2.21 and 3.20 us (a few percent low on
        a network's whole time, which is mostly the per-call overhead, is most of a tiny layer's
        difference); priced with them, 7 of the front's 20 files came out 10-49% slower than their
        cards, and all 9 fp32 networks within 5% with the grid measured first. The grid is a few
        minutes at most (the quickstart's 2,534 layers: about a minute there, 5.5 on the Intel Xeon)."""
        from hwsearch.spaces._plan import reachable_layers
        from hwsearch.targets._profiling import CALIBRATION_NETWORKS, calibrate, measure_layers, select_grid, self_check

        if not self.needs_measuring(config, input_shape, num_classes):
            return False
        _, calibrated = self._calibrated(config, input_shape, num_classes)
        self.flush()
        if not calibrated:
            grid = select_grid(reachable_layers(config, input_shape, num_classes))
            measure_layers(self.profile, grid, self.path, self.threads, DEFAULT_PROVIDER, progress)
            calibrate(self.profile, self.lookups, config, input_shape, num_classes, networks or CALIBRATION_NETWORKS,
                      self.path,
                      self.threads, DEFAULT_PROVIDER, progress, prepare=self.prepare)
        self_check(self.profile, self, config, input_shape, num_classes, progress=progress)
        self.flush(force=True)
        return True

    def flush(self, force: bool = False) -> None:
        """Persist new measurements, merged with what other processes cached meanwhile."""
        if not (self._dirty or force):
            return
        if self.path.exists():
            try:
                on_disk = Profile.load(self.path)
                for k, v in on_disk.entries.items():
                    if k not in self.profile.entries:
                        self.profile.add(k, v)
                if on_disk.calibration.fitted_on > self.profile.calibration.fitted_on:
                    self.profile.calibration = on_disk.calibration
                for k, v in on_disk.adapters.items():
                    self.profile.adapters.setdefault(k, v)
                mine = {c.space for c in self.profile.checks}
                self.profile.checks = [c for c in on_disk.checks if c.space not in mine] + self.profile.checks
            except ProfileError:
                pass  # a corrupt or outdated cache is overwritten by what we hold
        self.profile.save(self.path)
        self._dirty = False
