"""A job's worker process: ``hwsearch run`` on the job's spec, then its exit record.

    python -m hwsearch.search.service._worker --job-dir DIR --run-dir RUN [--trials N]

Started by the supervisor as a session leader (its process group is the job's), or by Ray as a
job's entrypoint. SIGINT, and SIGTERM (how Ray stops a job), end the search as Ctrl-C does
(finished trials kept, exit code 130); the record ``DIR/exit.json``
(``returncode``, ``finished_at``) is written atomically once the search has returned, so a
record's presence means the worker ended on its own terms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwsearch-worker")
    ap.add_argument("--job-dir", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--trials", type=int)
    args = ap.parse_args(argv)
    from hwsearch.search.cli import main as hwsearch

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    job_dir = Path(args.job_dir)
    cmd = ["run", str(job_dir / "spec.yaml"), "--out", args.run_dir, "--no-progress"]
    if args.trials:
        cmd += ["--trials", str(args.trials)]
    print(f"hwsearch {' '.join(cmd)}", flush=True)
    try:
        rc = hwsearch(cmd)
    except KeyboardInterrupt:  # a stop that arrived outside the search's own handler
        rc = 130
    except Exception as e:  # recorded, so the job fails with the reason rather than being retried
        print(f"error: {type(e).__name__}: {e}", flush=True)
        rc = 1
    sys.stdout.flush()
    tmp = job_dir / ".exit.json.tmp"
    tmp.write_text(json.dumps({"returncode": rc, "finished_at": time.time(), "pid": os.getpid()}))
    tmp.replace(job_dir / "exit.json")
    return rc


if __name__ == "__main__":
    sys.exit(main())
