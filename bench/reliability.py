"""No finished trial is lost: the long version of the suite's kill test.

    python bench/reliability.py [--kills 50] [--seed 0] [--forked]

Runs ``hwsearch run`` on the suite's cheapest real search (tiny networks, one dense epoch on 48
digits) and SIGKILLs it ``--kills`` times, each time after 1 to 4 trial starts or completions
(random, seeded) plus a random fraction of a trial's time, resuming it each time. After every kill
it checks that every trial seen before is still there with the same candidate, every completed one
with the same values, and that trial numbers run 0..n-1, each used once; at the end, that the run
completed exactly the trials it was asked for, and that each trial cut by a kill was recorded as
failed with the reason and its candidate run again. (The checks are
``tests/search/test_reliability.py``'s: :func:`kill_and_resume`.)

Every killed process is a fresh interpreter (``python -m hwsearch.search.cli run``); the suite's version,
which must stay short, forks most of them from a process that has done the imports
(``--forked`` does that here too).

Writes bench/results/reliability.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, write_results

from tests.search.test_reliability import kill_and_resume, kill_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forked", action="store_true",
                    help="fork the killed processes from one that has done the imports, as the suite does")
    args = ap.parse_args()
    trials = args.kills * 3 // 2 + 10  # about one trial completes per kill: the last kill lands mid-search
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # measured layer latencies go to a cache of this run's own, not the user's
        os.environ["HWSEARCH_CACHE"] = str(tmp / "cache")
        spec = tmp / "spec.yaml"
        spec.write_text(yaml.safe_dump(kill_spec(trials)))
        figures = kill_and_resume(tmp / "run", spec, trials, args.kills, args.seed,
                                  fresh_every=0 if args.forked else 1)
    results = {"kills_asked": args.kills, "seed": args.seed, "trials_asked": trials,
               "killed_processes": "forked after the imports" if args.forked else "fresh interpreters",
               **figures, "wall_s": round(time.perf_counter() - t0, 1)}
    dest = write_results("reliability", results)
    print(f"{figures['kills']} kills survived ({figures['in_flight_at_kill']} mid-trial); "
          f"{figures['completed']} trials completed of {trials} asked, {figures['interrupted']} cut by a kill "
          f"and run again; torn records dropped on resume: {figures['torn_records_dropped']}; "
          f"{results['wall_s']} s -> {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
