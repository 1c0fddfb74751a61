"""The service's commands: ``hwsearch submit | jobs | logs | stop | resume | service``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_ROOT_ENV = "HWSEARCH_SERVICE_ROOT"


def default_root() -> Path:
    """``$HWSEARCH_SERVICE_ROOT``, else ``~/.hwsearch/service``."""
    return Path(os.environ.get(DEFAULT_ROOT_ENV) or Path.home() / ".hwsearch" / "service")


def _store(args: argparse.Namespace) -> Any:
    from hwsearch.search.service import JobStore

    return JobStore(Path(args.root) if args.root else default_root())


def _data_roots(args: argparse.Namespace, root: Path) -> list[str]:
    from hwsearch.search.service import read_config, write_config

    if getattr(args, "data_root", None):
        return list(write_config(root, data_roots=[str(Path(d).resolve()) for d in args.data_root])["data_roots"])
    roots = read_config(root)["data_roots"]
    if not roots:  # first use: the folder it was started from
        roots = write_config(root, data_roots=[str(Path.cwd().resolve())])["data_roots"]
    return list(roots)


def _storage(args: argparse.Namespace, root: Path) -> None:
    """Save ``--storage`` (checked: the database must answer) as the root's setting."""
    from hwsearch.search.service import write_config

    url = args.storage
    if not url:
        return
    import optuna

    try:
        optuna.storages.RDBStorage(url)  # creates Optuna's tables on first use
    except Exception as e:  # SQLAlchemy's errors for a bad URL, a missing driver, an unreachable server
        from hwsearch.search.cli import _fail

        raise SystemExit(_fail([f"--storage {url}: cannot open the database ({type(e).__name__}: "
                                f"{str(e).splitlines()[0]})", "nothing was queued or changed"])) from None
    write_config(root, storage=url)


def cmd_submit(args: argparse.Namespace) -> int:
    from hwsearch.search.cli import _fail
    from hwsearch.search.service import SubmitError, read_spec, start_supervisor, submit

    store = _store(args)
    if args.address:
        from hwsearch.search.service._ray import client

        client(args.address)  # an unreachable cluster is said before anything is queued
    _storage(args, store.root)
    try:
        spec = read_spec(args.spec)
        job = submit(store, spec, _data_roots(args, store.root), args.trials,
                     backend="ray" if args.address else "local", address=args.address)
    except SubmitError as e:
        return _fail([f"{args.spec}: {p}" for p in e.problems] + ["nothing was queued"])
    if args.address:
        from hwsearch.search.service._ray import submit_to_ray

        job = submit_to_ray(store, job)
        print(f"job {job.id} submitted to Ray at {args.address} as {job.submission_id}: {job.name}, run directory "
              f"{job.run_dir}")
        print(f"  follow it with: hwsearch logs {job.id} --follow (or 'ray job logs {job.submission_id}')")
        return 0
    started = False if args.no_start else start_supervisor(store.root)
    print(f"job {job.id} queued: {job.name}, run directory {job.run_dir}")
    print(f"  {'started the service for ' + str(store.root) if started else 'service root ' + str(store.root)}; "
          f"follow it with: hwsearch logs {job.id} --follow")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from hwsearch.search.service import job_progress, synced_jobs

    store = _store(args)
    jobs = synced_jobs(store, warn=lambda msg: print(msg, file=sys.stderr))
    rows: list[dict[str, Any]] = []
    for j in jobs:
        p = job_progress(j)
        rows.append({"id": j.id, "name": j.name, "state": j.state, "trials_done": p.done, "trials": j.trials,
                     "feasible": p.feasible, "failed": p.failed, "best_accuracy": p.best_accuracy,
                     "submitted": j.when("created_at"), "run_dir": j.run_dir, "message": j.message})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no jobs in {store.root}; submit one with: hwsearch submit SPEC")
        return 0
    print(f"{'id':>4}  {'name':<18} {'state':<10} {'trials':>9} {'feasible':>8} {'failed':>6} {'best acc':>8}  "
          f"{'submitted':<19}  message")
    for r in rows:
        asked = r["trials"] if r["trials"] else "spec"
        best = f"{r['best_accuracy']:.3f}" if r["best_accuracy"] is not None else "-"
        print(f"{r['id']:>4}  {r['name'][:18]:<18} {r['state']:<10} {str(r['trials_done']) + '/' + str(asked):>9} "
              f"{r['feasible']:>8} {r['failed']:>6} {best:>8}  {r['submitted']:<19}  {r['message']}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from hwsearch.search.service import FINISHED

    store = _store(args)
    job = store.get(args.job)
    if job.backend == "ray":
        return _ray_logs(store, job, args.follow)
    pos = 0
    while True:
        try:
            with job.log_path.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
            pos += len(chunk)
        if not args.follow or (not chunk and store.get(job.id).state in FINISHED):
            return 0
        time.sleep(0.5)


def _ray_logs(store: Any, job: Any, follow: bool) -> int:
    """A Ray job's output, from its cluster; with ``follow``, the new part every half second."""
    from hwsearch.search.service import FINISHED
    from hwsearch.search.service._ray import logs, sync

    shown = 0
    while True:
        text = logs(job)
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        if not follow:
            return 0
        job = sync(store, store.get(job.id))
        if job.state in FINISHED:
            sys.stdout.write(logs(job)[shown:])
            return 0
        time.sleep(0.5)


def cmd_stop(args: argparse.Namespace) -> int:
    from hwsearch.search.service import stop_job

    job = stop_job(_store(args), args.job)
    if job.state == "running":
        print(f"job {job.id} stopping: the trials in flight end, finished ones are kept; 'hwsearch resume {job.id}' "
              "continues it")
    else:
        print(f"job {job.id} {job.state}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from hwsearch.search.service import resume_job

    job, started = resume_job(_store(args), args.job)
    if job.backend == "ray":
        print(f"job {job.id} submitted to Ray again as {job.submission_id}: it continues {job.run_dir}")
    else:
        print(f"job {job.id} queued again: it continues {job.run_dir}{' (service started)' if started else ''}")
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from hwsearch.search.service import Supervisor, write_config

    store = _store(args)
    if args.concurrency:
        write_config(store.root, concurrency=args.concurrency)
    _data_roots(args, store.root)
    _storage(args, store.root)
    return Supervisor(store, args.concurrency).serve(until_idle=args.until_idle)


def add_commands(sub: Any) -> None:
    """The service's subcommands, on the ``hwsearch`` parser's subparsers."""
    def root(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help=f"the service's folder (default: ${DEFAULT_ROOT_ENV}, else ~/.hwsearch/service)")

    def storage(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", metavar="URL", help=(
            "keep every job's study in this database, e.g. postgresql://USER@HOST/DB (saved; default: each "
            "job's run directory); the app and 'hwsearch jobs' read it from there"))

    s = sub.add_parser("submit", help="queue a search of a spec on the service (started if it is not running)")
    s.add_argument("spec")
    s.add_argument("--trials", type=int, help="total trials (default: the spec's)")
    s.add_argument("--data-root", action="append", metavar="DIR",
                   help="folders a submitted spec may read (repeatable; saved; default: the current folder)")
    s.add_argument("--no-start", action="store_true", help="only queue: do not start the service")
    s.add_argument("--address", metavar="URL", help=(
        "run it on a Ray cluster through its Job Submission API: the head's dashboard, e.g. http://HEAD:8265 "
        "(hwsearch installed there, the service root on a file system the head shares)"))
    storage(s)
    root(s)
    s.set_defaults(fn=cmd_submit)
    j = sub.add_parser("jobs", help="the service's jobs: state, trials done, feasible, failed, best accuracy")
    j.add_argument("--json", action="store_true")
    root(j)
    j.set_defaults(fn=cmd_jobs)
    lg = sub.add_parser("logs", help="a job's output")
    lg.add_argument("job")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    root(lg)
    lg.set_defaults(fn=cmd_logs)
    st = sub.add_parser("stop", help="stop a job (finished trials are kept; 'resume' continues it)")
    st.add_argument("job")
    root(st)
    st.set_defaults(fn=cmd_stop)
    rs = sub.add_parser("resume", help="queue a stopped or failed job again; it continues its run directory")
    rs.add_argument("job")
    root(rs)
    rs.set_defaults(fn=cmd_resume)
    sv = sub.add_parser("service", help="run the job supervisor in the foreground (submit starts one if needed)")
    sv.add_argument("--concurrency", type=int, help="jobs run at once (saved; default 1)")
    sv.add_argument("--data-root", action="append", metavar="DIR", help="folders a submitted spec may read (saved)")
    sv.add_argument("--until-idle", action="store_true", help="exit once nothing is queued or running")
    storage(sv)
    root(sv)
    sv.set_defaults(fn=cmd_service)
