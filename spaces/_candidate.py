"""The searched value: architecture + pruning + bit widths + distillation, as plain data.

A :class:`Candidate` is frozen and hashable. It has a compact, reversible string form in the
spirit of timm's block strings::

    c16:ir_r2_k3_e4_c24_se_hs_p0.25_w8a8:ir_r1_k5_e6_c32_re_w4a8:kd_t4.0_a0.5

``c16`` is the stem width. Each ``ir_...`` part is one stage of inverted residual blocks: ``r``
repeats (depth), ``k`` kernel, ``e`` expand ratio, ``c`` output channels, ``s`` the stride of
the stage's first block where the space fixes it (absent: the plan's rule, see
:func:`spaces._plan.stage_strides`), ``fu`` if the blocks are fused (the 1x1 expansion and the
kxk depthwise convolution replaced by one dense kxk convolution, EfficientNetV2's Fused-MBConv),
``se`` if the blocks squeeze-excite, ``re``/``hs`` the activation (ReLU / hard-swish), ``p`` the
share of the expanded channels removed by structured pruning (absent when 0), ``wXaY`` the
weight and activation bit widths. ``kd_tT_aA`` is the distillation temperature and weight
(absent when the candidate does not distil). Only code that trains or measures turns a candidate
into a module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypedDict, Unpack

KERNELS = (3, 5, 7)
EXPAND_RATIOS = (1, 3, 4, 6)
ACTIVATIONS = ("relu", "hswish")
BIT_WIDTHS = (2, 4, 8, 16, 32)
MAX_PRUNE = 0.9

_ACT_CODE = {"relu": "re", "hswish": "hs"}
_CODE_ACT = {v: k for k, v in _ACT_CODE.items()}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class Stage:
    """One stage: ``depth`` identical inverted residual blocks (the first may downsample).

    ``fused``: each block's 1x1 expansion and kxk depthwise convolution are one dense kxk
    convolution (Fused-MBConv, Tan & Le 2021). It costs more multiply-adds, but dense kernels run
    several times more of them per second than depthwise ones on CPUs and accelerators: on the
    2-core Intel Xeon host, MLPerf Tiny's ResNet-8 (dense 3x3 convolutions) ran 82 multiply-adds
    per ns in int8, the searched depthwise networks of similar latency 26-43."""

    depth: int
    kernel: int
    expand: int
    width: int
    se: bool = False
    act: str = "relu"
    prune: float = 0.0
    w_bits: int = 32
    a_bits: int = 32
    fused: bool = False
    stride: int | None = None  # the first block's; None: the plan's rule (spaces._plan.stage_strides)

    def __post_init__(self) -> None:
        _check(1 <= self.depth <= 16, f"depth must be in 1..16, got {self.depth}")
        _check(self.kernel in KERNELS, f"kernel must be one of {KERNELS}, got {self.kernel}")
        _check(self.expand in EXPAND_RATIOS, f"expand must be one of {EXPAND_RATIOS}, got {self.expand}")
        _check(1 <= self.width <= 4096, f"width must be in 1..4096, got {self.width}")
        _check(self.stride in (None, 1, 2), f"stride must be 1 or 2, got {self.stride}")
        _check(self.act in ACTIVATIONS, f"act must be one of {ACTIVATIONS}, got {self.act!r}")
        _check(0.0 <= self.prune <= MAX_PRUNE, f"prune must be in [0, {MAX_PRUNE}], got {self.prune}")
        _check(self.expand > 1 or self.prune == 0.0,
               "prune applies to expanded channels only: a stage with expand 1 must have prune 0")
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            _check(bits in BIT_WIDTHS, f"{name} must be one of {BIT_WIDTHS}, got {bits}")

    def to_string(self) -> str:
        parts = [f"ir_r{self.depth}", f"k{self.kernel}", f"e{self.expand}", f"c{self.width}"]
        if self.stride is not None:
            parts.append(f"s{self.stride}")
        if self.fused:
            parts.append("fu")
        if self.se:
            parts.append("se")
        parts.append(_ACT_CODE[self.act])
        if self.prune:
            parts.append(f"p{self.prune!r}")
        parts.append(f"w{self.w_bits}a{self.a_bits}")
        return "_".join(parts)

    @classmethod
    def from_string(cls, text: str) -> Stage:
        tokens = text.split("_")
        _check(tokens[0] == "ir", f"a stage starts with 'ir_', got {text!r}")
        fields: dict[str, object] = {}
        for tok in tokens[1:]:
            if tok == "se":
                fields["se"] = True
            elif tok == "fu":
                fields["fused"] = True
            elif tok in _CODE_ACT:
                fields["act"] = _CODE_ACT[tok]
            elif tok[0] == "w" and "a" in tok:
                w, a = tok[1:].split("a", 1)
                fields["w_bits"], fields["a_bits"] = int(w), int(a)
            elif tok[0] in "rkecs" and tok[1:].isdigit():
                fields[{"r": "depth", "k": "kernel", "e": "expand", "c": "width", "s": "stride"}[tok[0]]] = int(tok[1:])
            elif tok[0] == "p":
                fields["prune"] = float(tok[1:])
            else:
                raise ValueError(f"unknown token {tok!r} in stage {text!r}")
        missing = {"depth", "kernel", "expand", "width"} - fields.keys()
        _check(not missing, f"stage {text!r} lacks {sorted(missing)}")
        return cls(**fields)  # type: ignore[arg-type]


class _CandidateChanges(TypedDict, total=False):
    stem: int
    stages: tuple[Stage, ...]
    temperature: float
    alpha: float


@dataclass(frozen=True)
class Candidate:
    """A point of the joint space. ``alpha == 0`` means no distillation (temperature is then 1)."""

    stem: int
    stages: tuple[Stage, ...]
    temperature: float = 1.0
    alpha: float = 0.0

    def __post_init__(self) -> None:
        _check(1 <= self.stem <= 4096, f"stem width must be in 1..4096, got {self.stem}")
        _check(len(self.stages) >= 1, "a candidate needs at least one stage")
        object.__setattr__(self, "stages", tuple(self.stages))
        _check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}")
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        if self.alpha == 0.0:
            object.__setattr__(self, "temperature", 1.0)

    @property
    def distils(self) -> bool:
        return self.alpha > 0.0

    @property
    def depth(self) -> int:
        return sum(s.depth for s in self.stages)

    def replace(self, **changes: Unpack[_CandidateChanges]) -> Candidate:
        return dataclasses.replace(self, **changes)

    def to_string(self) -> str:
        parts = [f"c{self.stem}", *(s.to_string() for s in self.stages)]
        if self.distils:
            parts.append(f"kd_t{self.temperature!r}_a{self.alpha!r}")
        return ":".join(parts)

    __str__ = to_string

    @classmethod
    def from_string(cls, text: str) -> Candidate:
        parts = text.strip().split(":")
        _check(parts[0].startswith("c") and parts[0][1:].isdigit(),
               f"a candidate starts with the stem width 'c<N>', got {parts[0]!r}")
        kd = {}
        if parts[-1].startswith("kd_"):
            tokens = parts.pop()[3:].split("_")
            for tok in tokens:
                if tok[0] == "t":
                    kd["temperature"] = float(tok[1:])
                elif tok[0] == "a":
                    kd["alpha"] = float(tok[1:])
                else:
                    raise ValueError(f"unknown distillation token {tok!r} in {text!r}")
        stages = tuple(Stage.from_string(p) for p in parts[1:])
        return cls(stem=int(parts[0][1:]), stages=stages, **kd)

    def describe(self) -> str:
        """A human-readable, multi-line form (one line per stage)."""
        lines = [f"stem: 3x3 conv, {self.stem} channels"]
        for i, s in enumerate(self.stages):
            extras = ["squeeze-excite"] if s.se else []
            if s.prune:
                extras.append(f"{s.prune:.0%} of expanded channels pruned")
            kind = "fused inverted residual (dense kxk expansion)" if s.fused else "inverted residual"
            lines.append(
                f"stage {i}: {s.depth} x {kind}, kernel {s.kernel}, expand {s.expand}, "
                f"{s.width} channels, {s.act}, weights {s.w_bits}-bit, activations {s.a_bits}-bit"
                + (f", {', '.join(extras)}" if extras else "")
            )
        lines.append(
            f"distillation: temperature {self.temperature:.3g}, weight {self.alpha:.3g}"
            if self.distils else "distillation: none"
        )
        return "\n".join(lines)
