"""How long the app takes to draw each page of a 2,000-trial run (goal: under 2 s per page).

    python bench/app_render.py [--trials 2000] [--repeats 3] [--no-browser]

The run is synthetic, written as a search writes it (an Optuna journal with the same attributes):
candidates sampled at random from the quickstart space and priced with the shipped x86-epyc-1t
profile (real costs, per-layer breakdowns included); accuracies a smooth function of size plus
noise; over-budget trials where the quickstart's budget says, about 7% stopped early and 3% failed
among the rest, each with a 10-epoch training curve.

Two measurements:

1. **Script time, per page** (Streamlit's ``AppTest``: reading, computing, building the figures
   and tables; what the server does before the browser draws). *Cold*: the first draw after the
   app's caches were cleared, so the study is read and everything is computed. *Warm*: the page
   drawn again (a click, a page switch), from the caches keyed on the journal's modification time.
   Median of ``--repeats``.
2. **In a browser** (Debian's chromium via Playwright, if installed): ``hwsearch app`` on the run;
   the first load until the overview is drawn, a click on "Pareto explorer" until Plotly has drawn
   every point of the chart, a click back to the overview; on the first visit after the server
   started (it reads the run then), and on a second visit. For scale, the load of a bare
   Streamlit page (one word) in the same browser.

Writes bench/results/app_render.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from common import ROOT, TARGET, quickstart_spec, write_results

PAGES = ("Overview", "Pareto explorer", "Candidate", "Compare")
WHAT_IF = "rpi4-a72"
CHROMIUM = Path("/usr/bin/chromium")


def synthetic_run(run_dir: Path, trials: int, seed: int = 0) -> dict[str, int]:
    """Write a finished run of ``trials`` trials to ``run_dir``; returns its counts by status."""
    import numpy as np
    import optuna
    from optuna.trial import TrialState, create_trial

    from hwsearch.search.study import Status, TrialRecord, storage_for
    from hwsearch.spaces import build_plan, space
    from hwsearch.targets import get_target

    spec = quickstart_spec("synthetic")
    rng = np.random.default_rng(seed)
    target = get_target(TARGET)
    proposer = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    limits = spec.budget.limits()
    made, counts = [], {}
    for _ in range(trials):
        cand = space(proposer.ask(), spec.space)
        plan = build_plan(cand, (1, 8, 8), 10)
        cost = target.price(plan)
        priced = TrialRecord(candidate=cand.to_string(), cost=cost.to_dict(), params_count=plan.params,
                             latency_ms=cost.latency_ms, size_kb=cost.size_kb, peak_memory_kb=cost.peak_memory_kb)
        constraints = {m: cost.metric(m) - limit for m, limit in limits.items()}
        acc = float(np.clip(0.99 - 0.25 * math.exp(-cost.size_kb / 4) - rng.gamma(1.5, 0.01), 0.1, 0.995))
        curve = ([{"phase": "dense", "epoch": e, "loss": 2.3 * 0.6**e, "val_accuracy": acc * (1 - 0.5**e)}
                  for e in range(1, 9)]
                 + [{"phase": "finetune", "epoch": e, "loss": 0.2, "val_accuracy": acc} for e in (1, 2)])
        u = rng.random()
        if any(v > 0 for v in constraints.values()):
            over = ", ".join(m for m, v in constraints.items() if v > 0)
            record = replace(priced, status=Status.INFEASIBLE, infeasible_reason=f"over budget: {over}",
                             timings={"price_s": 0.003})
            trial = create_trial(values=[0.0, cost.latency_ms, cost.size_kb], user_attrs=record.attrs(),
                                 constraints=constraints)
        elif u < 0.03:
            record = replace(priced, status=Status.FAILED, failure_reason="TrialFailed: the loss became nan at epoch 3")
            trial = create_trial(state=TrialState.FAIL, user_attrs=record.attrs(), constraints=constraints)
        elif u < 0.10:
            record = replace(priced, status=Status.PRUNED, accuracy=acc * 0.8, rungs={"2": acc * 0.8},
                             pruned_reason="stopped after 2 dense epochs: other candidates at that epoch were more "
                                           "accurate and at least as cheap")
            trial = create_trial(state=TrialState.PRUNED, user_attrs=record.attrs(), constraints=constraints)
        else:
            record = replace(priced, status=Status.FEASIBLE, accuracy=acc, curve=curve,
                             timings={"price_s": 0.003, "train_s": 2.5, "prune_s": 0.01, "finetune_s": 0.6})
            trial = create_trial(values=[acc, cost.latency_ms, cost.size_kb], user_attrs=record.attrs(),
                                 constraints=constraints)
        counts[str(record.status)] = counts.get(str(record.status), 0) + 1
        made.append(trial)
    study = optuna.create_study(storage=storage_for(run_dir, writer=True), study_name="synthetic",
                                directions=spec.directions)
    for key, value in {"objectives": spec.objectives, "budget": limits, "target": TARGET,
                       "input_shape": [1, 8, 8], "num_classes": 10}.items():
        study.set_user_attr(key, value)
    study.add_trials(made)
    return counts


def script_times(run_dir: Path, repeats: int) -> dict:
    """Cold and warm AppTest run times of every page, and of the explorer re-priced on WHAT_IF."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from hwsearch.search.outputs import RunResults

    os.environ["HWSEARCH_APP_RUNS"] = json.dumps([str(run_dir)])
    res = RunResults(run_dir)
    best = max(res.pareto(), key=lambda r: r.accuracy).number
    views = [(page, None) for page in PAGES] + [("Pareto explorer", WHAT_IF)]

    def draw(page: str, device: str | None) -> tuple[float, float]:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["page"] = page
        at.session_state["trial"] = best  # the explorer and the candidate page show a candidate
        if device:
            at.session_state["device"] = device
        t0 = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t0
        assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
        t0 = time.perf_counter()
        at.run()
        return cold, time.perf_counter() - t0

    draw("Overview", None)  # imports (streamlit, plotly, pandas) are the server's start-up, not a page's
    out = {}
    for page, device in views:
        cold, warm = [], []
        for _ in range(repeats):
            st.cache_data.clear()
            st.cache_resource.clear()
            c, w = draw(page, device)
            cold.append(c)
            warm.append(w)
        name = page + (f" on {device}" if device else "")
        out[name] = {"cold_s": round(statistics.median(cold), 3), "warm_s": round(statistics.median(warm), 3)}
        print(f"  {name:<28} cold {out[name]['cold_s']:.2f} s, warm {out[name]['warm_s']:.2f} s", flush=True)
    return out


def serve(command: list[str]):
    """Start a Streamlit server (``command`` takes the port last) on a free port; its URL and process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*command, str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    return url, server


def browser_times(run_dir: Path, points: int) -> dict:
    """In chromium, against ``hwsearch app`` on the run: the first load (Streamlit's page, the study
    read, the overview drawn with its hypervolume chart), then a click on the Pareto explorer until
    Plotly has drawn all of its ``points``, then a click back on the overview. Twice: the first
    time (the server has not read the run yet, the browser has not cached Streamlit's scripts) and
    again, in a new tab. For scale, the same loads of a Streamlit page that only writes a word."""
    from playwright.sync_api import expect, sync_playwright

    out = {}
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        url, server = serve([sys.executable, "-m", "hwsearch.search.cli", "app", str(run_dir), "--port"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})  # one HTTP cache
            for visit in ("first", "again"):
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                expect(page.locator(".st-key-hypervolume .js-plotly-plot")).to_be_visible(timeout=60_000)
                loaded = time.perf_counter() - t0
                t0 = time.perf_counter()
                page.get_by_text("Pareto explorer", exact=True).click()
                drawn = page.locator(".st-key-chart .scatterlayer .trace path.point")
                expect(drawn).to_have_count(points, timeout=60_000)
                explorer = time.perf_counter() - t0
                t0 = time.perf_counter()
                page.get_by_text("Overview", exact=True).click()
                expect(page.locator(".st-key-hypervolume .js-plotly-plot")).to_be_visible(timeout=60_000)
                back = time.perf_counter() - t0
                out[visit] = {"load_to_overview_s": round(loaded, 3), "click_to_explorer_s": round(explorer, 3),
                              "click_to_overview_s": round(back, 3)}
                page.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
        hello = Path(tmp) / "hello.py"
        hello.write_text("import streamlit as st\nst.write('hello')\n")
        url, server = serve([sys.executable, "-m", "streamlit", "run", str(hello), "--server.headless", "true",
                             "--server.port"])
        try:
            context = browser.new_context()
            for visit in ("first", "again"):
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                expect(page.get_by_text("hello", exact=True)).to_be_visible(timeout=60_000)
                out[f"bare_streamlit_page_{visit}_load_s"] = round(time.perf_counter() - t0, 3)
                page.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "synthetic"
        t0 = time.perf_counter()
        counts = synthetic_run(run_dir, args.trials)
        print(f"synthetic run of {args.trials} trials {counts} written in {time.perf_counter() - t0:.1f} s")
        from hwsearch.search.outputs import RunResults

        res = RunResults(run_dir)
        points = sum(r.latency_ms is not None and r.accuracy is not None for r in res.rows())
        front = len(res.pareto())
        print("script time per page (AppTest):")
        pages = script_times(run_dir, args.repeats)
        browser = None
        if not args.no_browser and CHROMIUM.exists():
            browser = browser_times(run_dir, points)
            for visit in ("first", "again"):
                t = browser[visit]
                print(f"in chromium, {visit} visit: load to overview drawn {t['load_to_overview_s']:.2f} s "
                      f"(a bare Streamlit page: {browser[f'bare_streamlit_page_{visit}_load_s']:.2f} s), "
                      f"click to the explorer's {points} points drawn {t['click_to_explorer_s']:.2f} s, "
                      f"back to the overview {t['click_to_overview_s']:.2f} s")
    from hwsearch.targets import host_name

    dest = write_results("app_render", {
        "host": host_name(), "cpus": os.cpu_count(), "command": "python bench/app_render.py",
        "trials": args.trials, "counts": counts, "points_on_the_default_chart": points, "front": front,
        "repeats": args.repeats,
        "goal_s": 2.0, "script_time_per_page": pages, "browser_pareto_explorer": browser,
    })
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
