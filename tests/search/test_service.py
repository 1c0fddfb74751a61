"""The search service, local backend, for real: the job table, a supervisor process that runs real
searches of a tiny spec, stop and resume, queueing, a SIGKILLed service, and refused submissions."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hwsearch.search.service import JobStore, Supervisor, job_progress
from tests.conftest import REPO, hwsearch_cmd, stop_processes_mentioning, tiny_spec


def write_spec(folder: Path, name: str = "tiny", **overrides) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(name=name, **overrides)))
    return path


def hwsearch(root: Path, *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(hwsearch_cmd() + [*args, "--root", str(root)], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(predicate, timeout: float = 240, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def service_root(tmp_path):
    root = tmp_path / "service"
    yield root
    stop_processes_mentioning(str(root))  # the supervisor and any worker it left


def start_service(root: Path, concurrency: int = 1) -> subprocess.Popen:
    return subprocess.Popen(hwsearch_cmd() + ["service", "--root", str(root), "--concurrency", str(concurrency),
                                              "--data-root", str(root.parent)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def state(store: JobStore, job_id: int) -> str:
    return store.get(job_id).state


@pytest.mark.slow
def test_two_jobs_with_a_concurrency_of_one_run_one_after_the_other(tmp_path, service_root):
    spec = write_spec(tmp_path)
    first = hwsearch(service_root, "submit", str(spec), "--trials", "2", "--no-start", "--data-root", str(tmp_path))
    second = hwsearch(service_root, "submit", str(spec), "--trials", "2", "--no-start")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "job 1 queued" in first.stdout and "job 2 queued" in second.stdout
    store = JobStore(service_root)
    assert [j.state for j in store.list()] == ["queued", "queued"]
    proc = start_service(service_root, concurrency=1)
    try:
        wait_for(lambda: state(store, 1) == "running", 60, "job 1 to start")
        assert state(store, 2) == "queued"  # the limit holds it back
        wait_for(lambda: all(j.state == "succeeded" for j in store.list()), 300, "both jobs to succeed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    one, two = store.list()
    assert one.finished_at <= two.started_at  # one after the other
    assert one.run_dir != two.run_dir and job_progress(one).done == 2 and job_progress(two).done == 2
    listed = json.loads(hwsearch(service_root, "jobs", "--json").stdout)
    assert [(r["id"], r["state"], r["trials_done"]) for r in listed] == [(1, "succeeded", 2), (2, "succeeded", 2)]
    assert "hwsearch run" in hwsearch(service_root, "logs", "1").stdout


@pytest.mark.slow
def test_a_job_stopped_keeps_its_trials_and_resumes_to_success(tmp_path, service_root):
    spec = write_spec(tmp_path)
    store = JobStore(service_root)
    # 40 trials: under CI's load the stop command (a fresh Python) took long enough for 6 tiny
    # trials to finish first, and with the suite, a fresh install and the quickstart on 2 cores at
    # once, 14: the job had succeeded before it could stop
    assert hwsearch(service_root, "submit", str(spec), "--trials", "40", "--no-start", "--data-root",
                    str(tmp_path)).returncode == 0
    proc = start_service(service_root)
    try:
        wait_for(lambda: job_progress(store.get(1)).done >= 2, 240, "two finished trials")
        stopped = hwsearch(service_root, "stop", "1")
        assert stopped.returncode == 0 and "stopping" in stopped.stdout, stopped.stderr
        wait_for(lambda: state(store, 1) in ("stopped", "succeeded"), 120, "the job to stop")
        assert state(store, 1) == "stopped", store.get(1).message
        kept = job_progress(store.get(1)).done
        assert 2 <= kept < 40
        resumed = hwsearch(service_root, "resume", "1")
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: state(store, 1) == "succeeded", 300, "the resumed job to succeed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert job_progress(store.get(1)).done == 40 and store.get(1).attempts == 2


@pytest.mark.slow
def test_a_service_killed_mid_job_loses_no_job_and_the_job_resumes(tmp_path, service_root):
    """SIGKILL the supervisor and the worker mid-job: the restarted service queues the job again
    and it finishes from its run directory, the first worker's finished trials intact."""
    spec = write_spec(tmp_path)
    store = JobStore(service_root)
    for _ in range(2):
        assert hwsearch(service_root, "submit", str(spec), "--trials", "6", "--no-start", "--data-root",
                        str(tmp_path)).returncode == 0
    proc = start_service(service_root)
    wait_for(lambda: job_progress(store.get(1)).done >= 2, 240, "two finished trials")
    worker = store.get(1).pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.killpg(worker, signal.SIGKILL)
    before = {r.number: r.accuracy for r in _rows(store, 1) if r.state == "complete"}
    assert len(store.list()) == 2 and state(store, 1) == "running" and state(store, 2) == "queued"
    proc = start_service(service_root)
    try:
        wait_for(lambda: all(j.state == "succeeded" for j in store.list()), 400, "both jobs to succeed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    job = store.get(1)
    after = {r.number: r.accuracy for r in _rows(store, 1)}
    assert all(after[n] == acc for n, acc in before.items())  # finished trials intact
    assert job.attempts == 2 and job_progress(job).done == 6
    assert "attempt 2" in job.log_path.read_text()


@pytest.mark.slow
def test_a_service_with_a_database_keeps_each_jobs_study_there_and_every_reader_finds_it(
        tmp_path, service_root, postgres_url, monkeypatch):
    """A real PostgreSQL server: two jobs of the same spec get a study each in the database, none
    in their run directories, and the job table, ``hwsearch pareto`` and the results API read them
    there through the run directory alone, and so does the app."""
    import optuna

    from hwsearch.search.outputs import RunResults

    spec = write_spec(tmp_path)
    for _ in range(2):
        queued = hwsearch(service_root, "submit", str(spec), "--trials", "2", "--no-start", "--data-root",
                          str(tmp_path), "--storage", postgres_url)
        assert queued.returncode == 0, queued.stderr
    served = hwsearch(service_root, "service", "--until-idle", timeout=400)
    assert served.returncode == 0, served.stdout + served.stderr
    store = JobStore(service_root)
    assert [j.state for j in store.list()] == ["succeeded", "succeeded"], [j.message for j in store.list()]
    names = []
    for job in store.list():
        run_dir = Path(job.run_dir)
        assert not (run_dir / "study.journal").exists()
        assert job_progress(job).done == 2
        res = RunResults(run_dir)
        names.append(res.study.study_name)
        assert res.study.study_name.startswith(f"tiny-{job.id}-") and len(res.study.trials) == 2
        shown = subprocess.run(hwsearch_cmd() + ["pareto", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0 and "trial" in shown.stdout, shown.stdout + shown.stderr
    assert sorted(optuna.get_all_study_names(postgres_url)) == sorted(names) and names[0] != names[1]
    listed = json.loads(hwsearch(service_root, "jobs", "--json").stdout)
    assert [(r["state"], r["trials_done"]) for r in listed] == [("succeeded", 2), ("succeeded", 2)]

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HWSEARCH_APP_RUNS", json.dumps([listed[0]["run_dir"]]))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception and at.header[0].value == f"Run {names[0]}"
    assert {m.label: m.value for m in at.metric}["complete"] == str(listed[0]["feasible"])


def test_a_database_that_does_not_answer_is_refused_before_anything_is_queued(tmp_path, service_root):
    from tests.conftest import free_port

    spec = write_spec(tmp_path)
    refused = hwsearch(service_root, "submit", str(spec), "--no-start", "--data-root", str(tmp_path),
                       "--storage", f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    assert refused.returncode != 0 and "cannot open the database" in refused.stderr, refused.stderr
    assert JobStore(service_root).list() == []


def _rows(store: JobStore, job_id: int):
    from hwsearch.search.outputs import RunResults

    return RunResults(Path(store.get(job_id).run_dir)).rows()


def test_a_running_worker_survives_a_supervisor_restart(tmp_path):
    """A supervisor started again finds a live worker of a running job and leaves it running."""
    store = JobStore(tmp_path / "service")
    job = store.add("tiny", yaml.safe_dump(tiny_spec()), 2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", job.job_dir],
                               start_new_session=True)
    try:
        store.update(job.id, state="running", pid=sleeper.pid, attempts=1)
        Supervisor(store, concurrency=1, log=lambda m: None).step()
        assert state(store, job.id) == "running" and store.get(job.id).pid == sleeper.pid
        sleeper.kill()
        sleeper.wait()
        Supervisor(store, concurrency=1, log=lambda m: None)._settle(store.get(job.id))
        assert state(store, job.id) == "queued" and "resume" in store.get(job.id).message
    finally:
        sleeper.kill()


def test_an_invalid_spec_is_refused_with_its_field_errors_and_nothing_is_queued(tmp_path):
    root = tmp_path / "service"
    bad = write_spec(tmp_path, budget={"latency_ms": -1})
    out = hwsearch(root, "submit", str(bad), "--no-start", cwd=tmp_path)
    assert out.returncode == 2
    assert "budget.latency_ms" in out.stderr and "nothing was queued" in out.stderr
    assert JobStore(root).list() == []


def test_a_dataset_outside_the_data_roots_is_refused(tmp_path):
    root, data, elsewhere = tmp_path / "service", tmp_path / "data", tmp_path / "elsewhere"
    for d in (data, elsewhere):
        (d / "images" / "cat").mkdir(parents=True)
    spec = write_spec(elsewhere, dataset={"name": "imagefolder", "path": str(elsewhere / "images")})
    out = hwsearch(root, "submit", str(spec), "--no-start", "--data-root", str(data))
    assert out.returncode == 2 and "dataset.path" in out.stderr and "outside the service's data roots" in out.stderr
    link = data / "link"
    link.symlink_to(elsewhere / "images")  # a link out of a root leads outside it
    spec = write_spec(data, dataset={"name": "imagefolder", "path": str(link)})
    out = hwsearch(root, "submit", str(spec), "--no-start")
    assert out.returncode == 2 and "outside the service's data roots" in out.stderr
    storage = write_spec(data, storage="sqlite:////tmp/x.db")
    out = hwsearch(root, "submit", str(storage), "--no-start")
    assert out.returncode == 2 and "storage: the service keeps" in out.stderr
    assert JobStore(root).list() == []


def test_stop_and_resume_follow_the_job_states(tmp_path):
    store = JobStore(tmp_path / "service")
    job = store.add("tiny", yaml.safe_dump(tiny_spec()), 2)
    assert store.request_stop(job.id).state == "stopped"  # queued: stops at once
    assert store.requeue(job.id).state == "queued"
    with pytest.raises(Exception, match="is queued, not stopped or failed"):
        store.requeue(job.id)
    with pytest.raises(Exception, match="no job 99"):
        store.get(99)
