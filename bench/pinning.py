"""Does pinning the threads make 2-thread timings agree between processes? (issue 16's "pinning
the measuring thread")

    python bench/pinning.py [--networks 30] [--processes 3] [--rounds 15] [--threads 2]

Random networks of the quickstart space (1x8x8, the matrix's cell that misses at 2 threads) are
timed in fresh processes, each network as its median ratio to a fixed reference network of the
same space (the middle one by multiply-adds) over interleaved rounds, as hwsearch's meter
compares a network with its reference. Processes alternate between the two ways:

- ``free``: onnxruntime's threads where the OS puts them (what hwsearch and a user's code do);
- ``pinned``: the calling thread pinned to the first CPU (``os.sched_setaffinity``) and
  onnxruntime's worker threads to the others (``session.intra_op_thread_affinities``).

For each way, every pair of its processes gives the share of networks whose two ratios lie
within +-10% (and +-5%) of each other: what a profile measured in one process and checked in
another can agree on at best. Results: ``bench/results/pinning.<cpu>.json``, one per CPU model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np
from common import ROOT, write_results

WAYS = ("free", "pinned")
REPEATS = 20  # runs of a network per round; the round's figure is their median


def sessions(blobs: list[bytes], threads: int, pinned: bool) -> list:
    """hwsearch's sessions; pinned, each worker thread bound to one more CPU (1-based ids)."""
    from hwsearch.targets import session

    workers = ";".join(str(2 + i) for i in range(threads - 1))
    config = {"session.intra_op_thread_affinities": workers} if pinned and threads > 1 else None
    return [session(blob, threads, config=config) for blob in blobs]


def child(args: argparse.Namespace) -> None:
    """One process: every network's median ratio to the reference, as JSON on stdout."""
    from hwsearch.search import load_spec
    from hwsearch.targets import network_model, random_feed, random_network_weights, sample_plans

    if args.way == "pinned":
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    spec = load_spec(ROOT / "examples" / "quickstart.yaml")
    plans = sample_plans(spec.space, (1, 8, 8), 10, args.networks + 1, seed=7)
    plans.sort(key=lambda p: p.macs)
    ref = plans.pop(len(plans) // 2)
    rng = np.random.default_rng(0)
    blobs = [network_model(p, random_network_weights(p, rng)).SerializeToString() for p in [ref, *plans]]
    sess = sessions(blobs, args.threads, args.way == "pinned")
    feeds = [random_feed(s, (1, 1, 8, 8)) for s in sess]

    def once(s, feed) -> float:
        times = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            s.run(None, feed)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    for s, feed in zip(sess, feeds):  # warm-up
        once(s, feed)
    ratios, ref_ms = [], []
    for _ in range(args.rounds):
        r = once(sess[0], feeds[0])
        ref_ms.append(r * 1000)
        ratios.append([once(s, feed) / r for s, feed in zip(sess[1:], feeds[1:])])
    print(json.dumps({"ratios": np.median(ratios, axis=0).tolist(), "reference_ms": float(np.median(ref_ms)),
                      "candidates": [p.candidate.to_string() for p in plans]}))


def agreement(runs: list[list[float]]) -> dict:
    pairs = []
    for a, b in itertools.combinations(range(len(runs)), 2):
        d = np.asarray(runs[a]) / np.asarray(runs[b]) - 1
        pairs.append({"processes": [a, b], "within_10pct": float((abs(d) <= 0.10).mean()),
                      "within_5pct": float((abs(d) <= 0.05).mean()), "median_abs": float(np.median(abs(d)))})
    return {"pairs": pairs, "within_10pct_min": min(p["within_10pct"] for p in pairs),
            "within_10pct_median": float(np.median([p["within_10pct"] for p in pairs]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", type=int, default=30)
    ap.add_argument("--processes", type=int, default=3, help="fresh processes per way")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args()
    if args.way:
        child(args)
        return
    import onnxruntime as ort

    from hwsearch.targets import host_name

    if args.processes < 2:
        sys.exit("error: --processes must be at least 2: agreement is between two processes")
    if (cpus := len(os.sched_getaffinity(0))) < args.threads:
        sys.exit(f"error: {args.threads} threads need as many CPUs; this process may use {cpus}")
    out: dict = {"host": host_name(), "onnxruntime": ort.__version__, "cores": os.cpu_count(), "threads": args.threads,
                 "networks": args.networks, "rounds": args.rounds, "processes": {w: [] for w in WAYS}}
    t0 = time.perf_counter()
    for i in range(args.processes):
        for way in WAYS:  # alternating, so a slow stretch of the host falls on both ways
            cmd = [sys.executable, __file__, "--way", way, "--networks", str(args.networks), "--rounds",
                   str(args.rounds), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout)
            out["processes"][way].append(run)
            print(f"process {i + 1}/{args.processes}, {way}: reference {run['reference_ms'] * 1000:.1f} us", flush=True)
    out["agreement"] = {w: agreement([r["ratios"] for r in out["processes"][w]]) for w in WAYS}
    out["wall_s"] = time.perf_counter() - t0
    path = write_results("pinning", out, per_host=True)
    for w in WAYS:
        a = out["agreement"][w]
        print(f"{w:>6}: two processes agree within +-10% on {a['within_10pct_median']:.0%} of networks (median pair), "
              f"{a['within_10pct_min']:.0%} (worst pair); references "
              + ", ".join(f"{r['reference_ms'] * 1000:.1f}" for r in out["processes"][w]) + " us")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
