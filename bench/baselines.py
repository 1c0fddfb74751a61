"""The hand-made pipeline a user would otherwise run, on the task of ``bench/cifar10.py``.

    python bench/baselines.py [--data ../shared/datasets/cifar10/train] [--jobs 2]

MobileNetV2-style networks (``cifar10.mobilenet_v2``) at widths 0.35, 0.5, 0.75 and 1.0, each:

1. trained dense in float for the task's dense epochs (no distillation: the recipe has no teacher);
2. pruned by 50%: half of every expanded layer's channels physically removed (by the same
   importance as the search uses), batch norm folded, then fine-tuned in float for the task's
   fine-tuning epochs (the same total training as every searched candidate);
3. quantized to int8 after training (PTQ): weights per channel, activation ranges calibrated on
   training batches, no further training;

then priced on the task's ``local-cpu`` profile as int8 networks (the same profile as the search).
Every step's validation accuracy is recorded (dense fp32, pruned fp32, int8).

Results: ``bench/results/baselines.json``; ``bench/front.py`` draws them with the searched fronts.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from cifar10 import (
    BUDGET,
    DEFAULT_DATA,
    DEFAULT_WORK,
    TRAINING,
    WIDTHS,
    _plan,
    check_data,
    load_task_data,
    mobilenet_v2,
    prepare_profile,
    use_cache,
)
from common import write_results

PRUNE = 0.5
SEED = 0


def _train(width: float, data: str, device: str, threads: int, work: str) -> dict:
    """One baseline, in a worker process: train, prune, fine-tune, quantize, score."""
    use_cache(Path(work))
    import torch

    from hwsearch.search.training import TrainSettings, evaluate, resolve_device

    torch.set_num_threads(threads)
    task = load_task_data(Path(data))
    settings = TrainSettings(**TRAINING, device=resolve_device(device), quantization="ptq")
    t0 = time.perf_counter()
    ev = evaluate(mobilenet_v2(width, PRUNE, 8), task, None, settings, seed=SEED)
    dense = [c for c in ev.curve if c["phase"] == "dense"]
    tuned = [c for c in ev.curve if c["phase"] == "finetune"]
    return {"width": width, "accuracy": ev.accuracy, "dense_fp32_accuracy": dense[-1]["val_accuracy"],
            "pruned_fp32_accuracy": tuned[-1]["val_accuracy"] if tuned else None,
            "curve": ev.curve, "timings": ev.timings, "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 as an image folder")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="the profile cache (shared with search_quality.py)")
    ap.add_argument("--widths", nargs="+", type=float, default=list(WIDTHS))
    ap.add_argument("--jobs", type=int, default=2, help="networks trained at once")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: CPUs / jobs)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    check_data(args.data)
    work = args.work.resolve()
    use_cache(work)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    t_start = time.perf_counter()
    target = prepare_profile()

    from tqdm import tqdm

    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        # widest first: the longest jobs start at once
        futures = [pool.submit(_train, w, str(args.data), args.device, threads, str(work))
                   for w in sorted(args.widths, reverse=True)]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="baselines", unit="network"):
            row = fut.result()
            tqdm.write(f"width {row['width']}: int8 accuracy {row['accuracy']:.3f} "
                       f"in {row['wall_s'] / 60:.1f} min")
            rows.append(row)
    rows.sort(key=lambda r: r["width"])
    for row in rows:
        for name, cand in (("int8", mobilenet_v2(row["width"], PRUNE, 8)),
                           ("dense_fp32", mobilenet_v2(row["width"], 0.0, 32))):
            cost = target.price(_plan(cand))
            key = "" if name == "int8" else f"{name}_"
            row.update({f"{key}candidate": cand.to_string(), f"{key}latency_ms": cost.latency_ms,
                        f"{key}size_kb": cost.size_kb, f"{key}peak_memory_kb": cost.peak_memory_kb})
        row["within_budget"] = row["latency_ms"] <= BUDGET["latency_ms"] and row["size_kb"] <= BUDGET["size_kb"]
    results = {"pipeline": "train dense -> prune 50% of expanded channels -> fine-tune (float) -> int8 PTQ",
               "training": TRAINING, "prune": PRUNE, "seed": SEED, "target": "local-cpu",
               "threads_per_network": threads, "baselines": rows,
               "wall_s": time.perf_counter() - t_start}
    dest = write_results("baselines", results)
    print(f"\n{'width':>5} {'dense fp32':>10} {'pruned fp32':>11} {'int8 (PTQ)':>10} {'latency ms':>10} "
          f"{'size KB':>8} {'train min':>9}")
    for r in rows:
        print(f"{r['width']:5} {r['dense_fp32_accuracy']:10.3f} {r['pruned_fp32_accuracy']:11.3f} "
              f"{r['accuracy']:10.3f} {r['latency_ms']:10.3f} {r['size_kb']:8.1f} {r['wall_s'] / 60:9.1f}")
    print(f"total {results['wall_s'] / 60:.1f} min; results in {dest}")


if __name__ == "__main__":
    main()
