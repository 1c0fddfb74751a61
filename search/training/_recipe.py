"""The training recipe: augmentation, the loss's label smoothing, the optimiser and its schedule.

Everything here runs on the device's tensors (no data loader, no worker processes) and draws its
randomness from the caller's ``torch.Generator`` only, so training stays deterministic for a seed
on the CPU. Augmentation is applied per batch, on the normalised images:

- random crop with zero padding (``crop_padding`` pixels each side; 0 is off): padding with 0 in
  normalised space pads with the dataset's mean colour;
- horizontal flip with probability 1/2 (off for data where a mirror image is another class or
  no image at all, such as digits);
- cutout (DeVries & Taylor, 2017): one square of ``cutout`` pixels per image set to 0 (the mean).

A distilling candidate is taught with the teacher's logits of the un-augmented image (offline
distillation: the logits are computed once per run). For crops of a few pixels and mirror
images these stay a close estimate of the teacher's view; cutout is where they differ most.

Weight decay never applies to batch norm parameters or biases (tensors of one dimension), the
standard practice for small convolutional networks, nor to learned quantization steps and ranges
(one per channel or one per tensor: one dimension or none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hwsearch.spaces.network import QUANTIZERS

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine")


@dataclass(frozen=True)
class Recipe:
    """How a network is trained, beyond its epochs, batch size and peak learning rate."""

    optimizer: str = "adamw"  # adamw | sgd (Nesterov momentum 0.9)
    schedule: str = "onecycle"  # onecycle | cosine (with a linear warm-up)
    warmup: float = 0.15  # share of the steps spent warming up
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    channels_last: bool = False
    # lsq | maxabs: how quantization-aware fine-tuning puts layers below ``learned_below`` bits on
    # their grid (see hwsearch.spaces.network.enable_quantization); benchmarks raise it to 9 to learn
    # 8-bit grids too
    quantizer: str = "lsq"
    learned_below: int = 8

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}")

    @property
    def augments(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout)


def augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """An augmented copy of the batch ``x`` (N, C, H, W); random draws come from ``gen`` (a CPU
    generator) whatever the device of ``x``, so a seed gives the same images on any device."""
    if not recipe.augments:
        return x
    n, _, h, w = x.shape
    dev = x.device
    if recipe.crop_padding:
        p = recipe.crop_padding
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(dev)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(dev)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]  # (N, 1, W)
        x = padded[torch.arange(n, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if recipe.flip:
        mirror = (torch.rand(n, generator=gen) < 0.5).to(dev)[:, None, None, None]
        x = torch.where(mirror, x.flip(3), x)
    if recipe.cutout:
        s = recipe.cutout
        cy = torch.randint(0, h, (n,), generator=gen).to(dev)[:, None, None]
        cx = torch.randint(0, w, (n,), generator=gen).to(dev)[:, None, None]
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        top, left = cy - s // 2, cx - s // 2  # the square's corner: centred on (cy, cx), clipped at the borders
        hole = (ys >= top) & (ys < top + s) & (xs >= left) & (xs < left + s)  # (N, H, W)
        x = x.masked_fill(hole[:, None], 0.0)
    return x.contiguous()


def optimizer_for(net: torch.nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``net``'s parameters, without weight decay on batch norm
    parameters and biases."""
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def schedule_for(opt: torch.optim.Optimizer, recipe: Recipe, lr: float, steps: int):
    """The learning-rate schedule over ``steps`` optimiser steps, peaking at ``lr``."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                   pct_start=max(recipe.warmup, 1e-3))
    warm = int(round(recipe.warmup * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
