"""The app's New search and Jobs pages through Streamlit's AppTest, against a real service root: a
form validated as it is typed, a real job queued to the real supervisor and stopped from the Jobs
page; refused input. (The browser test follows a job from the form to its Pareto chart.)"""

import pytest
from streamlit.testing.v1 import AppTest

from hwsearch.search.service import JobStore, write_config
from tests.conftest import REPO, stop_processes_mentioning
from tests.search.test_service import wait_for

APP = REPO / "app.py"


@pytest.fixture
def service(tmp_path, monkeypatch):
    root = tmp_path / "service"
    data = tmp_path / "data"
    data.mkdir()
    write_config(root, data_roots=[str(data)])
    monkeypatch.setenv("HWSEARCH_SERVICE_ROOT", str(root))
    monkeypatch.setenv("HWSEARCH_APP_RUNS", "[]")
    yield root, data
    stop_processes_mentioning(str(root))  # the supervisor the page started, and its worker


def open_page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.sidebar.radio(key="page").set_value(name)
    return at.run()


def errors(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error]


def fill(at: AppTest, **values: str) -> AppTest:
    for key, value in values.items():
        at.text_input(key=key).set_value(value)
    return at.run()


def test_the_form_shows_each_field_error_beside_its_field_and_submits_once_fixed(service):
    root, data = service
    at = open_page("New search")
    assert not at.exception
    at.selectbox(key="ns_target").set_value("x86-epyc-1t")  # a shipped profile: pricing measures nothing
    at = fill(at, ns_name="from-the-form", ns_limit="300", ns_latency="-1", ns_size="40", ns_trials="2",
              ns_epochs="1")
    assert any("`budget.latency_ms`" in e and "greater than 0" in e for e in errors(at)), errors(at)
    assert at.button(key="ns_submit").disabled
    assert not JobStore(root).list()

    at = fill(at, ns_latency="0.12")
    assert not errors(at), errors(at)
    shown = {m.label: m.value for m in at.metric}  # as 'hwsearch validate' prints them
    assert shown["feasible share"].endswith("%") and shown["cheapest latency"].endswith(" ms")
    assert not at.button(key="ns_submit").disabled
    at.button(key="ns_submit").click().run()
    assert not errors(at), errors(at)
    [job] = JobStore(root).list()
    assert job.name == "from-the-form" and job.trials == 2 and any("Job 1 submitted" in s.value for s in at.success)

    # the Jobs page lists it and stops it (the browser test follows a job to success)
    at.sidebar.radio(key="page").set_value("Jobs")
    at.run()
    assert not at.exception and list(at.dataframe[0].value.job) == [1]
    at.button(key="stop-job-1").click().run()
    wait_for(lambda: JobStore(root).get(1).state == "stopped", 240, "the job to stop")
    at.run()
    assert list(at.dataframe[0].value.state) == ["stopped"] and not at.button(key="resume-job-1").disabled


def test_a_dataset_outside_the_data_roots_and_bad_yaml_are_refused_before_anything_is_queued(service, tmp_path):
    root, data = service
    at = open_page("New search")
    at.selectbox(key="ns_dataset").set_value("imagefolder").run()
    at = fill(at, ns_name="outside", ns_path=str(tmp_path / "elsewhere"))
    assert any("`dataset.path`" in e and "outside the service's data roots" in e for e in errors(at)), errors(at)
    assert at.button(key="ns_submit").disabled

    at.radio(key="ns_preset").set_value("yaml")
    at.run()
    at.text_area(key="ns_yaml").set_value("name: [unclosed").run()
    assert any("not valid YAML" in e for e in errors(at)) and at.button(key="ns_submit").disabled
    at.text_area(key="ns_yaml").set_value("name: pasted\nbudget: {size_kb: -3}\n").run()
    assert any("`budget.size_kb`" in e for e in errors(at)), errors(at)
    assert not JobStore(root).list()


def test_the_form_never_measures_the_host_and_says_when_the_job_will(service, tmp_path, monkeypatch):
    """On ``local-cpu`` with a space this host has not profiled, pricing would measure it for
    minutes inside the web server (it had slowed a job beside it sevenfold): the form says so and
    still submits."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HWSEARCH_CACHE", str(cache))
    at = open_page("New search")
    assert at.selectbox(key="ns_target").value == "local-cpu"
    at = fill(at, ns_name="measured-later", ns_limit="300", ns_trials="2", ns_epochs="1")
    assert not at.exception and not errors(at), errors(at)
    [note] = [i.value for i in at.info if "has not measured this space" in i.value]
    assert "local-cpu" in note and "1x8x8" in note and "hwsearch profile --target local-cpu" in note
    assert not at.metric and not at.button(key="ns_submit").disabled
    assert not list(cache.glob("local-cpu-*.json")), "the page measured this host"
