"""The fixed CIFAR-10 task shared by ``search_quality.py`` and ``baselines.py``.

Everyone gets the same thing: a seeded, class-balanced subset of 6,000 training images of CIFAR-10
at 32x32 (5,000 train, 1,000 validation, split by ``dataset.seed``, which does not change with the
search seed), the same training budget per network (dense epochs, then fine-tuning epochs), the
same target (``local-cpu``: this host, onnxruntime, 1 thread) and the same device budget.

The target's profile is measured once, before anything trains, into a cache folder of the
benchmark's own (``--work``): every layer the search space and the baselines can reach, and the
whole-network calibration on both. Nothing is measured while networks train, so every method is
priced by one profile measured on a quiet machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from common import ROOT

DEFAULT_DATA = (ROOT / ".." / "shared" / "datasets" / "cifar10" / "train").resolve()
DEFAULT_WORK = ROOT / "bench" / "work"

DATASET = {"name": "imagefolder", "limit": 6000, "val_fraction": 1 / 6, "seed": 0}
TRAINING = {"epochs": 3, "finetune_epochs": 1, "batch_size": 128, "lr": 4e-3}
BUDGET = {"latency_ms": 0.25, "size_kb": 80.0}
OBJECTIVES = ["accuracy", "latency_ms", "size_kb"]
# The hypervolume's fixed reference point: chance accuracy is 0.1, and the budget bounds the costs.
REFERENCE = {"accuracy": 0.0, **BUDGET}

SPACE = {
    "stem_widths": [8, 16, 24],
    "stages": [
        {"widths": [16, 24], "depths": [1, 2]},
        {"widths": [24, 32, 48], "depths": [1, 2]},
        {"widths": [48, 64, 96], "depths": [1, 2]},
    ],
    "kernels": [3, 5],
    "expand_ratios": [1, 3, 6],
    "se": [False, True],
    "activations": ["relu", "hswish"],
    "prune_ratios": [0.0, 0.25, 0.5],
    "weight_bits": [4, 8, 32],
    "activation_bits": [8, 32],
    "distill": True,
    "temperature": [1.0, 8.0],
    "alpha": [0.0, 0.9],
}


def use_cache(work: Path) -> Path:
    """Point the profile cache (``HWSEARCH_CACHE``) at the benchmark's own folder. Call before any
    target is made."""
    cache = (work / "cache").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["HWSEARCH_CACHE"] = str(cache)
    return cache


def task_spec(name: str, data: Path, *, sampler: str = "tpe", seed: int = 0, trials: int = 40,
              device: str = "auto", threads: int = 1):
    """The search spec of the task (one run: one sampler, one seed)."""
    from hwsearch.search.spec import parse_spec

    spec = {
        "name": name,
        "dataset": {**DATASET, "path": str(data)},
        "target": "local-cpu",
        "budget": BUDGET,
        "objectives": OBJECTIVES,
        "space": SPACE,
        "teacher": {"extra_epochs": 4},
        "search": {**TRAINING, "trials": trials, "sampler": sampler, "seed": seed, "workers": 1,
                   "cpus_per_trial": threads, "device": device, "keep_weights": False},
    }
    return parse_spec(spec)


def load_task_data(data: Path):
    """The task's train/validation split (the same for every seed and method)."""
    from hwsearch.search.training import load_dataset

    spec = task_spec("data", data)
    return load_dataset(spec.dataset, spec.data_seed)


# The final stage's recipe at 20 dense epochs (hwsearch's defaults from 12 epochs on), for the
# design experiments that train like it
FINAL_RECIPE = {"optimizer": "adamw", "schedule": "onecycle", "warmup": 0.15, "weight_decay": 1e-4,
                "label_smoothing": 0.1, "crop_padding": 4, "flip": True, "channels_last": True}


def add_dev_split_args(ap, epochs: int = 8) -> None:
    """The arguments of a design experiment on a development split (see :func:`dev_split`)."""
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=20_000, help="images read (as reference.py's search)")
    ap.add_argument("--dev", type=int, default=3_000, help="training images held out to score on")
    ap.add_argument("--epochs", type=int, default=epochs)


def dev_split(args, device: str = "cpu"):
    """``(data, x, y, x_dev, y_dev)``: ``--limit`` images split as ``reference.py``'s search splits
    them, then the last ``--dev`` *training* images held out as a development split to score on.
    The validation split is never read, so a default chosen on these scores tunes nothing to it."""
    import torch

    from hwsearch.search.spec import DatasetSpec
    from hwsearch.search.training import load_dataset

    check_data(Path(args.data))
    data = load_dataset(DatasetSpec(name="imagefolder", path=Path(args.data), limit=args.limit, val_fraction=0.1,
                                    seed=0), 0)
    x, y = (torch.as_tensor(a[:-args.dev], device=device) for a in (data.x_train, data.y_train))
    xd, yd = (torch.as_tensor(a[-args.dev:], device=device) for a in (data.x_train, data.y_train))
    print(f"data: {len(x)} train, {len(xd)} development (of the training images)")
    return data, x, y, xd, yd


def check_data(data: Path) -> None:
    if not data.is_dir():
        sys.exit(f"error: no CIFAR-10 image folder at {data} (one folder per class of JPEGs); "
                 "give it with --data")


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNetV2's channel rounding: the nearest multiple of ``divisor``, never below 90% of
    ``value`` (torchvision's ``_make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# MobileNetV2's inverted residual settings (expand t, channels c, repeats n); its strides are
# replaced by hwsearch's rule for small inputs (the last stages downsample), so that the same
# profile prices it. The stem is 32 channels at width 1.0; there is no final 1x1 conv to 1280
# channels (hwsearch's head is global pooling and one linear layer, for every network here).
MOBILENET_V2 = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
WIDTHS = (0.35, 0.5, 0.75, 1.0)


def mobilenet_v2(width: float, prune: float = 0.0, bits: int = 32):
    """A MobileNetV2 at ``width`` as a candidate: ``prune`` of every expanded layer's channels
    removed, weights and activations at ``bits``."""
    from hwsearch.spaces import Candidate, Stage

    return Candidate(stem=make_divisible(32 * width), stages=tuple(
        Stage(depth=n, kernel=3, expand=t, width=make_divisible(c * width), act="relu",
              prune=prune if t > 1 else 0.0, w_bits=bits, a_bits=bits)
        for t, c, n in MOBILENET_V2))


def baseline_space():
    """A space holding the baselines (every width, dense or pruned, fp32 or int8): the profile is
    calibrated on whole networks of it as well as of the search space."""
    from hwsearch.spaces import SpaceSpec, StageSpace

    return SpaceSpec(
        stem_widths=sorted({make_divisible(32 * w) for w in WIDTHS}),
        stages=[StageSpace(widths=sorted({make_divisible(c * w) for w in WIDTHS}), depths=[n])
                for _, c, n in MOBILENET_V2],
        kernels=[3], expand_ratios=[1, 6], se=[False], activations=["relu"], prune_ratios=[0.0, 0.5],
        weight_bits=[8, 32], activation_bits=[8, 32], distill=False)


INPUT, CLASSES = (3, 32, 32), 10


def prepare_profile(log=print):
    """Measure what the task needs on ``local-cpu`` (once; later calls find it in the cache): every
    layer of the search space and the baselines, then the calibration on whole networks of both."""
    from tqdm import tqdm

    from hwsearch.targets import get_target, profile_space, space_fingerprint

    target = get_target("local-cpu")
    space = task_spec("profile", DEFAULT_DATA).space

    def bar(items, desc, total):
        return tqdm(items, desc=desc, total=total, unit=desc.split()[-1], leave=False)

    if space_fingerprint(space, INPUT, CLASSES) not in target.profile.calibration.spaces:
        profile_space(target.profile, space, INPUT, CLASSES, target.path, threads=1, networks=30,
                      progress=bar, log=log)
    baselines = baseline_space()
    if target.ensure_calibrated(baselines, INPUT, CLASSES, progress=bar):
        log("calibrated on whole MobileNetV2-style networks too")
    for width in WIDTHS:  # measure the baselines' layers now, not while networks train
        for prune, bits in ((0.0, 32), (0.5, 32), (0.5, 8)):
            target.price(_plan(mobilenet_v2(width, prune, bits)))
    return target


def _plan(candidate):
    from hwsearch.spaces import build_plan

    return build_plan(candidate, INPUT, CLASSES)
