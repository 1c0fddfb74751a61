"""Evaluate one candidate: the classic deployment pipeline, searched jointly.

train dense (distilling from the teacher) -> prune (channels physically removed) -> re-estimate
batch norm statistics (when channels were pruned) -> fold batch norm -> quantization-aware
fine-tuning at the candidate's bit widths -> validation accuracy.

Deterministic for a given seed on one device: initialisation and batch order come from a torch
generator seeded by the caller, nothing reads a global random state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hwsearch.search.errors import SearchError
from hwsearch.search.training._allocator import keep_freed_memory
from hwsearch.search.training._datasets import Data
from hwsearch.search.training._recipe import Recipe, augment, optimizer_for, schedule_for
from hwsearch.spaces._candidate import Candidate
from hwsearch.spaces._plan import build_plan


class TrialFailed(SearchError, RuntimeError):
    """Training could not produce a usable network (e.g. the loss became NaN)."""


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 8
    finetune_epochs: int = 2
    batch_size: int = 64
    lr: float = 3e-3
    device: str = "cpu"
    # "qat": fine-tune with the quantizers on (the search's pipeline). "ptq": fine-tune the pruned
    # network in float, then quantize it after training, only calibrating activation ranges
    # (post-training quantization, the hand-made pipeline the benchmarks compare against; nothing
    # learns its grid there, so it quantizes max-abs whatever the recipe's quantizer).
    quantization: str = "qat"
    recipe: Recipe = field(default_factory=Recipe)
    # A folder to save a checkpoint in after every epoch and to resume from (the final training
    # stage): a candidate killed mid-epoch restarts that epoch from the last one saved, and ends
    # exactly where an uninterrupted run ends. None: no checkpoints (the search).
    checkpoint_dir: str | None = None


@dataclass
class Evaluation:
    accuracy: float
    curve: list[dict] = field(default_factory=list)  # one entry per epoch: phase, epoch, loss, val_accuracy
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    state_dict: dict | None = None  # final (pruned, folded, quantization-aware) weights


# Augmentation and label smoothing regularise: they pay only when a network trains long enough to
# overfit. On CIFAR-10 (bench/results/recipe.json, 5,000 training images, two candidates, mean
# validation accuracy) crop 4 + flip cost 4.5 points at 3 dense epochs and 3.3 at 6, and gained
# 1.9 at 12 (with label smoothing 0.1: 3.3). So by default they are on from 12 dense epochs: off
# at the search's cheap fidelity, on for the teacher's longer training and the final stage.
REGULARISE_FROM_EPOCHS = 12


def train_settings(spec, input_side: int, **changes) -> TrainSettings:
    """The :class:`TrainSettings` of a spec's candidates (``changes`` override fields, e.g. the
    teacher's epochs), for images ``input_side`` pixels high: the recipe's defaults resolved
    (crop, flip and label smoothing from :data:`REGULARISE_FROM_EPOCHS` dense epochs)."""
    from dataclasses import replace

    from hwsearch.search.training._datasets import dataset_sources

    s, t = spec.search, spec.training
    long = changes.get("epochs", s.epochs) >= REGULARISE_FROM_EPOCHS
    recipe = Recipe(optimizer=t.optimizer, schedule=t.schedule, warmup=t.warmup, weight_decay=t.weight_decay,
                    label_smoothing=t.label_smoothing if t.label_smoothing is not None else 0.1 * long,
                    crop_padding=t.crop_padding if t.crop_padding is not None else max(1, input_side // 8) * long,
                    flip=t.flip if t.flip is not None else long and dataset_sources()[spec.dataset.name].mirrors,
                    cutout=t.cutout, channels_last=t.channels_last, quantizer=t.quantizer)
    settings = TrainSettings(s.epochs, s.finetune_epochs, s.batch_size, s.lr, resolve_device(s.device), recipe=recipe)
    return replace(settings, **changes)


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
    return name


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def _epochs(net, phase: str, n: int, lr: float, data: tuple, teacher: torch.Tensor | None,
            cand: Candidate, settings: TrainSettings, gen: torch.Generator, curve: list,
            resume: dict | None = None, save: Callable | None = None):
    """Train ``n`` epochs; after each, append to ``curve``, call ``save(phase, epoch, opt, sched)``
    when given, and yield (epoch, validation accuracy). ``resume``, a checkpoint of this phase,
    continues after its epoch with its optimiser and schedule. On CUDA the dense phase runs its
    forward pass in bfloat16 (mixed precision); quantization-aware phases stay in float32, so the
    fake quantizers see the grid they emulate."""
    from hwsearch.spaces.network import distillation_loss

    x, y, xv, yv = data
    if n == 0:
        return
    if x.device.type == "cpu":
        keep_freed_memory()  # the same buffers every step, reused rather than mapped afresh
    recipe = settings.recipe
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    net.to(memory_format=layout)
    opt = optimizer_for(net, recipe, lr)
    steps = n * math.ceil(len(x) / settings.batch_size)
    sched = schedule_for(opt, recipe, lr, steps)
    alpha = cand.alpha if teacher is not None else 0.0
    mixed = x.device.type == "cuda" and phase == "dense"
    start = 0
    if resume is not None and resume["phase"] == phase:
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        start = resume["epoch"]
    for epoch in range(start, n):
        net.train()
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        total, count = 0.0, 0
        for i in range(0, len(x), settings.batch_size):
            idx = perm[i:i + settings.batch_size]
            batch = augment(x[idx], recipe, gen).contiguous(memory_format=layout)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mixed):
                logits = net(batch)
            loss = distillation_loss(logits.float(), teacher[idx] if teacher is not None else None, y[idx],
                                     cand.temperature, alpha, label_smoothing=recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {loss.item()} in {phase} epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        val = accuracy(net, xv, yv)
        curve.append({"phase": phase, "epoch": epoch + 1, "loss": total / count, "val_accuracy": val})
        if save is not None:
            save(phase, epoch + 1, opt, sched)
        yield epoch + 1, val


@torch.no_grad()
def _calibrate(net, x: torch.Tensor, batches: int = 4, batch: int = 128) -> None:
    """Initialise activation ranges of the fake quantizers (batch norm is folded: nothing else
    changes in training mode). Learned ranges start from the first batch's."""
    net.train()
    for i in range(min(batches, math.ceil(len(x) / batch))):
        net(x[i * batch:(i + 1) * batch])


def trained_network(candidate: Candidate, input_shape: tuple, num_classes: int, state_dict: dict | None):
    """Rebuild the deployed form (pruned, batch norm folded, quantization on) from saved weights:
    with the learned steps and ranges the state holds, max-abs where it holds none."""
    from hwsearch.spaces import network

    plan = build_plan(candidate, input_shape, num_classes)
    net = network.enable_quantization(network.fold_batchnorm(network.prune(network.build(plan))))
    if state_dict is None:
        raise ValueError(f"{candidate.to_string()}: no trained weights to rebuild it from (keep_weights was off)")
    return network.load_quantized(net, state_dict).eval()


@torch.no_grad()
def predict_logits(net: torch.nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    net.eval()
    return torch.cat([net(torch.as_tensor(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


class Checkpoint:
    """A candidate's training state after its last finished epoch, in ``TrainSettings.checkpoint_dir``:
    network, optimiser, schedule, generator, curve and timings, saved atomically (a kill mid-save
    leaves the previous one). Its name hashes everything that shapes the training (candidate, seed,
    settings, data, teacher or not), so a checkpoint is resumed only by the training that wrote it;
    ``*.json`` beside it says how far it got without loading it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.progress_path = path.with_suffix(".json")

    @classmethod
    def of(cls, candidate: Candidate, data: Data, settings: TrainSettings, seed: int) -> Checkpoint:
        if not settings.checkpoint_dir:
            raise ValueError("these settings keep no checkpoints (checkpoint_dir is None)")
        shaping = {k: v for k, v in asdict(settings).items() if k != "checkpoint_dir"}
        key = json.dumps([candidate.to_string(), seed, shaping, data.fingerprint()], sort_keys=True, default=str)
        return cls(Path(settings.checkpoint_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")

    def progress(self) -> dict | None:
        """``{"phase": "dense" | "finetune", "epoch": N}`` of the last save, or None."""
        try:
            out: dict = json.loads(self.progress_path.read_text())
            return out
        except (OSError, ValueError):
            return None

    def load(self, device: str) -> dict | None:
        if not self.path.exists():
            return None
        state: dict = torch.load(self.path, map_location="cpu", weights_only=True)  # set_state takes CPU only
        return state

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        tmp_json = self.progress_path.with_name(self.progress_path.name + ".tmp")
        tmp_json.write_text(json.dumps({"phase": state["phase"], "epoch": state["epoch"]}))
        os.replace(tmp_json, self.progress_path)

    def remove(self) -> None:
        for p in (self.path, self.progress_path):
            p.unlink(missing_ok=True)


def evaluate(candidate: Candidate, data: Data, teacher_logits: np.ndarray | None,
             settings: TrainSettings, seed: int, keep_weights: bool = False) -> Evaluation:
    """Train, prune, quantize and score ``candidate``. Raises :class:`TrialFailed` on NaN loss."""
    steps = evaluation_steps(candidate, data, teacher_logits, settings, seed, keep_weights)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def evaluation_steps(candidate: Candidate, data: Data, teacher_logits: np.ndarray | None,
                     settings: TrainSettings, seed: int, keep_weights: bool = False
                     ) -> Generator[tuple[int, float], None, Evaluation]:
    """:func:`evaluate` as a generator, for early stopping: it yields ``(epoch, validation
    accuracy)`` after each dense epoch and returns the :class:`Evaluation`. Whoever drives it may
    stop at any yield (the candidate is then abandoned); driven to the end, it gives exactly what
    :func:`evaluate` gives."""
    from hwsearch.spaces import network

    device = resolve_device(settings.device)
    gen = torch.Generator().manual_seed(seed)
    tensors = tuple(torch.as_tensor(a, device=device) for a in
                    (data.x_train, data.y_train, data.x_val, data.y_val))
    teacher = None
    if candidate.distils:
        if teacher_logits is None:
            raise ValueError("the candidate distils but no teacher logits were given")
        teacher = torch.as_tensor(teacher_logits, device=device, dtype=torch.float32)
    if settings.quantization not in ("qat", "ptq"):
        raise ValueError(f"quantization must be 'qat' or 'ptq', got {settings.quantization!r}")
    plan = build_plan(candidate, data.input_shape, data.num_classes)
    ckpt = Checkpoint.of(candidate, data, settings, seed) if settings.checkpoint_dir else None
    state = ckpt.load(device) if ckpt else None
    curve: list[dict] = list(state["curve"]) if state else []
    timings: dict[str, float] = dict(state["timings"]) if state else {}
    clock: dict = {"phase": "train_s", "since": time.perf_counter()}

    def spent() -> dict[str, float]:
        key = str(clock["phase"])
        return {**timings, key: timings.get(key, 0.0) + time.perf_counter() - float(clock["since"])}

    def save(phase: str, epoch: int, opt, sched) -> None:
        assert ckpt is not None
        ckpt.save({"phase": phase, "epoch": epoch, "net": net.state_dict(), "opt": opt.state_dict(),
                   "sched": sched.state_dict(), "gen": gen.get_state(), "curve": curve, "timings": spent()})

    saver = save if ckpt else None
    if state is not None and state["phase"] == "finetune":  # the dense phase, pruning and folding are done
        net = network.fold_batchnorm(network.prune(network.build(plan)))
        if settings.quantization == "qat":
            network.enable_quantization(net, settings.recipe.quantizer, settings.recipe.learned_below)
        net = net.to(device)
        net.load_state_dict(state["net"])
        gen.set_state(state["gen"])
        clock.update(phase="finetune_s", since=time.perf_counter())
    else:
        net = network.build(plan, gen).to(device)
        if state is not None:
            net.load_state_dict(state["net"])
            gen.set_state(state["gen"])
        yield from _epochs(net, "dense", settings.epochs, settings.lr, tensors, teacher, candidate, settings,
                           gen, curve, resume=state, save=saver)
        timings = spent()

        clock.update(phase="prune_s", since=time.perf_counter())
        net.eval()
        net = network.prune(net)
        if any(b.cmid < b.cmid_dense for b in plan.blocks):  # the batch norms after a pruned block are stale
            network.recalibrate_batchnorm(net, tensors[0])
        net = network.fold_batchnorm(net)
        timings = spent()

        clock.update(phase="finetune_s", since=time.perf_counter())
        if settings.quantization == "qat":
            network.enable_quantization(net, settings.recipe.quantizer, settings.recipe.learned_below)
            _calibrate(net, tensors[0])
    for _ in _epochs(net, "finetune", settings.finetune_epochs, settings.lr * 0.3, tensors, teacher,
                     candidate, settings, gen, curve, resume=state, save=saver):
        pass
    if settings.quantization == "ptq":
        network.enable_quantization(net)
        _calibrate(net, tensors[0])
    acc = accuracy(net, tensors[2], tensors[3])
    timings = spent()
    if not math.isfinite(acc):
        raise TrialFailed("validation accuracy is not finite")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()} if keep_weights else None
    return Evaluation(accuracy=acc, curve=curve, timings=timings, state_dict=state)
