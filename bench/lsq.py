"""Learned low-bit quantization (LSQ) against max-abs scales: validation accuracy of one fixed
candidate on the CIFAR-10 task of ``cifar10.py`` (5,000 training and 1,000 validation images
carved from CIFAR-10's training set) at weights and activations of 2, 4 and 8 bits.

Each run is the search's pipeline with the search's training (``train_settings`` of the task's
spec: crops, flips, AdamW one-cycle, batch 128), 3 dense epochs, pruning, batch norm folding and 2
quantization-aware fine-tuning epochs; only the quantizer differs. Training is deterministic for a
seed on the CPU and quantization starts after the dense phase, so both quantizers fine-tune the
same pruned, folded weights (the script checks that their dense curves are identical). ``lsq``
learns the grids of layers below 8 bits, as the search does; at w8a8 it is asked to learn the
8-bit grids too (``learned_below`` 9), to measure whether it would help there. The stem and the
classifier stay at 8 bits or more (the plan's rule).

The validation split is for selection and reporting only. Each result is saved as it completes,
and a re-run skips what is done.

    python bench/lsq.py [--data ../shared/datasets/cifar10/train] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from cifar10 import DATASET, DEFAULT_DATA, check_data, load_task_data, task_spec
from common import ROOT, write_results

# 6.5M multiply-adds at 32x32 (the first candidate of recipe.py); {bits} is, e.g., w4a4
CANDIDATE = "c16:ir_r1_k3_e3_c24_re_{bits}:ir_r2_k3_e3_c48_re_{bits}:ir_r2_k3_e6_c96_re_{bits}"
BITS = ("w2a2", "w4a4", "w8a8")
QUANTIZERS = ("maxabs", "lsq")
EPOCHS, FINETUNE_EPOCHS = 3, 2
NAME = "lsq"


def learned_below(bits: str) -> int:
    """``lsq`` learns every grid the candidate's stages have: 8-bit ones too at w8a8."""
    return 9 if bits == "w8a8" else 8


def main() -> None:
    import torch

    from hwsearch.search.training import evaluate, resolve_device, train_settings
    from hwsearch.spaces import Candidate, build_plan
    from hwsearch.targets import host_name

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    data_dir = Path(args.data)
    check_data(data_dir)
    dest = ROOT / "bench" / "results" / f"{NAME}.json"
    done = json.loads(dest.read_text()) if dest.exists() else {}
    rows = {(r["bits"], r["quantizer"], r["seed"]): r for r in done.get("rows", [])}
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    data = load_task_data(data_dir)
    print(f"data: {len(data.x_train)} train, {len(data.x_val)} validation ({time.perf_counter() - t0:.0f}s)")
    spec = task_spec(NAME, data_dir, device=device)
    base = train_settings(spec, data.input_shape[1], epochs=EPOCHS, finetune_epochs=FINETUNE_EPOCHS)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    task = {**DATASET, "epochs": EPOCHS, "finetune_epochs": FINETUNE_EPOCHS, "batch_size": base.batch_size,
            "lr": base.lr, "recipe": {k: v for k, v in dataclasses.asdict(base.recipe).items()
                                      if k not in ("quantizer", "learned_below")}}
    for seed in args.seeds:
        for bits in BITS:
            cand = Candidate.from_string(CANDIDATE.format(bits=bits))
            for quantizer in QUANTIZERS:
                key = (bits, quantizer, seed)
                if key in rows:
                    continue
                below = learned_below(bits) if quantizer == "lsq" else None
                recipe = dataclasses.replace(base.recipe, quantizer=quantizer, learned_below=below or 8)
                t = time.perf_counter()
                ev = evaluate(cand, data, None, dataclasses.replace(base, recipe=recipe), seed=seed)
                dense = [c for c in ev.curve if c["phase"] == "dense"]
                rows[key] = {"bits": bits, "quantizer": quantizer, "learned_below": below, "seed": seed,
                             "candidate": cand.to_string(), "macs": build_plan(cand, data.input_shape, 10).macs,
                             "val_accuracy": ev.accuracy, "dense_val_accuracy": dense[-1]["val_accuracy"],
                             "dense_curve": dense, "train_s": time.perf_counter() - t,
                             "host": host_name(), "gpu": gpu}
                print(f"seed {seed} {bits} {quantizer:<6} {ev.accuracy:.3f} (dense {dense[-1]['val_accuracy']:.3f}, "
                      f"{rows[key]['train_s']:.0f}s)", flush=True)
                write_results(NAME, {"task": task, "split": "validation (carved from CIFAR-10's training set): "
                                     "reporting only", "rows": list(rows.values()), "summary": summary(rows)})
    print(json.dumps(summary(rows), indent=1))
    print(f"wrote {dest}")


def summary(rows: dict) -> dict:
    """Mean validation accuracy per bit width and quantizer over the seeds done, lsq's gain, and
    whether both quantizers started from the same dense network on every seed."""
    out: dict = {}
    for bits in BITS:
        accs = {q: [r["val_accuracy"] for (b, qq, _), r in sorted(rows.items()) if b == bits and qq == q]
                for q in QUANTIZERS}
        if not all(accs.values()):
            continue
        mean = {q: sum(a) / len(a) for q, a in accs.items()}
        seeds = sorted({s for (b, _, s) in rows if b == bits})
        same_dense = all(rows[(bits, "maxabs", s)]["dense_curve"] == rows[(bits, "lsq", s)]["dense_curve"]
                         for s in seeds if (bits, "maxabs", s) in rows and (bits, "lsq", s) in rows)
        out[bits] = {"maxabs": mean["maxabs"], "lsq": mean["lsq"],
                     "lsq_gain_points": (mean["lsq"] - mean["maxabs"]) * 100,
                     "per_seed": accs, "seeds": seeds, "same_dense_network": same_dense}
    return out


if __name__ == "__main__":
    main()
