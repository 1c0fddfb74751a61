"""A real Ray head on 127.0.0.1, started here and stopped in teardown; runs attach with --address."""

import os
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


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` with 2 CPUs on 127.0.0.1; yields its address; ``ray stop`` after."""
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
        start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                 "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]
        out = subprocess.run(start, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        try:
            yield f"127.0.0.1:{port}"
        finally:
            # this head's processes only (they all run under its temp dir), not every Ray on the host
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
