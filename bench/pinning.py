"""Which thread set-up makes 2-thread timings agree between processes? Pinning (issue 16's "pinning
the measuring thread"), workers that spin, or one thread pool for all sessions.

    python bench/pinning.py [--networks 30] [--processes 3] [--rounds 15] [--threads 2]
                            [--ways free,pinned,spinning,spin1000,global]

Random networks of the quickstart space (1x8x8, the matrix's cell that misses at 2 threads) are
timed in fresh processes, each network as its median ratio to a fixed reference network of the
same space (the middle one by multiply-adds) over interleaved rounds (per round: the reference's
20 back-to-back runs, then every network's 20; the figure is a median), as hwsearch's meter
compares a network with its reference. Processes alternate between the ways asked for:

- ``free``: workers stop spinning when a run returns (``session.force_spinning_stop``), their
  threads where the OS puts them (what hwsearch's sessions did until 2026-12-07);
- ``pinned``: the same, the calling thread pinned to the first CPU (``os.sched_setaffinity``)
  and onnxruntime's worker threads to the others (``session.intra_op_thread_affinities``);
- ``spinning``: onnxruntime's default, workers keep spinning after a run returns (for about
  50 ms on the AMD EPYC host), as a user's own session does and hwsearch's sessions now do;
- ``spin1000``: spinning kept, but for at most 1,000 microseconds
  (``session.intra_op.spin_duration_us``);
- ``global``: one thread pool shared by every session of the process
  (``set_global_thread_pool_sizes``, ``use_per_session_threads = False``).

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

WAYS = ("free", "pinned", "spinning", "spin1000", "global")
REPEATS = 20  # runs of a network per round; the round's figure is their median


def sessions(blobs: list[bytes], threads: int, way: str) -> list:
    """The sessions of one way (see the module)."""
    import onnxruntime as ort

    from hwsearch.targets import session

    if way == "global":
        ort.set_global_thread_pool_sizes(threads, 1)
        out = []
        for blob in blobs:
            opts = ort.SessionOptions()
            opts.use_per_session_threads = False
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            out.append(ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"]))
        return out
    config = {
        "free": {"session.force_spinning_stop": "1"},
        "pinned": {"session.force_spinning_stop": "1",
                   "session.intra_op_thread_affinities": ";".join(str(2 + i) for i in range(threads - 1))}
        if threads > 1 else {},  # one thread: no worker to pin
        "spinning": {},
        "spin1000": {"session.force_spinning_stop": "0", "session.intra_op.spin_duration_us": "1000"},
    }[way]
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
    sess = sessions(blobs, args.threads, args.way)
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
    ap.add_argument("--ways", default=",".join(WAYS), help=f"ways to compare (default: all of {','.join(WAYS)})")
    ap.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args()
    if args.way:
        child(args)
        return
    import onnxruntime as ort

    from hwsearch.targets import host_name

    ways = args.ways.split(",")
    if unknown := set(ways) - set(WAYS):
        sys.exit(f"error: unknown ways {sorted(unknown)}; choose from {', '.join(WAYS)}")
    if args.processes < 2:
        sys.exit("error: --processes must be at least 2: agreement is between two processes")
    if (cpus := len(os.sched_getaffinity(0))) < args.threads:
        sys.exit(f"error: {args.threads} threads need as many CPUs; this process may use {cpus}")
    out: dict = {"host": host_name(), "onnxruntime": ort.__version__, "cores": os.cpu_count(), "threads": args.threads,
                 "networks": args.networks, "rounds": args.rounds, "processes": {w: [] for w in ways}}
    t0 = time.perf_counter()
    for i in range(args.processes):
        for way in ways:  # alternating, so a slow stretch of the host falls on every way
            cmd = [sys.executable, __file__, "--way", way, "--networks", str(args.networks), "--rounds",
                   str(args.rounds), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout)
            out["processes"][way].append(run)
            print(f"process {i + 1}/{args.processes}, {way}: reference {run['reference_ms'] * 1000:.1f} us", flush=True)
    out["agreement"] = {w: agreement([r["ratios"] for r in out["processes"][w]]) for w in ways}
    out["wall_s"] = time.perf_counter() - t0
    path = write_results("pinning", out, per_host=True)
    for w in ways:
        a = out["agreement"][w]
        print(f"{w:>6}: two processes agree within +-10% on {a['within_10pct_median']:.0%} of networks (median pair), "
              f"{a['within_10pct_min']:.0%} (worst pair); references "
              + ", ".join(f"{r['reference_ms'] * 1000:.1f}" for r in out["processes"][w]) + " us")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
