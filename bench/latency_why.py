"""Why isolated layer times, summed, miss a network's latency on a noisy host: the figures.

    python bench/latency_why.py [--networks 12] [--seconds 20] [--sections noise,processes,isolated,chain]

Four measurements, on this host, in fresh processes:

1. **The host's noise.** The reference network (``hwsearch.targets._meter``) timed in 10 ms windows for
   ``--seconds``: the median window against the fastest 5%, and the share of windows within 5%
   of those.
2. **One network, three processes, the old way and the new.** The same networks timed alone
   (a median of runs, as profiles were measured before the meter) in three processes, against
   the same networks measured by the meter (ratios to the reference) in three processes: how far
   apart the processes land.
3. **Isolated layers against their network, per input scale.** For ``--networks`` random networks
   of the quickstart space (1x8x8), the default space (3x32x32) and the default space at
   3x96x96: each layer timed alone, less the per-call overhead, summed, against the whole
   network, all measured by one meter: the ratio (sum / network) and its spread.
4. **One block alone against the same block in a chain, at 1 and 2 threads.** A network whose
   stage is one residual block against the same network with K identical blocks: ``(t_K - t_1) /
   (K - 1)`` is what one block costs *inside* a network, against the block timed alone less the
   per-call overhead (as a profile's entry is measured). Per input resolution, width and
   precision. Until 2026-12-07 a session's workers slept after every run at 2 threads
   (``force_spinning_stop``), so a block timed alone paid a worker's wake-up that a block inside a
   network, its workers still spinning from the layer before, did not: this measured how much.
   hwsearch's sessions now keep spinning (see ``session``), and the AMD EPYC results on file are
   from such sessions (2026-12-07 15:55 UTC, through busy stretches: see each section's
   ``host_noise``).

Writes ``bench/results/latency_why.<cpu-model>.json`` (sections run before, on the same CPU
model, are kept) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALES = {"1x8x8": ("quickstart", (1, 8, 8), 10), "3x32x32": ("default", (3, 32, 32), 10),
          "3x96x96": ("default", (3, 96, 96), 2)}


def space_of(name: str):
    from hwsearch.search.spec import load_spec
    from hwsearch.spaces import SpaceSpec

    return load_spec(ROOT / "examples" / "quickstart.yaml").space if name == "quickstart" else SpaceSpec()


def plans(scale: str, n: int, seed: int = 5):
    from hwsearch.targets import sample_plans

    space, shape, classes = SCALES[scale]
    return sample_plans(space_of(space), shape, classes, n, seed, spread=True)


def child_times(way: str, scale: str, n: int) -> list[float]:
    """In this (child) process: the networks' times, alone (``old``) or by the meter (``meter``)."""
    from hwsearch.targets import Meter, network_model, random_feed, random_network_weights, session, time_session

    rng = np.random.default_rng(0)
    models = [network_model(p, random_network_weights(p, rng)).SerializeToString() for p in plans(scale, n)]
    if way == "old":
        out = []
        for data in models:
            s = session(data)
            out.append(time_session(s, random_feed(s)).mean_ms)
        return out
    m = Meter()
    return [r.ratio for r in m.readings([session(d) for d in models])]


def noise(seconds: float) -> dict:
    from hwsearch.targets import random_feed, reference_model, session

    s = session(reference_model().SerializeToString())
    f = random_feed(s)
    for _ in range(50):
        s.run(None, f)
    windows = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ts, start = [], time.perf_counter_ns()
        while time.perf_counter_ns() - start < 10_000_000:
            t0 = time.perf_counter_ns()
            s.run(None, f)
            ts.append(time.perf_counter_ns() - t0)
        windows.append(float(np.median(ts)) / 1e6)
    w = np.asarray(windows)
    p5 = float(np.percentile(w, 5))
    return {"windows": len(w), "p5_ms": p5, "median_ms": float(np.median(w)), "p90_ms": float(np.percentile(w, 90)),
            "median_over_p5": float(np.median(w) / p5), "share_within_5pct_of_p5": float(np.mean(w <= 1.05 * p5))}


def isolated_vs_network(scale: str, n: int, threads: int = 1) -> dict:
    """Section 3 at one thread count; also each layer as copies side by side (``layer_model`` with
    :data:`BRANCH_K` weights): ``(t_K - t_1) / (K - 1)`` its cost once the runtime is started."""
    from hwsearch.targets import (
        Meter,
        identity_model,
        layer_model,
        layer_shapes,
        network_model,
        random_network_weights,
        random_weights,
        session,
    )

    m, rng, rows = Meter(threads), np.random.default_rng(0), []
    (overhead,) = m.readings([session(identity_model((1, 3, 32, 32)).SerializeToString(), threads)])
    for p in plans(scale, n):
        graphs = [network_model(p, random_network_weights(p, rng))]
        graphs += [layer_model(layer, random_weights(layer, rng)) for layer in p.layers]
        graphs += [layer_model(layer, [random_weights(layer, rng) for _ in range(BRANCH_K)]) for layer in p.layers]
        sessions = [session(g.SerializeToString(), threads) for g in graphs]
        from hwsearch.targets import random_feed

        feeds = [random_feed(sessions[0])] + [random_feed(s, layer_shapes(layer)[0])
                                              for s, layer in zip(sessions[1:], [*p.layers, *p.layers])]
        net, *layers = [r.ratio for r in m.readings(sessions, feeds)]
        alone, copies = layers[:len(p.layers)], layers[len(p.layers):]
        summed = sum(x - overhead.ratio for x in alone)
        each = [(k - a) / (BRANCH_K - 1) for a, k in zip(alone, copies)]
        started = overhead.ratio + sum(each)
        tighter = overhead.ratio + sum(min(a - overhead.ratio, s) for a, s in zip(alone, each))
        rows.append({"candidate": p.candidate.to_string(), "network_us": net * m.reference_ms * 1000,
                     "summed_alone_us": summed * m.reference_ms * 1000, "ratio": summed / net,
                     "summed_started_us": started * m.reference_ms * 1000, "ratio_started": started / net,
                     "ratio_tighter": tighter / net,
                     "layers_us": [{"alone_less_overhead": (a - overhead.ratio) * m.reference_ms * 1000,
                                    "started": s * m.reference_ms * 1000} for a, s in zip(alone, each)],
                     "layers": len(p.layers), "overhead_share": overhead.ratio / net})
    r = np.array([x["ratio"] for x in rows])
    rs = np.array([x["ratio_started"] for x in rows])
    rt = np.array([x["ratio_tighter"] for x in rows])
    return {"threads": threads, "overhead_us": overhead.ratio * m.reference_ms * 1000, "reference_ms": m.reference_ms,
            "ratio_median": float(np.median(r)), "ratio_min": float(r.min()), "ratio_max": float(r.max()),
            "within_10pct_without_calibration": float(np.mean(np.abs(r - 1) <= 0.10)),
            "started": {"k": BRANCH_K, "ratio_median": float(np.median(rs)), "ratio_min": float(rs.min()),
                        "ratio_max": float(rs.max()), "within_10pct_without_calibration":
                        float(np.mean(np.abs(rs - 1) <= 0.10))},
            "tighter": {"ratio_median": float(np.median(rt)), "ratio_min": float(rt.min()),
                        "ratio_max": float(rt.max()),
                        "within_10pct_without_calibration": float(np.mean(np.abs(rt - 1) <= 0.10))},
            "host_noise": m.host(), "networks": rows}


BRANCH_K = 4  # copies of a layer side by side (section 3)
CHAIN_K = 5  # blocks in the chain
# (resolution, block width, expand ratio); each at fp32 and at w8a8 (int8)
CHAIN_CASES = [(8, 16, 3), (8, 64, 3), (16, 16, 3), (16, 48, 6), (32, 16, 3), (32, 32, 6)]


def chain_vs_alone(threads: int) -> dict:
    """Section 4 at one thread count: per case, one block alone against its marginal cost in a chain."""
    from hwsearch.spaces import Candidate, build_plan
    from hwsearch.targets import (
        Meter,
        identity_model,
        layer_model,
        layer_shapes,
        network_model,
        random_feed,
        random_network_weights,
        random_weights,
        session,
    )

    m, rng, rows = Meter(threads=threads), np.random.default_rng(0), []
    ident = session(identity_model((1, 3, 32, 32)).SerializeToString(), threads)
    for hw, width, expand in CHAIN_CASES:
        for bits in ("", "_w8a8"):
            one, chain = (build_plan(Candidate.from_string(f"c{width}:ir_r{k}_k3_e{expand}_c{width}_s1_re{bits}"),
                                     (3, hw, hw), 10) for k in (1, CHAIN_K))
            block = one.layers[1]
            graphs = [network_model(p, random_network_weights(p, rng)) for p in (one, chain)]
            graphs.append(layer_model(block, random_weights(block, rng)))
            sessions = [session(g.SerializeToString(), threads) for g in graphs] + [ident]
            feeds = [random_feed(s) for s in sessions[:2]] + [random_feed(sessions[2], layer_shapes(block)[0]),
                                                               random_feed(ident)]
            t1, tk, alone, overhead = (r.ratio * m.reference_ms * 1000 for r in m.readings(sessions, feeds))
            marginal = (tk - t1) / (CHAIN_K - 1)
            rows.append({"resolution": hw, "width": width, "expand": expand, "precision": "int8" if bits else "fp32",
                         "network_1_us": t1, f"network_{CHAIN_K}_us": tk, "alone_us": alone, "overhead_us": overhead,
                         "in_chain_us": marginal, "alone_less_overhead_us": alone - overhead,
                         "excess_us": alone - overhead - marginal, "ratio": (alone - overhead) / marginal})
    return {"threads": threads, "k": CHAIN_K, "reference_ms": m.reference_ms, "host_noise": m.host(), "cases": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--sections", default="noise,processes,isolated,chain", help="which measurements to run")
    ap.add_argument("--child", nargs=3, metavar=("WAY", "SCALE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_times(args.child[0], args.child[1], int(args.child[2]))))
        return
    import onnxruntime
    from common import host_results

    from hwsearch.targets import host_name

    sections = set(args.sections.split(","))
    dest = host_results("latency_why")
    out: dict = json.loads(dest.read_text()) if dest.exists() else {}
    if out.get("onnxruntime") != onnxruntime.__version__:
        out = {}
    out.update(host=host_name(), onnxruntime=onnxruntime.__version__)
    if "noise" in sections:
        out["noise"] = noise(args.seconds)
    if "processes" in sections:
        repeat = {}
        for way in ("old", "meter"):
            runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", way, "3x32x32", "10"], check=True,
                                              capture_output=True, text=True).stdout) for _ in range(3)]
            a = np.array(runs)
            spread = a.max(axis=0) / a.min(axis=0) - 1
            repeat[way] = {"processes": 3, "networks": 10, "max_over_min_median": float(np.median(spread)),
                           "max_over_min_worst": float(spread.max()), "values": runs}
        out["three_processes"] = repeat
    if "isolated" in sections:
        out["isolated_vs_network"] = {scale: isolated_vs_network(scale, args.networks) for scale in SCALES}
        out["isolated_vs_network_2_threads"] = {scale: isolated_vs_network(scale, args.networks, 2)
                                                for scale in SCALES}
    if "chain" in sections:
        out["chain_vs_alone"] = {str(t): chain_vs_alone(t) for t in (1, 2)}
    dest.write_text(json.dumps(out, indent=1))
    print(f"host: {out['host']}, onnxruntime {out['onnxruntime']}")
    if nz := out.get("noise"):
        print(f"reference in 10 ms windows: median {nz['median_over_p5']:.2f}x the fastest 5%, "
              f"{nz['share_within_5pct_of_p5']:.0%} of windows within 5% of them")
    for way, r in out.get("three_processes", {}).items():
        print(
            f"same 10 networks in 3 processes, {way:>5}: slowest / fastest process, "
            f"median {r['max_over_min_median']:+.1%}, "
            f"worst {r['max_over_min_worst']:+.1%}"
        )
    for key in ("isolated_vs_network", "isolated_vs_network_2_threads"):
        for scale, r in out.get(key, {}).items():
            print(f"{scale:>8}, {r.get('threads', 1)} thread(s): sum of isolated layers (less overhead "
                  f"{r['overhead_us']:.1f} us) / network: median {r['ratio_median']:.2f}, range {r['ratio_min']:.2f}-"
                  f"{r['ratio_max']:.2f}, {r['within_10pct_without_calibration']:.0%} within 10%")
            if s := r.get("started"):
                print(f"{'':>8}  sum of layers started ({s['k']} copies side by side) + overhead / network: median "
                      f"{s['ratio_median']:.2f}, range {s['ratio_min']:.2f}-{s['ratio_max']:.2f}, "
                      f"{s['within_10pct_without_calibration']:.0%} within 10%")
            if s := r.get("tighter"):
                print(f"{'':>8}  sum of the tighter of the two per layer + overhead / network: median "
                      f"{s['ratio_median']:.2f}, range {s['ratio_min']:.2f}-{s['ratio_max']:.2f}, "
                      f"{s['within_10pct_without_calibration']:.0%} within 10%")
    for threads, r in out.get("chain_vs_alone", {}).items():
        print(f"one block alone (less overhead) against its cost in a chain of {r['k']}, {threads} thread(s):")
        for c in r["cases"]:
            print(f"  {c['resolution']:>2}x{c['resolution']:<2} c{c['width']:<3} e{c['expand']} {c['precision']:>4}: "
                  f"alone {c['alone_less_overhead_us']:7.1f} us, in the chain {c['in_chain_us']:7.1f} us "
                  f"(x{c['ratio']:.2f}, excess {c['excess_us']:+.1f} us; overhead {c['overhead_us']:.1f} us)")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
