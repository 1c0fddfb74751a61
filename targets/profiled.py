"""Targets backed by a profile: a file as given, or ``local-cpu`` measured here on first use."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from targets.base import Layer, Target, UnpriceableError
from targets.cost import Latency
from targets.measure import time_model
from targets.onnx_graph import identity_model, layer_model, layer_shapes, random_weights
from targets.profile import BitSupport, DeviceFacts, Entry, Profile, layer_key, now

CPU_BITS = BitSupport(native=[8, 32], executed_as={"2": "int8", "4": "int8", "8": "int8",
                                                    "16": "fp32", "32": "fp32"})
OVERHEAD_SHAPE = (1, 3, 32, 32)


class ProfileTarget(Target):
    """Prices with the entries of a profile file; a layer it has no entry for is unpriceable."""

    def __init__(self, profile: Profile, name: str | None = None, path: Path | None = None) -> None:
        self.profile = profile
        self.name = name or profile.device.name
        self.path = path
        kind = "measured" if profile.device.measured else "estimated"
        self.description = f"{profile.device.host} ({profile.device.kind}, {kind})"

    @classmethod
    def load(cls, path: str | Path) -> ProfileTarget:
        return cls(Profile.load(path), path=Path(path))

    @property
    def measured(self) -> bool:
        return self.profile.device.measured

    @property
    def calibration(self):
        return self.profile.calibration

    def overhead(self) -> Latency:
        return self.profile.overhead_ms.latency()

    def layer_latency(self, layer: Layer) -> Latency:
        key = layer_key(layer)
        entry = self.profile.entries.get(key)
        if entry is None:
            raise UnpriceableError(
                f"target {self.name!r} has no latency for layer {layer.name} ({key}); "
                f"profile the space on the device with 'hwsearch profile'")
        return entry.latency()


def cache_dir() -> Path:
    """Where measured profiles are cached: ``$HWSEARCH_CACHE`` or ``~/.cache/hwsearch``."""
    return Path(os.environ.get("HWSEARCH_CACHE") or Path.home() / ".cache" / "hwsearch")


def host_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class LocalCpuTarget(ProfileTarget):
    """This host's CPU with onnxruntime at a fixed thread count, measured layer by layer on first
    use and cached (``cache_dir()/local-cpu-<threads>t.json``).

    Each layer is exported alone as ONNX (fp32, or int8 QDQ when its weights and activations are
    at most 8 bits), timed with warm-up and many repeats (median), and the runtime's per-call
    overhead, timed on an empty graph, is subtracted from it and counted once per network.
    """

    name = "local-cpu"

    def __init__(self, threads: int = 1, path: Path | None = None) -> None:
        import onnxruntime as ort

        self.threads = threads
        path = path or cache_dir() / f"local-cpu-{threads}t.json"
        facts = DeviceFacts(name="local-cpu", kind="cpu", runtime_version=ort.__version__,
                            threads=threads, host=host_name(), measured_at=now(), measured=True)
        profile = None
        if path.exists():
            profile = Profile.load(path)
            if profile.device.runtime_version != ort.__version__ or profile.device.host != facts.host:
                profile = None  # measured with another runtime or on another CPU: measure again
        if profile is None:
            overhead = time_model(identity_model(OVERHEAD_SHAPE), OVERHEAD_SHAPE, threads)
            profile = Profile(device=facts, bits=CPU_BITS, overhead_ms=Entry.of(overhead))
        super().__init__(profile, name="local-cpu", path=path)
        self.description = f"this host's CPU: {facts.host}, onnxruntime {ort.__version__}, {threads} thread(s), measured on first use"
        self._rng = np.random.default_rng(0)
        self._dirty = False

    def layer_latency(self, layer: Layer) -> Latency:
        key = layer_key(layer)
        entry = self.profile.entries.get(key)
        if entry is None:
            lat = time_model(layer_model(layer, random_weights(layer, self._rng)), layer_shapes(layer)[0],
                             self.threads)
            # The layer alone still pays the per-call overhead once; the network pays it once in all.
            net = max(lat.mean_ms - self.overhead().mean_ms, 0.05 * lat.mean_ms)
            entry = Entry(mean_ms=net, std_ms=lat.std_ms, count=lat.count)
            self.profile.entries[key] = entry
            self._dirty = True
        return entry.latency()

    def price(self, plan):
        try:
            return super().price(plan)
        finally:
            self.flush()

    def flush(self) -> None:
        """Persist new measurements, merged with what other processes cached meanwhile."""
        if not self._dirty:
            return
        if self.path.exists():
            try:
                on_disk = Profile.load(self.path)
                for k, v in on_disk.entries.items():
                    self.profile.entries.setdefault(k, v)
            except ValueError:
                pass  # a corrupt cache is overwritten by what we hold
        self.profile.save(self.path)
        self._dirty = False
