"""Layers measured in the state a network runs them in: at more than one thread, a layer's entry is
the smaller of its time alone and what one more copy of it costs beside the first (``layer_method``
'started'), for real with onnxruntime."""

import time

import numpy as np
import pytest

from hwsearch.spaces import Candidate, build_plan
from hwsearch.targets._cost import Latency
from hwsearch.targets._meter import random_feed, session
from hwsearch.targets._onnx_graph import (
    layer_model,
    layer_shapes,
    network_model,
    random_network_weights,
    random_weights,
)
from hwsearch.targets._profile_format import Profile, ProfileError
from hwsearch.targets._profile_targets import LocalCpuTarget
from hwsearch.targets._profiling import COPIES, layer_method, measure_layer_entries, measure_layers

CAND = "c8:ir_r1_k3_e3_c8_re_w8a8:ir_r1_k3_e4_c16_s2_se_hs_w32a32:ir_r1_k3_e1_c16_fu_re_w8a8"


def network_bytes(text: str) -> bytes:
    plan = build_plan(Candidate.from_string(text), (1, 8, 8), 10)
    return network_model(plan, random_network_weights(plan, np.random.default_rng(0))).SerializeToString()


def test_copies_side_by_side_each_compute_the_layer_on_the_same_input():
    plan = build_plan(Candidate.from_string(CAND), (3, 16, 16), 10)
    rng = np.random.default_rng(0)
    for layer in plan.layers:  # stem, an int8 block, an fp32 block with squeeze-excite, a fused block, head
        weights = [random_weights(layer, rng) for _ in range(3)]
        side_by_side = session(layer_model(layer, weights).SerializeToString())
        feed = random_feed(side_by_side, layer_shapes(layer)[0])
        outs = side_by_side.run(None, feed)
        assert len(outs) == 3 and all(o.shape == layer_shapes(layer)[1] for o in outs)
        for w, out in zip(weights, outs):
            alone = session(layer_model(layer, w).SerializeToString())
            np.testing.assert_allclose(alone.run(None, feed)[0], out, rtol=1e-5, atol=1e-5, err_msg=layer.name)
        assert not np.array_equal(outs[0], outs[1])  # each copy has its own weights: nothing is shared


def test_one_thread_measures_layers_alone_and_more_measure_them_started():
    assert layer_method(1) == "alone" and layer_method(2) == "started" and layer_method(4) == "started"
    assert COPIES >= 3


def test_a_two_thread_profile_measures_layers_started_and_says_so(tmp_path):
    path = tmp_path / "p.json"
    target = LocalCpuTarget(threads=2, path=path)
    plan = build_plan(Candidate.from_string(CAND), (1, 8, 8), 10)
    cost = target.price(plan)
    assert cost.latency_ms > 0 and all(ms > 0 for _, ms in cost.blocks)
    saved = Profile.load(path)
    assert saved.layer_method == "started" and saved.device.threads == 2
    assert all(e.mean_ms > 0 and e.count >= 3 for e in saved.entries.values())
    # Entries measured alone do not add up with started ones: such a cache is measured again ...
    saved.layer_method = "alone"
    saved.save(path)
    again = LocalCpuTarget(threads=2, path=path)
    assert again.profile.layer_method == "started" and not again.profile.entries
    # ... and a profile is never topped up by the other method.
    with pytest.raises(ProfileError, match="do not add up"):
        measure_layers(saved, plan.layers, None, 2, "CPUExecutionProvider")
    # A cache whose workers were stopped after every run (before 2026-12-07) is measured again too.
    assert again.profile.reference.spinning
    again.profile.reference.spinning = False
    again.profile.save(path)
    assert LocalCpuTarget(threads=2, path=path).profile.reference.spinning


def test_at_two_threads_workers_spin_and_readings_are_rounds_of_back_to_back_runs():
    from hwsearch.targets._meter import SPIN_MIN_RUNS, SPIN_ROUNDS, SPIN_RUNS, Meter

    small, big = network_bytes("c8:ir_r1_k3_e1_c8_re_w32a32"), network_bytes("c16:ir_r2_k5_e6_c32_se_hs_w32a32")
    two = session(small, threads=2)
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default kept
        two.get_session_options().get_session_config_entry("session.force_spinning_stop")
    m = Meter(threads=2)
    bursts = len(m.ref_bursts)
    r_small, r_big = m.readings([two, session(big, threads=2)])
    assert r_big.ratio > r_small.ratio > 0
    ran = [r.rounds + r.rejected for r in (r_small, r_big)]  # at least SPIN_ROUNDS, more for a noisy reading
    assert all(SPIN_ROUNDS <= n <= 2 * m.max_rounds for n in ran)
    # a burst runs 3 to 12 times, as many as fit in the meter's window
    for r, n in zip((r_small, r_big), ran):
        assert n * SPIN_MIN_RUNS <= r.runs <= n * SPIN_RUNS
    # the reference timed before the first round and after every round, logged as noise
    assert len(m.ref_bursts) == bursts + 1 + max(ran)  # probes are not logged
    assert m.latency(r_small).mean_ms == pytest.approx(m.reference_ms * r_small.ratio)  # ms on the meter's scale


def test_at_two_threads_a_short_batch_is_filled_with_more_sessions_of_its_graphs():
    from hwsearch.targets._meter import SPIN_ROUNDS, SPIN_SESSIONS, Meter, Reading, pooled

    m = Meter(threads=2)
    small, big = network_bytes("c8:ir_r1_k3_e1_c8_re_w32a32"), network_bytes("c16:ir_r2_k5_e6_c32_se_hs_w32a32")
    seen = []
    real = m.readings
    m.readings = lambda sessions, feeds: seen.append(len(sessions)) or real(sessions, feeds)
    r_small, r_big = m.measure_readings([small, big], [(1, 1, 8, 8), None])
    assert seen == [SPIN_SESSIONS]  # 12 sessions of each graph, measured together
    assert r_big.ratio > r_small.ratio > 0
    assert r_small.rounds + r_small.rejected >= SPIN_SESSIONS // 2 * SPIN_ROUNDS  # their rounds pooled
    (lat,) = m.measure([small])
    assert seen[-1] == SPIN_SESSIONS and lat.mean_ms > 0
    # the pool: the median session, its error from the sessions' spread or their own, whichever is larger
    one = pooled([Reading(1.0, 0.01, 8, 0, 40), Reading(1.1, 0.01, 8, 1, 40), Reading(3.0, 0.01, 9, 0, 40)])
    assert one.ratio == 1.1 and (one.rounds, one.rejected, one.runs) == (25, 1, 120)
    assert one.sem == pytest.approx(1.2533 * 1.4826 * 0.1 / np.sqrt(3))
    assert pooled([Reading(1.0, 0.5, 8, 0, 40)] * 4).sem == pytest.approx(0.5 / 2)
    assert Meter(threads=1).measure_readings([small, big])[0].rounds >= 7  # one thread: a session per graph


def test_at_two_threads_a_spiked_round_is_rejected_and_measured_again():
    from hwsearch.targets._meter import SPIN_ROUNDS, Meter

    class Spiky:
        """A real 2-thread session whose runs sleep during a chosen stretch of calls."""

        def __init__(self, sess, start: int, stop: int) -> None:
            self.sess, self.start, self.stop, self.calls = sess, start, stop, 0

        def get_inputs(self):
            return self.sess.get_inputs()

        def run(self, names, feed):
            self.calls += 1
            if self.start <= self.calls < self.stop:
                time.sleep(0.002)
            return self.sess.run(names, feed)

    blob = network_bytes("c8:ir_r1_k3_e1_c8_re_w32a32")
    m = Meter(threads=2, window_s=0.0005, ci=1e-6)  # every reading runs to max_rounds
    plain = m.readings([session(blob, threads=2)])[0]
    # calls 120-159 sleep: a stretch of whole bursts (3 to 12 runs each, one untimed run before) once
    # the first SPIN_ROUNDS rounds are in (at most 13 calls each)
    spiky = Spiky(session(blob, threads=2), start=9 * 13, stop=9 * 13 + 40)
    reading = m.readings([spiky])[0]
    assert spiky.calls > spiky.stop  # the stretch was run through ...
    assert reading.rejected >= 1  # ... its rounds dropped ...
    assert reading.rounds >= SPIN_ROUNDS  # ... and replaced by others
    # a stored spike reads 2 ms / 0.02 ms, 40-100x; a session's level moves up to 3x on this host
    assert reading.ratio < plain.ratio * 10
    assert m.host()["rejected_rounds"] >= reading.rejected


def test_idle_sessions_workers_are_parked_between_their_bursts_and_woken_for_them():
    import os

    from hwsearch.targets._meter import _WORKERS, Meter, can_park, reference_model

    if not can_park():
        pytest.skip("this process may not raise a thread's priority back (no CAP_SYS_NICE, ulimit -e below 20)")
    blob = reference_model().SerializeToString()
    a, b = session(blob, threads=2), session(blob, threads=2)
    (wa,), (wb,) = _WORKERS[a], _WORKERS[b]  # one worker each at 2 threads, its thread known
    assert wa != wb and str(wa) in os.listdir("/proc/self/task")
    m = Meter(threads=2)
    assert m.parking and m.host()["parked"] == 1.0  # reported with the host's noise
    policies = []
    real_run = b.run

    def run_b(*args):  # while b runs, a's worker is parked and b's is not
        policies.append((os.sched_getscheduler(wa), os.sched_getscheduler(wb)))
        return real_run(*args)

    b.run = run_b
    m._runs(a, random_feed(a))  # a timed, then parked
    assert os.sched_getscheduler(wa) == os.SCHED_IDLE
    m.readings([a, b])
    assert policies and set(policies) == {(os.SCHED_IDLE, os.SCHED_OTHER)}
    # once the readings are done every worker is back at the normal priority, for whatever runs next
    assert os.sched_getscheduler(wa) == os.sched_getscheduler(wb) == os.SCHED_OTHER


class RecordingMeter:
    """A meter at 2 threads that hands back given times: the arithmetic of an entry, without timing."""

    threads = 2

    def __init__(self, ms: dict[int, float]) -> None:
        self.ms, self.models = ms, []

    def measure(self, models, shapes):
        self.models += models
        return [Latency(self.ms[len(m.graph.output)], 0.001, 50) for m in models]


def test_a_started_entry_is_one_more_copy_over_the_first():
    plan = build_plan(Candidate.from_string(CAND), (1, 8, 8), 10)
    m = RecordingMeter({1: 0.010, COPIES: 0.010 + (COPIES - 1) * 0.003})
    (entry,) = measure_layer_entries(plan.layers[1:2], 0.004, m)
    assert [len(g.graph.output) for g in m.models] == [1, COPIES]  # the layer, then its copies, together
    assert entry.mean_ms == pytest.approx(0.003)  # below alone's 0.010 - 0.004: the wake-up is not in it
    # A copy costing more than the layer alone (its output handed back outweighs a tiny layer): alone
    (small,) = measure_layer_entries(plan.layers[1:2], 0.004, RecordingMeter({1: 0.006, COPIES: 0.006 + 3 * 0.005}))
    assert small.mean_ms == pytest.approx(0.002)
    # Noise can make the copies read no slower than one: the entry stays a small positive share, never 0.
    (floor,) = measure_layer_entries(plan.layers[1:2], 0.004, RecordingMeter({1: 0.010, COPIES: 0.009}))
    assert floor.mean_ms == pytest.approx(0.05 * 0.010)


def test_a_process_that_may_not_wake_parked_threads_warns_and_measures_unparked():
    """Without CAP_SYS_NICE (and ``ulimit -e`` 0) a thread cannot go back from SCHED_IDLE: the
    meter finds that out on a thread of its own, says so, and times its sessions all the same."""
    import shutil
    import subprocess
    import sys

    if shutil.which("setpriv") is None:
        pytest.skip("util-linux's setpriv is needed to drop CAP_SYS_NICE")
    code = """
import os, warnings
from hwsearch.targets._meter import Meter, can_park, reference_model, session, _WORKERS
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = Meter(threads=2)
s = session(reference_model().SerializeToString(), threads=2)
(reading,) = m.readings([s])
(worker,) = _WORKERS[s]
print(can_park(), m.parking, m.host()["parked"] == 0.0, reading.ratio > 0,
      os.sched_getscheduler(worker) == os.SCHED_OTHER, any("cannot be parked" in str(w.message) for w in caught))
"""
    drop = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", "--"]
    done = subprocess.run([*drop, sys.executable, "-c", "import os; os.nice(0)"], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"setpriv cannot drop CAP_SYS_NICE here: {done.stderr.decode()[-200:]}")
    out = subprocess.run(["bash", "-c", 'ulimit -e 0 && exec "$@"', "bash", *drop, sys.executable, "-c", code],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True", "True", "True", "True"]
