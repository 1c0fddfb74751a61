"""Device profiles: versioned JSON files of measured (or estimated) per-layer latencies.

A profile is data, validated by pydantic on load; a corrupt file or another schema version
fails with the file and the field named. Entries are keyed by :func:`layer_key`, a typed key of
everything that changes a layer's run time: kind, input size, channels, kernel, stride,
squeeze-excite, activation and the precision the runtime executes it at.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spaces.plan import BlockPlan, HeadPlan, StemPlan
from targets.cost import Latency
from targets.onnx_graph import precision_of

SCHEMA_VERSION = 1


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceFacts(_Model):
    name: str
    kind: Literal["cpu", "gpu", "npu", "mcu"]
    runtime: str = "onnxruntime"
    runtime_version: str
    provider: str = "CPUExecutionProvider"
    threads: int = Field(ge=1)
    host: str
    measured_at: str
    measured: bool
    sources: list[str] = Field(default_factory=list, description="public figures an estimate rests on")


class BitSupport(_Model):
    native: list[int] = Field(description="bit widths the runtime has kernels for")
    executed_as: dict[str, str] = Field(description="bit width -> precision it runs at")


class Entry(_Model):
    mean_ms: float = Field(ge=0)
    std_ms: float = Field(ge=0)
    count: int = Field(ge=1)

    def latency(self) -> Latency:
        return Latency(self.mean_ms, self.std_ms, self.count)

    @classmethod
    def of(cls, lat: Latency) -> Entry:
        return cls(mean_ms=lat.mean_ms, std_ms=lat.std_ms, count=lat.count)


class Calibration(_Model):
    """Whole-network correction: ``measured = scale * (sum of layers + overhead) + offset_ms``."""

    scale: float = 1.0
    offset_ms: float = 0.0
    fitted_on: int = Field(default=0, description="networks measured end to end for the fit")


class Profile(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    device: DeviceFacts
    bits: BitSupport
    overhead_ms: Entry = Field(description="fixed per-inference cost of the runtime")
    entries: dict[str, Entry] = Field(default_factory=dict)
    calibration: Calibration = Field(default_factory=Calibration)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProfileError(f"{path}: no such profile file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProfileError(f"{path}: not a readable JSON profile ({e})") from None
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise ProfileError(f"{path}: schema_version is {data.get('schema_version')!r}, "
                               f"this hwsearch reads version {SCHEMA_VERSION}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}"
                                 for err in e.errors())
            raise ProfileError(f"{path}: invalid profile: {problems}") from None

    def save(self, path: str | Path) -> None:
        """Write atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(self.model_dump_json(indent=1))
        os.replace(tmp, path)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def layer_key(layer: StemPlan | BlockPlan | HeadPlan) -> str:
    """The profile key of a layer, e.g. ``ir|8x8|16-48-24|k3|s1|se12|hswish|int8``."""
    prec = precision_of(layer.w_bits, layer.a_bits)
    hw = f"{layer.hw_in[0]}x{layer.hw_in[1]}"
    if isinstance(layer, StemPlan):
        return f"stem|{hw}|{layer.cin}-{layer.cout}|k{layer.kernel}|s{layer.stride}|{layer.act}|{prec}"
    if isinstance(layer, HeadPlan):
        return f"head|{hw}|{layer.cin}-{layer.num_classes}|{prec}"
    b = layer
    mid = b.cmid if b.has_expand else 0  # 0: no expand convolution
    return (f"ir|{hw}|{b.cin}-{mid}-{b.cout}|k{b.kernel}|s{b.stride}|se{b.se}|{b.act}|"
            f"{'res' if b.residual else 'nores'}|{prec}")
