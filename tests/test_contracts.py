"""Contract suites, run over every registered implementation: targets, dataset sources, samplers and
executors (as optuna runs one suite over every sampler and storage, and timm over every model).

The parameters are read when the tests are collected (the target and dataset registries, the
spec's sampler names, the engine's executors), so one added later is tested here without editing
this file: a dataset source needs a small dataset written for it (``DATASET_FILES``, else its test
fails saying so), and an executor's full contract run needs a test that constructs it.
"""

import inspect
import math
import os
import pickle
import typing
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState
from PIL import Image

from hwsearch.search import engine
from hwsearch.search.algorithms import make_sampler
from hwsearch.search.engine import InlineExecutor, PoolExecutor, RayExecutor, WorkerSetup
from hwsearch.search.engine._executors import Rung
from hwsearch.search.spec import DatasetSpec, SearchSettings, load_spec, parse_spec
from hwsearch.search.study import open_study, run_lock
from hwsearch.search.training import (
    Data,
    DatasetError,
    Evaluation,
    TrainSettings,
    dataset_sources,
    evaluate,
    load_dataset,
    register_dataset,
)
from hwsearch.spaces import Candidate, SpaceSpec, build_plan, extremes, params_of, space
from hwsearch.targets import (
    SHIPPED,
    Cost,
    Latency,
    Profile,
    ProfileTarget,
    Target,
    UnpriceableError,
    get_target,
    list_targets,
    peak_memory_kb,
    register_target,
    size_kb,
    target_names,
)
from tests.conftest import REPO, tiny_spec

# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------

MEASURES_ON_FIRST_USE = {"local-cpu"}  # pricing a whole space measures it: only its cheap parts here
PRICED_TARGETS = [n for n in target_names() if n not in MEASURES_ON_FIRST_USE]
SHIPPED_PROFILES = sorted(SHIPPED.glob("*.json"))

QUICKSTART = load_spec(REPO / "examples" / "quickstart.yaml")
SHAPE, CLASSES = (1, 8, 8), 10  # digits, as the quickstart runs
# Small candidates of the quickstart space: its smallest at every bit-width pair, and a few that use
# expansion, pruning, squeeze-excite, hard-swish, depth 2, larger kernels and distillation.
SMALL_CANDIDATES = [c.to_string() for c in extremes(QUICKSTART.space)] + [
    "c8:ir_r1_k3_e3_c8_re_p0.5_w8a8:ir_r1_k3_e1_c16_re_w8a8:ir_r1_k3_e1_c24_re_w8a8",
    "c16:ir_r2_k5_e6_c16_se_hs_p0.25_w4a32:ir_r1_k3_e3_c24_re_w4a32:ir_r2_k5_e1_c48_hs_w4a32:kd_t2.0_a0.5",
    "c8:ir_r1_k3_e1_c8_se_re_w32a32:ir_r2_k5_e6_c32_se_hs_w32a32:ir_r1_k3_e3_c32_re_p0.5_w32a32",
]


def small_plans():
    plans = [build_plan(Candidate.from_string(s), SHAPE, CLASSES) for s in SMALL_CANDIDATES]
    for plan in plans:  # they are the quickstart space's, as the contract asks
        params_of(plan.candidate, QUICKSTART.space)
    return plans


@pytest.mark.parametrize("name", target_names())
def test_every_target_names_itself_describes_itself_and_says_whether_it_was_measured(name):
    target = get_target(name)
    assert isinstance(target, Target)
    assert target.name == name
    assert get_target(name) is target, "one instance per name in a process"
    assert isinstance(target.description, str) and target.description.strip()
    listed = list_targets()[name]
    assert isinstance(listed, str) and listed.strip()
    assert type(target.measured) is bool
    overhead = target.overhead()
    assert isinstance(overhead, Latency)
    assert math.isfinite(overhead.mean_ms) and overhead.mean_ms >= 0 and overhead.std_ms >= 0 and overhead.count >= 1
    if name == "local-cpu":
        assert target.measured, "local-cpu measures this host"


@pytest.mark.parametrize("path", SHIPPED_PROFILES, ids=lambda p: p.stem)
def test_every_shipped_profile_is_a_target_under_its_file_name_and_says_how_it_was_measured(path):
    assert path.stem in target_names()
    target = get_target(path.stem)
    facts = Profile.load(path).device
    assert target.measured is facts.measured
    assert ("ESTIMATED" in target.description) is (not facts.measured), target.description
    assert ("ESTIMATED" in list_targets()[path.stem]) is (not facts.measured)


@pytest.mark.parametrize("name", PRICED_TARGETS)
def test_every_target_prices_the_quickstart_space_purely_with_a_breakdown_that_adds_up(name):
    target = get_target(name)
    for plan in small_plans():
        where = f"{plan.candidate.to_string()} on {name}"
        cost = target.price(plan)
        assert isinstance(cost, Cost)
        assert target.price(plan) == cost, f"pricing is not pure: {where}"
        rebuilt = build_plan(Candidate.from_string(plan.candidate.to_string()), SHAPE, CLASSES)
        assert target.price(rebuilt) == cost, f"an equal plan prices differently: {where}"
        assert math.isfinite(cost.latency_ms) and cost.latency_ms > 0, where
        # one part per layer, then the per-call overhead; they add up to the total
        assert [part for part, _ in cost.blocks] == [layer.name for layer in plan.layers] + ["overhead"], where
        assert sum(ms for _, ms in cost.blocks) == pytest.approx(cost.latency_ms, rel=1e-9), where
        assert all(ms > 0 for part, ms in cost.blocks if part != "overhead"), f"a layer priced at 0: {where}"
        assert dict(cost.blocks)["overhead"] >= 0, where
        # a layer alone: milliseconds, never 0 for one the target knows
        for layer in plan.layers:
            lat = target.layer_latency(layer)
            assert isinstance(lat, Latency) and lat.mean_ms > 0 and math.isfinite(lat.mean_ms), (where, layer.name)
        # size and memory are exact arithmetic, the same on every target
        assert cost.size_kb > 0 and cost.peak_memory_kb > 0, where
        assert cost.size_kb == size_kb(plan) and cost.peak_memory_kb == peak_memory_kb(plan), where


@pytest.mark.parametrize("name", PRICED_TARGETS)
def test_a_layer_a_target_has_no_entry_for_is_modelled_or_unpriceable_never_free(name, tmp_path):
    from hwsearch.targets import Profile
    from hwsearch.targets._profile_format import block_key

    target = get_target(name)
    # two input channels at 12x12: no shipped space reaches this stem
    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e1_c8_re_w8a8"), (2, 12, 12), CLASSES)
    profile = target.profile
    assert profile is not None and str(block_key(plan.stem)) not in profile.entries
    # an estimate's roofline, or a measured table's extension, prices it: never for free
    assert target.layer_latency(plan.stem).mean_ms > 0 and target.price(plan).latency_ms > 0
    # the same table without what models it refuses, naming the layer
    bare = Profile(device=profile.device.model_copy(update={"measured": True}), bits=profile.bits,
                   overhead_ms=profile.overhead_ms, entries=profile.entries)
    bare.save(tmp_path / "bare.json")
    table = get_target(str(tmp_path / "bare.json"))
    with pytest.raises(UnpriceableError, match="stem"):
        table.layer_latency(plan.stem)
    with pytest.raises(UnpriceableError):
        table.price(plan)
    with pytest.raises(UnpriceableError):
        table.adapter_latency((2, 12, 12), "uint8")


@pytest.mark.parametrize("path", SHIPPED_PROFILES, ids=lambda p: p.stem)
def test_a_profile_prices_the_same_by_name_and_by_path(path):
    plan = small_plans()[-1]
    assert get_target(str(path)).price(plan) == get_target(path.stem).price(plan)


def test_the_target_registry_refuses_a_duplicate_name_and_keeps_the_first(monkeypatch):
    from hwsearch.targets import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))  # restored after the test
    monkeypatch.setattr(_registry, "_CACHE", dict(_registry._CACHE))
    profile = SHIPPED_PROFILES[0]

    @register_target("contract-test-device", "the first registration")
    def first() -> Target:
        return ProfileTarget.load(profile, name="contract-test-device")

    def second() -> Target:
        raise AssertionError("the refused factory must never be called")

    with pytest.raises(ValueError, match="'contract-test-device' is already registered"):
        register_target("contract-test-device", "the second registration")(second)
    assert list_targets()["contract-test-device"] == "the first registration"
    assert get_target("contract-test-device").name == "contract-test-device"
    assert isinstance(get_target("contract-test-device"), ProfileTarget)
    before = dict(_registry._REGISTRY)
    for name in target_names():  # the shipped names too, local-cpu included
        with pytest.raises(ValueError, match=f"{name!r} is already registered"):
            register_target(name, "a duplicate")(second)
    assert _registry._REGISTRY == before


# ------------------------------------------------------------------------------------------------
# Dataset sources
# ------------------------------------------------------------------------------------------------


def _imagefolder(root: Path) -> dict:
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return {"path": root}


def _npz(root: Path) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    np.savez(root / "d.npz", x=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y=np.arange(30) % 3)
    return {"path": root / "d.npz"}


def _cifar10(root: Path) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for b in (1, 2):  # the python version's format: a pickled dict of bytes keys
        batch = {b"data": rng.integers(0, 256, (25, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(25)]}
        (root / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return {"path": root}


# For each source, a writer of a small dataset in a folder: (root) -> DatasetSpec fields.
DATASET_FILES = {"digits": lambda root: {}, "imagefolder": _imagefolder, "npz": _npz, "cifar10": _cifar10}
SOURCES = sorted(dataset_sources())


def small_dataset(name: str, root: Path) -> dict:
    if name not in DATASET_FILES:
        pytest.fail(f"dataset source {name!r} is registered but this suite cannot write data for it: add a "
                    "writer of a small dataset to DATASET_FILES in tests/test_contracts.py")
    return DATASET_FILES[name](root)


@pytest.mark.parametrize("name", SOURCES)
def test_every_dataset_source_loads_a_small_dataset_into_a_seeded_stratified_split(name, tmp_path):
    fields = small_dataset(name, tmp_path / "data")
    d = load_dataset(DatasetSpec(name=name, **fields), seed=0)
    assert isinstance(d, Data)
    c, h, w = d.input_shape
    assert 1 <= c <= 4 and h >= 4 and w >= 4
    assert d.num_classes == len(d.classes) >= 2
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val)):
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (c, h, w)
        assert np.isfinite(x).all()
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert y.min() >= 0 and y.max() < d.num_classes
    assert len(d.mean) == len(d.std) == c and all(s > 0 for s in d.std)
    # normalised with the training split's statistics
    assert np.abs(d.x_train.mean(axis=(0, 2, 3))).max() < 1e-3
    np.testing.assert_allclose(d.x_train.std(axis=(0, 2, 3)), 1.0, rtol=1e-2)
    # stratified: every class is split in the validation fraction (to the image)
    y_all = np.concatenate([d.y_train, d.y_val])
    total, held = np.bincount(y_all, minlength=d.num_classes), np.bincount(d.y_val, minlength=d.num_classes)
    assert (np.abs(held - 0.2 * total) <= 1).all(), (held, total)
    # seeded: the same seed, the same split; another seed, another split
    again = load_dataset(DatasetSpec(name=name, **fields), seed=0)
    assert np.array_equal(again.x_val, d.x_val) and np.array_equal(again.y_train, d.y_train)
    assert again.fingerprint() == d.fingerprint()
    assert load_dataset(DatasetSpec(name=name, **fields), seed=1).fingerprint() != d.fingerprint()


@pytest.mark.parametrize("name", SOURCES)
def test_every_dataset_source_resizes_only_when_it_says_it_does(name, tmp_path):
    fields = small_dataset(name, tmp_path / "data")
    if dataset_sources()[name].resizes:
        d = load_dataset(DatasetSpec(name=name, image_size=8, **fields), seed=0)
        assert d.input_shape[1:] == (8, 8)
    else:
        with pytest.raises(ValueError, match="does not resize"):
            DatasetSpec(name=name, image_size=8, **fields)


@pytest.mark.parametrize("name", [n for n in SOURCES if dataset_sources()[n].needs_path])
def test_every_dataset_source_names_a_missing_path(name, tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(DatasetError, match=str(missing)):
        load_dataset(DatasetSpec(name=name, path=missing), seed=0)


def test_the_dataset_registry_refuses_a_duplicate_name_and_keeps_the_first(monkeypatch):
    from hwsearch.search.training import _datasets

    monkeypatch.setattr(_datasets, "_SOURCES", dict(_datasets._SOURCES))  # restored after the test
    before = dataset_sources()

    def loader(spec, rng):
        raise AssertionError("never loaded")

    for name in SOURCES:
        with pytest.raises(ValueError, match=f"dataset {name!r} is already registered"):
            register_dataset(name, needs_path=True, description="a duplicate")(loader)
    assert dataset_sources() == before
    register_dataset("contract-test-data", needs_path=False, description="the first")(loader)
    with pytest.raises(ValueError, match="'contract-test-data' is already registered"):
        register_dataset("contract-test-data", needs_path=True, description="the second")(lambda spec, rng: None)
    kept = dataset_sources()["contract-test-data"]
    assert kept.load is loader and kept.description == "the first" and not kept.needs_path


# ------------------------------------------------------------------------------------------------
# Samplers
# ------------------------------------------------------------------------------------------------

SAMPLERS = typing.get_args(SearchSettings.model_fields["sampler"].annotation)
# A small part of the quickstart space (so that the shipped profiles price it), distillation on.
SAMPLER_SPACE = {
    "stem_widths": [8, 16],
    "stages": [{"widths": [8, 16], "depths": [1]}, {"widths": [16, 24], "depths": [1, 2]},
               {"widths": [24, 32], "depths": [1]}],
    "kernels": [3, 5],
    "expand_ratios": [1, 3],
    "se": [False, True],
    "activations": ["relu"],
    "prune_ratios": [0.0, 0.5],
    "weight_bits": [8, 32],
    "activation_bits": [8, 32],
    "distill": True,
}
SAMPLER_TARGET = "x86-epyc-1t"
# The spec's trial budget: the model-based samplers start modelling after 4 trials (tpe, gp) or 3
# trained ones (cost-aware); nsga2's first generation is 8 trials.
SAMPLER_BUDGET = 8
START_UP = 3  # proposals every sampler makes before its model has anything to learn from
PAST_START_UP = {"nsga2": 9}  # trials to reach a sampler's modelled proposals; else 5 (1 or 2 of them)


def ask_and_tell(kind: str, seed: int, run_dir: Path, trials: int) -> list[tuple[dict, Candidate]]:
    """A short search without training: the study created as a run creates it, the sampler the
    spec names, real prices and constraints, and made-up accuracies (seeded)."""
    from hwsearch.search.algorithms import CostAwareSampler
    from hwsearch.search.algorithms._cost_aware import Priced

    spec = parse_spec(tiny_spec(target=SAMPLER_TARGET, space=SAMPLER_SPACE, budget={"size_kb": 6.0},
                                search={"sampler": kind, "seed": seed, "trials": SAMPLER_BUDGET}))
    target, limits = get_target(spec.target), spec.budget.limits()

    def priced(cand: Candidate) -> Priced:
        plan = build_plan(cand, SHAPE, CLASSES)
        cost = target.price(plan)
        return Priced(plan, {m: cost.metric(m) for m in ("latency_ms", "size_kb", "peak_memory_kb")})

    accuracies = np.random.default_rng(seed)
    out = []
    with run_lock(run_dir):
        study = open_study(spec, run_dir, make_sampler(spec))
        assert type(study.sampler) is type(make_sampler(spec))
        if isinstance(study.sampler, CostAwareSampler):
            study.sampler.use_prices(priced)
        for _ in range(trials):
            trial = study.ask()
            cand = space(trial, spec.space)
            cost = target.price(build_plan(cand, SHAPE, CLASSES))
            out.append((dict(trial.params), cand))
            trial.set_user_attr("candidate", cand.to_string())
            for name, limit in limits.items():
                trial.set_constraint(name, cost.metric(name) - limit)
            accuracy = float(accuracies.uniform(0.5, 1.0))
            trial.set_user_attr("status", "feasible")
            trial.set_user_attr("accuracy", accuracy)
            study.tell(trial, [accuracy if o == "accuracy" else cost.metric(o) for o in spec.objectives])
        assert all(t.state == TrialState.COMPLETE for t in study.get_trials())
    return out


def check_proposals(kind: str, proposals: list[tuple[dict, Candidate]]) -> None:
    """Each proposal is a candidate of the space, asked for with exactly the space's parameters."""
    config = SpaceSpec(**SAMPLER_SPACE)
    for params, cand in proposals:
        assert isinstance(cand, Candidate) and Candidate.from_string(cand.to_string()) == cand
        build_plan(cand, SHAPE, CLASSES)
        expected = params_of(cand, config)  # raises when the candidate is outside the space
        assert set(params) == set(expected), kind
        for key, value in params.items():
            if key.startswith("kd_"):  # the candidate keeps them rounded
                assert value == pytest.approx(expected[key], abs=0.0051), (kind, key)
            else:
                assert value == expected[key], (kind, key)


@pytest.mark.parametrize("kind", SAMPLERS)
def test_every_sampler_proposes_candidates_of_the_space_and_the_seed_fixes_its_first_proposals(kind, tmp_path):
    first = ask_and_tell(kind, 0, tmp_path / "a", START_UP)
    check_proposals(kind, first)
    assert len({cand for _, cand in first}) > 1, f"{kind} proposes a single candidate"
    again = ask_and_tell(kind, 0, tmp_path / "b", START_UP)
    assert [p for p, _ in again] == [p for p, _ in first], f"{kind}: the same seed proposed other candidates"
    other = ask_and_tell(kind, 1, tmp_path / "c", START_UP)
    assert [p for p, _ in other] != [p for p, _ in first], f"{kind}: the seed is not used"


@pytest.mark.slow  # the GP sampler's 3-objective acquisition takes seconds per proposal
@pytest.mark.parametrize("kind", SAMPLERS)
def test_every_sampler_past_its_start_up_still_proposes_candidates_of_the_space_as_seeded(kind, tmp_path):
    trials = PAST_START_UP.get(kind, 5)
    first = ask_and_tell(kind, 0, tmp_path / "a", trials)
    check_proposals(kind, first)
    again = ask_and_tell(kind, 0, tmp_path / "b", trials)
    assert [p for p, _ in again] == [p for p, _ in first], f"{kind}: the same seed proposed other candidates"


# ------------------------------------------------------------------------------------------------
# Executors
# ------------------------------------------------------------------------------------------------

EXECUTORS = [getattr(engine, name) for name in engine.__all__ if name.endswith("Executor")]
CANDIDATE = "c8:ir_r1_k3_e3_c8_re_p0.5_w8a8:ir_r1_k3_e1_c16_re_w8a8"


@pytest.fixture(scope="module")
def worker_setup() -> WorkerSetup:
    """The real evaluator on 400 digits, 3 dense epochs and 1 fine-tuning epoch (a fraction of a
    second), one torch thread."""
    data = load_dataset(DatasetSpec(name="digits", limit=400), seed=0)
    return WorkerSetup(data, None, TrainSettings(epochs=3, finetune_epochs=1, batch_size=32), threads=1)


@pytest.fixture
def torch_threads_restored():
    """A worker in this process sets torch's thread count: set it back afterwards."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def expected(worker_setup) -> dict[int, Evaluation]:
    """What the evaluator gives, called here directly (on one torch thread, as in the workers), by seed."""
    import torch

    s, n = worker_setup, torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        return {seed: evaluate(Candidate.from_string(CANDIDATE), s.data, None, s.settings, seed, True)
                for seed in (1, 2)}
    finally:
        torch.set_num_threads(n)


def check_same_evaluation(got: Evaluation, want: Evaluation, weights: bool) -> None:
    """The same run of the evaluator: the same accuracies and losses (to float rounding: another
    process may take other kernels), weights when kept."""
    assert isinstance(got, Evaluation), got
    assert got.accuracy == want.accuracy
    assert [(c["phase"], c["epoch"], c["val_accuracy"]) for c in got.curve] == \
        [(c["phase"], c["epoch"], c["val_accuracy"]) for c in want.curve]
    assert [c["loss"] for c in got.curve] == pytest.approx([c["loss"] for c in want.curve], rel=1e-4)
    assert set(got.timings) == set(want.timings)
    if weights:
        assert set(got.state_dict) == set(want.state_dict)
    else:
        assert got.state_dict is None


def poll_all(executor, n: int) -> dict:
    """Outcomes by slot, polling until ``n`` calls have finished."""
    out = {}
    while len(out) < n:
        done = executor.poll()
        assert done, "poll returned before any call finished"
        for slot, outcome in done:
            assert slot not in out, "two outcomes for one call"
            out[slot] = outcome
    return out


def check_executor_contract(executor, expected: dict[int, Evaluation], in_process: bool) -> None:
    """What the runner relies on (see ``hwsearch.search.engine._executors``), on every slot."""
    slots = range(executor.slots)
    seed = {slot: 1 + slot % 2 for slot in slots}
    # a call runs to the end and hands back the Evaluation the worker returned, weights included
    for slot in slots:
        assert executor.submit(slot, "start", CANDIDATE, seed[slot], True, None) is None
    for slot, ev in poll_all(executor, executor.slots).items():
        check_same_evaluation(ev, expected[seed[slot]], weights=True)
    # early stopping: paused at a rung, then advanced to the end on the same slot
    for slot in slots:
        executor.submit(slot, "start", CANDIDATE, seed[slot], False, 1)
    for slot, rung in poll_all(executor, executor.slots).items():
        assert isinstance(rung, Rung) and rung.epoch == 1
        assert rung.accuracy == expected[seed[slot]].curve[0]["val_accuracy"]
    for slot in slots:
        executor.submit(slot, "advance", None)
    for slot, ev in poll_all(executor, executor.slots).items():
        check_same_evaluation(ev, expected[seed[slot]], weights=False)
    # the exception a call raised is its outcome, and the slot goes on serving
    executor.submit(0, "start", "c8:not_a_stage", 1, False, None)
    failure = poll_all(executor, 1)[0]
    assert isinstance(failure, ValueError) and "ir_" in str(failure), failure
    executor.submit(0, "pid")
    pid = poll_all(executor, 1)[0]
    assert isinstance(pid, int) and (pid == os.getpid()) is in_process
    # a replaced slot serves calls again
    executor.replace(0)
    executor.submit(0, "start", CANDIDATE, 2, False, None)
    check_same_evaluation(poll_all(executor, 1)[0], expected[2], weights=False)


@pytest.mark.parametrize("cls", EXECUTORS, ids=lambda c: c.name)
def test_every_executor_has_the_interface_the_runner_calls(cls):
    assert {InlineExecutor, PoolExecutor, RayExecutor} <= set(EXECUTORS)
    assert isinstance(cls.name, str) and cls.name
    assert list(inspect.signature(cls).parameters)[0] == "setup"
    for method, params in {"submit": ["self", "slot", "method", "args"], "poll": ["self"],
                           "replace": ["self", "slot"], "close": ["self"]}.items():
        assert list(inspect.signature(getattr(cls, method)).parameters) == params, (cls.name, method)
    assert len({c.name for c in EXECUTORS}) == len(EXECUTORS), "executor names are distinct"


def test_the_inline_executor_meets_the_executor_contract(worker_setup, expected, torch_threads_restored):
    executor = InlineExecutor(worker_setup)
    assert executor.slots == 1
    try:
        check_executor_contract(executor, expected, in_process=True)
    finally:
        executor.close()
    executor.close()  # twice is harmless


@pytest.mark.slow
def test_the_pool_executor_meets_the_executor_contract(worker_setup, expected):
    executor = PoolExecutor(worker_setup, 2)
    assert executor.slots == 2
    try:
        check_executor_contract(executor, expected, in_process=False)
    finally:
        executor.close()
    executor.close()


@pytest.mark.slow
def test_the_ray_executor_meets_the_executor_contract(ray_head, worker_setup, expected):
    import ray

    assert ray_head.startswith("127.0.0.1:")
    log: list[str] = []
    executor = RayExecutor(worker_setup, 2, ray_head, cpus=1.0, gpus=0.0, log=log.append)
    assert executor.slots == 2 and not log, log
    try:
        check_executor_contract(executor, expected, in_process=False)
    finally:
        executor.close()
    executor.close()
    assert not ray.is_initialized(), "close() disconnects the Ray it connected"
