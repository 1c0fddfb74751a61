"""A real Ray head on 127.0.0.1, started here and stopped in teardown; runs attach with --address."""

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hwsearch.search.study._study import load_study
from tests.conftest import REPO, hwsearch_cmd, stop_processes_mentioning, tiny_spec
from tests.search.test_executors import check_the_search_went_on, processes, run_and_kill_a_worker

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# kept in the environment: this module can be imported twice (as collected, and by the modules
# that import its fixture), and both copies must agree
SESSION_TOKEN = os.environ.setdefault("HWSEARCH_TESTS_RAY_TOKEN", secrets.token_hex(32))


DASHBOARD: dict[str, str] = {}  # the running head's dashboard URL, for the Ray Jobs tests


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` with 2 CPUs and its dashboard (Ray's Job Submission API) on 127.0.0.1;
    yields its address; ``ray stop`` after. The head's environment has this interpreter's folder
    first on PATH: a job's ``python`` entrypoint is hwsearch's Python, as on a cluster where
    hwsearch is installed."""
    if not Path(RAY).exists():
        pytest.fail(f"the ray command is missing next to {sys.executable}: install hwsearch's dependencies")
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    # token authentication, with a token of the test session's own: the head and every driver the
    # tests start share it through the environment, whatever ~/.ray holds. One token for every head
    # the session starts: a driver in this process (the Ray executor's contract test) keeps the
    # first token it read, so a head with another one would refuse it.
    from ray._private.authentication_test_utils import reset_auth_token_state

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN", SESSION_TOKEN)
        # Ray caches the token a driver of this process read first (test_security's local Ray makes
        # one of its own): drop it, so that a driver in this process reads this head's
        reset_auth_token_state()
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        dashboard = free_port()
        start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                 "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                 "--disable-usage-stats", "--temp-dir", str(temp)]
        out = subprocess.run(start, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        DASHBOARD["url"] = f"http://127.0.0.1:{dashboard}"
        try:
            yield f"127.0.0.1:{port}"
        finally:
            # this head's processes only (they all run under its temp dir), not every Ray on the host
            DASHBOARD.clear()
            stop_processes_mentioning(str(temp))
            shutil.rmtree(temp, ignore_errors=True)
            reset_auth_token_state()


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


def test_a_ray_worker_killed_mid_run_is_replaced_and_its_trial_retried(ray_head, tmp_path):
    spec = tiny_spec(search={"trials": 8, "epochs": 8}, space={"distill": False})

    def ray_workers(driver: int) -> list[int]:
        return processes(lambda pid, ppid, cmd: cmd.startswith("ray::_RayWorker"))

    study, err = run_and_kill_a_worker(spec, tmp_path / "run", tmp_path, ray_workers,
                                       extra=("--address", ray_head, "--workers", "2"))
    check_the_search_went_on(study, 8)
    assert "retrying it on a new worker" in err
    retried = next(t for t in study.get_trials() if "retried_after" in t.user_attrs)
    assert "Ray worker died" in retried.user_attrs["retried_after"]


def _service(root, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*hwsearch_cmd(), *args, "--root", str(root)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_a_search_submitted_through_ray_jobs_succeeds_with_its_logs_and_its_run(ray_head, tmp_path, monkeypatch):
    import json
    import time

    from streamlit.testing.v1 import AppTest

    root = tmp_path / "service"
    address = DASHBOARD["url"]
    out = _service(root, "submit", "examples/quickstart.yaml", "--address", address, "--trials", "4",
                   "--data-root", str(REPO))
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
    assert "hwsearch run " in logs and re.search(r"quickstart: \d+ trained", logs)  # the worker's command, its summary
    table = _service(root, "jobs").stdout
    assert "succeeded" in table and "4/4" in table

    monkeypatch.setenv("HWSEARCH_APP_RUNS", json.dumps([jobs[0]["run_dir"]]))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception and at.header[0].value == "Run quickstart"
    assert {m.label: m.value for m in at.metric}["complete"] == str(jobs[0]["feasible"])


def test_an_unreachable_ray_cluster_is_said_and_nothing_is_queued(tmp_path):
    root = tmp_path / "service"
    out = _service(root, "submit", "examples/quickstart.yaml", "--address", f"http://127.0.0.1:{free_port()}",
                   "--data-root", str(REPO))
    assert out.returncode == 2 and "cannot reach the Ray dashboard" in out.stderr
    assert "no jobs" in _service(root, "jobs").stdout
