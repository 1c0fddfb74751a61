"""hwsearch's front end: browse, compare and export the Pareto-optimal candidates of a run.

    hwsearch app [RUN_DIR ...] [--port P]          # streamlit run app.py, on 127.0.0.1

Four pages: the run's **overview** (trial counts and why trials failed, the best candidate per
objective, the hypervolume as trials finished), the **Pareto explorer** (the front on any two of
accuracy, latency, size and peak memory, with the selected candidate below), one **candidate** in
detail (its layers, where its latency goes, its training, its export) and up to three candidates
side by side (**compare**). The sidebar picks the run and the device: another target re-prices
every trained candidate without retraining, and an estimated profile is labelled as such. Two
more pages belong to the search service and need no run: **New search** (a form or a YAML spec,
validated as it is typed, priced before it is queued) and **Jobs** (state, progress and log of
every job, with stop, resume and a link to its run).

The app reads a run only through the read-only results API (:mod:`hwsearch.search.outputs._results`) and never
writes to it. What it reads is cached, keyed on the storage's modification time, and the page
looks every few seconds whether that changed, so a running search shows its trials as they land.

The runs offered come from ``$HWSEARCH_APP_RUNS`` (a JSON list, set by ``hwsearch app``), else
the runs under ``./runs``; any run directory or storage URL can be typed in.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from functools import lru_cache, partial, singledispatch
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from hwsearch.search.outputs import Repricing, RunResults, non_dominated, run_storage, storage_stamp, study_names
from hwsearch.search.study import FINAL_DIR, GIVEN, CorruptJournal
from hwsearch.spaces import BlockPlan, Candidate, FusedBlockPlan, HeadPlan, Layer, NetworkPlan, StemPlan
from hwsearch.targets import COST_METRICS, estimate_band, get_target, is_estimate, target_names

RUNS_ENV = "HWSEARCH_APP_RUNS"
PAGES = ("Overview", "Pareto explorer", "Candidate", "Compare")
SERVICE_PAGES = ("New search", "Jobs")  # the search service's: they need no run
METRICS = {"accuracy": "accuracy", "latency_ms": "latency (ms)", "size_kb": "size (KB)",
           "peak_memory_kb": "peak memory (KB)"}
SHORT = {"accuracy": "accuracy", "latency_ms": "latency", "size_kb": "size", "peak_memory_kb": "peak memory"}
GROUPINGS = {"weight bits": "w_bits", "activation bits": "a_bits", "pruned share": "pruned", "nothing": None}
# Trials off the front, by state: greyed, each with its own marker.
GREYED = {"complete": ("dominated", "circle", "#b4b4b4"), "infeasible": ("over budget", "x", "#cfcfcf"),
          "pruned": ("stopped early", "triangle-down", "#c4c4c4"), "failed": ("failed", "cross", "#e0b4b4"),
          "running": ("running", "circle-open", "#9a9a9a")}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "star", "hexagon", "pentagon", "bowtie")
WATCH_S = 2.0  # how often a page looks whether the run's storage changed
SERVER_REFRESH_S = 30  # a database server has no file to look at: its caches last this long
# Widget values that outlive the page that draws them (Streamlit drops a widget's state when a run
# does not draw it).
KEPT = ("x_axis", "y_axis", "colour_by", "marker_by", "compare")


# ---------------------------------------------------------------- reading a run (cached)

def parse_source(text: str) -> tuple[str, str | None, str | None]:
    """A run directory, or a storage URL with an optional ``#study`` name: (run_dir, storage, study)."""
    text = text.strip()
    if "://" in text:
        url, _, name = text.partition("#")
        return ".", url, name or None
    return text, None, None


def stamp_of(source: str):
    """The cache key of the run's current contents: its file's modification time and size; for a
    database server, the current period of ``SERVER_REFRESH_S`` seconds."""
    run_dir, storage, _ = parse_source(source)
    storage = run_storage(Path(run_dir), storage)[0]  # or the database the run's spec names
    finals = max((p.stat().st_mtime_ns for p in Path(run_dir).glob(f"{FINAL_DIR}/trial_*/record.json")), default=0)
    if storage and not storage.startswith("sqlite:///"):
        return int(time.time() // SERVER_REFRESH_S), finals
    return storage_stamp(run_dir, storage), finals


@st.cache_resource(max_entries=4, show_spinner="Reading the run…")
def open_run(source: str, stamp) -> RunResults:
    run_dir, storage, name = parse_source(source)
    return RunResults(run_dir, storage, name)


@lru_cache(maxsize=8192)
def labels(candidate: str | None) -> tuple[str, str, str]:
    """How a candidate is coloured and marked: weight bits, activation bits, pruned share
    (a range where its stages differ)."""
    if not isinstance(candidate, str):  # a trial that failed before it had a candidate
        return "?", "?", "?"
    stages = Candidate.from_string(candidate).stages

    def span(prefix: str, values, unit: str = "") -> str:
        lo, hi = min(values), max(values)
        return f"{prefix}{lo:g}{unit}" if lo == hi else f"{prefix}{lo:g}–{hi:g}{unit}"

    prunable = [s.prune * 100 for s in stages if s.expand > 1] or [0]
    return (span("w", [s.w_bits for s in stages]), span("a", [s.a_bits for s in stages]),
            span("pruned ", prunable, "%"))


@st.cache_data(max_entries=16, show_spinner="Pricing the candidates…")
def priced(source: str, stamp, device: str | None) -> tuple[pd.DataFrame, dict[int, str]]:
    """Every trial as one table row, with the labels it is drawn by and whether it is on the
    feasible front; on another ``device``, the trained trials re-priced there (and those it cannot
    price, with the reason)."""
    res = open_run(source, stamp)
    if device is None:
        rows, unpriceable = res.rows(), {}
        front = {r.number for r in res.pareto()}
    else:
        repricing: Repricing = res.reprice(device)
        rows, unpriceable = repricing.rows, repricing.unpriceable
        front = {r.number for r in non_dominated([r for r in rows if r.state == "complete"], res.objectives)}
    df = pd.DataFrame([r.to_dict() for r in rows],
                      columns=["number", "state", "candidate", "accuracy", "final_accuracy", "latency_ms", "size_kb",
                               "peak_memory_kb", "reason"])
    df[["w_bits", "a_bits", "pruned"]] = pd.DataFrame([labels(c) for c in df.candidate], index=df.index,
                                                      columns=["w_bits", "a_bits", "pruned"])
    df["front"] = df.number.isin(front)
    df["final_front"] = df.number.isin({r.number for r in res.final_pareto()} if device is None else set())
    return df, unpriceable


@st.cache_data(max_entries=16, show_spinner=False)
def hypervolume_history(source: str, stamp, reference: tuple[tuple[str, float], ...]) -> list[tuple[int, float]]:
    return open_run(source, stamp).hypervolume_history(dict(reference))


@st.cache_data(max_entries=256, show_spinner=False)
def cost_on(source: str, stamp, candidate: str, device: str):
    return open_run(source, stamp).cost_on(candidate, device)


@st.cache_resource(show_spinner=False)
def devices() -> dict[str, bool]:
    """The registered targets and whether each was measured (else estimated). ``local-cpu`` is
    measured by definition, and is not instantiated here (it may measure on creation)."""
    return {name: not is_estimate(name) for name in target_names()}


def latency_estimated(device: str | None, res: RunResults) -> bool:
    """Whether the latencies shown are estimates: on ``device`` (a registered target, see
    :func:`pick_device`), or on the run's own target (None), named or a file given by path."""
    return not devices()[device] if device is not None else bool(res.target_estimated)


@st.cache_resource(show_spinner=False)
def measurable_here(device: str) -> dict | str:
    """The threads and provider to time a network with when ``device`` was measured on this very
    host (so a measurement here is comparable with its prediction), else why it cannot be."""
    runtime = get_target(device).runtime()
    why = runtime.elsewhere()
    return why if why else {"threads": runtime.threads, "provider": runtime.provider}


def known_runs() -> list[str]:
    """The runs to offer: those ``hwsearch app`` was given, else the run directories under ./runs."""
    given = os.environ.get(RUNS_ENV)
    if given:
        return list(dict.fromkeys(json.loads(given)))
    return sorted(str(p.parent) for p in Path("runs").glob("*/study.journal"))


def load(source: str, stamp) -> RunResults | None:
    """The run, or None after saying on the page why it cannot be shown."""
    run_dir, storage, _ = parse_source(source)
    where = storage or run_dir
    if not storage and not Path(run_dir).is_dir():
        st.error(f"**{run_dir}** is not a directory. Give a run directory (the `--out` of `hwsearch run`, "
                 "by default `runs/<name>`) or a storage URL such as `sqlite:///path/to/study.db`.")
        return None
    try:
        return open_run(source, stamp)
    except FileNotFoundError:
        if storage or any((Path(run_dir) / f).exists() for f in ("spec.yaml", "run.lock")):
            st.info(f"The search in **{where}** is starting: it has no trials yet. This page updates by "
                    "itself when the first one is recorded.")
        else:
            st.warning(f"**{run_dir}** holds no hwsearch run (no `study.journal`). Pick a run directory, "
                       "e.g. `runs/quickstart`, or a storage URL.")
    except CorruptJournal as e:
        st.error(f"The study in **{where}** is corrupt: {e}. It cannot be read here or by `hwsearch "
                 "pareto`; repair it as the message says, restore it from a copy, or run the search again.")
    except ValueError as e:
        names = study_names(run_dir, storage)
        if len(names) > 1 and not parse_source(source)[2]:
            st.warning(f"**{where}** holds several studies ({', '.join(names)}): add `#STUDY` to the URL, "
                       f"e.g. `{where}#{names[0]}`.")
        else:
            st.error(f"Cannot read the study in **{where}**: {e}")
    except Exception as e:  # whatever a corrupt file or an unreachable database raises
        st.error(f"Cannot read the study in **{where}**: {type(e).__name__}: {e}. The storage is corrupt "
                 "or unreachable.")
    return None


# ---------------------------------------------------------------- selection

def select(number: int | None) -> None:
    st.session_state.trial = number


def pick_from_chart(key: str, table: str, numbers: list[int]) -> None:
    """A click on the Pareto chart selects the candidate (its trial number is the point's
    customdata), and its row in the ``table`` of trials ``numbers`` (none if it is not there)."""
    points = st.session_state[key]["selection"]["points"]
    data = points[0].get("customdata") if points else None  # [number], or number where Plotly unwraps it
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, int | float):
        select(int(data))
        rows = [numbers.index(int(data))] if int(data) in numbers else []
        st.session_state[table] = {"selection": {"rows": rows, "columns": []}}


def pick_from_table(key: str, numbers: list[int]) -> None:
    """A row selected in a table of trials (``numbers``, in the order drawn) selects its candidate."""
    rows = st.session_state[key]["selection"]["rows"]
    if rows:
        select(numbers[rows[0]])


# ---------------------------------------------------------------- formatting

def fmt(metric: str, value) -> str:
    if value is None or pd.isna(value):
        return "–"
    if metric == "accuracy":
        return f"{value:.2%}"
    return f"{value:.4f} ms" if metric == "latency_ms" else f"{value:.2f} KB"


def seeded_as(label: str) -> str:
    """Why the search queued a trial itself, in words: a corner of the space, or the spec's own seed."""
    if label.startswith(GIVEN):
        return "seeded by the spec's search.seeds"
    return f"seeded as the space's {label.replace('cheapest ', 'cheapest by ')}"


def natural(label: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", label)) or (1 << 30,)


def device_words(device: str | None, res: RunResults) -> str:
    kind = "ESTIMATED from spec sheets, not measured" if latency_estimated(device, res) else "measured"
    name = device or res.target
    band = estimate_band(name) if name and kind != "measured" else None
    kind += f"; {band}" if band else ""
    if device is None:
        return f"{res.target} ({kind}), as searched"
    return f"{device} ({kind}), re-priced without retraining"


def axis_title(metric: str, device: str | None, estimate: bool) -> str:
    """A metric's name; latency's says on which other device it was re-priced, and whether it is an
    estimate (accuracy, size and peak memory do not depend on the device)."""
    if metric != "latency_ms":
        return METRICS[metric]
    return METRICS[metric] + (f" on {device}" if device is not None else "") + (", estimate" if estimate else "")


# ---------------------------------------------------------------- charts

def pareto_figure(df: pd.DataFrame, x: str, y: str, colour: str | None, marker: str | None,
                  budget: dict[str, float], selected: int | None, device: str | None,
                  estimate: bool) -> go.Figure:
    """The trials on two axes: the feasible front coloured and marked by the chosen labels, the
    rest greyed by state, budget lines, and a ring around the selected candidate. Every point's
    customdata is its trial number."""
    shown = df.dropna(subset=[x, y])
    fig = go.Figure()

    def add(part: pd.DataFrame, name: str, **marker_style) -> None:
        hover = [f"<b>trial {r.number}</b> · {r.state}<br>{fmt('accuracy', r.accuracy)} · "
                 f"{fmt('latency_ms', r.latency_ms)} · {fmt('size_kb', r.size_kb)} · peak "
                 f"{fmt('peak_memory_kb', r.peak_memory_kb)}<br>{r.candidate}" for r in part.itertuples()]
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="markers", name=name, marker=marker_style,
                                 customdata=[[int(n)] for n in part.number], hovertext=hover, hoverinfo="text"))

    for state, part in shown[~shown.front].groupby("state", sort=False):
        name, symbol, grey = GREYED.get(state, (state, "circle", "#b4b4b4"))
        add(part, name, color=grey, symbol=symbol, size=7)
    front = shown[shown.front].assign(colour=shown[colour] if colour else "", marker=shown[marker] if marker else "")
    c_values = sorted(front.colour.unique(), key=natural)
    m_values = sorted(front.marker.unique(), key=natural)
    for (c, m), part in front.groupby(["colour", "marker"]):
        name = " · ".join(dict.fromkeys(v for v in (c, m) if v)) or "Pareto front"
        add(part, name, color=COLOURS[c_values.index(c) % len(COLOURS)], size=11,
            symbol=SYMBOLS[m_values.index(m) % len(SYMBOLS)], line={"width": 1, "color": "white"})
    if selected is not None and selected in set(shown.number):
        row = shown[shown.number == selected].iloc[0]
        fig.add_trace(go.Scatter(x=[row[x]], y=[row[y]], mode="markers", name=f"trial {selected}",
                                 customdata=[[selected]], hoverinfo="skip",
                                 marker={"size": 20, "symbol": "circle-open", "color": "black",
                                         "line": {"width": 2}}))
    for metric, limit in budget.items():
        line = {"line_dash": "dash", "line_color": "#d62728", "annotation_text": f"budget {limit:g}",
                "annotation_font_color": "#d62728"}
        if metric == x:
            fig.add_vline(x=limit, **line)
        elif metric == y:
            fig.add_hline(y=limit, **line)
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title=axis_title(x, device, estimate), yaxis_title=axis_title(y, device, estimate),
                      clickmode="event+select")
    for metric, axis in ((x, fig.layout.xaxis), (y, fig.layout.yaxis)):
        if metric == "accuracy":
            axis.tickformat = ".1%"
    return fig


def latency_bars(blocks: list[tuple[str, float]], title: str) -> go.Figure:
    names, ms = zip(*blocks)
    total = sum(ms)
    fig = go.Figure(go.Bar(x=list(ms), y=list(names), orientation="h",
                           text=[f"{v:.4f} ms · {v / total:.0%}" for v in ms], textposition="auto"))
    fig.update_layout(height=max(200, 28 * len(blocks) + 60), title=title, xaxis_title="ms",
                      yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def curve_figure(curve: tuple[dict, ...], rungs: dict[int, float]) -> go.Figure:
    steps = list(range(1, len(curve) + 1))
    fig = go.Figure()
    for phase in dict.fromkeys(c["phase"] for c in curve):
        idx = [i for i, c in enumerate(curve) if c["phase"] == phase]
        fig.add_trace(go.Scatter(x=[steps[i] for i in idx], y=[curve[i]["val_accuracy"] for i in idx],
                                 mode="lines+markers", name=f"validation accuracy ({phase})"))
        fig.add_trace(go.Scatter(x=[steps[i] for i in idx], y=[curve[i]["loss"] for i in idx], yaxis="y2",
                                 mode="lines", line={"dash": "dot"}, name=f"training loss ({phase})"))
    if rungs:
        fig.add_trace(go.Scatter(x=list(rungs), y=list(rungs.values()), mode="markers", name="early-stopping rung",
                                 marker={"symbol": "diamond", "size": 10}))
    fig.update_layout(height=300, xaxis_title="epoch (dense, then quantization-aware fine-tuning)",
                      yaxis={"title": "validation accuracy", "tickformat": ".0%"},
                      yaxis2={"title": "loss", "overlaying": "y", "side": "right"},
                      margin={"l": 10, "r": 10, "t": 20, "b": 10}, legend={"orientation": "h", "y": -0.3})
    return fig


# ---------------------------------------------------------------- candidate

@singledispatch
def _layer_row(layer: Layer) -> dict[str, object]:
    """The architecture table's columns that depend on a layer's kind (one rule per kind)."""
    raise TypeError(f"the architecture table has no row for a {type(layer).__name__}: "
                    "register one with _layer_row.register")


@_layer_row.register
def _stem_row(layer: StemPlan) -> dict[str, object]:
    return {"layer": "stem (conv)", "kernel": layer.kernel, "stride": layer.stride, "activation": layer.act,
            "out": layer.cout}


@_layer_row.register(FusedBlockPlan)  # the same rule, branching on ``fused``
@_layer_row.register
def _block_row(b: BlockPlan) -> dict[str, object]:
    return {"kernel": b.kernel, "stride": b.stride, "fused": "yes" if b.fused else "",
            "expand": b.cmid_dense // b.cin, "expanded": b.cmid_dense,
            "after pruning": b.cmid, "pruned": 1 - b.cmid / b.cmid_dense,
            "squeeze-excite": f"{b.se} ch" if b.se else "", "activation": b.act,
            "residual": "yes" if b.residual else "", "out": b.cout}


@_layer_row.register
def _head_row(layer: HeadPlan) -> dict[str, object]:
    return {"layer": "head (pool, linear)", "stride": 1, "activation": "", "out": layer.num_classes}


def architecture(plan: NetworkPlan, blocks: dict[str, float]) -> pd.DataFrame:
    """One row per layer: what it is, its widths before and after pruning, its bits and its share
    of the latency."""
    total = sum(blocks.values()) or 1.0
    rows = [{"layer": layer.name, "in": layer.cin, "bits": f"w{layer.w_bits}a{layer.a_bits}",
             "latency (ms)": blocks.get(layer.name), "share": blocks.get(layer.name, 0) / total, **_layer_row(layer)}
            for layer in plan.layers]
    columns = ["layer", "kernel", "stride", "fused", "expand", "in", "expanded", "after pruning", "pruned", "out",
               "bits", "squeeze-excite", "activation", "residual", "latency (ms)", "share"]
    counts = ["kernel", "stride", "expand", "in", "expanded", "after pruning", "out"]
    return pd.DataFrame(rows, columns=columns).astype({c: "Int64" for c in counts})


ARCH_COLUMNS = {"pruned": st.column_config.NumberColumn(format="percent"),
                "share": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
                "latency (ms)": st.column_config.NumberColumn(format="%.4f")}


def blocks_on(res: RunResults, source: str, stamp, detail, device: str | None) -> list[tuple[str, float]]:
    """The candidate's latency per layer on the device shown (as recorded when it is the run's own)."""
    if device is None:
        return list(detail.cost.blocks) if detail.cost else []
    return list(cost_on(source, stamp, detail.row.candidate, device).blocks)


def candidate_detail(res: RunResults, source: str, stamp, number: int, device: str | None,
                     row: pd.Series | None) -> None:
    """Everything about one candidate, in a container keyed ``detail``."""
    with st.container(key="detail", border=True):
        d = res.detail(number)
        r = d.row
        st.subheader(f"Trial {number}")
        st.caption(f"{r.state}" + (f": {r.reason.splitlines()[0]}" if r.reason else "")
                   + (f" · {seeded_as(d.seeded)}" if d.seeded else ""))
        if not r.candidate:
            st.info("This trial has no candidate: it failed before its parameters made one.")
            return
        st.code(r.candidate, language=None)
        metrics = {m: (row[m] if row is not None else getattr(r, m)) for m in METRICS}
        estimate = latency_estimated(device, res)
        for col, m in zip(st.columns(4), METRICS):
            col.metric(SHORT[m] + (" (estimate)" if estimate and m == "latency_ms" else ""), fmt(m, metrics[m]))
        budget = res.budget
        for m in COST_METRICS:
            if m in budget and metrics[m] is not None and not pd.isna(metrics[m]):
                share = metrics[m] / budget[m]
                st.progress(min(share, 1.0), text=f"{SHORT[m]}: {fmt(m, metrics[m])} of the {fmt(m, budget[m])} "
                                                  f"budget ({share:.0%})" + (" — OVER BUDGET" if share > 1 else ""))

        plan = res.plan(r.candidate)
        blocks = blocks_on(res, source, stamp, d, device)
        st.markdown("**Architecture** (batch norm folded into each convolution; widths in channels)")
        st.dataframe(architecture(plan, dict(blocks)), hide_index=True, column_config=ARCH_COLUMNS)
        cand, teacher = plan.candidate, res.study.user_attrs.get("teacher", {})
        if cand.distils:
            st.markdown(f"**Distillation**: temperature {cand.temperature:.3g}, weight α = {cand.alpha:.3g} "
                        "(loss = α·T²·KL + (1−α)·CE)" + (f", from the teacher `{teacher['candidate']}` "
                                                         f"({teacher['val_accuracy']:.2%} validation accuracy)"
                                                         if teacher.get("candidate") else ""))
        else:
            st.markdown("**Distillation**: none")
        if d.params_count:
            st.caption(f"{d.params_count:,} parameters · timings: "
                       + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in d.timings.items()))
        left, right = st.columns(2)
        with left:
            if blocks:
                st.plotly_chart(latency_bars(blocks, "latency per layer" + (" (estimate)" if estimate else "")),
                                key=f"bars-{number}")
            latency_check(res, number, plan, metrics["latency_ms"], device)
        with right:
            if d.curve:
                st.plotly_chart(curve_figure(d.curve, d.rungs), key=f"curve-{number}")
        export_panel(res, source, number, r.state)


def latency_check(res: RunResults, number: int, plan, predicted: float | None, device: str | None) -> None:
    """Predicted against measured latency, where the device's profile was measured on this host:
    a button times the whole network here with onnxruntime, as the profile's layers were timed."""
    name = device or res.target
    if predicted is None or not name:
        return
    how = measurable_here(name)
    if isinstance(how, str):
        st.caption(f"Predicted {fmt('latency_ms', predicted)} on {name}. Measuring it needs that device: "
                   f"{how}; run `hwsearch latency-check` there.")
        return
    measured = st.session_state.setdefault("measured", {})
    key = (name, plan.candidate.to_string())
    if st.button(f"Measure it on this host ({name})", key=f"measure-{number}"):
        from hwsearch.targets import measure_network

        with st.spinner("Timing the network with onnxruntime…"):
            measured[key] = measure_network(plan, how["threads"], how["provider"])
    if key in measured:
        m = measured[key]
        st.metric("measured end to end", f"{m.mean_ms:.4f} ms", f"prediction {predicted / m.mean_ms - 1:+.1%}",
                  delta_color="off", help=f"± {m.std_ms:.4f} ms over {m.count} runs; predicted {predicted:.4f} ms")


def read_card(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def export_panel(res: RunResults, source: str, number: int, state: str) -> None:
    """Export the trained candidate as ONNX (float and int8) with its card, and offer the files;
    the card's measured latencies are shown against the predictions."""
    from hwsearch.search.outputs import CARD_FILE, FP32_FILE, INT8_FILE, ExportError, export_trial

    st.markdown("**Export**")
    if state != "complete":
        st.caption(f"Only completed (trained, within budget) trials can be exported; this one is {state}.")
        return
    exports = st.session_state.setdefault("exports", {})
    if st.button("Export to ONNX", key=f"export-{number}",
                 help="hwsearch export: fp32 and int8 ONNX with a model card, verified with onnxruntime"):
        with st.spinner("Exporting and verifying with onnxruntime…"):
            try:
                exports[(source, number)] = export_trial(res.run_dir, number)
            except ExportError as e:
                st.error(f"Export failed: {e}")
    report = exports.get((source, number))
    # else an earlier export, in export_trial's default folder
    folder = report.out_dir if report else res.run_dir / "export" / f"trial_{number}"
    card = report.card if report else read_card(folder / CARD_FILE)
    if card is None:
        return
    latency = card["latency"]
    where = "this host, the target" if latency["target_is_this_host"] else f"{latency['measured_on']}, not the target"
    st.caption(f"Exported models measured on {where} (batch 1, {latency['threads']} thread(s)):")
    rows = []
    for name in (FP32_FILE, INT8_FILE):
        file = latency[name].get("file") or {}
        rows.append({"model": name, "network predicted (ms)": latency[name]["predicted_ms"],
                     "network measured (ms)": latency[name]["measured_ms"], "error": latency[name]["error"],
                     "file predicted (ms)": file.get("predicted_ms"), "file measured (ms)": file.get("measured_ms"),
                     "file error": file.get("error"), "accuracy": card["accuracy"][name]})
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={"error": percent, "file error": percent, "accuracy": percent})
    for warning in card.get("warnings", []):
        st.warning(warning)
    files = [folder / name for name in (FP32_FILE, INT8_FILE, CARD_FILE) if (folder / name).is_file()]
    st.caption(f"in {folder}")
    for col, path in zip(st.columns(len(files)), files):
        col.download_button(f"Download {path.name}", data=path.read_bytes(), file_name=path.name,
                            key=f"download-{number}-{path.name}")
    with st.expander("model card"):
        st.json(card)


# ---------------------------------------------------------------- pages

def overview(res: RunResults, source: str, stamp, df: pd.DataFrame, device: str | None) -> None:
    """The run as searched; the best candidates on the device shown."""
    searched = priced(source, stamp, None)[0] if device else df
    counts = res.counts()
    st.header(f"Run {res.study.study_name}")
    st.caption(f"{source} · target {res.target} · objectives {', '.join(res.objectives)} · budget "
               + (", ".join(f"{k} ≤ {v:g}" for k, v in res.budget.items()) or "none"))
    cols = st.columns(5)
    for col, state in zip(cols, ("complete", "infeasible", "pruned", "failed", "running")):
        col.metric({"pruned": "stopped early", "infeasible": "over budget"}.get(state, state), counts.get(state, 0))
    if counts.get("running"):
        st.caption(f"A search is running: this page updates as trials finish (checked every {WATCH_S:g} s).")

    reasons = searched[searched.state.isin(["failed", "infeasible", "pruned"]) & searched.reason.notna()]
    if not reasons.empty:
        st.subheader("Why trials did not complete")
        # one row per kind of reason: its first line, without the figures of an over-budget one
        kinds = reasons.reason.str.split("\n").str[0].str.replace(r" [-+0-9.e]+ > [-+0-9.e]+", "", regex=True)
        grouped = (reasons.assign(state=reasons.state.map(lambda s: GREYED[s][0]), reason=kinds)
                   .groupby(["state", "reason"], sort=False).number
                   .agg(count="count", trials=lambda n: ", ".join(map(str, n)))
                   .reset_index().sort_values("count", ascending=False))
        st.dataframe(grouped, hide_index=True)

    feasible = df[df.state == "complete"]
    if feasible.empty:
        st.info("No trial has completed within budget" + (f" on {device}." if device else " yet."))
        return
    st.subheader("Best candidate per objective" + (f" on {device}" if device else ""))
    best = []
    for m in res.objectives:
        row = feasible.loc[feasible[m].idxmax() if m == "accuracy" else feasible[m].idxmin()]
        best.append({"best by": METRICS.get(m, m), "trial": int(row.number),
                     **{METRICS[o]: fmt(o, row[o]) for o in METRICS}, "candidate": row.candidate})
    numbers = [b["trial"] for b in best]
    st.dataframe(pd.DataFrame(best), hide_index=True, key="best_table", selection_mode="single-row",
                 on_select=partial(pick_from_table, "best_table", numbers))

    reference = {m: res.budget.get(m, float(searched[m].max())) for m in res.objectives if m != "accuracy"}
    history = hypervolume_history(source, stamp, tuple(sorted(reference.items())))
    if history:
        st.subheader("Hypervolume over trials" + (f" (on {res.target}, as searched)" if device else ""))
        fig = go.Figure(go.Scatter(x=[n for n, _ in history], y=[hv for _, hv in history], mode="lines+markers",
                                   line={"shape": "hv"}))
        fig.update_layout(height=280, xaxis_title="trial", yaxis_title="hypervolume",
                          margin={"l": 10, "r": 10, "t": 10, "b": 10})
        st.plotly_chart(fig, key="hypervolume")
        st.caption("The share of the box between the reference point (accuracy 0, "
                   + ", ".join(f"{k} {v:g}" for k, v in reference.items())
                   + ("; the budget" if set(reference.items()) <= set(res.budget.items()) else
                      "; the budget where there is one, else the worst value seen")
                   + ") and the ideal point (accuracy 1, every cost 0) that the feasible trials dominate.")


def explorer(res: RunResults, source: str, stamp, df: pd.DataFrame, device: str | None) -> None:
    st.header("Pareto explorer")
    st.caption(f"On {device_words(device, res)}. Click a point, or a row of the table, to see the candidate.")
    c1, c2, c3, c4 = st.columns(4)
    x = c1.selectbox("x axis", list(METRICS), format_func=METRICS.__getitem__, key="x_axis") or "latency_ms"
    y = c2.selectbox("y axis", list(METRICS), format_func=METRICS.__getitem__, key="y_axis") or "accuracy"
    colour = GROUPINGS[c3.selectbox("colour by", list(GROUPINGS), key="colour_by")]
    marker = GROUPINGS[c4.selectbox("marker by", list(GROUPINGS), key="marker_by")]
    front = df[df.front].sort_values(["accuracy", "latency_ms"], ascending=[False, True])
    numbers = [int(n) for n in front.number]
    fig = pareto_figure(df, x, y, colour, marker, res.budget, st.session_state.trial, device,
                        latency_estimated(device, res))
    st.plotly_chart(fig, key="chart", on_select=partial(pick_from_chart, "chart", "front_table", numbers),
                    selection_mode="points")
    hidden = len(df) - len(df.dropna(subset=[x, y]))
    if hidden:
        st.caption(f"{hidden} trials have no {' or '.join(METRICS[m] for m in {x, y})} to place them by "
                   "(never trained, failed or running) and are not drawn.")

    st.subheader(f"The front: {len(front)} feasible Pareto-optimal candidates")
    number_column = st.column_config.NumberColumn
    columns: dict = {"number": "trial", "accuracy": number_column("search accuracy", format="percent"),
               "final_accuracy": number_column("final accuracy", format="percent"),
               "latency_ms": number_column(METRICS["latency_ms"], format="%.4f"),
               "size_kb": number_column(METRICS["size_kb"], format="%.2f"),
               "peak_memory_kb": number_column(METRICS["peak_memory_kb"], format="%.2f"),
               "w_bits": "weights", "a_bits": "activations"}
    trained = df.final_accuracy.notna().any()
    shown = ["number", "accuracy", *(["final_accuracy"] if trained else []), *list(METRICS)[1:], "w_bits", "a_bits",
             "pruned", "candidate"]
    st.dataframe(front[shown], hide_index=True, key="front_table", selection_mode="single-row",
                 on_select=partial(pick_from_table, "front_table", numbers), column_config=columns)
    if trained and device is None:
        final = df[df.final_front].sort_values(["final_accuracy", "latency_ms"], ascending=[False, True])
        finals = res.finals
        fidelity = next(iter(finals.values())).fidelity.describe()
        st.subheader(f"The front by final accuracy: {len(final)} of the {len(finals)} candidates trained at the final "
                     "fidelity")
        st.caption(f"'hwsearch train' trained them again at {fidelity}; the final accuracy is on that training's "
                   "own validation split. Export uses their final weights.")
        final_numbers = [int(n) for n in final.number]
        st.dataframe(final[["number", "final_accuracy", "accuracy", *list(METRICS)[1:], "candidate"]],
                     hide_index=True, key="final_table", selection_mode="single-row",
                     on_select=partial(pick_from_table, "final_table", final_numbers), column_config=columns)
    if st.session_state.trial is None:
        st.info("Click a point or a row of the table to see a candidate.")
    else:
        show_candidate(res, source, stamp, df, device, st.session_state.trial)


def show_candidate(res: RunResults, source: str, stamp, df: pd.DataFrame, device: str | None, number: int) -> None:
    match = df[df.number == number]
    if device is not None and match.empty:
        st.info(f"Trial {number} was not re-priced on {device}: only trained candidates are.")
        return
    candidate_detail(res, source, stamp, number, device, match.iloc[0] if len(match) else None)


def candidate_page(res: RunResults, source: str, stamp, df: pd.DataFrame, device: str | None) -> None:
    st.header("Candidate")
    trials = df.dropna(subset=["candidate"]).sort_values(["front", "accuracy"], ascending=False)
    if trials.empty:
        st.info("No trial has a candidate yet.")
        return
    numbers = [int(n) for n in trials.number]
    if st.session_state.trial not in numbers:
        select(numbers[0])
    st.session_state.trial_picker = st.session_state.trial
    by_number = trials.set_index("number")
    st.selectbox("trial", numbers, key="trial_picker", on_change=lambda: select(st.session_state.trial_picker),
                 format_func=lambda n: f"trial {n} · {by_number.state[n]} · {fmt('accuracy', by_number.accuracy[n])}"
                                       + (" · on the front" if by_number.front[n] else ""))
    st.caption(f"On {device_words(device, res)}.")
    show_candidate(res, source, stamp, df, device, st.session_state.trial)


def compare(res: RunResults, source: str, stamp, df: pd.DataFrame, device: str | None) -> None:
    st.header("Compare")
    trained = df.dropna(subset=["accuracy", "candidate"]).sort_values(["front", "accuracy"], ascending=False)
    options = [int(n) for n in trained.number]
    if len(options) < 2:
        st.info("Comparing needs at least two trained candidates.")
        return
    if "compare" in st.session_state:  # what was picked, of what this run has
        st.session_state.compare = [n for n in st.session_state.compare if n in options]
    else:  # the selected candidate and the most accurate one of the front
        st.session_state.compare = list(dict.fromkeys([n for n in (st.session_state.trial,) if n in options]
                                                      + options))[:2]
    by_number = trained.set_index("number")
    picked = st.multiselect("candidates (two or three)", options, key="compare", max_selections=3,
                            format_func=lambda n: f"trial {n} · {fmt('accuracy', by_number.accuracy[n])}")
    if len(picked) < 2:
        st.info("Pick two or three candidates.")
        return
    st.caption(f"On {device_words(device, res)}.")
    table: dict = {}
    stages: dict = {}
    blocks: dict = {}
    for n in picked:
        r, d = by_number.loc[n], res.detail(n)
        cand = Candidate.from_string(r.candidate)
        table[f"trial {n}"] = {
            **{METRICS[m]: fmt(m, r[m]) for m in METRICS}, "on the front": "yes" if r.front else "no",
            "state": r.state, "weights": r.w_bits, "activations": r.a_bits, "pruning": r.pruned,
            "depth (blocks)": str(cand.depth), "parameters": f"{d.params_count:,}" if d.params_count else "–",
            "distillation": f"T {cand.temperature:.3g}, α {cand.alpha:.3g}" if cand.distils else "none",
            "candidate": r.candidate}
        blocks[n] = blocks_on(res, source, stamp, d, device)
        stages[n] = {}
        for name, ms in blocks[n]:  # s1.b0, s1.b1 -> s1
            stage = name.split(".")[0]
            stages[n][stage] = stages[n].get(stage, 0.0) + ms
    st.dataframe(pd.DataFrame(table), key="compare_table")
    fig = go.Figure([go.Bar(name=f"trial {n}", x=list(s), y=list(s.values())) for n, s in stages.items()])
    fig.update_layout(barmode="group", height=320, yaxis_title="ms", title="latency per stage",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    st.plotly_chart(fig, key="compare_bars")
    for col, n in zip(st.columns(len(picked)), picked):
        with col:
            st.markdown(f"**Trial {n}**")
            layers = architecture(res.plan(by_number.candidate[n]), dict(blocks[n]))
            st.dataframe(layers[["layer", "kernel", "expand", "after pruning", "out", "bits", "squeeze-excite",
                                 "latency (ms)"]], hide_index=True, column_config=ARCH_COLUMNS)


# ---------------------------------------------------------------- the search service's pages

# The form's fields, by the spec field path their errors name.
FORM_FIELDS = {"name": "ns_name", "dataset.name": "ns_dataset", "dataset.path": "ns_path",
               "dataset.image_size": "ns_image_size", "dataset.limit": "ns_limit", "target": "ns_target",
               "budget.latency_ms": "ns_latency", "budget.size_kb": "ns_size", "budget.peak_memory_kb": "ns_peak",
               "search.trials": "ns_trials", "search.epochs": "ns_epochs"}
PRESETS = {"small": "small: tiny inputs such as 8×8 digits (the quickstart's space)",
           "default": "default: sized for 32×32 images", "yaml": "a whole spec in YAML (pasted or uploaded)"}


def service_store():
    from hwsearch.search.service import JobStore, default_root

    return JobStore(default_root())


def _optional(text: str) -> str | None:
    return text.strip() or None


def form_spec(state) -> tuple[dict | None, str | None]:
    """The spec the New search form describes (None while a YAML spec does not parse), and the
    YAML text it came from, if any."""
    import yaml

    from hwsearch.spaces import space_presets

    if state.get("ns_preset", "small") == "yaml":
        text = state.get("ns_yaml", "")
        try:
            data = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            return None, f"not valid YAML ({str(e).splitlines()[0]})"
        return (data if isinstance(data, dict) else None), (None if isinstance(data, dict) else
                                                            "the YAML must be a mapping of spec fields")
    dataset = {"name": state.get("ns_dataset", "digits")}
    for field, key in (("path", "ns_path"), ("image_size", "ns_image_size"), ("limit", "ns_limit")):
        if _optional(state.get(key, "")):
            dataset[field] = _optional(state[key])
    budget = {m: _optional(state.get(key, "")) for m, key in (("latency_ms", "ns_latency"), ("size_kb", "ns_size"),
                                                            ("peak_memory_kb", "ns_peak"))}
    space = space_presets()[state.get("ns_preset", "small")].model_dump(mode="json")
    return {"name": state.get("ns_name", ""), "dataset": dataset, "target": state.get("ns_target", "local-cpu"),
            "budget": {k: v for k, v in budget.items() if v is not None}, "space": space,
            "search": {"trials": state.get("ns_trials", "30"), "epochs": state.get("ns_epochs", "8")}}, None


def spec_problems(data: dict | None, parse_error: str | None, roots: list[str]):
    """The validated spec (or None) and its problems by field path ('' for the spec as a whole)."""
    from hwsearch.search.service import confinement_problems
    from hwsearch.search.spec import SpecError, parse_spec

    problems: dict[str, list[str]] = {}
    if data is None:
        return None, {"": [parse_error or "no spec yet"]}
    try:
        spec = parse_spec(data, Path(roots[0]) if roots else None)
    except SpecError as e:
        for line in e.problems:
            where, _, what = line.partition(": ")
            field = where if where in FORM_FIELDS else next((f for f in FORM_FIELDS if where.startswith(f + ".")), "")
            problems.setdefault(field, []).append(what if field else line)
        return None, problems
    for line in confinement_problems(spec, roots):
        where, _, what = line.partition(": ")
        problems.setdefault(where if where in FORM_FIELDS else "", []).append(what if where in FORM_FIELDS else line)
    return spec, problems


@st.cache_data(max_entries=32, show_spinner="Pricing the space on the target (as hwsearch validate does)…")
def feasibility(spec_yaml: str) -> dict:
    """The survey ``hwsearch validate`` prints: the feasible share and the cheapest reachable costs."""
    import yaml

    from hwsearch.search.engine import NotMeasuredYet, survey
    from hwsearch.search.spec import parse_spec

    try:  # never minutes of measuring inside the web server: the job measures when it starts
        report = survey(parse_spec(yaml.safe_load(spec_yaml)), samples=100, measure=False)
    except NotMeasuredYet as e:
        return {"not_measured": str(e)}
    return {"samples": report.samples, "feasible": report.feasible, "cheapest": report.cheapest,
            "limits": report.limits, "unreachable": report.unreachable}


def field_errors(problems: dict[str, list[str]], field: str) -> None:
    for what in problems.get(field, []):
        st.error(f"`{field}`: {what}", icon="⚠️")


def new_search_page() -> None:
    """A search from a form or a YAML spec, validated as it is typed, priced before it is queued."""
    from hwsearch.search.service import read_config, start_supervisor, submit

    store = service_store()
    roots = list(read_config(store.root)["data_roots"]) or [str(Path.cwd().resolve())]
    st.header("New search")
    st.caption(f"Jobs go to the service at `{store.root}`; a spec may read only under its data roots: "
               + ", ".join(f"`{r}`" for r in roots) + ".")
    state = st.session_state
    # the quickstart's defaults; the target too, which the spec reads before its box is drawn
    for key, default in {"ns_trials": "30", "ns_epochs": "8", "ns_target": "local-cpu"}.items():
        state.setdefault(key, default)
    st.radio("space", list(PRESETS), format_func=PRESETS.__getitem__, key="ns_preset", horizontal=True)
    data, parse_error = form_spec(state)
    spec, problems = spec_problems(data, parse_error, roots)
    if state.ns_preset == "yaml":
        uploaded = st.file_uploader("upload a spec", type=["yaml", "yml"], key="ns_upload")
        if uploaded is not None and state.get("ns_uploaded") != uploaded.file_id:
            state.ns_uploaded, state.ns_yaml = uploaded.file_id, uploaded.getvalue().decode(errors="replace")
            st.rerun()
        st.text_area("spec (YAML)", key="ns_yaml", height=260, placeholder="name: my-search\ndataset: {name: digits}")
        for field, lines in problems.items():
            for what in lines:
                st.error(f"`{field}`: {what}" if field else what, icon="⚠️")
    else:
        st.text_input("name", key="ns_name", placeholder="my-search")
        field_errors(problems, "name")
        c1, c2, c3, c4 = st.columns([1, 3, 1, 1])
        c1.selectbox("dataset", ["digits", "imagefolder", "npz", "cifar10"], key="ns_dataset")
        c2.text_input("path (on the server, under a data root)", key="ns_path",
                      placeholder=f"{roots[0]}/my-images", disabled=state.get("ns_dataset", "digits") == "digits")
        c3.text_input("image size", key="ns_image_size", placeholder="as stored")
        c4.text_input("limit", key="ns_limit", placeholder="all images")
        for field in ("dataset.name", "dataset.path", "dataset.image_size", "dataset.limit"):
            field_errors(problems, field)
        flags = devices()
        st.selectbox("target", list(flags), key="ns_target",
                     format_func=lambda n: n + ("" if flags[n] else " (estimate, not measured)"))
        field_errors(problems, "target")
        b1, b2, b3 = st.columns(3)
        b1.text_input("latency budget (ms)", key="ns_latency", placeholder="none")
        b2.text_input("size budget (KB)", key="ns_size", placeholder="none")
        b3.text_input("peak memory budget (KB)", key="ns_peak", placeholder="none")
        for field in ("budget.latency_ms", "budget.size_kb", "budget.peak_memory_kb"):
            field_errors(problems, field)
        t1, t2 = st.columns(2)
        t1.text_input("trials", key="ns_trials")
        t2.text_input("dense epochs per candidate", key="ns_epochs")
        field_errors(problems, "search.trials")
        field_errors(problems, "search.epochs")
        field_errors(problems, "")
    r1, r2 = st.columns([1, 3])
    backend = r1.radio("backend", ["local", "ray"], key="ns_backend", horizontal=True,
                       format_func=lambda b: {"local": "this machine", "ray": "a Ray cluster (Ray Jobs)"}[b])
    address = r2.text_input("Ray dashboard", key="ns_address", placeholder="http://HEAD:8265",
                            disabled=backend != "ray")
    if spec is not None:
        try:
            survey = feasibility(spec.to_yaml())
        except Exception as e:  # the data cannot be read, the target cannot price: said, not raised
            survey = None
            st.error(f"The space cannot be priced: {type(e).__name__}: {e}")
        if survey is not None and "not_measured" in survey:
            st.info(survey["not_measured"])
        elif survey is not None:
            m1, m2, m3 = st.columns(3)
            m1.metric("feasible share", f"{survey['feasible'] / max(1, survey['samples']):.0%}",
                      help=f"{survey['feasible']} of {survey['samples']} sampled candidates fit the budget")
            for col, metric, unit in ((m2, "latency_ms", "ms"), (m3, "size_kb", "KB")):
                col.metric(f"cheapest {SHORT[metric]}", f"{survey['cheapest'][metric]:.4g} {unit}")
            for line in survey["unreachable"]:
                st.error(line)
    blocked = spec is None or bool(problems) or (backend == "ray" and not address.strip())
    if st.button("Submit", key="ns_submit", type="primary", disabled=blocked):
        assert spec is not None
        trials = spec.search.trials
        try:
            if backend == "ray":
                from hwsearch.search.service import ray_client, submit_to_ray

                ray_client(address.strip())
                job = submit_to_ray(store, submit(store, spec, roots, trials, backend="ray", address=address.strip()))
            else:
                job = submit(store, spec, roots, trials)
                start_supervisor(store.root)
        except Exception as e:
            st.error(f"Not submitted: {type(e).__name__}: {e}")
        else:
            state.ns_submitted = job.id
    if state.get("ns_submitted") is not None:
        st.success(f"Job {state.ns_submitted} submitted: follow it on the Jobs page.")


def open_job_run(run_dir: str) -> None:
    """A job's run in the explorer (a button's callback: it runs before the page is drawn)."""
    st.session_state.run_other = run_dir
    st.session_state.page = "Overview"
    st.session_state.open_run_pending = True  # the jobs list is a fragment: it asks the whole app to redraw


def job_action(action: str, job_id: int) -> None:
    from hwsearch.search.service import JobError, resume_job, stop_job

    try:
        stop_job(service_store(), job_id) if action == "stop" else resume_job(service_store(), job_id)
    except JobError as e:
        st.session_state.job_message = str(e)


@st.fragment(run_every=WATCH_S)
def jobs_list() -> None:
    from hwsearch.search.service import job_progress, synced_jobs

    if st.session_state.pop("open_run_pending", False):
        st.rerun(scope="app")
    store = service_store()
    jobs = synced_jobs(store, warn=st.warning)
    if st.session_state.get("job_message"):
        st.warning(st.session_state.pop("job_message"))
    if not jobs:
        st.info("No jobs yet: submit one on the New search page, or with `hwsearch submit SPEC`.")
        return
    rows, progress = [], {}
    for j in jobs:
        p = progress[j.id] = job_progress(j)
        rows.append({"job": j.id, "name": j.name, "state": j.state, "trials done": p.done,
                     "trials": j.trials, "feasible": p.feasible, "failed": p.failed, "best accuracy": p.best_accuracy,
                     "backend": j.backend, "submitted": j.when("created_at"), "message": j.message})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="jobs_table",
                 column_config={"best accuracy": st.column_config.NumberColumn(format="percent")})
    recent = {j.id for j in jobs[-3:]}
    for j in reversed(jobs):
        p = progress[j.id]
        best = f", best {p.best_accuracy:.1%}" if p.best_accuracy is not None else ""
        label = f"Job {j.id}: {j.name} · {j.state} · {p.done}/{j.trials or 'spec'} trials{best}"
        # open for the newest jobs whatever their state: a label that changes makes a new expander
        with st.expander(label, expanded=j.id in recent or j.state in ("running", "queued")):
            b1, b2, b3 = st.columns(3)
            b1.button("Stop", key=f"stop-job-{j.id}", disabled=j.state not in ("queued", "running"),
                      on_click=job_action, args=("stop", j.id))
            b2.button("Resume", key=f"resume-job-{j.id}", disabled=j.state not in ("stopped", "failed"),
                      on_click=job_action, args=("resume", j.id))
            b3.button("Open its run", key=f"open-job-{j.id}", on_click=open_job_run, args=(j.run_dir,),
                      disabled=not (Path(j.run_dir) / "study.journal").exists())
            st.code(job_log_tail(j), language=None)


def job_log_tail(job, lines: int = 25) -> str:
    if job.backend == "ray":
        from hwsearch.search.service import JobError, ray_logs

        try:
            text = ray_logs(job)
        except JobError as e:
            return str(e)
    else:
        try:
            text = job.log_path.read_text(errors="replace")
        except OSError:
            text = ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output yet)"


def jobs_page() -> None:
    st.header("Jobs")
    st.caption(f"The service at `{service_store().root}`; this page updates by itself.")
    jobs_list()


# ---------------------------------------------------------------- the app

@st.fragment(run_every=WATCH_S)
def watch(source: str, drawn) -> None:
    """Redraw the page when the run's storage changed since it was drawn (a search is writing it,
    or a starting one created it)."""
    if stamp_of(source) != drawn:
        st.rerun()


def pick_run() -> str | None:
    """The sidebar's run picker and page switch; the run: a directory or a storage URL."""
    st.sidebar.title("hwsearch")
    runs = known_runs()
    choice = st.sidebar.selectbox("run", runs, key="run_choice") if runs else None
    other = st.sidebar.text_input("…or a run directory or storage URL", key="run_other",
                                  placeholder="runs/my-search or sqlite:///study.db#name")
    st.sidebar.radio("page", PAGES + SERVICE_PAGES, key="page")
    return other.strip() or choice


def pick_device(res: RunResults) -> str | None:
    """The sidebar's device: None for the run's own target (the prices recorded in the search),
    else another registered target to re-price the trained candidates on."""
    own = res.target or "the run's target"
    flags = devices()
    options = [own, *(name for name in flags if name != own)]
    if st.session_state.get("device") not in options:  # a run searched on another target
        st.session_state.device = own
    device = st.sidebar.selectbox(
        "device", options, key="device",
        format_func=lambda n: (f"{n} (as searched" + (", estimate)" if res.target_estimated else ")") if n == own
                               else n + ("" if flags[n] else " (estimate)")),
        help="Re-price every trained candidate on another device's profile, without retraining.")
    if device == own:
        if res.target_estimated:
            st.sidebar.caption(f"{own}'s profile is ESTIMATED (it says `measured: false`), not measured: profile the "
                               "real device for latencies you can trust.")
        return None
    if device == "local-cpu":
        st.sidebar.caption("local-cpu measures each layer it has not met yet on this host: the first re-pricing "
                           "of a run can take minutes.")
    elif not flags[device]:
        st.sidebar.caption(f"{device}'s profile is ESTIMATED from spec sheets, not measured: profile the real device "
                           "with `hwsearch profile` for latencies you can trust.")
    return device


def main() -> None:
    st.set_page_config(page_title="hwsearch", layout="wide")
    for key in KEPT:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
    for key, default in {"trial": None, "x_axis": "latency_ms", "y_axis": "accuracy", "colour_by": "weight bits",
                         "marker_by": "activation bits"}.items():
        st.session_state.setdefault(key, default)
    source = pick_run()
    if st.session_state.page in SERVICE_PAGES:
        {"New search": new_search_page, "Jobs": jobs_page}[st.session_state.page]()
        return
    if not source:
        st.info("No run to show: start the app with `hwsearch app RUN_DIR`, or type a run directory or storage URL "
                "in the sidebar.")
        return
    if st.session_state.get("source") != source:  # another run: its trial numbers mean other candidates
        st.session_state.source = source
        select(None)
        for key in ("compare", "device"):
            st.session_state.pop(key, None)
    stamp = stamp_of(source)
    watch(source, stamp)
    res = load(source, stamp)
    if res is None:
        return
    try:
        device = pick_device(res)
        df, unpriceable = priced(source, stamp, device)
        if df.empty:
            st.info(f"The run **{source}** has no trials yet. This page updates by itself when one is recorded.")
            return
        if unpriceable:
            first = next(iter(unpriceable.items()))
            st.warning(f"{device} cannot price {len(unpriceable)} of the trained candidates, which are left out "
                       f"(trial {first[0]}: {first[1]})")
        page = {"Overview": overview, "Pareto explorer": explorer, "Candidate": candidate_page,
                "Compare": compare}[st.session_state.page]
        page(res, source, stamp, df, device)
    except Exception as e:  # the page's promise: a clear message, never a traceback
        st.error(f"This page cannot be drawn for {source}: {type(e).__name__}: {e}")
        with st.expander("details"):
            st.code(traceback.format_exc(), language=None)


if __name__ == "__main__":  # as Streamlit runs it; never when a spawned process re-imports it as __mp_main__
    main()
