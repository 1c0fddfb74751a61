"""Estimates checked against real devices: published latencies of real networks.

``published.json`` holds, per estimated device, latencies of MobileNet-V1/V2 and ResNet-8/18/34/50
measured on real boards (ncnn's benchmark tables, MLPerf Tiny v1.0 and MLPerf Inference v3.1 results,
the STM32 model zoo, OpenCV's model zoo, NetsPresso's TensorRT device matrix), each with its source
and the quoted text. :func:`validate` builds each network from
this package's layer kinds (dense convolutions as stems, depthwise-separable and inverted residual
blocks, the pooled classifier), prices it on the device's roofline, and compares: the ratio
predicted / measured, the measurement scaled to the estimate's clock where the board ran at
another (a compute-bound time scales with the clock; stated per row). The rows and their band go
into the estimate's file and wherever its latency is shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hwsearch.spaces._plan import BlockPlan, HeadPlan, Layer, StemPlan, _conv_out
from hwsearch.targets._roofline import RooflineFigures, roofline_ms

PUBLISHED = Path(__file__).parent / "published.json"


class ValidationRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: str
    precision: str
    predicted_ms: float
    measured_ms: float = Field(description="as published")
    compared_ms: float = Field(description="the measurement at the estimate's clock (measured_ms x clock_factor)")
    ratio: float = Field(description="predicted / compared")
    adjustment: str
    hardware: str
    runtime: str
    source: str
    quote: str


class Validation(BaseModel):
    """An estimate against published measurements: every row, and the range of their ratios."""

    model_config = ConfigDict(extra="forbid")

    rows: list[ValidationRow]
    low: float = Field(description="the smallest predicted / measured ratio")
    high: float = Field(description="the largest")
    median: float

    def band(self) -> str:
        """e.g. 'estimate, x0.62-1.40 of 4 published measurements (median x0.95)'."""
        return (f"estimate, x{self.low:.2f}-{self.high:.2f} of {len(self.rows)} published measurements "
                f"(median x{self.median:.2f})")


def _bits(precision: str) -> int:
    return {"int8": 8, "fp16": 16}.get(precision, 32)


def _conv(cin: int, cout: int, k: int, s: int, hw: int, bits: int, name: str) -> tuple[StemPlan, int]:
    out = _conv_out(hw, s)
    return StemPlan(cin=cin, cout=cout, kernel=k, stride=s, hw_in=(hw, hw), hw_out=(out, out), act="relu",
                    w_bits=bits, a_bits=bits, name=name), out


def _block(cin: int, mid: int, cout: int, s: int, hw: int, bits: int, name: str) -> tuple[BlockPlan, int]:
    out = _conv_out(hw, s)
    return BlockPlan(name=name, stage=0, index=0, cin=cin, cmid=mid, cmid_dense=mid, cout=cout, kernel=3, stride=s,
                     se=0, act="relu", hw_in=(hw, hw), hw_out=(out, out), w_bits=bits, a_bits=bits), out


def _head(cin: int, hw: int, classes: int, bits: int) -> HeadPlan:
    return HeadPlan(cin=cin, num_classes=classes, hw_in=(hw, hw), w_bits=bits, a_bits=bits)


def mobilenet_v1(width: float, resolution: int, classes: int, precision: str) -> list[Layer]:
    """MobileNet-V1 (Howard et al. 2017): a 3x3 convolution, 13 depthwise-separable blocks
    (inverted residual blocks of expand ratio 1), the pooled classifier."""
    bits = _bits(precision)
    c = int(32 * width)
    stem, hw = _conv(3, c, 3, 2, resolution, bits, "stem")
    layers: list[Layer] = [stem]
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    for i, (cout, s) in enumerate(plan):
        block, hw = _block(c, c, int(cout * width), s, hw, bits, f"b{i}")
        layers.append(block)
        c = block.cout
    return [*layers, _head(c, hw, classes, bits)]


def _divisible(v: float, d: int = 8) -> int:
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


def mobilenet_v2(width: float, resolution: int, classes: int, precision: str) -> list[Layer]:
    """MobileNet-V2 (Sandler et al. 2018): a 3x3 convolution, 17 inverted residual blocks, a 1x1
    convolution to 1280 channels (a dense convolution here), the pooled classifier."""
    bits = _bits(precision)
    c = _divisible(32 * width)
    stem, hw = _conv(3, c, 3, 2, resolution, bits, "stem")
    layers: list[Layer] = [stem]
    for t, cout, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                          (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            block, hw = _block(c, c * t, _divisible(cout * width), s if i == 0 else 1, hw, bits, f"b{len(layers)}")
            layers.append(block)
            c = block.cout
    last = _divisible(1280 * width) if width > 1.0 else 1280
    conv, hw = _conv(c, last, 1, 1, hw, bits, "last")
    return [*layers, conv, _head(last, hw, classes, bits)]


def resnet8(width: float, resolution: int, classes: int, precision: str) -> list[Layer]:
    """MLPerf Tiny's ResNet-8: a 3x3 convolution of 16, three residual stacks of two 3x3
    convolutions (16, 32, 64; the last two with a strided 1x1 shortcut), the pooled classifier.
    Every convolution is a dense one; the residual additions are left out (a few thousand values)."""
    bits = _bits(precision)
    conv, hw = _conv(3, 16, 3, 1, resolution, bits, "stem")
    layers: list[Layer] = [conv]
    c = 16
    for i, (cout, s) in enumerate([(16, 1), (32, 2), (64, 2)]):
        a, hw_out = _conv(c, cout, 3, s, hw, bits, f"s{i}a")
        b, _ = _conv(cout, cout, 3, 1, hw_out, bits, f"s{i}b")
        layers += [a, b]
        if s != 1:
            layers.append(_conv(c, cout, 1, s, hw, bits, f"s{i}short")[0])
        c, hw = cout, hw_out
    return [*layers, _head(c, hw, classes, bits)]


def _resnet(blocks: list[int], bottleneck: bool, width: float, resolution: int, classes: int,
            precision: str) -> list[Layer]:
    """A ResNet of ``blocks`` per stage, of basic or bottleneck blocks (see :func:`resnet18`, :func:`resnet50`)."""
    bits = _bits(precision)
    c = int(64 * width)
    stem, hw = _conv(3, c, 7, 2, resolution, bits, "stem")
    hw = _conv_out(hw, 2)  # the 3x3 stride-2 max pool: applied to the size, not priced
    layers: list[Layer] = [stem]
    for stage, n in enumerate(blocks):
        mid = int(64 * width) * 2**stage
        cout = 4 * mid if bottleneck else mid
        for i in range(n):
            s = 2 if stage > 0 and i == 0 else 1
            name = f"s{stage}b{i}"
            if bottleneck:  # 1x1 reduce, 3x3 (the stride, as in v1.5), 1x1 expand
                a, _ = _conv(c, mid, 1, 1, hw, bits, f"{name}a")
                b, hw_out = _conv(mid, mid, 3, s, hw, bits, f"{name}b")
                layers += [a, b, _conv(mid, cout, 1, 1, hw_out, bits, f"{name}c")[0]]
            else:  # two 3x3
                a, hw_out = _conv(c, cout, 3, s, hw, bits, f"{name}a")
                layers += [a, _conv(cout, cout, 3, 1, hw_out, bits, f"{name}b")[0]]
            if s != 1 or c != cout:
                layers.append(_conv(c, cout, 1, s, hw, bits, f"{name}short")[0])
            c, hw = cout, hw_out
    return [*layers, _head(c, hw, classes, bits)]


def resnet18(width: float, resolution: int, classes: int, precision: str) -> list[Layer]:
    """ResNet-18 (He et al. 2016, torchvision's): a 7x7 stride-2 convolution and a 3x3 max pool, four
    stages of 2 basic blocks (two 3x3 convolutions; 64-512 channels; a strided 1x1 shortcut where the
    shape changes), the pooled classifier. Every convolution is a dense one; the max pool is applied
    to the size but not priced and the residual additions are left out, as in :func:`resnet8`."""
    return _resnet([2, 2, 2, 2], False, width, resolution, classes, precision)


def resnet34(width: float, resolution: int, classes: int, precision: str) -> list[Layer]:
    """ResNet-34: :func:`resnet18` with 3, 4, 6, 3 basic blocks per stage."""
    return _resnet([3, 4, 6, 3], False, width, resolution, classes, precision)


def resnet50(width: float, resolution: int, classes: int, precision: str) -> list[Layer]:
    """ResNet-50 v1.5 (torchvision's, MLPerf's): :func:`resnet18`'s stem, 3, 4, 6, 3 bottleneck blocks
    per stage (1x1 reduce, 3x3 with the stride, 1x1 expand to 4x; 256-2048 channels), the pooled
    classifier; dense convolutions, the max pool and residual additions as in :func:`resnet18`."""
    return _resnet([3, 4, 6, 3], True, width, resolution, classes, precision)


BUILDERS: dict[str, Callable[[float, int, int, str], list[Layer]]] = {
    "mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2, "resnet8": resnet8,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}


def published(device: str) -> list[dict[str, Any]]:
    """The published measurements of a device's class, as ``published.json`` holds them."""
    rows: list[dict[str, Any]] = json.loads(PUBLISHED.read_text())["measurements"]
    return [r for r in rows if r["device"] == device]


def network_ms(layers: list[Layer], fig: RooflineFigures, inference_overhead_us: float,
               precision: str | None = None) -> float:
    """A network's time on a roofline: its layers' times and one inference's fixed cost (what an
    estimate's :meth:`~hwsearch.targets._target.Target.price` gives: its calibration is the plain sum).
    A published fp16 run is priced at the device's fp16 peak where it has one (see :func:`roofline_ms`)."""
    return sum(roofline_ms(layer, fig, precision) for layer in layers) + inference_overhead_us / 1e3


def validate(device: str, fig: RooflineFigures, inference_overhead_us: float) -> Validation | None:
    """The roofline against the device's published measurements (None where there are none)."""
    rows = []
    for p in published(device):
        builder = BUILDERS[str(p["builder"])]
        layers = builder(float(p["width"]), int(p["resolution"]), int(p["classes"]), str(p["precision"]))
        precision = str(p["precision"])
        predicted = network_ms(layers, fig, inference_overhead_us, "fp16" if precision == "fp16" else None)
        compared = float(p["measured_ms"]) * float(p["clock_factor"])
        rows.append(ValidationRow(network=str(p["network"]), precision=str(p["precision"]), predicted_ms=predicted,
                                  measured_ms=float(p["measured_ms"]), compared_ms=compared,
                                  ratio=predicted / compared, adjustment=str(p["adjustment"]),
                                  hardware=str(p["hardware"]), runtime=str(p["runtime"]), source=str(p["source"]),
                                  quote=str(p["quote"])))
    if not rows:
        return None
    ratios = sorted(r.ratio for r in rows)
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else math.sqrt(ratios[mid - 1] * ratios[mid])
    return Validation(rows=rows, low=ratios[0], high=ratios[-1], median=median)
