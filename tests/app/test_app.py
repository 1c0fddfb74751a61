"""The app's logic through Streamlit's AppTest: the run picker, selection, what-if re-pricing,
export, refreshing, and the runs it cannot show. (AppTest cannot see Plotly charts: the browser
test clicks them.)"""

import json
import shutil

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from streamlit.testing.v1 import AppTest

from hwsearch.search.outputs._results import RunResults, non_dominated
from hwsearch.search.spec import parse_spec
from hwsearch.search.study._study import JOURNAL, open_study
from tests.app.conftest import FAILURE
from tests.conftest import REPO, tiny_spec

APP = REPO / "app.py"


def app(monkeypatch, *runs) -> AppTest:
    """The app, offering ``runs`` as ``hwsearch app RUN ...`` would, drawn once."""
    monkeypatch.setenv("HWSEARCH_APP_RUNS", json.dumps([str(r) for r in runs]))
    return AppTest.from_file(str(APP), default_timeout=60).run()


def page(at: AppTest, name: str) -> AppTest:
    at.sidebar.radio(key="page").set_value(name)
    return at.run()


def clean(at: AppTest) -> None:
    """Nothing went wrong on the page: no exception and no error message."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("info", "warning", "error", "caption", "markdown")
                     for e in getattr(at, kind))


def test_the_run_picker_offers_the_given_runs_and_opens_any_other(tiny_run, tmp_path, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    at = app(monkeypatch, tiny_run)
    clean(at)
    assert at.sidebar.selectbox(key="run_choice").options == [str(tiny_run)]
    assert at.header[0].value == "Run tiny"
    counts = RunResults(tiny_run).counts()
    shown = {m.label: m.value for m in at.metric}
    assert shown["complete"] == str(counts["complete"]) and shown["failed"] == "1"
    assert shown["over budget"] == str(counts["infeasible"]) and counts["infeasible"] > 0
    reasons = {(r.state, r.reason): r.count for r in at.dataframe[0].value.itertuples()}  # one row per kind
    assert reasons == {("over budget", "over budget: size_kb"): counts["infeasible"],
                       ("failed", f"TrialFailed: {FAILURE}"): 1}
    best = at.dataframe[1].value  # the best candidate per objective
    assert list(best["best by"]) == ["accuracy", "latency (ms)", "size (KB)"]
    assert best.trial[0] == max(RunResults(tiny_run).pareto(), key=lambda r: r.accuracy).number

    at.sidebar.text_input(key="run_other").set_value(str(other)).run()
    clean(at)
    assert str(other) in at.caption[0].value

    # a storage URL: the run's study copied into SQLite, next to another study
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.copy_study(from_study_name="tiny", from_storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tiny_run / JOURNAL))), to_storage=url)
    optuna.create_study(study_name="another", storage=url)
    at.sidebar.text_input(key="run_other").set_value(url).run()
    assert not at.exception and f"{url}#tiny" in texts(at)
    at.sidebar.text_input(key="run_other").set_value(f"{url}#tiny").run()
    clean(at)
    assert at.header[0].value == "Run tiny"
    assert {m.label: m.value for m in at.metric}["complete"] == str(counts["complete"])


def test_a_selection_in_session_state_opens_that_candidate_on_every_page(tiny_run, monkeypatch):
    res = RunResults(tiny_run)
    number = res.pareto()[-1].number
    at = app(monkeypatch, tiny_run)
    at.session_state["trial"] = number
    page(at, "Pareto explorer")
    clean(at)
    front = at.dataframe[0].value
    assert sorted(front.number) == sorted(r.number for r in res.pareto())
    assert at.subheader[-1].value == f"Trial {number}"
    layers = at.dataframe[1].value  # the selected candidate's architecture, one row per layer
    plan = res.plan(res.detail(number).row.candidate)
    assert len(layers) == len(plan.layers)
    blocks = dict(res.detail(number).cost.blocks)
    assert list(layers["latency (ms)"]) == pytest.approx([blocks[layer.name] for layer in plan.layers])

    page(at, "Candidate")
    clean(at)
    assert at.selectbox(key="trial_picker").value == number and at.subheader[0].value == f"Trial {number}"
    page(at, "Compare")
    clean(at)
    assert number in at.multiselect(key="compare").value
    assert f"trial {number}" in at.dataframe[0].value.columns


def test_another_device_reprices_the_front_without_retraining(tiny_run, monkeypatch):
    at = app(monkeypatch, tiny_run)
    at.sidebar.selectbox(key="device").set_value("rpi4-a72")
    page(at, "Pareto explorer")
    clean(at)
    assert "rpi4-a72 (ESTIMATED from spec sheets, not measured; estimate, x" in at.caption[0].value
    assert "published measurements" in at.caption[0].value  # the band of its validation
    res = RunResults(tiny_run)
    repriced = res.reprice("rpi4-a72")
    assert not repriced.measured and repriced.rows
    expected = {r.number: r for r in non_dominated([r for r in repriced.rows if r.state == "complete"],
                                                   res.objectives)}
    front = at.dataframe[0].value
    assert sorted(front.number) == sorted(expected)
    for row in front.itertuples():  # re-priced there, accuracy as trained
        assert row.latency_ms == pytest.approx(expected[row.number].latency_ms)
        assert row.accuracy == res.detail(row.number).row.accuracy
    searched = {r.number: r.latency_ms for r in res.rows()}
    assert all(row.latency_ms != searched[row.number] for row in front.itertuples())


@pytest.mark.parametrize("case, says", [
    ("missing", "is not a directory"),
    ("not a run", "holds no hwsearch run"),
    ("starting", "is starting: it has no trials yet"),
    ("empty", "has no trials yet"),
    ("corrupt", "is corrupt"),
])
def test_a_run_that_cannot_be_shown_says_why(case, says, tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    if case != "missing":
        run.mkdir()
    if case == "starting":
        (run / "spec.yaml").write_text("name: tiny\n")
    elif case == "empty":
        open_study(parse_spec(tiny_spec()), run)
    elif case == "corrupt":
        journal = (tiny_run / JOURNAL).read_bytes()
        (run / JOURNAL).write_bytes(journal[:400] + b"\x00{not json\n" + journal[400:])
    at = app(monkeypatch, run)
    assert not at.exception, [e.value for e in at.exception]
    assert says in texts(at)


def test_a_new_trial_shows_when_the_page_is_drawn_again(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    at = app(monkeypatch, run)
    assert {m.label: m.value for m in at.metric}["failed"] == "1"
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run / JOURNAL))))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"status": "failed", "failure_reason": "late"}))
    at.run()
    clean(at)
    assert {m.label: m.value for m in at.metric}["failed"] == "2"


def test_exporting_a_candidate_offers_its_files(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    number = RunResults(run).pareto()[0].number
    at = app(monkeypatch, run)
    at.session_state["trial"] = number
    page(at, "Candidate")
    at.button(key=f"export-{number}").click().run(timeout=300)
    clean(at)
    folder = run / "export" / f"trial_{number}"
    offered = {b.label for b in at.get("download_button")}
    assert offered == {"Download model.onnx", "Download model.int8.onnx", "Download card.json"}
    assert all((folder / name).stat().st_size > 0 for name in ("model.onnx", "model.int8.onnx", "card.json"))
    latencies = at.dataframe[-1].value  # the card's measured latencies against the predictions
    assert list(latencies.model) == ["model.onnx", "model.int8.onnx"]
    assert (latencies["network measured (ms)"] > 0).all() and (latencies["file measured (ms)"] > 0).all()


def test_the_predicted_latency_is_measured_here_only_where_the_profile_was(tiny_run, monkeypatch):
    from hwsearch.targets import get_target

    res = RunResults(tiny_run)
    number = res.pareto()[0].number
    at = app(monkeypatch, tiny_run)
    at.session_state["trial"] = number
    page(at, "Candidate")
    clean(at)
    if not get_target(res.target).runtime().here:  # x86-epyc-1t: another CPU or onnxruntime version
        assert "Measuring it needs that device" in texts(at)
        assert not [b for b in at.button if b.key == f"measure-{number}"]
        return
    at.button(key=f"measure-{number}").click().run()
    clean(at)
    measured = next(m for m in at.metric if m.label == "measured end to end")
    assert measured.value.endswith(" ms") and float(measured.value.removesuffix(" ms")) > 0
    assert measured.delta.startswith("prediction ")


def test_final_accuracies_show_beside_the_search_and_give_their_own_front(tiny_run, tmp_path, monkeypatch):
    from hwsearch.search.engine import train_final
    from hwsearch.search.study import Fidelity

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    front = [r.number for r in RunResults(run).pareto()][:2]
    at = app(monkeypatch, run)
    page(at, "Pareto explorer")
    assert "final_accuracy" not in at.dataframe[0].value.columns  # nothing trained at the final fidelity yet
    train_final(run, front, Fidelity(epochs=2, finetune_epochs=1, limit=600), progress=False, log=lambda m: None)
    at.run()  # the same page, drawn again: the new records show without a restart
    clean(at)
    table, final = at.dataframe[0].value, at.dataframe[1].value
    assert table.final_accuracy.notna().sum() == len(front)
    finals = RunResults(run).finals
    assert set(final.number) == {r.number for r in RunResults(run).final_pareto()} <= set(front)
    assert all(final.final_accuracy[i] == finals[n].accuracy for i, n in zip(final.index, final.number))
    assert any("2 + 1 epochs on 600 images" in str(c.value) for c in at.caption)
