"""Security: what listens where, files that would run code when loaded, and where export writes.

- ``hwsearch app`` listens on 127.0.0.1 unless told otherwise; the local Ray a run starts (which
  listens on every interface: Ray has no loopback-only setting) refuses a client without its token;
- no reader of a user-supplied file unpickles code: every file below is planted so that loading it
  with pickle enabled creates a marker file (checked first), and hwsearch's reader refuses it
  without the marker appearing;
- export reads weights only from ``RUN_DIR/weights``, whatever the journal says, and writes only its
  three files, in the folder it is given.
"""

import dataclasses
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hwsearch.search.engine._runner import run_search
from hwsearch.search.outputs._export import CARD_FILE, FP32_FILE, INT8_FILE, ExportError, RunContext, export_trial
from hwsearch.search.outputs._results import RunResults
from hwsearch.search.spec import DatasetSpec, SpecError, load_spec, parse_spec
from hwsearch.search.study._study import JOURNAL
from hwsearch.search.training._datasets import DatasetError, load_dataset
from hwsearch.search.training._teacher import TeacherError, teacher_logits
from hwsearch.targets import get_target
from hwsearch.targets._profile_format import ProfileError
from tests.app.conftest import PRICED_SPACE
from tests.conftest import REPO, free_port, hwsearch_cmd, stop_process, tiny_spec


class Planted:
    """Unpickled, this creates ``marker``: what a malicious pickle would do, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def live(marker: Path, unsafe_load) -> None:
    """Check that the planted file runs its code when loaded with pickle enabled; clean up."""
    unsafe_load()
    assert marker.exists(), "the planted file is not a working exploit: the test would prove nothing"
    marker.unlink()


# ------------------------------------------------------------------------------------------
# Listening sockets
# ------------------------------------------------------------------------------------------

def listening_addresses(port: int) -> set[str]:
    """The local addresses of this machine's TCP sockets listening on ``port`` (/proc/net/tcp{,6})."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 here
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


@pytest.mark.slow
def test_hwsearch_app_listens_on_this_machine_only():
    port = free_port()
    proc = subprocess.Popen([*hwsearch_cmd(), "app", "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not listening_addresses(port):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"hwsearch app did not start:\n{proc.communicate()[0]}")
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
            assert r.read() == b"ok"  # the app's own server, serving
        assert listening_addresses(port) == {"127.0.0.1"}  # not 0.0.0.0 or ::
    finally:
        stop_process(proc)


def test_hwsearch_app_beyond_this_machine_without_a_token_refuses_to_start():
    port = free_port()
    out = subprocess.run([*hwsearch_cmd(), "app", "--address", "0.0.0.0", "--port", str(port)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "HWSEARCH_APP_TOKEN": ""})
    assert out.returncode == 2 and "give it a token" in out.stderr
    assert not listening_addresses(port)


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request, redirects not followed: (status, headers, body)."""
    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(Stay)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.slow
def test_hwsearch_app_with_a_token_answers_nothing_without_it(tmp_path):
    import asyncio

    import aiohttp

    port, token = free_port(), "t0ken-" + os.urandom(8).hex()
    proc = subprocess.Popen([*hwsearch_cmd(), "app", "--address", "0.0.0.0", "--port", str(port), "--token", token],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"  # the test's requests go to this machine only
    try:
        def serving() -> bool:
            return bool(listening_addresses(port)) and _get(f"{base}/_stcore/health",
                                                            {"Authorization": f"Bearer {token}"})[0] == 200

        deadline = time.time() + 90
        while not serving():
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"hwsearch app did not start:\n{proc.communicate()[0]}")
            time.sleep(0.3)
        assert listening_addresses(port) == {"0.0.0.0"}
        # the gate's own server: other tests on other workers may run the app's server at the same time
        behind = set(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split())
        assert behind, "the gate runs no server behind it"
        for path in ("/", "/_stcore/health", "/static/js/index.js", "/?token=wrong"):
            status, _, body = _get(base + path)
            assert status == 401 and b"needs its token" in body and b"<" not in body, path
        assert _get(f"{base}/_stcore/health", {"Authorization": "Bearer wrong"})[0] == 401
        status, headers, _ = _get(f"{base}/?token={token}")  # the link a user opens once
        assert status == 302 and headers["Location"] == "/" and "hwsearch_token=" in headers["Set-Cookie"]
        status, _, page = _get(f"{base}/", {"Cookie": f"hwsearch_token={token}"})
        assert status == 200 and b"<html" in page.lower()

        async def stream(headers: dict) -> int:
            async with aiohttp.ClientSession() as session:
                try:
                    async with session.ws_connect(f"ws://127.0.0.1:{port}/_stcore/stream", headers=headers,
                                                  protocols=["streamlit"]) as ws:
                        await ws.close()
                        return 101
                except aiohttp.WSServerHandshakeError as e:
                    return e.status

        assert asyncio.run(stream({})) == 401  # the app's stream: refused without the token
        assert asyncio.run(stream({"Authorization": f"Bearer {token}"})) == 101
    finally:
        stop_process(proc)
    streamlits = subprocess.run(["pgrep", "-f", f"streamlit run {REPO / 'app.py'}"], capture_output=True, text=True)
    assert not behind & set(streamlits.stdout.split()), "the app's server behind the gate outlived it"


LOCAL_RAY_DRIVER = """
import json, sys
import ray
from hwsearch.search.engine._executors import RayExecutor, WorkerSetup
from hwsearch.search.spec import DatasetSpec
from hwsearch.search.training._datasets import load_dataset
from hwsearch.search.training._evaluate import TrainSettings

data = load_dataset(DatasetSpec(name="digits", limit=100), seed=0)
executor = RayExecutor(WorkerSetup(data, None, TrainSettings(1, 1), threads=1), 1, None, 1.0, 0, lambda m: None)
try:
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address}), flush=True)
    sys.stdin.readline()  # the stranger has tried
finally:
    executor.close()
"""


@pytest.mark.slow
def test_the_local_ray_a_run_starts_refuses_a_client_without_its_token(tmp_path, ray_exclusive):
    """The Ray cluster a run starts for itself (no address) has token authentication: a client
    without the token is refused. The run's driver is a process of its own, as ``hwsearch run``'s is
    (a driver in a test process would keep the Ray state of earlier tests)."""
    # Ray's defaults, with a home of the test's own (where ray.init keeps the token it makes)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    env.update(HOME=str(tmp_path / "home"), RAY_USAGE_STATS_ENABLED="0")
    driver = subprocess.Popen([sys.executable, "-c", LOCAL_RAY_DRIVER], cwd=REPO, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = driver.stdout.readline()
        assert line, driver.stderr.read()[-3000:] if driver.poll() is not None else "the driver said nothing"
        gcs = json.loads(line)["gcs"]
        stranger = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        stranger.update(HOME=str(tmp_path / "stranger"), RAY_NUM_REDIS_GET_RETRIES="1")
        out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={gcs!r}, log_to_driver=False)"],
                             env=stranger, capture_output=True, text=True, timeout=120)
    finally:
        driver.communicate("done\n", timeout=120)
    assert driver.returncode == 0
    assert out.returncode != 0
    assert "Authentication token is missing or incorrect" in out.stderr, out.stderr[-2000:]
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file()


# ------------------------------------------------------------------------------------------
# Planted pickles
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run that kept its weights and trained a teacher (priced, not measured)."""
    spec = parse_spec(tiny_spec(target="x86-epyc-1t", space=PRICED_SPACE, search={"trials": 3}))
    run_dir = tmp_path_factory.mktemp("security") / "run"
    run_search(spec, run_dir, progress=False, log=lambda m: None)
    return run_dir


def _npz_dataset(tmp: Path, marker: Path):
    path = tmp / "data.npz"
    np.savez(path, x=np.array([Planted(marker)], dtype=object), y=np.zeros(1, np.int64))
    return (lambda: np.load(path, allow_pickle=True)["x"],
            lambda: load_dataset(DatasetSpec(name="npz", path=path), seed=0), DatasetError)


def _cifar10_batch(tmp: Path, marker: Path):
    (tmp / "data_batch_1").write_bytes(pickle.dumps({b"data": Planted(marker), b"labels": [0]}))
    return (lambda: pickle.loads((tmp / "data_batch_1").read_bytes()),
            lambda: load_dataset(DatasetSpec(name="cifar10", path=tmp), seed=0), DatasetError)


def _cifar10_labels(tmp: Path, marker: Path):
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 255, (40, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(40)]}
    (tmp / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    (tmp / "batches.meta").write_bytes(pickle.dumps({b"label_names": Planted(marker)}))
    return (lambda: pickle.loads((tmp / "batches.meta").read_bytes()),
            lambda: load_dataset(DatasetSpec(name="cifar10", path=tmp), seed=0), DatasetError)


def _profile(tmp: Path, marker: Path):
    path = tmp / "device.json"
    path.write_bytes(pickle.dumps(Planted(marker)))
    return lambda: pickle.loads(path.read_bytes()), lambda: get_target(str(path)), ProfileError


def _spec(tmp: Path, marker: Path):
    path = tmp / "spec.yaml"
    path.write_text(f"name: !!python/object/apply:builtins.open [{str(marker)!r}, w]\n")
    return lambda: yaml.unsafe_load(path.read_text()), lambda: load_spec(path), SpecError


def _teacher_logits(tmp: Path, marker: Path, run: Path):
    """The cached logits of a run's teacher, replaced (its teacher.json, which says they are current, kept)."""
    run_dir = shutil.copytree(run, tmp / "run")
    logits = run_dir / "teacher" / "logits.npy"
    np.save(logits, np.array([Planted(marker)], dtype=object), allow_pickle=True)
    spec = load_spec(run_dir / "spec.yaml")
    data = load_dataset(spec.dataset, spec.data_seed)
    return (lambda: np.load(logits, allow_pickle=True),
            lambda: teacher_logits(spec, data, run_dir, log=lambda m: None), TeacherError)


PLANTS = {"npz dataset": _npz_dataset, "cifar10 batch": _cifar10_batch, "cifar10 labels": _cifar10_labels,
          "profile": _profile, "spec": _spec, "teacher logits": _teacher_logits}


@pytest.mark.parametrize("where", PLANTS)
def test_a_planted_pickle_is_refused_without_running(where, tmp_path, request):
    marker = tmp_path / "marker"
    plant = PLANTS[where]
    extra = (request.getfixturevalue("run"),) if where == "teacher logits" else ()
    unsafe_load, load, refusal = plant(tmp_path, marker, *extra)
    live(marker, unsafe_load)
    with pytest.raises(refusal):
        load()
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Export: what it reads, where it writes
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def context(run):
    return RunContext.load(run)


def kept_trial(run: Path) -> int:
    return next(r.number for r in RunResults(run).pareto() if (run / "weights" / f"trial_{r.number}.pt").exists())


def crafted(run: Path, to: Path, number: int, weights) -> Path:
    """A copy of ``run`` whose journal says trial ``number`` kept its weights at ``weights``."""
    copy = shutil.copytree(run, to)
    lines = (copy / JOURNAL).read_text().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record.get("user_attr", {}).get("weights") == f"weights/trial_{number}.pt":
            record["user_attr"]["weights"] = weights
            lines[i] = json.dumps(record)
    (copy / JOURNAL).write_text("\n".join(lines) + "\n")
    assert RunResults(copy).study.trials[number].user_attrs["weights"] == weights
    return copy


@pytest.mark.parametrize("weights", ["../../etc/passwd", "/etc/passwd", "weights/../spec.yaml", "weights", 7])
def test_export_refuses_weights_the_journal_places_outside_the_weights_folder(weights, run, context, tmp_path):
    number = kept_trial(run)
    copy = crafted(run, tmp_path / "run", number, weights)
    ctx = dataclasses.replace(context, run_dir=copy, results=RunResults(copy))
    with pytest.raises(ExportError, match=r"its weights attribute .* refusing to read it"):
        export_trial(copy, number, tmp_path / "out", context=ctx)
    assert not (tmp_path / "out").exists() and not (copy / "export").exists()


def test_export_refuses_a_link_planted_in_the_weights_folder(run, context, tmp_path):
    number = kept_trial(run)
    copy = shutil.copytree(run, tmp_path / "run")
    kept = copy / "weights" / f"trial_{number}.pt"
    outside = tmp_path / "elsewhere.pt"
    kept.rename(outside)
    kept.symlink_to(outside)
    ctx = dataclasses.replace(context, run_dir=copy, results=RunResults(copy))
    with pytest.raises(ExportError, match=f"leads to {outside}"):
        export_trial(copy, number, tmp_path / "out", context=ctx)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_planted_pickle_as_kept_weights(run, context, tmp_path):
    number = kept_trial(run)
    copy = shutil.copytree(run, tmp_path / "run")
    kept = copy / "weights" / f"trial_{number}.pt"
    marker = tmp_path / "marker"
    torch.save({"stem.conv.weight": Planted(marker)}, kept)
    live(marker, lambda: torch.load(kept, weights_only=False))
    ctx = dataclasses.replace(context, run_dir=copy, results=RunResults(copy))
    with pytest.raises(ExportError, match=r"would call \S*open when loaded\); refusing it"):
        export_trial(copy, number, tmp_path / "out", context=ctx)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_export_writes_its_three_files_in_the_given_folder_and_nothing_else(run, context, tmp_path):
    number = kept_trial(run)
    # a roundabout path to the right file is read, but the card names the file, not the attribute
    copy = crafted(run, tmp_path / "run", number, f"weights/../weights/trial_{number}.pt")
    ctx = dataclasses.replace(context, run_dir=copy, results=RunResults(copy))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    out = tmp_path / "out" / "best"
    report = export_trial(copy, number, out, context=ctx)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {out.parent, out, out / FP32_FILE, out / INT8_FILE, out / CARD_FILE}
    assert report.card["weights"] == {"source": "kept", "file": f"weights/trial_{number}.pt",
                                     "fidelity": "search"}
