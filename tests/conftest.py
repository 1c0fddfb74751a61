import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# One torch (OpenMP) thread per test process, and in every process the tests start: two xdist
# workers, each training with torch's default of one thread per core, oversubscribed the 2 cores
# (on the Intel Xeon host the suite took 15 min and 19 min of CPU; with one thread, 10 min and 12).
# A test that asks for threads sets them itself.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """The tests that hold Ray's lock (``ray_exclusive``) first, the rest in their order: xdist's
    load scheduling hands each worker a run of consecutive tests to begin with, so they all go to
    one worker and the other never waits for the lock (in collection order, one worker waited 100 s
    for it). The order is the same in every worker, as xdist requires."""
    ray = [i for i in items if "ray_exclusive" in getattr(i, "fixturenames", ())]
    items[:] = ray + [i for i in items if i not in ray]


TINY_SPACE = {
    "stem_widths": [8],
    "stages": [{"widths": [8, 12], "depths": [1]}, {"widths": [16], "depths": [1, 2]}],
    "kernels": [3],
    "expand_ratios": [1, 3],
    "se": [False, True],
    "activations": ["relu"],
    "prune_ratios": [0.0, 0.5],
    "weight_bits": [8, 32],
    "activation_bits": [8, 32],
}


@pytest.fixture(scope="session", autouse=True)
def _latency_cache(tmp_path_factory):
    """Layer latencies measured by tests go to one cache per test session, not the user's; under
    xdist, one for all its workers (the cache merges what concurrent processes measured), so that
    no layer is measured twice."""
    base = tmp_path_factory.getbasetemp()
    cache = base.parent / "hwsearch-cache" if os.environ.get("PYTEST_XDIST_WORKER") else base / "hwsearch-cache"
    cache.mkdir(exist_ok=True)
    os.environ["HWSEARCH_CACHE"] = str(cache)
    yield


def tiny_spec(**overrides) -> dict:
    """A spec that trains in well under a second per candidate on digits."""
    spec = {
        "name": "tiny",
        "dataset": {"name": "digits", "limit": 400},
        "space": dict(TINY_SPACE),
        "teacher": {"extra_epochs": 0},
        "search": {"trials": 6, "epochs": 1, "finetune_epochs": 1, "seed": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def hwsearch_cmd() -> list[str]:
    return [sys.executable, "-m", "hwsearch.search.cli"]


REPO = Path(__file__).resolve().parents[1]


def stop_process(proc, timeout: float = 10) -> None:
    """Terminate a server started by a test, and kill it if it does not stop in ``timeout`` s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_processes_mentioning(marker: str, timeout: float = 5) -> list[int]:
    """Stop the processes whose command line mentions ``marker`` (a folder a test gave them), and
    all their descendants: SIGTERM, then SIGKILL after ``timeout`` s (some of a Ray head's
    processes outlive a SIGTERM: three Ray tests' teardowns each waited a whole 20 s for them).
    Unlike ``ray stop --force``, it leaves alone whatever else runs on the machine (another user's
    Ray cluster). Linux only."""
    import os
    import signal
    import time

    def table() -> dict[int, tuple[int, str]]:
        procs = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            procs[int(entry.name)] = (ppid, cmdline)
        return procs

    procs = table()
    chosen = {pid for pid, (_, cmd) in procs.items() if marker in cmd and pid != os.getpid()}
    grown = True
    while grown:  # add descendants: Ray's workers rename themselves ("ray::IDLE")
        more = {pid for pid, (ppid, _) in procs.items() if ppid in chosen} - chosen
        chosen |= more
        grown = bool(more)
    def alive(pid: int) -> bool:  # a zombie is dead: its parent may be a daemon that never reaps
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in chosen:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(alive(pid) for pid in chosen):
            time.sleep(0.2)
        if not any(alive(pid) for pid in chosen):
            break
    return sorted(chosen)


# ---------------------------------------------------------------- a Ray head for the session

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# kept in the environment, where every process the tests start finds it
SESSION_TOKEN = os.environ.setdefault("HWSEARCH_TESTS_RAY_TOKEN", secrets.token_hex(32))


# the running head's dashboard URL, for the Ray Jobs tests: in the environment, since this module
# is imported twice (by pytest as conftest, and by test modules as tests.conftest)
DASHBOARD_ENV = "HWSEARCH_TESTS_RAY_DASHBOARD"


def _ray_env(mp: pytest.MonkeyPatch) -> None:
    """Token authentication, with a token of the test session's own: the head and every driver the
    tests start share it through the environment, whatever ~/.ray holds. One token for every head
    the session starts: a driver in this process (the Ray executor's contract test) keeps the
    first token it read, so a head with another one would refuse it."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    mp.setenv("RAY_AUTH_MODE", "token")
    mp.setenv("RAY_AUTH_TOKEN", SESSION_TOKEN)
    # Ray caches the token a driver of this process read first (test_security's local Ray makes
    # one of its own): drop it, so that a driver in this process reads this head's
    reset_auth_token_state()
    mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
    mp.delenv("RAY_ADDRESS", raising=False)


@contextlib.contextmanager
def _one_ray_at_a_time():
    """Held while a test starts or uses Ray: under xdist, a Ray starting beside another test's
    (a head, a search on it, a local cluster) missed its start-up timeouts on 2 cores."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "hwsearch-tests-ray.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def ray_exclusive():
    """This test starts or uses Ray: no other test of the session does meanwhile."""
    with _one_ray_at_a_time():
        yield


@pytest.fixture(scope="session")
def _ray_head_process():
    """``ray start --head`` with 2 CPUs and its dashboard (Ray's Job Submission API) on 127.0.0.1,
    once per test session (under xdist, per worker that needs it); yields its address and its
    dashboard's URL; its processes stopped after. The head's environment has this interpreter's
    folder first on PATH: a job's ``python`` entrypoint is hwsearch's Python, as on a cluster
    where hwsearch is installed."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    if not Path(RAY).exists():
        pytest.fail(f"the ray command is missing next to {sys.executable}: install hwsearch's dependencies")
    port, dashboard = free_port(), free_port()
    # a short folder: Ray's AF_UNIX sockets live under it, and their paths may not exceed 107
    # bytes (under xdist, pytest's own temp folders are too deep)
    temp = Path(tempfile.mkdtemp(prefix="hwsearch-ray-"))
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
             "--disable-usage-stats", "--temp-dir", str(temp)]
    with pytest.MonkeyPatch.context() as mp:
        _ray_env(mp)
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        with _one_ray_at_a_time():
            out = subprocess.run(start, capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    finally:
        # this head's processes only (they all run under its temp dir), not every Ray on the host
        stop_processes_mentioning(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
        reset_auth_token_state()


@pytest.fixture
def ray_head(_ray_head_process, ray_exclusive, monkeypatch):
    """The session's Ray head (see ``_ray_head_process``): its address, with this test's
    environment set to reach it (its token; its dashboard's URL in ``DASHBOARD_ENV``)."""
    address, dashboard = _ray_head_process
    _ray_env(monkeypatch)
    monkeypatch.setenv(DASHBOARD_ENV, dashboard)
    yield address


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian's /usr/lib/postgresql/N/bin), if installed."""
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").is_file():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the tests: a new cluster in a temporary folder, on 127.0.0.1 and a
    free port, stopped and removed afterwards; its URL. PostgreSQL refuses to run as root, so as root
    it runs as the ``postgres`` user Debian's package creates (``.ci/run`` installs it)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="hwpg-"))  # short: the server's socket path is limited too
    if os.geteuid() == 0:
        try:
            shutil.chown(base, "postgres")
        except LookupError:
            pytest.skip("running as root, and there is no 'postgres' user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = base / "data", base / "server.log", free_port()
    try:
        subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-U", "hwsearch", "--auth=trust",
                                  "--no-locale", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        started = subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                            "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
                                 capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr + (log.read_text() if log.exists() else "")
        yield f"postgresql://hwsearch@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
