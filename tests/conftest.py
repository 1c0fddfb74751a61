import os
import sys
from pathlib import Path

import pytest

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
    """Layer latencies measured by tests go to one cache per test session, not the user's."""
    os.environ["HWSEARCH_CACHE"] = str(tmp_path_factory.mktemp("hwsearch-cache"))
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
