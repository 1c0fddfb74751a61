"""What a crash does to a run's study, and what survives it, with real processes and real files:

- ``hwsearch run`` SIGKILLed again and again at random (seeded) moments around trial boundaries,
  and resumed each time;
- a Ray worker SIGKILLed mid-run;
- the journal cut at random bytes (a crash mid-write) or damaged in the middle;
- four processes writing one journal at once.
"""

import json
import os
import re
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hwsearch.search.outputs._results import RunResults
from hwsearch.search.study._study import (
    JOURNAL,
    CorruptJournal,
    TornRecordWarning,
    counts_toward_budget,
    load_study,
    recover_interrupted,
    storage_for,
)
from tests.conftest import REPO, hwsearch_cmd, tiny_spec
from tests.search.test_executors import check_the_search_went_on, processes

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- a search killed again and again

def kill_spec(trials: int) -> dict:
    """The cheapest real search: tiny networks, one dense epoch on 48 digits, no teacher. A trial
    trains in 0.05-0.4 s once torch is warm (the first one of a process takes 1-3 s)."""
    return tiny_spec(dataset={"name": "digits", "limit": 60}, space={"distill": False},
                     search={"trials": trials, "finetune_epochs": 0, "seed_corners": False})


class JournalEvents:
    """Counts, from the journal's bytes, the trials started and completed since it was created:
    cheap enough to poll every few milliseconds beside a running search."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.events, self.completed = path, 0, 0, 0
        self.times: list[float] = []  # when each event was seen

    def trial_s(self, longest: float) -> float:
        """A trial's typical duration so far (twice the median gap between events: each trial is
        a start and a completion), at most ``longest``: kills then land within about one trial
        whatever the machine's speed."""
        gaps = np.diff(self.times)
        gaps = gaps[gaps > 0]
        return float(np.clip(2 * np.median(gaps), 0.01, longest)) if len(gaps) >= 4 else longest

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.events
        lines = chunk.split(b"\n")[:-1]  # an incomplete last line waits for the next poll
        self.offset += sum(len(line) + 1 for line in lines)
        for line in lines:
            if line.startswith(b'{"op_code":4,') and b'"state":' not in line:  # a sampled trial starts
                self.events += 1
                self.times.append(time.perf_counter())
            elif line.startswith(b'{"op_code":6,') and (state := json.loads(line)["state"]) in (0, 1):
                self.events += 1  # a queued trial starts (0), or a trial is completed (1)
                self.completed += state == 1
                self.times.append(time.perf_counter())
        return self.events


def check_nothing_lost(study: optuna.Study, seen: dict[int, tuple]) -> dict[int, tuple]:
    """Every trial seen before (number -> state, params, values) is still there: a finished one
    unchanged (a completed one with its values), a running one with the parameters it had (and
    perhaps more); numbers are 0..n-1, each used once. Returns what is seen now."""
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials))), "trial numbers skipped or reused"
    assert len({t._trial_id for t in trials}) == len(trials)
    now = {t.number: (t.state, t.params, t.values) for t in trials}
    for number, (state, params, values) in seen.items():
        assert number in now, f"trial {number} was lost"
        if state.is_finished():
            assert now[number] == (state, params, values), f"trial {number} changed: {seen[number]} -> {now[number]}"
        else:
            assert now[number][1].items() >= params.items(), f"trial {number} now holds another candidate"
    return now


# A Python process that has imported what ``hwsearch run`` imports, and forks a child per start
# that runs the CLI's ``main(argv)``, as ``python -m hwsearch.search.cli`` does: a start costs milliseconds
# instead of the seconds of importing torch, sklearn, onnxruntime and optuna again (and of torch's
# lazy import of its compiler on the first optimizer step). It forks before anything has run on
# torch's or onnxruntime's thread pools (torch's DataLoader, too, forks after importing torch).
_FORKER = r"""
import json, os, signal, sys, traceback
import onnxruntime, optuna, sklearn.datasets, torch._dynamo  # noqa: F401  (what a trial loads lazily)
import hwsearch.search.cli, hwsearch.search.engine._runner, targets  # noqa: F401
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped as they exit
print("ready", flush=True)
for line in sys.stdin:
    argv, stderr = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = 1
        try:
            code = hwsearch.search.cli.main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
"""


class Launcher:
    """Starts ``hwsearch run ARGS`` processes, forked from :data:`_FORKER` (started on first use),
    or (``fresh``) as new interpreters, ``python -m hwsearch.search.cli run ARGS``. Use as a context manager."""

    def __init__(self, fresh: bool = False) -> None:
        self.fresh = fresh
        self.forker: subprocess.Popen | None = None
        self.procs: dict[int, subprocess.Popen] = {}  # the fresh ones, by pid

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.forker:
            self.forker.stdin.close()
            self.forker.wait(timeout=60)

    def start(self, args: list[str], stderr: Path) -> int:
        """The pid of a new ``hwsearch run`` process; its stderr goes to ``stderr``."""
        if self.fresh:
            with open(stderr, "wb") as err:
                proc = subprocess.Popen([*hwsearch_cmd(), "run", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=err)
            self.procs[proc.pid] = proc
            return proc.pid
        if self.forker is None:
            self.forker = subprocess.Popen([hwsearch_cmd()[0], "-c", _FORKER], cwd=REPO, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)
            assert self.forker.stdout.readline().strip() == "ready", "the forking process did not start"
        self.forker.stdin.write(json.dumps([["run", *args], str(stderr)]) + "\n")
        self.forker.stdin.flush()
        return int(self.forker.stdout.readline())

    def alive(self, pid: int) -> bool:
        if self.fresh:
            return self.procs[pid].poll() is None
        return Path(f"/proc/{pid}").exists()  # the forker's child, reaped there once it exits

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 30
        while self.alive(pid) and time.time() < deadline:
            time.sleep(0.005)
        assert not self.alive(pid), f"process {pid} survived SIGKILL"


def kill_and_resume(run_dir: Path, spec_path: Path, trials: int, kills: int, seed: int, fresh_every: int = 0,
                    trial_s: float = 0.3) -> dict:
    """Run ``hwsearch run`` and SIGKILL it ``kills`` times, each time after 1 to 4 trial starts or
    completions (random) plus a random fraction of a trial's time (as measured so far, at most
    ``trial_s``); check after every kill that no
    trial seen before was lost or changed; then let it finish in a fresh process and check the
    whole study. Every ``fresh_every``-th killed process is a fresh interpreter (0: all forked, see
    :class:`Launcher`). Returns the figures."""
    rng = np.random.default_rng(seed)
    args = [str(spec_path), "--out", str(run_dir), "--no-progress"]
    seen: dict[int, tuple] = {}
    figures = {"kills": 0, "fresh_processes_killed": 0, "in_flight_at_kill": 0, "torn_records_dropped": 0,
               "torn_records_seen": 0}
    events = JournalEvents(run_dir / JOURNAL)
    t0 = time.perf_counter()
    with Launcher() as forked, Launcher(fresh=True) as fresh:
        for kill in range(kills):
            launcher = fresh if fresh_every and kill % fresh_every == 0 else forked
            at = events.poll() + int(rng.integers(1, 5))
            stderr = run_dir.parent / f"stderr-{kill}.txt"
            pid = launcher.start(args, stderr)
            deadline = time.time() + 120
            while events.poll() < at and launcher.alive(pid) and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, events.trial_s(trial_s)))
            assert launcher.alive(pid), (f"kill {kill}: the search ended before it was killed (give it more "
                                         f"trials): {stderr.read_text()[-2000:]}")
            launcher.kill(pid)
            figures["kills"] += 1
            figures["fresh_processes_killed"] += launcher.fresh
            figures["torn_records_dropped"] += stderr.read_text().count("dropped its last")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TornRecordWarning)
                study = load_study(run_dir)
            figures["torn_records_seen"] += len(caught)
            figures["in_flight_at_kill"] += len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            seen = check_nothing_lost(study, seen)
    figures["completed_at_last_kill"] = sum(state == TrialState.COMPLETE for state, _, _ in seen.values())

    out = subprocess.run([*hwsearch_cmd(), "run", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    figures["torn_records_dropped"] += out.stderr.count("dropped its last")
    study = load_study(run_dir)
    check_nothing_lost(study, seen)
    all_trials = study.get_trials()
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    assert len(complete) == sum(counts_toward_budget(t) for t in all_trials) == trials
    for t in all_trials:
        if t.state != TrialState.COMPLETE:  # cut by a kill: failed with the reason, its candidate run again
            assert t.state == TrialState.FAIL and t.user_attrs["requeued"], t
            assert "interrupted" in t.user_attrs["failure_reason"]
            again = [u for u in all_trials if u.user_attrs.get("requeued_from") == t.number]
            # with the parameters it had (one killed while they were sampled: the rest sampled
            # afresh); one killed before its first has nothing to run again
            assert len(again) == bool(t.params) and all(u.params.items() >= t.params.items() for u in again)
    figures.update(trials=len(all_trials), completed=len(complete), interrupted=len(all_trials) - len(complete),
                   seconds=round(time.perf_counter() - t0, 1))
    return figures


def test_a_search_killed_20_times_at_random_moments_loses_no_finished_trial(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(kill_spec(trials=48)))
    figures = kill_and_resume(tmp_path / "run", spec, trials=48, kills=20, seed=8, fresh_every=10)
    print(figures)
    assert figures["kills"] == 20 and figures["fresh_processes_killed"] == 2
    assert figures["in_flight_at_kill"] >= 5, "the kills should often land mid-trial"


# ---------------------------------------------------------------- a Ray worker killed mid-run

def test_a_ray_worker_killed_mid_run_loses_no_finished_trial(ray_head, tmp_path):
    """A Ray worker SIGKILLed mid-run: the search goes on (its trial retried once on a new worker,
    with the reason), and what was completed before the kill is kept with its values."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(search={"trials": 8, "epochs": 6}, space={"distill": False})))
    run_dir, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([*hwsearch_cmd(), "run", str(spec), "--out", str(run_dir), "--no-progress",
                                 "--address", ray_head, "--workers", "2"], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=err)
    events = JournalEvents(run_dir / JOURNAL)
    deadline = time.time() + 240
    while events.completed < 2 and proc.poll() is None and time.time() < deadline:
        events.poll()
        time.sleep(0.05)
    seen = check_nothing_lost(load_study(run_dir), {})
    # the workers of this test's Ray head only: children of its raylet (which names the head's
    # port, on the host's address)
    port = ray_head.rsplit(":", 1)[1]
    raylets = processes(lambda pid, ppid, cmd: "/raylet " in cmd and re.search(rf"--gcs-address=\S+:{port}\b", cmd))
    workers = processes(lambda pid, ppid, cmd: ppid in raylets and cmd.startswith("ray::_RayWorker"))
    assert workers and proc.poll() is None, "no Ray worker to kill mid-run"
    os.kill(workers[0], signal.SIGKILL)
    proc.wait(timeout=400)
    err = stderr.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert sum(state == TrialState.COMPLETE for state, _, _ in seen.values()) >= 2
    study = load_study(run_dir)
    check_nothing_lost(study, seen)
    check_the_search_went_on(study, 8)  # 8 trials, all finished; the killed worker's one retried once
    assert "retrying it on a new worker" in err
    retried = next(t for t in study.get_trials() if "retried_after" in t.user_attrs)
    assert "Ray worker died" in retried.user_attrs["retried_after"]


# ---------------------------------------------------------------- a journal cut or damaged

@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> bytes:
    """The journal of a real 6-trial search."""
    import hwsearch.search.engine._runner as runner
    from hwsearch.search.spec import parse_spec

    run_dir = tmp_path_factory.mktemp("journal")
    runner.run_search(parse_spec(kill_spec(trials=6)), run_dir, progress=False, log=lambda m: None)
    return (run_dir / JOURNAL).read_bytes()


def trials_of(data: bytes, where: Path) -> list[tuple] | None:
    """What Optuna's own reader makes of ``data`` (complete lines only): each trial's number,
    state, parameters, values and attributes; None where it holds no study."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "plain.journal").write_bytes(data)
    storage = JournalStorage(JournalFileBackend(str(where / "plain.journal")))
    names = optuna.get_all_study_names(storage)
    if not names:
        return None
    return summary(optuna.load_study(study_name=names[0], storage=storage))


def summary(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.user_attrs) for t in study.get_trials(deepcopy=False)]


def read_warned(run_dir: Path):
    """The run's study read as ``hwsearch pareto`` and the app read it, and the warnings given."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            study = load_study(run_dir)
        except FileNotFoundError:
            study = None
    return study, [w for w in caught if issubclass(w.category, TornRecordWarning)]


def test_a_journal_cut_at_any_byte_is_read_up_to_its_last_complete_record_and_resumed(journal, tmp_path):
    """A crash mid-write leaves the journal cut short. Cut it at random bytes: inside the last
    record, inside earlier ones (the later ones lost with them), exactly between records."""
    rng = np.random.default_rng(3)
    ends = [i + 1 for i, b in enumerate(journal) if b == ord("\n")]  # where each record ends
    last_start = ends[-2]
    cuts = sorted({*rng.integers(1, len(journal), 30).tolist(),  # anywhere
                   *rng.integers(last_start + 1, len(journal), 3).tolist(), len(journal) - 1,  # in the last record
                   *rng.integers(1, ends[0], 2).tolist(),  # in the first: no study yet
                   *rng.choice(ends[:-1], 3, replace=False).tolist()})  # between records
    outcomes = {"torn": 0, "between records": 0}
    for cut in cuts:
        run_dir = tmp_path / f"cut-{cut}"
        run_dir.mkdir()
        (run_dir / JOURNAL).write_bytes(journal[:cut])
        keep = journal.rfind(b"\n", 0, cut) + 1  # the complete records before the cut
        expected = trials_of(journal[:keep], tmp_path / f"plain-{cut}")
        torn = cut != keep

        study, warned = read_warned(run_dir)  # a reader leaves the torn record out, and says so
        assert (summary(study) if study else None) == expected
        assert len(warned) == torn, f"cut at {cut}: {[str(w.message) for w in warned]}"
        if torn:
            assert f"the last {cut - keep} bytes (from byte {keep}) are an incomplete record" in str(warned[0].message)
        assert (run_dir / JOURNAL).read_bytes() == journal[:cut], "a reader changed the journal"

        with warnings.catch_warnings(record=True) as caught:  # the driver drops it before it appends
            warnings.simplefilter("always")
            storage = storage_for(run_dir, writer=True)
        dropped = [str(w.message) for w in caught if issubclass(w.category, TornRecordWarning)]
        assert dropped == ([f"{run_dir / JOURNAL}: dropped its last {cut - keep} bytes (bytes {keep}-{cut}): a record "
                            f"cut off by a crash while it was being written (nothing relied on it): "
                            f"{journal[keep:cut][:60]!r}"] if torn else [])
        assert (run_dir / JOURNAL).read_bytes() == journal[:keep]
        outcomes["torn" if torn else "between records"] += 1
        if expected is None:
            continue
        study = optuna.load_study(study_name="tiny", storage=storage)  # resume: recover, then a new trial
        recover_interrupted(study)
        trial = study.ask()
        study.tell(trial, [0.5, 1.0, 2.0])
        after, warned = read_warned(run_dir)
        assert not warned
        after = summary(after)
        assert [t[0] for t in after] == list(range(len(after)))
        kept = {t[0]: t for t in after}
        for number, state, params, values, _ in expected:
            assert kept[number][2] == params
            if state == TrialState.COMPLETE:
                assert kept[number][1:4] == (state, params, values)
        assert kept[trial.number][1] == TrialState.COMPLETE and kept[trial.number][3] == [0.5, 1.0, 2.0]
    assert outcomes["torn"] >= 30 and outcomes["between records"] >= 3


def test_a_torn_last_record_is_dropped_when_hwsearch_run_resumes_and_pareto_warns(journal, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ends = [i + 1 for i, b in enumerate(journal) if b == ord("\n")]
    cut = (ends[-2] + ends[-1]) // 2  # the middle of the last record: the study's timing attribute
    (run_dir / JOURNAL).write_bytes(journal[:cut])
    pareto = subprocess.run([*hwsearch_cmd(), "pareto", str(run_dir), "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert pareto.returncode == 0 and json.loads(pareto.stdout), pareto.stderr[-3000:]
    assert f"the last {cut - ends[-2]} bytes (from byte {ends[-2]}) are an incomplete record" in pareto.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(kill_spec(trials=8)))
    out = subprocess.run([*hwsearch_cmd(), "run", str(spec), "--out", str(run_dir), "--no-progress"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"dropped its last {cut - ends[-2]} bytes (bytes {ends[-2]}-{cut})" in out.stderr
    trials = load_study(run_dir).get_trials()
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert summary(load_study(run_dir))[:6] == trials_of(journal, tmp_path / "plain")


def damaged(journal: bytes, rng: np.random.Generator) -> list[tuple[str, int, bytes]]:
    """Journals damaged before their end: (how, the damaged line's index, the bytes)."""
    lines = journal.splitlines(keepends=True)
    out = []
    for k in rng.choice(np.arange(1, len(lines) - 1), 8, replace=False):  # torn, then written after
        cut = int(rng.integers(1, len(lines[k])))  # never its newline
        out.append(("torn, then appended to", k, b"".join(lines[:k]) + lines[k][:cut] + b"".join(lines[k + 1:])))
    for k in [*rng.choice(np.arange(len(lines) - 1), 7, replace=False), len(lines) - 1]:  # zeroed on disk
        a = int(rng.integers(0, len(lines[k]) - 1))
        b = int(rng.integers(a + 1, len(lines[k])))  # the newline kept
        line = lines[k][:a] + bytes(b - a) + lines[k][b:]
        out.append(("zeroed", k, b"".join(lines[:k]) + line + b"".join(lines[k + 1:])))
    return out


def test_a_journal_damaged_before_its_end_is_an_error_for_readers_and_the_driver(journal, tmp_path):
    for i, (how, k, data) in enumerate(damaged(journal, np.random.default_rng(5))):
        run_dir = tmp_path / f"damaged-{i}"
        run_dir.mkdir()
        (run_dir / JOURNAL).write_bytes(data)
        start = sum(len(line) for line in data.splitlines(keepends=True)[:k])
        says = rf"{JOURNAL}: line {k + 1} \(bytes {start}-\d+, \d+ bytes after it\) is not a journal record"
        for read in (load_study, RunResults, lambda d: storage_for(d, writer=True)):
            with pytest.raises(CorruptJournal, match=says):
                read(run_dir)
        assert (run_dir / JOURNAL).read_bytes() == data, f"{how} line {k + 1}: the driver wrote to a damaged journal"
        # what the error offers: keep the records before the damage
        (run_dir / JOURNAL).write_bytes(data[:start])
        study, warned = read_warned(run_dir)
        assert not warned and (summary(study) if study else None) == trials_of(data[:start], tmp_path / f"plain-{i}")


def test_the_cli_exits_2_with_one_line_on_a_damaged_journal_or_a_run_it_cannot_continue(journal, tmp_path, capsys):
    from hwsearch.search.cli import EXIT_BAD_INPUT, main
    from hwsearch.search.spec import parse_spec

    lines = journal.splitlines(keepends=True)
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    (damaged_dir / JOURNAL).write_bytes(b"".join(lines[:3]) + lines[3][:10] + b"".join(lines[4:]))
    (damaged_dir / "spec.yaml").write_text(parse_spec(kill_spec(trials=6)).to_yaml())
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(kill_spec(trials=8)))
    for argv in (["pareto", str(damaged_dir)], ["export", str(damaged_dir), "--trial", "0"],
                 ["run", str(spec), "--out", str(damaged_dir), "--no-progress"]):
        assert main(argv) == EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err
        assert "line 4" in err and "is not a journal record" in err and "Traceback" not in err, err
    # a run directory whose study has other objectives: refused before anything trains
    good = tmp_path / "good"
    good.mkdir()
    (good / JOURNAL).write_bytes(journal)
    other = kill_spec(trials=8)
    other["objectives"] = ["accuracy", "latency_ms"]
    spec.write_text(yaml.safe_dump(other))
    assert main(["run", str(spec), "--out", str(good), "--no-progress"]) == EXIT_BAD_INPUT
    assert "created with other objectives" in capsys.readouterr().err
    # nothing trained or changed (Optuna itself logs the refused create_study, which replays as nothing)
    assert summary(load_study(good)) == trials_of(journal, tmp_path / "plain")


# ---------------------------------------------------------------- several processes, one journal

# One writer: ``n`` trials asked and told on the shared journal, each with a user attribute naming
# its writer and index; it starts writing when the file ``go`` appears.
_WRITER = r"""
import os, sys, time
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

path, writer, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = JournalStorage(JournalFileBackend(path))
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
study = optuna.create_study(study_name="shared", storage=storage, directions=["minimize", "maximize"],
                            sampler=optuna.samplers.RandomSampler(seed=writer), load_if_exists=True)
for index in range(n):
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("writer", writer)
    trial.set_user_attr("index", index)
    study.tell(trial, [x + writer, 1000 * writer + index])
"""


def test_four_processes_writing_one_journal_lose_and_duplicate_no_trial(tmp_path):
    path, go = tmp_path / JOURNAL, tmp_path / "go"
    writers, n = 4, 50
    procs = [subprocess.Popen([hwsearch_cmd()[0], "-c", _WRITER, str(path), str(w), str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(writers)]
    assert all(p.stdout.readline().strip() == "ready" for p in procs)
    go.touch()  # all at once
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, errors
    study, warned = read_warned(tmp_path)  # read strictly: every line a complete record
    assert not warned
    trials = study.get_trials()
    assert len(trials) == writers * n and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(writers * n))
    pairs = sorted((t.user_attrs["writer"], t.user_attrs["index"]) for t in trials)
    assert pairs == [(w, i) for w in range(writers) for i in range(n)]
    for t in trials:
        w, i = t.user_attrs["writer"], t.user_attrs["index"]
        assert t.values == [t.params["x"] + w, 1000 * w + i]
    # the writers really wrote at the same time: their trials interleave
    order = [t.user_attrs["writer"] for t in sorted(trials, key=lambda t: t.number)]
    assert sum(a != b for a, b in zip(order, order[1:])) >= writers


def test_a_trial_killed_before_or_after_drawing_its_candidate_is_recovered_and_not_counted():
    """A kill can land while a trial is RUNNING with its parameters drawn, or between its creation
    and its first suggestion. Both are failed with the reason and left out of the budget; only
    the drawn candidate is queued again (there is nothing else to re-run)."""
    study = optuna.create_study(directions=["minimize"])
    drawn = study.ask()
    drawn.suggest_int("width", 8, 64)
    empty = study.ask()
    assert sorted(recover_interrupted(study)) == [drawn.number, empty.number]
    by_number = {t.number: t for t in study.get_trials()}
    for number, when in ((drawn.number, "mid-trial"), (empty.number, "before the trial drew its candidate")):
        t = by_number[number]
        assert t.state == TrialState.FAIL and not counts_toward_budget(t)
        assert t.user_attrs["failure_reason"] == f"interrupted: the search was killed {when}"
    assert [t.user_attrs.get("requeued_from") for t in by_number.values() if t.state == TrialState.WAITING] == [
        drawn.number]
    again = study.ask()  # the queued trial comes first, with the drawn candidate's parameters
    assert again.suggest_int("width", 8, 64) == drawn.params["width"]
