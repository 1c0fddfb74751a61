"""Workers that die, early stopping and the run lock, with real training and real processes."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

import hwsearch.search.engine._runner as runner
from hwsearch.search.outputs._results import RunResults
from hwsearch.search.spec import parse_spec
from hwsearch.search.study._study import RunLocked, load_study, run_lock
from tests.conftest import REPO, hwsearch_cmd, tiny_spec

pytestmark = pytest.mark.slow


def processes(match) -> list[int]:
    """PIDs of this machine's processes whose /proc entry satisfies ``match(pid, ppid, cmdline)``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if match(int(entry.name), ppid, cmdline):
            out.append(int(entry.name))
    return out


def finished_trials(run_dir: Path) -> int:
    try:
        return sum(t.state.is_finished() for t in load_study(run_dir).get_trials(deepcopy=False))
    except (FileNotFoundError, ValueError):
        return 0


def run_and_kill_a_worker(spec: dict, run_dir: Path, tmp_path: Path, find_workers, extra=()) -> tuple:
    """Start ``hwsearch run``; once a trial has finished, SIGKILL one worker process; return the
    completed run's study and the command's stderr."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [*hwsearch_cmd(), "run", str(path), "--out", str(run_dir), "--no-progress", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while finished_trials(run_dir) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    workers = find_workers(proc.pid)
    assert workers, "no worker process found to kill"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    return load_study(run_dir), err


def check_the_search_went_on(study, trials: int) -> None:
    all_trials = study.get_trials()
    assert sum(t.state.is_finished() for t in all_trials) == len(all_trials) == trials
    retried = [t for t in all_trials if "retried_after" in t.user_attrs]
    assert len(retried) == 1, "exactly the killed worker's trial is retried"
    t = retried[0]
    assert "died" in t.user_attrs["retried_after"]
    # retried once on a new worker: completed there (or, if that failed too, recorded with the reason)
    assert t.state == TrialState.COMPLETE or "after 1 retry" in t.user_attrs["failure_reason"]
    others = [u for u in all_trials if u is not t]
    assert all(u.state == TrialState.COMPLETE for u in others)


def test_a_pool_worker_killed_mid_trial_is_replaced_and_its_trial_retried(tmp_path):
    spec = tiny_spec(search={"trials": 8, "epochs": 8, "workers": 2}, space={"distill": False})
    run_dir = tmp_path / "run"

    def pool_children(driver: int) -> list[int]:
        return processes(lambda pid, ppid, cmd: ppid == driver and "multiprocessing" in cmd
                         and "resource_tracker" not in cmd)

    study, err = run_and_kill_a_worker(spec, run_dir, tmp_path, pool_children)
    check_the_search_went_on(study, 8)
    assert "retrying it on a new worker" in err


def test_early_stopping_records_stopped_candidates_as_pruned_and_keeps_them_visible(tmp_path):
    spec = parse_spec(tiny_spec(search={"trials": 12, "epochs": 4, "sampler": "random",
                                        "early_stopping": {"enabled": True, "min_epochs": 1, "reduction_factor": 2}},
                                space={"distill": False}))
    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None)
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.user_attrs.get("status") == "feasible"]
    assert pruned and complete
    for t in pruned:
        ua = t.user_attrs
        assert ua["status"] == "pruned" and set(ua["rungs"]) <= {"1", "2"}
        assert ua["accuracy"] == ua["rungs"][max(ua["rungs"], key=int)]  # its last accuracy
        assert "stopped after" in ua["pruned_reason"] and "latency_ms" in ua
        assert not (tmp_path / "weights" / f"trial_{t.number}.pt").exists()
    for t in complete:  # went through every rung, then the whole pipeline
        assert set(t.user_attrs["rungs"]) == {"1", "2"}
        assert [c["phase"] for c in t.user_attrs["curve"]].count("dense") == 4
    results = RunResults(tmp_path)
    assert results.counts()["pruned"] == len(pruned)
    rows = {r.number: r for r in results.rows()}
    assert all(rows[t.number].state == "pruned" and rows[t.number].accuracy is not None for t in pruned)
    assert {r.number for r in results.pareto()} <= {t.number for t in complete}


def test_early_stopping_resumes_with_the_rung_records_of_earlier_trials(tmp_path):
    spec = parse_spec(tiny_spec(search={"trials": 4, "epochs": 3, "early_stopping": {"enabled": True}},
                                space={"distill": False}))
    study = runner.run_search(spec, tmp_path, progress=False, log=lambda m: None)
    halving = runner._halving(spec, study)
    assert halving.rungs == [2]  # the default first rung: 2 dense epochs
    assert set(halving._records[2]) == {t.number for t in study.get_trials() if "rungs" in t.user_attrs}


def test_a_second_driver_on_the_same_run_is_refused(tmp_path):
    spec = parse_spec(tiny_spec(search={"trials": 1}))
    with run_lock(tmp_path):
        with pytest.raises(RunLocked, match="already running here"):
            runner.run_search(spec, tmp_path, progress=False, log=lambda m: None)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(search={"trials": 1})))
    with run_lock(tmp_path):
        out = subprocess.run([*hwsearch_cmd(), "run", str(path), "--out", str(tmp_path)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "already running here" in out.stderr and "Traceback" not in out.stderr
