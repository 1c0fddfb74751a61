"""Why distillation from MLPerf Tiny's ResNet-8 cost ResNet-8 3.7 points in ``reference.py``:
offline teaching (the teacher's logits of each un-augmented image, computed once per run) against
consistent teaching (the teacher's logits of the very crop and flip the student sees, computed per
batch; Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and consistent").

ResNet-8 (``resnet8.py``) trains dense for ``--epochs`` epochs by the final stage's recipe (crop 4,
flip, label smoothing 0.1, AdamW one-cycle at 4e-3, batch 128) without a teacher, taught offline,
and taught consistently (T 4, alpha 0.5, as the reference's distilled variant), from one seed.
Everything is scored on a **development split carved from the training images** (the last
``--dev`` of them), never on the validation split the benchmarks select on. The teacher has seen
every CIFAR-10 training image, the development split's included, so its own accuracy there is
recorded but says nothing of its quality; what matters is the students' ranking.

    python bench/kd_view.py [--data ../shared/datasets/cifar10/train] [--epochs 8]

Results in ``bench/results/kd_view.json``, saved after each variant; a re-run skips what is done.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from cifar10 import FINAL_RECIPE, add_dev_split_args, dev_split
from common import ROOT, write_results

NAME = "kd_view"
TEACHER = (ROOT / ".." / "shared" / "models" / "mlperf-tiny-ic-resnet8.onnx").resolve()
TEACHER_SPEC = {"layout": "NCHW", "pixel_max": 255, "output": "probabilities"}
VARIANTS = {"no teacher": (1.0, 0.0, None), "offline (un-augmented image)": (4.0, 0.5, "offline"),
            "consistent (the augmented view)": (4.0, 0.5, "consistent")}
LR, BATCH, SEED = 4e-3, 128, 0


def main() -> None:
    import resnet8
    import torch

    from hwsearch.search.spec import TeacherSpec
    from hwsearch.search.training import OnnxTeacher, Recipe, augment, optimizer_for, schedule_for
    from hwsearch.spaces.network import distillation_loss
    from hwsearch.targets import host_name

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dev_split_args(ap)
    args = ap.parse_args()
    if not TEACHER.is_file():
        raise SystemExit(f"error: no teacher at {TEACHER}")
    dest = ROOT / "bench" / "results" / f"{NAME}.json"
    done = json.loads(dest.read_text()) if dest.exists() else {}
    rows = {r["variant"]: r for r in done.get("rows", [])}
    data, x, y, xd, yd = dev_split(args)
    conv = TeacherSpec(onnx=TEACHER, **TEACHER_SPEC)
    mean = torch.tensor(data.mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(data.std, dtype=torch.float32)[None, :, None, None]
    teacher = OnnxTeacher(TEACHER, data, conv)

    def teach(batch: torch.Tensor) -> torch.Tensor:
        """The teacher's log-probabilities of a batch of normalised images, as they are (augmented)."""
        return torch.as_tensor(teacher((batch * std + mean).numpy()), dtype=torch.float32)

    offline = teach(x)
    teacher_dev = float((teach(xd).argmax(1) == yd).float().mean())
    recipe = Recipe(**FINAL_RECIPE)
    layout = torch.channels_last
    for variant, (temperature, alpha, mode) in VARIANTS.items():
        if variant in rows:
            continue
        gen = torch.Generator().manual_seed(SEED)
        net = resnet8.build(gen).to(memory_format=layout)
        opt = optimizer_for(net, recipe, LR)
        sched = schedule_for(opt, recipe, LR, args.epochs * math.ceil(len(x) / BATCH))
        curve, t0 = [], time.perf_counter()
        for _ in range(args.epochs):
            net.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), BATCH):
                idx = perm[i:i + BATCH]
                batch = augment(x[idx], recipe, gen)
                t_logits = {None: None, "offline": offline[idx] if mode == "offline" else None,
                            "consistent": teach(batch) if mode == "consistent" else None}[mode]
                loss = distillation_loss(net(batch.contiguous(memory_format=layout)).float(), t_logits, y[idx],
                                         temperature, alpha, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            curve.append(resnet8.accuracy(net, xd, yd))
        rows[variant] = {"variant": variant, "temperature": temperature, "alpha": alpha, "curve": curve,
                         "accuracy": curve[-1], "wall_s": time.perf_counter() - t0}
        print(f"{variant:<34} {' '.join(f'{a:.1%}' for a in curve)}  ({rows[variant]['wall_s']:.0f}s)", flush=True)
        write_results(NAME, {"host": host_name(), "gpu": None, "data": str(Path(args.data).resolve()),
                             "teacher": str(TEACHER), "teacher_dev_accuracy_seen_in_its_training": teacher_dev,
                             "split": f"{len(x)} training images, scored on {len(xd)} further training images "
                                      "(never the validation split)",
                             "settings": {"lr": LR, "batch_size": BATCH, "seed": SEED, "epochs": args.epochs,
                                          "recipe": recipe.__dict__},
                             "rows": list(rows.values())})
    print(f"teacher on the development split (images it trained on): {teacher_dev:.1%}; wrote {dest}")


if __name__ == "__main__":
    main()
