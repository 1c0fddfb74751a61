"""A device bundle, for real: written here, measured by its stand-alone measure.py in a Python
that has only numpy and onnxruntime (killed once with SIGKILL, then resumed), imported back."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from hwsearch.spaces import SpaceSpec, build_plan
from hwsearch.spaces._candidate import Candidate
from hwsearch.targets import Profile, ProfileError
from hwsearch.targets._bundle import Timings, write_bundle
from hwsearch.targets._layouts import layer_layout
from hwsearch.targets._profile_format import block_key
from hwsearch.targets._profile_targets import ProfileTarget
from hwsearch.targets._profiling import select_grid
from tests.conftest import TINY_SPACE, hwsearch_cmd

SHAPE = (1, 8, 8)


def _bare_python(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """This interpreter without site-packages (-S), seeing only numpy and onnxruntime: a device
    where nothing else is installed."""
    import numpy
    import onnxruntime

    iso = tmp_path / "only-numpy-and-onnxruntime"
    iso.mkdir()
    site = Path(numpy.__file__).parent.parent
    for name in ("numpy", "numpy.libs", "onnxruntime"):
        if (site / name).exists():
            (iso / name).symlink_to(site / name)
    assert Path(onnxruntime.__file__).parent.parent == site
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return [sys.executable, "-S"], {**env, "PYTHONPATH": str(iso)}


def test_a_bundle_is_measured_with_numpy_and_onnxruntime_only_resumes_after_a_kill_and_imports(tmp_path):
    from hwsearch.spaces._plan import reachable_layers

    config = SpaceSpec(**TINY_SPACE)
    bundle = tmp_path / "bundle"
    manifest = write_bundle(bundle, config, SHAPE, 3, networks=12, log=lambda m: None)
    kinds = [g["kind"] for g in manifest["graphs"]]
    assert kinds.count("layer") == len(select_grid(reachable_layers(config, SHAPE, 3)))
    assert (kinds.count("calibration"), kinds.count("check"), kinds.count("adapter")) == (12, 50, 2)
    python, env = _bare_python(tmp_path)
    for module in ("torch", "hwsearch"):  # nothing of the kind is there
        r = subprocess.run([*python, "-c", f"import {module}"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 1 and f"No module named '{module}'" in r.stderr
    timings = bundle / "timings.json"
    run = subprocess.Popen([*python, str(bundle / "measure.py")], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (timings.exists() and json.loads(timings.read_text())["readings"]):
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    first = json.loads(timings.read_text())  # a whole file: written atomically
    assert 0 < len(first["readings"]) < len(manifest["graphs"]) and not first["complete"]
    with pytest.raises(ProfileError, match="not measured yet.*resumes"):
        Timings(timings)
    r = subprocess.run([*python, str(bundle / "measure.py")], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(first['readings'])} measured before" in r.stdout and "about" in r.stdout  # progress
    done = json.loads(timings.read_text())
    assert done["complete"] and len(done["sessions"]) == 2 and set(done["readings"]) == {g["id"] for g in
                                                                                         manifest["graphs"]}
    assert all(done["readings"][k] == v for k, v in first["readings"].items())  # kept, not measured again
    # each run counted what other processes took of the device's CPUs beside it (Linux's /proc/stat)
    assert all(run["others_cpu"] >= 0 and run["cpus"] >= 1 for run in done["sessions"])
    # another thread count cannot resume it (its readings would mix two settings)
    bad = subprocess.run([*python, str(bundle / "measure.py"), "--threads", "2"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "cannot be resumed here" in bad.stderr

    out = tmp_path / "device.json"
    r = subprocess.run([*hwsearch_cmd(), "profile", "--import", str(timings), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    profile = Profile.load(out)
    assert profile.device.measured and profile.device.name == "device" and profile.reference is not None
    assert profile.reference.neighbours == max(r["others_cpu"] + r["steal_cpu"] for r in done["sessions"])
    assert len(profile.entries) == kinds.count("layer") and len(profile.adapters) == 2
    assert profile.calibration.fitted_on == 12 and manifest["fingerprint"] in profile.calibration.spaces
    (check,) = profile.checks
    assert check.n == 30 and 0 <= check.within_10pct <= 1 and "self-check on 30 fresh networks" in r.stdout
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e3_c8_re_w8a8:ir_r1_k3_e1_c16_re_w32a32"), SHAPE, 3)
    assert ProfileTarget(profile).price(plan).latency_ms > profile.overhead_ms.mean_ms
    # the layouts at each layer's edges, read on the "device" from the graph its onnxruntime optimised
    # (no onnx there), are those this host's onnx reads (the same onnxruntime)
    assert profile.layouts
    layers = {str(block_key(x)): x for x in select_grid(reachable_layers(config, SHAPE, 3))}
    read = {k: e.layout for k, e in profile.entries.items()}
    here = {k: layer_layout(layers[k], onnx.load(bundle / g["file"])) for k, g in
            ((g["key"], g) for g in manifest["graphs"] if g["kind"] == "layer")}
    assert read == here and {lay.in_ for lay in read.values()} >= {"nchwc", "nhwc"}  # fp32 and int8 layers
    # the latency check at home, from the device's timings of the check networks
    r = subprocess.run([*hwsearch_cmd(), "latency-check", "--target", str(out), "--timings", str(timings), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 50 and report["host"] == done["host"] and np.isfinite(report["mape"])


def test_a_bundle_folder_holding_another_bundle_is_refused(tmp_path):
    config = SpaceSpec(**TINY_SPACE)
    write_bundle(tmp_path / "b", config, SHAPE, 3, networks=6, log=lambda m: None)
    again = write_bundle(tmp_path / "b", config, SHAPE, 3, networks=6, log=lambda m: None)  # the same: kept
    assert again["id"] == json.loads((tmp_path / "b" / "manifest.json").read_text())["id"]
    with pytest.raises(ValueError, match="holds another bundle"):
        write_bundle(tmp_path / "b", config, SHAPE, 10, networks=6, log=lambda m: None)


def test_the_bundle_command_writes_the_spec_space(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "dataset": {"name": "digits"}, "space": TINY_SPACE}))
    r = subprocess.run([*hwsearch_cmd(), "profile", "--bundle", str(tmp_path / "b"), "--spec", str(spec),
                        "--networks", "6"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["input_shape"] == [1, 8, 8] and manifest["num_classes"] == 10 and "measure.py" in r.stdout
    bad = subprocess.run([*hwsearch_cmd(), "profile", "--import", str(tmp_path / "b" / "timings.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--out" in bad.stderr


def test_a_bundle_of_two_threads_carries_each_layers_copies_and_imports_them_started(tmp_path):
    """The arithmetic of the import, on timings written here (every layer alone 0.5 of the reference,
    its copies 0.5 + 3 x 0.1): the entry is one more copy's cost, the smaller of the two."""
    from hwsearch.spaces._plan import reachable_layers
    from hwsearch.targets._bundle import import_timings
    from hwsearch.targets._profiling import COPIES

    config = SpaceSpec(**TINY_SPACE)
    bundle = tmp_path / "bundle"
    manifest = write_bundle(bundle, config, SHAPE, 3, threads=2, networks=12, log=lambda m: None)
    layers = [g for g in manifest["graphs"] if g["kind"] == "layer"]
    copies = {g["key"]: g for g in manifest["graphs"] if g["kind"] == "copies"}
    assert len(layers) == len(select_grid(reachable_layers(config, SHAPE, 3))) and set(copies) == {
        g["key"] for g in layers}
    assert all(len(onnx.load(bundle / g["file"]).graph.output) == COPIES for g in copies.values())
    one_thread = write_bundle(tmp_path / "one", config, SHAPE, 3, threads=1, networks=12, log=lambda m: None)
    assert not [g for g in one_thread["graphs"] if g["kind"] == "copies"]  # alone, as ever

    ratio = {"layer": 0.5, "copies": 0.5 + (COPIES - 1) * 0.1, "overhead": 0.05, "adapter": 0.2}
    readings = {g["id"]: {"ratio": ratio.get(g["kind"], 1.0 + 0.01 * i), "sem": 0.001, "rounds": 7, "rejected": 0,
                          "runs": 50, "session": 0} for i, g in enumerate(manifest["graphs"])}
    state = {"bundle": manifest["id"], "host": "a device", "machine": "aarch64", "python": "3.11", "onnxruntime": "1",
             "threads": 2, "provider": "CPUExecutionProvider", "readings": readings, "complete": True,
             "sessions": [{"started": "2026-12-07T00:00:00+00:00", "reference_quiet_ms": 0.2, "bursts": 100,
                           "noise": 1.0}]}
    (bundle / "timings.json").write_text(json.dumps(state))
    profile = import_timings(bundle / "timings.json", tmp_path / "device.json", log=lambda m: None)
    assert profile.layer_method == "started" and profile.device.threads == 2
    assert all(e.mean_ms == pytest.approx(0.1 * 0.2) for e in profile.entries.values())  # not (0.5 - 0.05) x 0.2
    assert all(e.mean_ms == pytest.approx((0.2 - 0.05) * 0.2) for e in profile.adapters.values())
    assert not profile.layouts  # timings of a measure.py that did not record the layers' optimised graphs
