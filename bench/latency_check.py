"""Latency model accuracy on this host, as a matrix: three input scales x threads 1 and 2.

    python bench/latency_check.py [--n 50] [--cells q1,q2,d1,d2,w1,w2] [--busy]

Each cell starts from a fresh latency cache (a new temporary folder) and runs, in fresh
processes as a user would:

1. ``hwsearch profile --target local-cpu --threads T`` on the cell's space: the reference network,
   every layer's grid, 100 calibration networks and the profile's self-check (timed: the
   profiling time);
2. ``hwsearch latency-check --target local-cpu --threads T --n 50`` in another process: 50
   random networks of another seed, predicted and measured end to end;
3. the same latency-check once more, in a third process: how often two measurements of the same
   network agree within 10% (``repeat``) bounds what any latency model can reach on this host.

Scales: the quickstart space (1x8x8, 10 classes), the default space (3x32x32, 10 classes), and
the default space on 3x96x96 with 2 classes (a visual-wake-words-sized task, networks of
milliseconds). ``--busy`` runs a CPU-bound neighbour process (``while True: pass``) beside every
step. Results, with the CPU model and the onnxruntime version, go to
``bench/results/latency_check.<cpu-model>.json`` (``latency_check_busy.<cpu-model>.json`` with
``--busy``), one file per CPU model; finished cells are kept, so an interrupted run resumes with the
cells it had not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELLS = {
    "q": ("quickstart space, 1x8x8", ["--spec", "examples/quickstart.yaml"]),
    "d": ("default space, 3x32x32", ["--input", "3,32,32", "--classes", "10"]),
    "w": ("default space, 3x96x96, 2 classes", ["--input", "3,96,96", "--classes", "2"]),
}


def hwsearch(*args: str, env: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hwsearch.search.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"hwsearch {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - t0


@contextmanager
def neighbour(busy: bool):
    """A CPU-bound process beside the measurement, when asked."""
    if not busy:
        yield
        return
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        p.kill()
        p.wait()


def run_cell(key: str, threads: int, n: int, busy: bool) -> dict:
    label, space = CELLS[key]
    cache = tempfile.mkdtemp(prefix=f"hwsearch-bench-{key}{threads}-")
    env = {**os.environ, "HWSEARCH_CACHE": cache}
    with neighbour(busy):
        out, t_profile = hwsearch("profile", "--target", "local-cpu", "--threads", str(threads), *space,
                                  "--no-progress", env=env)
        cmd = ["latency-check", "--target", "local-cpu", "--threads", str(threads), *space, "--n", str(n), "--json"]
        report, t_check = hwsearch(*cmd, env=env)
        again, _ = hwsearch(*cmd, env=env)  # the same networks, measured in another fresh process
    report, again = json.loads(report), json.loads(again)
    repeat = [a["measured_ms"] / b["measured_ms"] - 1 for a, b in zip(again["rows"], report["rows"])]
    for row, second in zip(report["rows"], again["rows"]):
        row["measured_second_ms"] = second["measured_ms"]  # the third process's measurement
    report["rows"] = [
        {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in report["rows"]
    ]
    profile = json.loads((Path(cache) / f"local-cpu-{threads}t.json").read_text())
    lines = out.strip().splitlines()
    said = [line for line in lines[:-3] if line.startswith("warning")] + lines[-3:]  # its warnings and its end
    return {"cell": f"{key}{threads}", "label": label, "threads": threads, "busy_neighbour": busy,
            "profile_command": f"hwsearch profile --target local-cpu --threads {threads} {' '.join(space)}",
            "profile_s": round(t_profile, 1), "profile_log": said,
            "self_check": profile["checks"][-1] if profile.get("checks") else None,
            "reference": profile.get("reference"), "layers_measured": len(profile["entries"]),
            "command": "hwsearch " + " ".join(cmd), "check_s": round(t_check, 1), **report,
            "repeat": {"within_10pct": sum(abs(e) <= 0.10 for e in repeat) / len(repeat),
                       "median_abs": sorted(abs(e) for e in repeat)[len(repeat) // 2],
                       "second_check": {k: again[k] for k in ("within_10pct", "mape", "kendall_tau", "host_drift",
                                                              "busy", "host", "warnings")}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--cells", default="q1,q2,d1,d2,w1,w2", help="cells to run: scale (q, d, w) + threads")
    ap.add_argument("--busy", action="store_true", help="run a CPU-bound neighbour process beside each step")
    ap.add_argument("--again", action="store_true", help="measure cells that are already in the results again")
    args = ap.parse_args()
    import onnxruntime

    sys.path.insert(0, str(ROOT))
    from common import host_results

    from hwsearch.targets import host_name

    dest = host_results("latency_check_busy" if args.busy else "latency_check")
    results = json.loads(dest.read_text()) if dest.exists() else {}
    if (
        results.get("host") != host_name()
        or results.get("onnxruntime") != onnxruntime.__version__
        or "cells" not in results
    ):
        results = {"host": host_name(), "onnxruntime": onnxruntime.__version__, "cores": os.cpu_count(), "cells": {}}
    for cell in args.cells.split(","):
        if cell in results["cells"] and not args.again:
            continue
        print(f"cell {cell} ...", flush=True)
        results["cells"][cell] = run_cell(cell[0], int(cell[1:]), args.n, args.busy)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(results, indent=1))
    print(f"host: {results['host']}, onnxruntime {results['onnxruntime']}{', busy neighbour' if args.busy else ''}")
    print(f"{'cell':<36} {'thr':>3} {'within 10%':>10} {'MAPE':>6} {'tau':>6} {'drift':>6} {'busy':>5} "
          f"{'others':>6} {'warned':>6} {'raw w10':>8} {'profile':>8}")
    for r in results["cells"].values():
        print(
            f"{r['label']:<36} {r['threads']:>3} {r['within_10pct']:>10.0%} {r['mape']:>6.1%} {r['kendall_tau']:>6.3f} "
            f"{r['host_drift']:>6.2f} {r['busy']:>5.2f} {others(r):>6} {len(r['warnings']):>6} "
            f"{r['raw']['within_10pct']:>8.0%} {r['profile_s']:>7.0f}s"
        )
    print(f"wrote {dest}")
    print("\n" + markdown(results))


def others(r: dict) -> str:
    """The CPUs other processes and the hypervisor took beside a cell's check, on average ('-': unknown)."""
    host = r["host"]
    return f"{host['others_cpu'] + host['steal_cpu']:.2f}" if "others_cpu" in host else "-"


def markdown(results: dict) -> str:
    """The results as the README's table."""
    lines = ["| space | threads | within ±10% | mean abs. error | Kendall's tau | worst | host busy (check) | "
             "within ±10% at the moment's speed | two measurements agree ±10% | profiling time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["cells"].values():
        lines.append(f"| {r['label']} | {r['threads']} | **{r['within_10pct']:.0%}** | {r['mape']:.1%} | "
                     f"**{r['kendall_tau']:.3f}** | {r['worst'][0]['error']:+.1%} | {r['busy']:.2f}x | "
                     f"{r['raw']['within_10pct']:.0%} | {r['repeat']['within_10pct']:.0%} | "
                     f"{r['profile_s'] / 60:.1f} min |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
