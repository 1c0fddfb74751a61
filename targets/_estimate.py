"""Estimated device profiles: a roofline from public spec-sheet figures, for devices we cannot
measure here (a Raspberry Pi 4, a phone's big core, a Jetson, a microcontroller).

An estimate is a starting point, not a measurement: every file it writes says
``measured: false`` and lists the figures it rests on, and ``hwsearch targets``, ``pareto``
and the app label it as an estimate. Profile the real device with ``hwsearch profile`` to get
latencies you can trust.

An estimated profile holds the device's figures, not a table: :mod:`hwsearch.targets._roofline`
prices any layer from them on demand (any input size, channels, classes, kernel, precision).

Regenerate the shipped estimates with ``hwsearch estimate --out targets/profiles``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hwsearch.spaces._plan import Layer
from hwsearch.targets._profile_format import BitSupport, Calibration, DeviceFacts, DeviceKind, Entry, Profile
from hwsearch.targets._published import validate
from hwsearch.targets._roofline import EFFICIENCY, RooflineFigures, roofline_ms


@dataclass(frozen=True)
class Roofline:
    name: str
    kind: DeviceKind
    host: str
    runtime: str
    provider: str
    gmacs: dict[str, float]  # precision -> peak multiply-adds per second (1e9), one core/device
    bandwidth_gbs: float  # sustained memory bandwidth, GB/s
    op_overhead_us: float  # fixed cost per operator launch
    inference_overhead_us: float  # fixed cost per inference (runtime call, copies)
    bits: BitSupport
    sources: list[str] = field(default_factory=list)

    @property
    def figures(self) -> RooflineFigures:
        return RooflineFigures(gmacs=self.gmacs, bandwidth_gbs=self.bandwidth_gbs, op_overhead_us=self.op_overhead_us)


DEVICES = [
    Roofline(
        name="rpi4-a72",
        kind="cpu",
        host="Raspberry Pi 4 Model B, Broadcom BCM2711, Cortex-A72 @ 1.5 GHz (1 core)",
        runtime="onnxruntime (estimated)",
        provider="CPUExecutionProvider",
        gmacs={"fp32": 12.0, "int8": 18.0},
        bandwidth_gbs=4.0,
        op_overhead_us=2.0,
        inference_overhead_us=15.0,
        bits=BitSupport(
            native=[8, 32],
            executed_as={
                "2": "int8 kernels, weights on a 2-bit grid",
                "4": "int8 kernels, weights on a 4-bit grid",
                "8": "int8 (NEON widening multiply-add; ARMv8.0 has no dot-product instructions)",
                "16": "fp32 (the A72 has no fp16 arithmetic)",
                "32": "fp32",
            },
        ),
        sources=[
            "Cortex-A72: two 128-bit NEON pipes, 8 fp32 multiply-adds per cycle at 1.5 GHz = 12 GMAC/s per core "
            "(Arm Cortex-A72 Software Optimization Guide)",
            "int8 on ARMv8.0 NEON (SMLAL widening, no SDOT): about 1.5x fp32 = 18 GMAC/s per core. It was 2x "
            "(24 GMAC/s) until checked against published runs: ncnn's int8 MobileNet-V1 on a Pi 4 runs 1.47x as fast "
            "as its fp32 one (84.8 vs 124.3 ms), and the estimate at 2x was 2.04x too fast",
            "LPDDR4-3200, 32-bit bus: 12.8 GB/s peak; about 4 GB/s sustained from one core (STREAM-type figures)",
            "per-operator overhead 2 us, per-inference 15 us: assumed, about 4x this x86 host's measured values",
        ],
    ),
    Roofline(
        name="phone-a78",
        kind="cpu",
        host="phone big core: Arm Cortex-A78 @ 2.4 GHz (1 core, e.g. Snapdragon 888 mid cores)",
        runtime="onnxruntime (estimated)",
        provider="CPUExecutionProvider",
        gmacs={"fp32": 19.2, "int8": 76.8},
        bandwidth_gbs=10.0,
        op_overhead_us=1.0,
        inference_overhead_us=8.0,
        bits=BitSupport(
            native=[8, 16, 32],
            executed_as={
                "2": "int8 kernels, weights on a 2-bit grid",
                "4": "int8 kernels, weights on a 4-bit grid",
                "8": "int8 (SDOT dot-product instructions)",
                "16": "fp32 in these entries (fp16 kernels exist on ARMv8.2)",
                "32": "fp32",
            },
        ),
        sources=[
            "Cortex-A78: two 128-bit NEON pipes, 8 fp32 multiply-adds per cycle at 2.4 GHz = 19.2 GMAC/s",
            "int8 with SDOT (ARMv8.2 dot product): 4x the fp32 rate = 76.8 GMAC/s",
            "LPDDR5: about 10 GB/s sustained from one core",
            "per-operator overhead 1 us, per-inference 8 us: assumed, about 2x this x86 host's measured values",
        ],
    ),
    Roofline(
        name="jetson-orin-nano",
        kind="gpu",
        host="NVIDIA Jetson Orin Nano 8GB, 1024-core Ampere GPU @ 625 MHz",
        runtime="onnxruntime (estimated)",
        provider="TensorrtExecutionProvider",
        gmacs={"fp32": 640.0, "fp16": 5000.0, "int8": 10000.0},
        bandwidth_gbs=68.0,
        op_overhead_us=8.0,
        inference_overhead_us=60.0,
        bits=BitSupport(
            native=[8, 16, 32],
            executed_as={
                "2": "int8 tensor cores, weights on a 2-bit grid",
                "4": "int8 tensor cores, weights on a 4-bit grid",
                "8": "int8 tensor cores (TensorRT)",
                "16": "fp32 CUDA cores in these entries (an fp16 TensorRT engine runs on the tensor cores: "
                      "published fp16 runs are checked at the fp16 peak)",
                "32": "fp32 CUDA cores",
            },
        ),
        sources=[
            "Jetson Orin Nano 8GB: 1024 CUDA cores at 625 MHz = 1.28 TFLOPS fp32 = 640 GMAC/s "
            "(NVIDIA Jetson Orin Nano data sheet)",
            "int8: 40 TOPS sparse, 20 TOPS dense = 10,000 GMAC/s (NVIDIA data sheet)",
            "fp16 on the tensor cores: half the dense int8 rate = 5,000 GMAC/s (Ampere's tensor cores run "
            "fp16 at half their int8 rate, as the A100's 312 and 624 dense TOPS); used for published fp16 runs",
            "LPDDR5 128-bit: 68 GB/s (NVIDIA data sheet)",
            "kernel launch about 8 us per operator and 60 us per inference for host-device copies and "
            "synchronisation: assumed from typical CUDA figures; small networks are launch-bound on a GPU",
        ],
    ),
    Roofline(
        name="mcu-m7",
        kind="mcu",
        host="microcontroller: STM32H743, Arm Cortex-M7 @ 480 MHz",
        runtime="CMSIS-NN (estimated)",
        provider="none (bare metal)",
        gmacs={"fp32": 0.48, "int8": 0.96},
        bandwidth_gbs=1.0,
        op_overhead_us=20.0,
        inference_overhead_us=50.0,
        bits=BitSupport(
            native=[8, 32],
            executed_as={
                "2": "int8 kernels, weights on a 2-bit grid",
                "4": "int8 kernels, weights on a 4-bit grid",
                "8": "int8 (CMSIS-NN, SMLAD dual 16-bit multiply-add)",
                "16": "fp32 (single-precision FPU)",
                "32": "fp32 (single-precision FPU)",
            },
        ),
        sources=[
            "Cortex-M7 @ 480 MHz: one single-precision FMA per cycle = 0.48 GMAC/s fp32 (STM32H743 data sheet)",
            "int8 via CMSIS-NN SMLAD: 2 multiply-adds per cycle = 0.96 GMAC/s",
            "AXI SRAM, 64-bit at 240 MHz: 1.9 GB/s peak; about 1 GB/s sustained",
            "per-operator overhead 20 us, per-inference 50 us: assumed (interpreter dispatch at 480 MHz)",
        ],
    ),
]


def layer_ms(layer: Layer, dev: Roofline) -> float:
    """A layer's estimated time alone on ``dev``, in milliseconds (:func:`roofline_ms`)."""
    return roofline_ms(layer, dev.figures)


def estimate_profile(dev: Roofline) -> Profile:
    """The estimated profile of ``dev``: its facts, sources and roofline figures, which price any
    layer on demand (no table of entries)."""
    facts = DeviceFacts(name=dev.name, kind=dev.kind, runtime=dev.runtime, runtime_version="n/a (estimate)",
                        provider=dev.provider, threads=1, host=dev.host, measured_at="n/a (estimate)", measured=False,
                        sources=dev.sources + [
                            f"efficiency (share of peak reached): {EFFICIENCY}; latency = max(compute, memory) "
                            "+ operators x per-operator overhead"])
    return Profile(device=facts, bits=dev.bits, overhead_ms=Entry(mean_ms=dev.inference_overhead_us / 1e3,
                                                                  std_ms=0.0, count=1),
                   calibration=Calibration(), roofline=dev.figures,
                   validation=validate(dev.name, dev.figures, dev.inference_overhead_us))


def estimate_profiles(out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Write the estimated profile of every device of :data:`DEVICES` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dev in DEVICES:
        path = out / f"{dev.name}.json"
        estimate_profile(dev).save(path)
        log(f"wrote {path}: roofline of {dev.host} (estimated; prices any layer on demand)")
        written.append(path)
    return written
