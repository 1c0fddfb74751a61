"""Export of the quickstart's Pareto front: wall time, and every card's checks.

    python bench/export.py [--run runs/quickstart] [--cache DIR]

Runs the quickstart search first when the run folder does not exist yet (with kept weights, the
default), then times ``hwsearch export RUN --pareto`` into a fresh folder, as a user would run
it. Reads every card and records its figures: onnxruntime fp32 and int8 accuracy against
torch's, measured against predicted latency of each network and of each file as shipped (input
adapter included), size on disk, and the CPU it was measured on. ``--cache`` with an empty folder
makes the search profile this host afresh, as a new user's first run does. Writes
``bench/results/export.<cpu-model>.json`` (one file per CPU model) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="the run to export (made if missing)")
    ap.add_argument("--cache", help="latency cache folder (default: the user's)")
    args = ap.parse_args()
    env = {**os.environ, **({"HWSEARCH_CACHE": args.cache} if args.cache else {})}
    run = ROOT / args.run
    cli = [sys.executable, "-m", "hwsearch.search.cli"]
    search_s = None
    if not (run / "study.journal").exists():
        t0 = time.perf_counter()
        subprocess.run([*cli, "run", "examples/quickstart.yaml", "--out", str(run), "--no-progress"], cwd=ROOT,
                       env=env, check=True)
        search_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="hwsearch-export-"))
    t0 = time.perf_counter()
    subprocess.run([*cli, "export", str(run), "--pareto", "--out", str(out), "--no-progress"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    export_s = time.perf_counter() - t0

    cards = [json.loads(p.read_text()) for p in sorted(out.glob("trial_*/card.json"))]
    rows = []
    for c in cards:
        acc, lat, size = c["accuracy"], c["latency"], c["size"]
        rows.append(
            {
                "trial": c["trial"],
                "candidate": c["candidate"],
                "accuracy_torch": acc["torch"],
                "fp32_minus_torch_points": (acc["model.onnx"] - acc["torch_float_activations"]) * 100,
                "int8_drop_points": acc["int8_drop_points"],
                **{
                    f"{k}_{n.split('.')[1]}": lat[n][k]
                    for n in ("model.onnx", "model.int8.onnx")
                    for k in ("predicted_ms", "measured_ms", "error", "with_input_adapter_ms")
                },
                **{
                    f"file_{k}_{n.split('.')[1]}": lat[n]["file"][k]
                    for n in ("model.onnx", "model.int8.onnx")
                    for k in ("predicted_ms", "measured_ms", "error")
                },
                "fp32_on_disk_kb": size["model.onnx"]["on_disk_kb"],
                "int8_on_disk_kb": size["model.int8.onnx"]["on_disk_kb"],
                "warnings": c["warnings"],
                "others_cpu": lat.get("beside", {}).get("others_cpu"),  # other processes' CPUs while timed
            }
        )
    worst_fp32 = max(abs(r["fp32_minus_torch_points"]) for r in rows)
    worst_int8 = max(r["int8_drop_points"] for r in rows)
    worst_latency = max(max(abs(r["error_onnx"]), abs(r["error_int8"])) for r in rows)
    file_errors = [r[f"file_error_{k}"] for r in rows for k in ("onnx", "int8") if r[f"file_error_{k}"] is not None]
    summary = {"models": len(rows), "export_s": export_s, "search_s": search_s, "cpus": os.cpu_count(),
               "host": cards[0]["latency"]["measured_on"] if cards else None,
               "fresh_cache": bool(args.cache) and search_s is not None,
               "worst_fp32_vs_torch_points": worst_fp32, "worst_int8_drop_points": worst_int8,
               "worst_latency_error": worst_latency,
               "files": len(file_errors), "files_within_10pct": sum(abs(e) <= 0.10 for e in file_errors),
               "worst_file_latency_error": max(map(abs, file_errors), default=None),
               "cards_with_warnings": sum(bool(r["warnings"]) for r in rows),
               "most_others_cpu": max((r["others_cpu"] for r in rows if r["others_cpu"] is not None), default=None)}
    dest = write_results("export", {"summary": summary, "models": rows, "out": str(out)}, per_host=True)

    print(f"{'trial':>5} {'torch':>7} {'fp32-torch':>10} {'int8 drop':>9}  {'fp32 pred/meas us':>18} "
          f"{'int8 pred/meas us':>18}  {'KB fp32/int8':>12}")
    for r in rows:
        print(
            f"{r['trial']:>5} {r['accuracy_torch']:>7.2%} {r['fp32_minus_torch_points']:>+10.2f} "
            f"{r['int8_drop_points']:>+9.2f}  "
            f"{r['predicted_ms_onnx'] * 1e3:>7.1f} /{r['measured_ms_onnx'] * 1e3:>6.1f} "
            f"({r['error_onnx']:+.0%})  {r['predicted_ms_int8'] * 1e3:>5.1f} /{r['measured_ms_int8'] * 1e3:>6.1f} "
            f"({r['error_int8']:+.0%})  {r['fp32_on_disk_kb']:>5.1f}/{r['int8_on_disk_kb']:.1f}  files as shipped: "
            + "  ".join(f"{r[f'file_predicted_ms_{k}'] * 1e3:.1f}/{r[f'file_measured_ms_{k}'] * 1e3:.1f} "
                        f"({r[f'file_error_{k}']:+.0%})" for k in ("onnx", "int8") if r[f"file_error_{k}"] is not None)
        )
    print(f"files as shipped (adapter included) within ±10% of their card's prediction: "
          f"{summary['files_within_10pct']} of {summary['files']}, on {summary['host']}")
    print(f"{len(rows)} models exported in {export_s:.1f}s; worst fp32-vs-torch {worst_fp32:.2f} points, "
          f"worst int8 drop {worst_int8:.2f} points, worst latency error {worst_latency:.1%}; written to {dest}")


if __name__ == "__main__":
    main()
