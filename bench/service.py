"""How long submitting and starting a job take: the local backend and Ray Jobs, on this host.

For each backend, ``--repeats`` jobs of the quickstart (2 trials, its spec otherwise unchanged) are
submitted in a fresh service root, one after the other, and timed:

- **submit**: the ``hwsearch submit`` command, from its start until it returns (the process
  start and its imports included, as a user waits for it);
- **running**: from the command's start until the job's table row says running (local: the
  supervisor started its worker; Ray: the cluster accepted the submission);
- **first output**: until the job's log holds the search's first line (the worker's Python started
  and ``hwsearch run`` began: its data and teacher come next);
- **succeeded**: until the job succeeded (its 2 trials included; this depends on the host's speed
  more than on the service).

Ray's head (started here on 127.0.0.1 with its dashboard, stopped at the end) is started once,
before any timing. Results: ``bench/results/service.json``.

    python bench/service.py [--repeats 3] [--backends local,ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, write_results

HWSEARCH = [sys.executable, "-m", "hwsearch.search.cli"]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_row(root: Path) -> dict:
    out = subprocess.run([*HWSEARCH, "jobs", "--json", "--root", str(root)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    rows: list[dict] = json.loads(out.stdout)
    return rows[-1]


def one_job(root: Path, address: str | None) -> dict:
    from hwsearch.search.service import JobStore

    extra = ["--address", address] if address else []
    t0 = time.perf_counter()
    subprocess.run([*HWSEARCH, "submit", "examples/quickstart.yaml", "--trials", "2", "--data-root", str(ROOT),
                    "--root", str(root), *extra], check=True, cwd=ROOT, capture_output=True)
    times = {"submit_s": time.perf_counter() - t0}
    store = JobStore(root)
    job_id = store.list()[-1].id
    while "running_s" not in times or "first_output_s" not in times or "succeeded_s" not in times:
        job = store.get(job_id)
        if address:  # Ray's state is mirrored when someone looks: this is what 'hwsearch jobs' does
            from hwsearch.search.service import synced_jobs

            job = next(j for j in synced_jobs(store) if j.id == job_id)
        now = time.perf_counter() - t0
        if job.state in ("running", "succeeded") and "running_s" not in times:
            times["running_s"] = now
        if "first_output_s" not in times and "hwsearch run " in _output(job):
            times["first_output_s"] = now
        if job.state == "succeeded":
            times["succeeded_s"] = now
        elif job.state in ("failed", "stopped"):
            raise RuntimeError(f"job {job_id} {job.state}: {job.message}\n{_output(job)[-2000:]}")
        time.sleep(0.05)
    return times


def _output(job) -> str:
    if job.backend == "ray":
        from hwsearch.search.service import ray_logs

        return str(ray_logs(job))
    try:
        return job.log_path.read_text(errors="replace")
    except OSError:
        return ""


def main() -> None:
    from hwsearch.targets import host_name

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="local,ray")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hwsearch-service-bench-"))
    os.environ["HWSEARCH_CACHE"] = str(work / "cache")  # the same cache for every job: its first job fills it
    results: dict = {"host": host_name(), "repeats": args.repeats, "job": "examples/quickstart.yaml --trials 2",
                     "backends": {}}
    head = None
    try:
        for backend in args.backends.split(","):
            address = None
            if backend == "ray":
                port, dashboard = free_port(), free_port()
                head = work / "ray"
                env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                       "RAY_USAGE_STATS_ENABLED": "0"}
                t0 = time.perf_counter()
                subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port",
                                str(dashboard), "--num-cpus", "2", "--disable-usage-stats", "--temp-dir", str(head)],
                               check=True, capture_output=True, env=env)
                results["ray_head_start_s"] = time.perf_counter() - t0
                address = f"http://127.0.0.1:{dashboard}"
            root = work / f"service-{backend}"
            runs = []
            for i in range(args.repeats):
                runs.append(one_job(root, address))
                print(f"{backend} job {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
            results["backends"][backend] = {
                "runs": runs, "median": {k: float(np.median([r[k] for r in runs])) for k in runs[0]}}
            if backend == "local":
                subprocess.run(["pkill", "-f", str(root)], check=False)  # the supervisor submit started
    finally:
        if head is not None:  # this head's processes only (they all name its temp dir), not every Ray here
            subprocess.run(["pkill", "-f", str(head)], check=False)
            time.sleep(5)
            subprocess.run(["pkill", "-9", "-f", str(head)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    dest = write_results("service", results)
    for backend, r in results["backends"].items():
        m = r["median"]
        print(f"{backend:<6} submit {m['submit_s']:.2f}s, running {m['running_s']:.2f}s, first output "
              f"{m['first_output_s']:.2f}s, succeeded {m['succeeded_s']:.1f}s (medians of {args.repeats})")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
