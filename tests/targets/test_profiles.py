"""Device profiles: schema, typed keys, interpolation, the profiler and latency-check for real."""

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import yaml

from hwsearch.search.spec import load_spec
from hwsearch.spaces import Candidate, SpaceSpec, build_plan
from hwsearch.spaces._plan import reachable_layers
from hwsearch.targets import Profile, ProfileError, UnpriceableError
from hwsearch.targets._cost import precision_of
from hwsearch.targets._estimate import DEVICES, estimate_profile
from hwsearch.targets._meter import session
from hwsearch.targets._onnx_graph import layer_model, network_model, random_network_weights, random_weights
from hwsearch.targets._profile_format import FEATURES, BlockKey, Calibration, Entry, Sample, block_key
from hwsearch.targets._profile_targets import ProfileTarget, new_profile
from hwsearch.targets._profiling import MAX_GRID_RATIO, describe_check, fit_calibration, profile_space, select_grid
from tests.conftest import REPO, TINY_SPACE, hwsearch_cmd, tiny_spec

TINY = SpaceSpec(**TINY_SPACE)
SHAPE = (1, 8, 8)


def entry(ms: float) -> Entry:
    return Entry(mean_ms=ms, std_ms=0.0, count=1)


def blank_profile() -> Profile:
    p = new_profile("test-device")
    p.overhead_ms = entry(0.005)
    return p


def test_profile_round_trips_with_entries_and_calibration(tmp_path):
    p = blank_profile()
    for layer in reachable_layers(TINY, SHAPE, 10)[:20]:
        p.add(block_key(layer), entry(0.01))
    p.calibration = Calibration(coef={"fp32_ms": 0.9, "ir_int8_layers": 0.001}, offset_ms=0.001, fitted_on=1, samples=[
        Sample(candidate="c8:ir_r1_k3_e1_c8_re_w8a8", input_shape=SHAPE, features={"fp32_ms": 0.1}, measured_ms=0.2)])
    p.save(tmp_path / "p.json")
    again = Profile.load(tmp_path / "p.json")
    assert again == p
    assert oct((tmp_path / "p.json").stat().st_mode & 0o777) == "0o644"


def test_a_wrong_key_or_an_old_schema_is_refused_with_file_and_field(tmp_path):
    data = json.loads(blank_profile().model_dump_json())
    bad_key = tmp_path / "k.json"
    bad_key.write_text(json.dumps({**data, "entries": {"ir|8x8|oops": {"mean_ms": 1, "std_ms": 0, "count": 1}}}))
    with pytest.raises(ProfileError, match=r"k.json: invalid profile.*not a layer key: 'ir\|8x8\|oops'"):
        Profile.load(bad_key)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**data, "schema_version": 1}))
    with pytest.raises(ProfileError, match="old.json: schema_version is 1, this hwsearch reads versions 2, 3"):
        Profile.load(old)
    negative = tmp_path / "n.json"
    negative.write_text(json.dumps({**data, "overhead_ms": {"mean_ms": -1, "std_ms": 0, "count": 1}}))
    with pytest.raises(ProfileError, match=r"n.json.*overhead_ms\.mean_ms"):
        Profile.load(negative)


def test_every_reachable_layer_has_a_key_that_parses_back():
    layers = reachable_layers(SpaceSpec(), (3, 32, 32), 10)
    keys = {block_key(layer) for layer in layers}
    assert len(keys) > 1000
    for k in keys:
        assert BlockKey.parse(str(k)) == k


def test_reachable_layers_cover_every_sampled_candidate():
    import optuna

    from hwsearch.spaces import space

    keys = {block_key(layer) for layer in reachable_layers(TINY, SHAPE, 10)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(100):
        for layer in build_plan(space(study.ask(), TINY), SHAPE, 10).layers:
            assert block_key(layer) in keys


def _pruned_block(mid: int):
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e6_c16_re_w8a8"), SHAPE, 10)
    from dataclasses import replace

    return replace(plan.blocks[0], cmid=mid)


def test_interpolates_between_measured_widths_of_the_same_alignment_class():
    p = blank_profile()
    p.add(block_key(_pruned_block(16)), entry(0.010))
    p.add(block_key(_pruned_block(48)), entry(0.030))
    p.add(block_key(_pruned_block(40)), entry(0.500))  # another class (8): must not be used for 32
    assert p.lookup(_pruned_block(32)).mean_ms == pytest.approx(0.020)
    assert p.lookup(_pruned_block(48)).mean_ms == pytest.approx(0.030)  # exact entries win
    with pytest.raises(UnpriceableError, match=r"ir\|8x8\|8-24-16.*measured in its alignment class: 40"):
        p.lookup(_pruned_block(24))  # class 8: only 40 measured, nothing below it
    with pytest.raises(UnpriceableError, match="16, 48"):
        p.lookup(_pruned_block(64))  # beyond the widest: never extrapolated
    p.add(block_key(_pruned_block(80)), entry(0.050))  # an entry added after lookups is used at once
    assert p.lookup(_pruned_block(64)).mean_ms == pytest.approx(0.040)
    p.add(block_key(_pruned_block(80)), entry(0.070))  # and a re-measured one replaces the old
    assert p.lookup(_pruned_block(64)).mean_ms == pytest.approx(0.050)


def test_the_predictor_raises_on_an_unpriceable_block_and_never_returns_zero(tmp_path):
    p = blank_profile()
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e3_c8_re_w8a8:ir_r1_k3_e1_c16_re_w8a8"), SHAPE, 10)
    for layer in plan.layers:
        if layer.name != "s1.b0":
            p.add(block_key(layer), entry(0.01))
    target = ProfileTarget(p)
    with pytest.raises(UnpriceableError, match=r"layer s1\.b0 \(ir\|4x4\|8-0-16.*on 'test-device'"):
        target.price(plan)
    p.add(block_key(plan.blocks[1]), entry(0.0))  # a zero entry still costs something
    p.calibration = Calibration(coef={"int8_ms": 0.5, "int8_kelems": -10.0})  # absurd: parts would go negative
    cost = ProfileTarget(p).price(plan)
    assert all(ms > 0 for name, ms in cost.blocks if name != "s1.b0") and cost.latency_ms > 0
    assert sum(ms for _, ms in cost.blocks) == pytest.approx(cost.latency_ms)


def test_calibration_fit_recovers_a_known_linear_model():
    """Per-precision and per-kind coefficients, recovered from networks whose times follow them."""
    rng = np.random.default_rng(0)
    truth = {"fp32_ms": 0.9, "int8_ms": 1.1, "fp32_kelems": -0.001, "int8_kelems": -0.0005, "ir_fp32_ms": 0.1,
             "ir_int8_layers": 0.002, "head_fp32_ms": -0.3, "switches": 0.003}
    samples = []
    for i in range(400):
        f = {"fp32_ms": rng.uniform(0.01, 1), "int8_ms": rng.uniform(0.01, 1), "fp32_kelems": rng.uniform(1, 50),
             "int8_kelems": rng.uniform(1, 50), "ir_int8_layers": float(rng.integers(0, 9)),
             "switches": float(rng.integers(0, 3))}
        f["ir_fp32_ms"], f["head_fp32_ms"] = f["fp32_ms"] * rng.uniform(0.5, 0.9), f["fp32_ms"] * rng.uniform(0, 0.2)
        y = sum(truth[k] * v for k, v in f.items()) + 0.01
        samples.append(Sample(candidate=f"c{i}", input_shape=SHAPE, features=f, measured_ms=y + 0.004))
    cal = fit_calibration(samples[:300], overhead_ms=0.004)
    for k in ("fp32_ms", "int8_ms", "int8_kelems", "ir_int8_layers", "switches"):  # the ridge barely moves these
        assert cal.coef[k] == pytest.approx(truth[k], rel=0.05), k
    held_out = [sum(cal.coef.get(k, 0) * v for k, v in s.features.items()) + cal.offset_ms + 0.004
                for s in samples[300:]]
    assert np.allclose(held_out, [s.measured_ms for s in samples[300:]], rtol=0.01)
    assert cal.fit_mape < 0.01 and cal.fitted_on == 300
    few = fit_calibration(samples[:12], overhead_ms=0.004)  # too few for the kinds' coefficients
    assert set(few.coef) <= {f for f in FEATURES if f.split("_")[0] in ("fp32", "int8")} | {"switches"}


def test_int8_layers_run_as_integer_kernels_and_fp32_as_float(tmp_path):
    """The QDQ layout must be the one onnxruntime fuses, or int8 latency measures the wrong thing."""
    for cand in ("c8:ir_r1_k3_e3_c16_se_re_w8a8:ir_r2_k3_e3_c16_hs_w8a8", "c8:ir_r1_k3_e3_c16_se_re_w32a32"):
        plan = build_plan(Candidate.from_string(cand), SHAPE, 10)
        rng = np.random.default_rng(0)
        for model in [layer_model(b, random_weights(b, rng)) for b in plan.blocks] + [
                network_model(plan, random_network_weights(plan, rng))]:
            out = tmp_path / "opt.onnx"
            session(model.SerializeToString(), optimized_path=str(out))
            ops = [n.op_type for n in onnx.load(str(out)).graph.node]
            if precision_of(plan.blocks[0].w_bits, plan.blocks[0].a_bits) == "int8":
                convs = [op for op in ops if "Conv" in op and op != "QLinearConv"]
                assert convs in ([], ["Conv"]), ops  # at most the float head (its logits are float)
                assert ops.count("QLinearConv") >= 3
            else:
                assert "QLinearConv" not in ops and "QuantizeLinear" not in ops


def test_grid_keeps_ends_and_spacing_and_everything_stays_priceable(tmp_path):
    layers = reachable_layers(SpaceSpec(), (3, 32, 32), 10)
    grid = select_grid(layers)
    all_keys = {block_key(layer) for layer in layers}
    assert len(grid) < len(all_keys)
    p = blank_profile()
    for layer in grid:
        p.add(block_key(layer), entry(0.001 * max(block_key(layer).mid, 1)))
    for layer in layers:  # every reachable width is measured or bracketed in its class
        assert p.lookup(layer).mean_ms > 0
    by_class = {}
    for layer in grid:
        k = block_key(layer)
        if k.prunable:
            by_class.setdefault((k.family, k.align), []).append(k.mid)
    for mids in by_class.values():
        mids.sort()
        assert all(b / a <= MAX_GRID_RATIO or i == len(mids) - 2 for i, (a, b) in enumerate(zip(mids, mids[1:])))


@pytest.mark.slow
def test_profiler_measures_a_tiny_space_for_real_and_calibrates(tmp_path):
    path = tmp_path / "tiny.json"
    profile = blank_profile()
    profile_space(profile, TINY, SHAPE, 10, path, networks=10, log=lambda m: None)
    saved = Profile.load(path)
    assert saved.device.measured and saved.calibration.fitted_on == 10 and len(saved.calibration.spaces) == 1
    assert all(e.count >= 50 and e.mean_ms > 0 for e in saved.entries.values())
    target = ProfileTarget(saved)
    for layer in reachable_layers(TINY, SHAPE, 10):
        assert target.layer_latency(layer).mean_ms > 0
    assert saved.calibration.fit_mape < 0.5
    # measured against the reference, its scale settled over the run, its noise floor recorded
    assert saved.reference and saved.reference.bursts > 0 and saved.reference.entry_ci is not None
    assert set(saved.adapters) == {"adapter|8x8x1|uint8", "adapter|8x8x1|float32"}
    check = saved.checks[-1]  # the self-check on fresh networks, stored in the profile
    assert check.n == 30 and check.seed == 1 and 0 <= check.within_10pct <= 1 and -1 <= check.kendall_tau <= 1
    assert check.passed == (check.within_10pct >= 0.9 and check.kendall_tau >= 0.9)
    assert "self-check on 30 fresh networks" in describe_check(check)
    assert check.busy is not None and check.busy > 0  # how busy the host was during it, stored beside it
    # and what other processes took of the host's CPUs beside the profile's runs and the check
    assert saved.reference.neighbours is not None and saved.reference.neighbours >= 0 and saved.reference.cpus
    assert check.neighbours is not None and check.neighbours >= 0 and check.cpus


def test_a_failed_self_check_says_whether_the_host_or_the_model_is_to_blame():
    from hwsearch.targets._profile_format import SelfCheck

    def check(busy, drift=1.02, misses=None, confirmed=None):
        return SelfCheck(space="abc", input_shape=SHAPE, n=30, seed=1, within_10pct=0.8, mape=0.06, kendall_tau=0.93,
                         host_drift=drift, busy=busy, misses=misses, misses_confirmed=confirmed, passed=False,
                         checked_at="now")

    quiet = describe_check(check(1.1))
    assert "FAILED" in quiet and "model's own error" in quiet and "--networks" in quiet and "quiet host" in quiet
    busy = describe_check(check(1.9))
    assert "measure again on a quiet host" in busy and "1.90x their quiet time" in busy and "model's own" not in busy
    moved = describe_check(check(1.1, drift=1.3))  # the host's speed moved since profiling: not the model's fault
    assert "measure again on a quiet host" in moved and "1.30x as slow" in moved
    older = describe_check(check(None))  # a check stored before 'busy' was recorded
    assert "measure again on a quiet host" in older
    # Quiet on the whole, and its misses read the same twice: the model's error, with the count.
    confirmed = describe_check(check(1.1, misses=6, confirmed=6))
    assert "model's own error" in confirmed and "6 of its 6 misses read the same" in confirmed
    # Quiet on the whole, but most misses read otherwise a second time: the host's timings moved.
    moving = describe_check(check(1.16, misses=7, confirmed=1))
    assert "timings moved" in moving and "6 of its 7 misses" in moving and "model's own" not in moving


def _spec_file(tmp_path, **overrides) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(**overrides)))
    return str(path)


@pytest.mark.slow
def test_profile_command_resumes_after_a_kill(tmp_path):
    """Kill -9 once the first save is on disk; the re-run measures only what is missing."""
    space = dict(TINY_SPACE, kernels=[3, 5], activations=["relu", "hswish"], weight_bits=[4, 8, 32])
    spec = _spec_file(tmp_path, space=space)
    out = tmp_path / "dev.json"
    cmd = hwsearch_cmd() + ["profile", "--target", "dev", "--spec", spec, "--out", str(out), "--networks", "8",
                            "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not out.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the profiler finished before its first save: make the space bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(Profile.load(out).entries)
    assert first > 0
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming {out}: {first} layers" in done.stdout
    assert f"{first} already in" in done.stdout
    final = Profile.load(out)
    # killed in the layers' phase or the calibration's (a quiet host measures the layers within
    # one save interval): either way the re-run kept the first run's entries and finished
    assert len(final.entries) >= first and final.calibration.fitted_on == 8
    other = subprocess.run(hwsearch_cmd() + ["profile", "--target", "dev", "--spec", spec, "--out", str(out),
                                             "--threads", "2"], cwd=REPO, capture_output=True, text=True)
    assert other.returncode == 2 and "give another --out" in other.stderr


@pytest.mark.slow
def test_latency_check_reports_json_on_a_tiny_space(tmp_path):
    spec = _spec_file(tmp_path)
    r = subprocess.run(hwsearch_cmd() + ["latency-check", "--target", "local-cpu", "--spec", spec, "--n", "8",
                                         "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 8 and 0 <= report["within_10pct"] <= 1 and report["mape"] >= 0
    assert -1 <= report["kendall_tau"] <= 1 and len(report["worst"]) == 5
    assert all(w["predicted_ms"] > 0 and w["measured_ms"] > 0 for w in report["worst"])
    assert report["host_drift"] > 0 and report["busy"] > 0 and report["host"]["noise"] >= 1
    assert len(report["rows"]) == 8 and 0 <= report["raw"]["within_10pct"] <= 1
    again, missed = report["misses_again"], [r for r in report["rows"] if abs(r["error"]) > 0.10]
    assert again["misses"] == len(missed) and 0 <= again["confirmed"] <= again["misses"]
    assert all(r["measured_again_ms"] > 0 for r in missed)  # each miss measured a second time
    assert not any("measured_again_ms" in r for r in report["rows"] if r not in missed)
    assert report["host"]["others_cpu"] >= 0 and report["host"]["cpus"] >= 1  # what others took beside it
    # Beside a CPU-bound neighbour the check says so, whatever its figures.
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        text = subprocess.run(hwsearch_cmd() + ["latency-check", "--spec", spec, "--n", "4", "--no-progress"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        neighbour.kill()
        neighbour.wait()
    assert text.returncode == 0 and "within +-10%" in text.stdout and "Kendall's tau" in text.stdout
    assert "quiet-host speed" in text.stdout and "busy now" in text.stdout
    taken = float(re.search(r"other processes took ([0-9.]+) of", text.stdout)[1])  # type: ignore[index]
    assert taken >= 0.8 and "CPUs busy on average" in text.stderr and "check again on a quiet host" in text.stderr


def test_targets_lists_measured_and_estimated_profiles():
    r = subprocess.run(hwsearch_cmd() + ["targets"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line and not line.startswith("target")}
    for name in ("rpi4-a72", "phone-a78", "jetson-orin-nano", "mcu-m7"):
        assert "ESTIMATED" in lines[name]
    assert "measured" in lines["local-cpu"] and "measured" in lines["x86-epyc-1t"]


def test_estimated_profiles_say_what_they_rest_on():
    from hwsearch.targets._registry import SHIPPED

    for dev in DEVICES:
        p = Profile.load(SHIPPED / f"{dev.name}.json")
        assert not p.device.measured and len(p.device.sources) >= 4
        # the file is what the code derives: its figures, no table
        assert p.model_dump() == estimate_profile(dev).model_dump() and p.roofline and not p.entries
    slow = Profile.load(SHIPPED / "mcu-m7.json")
    fast = Profile.load(SHIPPED / "phone-a78.json")
    plan = build_plan(
        Candidate.from_string("c16:ir_r2_k3_e4_c24_re_w8a8:ir_r2_k3_e4_c32_re_w8a8:ir_r2_k3_e4_c48_re_w8a8"),
        (3, 32, 32),
        10,
    )
    assert ProfileTarget(slow).price(plan).latency_ms > 10 * ProfileTarget(fast).price(plan).latency_ms


@pytest.mark.slow
def test_a_finished_run_is_repriced_on_another_target_without_retraining(tmp_path):
    import hwsearch.search.engine._runner as runner
    from hwsearch.search.outputs._results import RunResults
    from hwsearch.search.spec import parse_spec

    spec = parse_spec(tiny_spec(search={"trials": 5}))
    runner.run_search(spec, tmp_path / "run", progress=False, log=lambda m: None)
    # An estimated profile of the tiny space, as a file given by path.
    pi = estimate_profile(DEVICES[0])
    pi.save(tmp_path / "pi.json")
    res = RunResults(tmp_path / "run")
    trained = [r for r in res.rows() if r.accuracy is not None and r.state == "complete"]
    again = res.repriced(str(tmp_path / "pi.json"))
    assert {r.number for r in again} == {r.number for r in trained}
    for old, new in zip(sorted(trained, key=lambda r: r.number), sorted(again, key=lambda r: r.number)):
        assert new.accuracy == old.accuracy and new.size_kb == pytest.approx(old.size_kb)
        assert new.latency_ms != old.latency_ms
    t0 = time.perf_counter()
    r = subprocess.run(hwsearch_cmd() + ["pareto", str(tmp_path / "run"), "--target", str(tmp_path / "pi.json")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "re-priced on rpi4-a72" in r.stdout and "ESTIMATED" in r.stdout and time.perf_counter() - t0 < 30
    # a measured table that lacks the space's layers (and has no extension) cannot re-price it
    Profile(device=pi.device.model_copy(update={"measured": True, "name": "board"}), bits=pi.bits,
            overhead_ms=pi.overhead_ms).save(tmp_path / "board.json")
    bad = subprocess.run(hwsearch_cmd() + ["pareto", str(tmp_path / "run"), "--target", str(tmp_path / "board.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no latency for layer" in bad.stderr and "Traceback" not in bad.stderr


def test_the_estimate_command_writes_where_it_is_told_and_nowhere_else(tmp_path):
    from hwsearch.targets._registry import SHIPPED

    before = {f.name: f.stat().st_mtime_ns for f in SHIPPED.iterdir()}
    cli = hwsearch_cmd()
    r = subprocess.run([*cli, "estimate", "--out", str(tmp_path / "est")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    written = sorted(f.name for f in (tmp_path / "est").iterdir())
    assert written == sorted(f"{dev.name}.json" for dev in DEVICES)
    mcu = next(d for d in DEVICES if d.name == "mcu-m7")
    assert Profile.load(tmp_path / "est" / "mcu-m7.json").model_dump() == estimate_profile(mcu).model_dump()
    assert {f.name: f.stat().st_mtime_ns for f in SHIPPED.iterdir()} == before  # the package is left alone
    assert "usage" in subprocess.run([*cli, "estimate", "--help"], capture_output=True, text=True).stdout


def test_a_lookup_index_build_cut_short_leaves_no_half_index(monkeypatch):
    """A Streamlit rerun stops the page's thread wherever it is, here in the middle of building a
    profile's lookup index; the next lookup must still find every layer."""
    from hwsearch.targets import _profile_format

    target = ProfileTarget.load(REPO / "targets" / "profiles" / "x86-epyc-1t.json")
    spec = load_spec(REPO / "examples" / "quickstart.yaml")
    plan = build_plan(Candidate.from_string("c16:ir_r2_k5_e6_c16_p0.25:ir_r2_k5_e6_c32_p0.25:ir_r2_k5_e6_c48_p0.25"),
                      (1, 8, 8), 10)
    assert spec.space  # the quickstart's space holds this candidate's choices
    whole = target.price(plan).latency_ms
    target.profile._index = None
    real, calls = _profile_format._index_one, []

    def cut_short(*args):
        calls.append(1)
        if len(calls) == 50:
            raise KeyboardInterrupt  # what a stopped thread sees
        return real(*args)

    monkeypatch.setattr(_profile_format, "_index_one", cut_short)
    with pytest.raises(KeyboardInterrupt):
        target.price(plan)
    assert target.price(plan).latency_ms == whole


def test_an_estimate_is_labelled_by_its_file_however_it_is_passed(tmp_path):
    """``measured: false`` labels a target an estimate whether it is named or given by path: in
    ``is_estimate``, in a run searched on it (``RunResults.target_estimated``) and in ``pareto``."""
    import hwsearch.search.engine._runner as runner
    from hwsearch.search.outputs._results import RunResults
    from hwsearch.search.spec import parse_spec
    from hwsearch.targets import is_estimate

    pi = estimate_profile(DEVICES[0])
    path = tmp_path / "my-board.json"  # a name no registered target has
    pi.save(path)
    assert is_estimate(str(path)) and is_estimate("rpi4-a72")
    assert not is_estimate("local-cpu") and not is_estimate("x86-epyc-1t")
    spec = parse_spec(tiny_spec(target=str(path), search={"trials": 2}))
    runner.run_search(spec, tmp_path / "run", progress=False, log=lambda m: None)
    assert RunResults(tmp_path / "run").target_estimated is True
    r = subprocess.run(hwsearch_cmd() + ["pareto", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"on {path} (ESTIMATED from spec sheets, not measured; estimate, x" in r.stdout
    assert "published measurements" in r.stdout  # its validation's band
