"""Which training recipe to default to: validation accuracy of fixed candidates on the CIFAR-10
task of ``cifar10.py`` (5,000 training and 1,000 validation images carved from CIFAR-10's
training set), trained by each recipe at the search's fidelity (3 dense + 1 fine-tuning epochs)
and at longer ones (6 + 1, 12 + 1).

The recipes differ from the old training (no augmentation, no label smoothing, AdamW with a
one-cycle schedule) one step at a time, so each figure says what that step adds. This selects a
default on a validation split; it is reported as such, and the split is never used to tune
anything else. Each result is saved as it completes, and a re-run skips what is done.

    python bench/recipe.py [--data ../shared/datasets/cifar10/train] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cifar10 import DATASET, DEFAULT_DATA, TRAINING
from common import ROOT, write_results

CANDIDATES = [
    "c16:ir_r1_k3_e3_c24_re_w8a8:ir_r2_k3_e3_c48_re_w8a8:ir_r2_k3_e6_c96_re_w8a8",  # 6.5M multiply-adds
    "c8:ir_r1_k3_e3_c16_re_w8a8:ir_r1_k3_e3_c32_re_w8a8:ir_r1_k5_e3_c64_hs_w8a8",  # 1.6M
]
RECIPES = {
    "before (no augmentation)": {},
    "crop 4 + flip": {"crop_padding": 4, "flip": True},
    "crop 4 + flip + label smoothing 0.1": {"crop_padding": 4, "flip": True, "label_smoothing": 0.1},
}
FIDELITIES = {"search (3 + 1 epochs)": (3, 1), "middle (6 + 1 epochs)": (6, 1), "longer (12 + 1 epochs)": (12, 1)}
NAME = "recipe"


def main() -> None:
    import torch

    from hwsearch.search.spec import DatasetSpec
    from hwsearch.search.training import Recipe, TrainSettings, evaluate, load_dataset, resolve_device
    from hwsearch.spaces import Candidate, build_plan
    from hwsearch.targets import host_name

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dest = ROOT / "bench" / "results" / f"{NAME}.json"
    done = json.loads(dest.read_text()) if dest.exists() else {}
    rows = {(r["recipe"], r["fidelity"], r["candidate"]): r for r in done.get("rows", [])}
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    data = load_dataset(DatasetSpec(**DATASET, path=Path(args.data)), DATASET["seed"])
    print(f"data: {len(data.x_train)} train, {len(data.x_val)} validation ({time.perf_counter() - t0:.0f}s)")
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    for fidelity, (epochs, finetune) in FIDELITIES.items():
        for recipe_name, fields in RECIPES.items():
            for cand in CANDIDATES:
                key = (recipe_name, fidelity, cand)
                if key in rows:
                    continue
                settings = TrainSettings(epochs, finetune, TRAINING["batch_size"], TRAINING["lr"], device,
                                         recipe=Recipe(channels_last=True, **fields))
                t = time.perf_counter()
                ev = evaluate(Candidate.from_string(cand), data, None, settings, seed=args.seed)
                rows[key] = {"recipe": recipe_name, "fidelity": fidelity, "candidate": cand,
                             "macs": build_plan(Candidate.from_string(cand), data.input_shape, 10).macs,
                             "val_accuracy": ev.accuracy, "train_s": time.perf_counter() - t,
                             "host": host_name(), "gpu": gpu}
                print(f"{fidelity:<24} {recipe_name:<38} {cand[:40]:<40} {ev.accuracy:.3f} "
                      f"({rows[key]['train_s']:.0f}s)", flush=True)
                write_results(NAME, {"task": {**DATASET, "batch_size": TRAINING["batch_size"],
                                              "lr": TRAINING["lr"], "seed": args.seed},
                                     "split": "validation (carved from CIFAR-10's training set): selection only",
                                     "rows": list(rows.values())})
    print("mean validation accuracy over the candidates:")
    for fidelity in FIDELITIES:
        for recipe_name in RECIPES:
            accs = [r["val_accuracy"] for r in rows.values()
                    if r["fidelity"] == fidelity and r["recipe"] == recipe_name]
            print(f"  {fidelity:<24} {recipe_name:<38} {sum(accs) / len(accs):.3f}")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
