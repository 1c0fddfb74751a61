"""Why isolated layer times, summed, miss a network's latency on a noisy host: the figures.

    python bench/latency_why.py [--networks 12] [--seconds 20]

Three measurements, on this host, in fresh processes:

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

Writes ``bench/results/latency_why.json`` and prints a summary.
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


def isolated_vs_network(scale: str, n: int) -> dict:
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

    m, rng, rows = Meter(), np.random.default_rng(0), []
    (overhead,) = m.readings([session(identity_model((1, 3, 32, 32)).SerializeToString())])
    for p in plans(scale, n):
        graphs = [network_model(p, random_network_weights(p, rng))]
        graphs += [layer_model(layer, random_weights(layer, rng)) for layer in p.layers]
        sessions = [session(g.SerializeToString()) for g in graphs]
        from hwsearch.targets import random_feed

        feeds = [random_feed(sessions[0])] + [random_feed(s, layer_shapes(layer)[0])
                                              for s, layer in zip(sessions[1:], p.layers)]
        net, *layers = [r.ratio for r in m.readings(sessions, feeds)]
        summed = sum(x - overhead.ratio for x in layers)
        rows.append({"candidate": p.candidate.to_string(), "network_us": net * m.reference_ms * 1000,
                     "summed_alone_us": summed * m.reference_ms * 1000, "ratio": summed / net,
                     "layers": len(layers), "overhead_share": overhead.ratio / net})
    r = np.array([x["ratio"] for x in rows])
    return {"overhead_us": overhead.ratio * m.reference_ms * 1000, "reference_ms": m.reference_ms,
            "ratio_median": float(np.median(r)), "ratio_min": float(r.min()), "ratio_max": float(r.max()),
            "within_10pct_without_calibration": float(np.mean(np.abs(r - 1) <= 0.10)), "networks": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--child", nargs=3, metavar=("WAY", "SCALE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_times(args.child[0], args.child[1], int(args.child[2]))))
        return
    import onnxruntime

    from hwsearch.targets import host_name

    out: dict = {"host": host_name(), "onnxruntime": onnxruntime.__version__, "noise": noise(args.seconds)}
    repeat = {}
    for way in ("old", "meter"):
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", way, "3x32x32", "10"], check=True,
                                          capture_output=True, text=True).stdout) for _ in range(3)]
        a = np.array(runs)
        spread = a.max(axis=0) / a.min(axis=0) - 1
        repeat[way] = {"processes": 3, "networks": 10, "max_over_min_median": float(np.median(spread)),
                       "max_over_min_worst": float(spread.max()), "values": runs}
    out["three_processes"] = repeat
    out["isolated_vs_network"] = {scale: isolated_vs_network(scale, args.networks) for scale in SCALES}
    dest = ROOT / "bench" / "results" / "latency_why.json"
    dest.write_text(json.dumps(out, indent=1))
    nz = out["noise"]
    print(f"host: {out['host']}; reference in 10 ms windows: median {nz['median_over_p5']:.2f}x the fastest 5%, "
          f"{nz['share_within_5pct_of_p5']:.0%} of windows within 5% of them")
    for way, r in repeat.items():
        print(
            f"same 10 networks in 3 processes, {way:>5}: slowest / fastest process, "
            f"median {r['max_over_min_median']:+.1%}, "
            f"worst {r['max_over_min_worst']:+.1%}"
        )
    for scale, r in out["isolated_vs_network"].items():
        print(f"{scale:>8}: sum of isolated layers (less overhead {r['overhead_us']:.1f} us) / network: median "
              f"{r['ratio_median']:.2f}, range {r['ratio_min']:.2f}-{r['ratio_max']:.2f}, "
              f"{r['within_10pct_without_calibration']:.0%} within 10%")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
