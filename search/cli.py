"""The ``hwsearch`` command. Heavy libraries load inside the commands that need them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _fail(lines: list[str] | str) -> int:
    for line in [lines] if isinstance(lines, str) else lines:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load(spec_path: str):
    from search.spec import load_spec

    return load_spec(spec_path)


def cmd_validate(args) -> int:
    from search.feasibility import survey

    spec = _load(args.spec)
    print(f"spec {args.spec}: valid")
    print(f"  space: {spec.space.describe_size()}")
    report = survey(spec, samples=args.samples)
    print(report.text())
    if report.unreachable:
        return _fail(report.unreachable)
    return 0


def cmd_run(args) -> int:
    from search.runner import run_search

    spec = _load(args.spec)
    if args.workers:
        spec.search.workers = args.workers
    run_dir = Path(args.out) if args.out else Path("runs") / spec.name
    run_search(spec, run_dir, trials=args.trials, progress=not args.no_progress)
    print(f"results in {run_dir}; see them with: hwsearch pareto {run_dir}")
    return 0


def cmd_pareto(args) -> int:
    from search.results import RunResults

    try:
        res = RunResults(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    rows = res.pareto()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0
    counts = res.counts()
    print(f"{args.run_dir}: {sum(counts.values())} trials ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
          f"{len(rows)} feasible Pareto-optimal")
    if res.budget:
        print("budget: " + ", ".join(f"{k} <= {v:g}" for k, v in res.budget.items()))
    print(f"{'trial':>5}  {'accuracy':>8}  {'latency_ms':>10}  {'size_kb':>8}  {'peak_kb':>8}  candidate")
    for r in rows:
        print(f"{r.number:>5}  {r.accuracy:>8.2%}  {r.latency_ms:>10.4f}  {r.size_kb:>8.2f}  "
              f"{r.peak_memory_kb:>8.2f}  {r.candidate}")
    return 0


def cmd_schema(args) -> int:
    from search.spec import Spec

    print(json.dumps(Spec.model_json_schema(), indent=1))
    return 0


def cmd_targets(args) -> int:
    from targets import list_targets

    for name, desc in list_targets().items():
        print(f"{name:<16} {desc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwsearch", description=(
        "Hardware-aware search over MobileNet-style architectures, structured pruning, bit widths "
        "and distillation, for a named device."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a spec; print the space size, feasible share, cheapest cost")
    v.add_argument("spec")
    v.add_argument("--samples", type=int, default=100, help="candidates sampled to estimate the feasible share")
    v.set_defaults(fn=cmd_validate)

    r = sub.add_parser("run", help="run (or continue) the search of a spec")
    r.add_argument("spec")
    r.add_argument("--trials", type=int, help="total trials (default: the spec's)")
    r.add_argument("--out", help="run directory (default: runs/<name>)")
    r.add_argument("--workers", type=int, help="candidates trained at once (default: the spec's)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(fn=cmd_run)

    pa = sub.add_parser("pareto", help="print the feasible Pareto-optimal candidates of a run")
    pa.add_argument("run_dir")
    pa.add_argument("--json", action="store_true")
    pa.set_defaults(fn=cmd_pareto)

    s = sub.add_parser("spec-schema", help="print the spec's JSON schema")
    s.set_defaults(fn=cmd_schema)

    t = sub.add_parser("targets", help="list the registered targets")
    t.set_defaults(fn=cmd_targets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from search.datasets import DatasetError
    from search.spec import SpecError
    from search.teacher import TeacherError
    from targets.profile import ProfileError

    try:
        return args.fn(args)
    except SpecError as e:
        return _fail(e.problems)
    except (DatasetError, TeacherError, ProfileError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
