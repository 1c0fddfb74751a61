"""The read-only results API on a study written as a search writes it: details, re-pricing (and
what a target cannot price), the hypervolume as the run went, the storage's stamp."""

import itertools
import random

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hwsearch.search.algorithms._pareto import hypervolume
from hwsearch.search.outputs._results import RunResults, storage_stamp, study_names
from hwsearch.search.study._study import JOURNAL, storage_for
from hwsearch.spaces import Candidate, build_plan
from hwsearch.targets import UnpriceableError, get_target

PRICED = ["c8:ir_r1_k3_e1_c8_re_w8a8:ir_r1_k3_e3_c16_re_w8a8:ir_r1_k3_e3_c24_re_p0.5_w8a8",
          "c16:ir_r1_k5_e1_c16_se_hs_w4a32:ir_r2_k3_e6_c32_re_w8a32:ir_r1_k5_e3_c48_hs_w8a32:kd_t2.0_a0.5",
          "c8:ir_r1_k3_e3_c16_re_w32a32:ir_r1_k3_e1_c24_re_w32a32:ir_r1_k3_e1_c32_re_w32a32"]
UNPRICEABLE = "c12:ir_r1_k3_e1_c8_re_w8a8:ir_r1_k3_e1_c16_re_w8a8:ir_r1_k3_e1_c24_re_w8a8"  # no 12-wide stem measured
BUDGET = {"latency_ms": 0.12, "size_kb": 40.0}  # the quickstart's


def write_run(run_dir, candidates, accuracies):
    """A finished run on x86-epyc-1t (1x8x8 inputs, 10 classes) with these trained candidates; a
    candidate the target cannot price gets a made-up cost here, as if priced elsewhere."""
    target = get_target("x86-epyc-1t")
    study = optuna.create_study(storage=storage_for(run_dir, writer=True), study_name="run",
                                directions=["maximize", "minimize", "minimize"])
    for key, value in {"objectives": ["accuracy", "latency_ms", "size_kb"], "budget": BUDGET,
                       "target": "x86-epyc-1t", "input_shape": [1, 8, 8], "num_classes": 10}.items():
        study.set_user_attr(key, value)
    for text, acc in zip(candidates, accuracies):
        try:
            cost = target.price(build_plan(Candidate.from_string(text), (1, 8, 8), 10)).to_dict()
        except UnpriceableError:
            cost = {"latency_ms": 0.05, "size_kb": 5.0, "peak_memory_kb": 2.0, "blocks": [["overhead", 0.05]]}
        constraints = {m: cost[m] - limit for m, limit in BUDGET.items()}
        feasible = all(v <= 0 for v in constraints.values())
        attrs = {"candidate": text, "cost": cost, "latency_ms": cost["latency_ms"], "size_kb": cost["size_kb"],
                 "peak_memory_kb": cost["peak_memory_kb"], "status": "feasible" if feasible else "infeasible",
                 **({"accuracy": acc, "curve": [{"phase": "dense", "epoch": 1, "loss": 1.0, "val_accuracy": acc}]}
                    if feasible else {"infeasible_reason": "over budget"})}
        study.add_trial(create_trial(values=[acc if feasible else 0.0, cost["latency_ms"], cost["size_kb"]],
                                     user_attrs=attrs, constraints=constraints))
    return RunResults(run_dir)


def test_the_detail_of_a_trial_is_what_the_search_recorded(tmp_path):
    res = write_run(tmp_path, PRICED, [0.9, 0.95, 0.8])
    d = res.detail(1)
    assert d.row.candidate == PRICED[1] and d.row.accuracy == 0.95
    assert d.cost.latency_ms == pytest.approx(sum(ms for _, ms in d.cost.blocks))
    assert [name for name, _ in d.cost.blocks] == [layer.name for layer in res.plan(PRICED[1]).layers] + ["overhead"]
    assert d.curve[0]["val_accuracy"] == 0.95 and d.weights is None
    with pytest.raises(KeyError, match="no trial 7"):
        res.detail(7)


def _table_of(res: RunResults, candidates: list[str], path) -> str:
    """A measured profile holding exactly these candidates' layers (times from the Pi's roofline)."""
    from hwsearch.targets import Entry, Profile
    from hwsearch.targets._profile_format import block_key
    from hwsearch.targets._registry import SHIPPED

    est = Profile.load(SHIPPED / "rpi4-a72.json")
    table = Profile(device=est.device.model_copy(update={"measured": True, "name": "board"}), bits=est.bits,
                    overhead_ms=est.overhead_ms)
    for c in candidates:
        for layer in res.plan(c).layers:
            table.add(block_key(layer), Entry(mean_ms=est.lookup(layer).mean_ms, std_ms=0.0, count=1))
    table.save(path)
    return str(path)


def test_repricing_lists_what_the_target_cannot_price_and_never_makes_a_cost_up(tmp_path):
    res = write_run(tmp_path, [*PRICED, UNPRICEABLE], [0.9, 0.95, 0.8, 0.85])
    board = _table_of(res, PRICED, tmp_path / "board.json")  # a table without UNPRICEABLE's 12-wide stem
    repriced = res.reprice(board)
    assert repriced.measured and list(repriced.unpriceable) == [3] and "no latency" in repriced.unpriceable[3]
    target = get_target(board)
    for row in repriced.rows:  # re-priced there, accuracy as trained
        cost = target.price(res.plan(row.candidate))
        assert row.latency_ms == cost.latency_ms and row.accuracy == res.detail(row.number).row.accuracy
        assert row.state == ("complete" if all(cost.metric(m) <= v for m, v in BUDGET.items()) else "infeasible")
        assert res.cost_on(row.candidate, board) == cost
    with pytest.raises(UnpriceableError):  # the list-of-rows form refuses rather than leave one out
        res.repriced(board)
    # an estimate prices every candidate: its roofline prices any layer
    assert not res.reprice("rpi4-a72").unpriceable


def test_the_hypervolume_history_grows_to_the_runs_hypervolume(tmp_path):
    rng = random.Random(0)
    res = write_run(tmp_path, PRICED * 10, [rng.uniform(0.5, 1.0) for _ in range(30)])
    history = res.hypervolume_history(points=7)
    assert [n for n, _ in history] == [0, 5, 10, 14, 19, 24, 29]
    values = [hv for _, hv in history]
    assert values == sorted(values) and values[-1] == pytest.approx(res.hypervolume())
    # more points asked than there are trials (the app asks for 60): every trial, the last included
    assert [n for n, _ in res.hypervolume_history(points=60)] == list(range(30))


def exact_hypervolume(points, reference):
    """Cells between consecutive coordinates, each dominated or not: exact, and obviously right."""
    cuts = [sorted({0.0, r, *(p[k] for p in points)}) for k, r in enumerate(reference)]
    volume = 0.0
    for cell in itertools.product(*(zip(c, c[1:]) for c in cuts)):
        if any(all(p[k] <= lo for k, (lo, _) in enumerate(cell)) for p in points):
            size = 1.0
            for lo, hi in cell:
                size *= hi - lo
            volume += size
    return volume


@pytest.mark.parametrize("dims", [2, 3])
def test_the_hypervolume_is_exact(dims):
    rng = random.Random(dims)
    points = [tuple(rng.random() for _ in range(dims)) for _ in range(25)]
    assert hypervolume(points, (1.0,) * dims) == pytest.approx(exact_hypervolume(points, (1.0,) * dims))


def test_the_storage_stamp_changes_when_a_trial_lands(tmp_path):
    assert storage_stamp(tmp_path) is None  # no study yet
    assert storage_stamp(tmp_path, "postgresql://host/db") is None  # no file to look at
    res = write_run(tmp_path, PRICED[:1], [0.9])
    before = storage_stamp(tmp_path)
    res.study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"status": "failed"}))
    assert before is not None and storage_stamp(tmp_path) != before
    assert storage_stamp(tmp_path / "x", f"sqlite:///{tmp_path / JOURNAL}") == storage_stamp(tmp_path)
    assert study_names(tmp_path) == ["run"]
