"""Runs attached to a real Ray head on 127.0.0.1 (``ray_head`` in tests/conftest.py) with --address,
and searches submitted through its Ray Jobs API."""

import os
import re
import subprocess

import pytest
from optuna.trial import TrialState

from hwsearch.search.study._study import load_study
from tests.conftest import DASHBOARD_ENV, REPO, free_port, hwsearch_cmd, tiny_spec

pytestmark = pytest.mark.slow


def test_a_run_attached_to_a_ray_head_completes_every_trial(ray_head, tmp_path):
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(search={"trials": 6})))
    run_dir = tmp_path / "run"
    out = subprocess.run([*hwsearch_cmd(), "run", str(spec), "--out", str(run_dir), "--no-progress",
                          "--address", ray_head, "--workers", "2"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 worker(s) (ray)" in out.stderr
    trials = load_study(run_dir).get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sum(t.user_attrs["status"] == "feasible" for t in trials) >= 1


def _service(root, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*hwsearch_cmd(), *args, "--root", str(root)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_a_search_submitted_through_ray_jobs_succeeds_with_its_logs_and_its_run(ray_head, tmp_path, monkeypatch):
    import json
    import time

    import yaml
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "service"
    address = os.environ[DASHBOARD_ENV]
    # The tiny space, not the quickstart's: what is tested is the way through Ray Jobs, and the
    # quickstart's first calibration (100 networks timed) made this the suite's longest test (283 s).
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(search={"trials": 6, "epochs": 6})))
    out = _service(root, "submit", str(spec), "--address", address, "--trials", "4", "--data-root", str(REPO))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"submitted to Ray at {address} as hwsearch-1-1-" in out.stdout
    deadline, jobs = time.monotonic() + 420, []
    while time.monotonic() < deadline:
        jobs = json.loads(_service(root, "jobs", "--json").stdout)
        if jobs[0]["state"] not in ("queued", "running"):
            break
        time.sleep(2)
    logs = _service(root, "logs", "1").stdout
    assert jobs[0]["state"] == "succeeded", (jobs, logs[-3000:])
    assert jobs[0]["trials_done"] == 4 and jobs[0]["feasible"] >= 1 and jobs[0]["best_accuracy"] > 0.2
    assert "hwsearch run " in logs and re.search(r"tiny: \d+ trained", logs)  # the worker's command, its summary
    table = _service(root, "jobs").stdout
    assert "succeeded" in table and "4/4" in table

    monkeypatch.setenv("HWSEARCH_APP_RUNS", json.dumps([jobs[0]["run_dir"]]))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception and at.header[0].value == "Run tiny"
    assert {m.label: m.value for m in at.metric}["complete"] == str(jobs[0]["feasible"])


def test_an_unreachable_ray_cluster_is_said_and_nothing_is_queued(tmp_path):
    root = tmp_path / "service"
    out = _service(root, "submit", "examples/quickstart.yaml", "--address", f"http://127.0.0.1:{free_port()}",
                   "--data-root", str(REPO))
    assert out.returncode == 2 and "cannot reach the Ray dashboard" in out.stderr
    assert "no jobs" in _service(root, "jobs").stdout
