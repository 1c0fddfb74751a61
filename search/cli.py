"""The ``hwsearch`` command. Heavy libraries load inside the commands that need them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["build_parser", "main"]

EXIT_BAD_INPUT = 2


APP_TOKEN_ENV = "HWSEARCH_APP_TOKEN"


def _fail(lines: list[str] | str) -> int:
    """Print each problem on one line of stderr; the exit code of bad input."""
    for line in [lines] if isinstance(lines, str) else lines:
        print(f"error: {' '.join(str(line).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load(spec_path: str):
    from hwsearch.search.spec import load_spec

    return load_spec(spec_path)


def cmd_validate(args) -> int:
    from hwsearch.search.engine._feasibility import survey
    from hwsearch.search.training._datasets import load_dataset

    # Each check prints what it found as it passes; "valid" is said only once every one has.
    spec = _load(args.spec)
    print(f"spec {args.spec}:")
    print(f"  fields: ok; space: {spec.space.describe_size()}", flush=True)
    data = load_dataset(spec.dataset, spec.data_seed)
    print(f"  dataset: {len(data.y_train)} training and {len(data.y_val)} validation images of "
          f"{'x'.join(map(str, data.input_shape))}, {data.num_classes} classes", flush=True)
    if spec.teacher.onnx and spec.space.distill:
        from hwsearch.search.training._teacher import check_teacher

        acc = check_teacher(spec.teacher, data)
        t = spec.teacher
        print(f"  teacher: {t.onnx} ({t.layout}, pixels 0..{t.pixel_max:g}, {t.output}) gives {data.num_classes} "
              f"scores per image; {acc:.1%} on the validation split", flush=True)
    report = survey(spec, samples=args.samples, data=data)
    print(report.text())
    if report.unreachable:
        return _fail(report.unreachable)
    print(f"spec {args.spec}: valid")
    return 0


def cmd_run(args) -> int:
    from hwsearch.search.engine import run_search

    spec = _load(args.spec)
    s = spec.search
    if args.workers:
        s.workers = args.workers
    if args.backend:
        s.backend = args.backend
    if args.address:
        s.backend, s.address = "ray", args.address
    if args.early_stopping is not None:
        s.early_stopping.enabled = args.early_stopping
    if s.device == "cuda":
        from hwsearch.search.training._evaluate import resolve_device

        try:
            resolve_device(s.device)
        except RuntimeError as e:
            return _fail(f"search.device: {e}; set it to 'auto' or 'cpu' on this machine")
    run_dir = Path(args.out) if args.out else Path("runs") / spec.name
    try:
        run_search(spec, run_dir, trials=args.trials, progress=not args.no_progress)
    except ConnectionError as e:  # ray.init could not reach --address
        return _fail([f"cannot join the Ray cluster at {s.address}: {e}",
                      "is 'ray start --head' running there? A cluster with token authentication needs "
                      "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) here too"])
    print(f"results in {run_dir}; see them with: hwsearch pareto {run_dir}")
    return 0


def cmd_pareto(args) -> int:
    from hwsearch.search.outputs._results import RunResults

    try:
        res = RunResults(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    if args.target:
        target = _target_or_fail(args.target)
        if isinstance(target, int):
            return target
        rows = res.pareto_on(args.target)
    else:
        rows = res.pareto()
    final_front = [] if args.target else res.final_pareto()
    if args.json:
        if final_front:
            print(json.dumps({"search": [r.to_dict() for r in rows], "final": [r.to_dict() for r in final_front]},
                             indent=1))
            return 0
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0
    counts = res.counts()
    print(f"{args.run_dir}: {sum(counts.values())} trials ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})")
    original = res.study.user_attrs.get("target", "?")
    from hwsearch.targets import estimate_band

    if args.target:
        kind = "measured" if target.measured else "ESTIMATED from spec sheets, not measured"
        if band := estimate_band(args.target):
            kind += f"; {band}"
        print(
            f"re-priced on {target.name} ({kind}) instead of {original}, without retraining: "
            f"{len(rows)} Pareto-optimal trained candidates, {sum(r.state != 'infeasible' for r in rows)} within budget"
        )
    else:
        estimated = res.target_estimated
        band = estimate_band(original) if estimated else None
        kind = "" if estimated is None else (" (ESTIMATED from spec sheets, not measured"
                                             + (f"; {band})" if band else ")") if estimated else " (measured)")
        print(f"on {original}{kind}: {len(rows)} feasible Pareto-optimal")
    if res.budget:
        print("budget: " + ", ".join(f"{k} <= {v:g}" for k, v in res.budget.items()))
    print(f"{'trial':>5}  {'accuracy':>8}  {'latency_ms':>10}  {'size_kb':>8}  {'peak_kb':>8}  "
          + ("budget  " if args.target else "") + "candidate")
    for r in rows:
        fits = ("fits    " if r.state != "infeasible" else "over    ") if args.target else ""
        print(f"{r.number:>5}  {r.accuracy:>8.2%}  {r.latency_ms:>10.4f}  {r.size_kb:>8.2f}  "
              f"{r.peak_memory_kb:>8.2f}  {fits}{r.candidate}")
    if final_front:
        finals = res.finals
        fid = next(iter(finals.values())).fidelity.describe()
        print(f"\nthe front by final accuracy ({len(finals)} trial(s) trained at the final fidelity, {fid}):")
        print(f"{'trial':>5}  {'final':>8}  {'search':>8}  {'latency_ms':>10}  {'size_kb':>8}  {'peak_kb':>8}  "
              "candidate")
        for r in final_front:
            print(f"{r.number:>5}  {r.final_accuracy:>8.2%}  {r.accuracy:>8.2%}  {r.latency_ms:>10.4f}  "
                  f"{r.size_kb:>8.2f}  {r.peak_memory_kb:>8.2f}  {r.candidate}")
    return 0


def cmd_train(args) -> int:
    from tqdm import tqdm

    from hwsearch.search.engine import train_final
    from hwsearch.search.outputs._results import RunResults
    from hwsearch.search.study import Fidelity

    fidelity = Fidelity(args.epochs, args.finetune_epochs, args.limit)
    if args.pareto:
        try:
            numbers = [r.number for r in RunResults(args.run_dir).pareto()]
        except (FileNotFoundError, ValueError) as e:
            return _fail(str(e))
        if not numbers:
            return _fail(f"run {args.run_dir} has no feasible trained trial yet: nothing to train")
    else:
        numbers = list(dict.fromkeys(args.trial))
    t0 = time.perf_counter()
    out = train_final(args.run_dir, numbers, fidelity, workers=args.workers, backend=args.backend,
                      address=args.address, progress=not args.no_progress, log=tqdm.write)
    if out.skipped:
        print(f"already trained at {fidelity.describe()}: trial(s) {', '.join(map(str, out.skipped))}")
    print(f"{'trial':>5}  {'search':>7}  {'final':>7}  {'images/s':>8}  candidate")
    for n in numbers:
        r = out.records.get(n)
        if r is not None:
            search = f"{r.search_accuracy:.2%}" if r.search_accuracy is not None else "-"
            print(f"{n:>5}  {search:>7}  {r.accuracy:>7.2%}  {r.images_per_s:>8.0f}  {r.candidate}")
    for n, why in out.failed.items():
        print(f"trial {n}: failed: {why.splitlines()[0]}", file=sys.stderr)
    print(f"final training done in {time.perf_counter() - t0:.0f}s; the front by final accuracy: "
          f"hwsearch pareto {args.run_dir}")
    return 1 if out.failed else 0


def _target_or_fail(name: str):
    """The target, or the exit code after printing why it cannot be used."""
    from hwsearch.targets import get_target

    try:
        return get_target(name)
    except KeyError as e:
        return _fail(str(e.args[0]))


def _space_and_input(args):
    """The space, input shape and class count to work on: a spec's (its dataset gives the input
    unless --input/--classes say), or the default space on 3x32x32 inputs with 10 classes."""
    from hwsearch.spaces import SpaceSpec

    config, shape, classes = SpaceSpec(), None, None
    if args.spec:
        spec = _load(args.spec)
        config = spec.space
        if not args.input:
            from hwsearch.search.training._datasets import load_dataset

            data = load_dataset(spec.dataset, spec.data_seed)
            shape, classes = data.input_shape, data.num_classes
    if args.input:
        try:
            c, h, w = (int(v) for v in args.input.split(","))
        except ValueError:
            raise SystemExit(_fail(f"--input: expected C,H,W such as 3,32,32, got {args.input!r}")) from None
        shape = (c, h, w)
    shape = shape or (3, 32, 32)
    classes = args.classes or classes or 10
    return config, shape, classes


def _bar(items, desc: str, total: int):
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=desc.rstrip("s"), dynamic_ncols=True, file=sys.stderr)


def cmd_profile(args) -> int:
    import onnxruntime as ort

    from hwsearch.targets._profile_format import Profile
    from hwsearch.targets._profile_targets import LocalCpuTarget, new_profile
    from hwsearch.targets._profiling import profile_space

    if args.import_:
        from hwsearch.targets._bundle import import_timings

        if not args.out:
            return _fail("--import needs --out: the profile file to write, e.g. --out device.json")
        import_timings(Path(args.import_), Path(args.out), name=args.name, kind=args.kind)
        return 0
    config, shape, classes = _space_and_input(args)
    if args.bundle:
        from hwsearch.targets._bundle import write_bundle

        try:
            write_bundle(Path(args.bundle), config, shape, classes, args.threads, args.provider, args.networks,
                         args.every_width)
        except ValueError as e:
            return _fail(str(e))
        return 0
    if args.provider not in ort.get_available_providers():
        return _fail(f"--provider {args.provider} is not available in this onnxruntime "
                     f"({ort.__version__}); available: {', '.join(ort.get_available_providers())}")
    if args.target == "local-cpu" and not args.out:
        if args.provider != "CPUExecutionProvider":
            return _fail("local-cpu is the CPU provider; name another target to profile a GPU or NPU")
        tgt = LocalCpuTarget(threads=args.threads)
        profile, out = tgt.profile, tgt.path
        assert profile is not None  # local-cpu always prices from a profile
    else:
        out = Path(args.out or f"{args.target}.json")
        if out.exists():
            profile = Profile.load(out)
            d = profile.device
            if (d.name, d.threads, d.provider, d.measured) != (args.target, args.threads, args.provider, True):
                return _fail(f"{out} holds a profile of {d.name!r} ({d.threads} thread(s), {d.provider}, "
                             f"measured={d.measured}); give another --out, or the same settings to resume it")
            print(f"resuming {out}: {len(profile.entries)} layers and "
                  f"{len(profile.calibration.samples)} networks already measured")
        else:
            profile = new_profile(args.target, args.threads, args.provider, args.kind)
    print(
        f"profiling {profile.device.name} on {profile.device.host} with onnxruntime {profile.device.runtime_version}, "
        f"{args.provider}, {args.threads} thread(s); input {'x'.join(map(str, shape))}, {classes} classes"
    )
    print(f"  space: {config.describe_size()}")
    t0 = time.perf_counter()
    profile_space(profile, config, shape, classes, out, args.threads, args.provider, networks=args.networks,
                  every_width=args.every_width, progress=None if args.no_progress else _bar)
    print(f"wrote {out} ({len(profile.entries)} layer entries) in {time.perf_counter() - t0:.0f}s")
    if args.target != "local-cpu" or args.out:
        print(f"use it with 'target: {out}' in a spec, or check it with: hwsearch latency-check --target {out}")
    return 0


def _print_figures(report, as_json: bool, header: str) -> bool:
    """Print a latency check's report: one JSON object (True: nothing else to print), or the
    header and its three figures."""
    if as_json:
        print(json.dumps(report, indent=1))
        return True
    print(header)
    print(f"  within +-10%:        {report['within_10pct']:.0%}")
    print(f"  mean abs. error:     {report['mape']:.1%}")
    print(f"  Kendall's tau:       {report['kendall_tau']:.3f}")
    return False


def _check_timings(target, args) -> int:
    """latency-check --timings: the bundle's check networks, measured on the device, compared here."""
    from hwsearch.targets._bundle import check_timings

    report = check_timings(target, Path(args.timings))
    if _print_figures(report, args.json, f"{target.name}: {report['n']} check networks of the bundle, predicted "
                      f"here vs measured on {report['host']} ({args.timings})"):
        return 0
    print(f"  device speed:        {report['host_drift']:.2f}x the profile's time for the reference network "
          "while the check networks were measured")
    print("  worst cases:")
    for w in report["worst"]:
        print(f"    {w['error']:+7.1%}  predicted {w['predicted_ms']:.4f} ms, measured {w['measured_ms']:.4f} ms  "
              f"{w['candidate']}")
    return 0


def cmd_latency_check(args) -> int:
    from hwsearch.targets._profiling import AGAIN_AGREE, check_latency

    if args.threads and args.target != "local-cpu":
        return _fail(
            "--threads applies to local-cpu; a profile file is checked at the thread count it was measured with"
        )
    if args.threads and args.threads != 1:
        from hwsearch.targets._profile_targets import LocalCpuTarget

        target = LocalCpuTarget(threads=args.threads)
    else:
        target = _target_or_fail(args.target)
    if isinstance(target, int):
        return target
    if args.timings:
        return _check_timings(target, args)
    config, shape, classes = _space_and_input(args)
    elsewhere = target.runtime().elsewhere()
    if elsewhere:
        print(f"warning: {target.name}: {elsewhere}; what is measured here says how this host runs the networks, "
              f"not how {target.name} does (run latency-check on that device)", file=sys.stderr)
    bar = None if args.json or args.no_progress else _bar
    target.ensure_calibrated(config, shape, classes, progress=bar)
    report = check_latency(target, config, shape, classes, n=args.n, seed=args.seed, progress=bar)
    if _print_figures(report, args.json, f"{target.name}: {report['n']} random networks of the space "
                      f"({'x'.join(map(str, shape))} input), predicted vs measured end to end on this host "
                      f"({report['threads']} thread(s), {report['provider']})"):
        return 0
    raw = report["raw"]
    print(f"  quiet-host speed:    {report['host_drift']:.2f}x the profile's time for the reference network")
    print(f"  busy now:            runs take {report['busy']:.2f}x their quiet time (median / fastest 5% of the "
          "reference's bursts)")
    if "others_cpu" in (host := report["host"]):
        print(f"  beside it:           other processes took {host['others_cpu']:.2f} of the host's {host['cpus']:.0f} "
              f"CPUs on average, the hypervisor's other guests {host['steal_cpu']:.2f}")
    print(
        f"  at this moment's typical speed: {raw['within_10pct']:.0%} within +-10%, mean abs. error {raw['mape']:.1%}"
    )
    again = report["misses_again"]
    if again["misses"]:
        print(f"  misses measured again: {again['confirmed']} of {again['misses']} read within {AGAIN_AGREE:.0%} of "
              f"their first reading (the model's error); with the second readings {again['within_10pct_again']:.0%} "
              "within +-10%")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print("  worst cases:")
    for w in report["worst"]:
        print(f"    {w['error']:+7.1%}  predicted {w['predicted_ms']:.4f} ms, measured {w['measured_ms']:.4f} ms  "
              f"{w['candidate']}")
    return 0


def _export_summary(report) -> list[str]:
    c = report.card
    acc, lat = c["accuracy"], c["latency"]
    lines = [f"trial {c['trial']} -> {report.out_dir}",
             f"  accuracy  search {acc['search']:.2%} | onnxruntime fp32 {acc['model.onnx']:.2%}, "
             f"int8 {acc['model.int8.onnx']:.2%} ({0.0 - acc['int8_drop_points']:+.2f} points)"]
    for name in ("model.onnx", "model.int8.onnx"):
        f = lat[name]
        file = f.get("file") or {}
        shipped = (f"; file {file['predicted_ms'] * 1000:.1f} us predicted, {file['measured_ms'] * 1000:.1f} measured "
                   f"({file['error']:+.0%})" if file.get("predicted_ms") else "")
        lines.append(
            f"  {name:<16}network {f['predicted_ms'] * 1000:6.1f} us predicted, {f['measured_ms'] * 1000:6.1f} "
            f"measured ({f['error']:+.0%}){shipped}; {c['size'][name]['on_disk_kb']:.1f} KB"
        )
    if not lat["target_is_this_host"]:
        lines.append(f"  latency measured on this host, not on {c['target']['name']}")
    lines += [f"  warning: {w}" for w in report.warnings]
    return lines


def cmd_export(args) -> int:
    from tqdm import tqdm

    from hwsearch.search.outputs import export_pareto, export_trial

    t0 = time.perf_counter()
    if args.pareto:  # an ExportError reaches main, which says it
        reports = export_pareto(args.run_dir, args.out, progress=not args.no_progress, log=tqdm.write,
                                on_each=lambda r: tqdm.write("\n".join(_export_summary(r))))
    else:
        reports = [export_trial(args.run_dir, args.trial, args.out, log=print)]
        print("\n".join(_export_summary(reports[0])))
    warned = sum(bool(r.warnings) for r in reports)
    print(f"exported {len(reports)} model(s) in {time.perf_counter() - t0:.1f}s"
          + (f"; {warned} with warnings (see above and each card.json)" if warned else "; every check passed"))
    return 0


def cmd_estimate(args) -> int:
    from hwsearch.targets import estimate_profiles

    estimate_profiles(Path(args.out))
    return 0


def cmd_extend(args) -> int:
    from hwsearch.targets import Profile, fit_extension

    src = Path(args.profile)
    profile = Profile.load(src)
    if profile.roofline is not None:
        return _fail(f"{src} is an estimate: its roofline prices every layer already")
    try:
        profile.extension = fit_extension(profile.entries)
    except ValueError as e:
        return _fail(f"{src}: {e}")
    out = Path(args.out) if args.out else src
    profile.save(out)
    ext = profile.extension
    print(f"wrote {out}: {len(profile.entries)} entries; {ext.describe()}; "
          f"{ext.within_25pct:.0%} of those within 25%, mean error {ext.mape:.0%}")
    return 0


def cmd_app(args) -> int:
    """Become the Streamlit server of app.py (exec: signals reach the server, no child is left). With
    a token, Streamlit listens on 127.0.0.1 behind the token gate (:mod:`hwsearch.search.service._gate`)."""
    import os
    import socket
    import subprocess
    from importlib.resources import files

    from hwsearch.search.service import is_loopback

    app = Path(str(files("hwsearch") / "app.py"))
    if not app.is_file():  # hwsearch imported from a zip or an incomplete install
        return _fail(f"{app} is missing: reinstall hwsearch ('pip install hwsearch' or 'pip install -e .')")
    token = args.token or os.environ.get(APP_TOKEN_ENV, "")
    if not is_loopback(args.address) and not token:
        return _fail(f"serving the app on {args.address} lets other machines read every run and submit searches: "
                     f"give it a token (--token, or ${APP_TOKEN_ENV}), or serve on 127.0.0.1")
    if args.run_dirs:
        os.environ["HWSEARCH_APP_RUNS"] = json.dumps(args.run_dirs)

    def streamlit(address: str, port: int) -> list[str]:
        return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", address,
                "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
                "--browser.gatherUsageStats", "false"]

    if not token:
        print(f"hwsearch app on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
        os.execv(sys.executable, streamlit(args.address, args.port))
    from hwsearch.search.service import serve_gate

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        upstream = s.getsockname()[1]
    server = subprocess.Popen(streamlit("127.0.0.1", upstream), stdin=subprocess.DEVNULL)
    print(f"hwsearch app on http://{args.address}:{args.port}, behind its token: open "
          f"http://HOST:{args.port}/?token=... once (Ctrl-C stops it)", flush=True)
    try:
        serve_gate(args.address, args.port, upstream, token)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


def cmd_schema(args) -> int:
    from hwsearch.search.spec import Spec

    print(json.dumps(Spec.model_json_schema(), indent=1))
    return 0


def cmd_targets(args) -> int:
    from hwsearch.targets import describe_check, get_target, profile_warnings, target_names
    from hwsearch.targets._profiling import contention

    print(f"{'target':<20} {'how':<10} {'kind':<5} {'layers':>7} {'calibrated on':>14}  {'self-check':<26}  device")
    notes = []
    for name in target_names():
        t = get_target(name)
        p = t.profile
        if p is None:  # a registered target that prices without a profile
            print(f"{name:<20} {'measured' if t.measured else 'ESTIMATED':<10} {'':<5} {'-':>7} {'-':>14}  "
                  f"{'none':<26}  {t.description}")
            continue
        how = "measured" if p.device.measured else "ESTIMATED"
        cal = f"{p.calibration.fitted_on} networks" if p.calibration.fitted_on else "-"
        c = p.checks[-1] if p.checks else None
        check = (f"{'passed' if c.passed else 'FAILED'} {c.within_10pct:.0%} <=10%, tau {c.kendall_tau:.2f}"
                 if c else "none")
        layers = "any" if p.roofline else str(len(p.entries))
        print(f"{name:<20} {how:<10} {p.device.kind:<5} {layers:>7} {cal:>14}  {check:<26}  {t.description}")
        notes += [f"warning: {name}: {warning}" for warning in profile_warnings(p)]
        if c and contention(c.neighbours, c.cpus):
            notes.append(f"warning: {name}: {describe_check(c)}")
        if p.extension:
            notes.append(f"{name}: {p.extension.describe()}")
    for note in notes:
        print(f"\n{note}")
    print("\nEstimated profiles are derived from public spec-sheet figures (listed in each file), not measured:\n"
          "profile the real device with 'hwsearch profile' for latencies you can trust.")
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
    r.add_argument("--backend", choices=["local", "ray"],
                   help="local: this process or a process pool; ray: Ray actors (default: the spec's)")
    r.add_argument("--address", help="join this Ray cluster (HOST:PORT of 'ray start --head'); implies --backend ray")
    r.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=None,
                   help="stop candidates that trail at a rung (MO-ASHA; default: the spec's)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(fn=cmd_run)

    pa = sub.add_parser("pareto", help="print the feasible Pareto-optimal candidates of a run")
    pa.add_argument("run_dir")
    pa.add_argument("--json", action="store_true")
    pa.add_argument("--target", help="re-price the trained candidates on another target (name or profile .json)")
    pa.set_defaults(fn=cmd_pareto)

    def space_args(c) -> None:
        c.add_argument("--spec", help="the spec whose space to use (default: the default space)")
        c.add_argument("--input", help="input shape C,H,W (default: the spec dataset's, else 3,32,32)")
        c.add_argument("--classes", type=int, help="number of classes (default: the dataset's, else 10)")
        c.add_argument("--no-progress", action="store_true", help="no progress bars")

    pr = sub.add_parser("profile", help=(
        "measure a device profile of a space with onnxruntime, on this host; or write a bundle that measures it on "
        "another device with numpy and onnxruntime only (--bundle), and build the profile from its timings (--import)"))
    how = pr.add_mutually_exclusive_group(required=True)
    how.add_argument("--target", help="the device's name (local-cpu: this host's cached profile)")
    how.add_argument("--bundle", metavar="DIR", help=(
        "write the space's layers and networks as ONNX files, and measure.py, into DIR: copy DIR to the device and "
        "run python3 DIR/measure.py there"))
    how.add_argument("--import", dest="import_", metavar="TIMINGS", help=(
        "build a profile from a bundle's timings.json measured on the device (next to its manifest.json); with --out"))
    space_args(pr)
    pr.add_argument("--out", help="profile file to write or resume (default: NAME.json; local-cpu: its cache)")
    pr.add_argument("--name", help="--import: the device's name in the profile (default: the --out file's stem)")
    pr.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    pr.add_argument("--provider", default="CPUExecutionProvider",
                    help="onnxruntime execution provider, e.g. CUDAExecutionProvider on a Jetson")
    pr.add_argument("--kind", choices=["cpu", "gpu", "npu", "mcu"], help="device kind (default from the provider)")
    pr.add_argument("--networks", type=int, default=100, help="whole networks measured for the calibration")
    pr.add_argument("--every-width", action="store_true", help="measure every pruned width, interpolate none")
    pr.set_defaults(fn=cmd_profile)

    lc = sub.add_parser("latency-check", help="predicted vs measured latency of random whole networks, on this host")
    lc.add_argument("--target", default="local-cpu")
    space_args(lc)
    lc.add_argument("--n", type=int, default=50, help="random networks to measure (default 50)")
    lc.add_argument("--seed", type=int, default=1, help="sampling seed (0 is the calibration's own)")
    lc.add_argument("--threads", type=int, help="local-cpu only: intra-op threads (default 1)")
    lc.add_argument("--json", action="store_true", help="print one JSON object")
    lc.add_argument("--timings", metavar="TIMINGS", help=(
        "compare with a device bundle's timings.json (its check networks, measured on the device) instead of "
        "measuring here"))
    lc.set_defaults(fn=cmd_latency_check)

    tr = sub.add_parser("train", help=(
        "train chosen candidates of a finished search at the final fidelity (all the data, the full schedule); "
        "resumable"))
    tr.add_argument("run_dir")
    chosen = tr.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--trial", type=int, nargs="+", help="the trial number(s) to train")
    chosen.add_argument("--pareto", action="store_true", help="every feasible Pareto-optimal trial of the search")
    tr.add_argument("--epochs", type=int, default=30, help="dense epochs (default 30)")
    tr.add_argument("--finetune-epochs", type=int, default=3,
                    help="quantization-aware fine-tuning epochs after pruning (default 3)")
    tr.add_argument("--limit", type=int, help="images taken from the dataset (default: all of them)")
    tr.add_argument("--workers", type=int, help="candidates trained at once (default: the spec's)")
    tr.add_argument("--backend", choices=["local", "ray"], help="where candidates train (default: the spec's)")
    tr.add_argument("--address", help="join this Ray cluster (HOST:PORT); implies --backend ray")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)

    ex = sub.add_parser("export", help="export trained candidates as ONNX (fp32 and int8) with a verified model card")
    ex.add_argument("run_dir")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="the trial number to export")
    which.add_argument("--pareto", action="store_true", help="every feasible Pareto-optimal trial")
    ex.add_argument("--out", help="output folder (default: RUN_DIR/export; with --pareto, one trial_N folder each)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(fn=cmd_export)

    ap = sub.add_parser("app", help="browse, compare and export the candidates of runs in a web app (Streamlit)")
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                    help="runs to offer (a run directory, or a storage URL[#STUDY]); default: those under ./runs")
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--address", default="127.0.0.1", help=(
        "address to listen on (default: this machine only); any other needs a token"))
    ap.add_argument("--token", help=f"the token every request must carry (default: ${APP_TOKEN_ENV}); needed beyond "
                                    "127.0.0.1")
    ap.set_defaults(fn=cmd_app)

    s = sub.add_parser("spec-schema", help="print the spec's JSON schema")
    s.set_defaults(fn=cmd_schema)

    t = sub.add_parser("targets", help="list the targets: measured or estimated, and what they hold")
    t.set_defaults(fn=cmd_targets)

    es = sub.add_parser("estimate", help=(
        "write the roofline-estimated profiles of the devices hwsearch knows (a Raspberry Pi 4, a phone core, a "
        "Jetson, a microcontroller): their figures and sources, which price any layer, input and class count"))
    es.add_argument("--out", required=True, help="folder to write DEVICE.json files into")
    es.set_defaults(fn=cmd_estimate)

    ex = sub.add_parser("extend", help=(
        "fit a model on a measured profile's entries that prices the layers it lacks (other input sizes, spaces), "
        "with its error measured on held-out entries; written into the profile"))
    ex.add_argument("profile", help="a measured profile .json")
    ex.add_argument("--out", help="write the extended profile here instead of in place")
    ex.set_defaults(fn=cmd_extend)
    from hwsearch.search.service._commands import add_commands

    add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hwsearch.search.errors import SearchError
    from hwsearch.search.spec import SpecError
    from hwsearch.targets import TargetError

    def filled(text: str) -> str:  # advice naming "--spec SPEC" names the spec this command was given
        spec = getattr(args, "spec", None)
        return text.replace("--spec SPEC", f"--spec {spec}") if spec else text

    try:
        return args.fn(args)
    except SpecError as e:
        return _fail([filled(str(p)) for p in e.problems])
    except (SearchError, TargetError) as e:
        return _fail(filled(str(e)))
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
