"""How quantization-aware fine-tuning's learning rate costs or keeps a trained network's accuracy.

``bench/reference.py``'s final stage lost 0.9 points to its 3 fine-tuning epochs on its best
candidate (fused-20k trial 40: 78.06% dense, 77.16% at w8a8) while ResNet-8 gained 0.18, and both
dipped 3-4 points in the first fine-tuning epoch. Fine-tuning runs on the folded network (no batch
norm left to absorb a step's scale) at 0.3 times the peak learning rate on a one-cycle schedule
with warm-up. NVIDIA's guidance for quantization-aware training (pytorch-quantization's docs) is
about 10% of the original schedule at 1% of the initial learning rate, annealed on a half cosine.

This trains each network dense once, folds batch norm, calibrates the fake quantizers, and
fine-tunes copies of that one state under each policy, recording the accuracy after calibration
(no fine-tuning) and after each fine-tuning epoch. Everything is scored on a **development split
carved from the training images** (the last ``--dev`` of them), never on the validation split the
benchmarks select on, so choosing a default here tunes nothing to that split.

    python bench/qat_lr.py [--data ../shared/datasets/cifar10/train] [--epochs 8] [--finetune 3]

Results in ``bench/results/qat_lr.json``, saved after each network; a re-run skips what is done.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

from cifar10 import FINAL_RECIPE, add_dev_split_args, dev_split
from common import ROOT, write_results

NAME = "qat_lr"
NETWORKS = {
    "fused-20k trial 40": "c16:ir_r1_k5_e6_c24_fu_re_w8a8:ir_r1_k3_e6_c48_re_w8a8:ir_r1_k3_e4_c48_re_w8a8",
    "fused-20k trial 28": "c16:ir_r1_k3_e6_c16_fu_re_w8a8:ir_r1_k3_e6_c48_fu_re_w8a8:ir_r1_k3_e1_c48_fu_re_w8a8",
    "ResNet-8": "resnet8",
}
# (share of the peak learning rate, schedule, warm-up share): the stage's policy until now, and
# NVIDIA's, and one between
POLICIES = {
    "0.3 one-cycle (before)": (0.3, "onecycle", 0.15),
    "0.03 cosine": (0.03, "cosine", 0.0),
    "0.01 cosine (NVIDIA)": (0.01, "cosine", 0.0),
}
LR, BATCH, SEED = 4e-3, 128, 0


def main() -> None:
    from dataclasses import replace

    import numpy as np
    import resnet8
    import torch
    from resnet8 import accuracy

    from hwsearch.search.training import Recipe, augment, optimizer_for, resolve_device, schedule_for
    from hwsearch.spaces import Candidate, build_plan, network
    from hwsearch.targets import host_name

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dev_split_args(ap)
    ap.add_argument("--finetune", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dest = ROOT / "bench" / "results" / f"{NAME}.json"
    done = json.loads(dest.read_text()) if dest.exists() else {}
    rows = {r["network"]: r for r in done.get("rows", [])}
    device = resolve_device(args.device)
    data, x, y, xd, yd = dev_split(args, device)
    recipe = Recipe(**FINAL_RECIPE)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    layout = torch.channels_last

    def train(net, n: int, lr: float, rec: Recipe, gen: torch.Generator) -> list[float]:
        from hwsearch.spaces.network import distillation_loss

        net.to(memory_format=layout)
        opt = optimizer_for(net, rec, lr)
        sched = schedule_for(opt, rec, lr, n * math.ceil(len(x) / BATCH))
        accs = []
        for _ in range(n):
            net.train()
            perm = torch.randperm(len(x), generator=gen).to(device)
            for i in range(0, len(x), BATCH):
                idx = perm[i:i + BATCH]
                loss = distillation_loss(net(augment(x[idx], rec, gen).contiguous(memory_format=layout)).float(),
                                         None, y[idx], 1.0, 0.0, label_smoothing=rec.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            accs.append(accuracy(net, xd, yd))
        return accs

    @torch.no_grad()
    def calibrate(net) -> None:
        net.train()
        for i in range(4):
            net(x[i * 128:(i + 1) * 128])

    for name, cand in NETWORKS.items():
        if name in rows:
            continue
        gen = torch.Generator().manual_seed(SEED)
        t = time.perf_counter()
        if cand == "resnet8":
            net = resnet8.build(gen).to(device)
        else:
            net = network.build(build_plan(Candidate.from_string(cand), data.input_shape, data.num_classes), gen)
            net = net.to(device)
        dense = train(net, args.epochs, LR, recipe, gen)
        dense_s = time.perf_counter() - t
        net.eval()
        if cand == "resnet8":
            folded = resnet8.enable_quantization(resnet8.fold_batchnorm(net), recipe.quantizer, recipe.learned_below)
        else:
            folded = network.enable_quantization(network.fold_batchnorm(network.prune(net)), recipe.quantizer,
                                                 recipe.learned_below)
        calibrate(folded)
        calibrated = accuracy(folded, xd, yd)
        start = copy.deepcopy(folded.state_dict())
        gen_state = gen.get_state()
        row = {"network": name, "candidate": cand, "dense_epochs": args.epochs, "dense_curve": dense,
               "dense_accuracy": dense[-1], "calibrated_accuracy": calibrated, "dense_s": dense_s, "policies": {}}
        print(f"{name}: dense {dense[-1]:.2%} after {args.epochs} epochs ({dense_s:.0f}s), "
              f"w8a8 calibrated {calibrated:.2%}", flush=True)
        for policy, (share, schedule, warmup) in POLICIES.items():
            folded.load_state_dict(start)
            gen.set_state(gen_state)  # every policy sees the same batches
            t = time.perf_counter()
            curve = train(folded, args.finetune, LR * share, replace(recipe, schedule=schedule, warmup=warmup), gen)
            row["policies"][policy] = {"curve": curve, "accuracy": curve[-1], "finetune_s": time.perf_counter() - t,
                                       "vs_dense_points": 100 * (curve[-1] - dense[-1])}
            print(f"  {policy:<24} {' '.join(f'{a:.2%}' for a in curve)}  ({100 * (curve[-1] - dense[-1]):+.2f} "
                  f"points against dense)", flush=True)
        rows[name] = row
        write_results(NAME, {"host": host_name(), "gpu": gpu, "data": str(Path(args.data).resolve()),
                             "split": f"{len(x)} training images, scored on {len(xd)} further training images "
                                      "(never the validation split)",
                             "settings": {"lr": LR, "batch_size": BATCH, "seed": SEED, "epochs": args.epochs,
                                          "finetune_epochs": args.finetune, "recipe": recipe.__dict__},
                             "policies": {k: dict(zip(("lr_share", "schedule", "warmup"), v))
                                          for k, v in POLICIES.items()},
                             "rows": list(rows.values())})
    print("mean points against dense, over the networks:")
    for policy in POLICIES:
        print(f"  {policy:<24} {np.mean([r['policies'][policy]['vs_dense_points'] for r in rows.values()]):+.2f}")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
