"""Training throughput on this host: images per second of one training step (forward, backward,
optimiser), for the memory layouts, in-place activations, phases and allocator settings a candidate
trains with.

The candidates are the issue's MobileNet-style network of 11.5M multiply-adds at 3x32x32, dense
(the search's dense phase) and with fake quantization at w8a8 (its fine-tuning phase), batch 128,
on this host's cores. Within a process every configuration is timed in interleaved rounds, so
that a slow moment of a shared host hits them alike; a figure is the median of its rounds. The C
allocator's settings (``keep_freed_memory``) hold for a whole process, so the bench runs pairs of
fresh processes, one with glibc's defaults and one with the memory kept, one after the other; the
ratios between configurations are taken within a process, or between the two processes of a pair.
Results: ``bench/results/train_throughput.<cpu>.json``, one per CPU model.

    python bench/train_throughput.py [--pairs 3] [--rounds 5] [--steps 6] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import numpy as np
from common import write_results

CANDIDATE = "c16:ir_r2_k3_e6_c24_re:ir_r2_k3_e6_c48_re:ir_r2_k3_e6_c96_re"  # 11.5M multiply-adds at 32x32
# (name, memory layout, ReLU in place, fake quantization's straight-through sums recorded as before):
# the training step as it was, and each change since; the last is hwsearch's training today
VARIANTS = (("NCHW (before)", "contiguous", False, True), ("channels_last", "channels_last", False, True),
            ("channels_last + in-place ReLU", "channels_last", True, True),
            ("+ unrecorded straight-through (after)", "channels_last", True, False))


@contextmanager
def recorded_straight_through():
    """Fake quantization as hwsearch ran it before the change being measured: the max-abs weight
    grid and the tracked activation range as ``x + (q - x).detach()``, ``q`` computed from ``x``
    with autograd recording every operator. The values are the same to the bit (the tests check
    that ``network`` gives them); only the time differs."""
    import torch

    from hwsearch.spaces import network

    act_forward, quantize_weight = network.ActQuant.forward, network.quantize_weight

    def weight(w, bits, step=None):
        if bits >= 32 or step is not None:
            return quantize_weight(w, bits, step)
        qmax = 2 ** (bits - 1) - 1
        scale = network.weight_scale(w, bits)
        return w + (torch.clamp(torch.round(w / scale), -qmax, qmax) * scale - w).detach()

    def act(self, x):
        if self.bits >= 32 or self.step is not None:  # off, or a learned range: not what changed
            return act_forward(self, x)
        if self.training:
            lo, hi = x.detach().min(), x.detach().max()
            if not bool(self.seen):
                self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
            else:
                self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)
        levels = 2**self.bits - 1
        scale, zero = self.scale_zero_point()
        return x + ((torch.clamp(torch.round(x / scale) + zero, 0, levels) - zero) * scale - x).detach()

    network.ActQuant.forward, network.quantize_weight = act, weight
    try:
        yield
    finally:
        network.ActQuant.forward, network.quantize_weight = act_forward, quantize_weight


def measure(args: argparse.Namespace) -> dict:
    """One process: every configuration timed in interleaved rounds; images/s per round."""
    import torch

    from hwsearch.search.training import Recipe, keep_freed_memory, optimizer_for
    from hwsearch.spaces import Candidate, build_plan, network

    kept = keep_freed_memory() if args.child == "kept" else False
    shape = (3, 32, 32)
    configs = {}
    for phase, bits in (("dense", ""), ("fake-quantized w8a8", "_w8a8")):
        cand = Candidate.from_string(":".join(s + bits if i else s for i, s in enumerate(CANDIDATE.split(":"))))
        plan = build_plan(cand, shape, 10)
        for variant, layout_name, inplace, recorded in VARIANTS:
            layout = torch.channels_last if layout_name == "channels_last" else torch.contiguous_format
            net = network.build(plan, torch.Generator().manual_seed(0))
            if bits:
                net.eval()
                net = network.enable_quantization(network.fold_batchnorm(network.prune(net)))
            for m in net.modules():
                if isinstance(m, torch.nn.ReLU):
                    m.inplace = inplace
            net.train().to(memory_format=layout)
            opt = optimizer_for(net, Recipe(), 1e-3)
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(args.batch, *shape, generator=gen).contiguous(memory_format=layout)
            y = torch.randint(0, 10, (args.batch,), generator=gen)
            configs[(phase, variant)] = (net, opt, x, y, recorded)

    def step(net, opt, x, y, recorded) -> None:
        with recorded_straight_through() if recorded else nullcontext():
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for c in configs.values():  # warm-up: kernels chosen, memory allocated
        for _ in range(3):
            step(*c)
    rates: dict = {k: [] for k in configs}
    for _ in range(args.rounds):
        for key, c in configs.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(*c)
            rates[key].append(args.steps * args.batch / (time.perf_counter() - t0))

    return {"allocator": args.child, "kept": kept, "rates": [[*key, r] for key, r in rates.items()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="pairs of processes (glibc's defaults, memory kept)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per process")
    ap.add_argument("--steps", type=int, default=6, help="training steps per round and configuration")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--child", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    import torch

    from hwsearch.targets import host_name

    runs = []
    for _ in range(args.pairs):
        for child in ("default", "kept"):
            cmd = [sys.executable, __file__, "--child", child, "--rounds", str(args.rounds), "--steps",
                   str(args.steps), "--batch", str(args.batch)]
            runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    if not all(r["kept"] for r in runs if r["allocator"] == "kept"):
        print("note: this host's C library did not take the allocator settings (not glibc?)")

    def medians(run: dict) -> dict:
        return {(phase, variant): float(np.median(r)) for phase, variant, r in run["rates"]}

    per_run = [(r["allocator"], medians(r)) for r in runs]
    variants = [v for v, *_ in VARIANTS]
    rows = []
    for phase in ("dense", "fake-quantized w8a8"):
        for allocator in ("default", "kept"):
            for variant in variants:
                values = [m[(phase, variant)] for a, m in per_run if a == allocator]
                rows.append({"phase": phase, "variant": variant, "allocator": allocator,
                             "images_per_s": float(np.median(values)), "processes": [round(v, 1) for v in values]})
    after, before = variants[-1], variants[0]
    speedups: dict = {}
    for phase in ("dense", "fake-quantized w8a8"):
        pairs = [(per_run[i][1], per_run[i + 1][1]) for i in range(0, len(per_run), 2)]
        ratios = {f"today (kept) against {v} (default)": [k[(phase, after)] / d[(phase, v)] for d, k in pairs]
                  for v in variants}
        ratios["memory kept against default, today's step"] = [k[(phase, after)] / d[(phase, after)] for d, k in pairs]
        speedups[phase] = {name: {"median_of_pair_ratios": float(np.median(r)), "min": float(min(r)),
                                  "max": float(max(r))} for name, r in ratios.items()}
    results = {"host": host_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "candidate": CANDIDATE, "input": [3, 32, 32], "batch": args.batch, "pairs": args.pairs,
               "rounds_per_process": args.rounds, "steps_per_round": args.steps, "rows": rows,
               "speedup": speedups, "before": before}
    dest = write_results("train_throughput", results, per_host=True)
    print(f"host {results['host']}, torch {results['torch']}, {results['threads']} threads, batch {args.batch}")
    for r in rows:
        print(f"  {r['phase']:<20} {r['variant']:<38} {r['allocator']:<8} {r['images_per_s']:7.0f} images/s")
    for phase, against in speedups.items():
        for name, sp in against.items():
            print(f"  {phase}: {name}: {sp['median_of_pair_ratios']:.2f}x (pairs {sp['min']:.2f}-{sp['max']:.2f}x)")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
