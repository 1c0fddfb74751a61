"""Latency model accuracy on this host: `hwsearch latency-check` on the default space (3x32x32)
and the quickstart's (1x8x8), plus the time `hwsearch profile` takes on the quickstart space.

    python bench/latency_check.py [--n 50] [--cache DIR]

Writes bench/results/latency_check.json and prints a table. Uses a fresh latency cache (a temp
folder unless --cache), so every figure includes measuring from nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hwsearch(*args: str, env: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "search.cli", *args], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--cache", help="latency cache folder (default: a fresh temporary one)")
    args = ap.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="hwsearch-bench-")
    env = {**os.environ, "HWSEARCH_CACHE": cache}
    results = {"host": platform.processor() or platform.machine(), "cache": cache, "runs": []}
    from targets.profiled import host_name

    results["host"] = host_name()
    _, t_profile = hwsearch("profile", "--target", "local-cpu", "--spec", "examples/quickstart.yaml",
                            "--no-progress", env=env)
    results["profile_quickstart_s"] = round(t_profile, 1)
    for label, extra in [("default space, 3x32x32", []), ("quickstart space, 1x8x8", ["--spec", "examples/quickstart.yaml"])]:
        cmd = ["latency-check", "--target", "local-cpu", "--n", str(args.n), "--json", *extra]
        out, secs = hwsearch(*cmd, env=env)
        report = json.loads(out)
        report.update(label=label, command="hwsearch " + " ".join(cmd), wall_s=round(secs, 1))
        results["runs"].append(report)
    dest = ROOT / "bench" / "results" / "latency_check.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=1))
    print(f"host: {results['host']}; profiling the quickstart space: {t_profile:.0f} s")
    print(f"{'space':<26} {'n':>3} {'within 10%':>10} {'MAPE':>6} {'tau':>6} {'worst':>7} {'wall':>6}")
    for r in results["runs"]:
        print(f"{r['label']:<26} {r['n']:>3} {r['within_10pct']:>10.0%} {r['mape']:>6.1%} {r['kendall_tau']:>6.3f} "
              f"{r['worst'][0]['error']:>+7.1%} {r['wall_s']:>5.0f}s")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
