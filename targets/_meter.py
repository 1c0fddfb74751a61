"""Time ONNX graphs with onnxruntime on a noisy host: against a reference, in interleaved rounds.

Why not simply a median of many runs: on shared hosts (cloud VMs, a laptop running a browser) the
speed of the CPU changes by up to 2x within a second as neighbours come and go, and SIMD-heavy
kernels slow down more than scalar code. Measured on a 2-core Intel Xeon VM: a fixed network's
median over 200 runs moved between 40 and 68 us within one process, and whole processes ran
1.7x slower than others. A profile measured in one such moment and checked in another disagrees
by that much, whatever the latency model.

So a :class:`Meter` never times a graph alone. It times it in short bursts, each burst between
two bursts of a fixed *reference network* (fp32 and int8 layers, like the graphs it measures),
and keeps the ratio of the burst's median to the neighbouring reference's. A round visits every
graph of a batch in turn, so slow moments hit them alike; a graph's reading is the median of its
rounds' ratios, with a confidence interval. A round whose reference burst is far slower than the
batch's (a spike) is dropped and measured again, never stored; a reading whose interval is wider
than asked gets more rounds. A ratio becomes milliseconds through ``reference_ms``: the
reference's own median time, measured when the meter starts or given (a profile keeps the value
it was measured with, so entries measured in later processes stay on one scale).

At more than one thread, sessions keep their workers spinning between runs, as a user's own
session does (see :func:`session`); a round is a burst of back-to-back runs per graph, and the
workers of the sessions not being timed are parked at the lowest scheduling priority (see
:meth:`Meter._spinning_readings` and :meth:`Meter._park`). Rounds outlying a graph's others are
dropped and measured again there too, and so are rounds beside a reference burst slower than
:data:`SPIN_GATE` times its quiet time (a slow stretch of the host, which slows the reference more
than the graphs); the batch waits for a quiet host as below.

Contract: :meth:`Meter.measure` is not thread safe (one meter per thread); it returns one
:class:`~hwsearch.targets._cost.Latency` per graph, in milliseconds, ``std_ms`` the standard error of the
median ratio scaled to milliseconds, ``count`` the timed runs. :meth:`Meter.host` reports the
noise of the host as the meter saw it.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwsearch.targets._cost import Latency
from hwsearch.targets._errors import TargetError

if TYPE_CHECKING:
    import onnx
    from onnxruntime import InferenceSession  # untyped: Any to mypy

Feed = dict[str, np.ndarray]  # a session's inputs by name

DEFAULT_PROVIDER = "CPUExecutionProvider"
# The reference: a small network with fp32 and int8 stages (the kinds of kernels profiles hold),
# about 20 us, half of it the runtime's per-call overhead. Chosen by measurement on the busy Xeon
# VM: between its busy and quiet moments (runs 2x slower), the ratios of 22 layers and networks
# (9 us to 0.3 ms) to it moved by 6% on average, against 14% for a 3x16x16 network of 32 us
# (SIMD-heavy code slows down more than the runtime's scalar code) and 8% for an empty graph.
REFERENCE_CANDIDATE = "c8:ir_r1_k3_e3_c8_re_w32a32:ir_r1_k3_e3_c16_re_w8a8:ir_r1_k3_e1_c16_hs_w32a32"
REFERENCE_INPUT = (1, 8, 8)
# At more than one thread, a reference whose operators run in parallel, as the measured graphs'
# do: the small one above runs mostly on one thread, so it missed the moments the second core was
# slow. Measured on the 2-core AMD EPYC VM at 2 threads, 3x32x32: the check's median error between a
# profile's process and the check's was +10% with the small reference (38% of 50 networks within
# 10%), +3% with this one (58%); about 30 us at 1 thread, 20 us at 2.
PARALLEL_REFERENCE_CANDIDATE = "c16:ir_r1_k3_e3_c16_re_w32a32:ir_r1_k3_e3_c24_re_w8a8:ir_r1_k3_e1_c32_hs_w32a32"
PARALLEL_REFERENCE_INPUT = (3, 32, 32)
RefSpec = tuple[str, tuple[int, int, int]]  # a reference network: candidate string, input shape


def reference_for(threads: int) -> RefSpec:
    """The reference network a new profile at this thread count is measured against."""
    if threads > 1:
        return PARALLEL_REFERENCE_CANDIDATE, PARALLEL_REFERENCE_INPUT
    return REFERENCE_CANDIDATE, REFERENCE_INPUT
REF_RUNS = 3  # reference runs per burst (median)
# At more than one thread: rounds of back-to-back runs (see Meter._spinning_readings).
SPIN_RUNS = 12  # runs per burst at most; the burst's figure is their median ...
SPIN_MIN_RUNS = 3  # ... and at least, the burst ending once it has run for the meter's window_s (a
# millisecond layer is run 3 times a round, a 10 us one 12 times)
SPIN_ROUNDS = 8  # rounds per reading, at least
SPIN_GATE = 1.3  # a round counts while the reference's bursts either side of it run within this factor
# of its quiet-host time lately (Meter.floor_ms; see Meter._spinning_readings) ...
FLOOR_BURSTS, FLOOR_GROUPS = 16, 64  # ... the lowest median of 16 consecutive bursts among the last 64 such groups
SPIN_SESSIONS = 24  # sessions in a batch measured by Meter.measure, at least: a smaller one is filled
# with more sessions of its graphs (see Meter.measure_readings)
INIT_SPINNING_S = 0.5  # the reference timed when a meter starts, for its scale (see Meter.__init__)
QUIET_PERCENTILE = 5  # the reference's quiet-host time: this percentile of its bursts
GATE = 1.4  # a round counts while the reference runs within this factor of its quiet-host time ...
# ... for up to WAIT_S seconds of a batch, spent probing the host with the reference alone while it
# is busy; then any round that is not spiked counts, and the batch is counted as busy. A batch that
# waited in vain halves the next batch's wait (down to MIN_WAIT_S: a host busy all along is not
# waited on for ever), a batch that found quiet moments doubles it back. Why seconds, not rounds:
# on the 2-core Intel Xeon VM busy stretches last seconds (the reference's 5 s windows ran at 1.0x
# or 1.3x), longer than the 60 rounds (about 2 s) a batch used to wait; and rounds measured busy
# are biased by size (3x32x32, a check with 2 of 3 batches measured at 2x busy: small networks
# read 5-9% fast, large ones up to 20% slow, against a quiet check of the same networks).
WAIT_S = 30.0
MIN_WAIT_S = 2.0
SPIKE = 1.35  # a reference burst this much slower than the batch's median marks a spiked round
OUTLIER = 1.25  # a round ratio this far above the graph's lower quartile, or below its median, is re-measured


def host_name() -> str:
    """This host's CPU model, as the OS reports it (``/proc/cpuinfo``), else the platform's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class CpuMark:
    """Where the host's CPU time stood at a moment (see :func:`cpu_mark`), in seconds."""

    wall_s: float
    busy_s: float  # every CPU's time not idle nor stolen (user, nice, system, irq, softirq), summed
    steal_s: float  # the time the hypervisor gave this VM's CPUs to other guests, summed
    own_s: float  # this process's CPU time, all its threads


def cpu_mark() -> CpuMark | None:
    """Where the host's CPU time stands now, from Linux's ``/proc/stat`` (None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if fields[:1] != ["cpu"] or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) / tick for x in fields[1:9])
    return CpuMark(time.monotonic(), user + nice + system + irq + softirq, steal, time.process_time())


def neighbours_since(mark: CpuMark | None) -> dict[str, float]:
    """The CPU time others took since ``mark``, on average, in CPUs: ``others_cpu`` (other processes of
    this host) and ``steal_cpu`` (other guests of a VM's hypervisor), with ``cpus``, the host's
    count; empty where the host does not say (see :func:`cpu_mark`)."""
    now = cpu_mark()
    if mark is None or now is None or now.wall_s - mark.wall_s <= 0:
        return {}
    wall = now.wall_s - mark.wall_s
    others = (now.busy_s - mark.busy_s) - (now.own_s - mark.own_s)
    return {"others_cpu": max(0.0, others / wall), "steal_cpu": (now.steal_s - mark.steal_s) / wall,
            "cpus": float(os.cpu_count() or 1)}


class HostTooNoisy(TargetError, RuntimeError):
    """The host's speed varied so much that readings could not reach the asked precision."""


def session(model_bytes: bytes, threads: int = 1, provider: str = DEFAULT_PROVIDER,
            optimized_path: str | None = None, config: dict[str, str] | None = None) -> InferenceSession:
    """An inference session with a fixed thread count and full graph optimisation (``config``:
    more of onnxruntime's session config entries).

    At more than one thread its workers spin between runs, onnxruntime's default and what a user's
    own session does. Until 2026-12-07 hwsearch stopped them when a run returned
    (``session.force_spinning_stop``), so that an idle session would not spin on the cores of the
    next one timed; every run then paid a worker's wake-up, which on the 2-core AMD EPYC VM cost
    25-70 us and differed from process to process: the same 30 quickstart networks as ratios to a
    reference agreed within 10% between two processes on 47-75% of them, against 100% with
    spinning kept (``bench/pinning.py``), and the reference took 76-123 us against 52 us. Spinning
    sessions are timed as :class:`Meter` does at more than one thread (see there). Capping the
    spin instead (``session.intra_op.spin_duration_us``, 1 or 5 ms, the cores left idle after each
    burst until the workers slept) made the 30 networks' ratios agree between processes on only
    37-77% (1 ms) and 83-97% (5 ms) of them, against 100% uncapped."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    before = _thread_ids() if threads > 1 else set()
    sess = ort.InferenceSession(model_bytes, opts, providers=[provider])
    if threads > 1:  # its worker threads, the last ones started (a process's first session starts one more)
        _WORKERS[sess] = sorted(_thread_ids() - before)[-(threads - 1):]
    return sess


# The worker threads of the sessions :func:`session` made, where the OS lists them (Linux): a meter
# parks an idle session's workers (see Meter._park). Sessions made concurrently in two threads of a
# process could be given each other's workers: make sessions to be timed in one thread.
_WORKERS: weakref.WeakKeyDictionary[InferenceSession, list[int]] = weakref.WeakKeyDictionary()


def _thread_ids() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def can_park() -> bool:
    """Whether this process may park threads (``SCHED_IDLE``, see :meth:`Meter._park`) and wake
    them again, tried on a thread of its own: going back from ``SCHED_IDLE`` needs ``CAP_SYS_NICE``
    (root, outside most containers) or a ``RLIMIT_NICE`` of 20 or more (``ulimit -e``)."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    import threading

    done = threading.Event()
    thread = threading.Thread(target=done.wait, daemon=True)
    thread.start()
    tid = thread.native_id
    try:
        assert tid is not None
        _set_policy([tid], os.SCHED_IDLE)
        _set_policy([tid], os.SCHED_OTHER)
        return True
    except OSError:
        return False
    finally:
        done.set()
        thread.join()


def _set_policy(tids: Sequence[int], policy: int) -> None:
    for tid in tids:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except ProcessLookupError:  # the thread has ended (its session was freed)
            pass


def random_feed(sess: InferenceSession, input_shape: Sequence[int] | None = None, seed: int = 0) -> Feed:
    """A random input for a session's single input (uint8 pixels or float values)."""
    inp = sess.get_inputs()[0]
    shape = tuple(input_shape or [d if isinstance(d, int) else 1 for d in inp.shape])
    rng = np.random.default_rng(seed)
    if inp.type == "tensor(uint8)":
        return {inp.name: rng.integers(0, 256, shape, dtype=np.uint8)}
    return {inp.name: rng.standard_normal(shape).astype(np.float32)}


def reference_model(reference: RefSpec = (REFERENCE_CANDIDATE, REFERENCE_INPUT)) -> onnx.ModelProto:
    """A reference network's ONNX graph (fixed weights): what every reading is relative to."""
    from hwsearch.spaces._candidate import Candidate
    from hwsearch.spaces._plan import build_plan
    from hwsearch.targets._onnx_graph import network_model, random_network_weights

    candidate, input_shape = reference
    plan = build_plan(Candidate.from_string(candidate), input_shape, 10)
    return network_model(plan, random_network_weights(plan, np.random.default_rng(0)))


@dataclass(frozen=True)
class Reading:
    """A graph's time relative to the reference: the median ratio of its rounds."""

    ratio: float
    sem: float  # standard error of the median ratio
    rounds: int
    rejected: int  # rounds dropped as spikes or outliers, and measured again
    runs: int

    @property
    def rel_ci(self) -> float:
        """Half-width of the ~95% interval, relative to the ratio."""
        return 1.96 * self.sem / self.ratio


class Meter:
    """Times ONNX sessions against a reference network in interleaved rounds (see the module).

    ``window_s`` is the length of one burst of a graph; ``rounds`` the rounds every reading gets
    at least; up to ``max_rounds`` while its interval is wider than ``ci`` (relative half-width).
    ``reference`` is the reference network (default: :func:`reference_for` the thread count);
    ``reference_onnx``, its ONNX file's bytes where they are at hand (a device bundle carries it:
    there is nothing to build it with).
    """

    def __init__(self, threads: int = 1, provider: str = DEFAULT_PROVIDER, reference_ms: float | None = None,
                 rounds: int = 7, max_rounds: int = 25, window_s: float = 0.0015, ci: float = 0.03,
                 clock: Callable[[], int] = time.perf_counter_ns, reference: RefSpec | None = None,
                 reference_onnx: bytes | None = None) -> None:
        self.threads, self.provider = threads, provider
        self.rounds, self.max_rounds, self.window_s, self.ci = rounds, max_rounds, window_s, ci
        self._clock = clock
        self.reference = reference or reference_for(threads)
        ref_bytes = reference_onnx or reference_model(self.reference).SerializeToString()
        self._ref = session(ref_bytes, threads, provider)
        self._ref_feed = random_feed(self._ref)
        has_workers = threads > 1 and bool(_WORKERS.get(self._ref))
        self.parking = has_workers and can_park()
        if has_workers and not self.parking:
            warnings.warn("this process may not raise its threads' priority back (no CAP_SYS_NICE, `ulimit -e` below "
                          "20): idle sessions' workers cannot be parked, so measuring at more than one thread takes "
                          "about 3x as long (the readings agreed with parked ones within about 1% in a trial)",
                          stacklevel=2)
        self.ref_bursts: list[float] = []  # every reference burst's median, ms (probes excepted)
        self.rejected = 0
        self.busy_batches = 0  # batches that waited for a quiet host in vain
        self.probes = 0  # reference bursts that found the host busy before a round (not logged)
        self.wait_s = WAIT_S  # how long the next batch waits for a quiet moment (see WAIT_S)
        self.reference_ms = 0.0
        self._groups: deque[float] = deque(maxlen=FLOOR_GROUPS)  # see floor_ms
        self._group: list[float] = []
        for _ in range(20):
            self._ref.run(None, self._ref_feed)
        # At more than one thread a fresh process's first reference bursts read up to 1.75x slow (the
        # AMD EPYC VM, 2026-12-07, 2 of 5 processes): the scale is taken over half a second there.
        self.time_reference(30 * 2 * window_s if threads == 1 else INIT_SPINNING_S)
        self.reference_ms = reference_ms if reference_ms is not None else self.reference_here_ms()

    def time_reference(self, seconds: float) -> None:
        """Time the reference alone for about ``seconds`` (its bursts join the noise log)."""
        end = self._clock() + int(seconds * 1e9)
        if self.threads > 1:
            while self._clock() < end:
                self._spin_ref()
            return
        while self._clock() < end:
            self._burst_ref()
            stop = self._clock() + int(self.window_s * 1e9)
            while self._clock() < stop:
                self._ref.run(None, self._ref_feed)

    def _burst_ref(self, log: bool = True) -> float:
        run, feed, clock = self._ref.run, self._ref_feed, self._clock
        ts: list[int] = []
        for _ in range(REF_RUNS):
            t0 = clock()
            run(None, feed)
            ts.append(clock() - t0)
        ms = float(np.median(ts)) / 1e6
        if log:
            self.ref_bursts.append(ms)
        return ms

    def _burst(self, sess: InferenceSession, feed: Feed) -> tuple[float, int]:
        run, clock = sess.run, self._clock
        ts: list[int] = []
        start = clock()
        limit = int(self.window_s * 1e9)
        while len(ts) < 3 or clock() - start < limit:
            t0 = clock()
            run(None, feed)
            ts.append(clock() - t0)
        return float(np.median(ts)) / 1e6, len(ts)

    def _runs(self, sess: InferenceSession, feed: Feed) -> tuple[float, int]:
        """The median of a burst of back-to-back runs (ms) and their count: :data:`SPIN_MIN_RUNS`
        to :data:`SPIN_RUNS` runs, as many as fit in ``window_s``; one untimed run first wakes the
        session's workers, asleep when it was last run long ago. Its workers are woken from the park
        before and parked after (see :meth:`_park`)."""
        run, clock = sess.run, self._clock
        self._park(sess, False)
        run(None, feed)
        ts: list[int] = []
        limit = int(self.window_s * 1e9)
        start = clock()
        while len(ts) < SPIN_MIN_RUNS or (len(ts) < SPIN_RUNS and clock() - start < limit):
            t0 = clock()
            run(None, feed)
            ts.append(clock() - t0)
        self._park(sess, True)
        return float(np.median(ts)) / 1e6, len(ts)

    def _park(self, sess: InferenceSession, idle: bool) -> None:
        """Put a session's workers at the lowest scheduling priority (``SCHED_IDLE``: they run only
        on a core nothing else wants), or back at the normal one. An idle session's workers go on
        spinning for about 50 ms after its last run (onnxruntime's default, see :func:`session`);
        at normal priority they took the cores from the session timed next: on the 2-core AMD EPYC
        VM, 48 layers of the 3x96x96 grid measured at 2 threads took 20 s, one run in 100 waiting
        20-37 ms for a core, against 6 s parked (the longest run of 100: 1 ms). A no-op where the
        OS cannot (see :attr:`parking`)."""
        if self.parking and (tids := _WORKERS.get(sess)):
            _set_policy(tids, os.SCHED_IDLE if idle else os.SCHED_OTHER)

    def _spinning_readings(self, sessions: Sequence[InferenceSession], feeds: Sequence[Feed]) -> list[Reading]:
        """Readings at more than one thread, where sessions' workers spin between runs (see
        :func:`session`): rounds, each the reference's burst of back-to-back runs (:meth:`_runs`)
        and then every session's; a reading is the median over rounds of its burst's median over
        the reference's. A session's workers go on spinning for about 50 ms after its burst (on
        the AMD EPYC VM), so between its bursts they are parked (:meth:`_park`); the median of a
        burst's runs is robust to a run that waited for a core all the same. Measured on the
        2-core AMD EPYC VM at 2 threads, 30 quickstart networks in three fresh processes: their
        ratios to the reference agreed within 10% between any two processes on 100% of them
        (median difference 0.7-1.3%), against 60-100% with the workers stopped after every run
        and the rounds of :meth:`readings`; 48 layers of the 3x96x96 grid, their entries: 83%
        (median 2.6%) against 91-94% (2.7-3.6%).

        Every reading gets :data:`SPIN_ROUNDS` rounds, then the rule of :meth:`_needs_more`: a
        round outlying the others (a slow stretch that hit a graph's burst and not the
        reference's, or the other way round) is dropped and measured again, and a reading whose
        interval is wider than ``ci`` gets more rounds, up to ``max_rounds`` kept and
        ``2 * max_rounds`` run. Why: the same 48 quickstart networks read in 4 fresh processes,
        alternately with a plain median of 8 rounds and with this rule (2026-12-07, AMD EPYC VM):
        in 3 of the processes, 3.7% of the plain medians were more than 10% off the networks'
        median over every reading (one 56% off), none of this rule's (the largest 2.9%), at 11.3
        rounds a reading against 8.

        A round counts only while the reference's bursts on both sides of it run within
        :data:`SPIN_GATE` of its quiet-host time (:meth:`floor_ms`); while the reference runs
        slower, the batch probes the host with the reference alone and measures nothing, for up
        to the meter's ``wait_s`` (then, as at one thread, it takes what the host gives and counts
        the batch as busy). Why: the host has slow stretches of seconds in which the reference
        runs 1.3-3x its quiet time and the networks only about 1.25x, so every ratio measured
        then reads low, and a stretch outlasts a whole reading's rounds, so no round of it
        outlies the others. Three 3x96x96 networks, 10 sessions each, read 4 times in each of 3
        fresh processes on the 2-core AMD EPYC VM (2026-12-07): rounds whose reference burst ran
        beyond 1.5x its quiet time read ratios 34% below the graphs' quiet ones (median); a
        process that began in such a stretch (3.3 s) read 87% of its first readings more than 8%
        low. The gate sits above a second level of the reference's: there it runs at two levels
        about 15% apart (0.048 and 0.055 ms), switching within a process, and a gate between
        them picks rounds by the reference's level and biases the ratios: the same 50 networks
        of 3x32x32 checked against one profile, 5 fresh processes a gate: with no gate and at
        1.3x all 50 within 10% of their prediction in every process, at 1.5x 49-50; at 1.08x
        only 1-9 of them in 4 processes of 5 (mean error 12-14%); at 1.15x (9 processes) 38-44
        in 2 and 8-9 in 2."""
        # Other sessions still alive (a caller's, or another meter's): their workers may still be
        # spinning from their last runs, at normal priority; parked too, and woken at the end.
        others = [s for s in list(_WORKERS) if s is not self._ref and all(s is not t for t in sessions)]
        for s in others:
            self._park(s, True)
        for s, f in zip(sessions, feeds):
            self._runs(s, f)
        n = len(sessions)
        ratios: list[list[float]] = [[] for _ in sessions]
        tags: list[list[int]] = [[] for _ in sessions]  # the round each ratio was measured in
        every: list[list[float]] = [[] for _ in sessions]  # rounds dropped included
        runs, rejected = [0] * n, [0] * n
        around: list[float] = []  # per round, the slower of the reference's bursts either side of it
        wait_until = self._clock() + int(self.wait_s * 1e9)
        late = False  # the wait ran out: rounds count whatever the reference's time
        before, logged = self._spin_ref(log=False), False  # logged once it counts
        todo = list(range(n))
        while todo:
            gate = SPIN_GATE * self.floor_ms()
            if not late and before > gate:
                if self._clock() < wait_until:  # a slow stretch: probe it with the reference alone
                    self.probes += 1
                    before = self._spin_ref(log=False)
                    continue
                late = True
            if not logged:
                self._log_spin(before)
            this = len(around)
            for i in todo:
                ms, count = self._runs(sessions[i], feeds[i])
                ratios[i].append(ms / before)
                tags[i].append(this)
                every[i].append(ms / before)
                runs[i] += count
            after, logged = self._spin_ref(), True
            around.append(0.0 if late else max(before, after))
            before = after
            gate = SPIN_GATE * self.floor_ms()  # quiet bursts seen since may tighten it: a round it drops stays dropped
            for i in range(n):
                keep = [j for j, t in enumerate(tags[i]) if around[t] <= gate]
                if len(keep) < len(tags[i]):
                    rejected[i] += len(tags[i]) - len(keep)
                    ratios[i] = [ratios[i][j] for j in keep]
                    tags[i] = [tags[i][j] for j in keep]
            todo = [i for i in range(n) if len(every[i]) < 2 * self.max_rounds
                    and self._needs_more(ratios[i], rejected, i, SPIN_ROUNDS, tags[i])]
        for s in [*sessions, *others]:  # back at normal priority, for whatever runs them next
            self._park(s, False)
        self._after_batch(late)
        self.rejected += sum(rejected)
        return [self._reading(r or e, k, m) for r, e, k, m in zip(ratios, every, rejected, runs)]

    def _spin_ref(self, log: bool = True) -> float:
        """A burst of the reference at more than one thread (ms), logged (:meth:`_log_spin`) unless
        it is a probe."""
        ms = self._runs(self._ref, self._ref_feed)[0]
        if log:
            self._log_spin(ms)
        return ms

    def _log_spin(self, ms: float) -> None:
        """Log a reference burst as noise, and for :meth:`floor_ms`. Probes are not: a slow
        stretch probed a thousand times over would become the quiet time within a second."""
        self.ref_bursts.append(ms)
        self._group.append(ms)
        if len(self._group) == FLOOR_BURSTS:
            self._groups.append(float(np.median(self._group)))
            self._group = []

    def floor_ms(self) -> float:
        """The reference's quiet-host time in this process lately, at more than one thread: the
        lowest median of :data:`FLOOR_BURSTS` consecutive bursts among the last
        :data:`FLOOR_GROUPS` such groups. Not the 5th percentile of every burst
        (:meth:`reference_here_ms`): a process that begins in a slow stretch of the host (see
        :meth:`_spinning_readings`) would hold that stretch's time until its quiet bursts were 5%
        of all it had seen."""
        if self._groups:
            return min(self._groups)
        return float(np.median(self._group)) if self._group else self.quiet_ms()

    def _after_batch(self, late: bool) -> None:
        """A batch that waited in vain halves the next one's wait (down to MIN_WAIT_S); one that
        found quiet moments doubles it back (up to WAIT_S)."""
        if late:
            self.busy_batches += 1
            self.wait_s = max(MIN_WAIT_S, self.wait_s / 2)
        else:
            self.wait_s = min(WAIT_S, self.wait_s * 2)

    def quiet_ms(self) -> float:
        """The reference's quiet-host time: the scale given, else this process's estimate."""
        return self.reference_ms if self.reference_ms else self.reference_here_ms()

    def reference_here_ms(self, since: int = 0) -> float:
        """The reference's time on a quiet host, as seen in this process (since burst ``since``):
        the 5th percentile of its bursts. Measured on a shared Xeon VM, it moved by 2% between
        processes while the median moved by 35% (busy neighbours come and go; the CPU's own
        speed does not)."""
        return float(np.percentile(self.ref_bursts[since:], QUIET_PERCENTILE))

    def host(self) -> dict[str, float]:
        """What the meter saw of the host: the reference's median and 5th-percentile burst times
        and their ratio (1.0 on a quiet host; 1.6 on the busy Xeon VM above), the rounds rejected
        as spikes or outliers, the batches measured busy after waiting in vain, the reference
        bursts that found the host busy while a batch waited (``busy_probes``), and whether idle
        sessions' workers were parked (``parked``: 1.0, at more than one thread; see :meth:`_park`)."""
        b = np.asarray(self.ref_bursts)
        p5 = float(np.percentile(b, 5))
        return {"reference_median_ms": float(np.median(b)), "reference_p5_ms": p5,
                "noise": float(np.median(b) / p5), "bursts": len(b), "rejected_rounds": self.rejected,
                "busy_batches": self.busy_batches, "busy_probes": self.probes, "parked": float(self.parking)}

    def readings(self, sessions: Sequence[InferenceSession], feeds: Sequence[Feed] | None = None) -> list[Reading]:
        """One :class:`Reading` per session, measured together in interleaved rounds (at more than
        one thread, :meth:`_spinning_readings`)."""
        feeds = list(feeds) if feeds is not None else [random_feed(s) for s in sessions]
        if self.threads > 1:
            return self._spinning_readings(sessions, feeds)
        for s, f in zip(sessions, feeds):
            for _ in range(3):
                s.run(None, f)
        ratios: list[list[float]] = [[] for _ in sessions]
        runs, rejected = [0] * len(sessions), [0] * len(sessions)
        todo = list(range(len(sessions)))
        wait_until = self._clock() + int(self.wait_s * 1e9)
        late = 0  # rounds run after the wait ran out
        while todo:
            # Wait for moments the host runs near its quiet speed: the ratios shift when it is busy.
            # While it is busy, probe it with the reference alone (cheap, and nothing is stored);
            # once the batch's wait has run out, take what the host gives (and count it as busy).
            waiting = self._clock() < wait_until
            before = self._burst_ref(log=not waiting)
            limit = SPIKE * float(np.median(self.ref_bursts[-200:]))
            if waiting:
                limit = min(limit, GATE * self.quiet_ms())
                if before > limit:
                    self.probes += 1
                    continue
                self.ref_bursts.append(before)
            else:
                late += 1
            for i in todo:
                ms, n = self._burst(sessions[i], feeds[i])
                after = self._burst_ref()
                runs[i] += n
                if max(before, after) > limit:
                    rejected[i] += 1  # a spike or a busy moment: never stored, measured again
                else:
                    ratios[i].append(2 * ms / (before + after))
                before = after
            todo = [i for i in todo if self._needs_more(ratios[i], rejected, i)]
            if late > 4 * self.max_rounds:
                break
        self._after_batch(bool(late))
        out = []
        for i, r in enumerate(ratios):
            if not r:
                raise HostTooNoisy(f"every round of a reading was spiked ({rejected[i]} rounds): the host is too "
                                   "busy to measure; stop what else runs on it and measure again")
            out.append(self._reading(r, rejected[i], runs[i]))
        self.rejected += sum(rejected)
        return out

    def _needs_more(self, r: list[float], rejected: list[int], i: int, least: int | None = None,
                    tags: list[int] | None = None) -> bool:
        """Whether reading ``i`` (its rounds' ratios ``r``) needs more rounds: fewer than
        ``least`` (default ``rounds``), rounds outlying the others (dropped from ``r``, and from
        ``tags`` alongside, and counted in ``rejected``), or an interval wider than ``ci``; at most
        ``max_rounds``."""
        if len(r) < (self.rounds if least is None else least):
            return True
        # A spike only ever slows a round down, and one inside a graph's own burst is not seen in
        # the reference's: so a round is kept when it is within OUTLIER above the rounds' lower
        # quartile (not their median, which spiked rounds can hold once they are half of them)
        # and within OUTLIER below their median.
        med, low = float(np.median(r)), float(np.percentile(r, 25))
        keep = [j for j, x in enumerate(r) if med / OUTLIER <= x <= low * OUTLIER]
        if len(keep) < len(r):  # outlying rounds are dropped and measured again
            rejected[i] += len(r) - len(keep)
            r[:] = [r[j] for j in keep]
            if tags is not None:
                tags[:] = [tags[j] for j in keep]
            return len(r) < self.max_rounds
        if len(r) >= self.max_rounds:
            return False
        return self._reading(r, 0, 0).rel_ci > self.ci

    @staticmethod
    def _reading(r: list[float], rejected: int, runs: int) -> Reading:
        a = np.asarray(r)
        med = float(np.median(a))
        mad = float(np.median(np.abs(a - med))) * 1.4826
        sem = 1.2533 * max(mad, 1e-3 * med) / np.sqrt(len(a))
        return Reading(med, float(sem), len(a), rejected, runs)

    def measure(self, models: Sequence[onnx.ModelProto | bytes],
                input_shapes: Sequence[Sequence[int] | None] | None = None,
                inputs: Sequence[np.ndarray | None] | None = None) -> list[Latency]:
        """Latencies (ms) of ONNX models (``onnx.ModelProto`` or bytes): see :meth:`measure_readings`."""
        data = [m if isinstance(m, bytes) else m.SerializeToString() for m in models]
        return [self.latency(r) for r in self.measure_readings(data, input_shapes, inputs)]

    def measure_readings(self, data: Sequence[bytes], input_shapes: Sequence[Sequence[int] | None] | None = None,
                         inputs: Sequence[np.ndarray | None] | None = None) -> list[Reading]:
        """Readings of ONNX files (bytes) measured together, each fed its ``inputs`` array where
        given, else a random input of its ``input_shapes`` (default: the file's own shape).

        At more than one thread, fewer than :data:`SPIN_SESSIONS` files are each given as many
        sessions as make at least that many in all, and a file's reading is the median of its sessions'
        (:func:`pooled`). Two graphs measured 45 times in a process, on the 2-core AMD EPYC VM
        at 2 threads (2026-12-07, three processes): as a batch of two sessions, 13-53% of their
        readings were more than 10% off the graph's median reading in that process (some 0.45x or
        1.7x), as 12 sessions each 0-13%: a session's speed moves between levels about 10% apart
        that last 0.1-1 s, which a short batch's rounds do not outlast."""
        n = len(data)
        shapes = list(input_shapes) if input_shapes is not None else [None] * n
        arrays = list(inputs) if inputs is not None else [None] * n
        copies = -(-SPIN_SESSIONS // n) if self.threads > 1 and n else 1
        sessions, feeds = [], []
        for d, shape, x in zip(data, shapes, arrays):
            for _ in range(copies):
                s = session(d, self.threads, self.provider)
                sessions.append(s)
                feeds.append({s.get_inputs()[0].name: x} if x is not None else random_feed(s, shape))
        readings = self.readings(sessions, feeds)
        return [pooled(readings[i:i + copies]) for i in range(0, len(readings), copies)]

    def latency(self, r: Reading) -> Latency:
        return Latency(r.ratio * self.reference_ms, r.sem * self.reference_ms, r.runs)


def pooled(readings: Sequence[Reading]) -> Reading:
    """One reading from several sessions' readings of the same graph: their median ratio, its
    standard error from their spread (no smaller than their own errors allow), their rounds, rounds
    rejected and runs summed."""
    if len(readings) == 1:
        return readings[0]
    ratios = np.array([r.ratio for r in readings])
    med = float(np.median(ratios))
    spread = 1.2533 * 1.4826 * float(np.median(np.abs(ratios - med)))
    sem = max(spread, float(np.median([r.sem for r in readings]))) / np.sqrt(len(readings))
    return Reading(med, sem, sum(r.rounds for r in readings), sum(r.rejected for r in readings),
                   sum(r.runs for r in readings))


_METERS: dict[tuple[int, str, RefSpec], Meter] = {}


def meter(threads: int = 1, provider: str = DEFAULT_PROVIDER, reference_ms: float | None = None,
          reference: RefSpec | None = None) -> Meter:
    """A meter for these settings, shared in this process (its reference warm, its noise log
    growing); ``reference_ms`` fixes the scale its ratios are converted with, ``reference`` the
    network it is the time of (default: :func:`reference_for` the thread count)."""
    ref = reference or reference_for(threads)
    key = (threads, provider, ref)
    if key not in _METERS:
        _METERS[key] = Meter(threads, provider, reference=ref)
    m = _METERS[key]
    m.reference_ms = reference_ms if reference_ms is not None else m.reference_here_ms()
    return m


def time_session(sess: InferenceSession, feed: Feed, warmup: int = 10, repeats: int = 50,
                 min_seconds: float = 0.03, max_repeats: int = 5000) -> Latency:
    """Median of per-run wall times of one session alone, after ``warmup`` runs (no reference:
    for quick figures only; profiles and checks use a :class:`Meter`)."""
    run = sess.run
    for _ in range(warmup):
        run(None, feed)
    times: list[int] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < max_repeats):
        t0 = time.perf_counter_ns()
        run(None, feed)
        times.append(time.perf_counter_ns() - t0)
    ms = np.asarray(times, dtype=np.float64) / 1e6
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return Latency(float(med), float((q3 - q1) / 1.349), len(ms))
