"""What the search may choose from: the ``space`` section of a spec (pydantic, strict)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from hwsearch.spaces._candidate import MAX_PRUNE

Bits = Literal[2, 4, 8, 16, 32]
_H = TypeVar("_H", bound=Hashable)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _distinct(values: list[_H]) -> list[_H]:
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {values}")
    return values


class StageSpace(_Strict):
    """Choices for one stage: output widths and depths (blocks per stage)."""

    widths: list[int] = Field(min_length=1, description="output channels to choose from")
    depths: list[int] = Field(default=[1, 2], min_length=1, description="blocks in the stage")
    stride: Literal[1, 2] | None = Field(default=None, description=(
        "the stride of the stage's first block, fixed for every candidate; default: the last stages "
        "downsample by 2, as many as keep the final feature map at least 2 pixels wide (32x32 inputs: 16, 8, "
        "4 for three stages). Strides 1, 2, 2 on three stages give CIFAR ResNets' 32, 16, 8"))

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(not 1 <= w <= 4096 for w in v):
            raise ValueError(f"widths must be in 1..4096, got {v}")
        return _distinct(v)

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if any(not 1 <= d <= 16 for d in v):
            raise ValueError(f"depths must be in 1..16, got {v}")
        return _distinct(v)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Without ``stride`` while it is None, as :class:`SpaceSpec` without ``fused``: a space
        written before strides could be fixed keeps its fingerprint and its studies' contracts."""
        data: dict[str, object] = handler(self)
        if self.stride is None:
            data.pop("stride", None)
        return data


def _default_stages() -> list[StageSpace]:
    return [StageSpace(widths=[16, 24], depths=[1, 2]),
            StageSpace(widths=[24, 32, 48], depths=[1, 2, 3]),
            StageSpace(widths=[32, 48, 64], depths=[1, 2, 3])]


class SpaceSpec(_Strict):
    """The joint space: architecture, structured pruning, bit widths and distillation."""

    stem_widths: list[int] = Field(default=[8, 16, 24], min_length=1)
    stages: list[StageSpace] = Field(default_factory=_default_stages, min_length=1, max_length=8)
    kernels: list[Literal[3, 5, 7]] = Field(default=[3, 5, 7], min_length=1)
    expand_ratios: list[Literal[1, 3, 4, 6]] = Field(default=[1, 3, 4, 6], min_length=1)
    se: list[bool] = Field(default=[False, True], min_length=1, description="squeeze-excite choices")
    fused: list[bool] = Field(
        default=[False], min_length=1,
        description="fused blocks (one dense kxk convolution in place of the 1x1 expansion and the depthwise one, "
                    "EfficientNetV2's Fused-MBConv) choices; [False, True] searches both")
    activations: list[Literal["relu", "hswish"]] = Field(default=["relu", "hswish"], min_length=1)
    prune_ratios: list[float] = Field(
        default=[0.0, 0.25, 0.5], min_length=1,
        description="share of expanded channels removed per stage; [0.0] turns pruning off")
    weight_bits: list[Bits] = Field(default=[4, 8, 32], min_length=1)
    activation_bits: list[Bits] = Field(default=[8, 32], min_length=1)
    bits_per_stage: bool = Field(default=False, description="choose bit widths per stage, not globally")
    distill: bool = Field(default=True, description="search distillation settings from the teacher")
    temperature: tuple[float, float] = Field(default=(1.0, 8.0), description="range, log scale")
    alpha: tuple[float, float] = Field(default=(0.0, 0.9), description="range of the KD weight")

    @field_validator("stem_widths")
    @classmethod
    def _stem(cls, v: list[int]) -> list[int]:
        if any(not 1 <= w <= 4096 for w in v):
            raise ValueError(f"stem widths must be in 1..4096, got {v}")
        return _distinct(v)

    @field_validator("kernels", "expand_ratios", "se", "fused", "activations", "weight_bits", "activation_bits")
    @classmethod
    def _unique(cls, v: list[_H]) -> list[_H]:
        return _distinct(v)

    @field_validator("prune_ratios")
    @classmethod
    def _prune(cls, v: list[float]) -> list[float]:
        if any(not (0.0 <= r <= MAX_PRUNE) for r in v):
            raise ValueError(f"prune ratios must be in [0, {MAX_PRUNE}], got {v}")
        return _distinct(v)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 100:
            raise ValueError(f"temperature must be a range (low, high) with 0 < low <= high <= 100, got {list(v)}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError(f"alpha must be a range (low, high) with 0 <= low <= high <= 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _pruning_needs_expansion(self) -> SpaceSpec:
        if any(r > 0 for r in self.prune_ratios) and max(self.expand_ratios) == 1:
            raise ValueError("prune_ratios > 0 need an expand ratio > 1: pruning removes expanded channels")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Without ``fused`` while it is the default [False]: a space written before fused blocks
        existed keeps its fingerprint (profiles' calibrations and studies' contracts name it)."""
        data: dict[str, object] = handler(self)
        if list(self.fused) == [False]:
            data.pop("fused", None)
        return data

    @property
    def pruning(self) -> bool:
        return any(r > 0 for r in self.prune_ratios)

    def size(self) -> int:
        """Number of distinct discrete configurations (distillation's continuous range excluded)."""
        n_prune = len(self.prune_ratios)
        expanded = sum(1 for e in self.expand_ratios if e > 1)
        per_stage_shape = len(self.kernels) * len(self.se) * len(self.fused) * len(self.activations) * (
            (len(self.expand_ratios) - expanded) + expanded * n_prune)
        bits = len(self.weight_bits) * len(self.activation_bits)
        total = len(self.stem_widths) * (1 if self.bits_per_stage else bits)
        for st in self.stages:
            total *= len(st.widths) * len(st.depths) * per_stage_shape * (bits if self.bits_per_stage else 1)
        return total

    def describe_size(self) -> str:
        n = self.size()
        text = f"{n:,}" if n < 1e7 else f"{n:.2e} (10^{math.log10(n):.1f})"
        return text + (" discrete configurations x continuous distillation (temperature, alpha)"
                       if self.distill else " discrete configurations")


def space_presets() -> dict[str, SpaceSpec]:
    """Named spaces a spec can start from: ``default`` (sized for 32x32 images, the spec's default)
    and ``small`` (for tiny inputs such as 8x8 digits: ``examples/quickstart.yaml``'s space)."""
    small = SpaceSpec(stem_widths=[8, 16],
                      stages=[StageSpace(widths=[8, 16], depths=[1, 2]), StageSpace(widths=[16, 24, 32], depths=[1, 2]),
                              StageSpace(widths=[24, 32, 48], depths=[1, 2])],
                      kernels=[3, 5], expand_ratios=[1, 3, 6])
    return {"default": SpaceSpec(), "small": small}
