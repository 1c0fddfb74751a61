"""Bad input gets a clear error and exit code 2, never a traceback (issue 8, part 1).

Specs are fuzzed with hypothesis both ways: every generated bad spec is refused with a line naming
its field, in-process and through ``hwsearch validate``; every spec generated within the allowed
ranges is accepted and survives the round trip through the run directory's ``spec.yaml``. Bad
datasets, device profiles and teacher models must raise their error naming the file or folder,
and make the CLI exit 2 with one line per problem. A few real subprocesses check the whole path.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import pickle
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from hwsearch.search.cli import EXIT_BAD_INPUT, main
from hwsearch.search.spec import (
    Budget,
    DatasetSpec,
    EarlyStopping,
    SearchSettings,
    Spec,
    SpecError,
    TeacherSpec,
    TrainingSpec,
    parse_spec,
)
from hwsearch.search.training._datasets import DatasetError, load_dataset
from hwsearch.search.training._teacher import TeacherError, check_teacher
from hwsearch.spaces._candidate import MAX_PRUNE
from hwsearch.spaces._config import SpaceSpec, StageSpace
from hwsearch.targets._profile_format import Profile, ProfileError
from hwsearch.targets._registry import SHIPPED, target_names
from tests.conftest import REPO, TINY_SPACE, hwsearch_cmd, tiny_spec
from tests.search.test_teacher import linear_onnx

BITS = [2, 4, 8, 16, 32]
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MISTAKES = ["wrong_type", "unknown_field", "empty_space", "negative_budget", "out_of_range", "bit_width",
            "contradictory", "unknown_value"]
BAD_SPECS, VALID_SPECS = 64, 200  # examples per run, per kind of mistake (8 kinds: 512 bad specs) and valid
# (derandomized: the same specs every run)


def cli(*args: str) -> tuple[int, str, str]:
    """``hwsearch ARGS`` in this process: exit code, stdout, stderr. An exception escaping
    ``main`` (what would print a traceback) fails the test that calls it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, err: str, *expected: str) -> list[str]:
    """Exit 2, no traceback, stderr only ``error:`` (and ``warning:``) lines, ``expected`` all in
    them; returns the error lines."""
    lines = err.strip().splitlines()
    assert code == EXIT_BAD_INPUT, err
    assert "Traceback" not in err and all(line.startswith(("error: ", "warning: ")) for line in lines), err
    for text in expected:
        assert text in err, (text, err)
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors, err
    return errors


def write_spec(folder: Path, data, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def names_field(problems: list[str], field: str) -> bool:
    """Some problem line starts with the field's path (or a path inside it)."""
    return any(p.startswith((f"{field}:", f"{field}.")) for p in problems)


# ------------------------------------------------------------------------------------------
# Spec fuzzing: strategies
# ------------------------------------------------------------------------------------------

SAFE = "bcdghjkmpqruvwxz"  # no letters that spell a number or a bool pydantic would coerce (inf, nan, yes, off...)
FUZZ_ROOT = Path("/nonexistent/hwsearch-fuzz")  # paths are not read when a spec is parsed
SHIPPED_PROFILE = str((SHIPPED / "rpi4-a72.json").resolve())

words = st.text(SAFE, min_size=1, max_size=12)
paths = words.map(lambda w: str(FUZZ_ROOT / w))
pos_floats = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


def choices(values: list, max_size: int | None = None) -> st.SearchStrategy:
    return st.lists(st.sampled_from(values), min_size=1, max_size=max_size or len(values), unique=True)


def ints(lo: int, hi: int, max_size: int = 3) -> st.SearchStrategy:
    return st.lists(st.integers(lo, hi), min_size=1, max_size=max_size, unique=True)


@st.composite
def ranges(draw, lo: float, hi: float) -> list[float]:
    low = draw(st.floats(min_value=lo, max_value=hi))
    return [low, draw(st.floats(min_value=low, max_value=hi))]


@st.composite
def space_dicts(draw) -> dict:
    space = draw(st.fixed_dictionaries({}, optional={
        "stem_widths": ints(1, 4096),
        "stages": st.lists(st.fixed_dictionaries({"widths": ints(1, 4096)}, optional={"depths": ints(1, 16)}),
                           min_size=1, max_size=8),
        "kernels": choices([3, 5, 7]),
        "se": choices([False, True]),
        "activations": choices(["relu", "hswish"]),
        "weight_bits": choices(BITS),
        "activation_bits": choices(BITS),
        "bits_per_stage": st.booleans(),
        "distill": st.booleans(),
        "temperature": ranges(1e-3, 100),
        "alpha": ranges(0, 1),
    }))
    if draw(st.booleans()):  # expand ratios and pruning go together: pruning needs an expand ratio > 1
        space["expand_ratios"] = draw(choices([1, 3, 4, 6]))
        if max(space["expand_ratios"]) == 1:
            space["prune_ratios"] = [0.0]
        elif draw(st.booleans()):
            space["prune_ratios"] = draw(st.lists(st.floats(0, MAX_PRUNE), min_size=1, max_size=3, unique=True))
    return space


def dataset_dicts() -> st.SearchStrategy:
    common = {"val_fraction": st.floats(0.01, 0.99), "limit": st.none() | st.integers(20, 10**6),
              "seed": st.none() | st.integers(0, 2**32), "bad_images": st.sampled_from(["fail", "skip"])}
    return st.one_of(
        st.fixed_dictionaries({"name": st.just("digits")}, optional=common),
        st.fixed_dictionaries({"name": st.just("npz"), "path": paths}, optional=common),
        st.fixed_dictionaries({"name": st.sampled_from(["imagefolder", "cifar10"]), "path": paths},
                              optional={**common, "image_size": st.none() | st.integers(8, 224)}))


def search_dicts() -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={
        "trials": st.integers(1, 10**6), "sampler": st.sampled_from(["tpe", "nsga2", "random", "gp", "cost-aware"]),
        "seed": st.integers(0, 2**32), "epochs": st.integers(1, 1000), "finetune_epochs": st.integers(0, 100),
        "batch_size": st.integers(1, 4096), "lr": st.floats(1e-6, 10), "workers": st.integers(1, 64),
        "backend": st.sampled_from(["local", "ray"]), "address": st.none() | words.map(lambda w: f"{w}:6379"),
        "cpus_per_trial": st.none() | st.floats(0.01, 64), "gpus_per_trial": st.floats(0, 8),
        "early_stopping": st.fixed_dictionaries({}, optional={
            "enabled": st.booleans(), "min_epochs": st.integers(1, 50), "reduction_factor": st.integers(2, 10),
            "margin": st.floats(0, 1)}),
        "device": st.sampled_from(["auto", "cpu", "cuda"]), "keep_weights": st.booleans(),
        "seed_corners": st.booleans()})


def valid_specs() -> st.SearchStrategy:
    others = ["latency_ms", "size_kb", "peak_memory_kb"]
    return st.fixed_dictionaries({"name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)},
                                 optional={
        "dataset": dataset_dicts(),
        "target": st.sampled_from([*target_names(), SHIPPED_PROFILE]),
        "budget": st.fixed_dictionaries({}, optional={m: st.none() | pos_floats for m in others}),
        "objectives": st.lists(st.sampled_from(others), unique=True).flatmap(
            lambda rest: st.permutations(["accuracy", *rest])),
        "space": space_dicts(),
        "teacher": st.fixed_dictionaries({}, optional={"onnx": st.none() | paths.map(lambda p: p + ".onnx"),
                                                       "extra_epochs": st.integers(0, 100)}),
        "search": search_dicts(),
        "storage": st.none() | st.sampled_from(["sqlite:///runs/s.db", "postgresql://u@db:5432/hw"]),
    })


# Bad specs: a valid spec with one mutation, and the field path its error must name.

# Leaf fields and their kinds, for wrong types.
LEAVES = {
    ("name",): "str", ("target",): "str", ("storage",): "str", ("objectives",): "list",
    ("dataset",): "section", ("budget",): "section", ("space",): "section", ("teacher",): "section",
    ("search",): "section", ("search", "early_stopping"): "section",
    ("dataset", "name"): "str", ("dataset", "path"): "str", ("dataset", "val_fraction"): "num",
    ("dataset", "limit"): "int", ("dataset", "image_size"): "int", ("dataset", "seed"): "int",
    ("dataset", "bad_images"): "str",
    **{("budget", m): "num" for m in Budget.model_fields},
    **{("space", f): "list" for f in ("stem_widths", "stages", "kernels", "expand_ratios", "se", "activations",
                                      "prune_ratios", "weight_bits", "activation_bits", "temperature", "alpha")},
    ("space", "bits_per_stage"): "bool", ("space", "distill"): "bool",
    ("teacher", "onnx"): "str", ("teacher", "extra_epochs"): "int", ("teacher", "layout"): "str",
    ("teacher", "pixel_max"): "num", ("teacher", "mean"): "list", ("teacher", "std"): "list",
    ("teacher", "output"): "str", ("training",): "section",
    **{("training", f): "str" for f in ("optimizer", "schedule", "quantizer")},
    **{("training", f): "num" for f in ("warmup", "weight_decay", "label_smoothing")},
    **{("training", f): "int" for f in ("crop_padding", "cutout")},
    ("training", "flip"): "bool", ("training", "channels_last"): "bool",
    **{("search", f): "int" for f in ("trials", "seed", "epochs", "finetune_epochs", "batch_size", "workers")},
    **{("search", f): "num" for f in ("lr", "cpus_per_trial", "gpus_per_trial")},
    **{("search", f): "str" for f in ("sampler", "backend", "device", "address")},
    ("search", "keep_weights"): "bool", ("search", "seed_corners"): "bool",
    ("search", "early_stopping", "enabled"): "bool", ("search", "early_stopping", "min_epochs"): "int",
    ("search", "early_stopping", "reduction_factor"): "int", ("search", "early_stopping", "margin"): "num",
}
_lists = st.lists(st.integers(-5, 5), max_size=3)
_dicts = st.dictionaries(words, st.integers(), min_size=1, max_size=2)
WRONG = {  # values no lax coercion turns into the kind
    "str": st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), _lists, _dicts),
    "int": st.one_of(words, st.floats(0.01, 1e6).filter(lambda v: v != int(v)), _lists, _dicts),
    "num": st.one_of(words, _lists, _dicts),
    "bool": st.one_of(words, st.integers().filter(lambda v: v not in (0, 1)), _lists, _dicts),
    "list": st.one_of(words, st.integers(), st.booleans(), _dicts),
    "section": st.one_of(st.none(), words, st.integers(), _lists.filter(bool)),
}
SECTIONS = {(): Spec, ("dataset",): DatasetSpec, ("budget",): Budget, ("space",): SpaceSpec,
            ("space", "stages", 0): StageSpace, ("teacher",): TeacherSpec, ("search",): SearchSettings,
            ("search", "early_stopping"): EarlyStopping, ("training",): TrainingSpec}
OUT_OF_RANGE = {
    ("search", "trials"): st.integers(max_value=0), ("search", "epochs"): st.integers(max_value=0),
    ("search", "finetune_epochs"): st.integers(max_value=-1), ("search", "batch_size"): st.integers(max_value=0),
    ("search", "workers"): st.integers(max_value=0), ("search", "seed"): st.integers(max_value=-1),
    ("search", "lr"): st.floats(max_value=0) | st.just(math.nan),
    ("search", "cpus_per_trial"): st.floats(max_value=0) | st.just(math.nan),
    ("search", "gpus_per_trial"): st.floats(max_value=-1e-9) | st.just(math.nan),
    ("search", "early_stopping", "min_epochs"): st.integers(max_value=0),
    ("search", "early_stopping", "reduction_factor"): st.integers(max_value=1),
    ("search", "early_stopping", "margin"): st.floats(min_value=1.000001) | st.floats(max_value=-1e-9),
    ("dataset", "val_fraction"): st.floats(max_value=0) | st.floats(min_value=1) | st.just(math.nan),
    ("dataset", "limit"): st.integers(max_value=19), ("dataset", "seed"): st.integers(max_value=-1),
    ("dataset", "image_size"): st.integers(max_value=7) | st.integers(min_value=225),
    ("teacher", "extra_epochs"): st.integers(max_value=-1),
    ("teacher", "pixel_max"): st.floats(max_value=0) | st.just(math.nan),
    ("training", "warmup"): st.floats(max_value=-1e-9) | st.floats(min_value=1),
    ("training", "label_smoothing"): st.floats(max_value=-1e-9) | st.floats(min_value=1),
    ("training", "crop_padding"): st.integers(max_value=-1), ("training", "cutout"): st.integers(max_value=-1),
    ("training", "quantizer"): words.filter(lambda q: q not in ("lsq", "maxabs")),
    ("space", "stem_widths"): st.integers(max_value=0).map(lambda w: [8, w]),
    ("space", "prune_ratios"): st.floats(min_value=MAX_PRUNE + 1e-6, max_value=1e9).map(lambda r: [0.0, r]),
    ("space", "temperature"): st.floats(100.001, 1e9).map(lambda hi: [1.0, hi]),
}
SPACE_LISTS = ["stem_widths", "stages", "kernels", "expand_ratios", "se", "activations", "prune_ratios",
               "weight_bits", "activation_bits"]


@dataclass
class Bad:
    data: dict | list | str | int
    field: str
    category: str


def _section(data: dict, path: tuple) -> dict:
    """The dict at ``path`` in ``data``, created (as a valid section) where missing."""
    node = data
    for key in path:
        if key == "stages":
            node = node.setdefault("stages", [{"widths": [8]}])
        elif isinstance(key, int):  # a stage
            node = node[key]
        else:
            node = node.setdefault(key, {})
    return node


def _misspell(draw, field: str) -> str:
    """A realistic typo of a field's name."""
    how = draw(st.sampled_from(["drop", "double", "case", "dash", "plural"]))
    i = draw(st.integers(0, len(field) - 1))
    return {"drop": field[:i] + field[i + 1:], "double": field[:i] + field[i] * 2 + field[i:],
            "case": field.capitalize() if field[0].islower() else field.lower(),
            "dash": field.replace("_", "-") if "_" in field else field + "-",
            "plural": field[:-1] if field.endswith("s") else field + "s"}[how] or field + "x"


@st.composite
def bad_specs(draw, category: str) -> Bad:
    """A valid spec with one mistake of a kind (see MISTAKES), and the field its error must name."""
    data = draw(valid_specs())
    if category == "wrong_type":
        path = draw(st.sampled_from(sorted(LEAVES) + [()]))
        if path == ():  # the whole file is not a mapping
            return Bad(draw(st.one_of(words, st.integers(), _lists)), "(top level)", category)
        _section(data, path[:-1])[path[-1]] = draw(WRONG[LEAVES[path]])
        return Bad(data, ".".join(path), category)
    if category == "unknown_field":
        path = draw(st.sampled_from(sorted(SECTIONS, key=str)))
        known = set(SECTIONS[path].model_fields)
        how = draw(st.sampled_from(["typo", "word", "number"]))
        key = (_misspell(draw, draw(st.sampled_from(sorted(known)))) if how == "typo" else
               draw(words) if how == "word" else draw(st.integers(-9, 99)))
        while key in known:
            key = f"{key}_"
        section = _section(data, path)
        section[key] = draw(st.one_of(st.integers(), words, _lists))
        return Bad(data, ".".join(map(str, (*path, key))), category)
    if category == "empty_space":
        where = draw(st.sampled_from(["objectives", "stage widths", "stage depths", *SPACE_LISTS]))
        if where == "objectives":
            data["objectives"] = []
            return Bad(data, "objectives", category)
        if where.startswith("stage "):  # not "stages", the whole list
            _section(data, ("space", "stages", 0))["widths" if where == "stage widths" else "depths"] = []
            return Bad(data, f"space.stages.0.{where.split()[1]}", category)
        _section(data, ("space",))[where] = []
        return Bad(data, f"space.{where}", category)
    if category == "negative_budget":
        metric = draw(st.sampled_from(sorted(Budget.model_fields)))
        _section(data, ("budget",))[metric] = draw(st.one_of(st.floats(max_value=0), st.integers(max_value=0),
                                                            st.just(math.nan)))
        return Bad(data, f"budget.{metric}", category)
    if category == "out_of_range":
        path = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        _section(data, path[:-1])[path[-1]] = draw(OUT_OF_RANGE[path])
        return Bad(data, ".".join(path), category)
    if category == "bit_width":
        which = draw(st.sampled_from(["weight_bits", "activation_bits"]))
        bits = draw(choices(BITS, max_size=3))
        bits.insert(draw(st.integers(0, len(bits))), draw(st.integers(-64, 128).filter(lambda b: b not in BITS)))
        _section(data, ("space",))[which] = bits
        return Bad(data, f"space.{which}", category)
    space = _section(data, ("space",)) if category == "contradictory" else None
    if category == "contradictory":
        kind = draw(st.sampled_from(["prune without expand", "temperature", "alpha", "duplicate choice",
                                     "duplicate width", "no accuracy", "duplicate objective", "no path",
                                     "path for bundled", "image_size not resized"]))
        if kind == "prune without expand":
            space["expand_ratios"] = [1]
            space["prune_ratios"] = [0.0, draw(st.floats(0.01, MAX_PRUNE))]
            return Bad(data, "space", category)
        if kind in ("temperature", "alpha"):
            hi = 100 if kind == "temperature" else 1
            low = draw(st.floats(1e-3, hi, exclude_min=True))
            space[kind] = [low, draw(st.floats(1e-4, low, exclude_max=True))]
            return Bad(data, f"space.{kind}", category)
        if kind == "duplicate choice":
            field, pool = draw(st.sampled_from([("kernels", [3, 5, 7]), ("expand_ratios", [3, 4, 6]),
                                                ("se", [False, True]), ("activations", ["relu", "hswish"]),
                                                ("weight_bits", BITS), ("activation_bits", BITS)]))
            value = draw(st.sampled_from(pool))
            space[field] = [value, value]
            return Bad(data, f"space.{field}", category)
        if kind == "duplicate width":
            width = draw(st.integers(1, 4096))
            _section(data, ("space", "stages", 0))["widths"] = [width, width]
            return Bad(data, "space.stages.0.widths", category)
        if kind == "no accuracy":
            data["objectives"] = draw(choices(["latency_ms", "size_kb", "peak_memory_kb"]))
            return Bad(data, "objectives", category)
        if kind == "duplicate objective":
            data["objectives"] = ["accuracy", draw(st.sampled_from(["accuracy", "latency_ms", "size_kb"]))] * 2
            return Bad(data, "objectives", category)
        if kind == "no path":
            data["dataset"] = {"name": draw(st.sampled_from(["npz", "imagefolder", "cifar10"]))}
            return Bad(data, "dataset", category)
        if kind == "path for bundled":
            data["dataset"] = {"name": "digits", "path": draw(paths)}
            return Bad(data, "dataset", category)
        data["dataset"] = draw(st.sampled_from([{"name": "digits"}, {"name": "npz", "path": str(FUZZ_ROOT)}]))
        data["dataset"]["image_size"] = draw(st.integers(8, 224))
        return Bad(data, "dataset", category)
    kind = draw(st.sampled_from(["dataset", "target", "target file", "name", "no name", "stages"]))
    if kind == "dataset":
        data["dataset"] = {"name": draw(words)}
        return Bad(data, "dataset", category)
    if kind in ("target", "target file"):
        name = draw(words)
        data["target"] = name + ".json" if kind == "target file" else name
        return Bad(data, "target", category)
    if kind == "name":
        data["name"] = draw(st.one_of(st.just(""), words.map(lambda w: "-" + w), words.map(lambda w: w + " x"),
                                      st.just("a" * 65)))
        return Bad(data, "name", category)
    if kind == "no name":
        del data["name"]
        return Bad(data, "name", category)
    data["space"] = {**data.get("space", {}), "stages": [{"widths": [8]}] * draw(st.integers(9, 12))}
    return Bad(data, "space.stages", category)


# ------------------------------------------------------------------------------------------
# Spec fuzzing: tests
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mistake", MISTAKES)
def test_fuzzed_bad_specs_are_refused_naming_the_field_in_process_and_by_validate(mistake, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-bad")
    seen: Counter = Counter()

    @settings(FUZZ, max_examples=BAD_SPECS)
    @given(bad_specs(mistake))
    def check(bad: Bad) -> None:
        with pytest.raises(SpecError) as refused:
            parse_spec(bad.data, folder)
        problems = refused.value.problems
        assert problems and names_field(problems, bad.field), (bad, problems)
        # the same spec as a file, through the command line
        code, out, err = cli("validate", write_spec(folder, bad.data))
        lines = assert_refused(code, err)
        assert names_field([line.removeprefix("error: ") for line in lines], bad.field), (bad, err)
        assert out == ""
        seen[bad.field] += 1

    check()
    assert sum(seen.values()) >= BAD_SPECS, seen
    assert len(seen) >= 2, seen  # the mistake made in several fields


def _given_in(given, dumped) -> bool:
    """Every value the generated spec gave is what the parsed spec holds."""
    if isinstance(given, dict):
        return all(_given_in(v, dumped[k]) for k, v in given.items())
    if isinstance(given, list):
        return len(given) == len(dumped) and all(_given_in(g, d) for g, d in zip(given, dumped))
    return given == dumped


def test_fuzzed_valid_specs_are_accepted_and_survive_the_run_directory_round_trip():
    seen = Counter()

    @settings(FUZZ, max_examples=VALID_SPECS)
    @given(valid_specs())
    def check(data: dict) -> None:
        spec = parse_spec(data)
        assert _given_in(data, spec.model_dump(mode="json"))
        assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec  # the spec.yaml a run writes loads again
        seen["valid"] += 1

    check()
    assert seen["valid"] >= VALID_SPECS


def test_bad_specs_through_real_processes_exit_2_without_a_traceback(tmp_path):
    """validate and run, as a user types them, on a spec with one mistake of each kind."""
    bad = write_spec(tmp_path, {
        "name": "x", "budget": {"latency_ms": -1}, "space": {"weight_bits": [8, 3], "kernels": []},
        "search": {"epochs": "many", "early_stoping": {}}, "dataset": {"name": "digits", "path": "data"}})
    procs = {cmd: subprocess.Popen([*hwsearch_cmd(), cmd, str(bad), *(["--out", str(tmp_path / "run")] if cmd == "run"
                                                                     else [])],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in ("validate", "run")}
    for cmd, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        lines = assert_refused(proc.returncode, err, "error: budget.latency_ms:", "error: space.weight_bits.1:",
                               "error: space.kernels:", "error: search.epochs:",
                               "error: search.early_stoping: unknown field", "error: dataset: dataset 'digits'")
        assert len(lines) == 6, (cmd, err)
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------

def _images(folder: Path, n: int, fmt: str = "png", size: int = 10, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(folder / f"{i}.{fmt}")
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out[-1])
    return out


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # opens fine; fails when decoded
    return path


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:  # np.savez would add .npz to a name without it
        np.savez(f, **arrays)
    return path


def _x(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 8, 8), dtype=np.uint8)


def _classes(n: int = 40, k: int = 4) -> np.ndarray:
    return np.arange(n) % k


def _batch(path: Path, batch) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


def _good_batch(n: int = 20, labels=None) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(np.arange(n) % 10 if labels is None else labels)}


# Each builder makes bad data under tmp and returns (dataset section, the file or folder the error
# must name, what it must say).
def npz_missing(t):
    return {"name": "npz", "path": t / "nope.npz"}, t / "nope.npz", "no such file"


def npz_is_a_folder(t):
    return {"name": "npz", "path": t}, t, "is not a file"


def npz_garbage(t):
    (t / "g.npz").write_bytes(b"\x89not a zip file at all" * 10)
    return {"name": "npz", "path": t / "g.npz"}, t / "g.npz", "cannot read"


def npz_truncated(t):
    data = _npz(t / "full.npz", x=_x(), y=_classes()).read_bytes()
    (t / "t.npz").write_bytes(data[: len(data) // 2])
    return {"name": "npz", "path": t / "t.npz"}, t / "t.npz", "cannot read"


def npz_single_array(t):
    with open(t / "one.npz", "wb") as f:
        np.save(f, _x())
    return {"name": "npz", "path": t / "one.npz"}, t / "one.npz", "holds a single array"


def npz_without_y(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(), labels=_classes())}, t / "d.npz",
            "needs arrays 'x' and 'y'")


def npz_lengths_differ(t):
    return {"name": "npz", "path": _npz(t / "d.npz", x=_x(40), y=_classes(39))}, t / "d.npz", "40 images but 39 labels"


def npz_float_labels(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(), y=_classes().astype(float))}, t / "d.npz",
            "y must be a 1-D integer array, got float64")


def npz_2d_labels(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(), y=_classes()[:, None])}, t / "d.npz",
            "y must be a 1-D integer array")


def npz_flat_images(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x().reshape(40, 64), y=_classes())}, t / "d.npz",
            "x must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape (40, 64)")


def npz_text_images(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x().astype(str), y=_classes())}, t / "d.npz",
            "x must hold integer or float pixel values")


def npz_nan_images(t):
    x = _x().astype(np.float32)
    x[3, 2, 1] = np.nan
    return {"name": "npz", "path": _npz(t / "d.npz", x=x, y=_classes())}, t / "d.npz", "NaN or infinite"


def npz_negative_labels(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(), y=_classes() - 1)}, t / "d.npz",
            "labels must be 0..K-1 for K classes, found -1")


def npz_label_gap(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(), y=np.where(_classes() == 3, 10**9, _classes()))},
            t / "d.npz", "up to 1000000000: no example of 3, 4, 5, 6, 7 and 999999992 more")


def npz_single_class(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(), y=np.zeros(40, np.int64))}, t / "d.npz",
            "has 1 class; at least 2 are needed")


def npz_too_small_to_split(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(20), y=_classes(20, 10)), "val_fraction": 0.9},
            t / "d.npz", "cannot take a validation split of dataset.val_fraction 0.9 from 20 images of 10 classes")


def npz_limit_below_classes(t):
    return ({"name": "npz", "path": _npz(t / "d.npz", x=_x(300), y=_classes(300, 30)), "limit": 20},
            t / "d.npz", "cannot take dataset.limit 20 images from 300 images of 30 classes")


def folder_missing(t):
    return {"name": "imagefolder", "path": t / "nope"}, t / "nope", "no such folder"


def folder_is_a_file(t):
    (t / "f.png").write_bytes(b"")
    return {"name": "imagefolder", "path": t / "f.png"}, t / "f.png", "is not a folder"


def folder_without_classes(t):
    _images(t / "flat", 0)
    return {"name": "imagefolder", "path": t / "flat"}, t / "flat", "no class folders"


def folder_with_an_empty_class(t):
    _images(t / "cat", 4)
    (t / "dog").mkdir()
    (t / "dog" / "notes.txt").write_text("no images here")
    return {"name": "imagefolder", "path": t}, t, "class folder 'dog' has no images"


def folder_with_one_class(t):
    _images(t / "cat", 30)
    return {"name": "imagefolder", "path": t}, t, "has 1 class; at least 2 are needed"


def folder_with_a_truncated_jpeg(t):
    _images(t / "cat", 12)
    _images(t / "dog", 11, fmt="jpg")
    bad = _truncated_jpeg(t / "dog" / "11.jpg")
    return {"name": "imagefolder", "path": t}, bad, "set dataset.bad_images: skip"


def folder_with_a_corrupt_png(t):
    _images(t / "cat", 12)
    _images(t / "dog", 11)
    (t / "dog" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return {"name": "imagefolder", "path": t}, t / "dog" / "x.png", "cannot read image"


def folder_with_an_empty_image(t):
    _images(t / "cat", 12)
    _images(t / "dog", 11)
    (t / "dog" / "empty.bmp").write_bytes(b"")
    return {"name": "imagefolder", "path": t}, t / "dog" / "empty.bmp", "cannot read image"


def folder_of_mixed_sizes(t):
    _images(t / "cat", 12, size=10)
    _images(t / "dog", 12, size=12)
    return {"name": "imagefolder", "path": t}, t, "set dataset.image_size to resize them"


def folder_of_only_bad_images_skipped(t):
    _images(t / "cat", 12)
    (t / "dog").mkdir()
    for i in range(3):
        _truncated_jpeg(t / "dog" / f"{i}.jpg")
    return ({"name": "imagefolder", "path": t, "bad_images": "skip"}, t,
            "no readable image left in class folder(s) 'dog'")


def cifar_missing(t):
    return {"name": "cifar10", "path": t / "nope"}, t / "nope", "no such folder"


def cifar_without_batches(t):
    (t / "readme.html").write_text("the python version is elsewhere")
    return {"name": "cifar10", "path": t}, t, "no data_batch_* files"


def cifar_garbage_batch(t):
    (t / "data_batch_1").write_bytes(b"GIF89a not a pickle")
    return {"name": "cifar10", "path": t}, t / "data_batch_1", "not a readable CIFAR-10 batch"


def cifar_truncated_batch(t):
    data = pickle.dumps(_good_batch(), protocol=2)
    (t / "data_batch_1").write_bytes(data[:100])
    return {"name": "cifar10", "path": t}, t / "data_batch_1", "not a readable CIFAR-10 batch"


def cifar_batch_without_labels(t):
    _batch(t / "data_batch_1", {b"data": np.zeros((20, 3072), np.uint8)})
    return {"name": "cifar10", "path": t}, t / "data_batch_1", "needs b'data', b'labels', found [\"b'data'\"]"


def cifar_batch_of_another_shape(t):
    _batch(t / "data_batch_1", {b"data": np.zeros((20, 1024), np.uint8), b"labels": list(range(20))})
    return {"name": "cifar10", "path": t}, t / "data_batch_1", "expected data (N, 3072) and labels (N,)"


def cifar_batch_with_a_list(t):
    _batch(t / "data_batch_1", [1, 2, 3])
    return {"name": "cifar10", "path": t}, t / "data_batch_1", "not a CIFAR-10 batch: needs"


def npz_empty(t):
    return {"name": "npz", "path": _npz(t / "d.npz", x=_x(0), y=_classes(0))}, t / "d.npz", "holds no images"


def cifar_labels_out_of_range(t):
    _batch(t / "data_batch_1", _good_batch(20, labels=np.arange(20)))
    return {"name": "cifar10", "path": t}, t, "labels must be in 0..9, found 0..19"


def cifar_bad_meta(t):
    _batch(t / "data_batch_1", _good_batch())
    _batch(t / "batches.meta", {b"label_names": [b"cat"]})
    return {"name": "cifar10", "path": t}, t / "batches.meta", "label_names must be a list of 10 names"


BAD_DATA = [npz_missing, npz_is_a_folder, npz_garbage, npz_truncated, npz_single_array, npz_without_y,
            npz_lengths_differ, npz_float_labels, npz_2d_labels, npz_flat_images, npz_text_images, npz_nan_images,
            npz_negative_labels, npz_label_gap, npz_single_class, npz_too_small_to_split, npz_limit_below_classes,
            folder_missing, folder_is_a_file, folder_without_classes, folder_with_an_empty_class,
            folder_with_one_class, folder_with_a_truncated_jpeg, folder_with_a_corrupt_png,
            folder_with_an_empty_image, folder_of_mixed_sizes, folder_of_only_bad_images_skipped, cifar_missing,
            cifar_without_batches, cifar_garbage_batch, cifar_truncated_batch, cifar_batch_without_labels,
            cifar_batch_of_another_shape, cifar_batch_with_a_list, cifar_labels_out_of_range,
            cifar_bad_meta, npz_empty]


@pytest.mark.parametrize("make", BAD_DATA, ids=[f.__name__ for f in BAD_DATA])
def test_bad_data_is_a_dataset_error_naming_the_file_and_validate_exits_2(make, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    section, named, says = make(data)
    with pytest.raises(DatasetError) as refused:
        load_dataset(DatasetSpec(**section), seed=0)
    message = str(refused.value)
    assert str(named) in message and says in message and "\n" not in message, message
    spec = write_spec(tmp_path, {"name": "bad", "dataset": {k: str(v) if isinstance(v, Path) else v
                                                           for k, v in section.items()}})
    code, _, err = cli("validate", spec)
    assert assert_refused(code, err, str(named), says) == [f"error: {message}"]


def test_a_truncated_image_is_skipped_with_a_warning_naming_it_when_the_spec_says_so(tmp_path, capsys):
    _images(tmp_path / "cat", 12)
    _images(tmp_path / "dog", 11, fmt="jpg")
    bad = _truncated_jpeg(tmp_path / "dog" / "11.jpg")
    assert DatasetSpec.model_fields["bad_images"].default == "fail"
    data = load_dataset(DatasetSpec(name="imagefolder", path=tmp_path, bad_images="skip"), seed=0)
    assert len(data.y_train) + len(data.y_val) == 23 and data.num_classes == 2
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "skipped 1 unreadable image(s)" in err and str(bad) in err


def test_an_unlistable_class_folder_is_a_dataset_error(tmp_path, monkeypatch):
    _images(tmp_path / "cat", 3)
    _images(tmp_path / "dog", 3)
    listing = Path.iterdir

    def denied(self):
        if self == tmp_path / "dog":
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DatasetError, match=rf"imagefolder {tmp_path / 'dog'}: cannot list the folder \(Permission"):
        load_dataset(DatasetSpec(name="imagefolder", path=tmp_path), seed=0)


@pytest.mark.parametrize("section, allowed", [
    ({"name": "digits", "path": "/data/digits"}, "'digits' is bundled and takes no 'path'"),
    ({"name": "npz", "path": "/data/d.npz", "image_size": 32}, "'npz' does not resize its images"),
    ({"name": "digits", "bad_images": "ignore"}, "'fail' or 'skip'"),
])
def test_contradictory_dataset_settings_are_refused(section, allowed):
    with pytest.raises(SpecError) as refused:
        parse_spec({"name": "x", "dataset": section})
    assert any(p.startswith("dataset") and allowed in p for p in refused.value.problems), refused.value.problems


@pytest.mark.parametrize("section, field, value, says", [
    ("dataset", "path", "data\0.npz", "NUL"), ("teacher", "onnx", "t\0.onnx", "NUL"),
    ("search", "lr", math.inf, "finite"), ("search", "cpus_per_trial", math.inf, "finite"),
    ("budget", "latency_ms", math.nan, "finite"), ("budget", "size_kb", math.inf, "finite"),
])
def test_nul_paths_and_non_finite_numbers_are_refused_naming_the_field(section, field, value, says):
    spec = tiny_spec(**{section: {field: value}})
    if section == "dataset":
        spec["dataset"] = {"name": "npz", "path": value}
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert any(p.startswith(f"{section}.{field}:") and says in p for p in err.value.problems), err.value.problems


def test_bad_data_through_run_exits_2_before_training(tmp_path):
    _npz(tmp_path / "d.npz", x=_x(40), y=_classes(39))
    spec = write_spec(tmp_path, {"name": "bad", "dataset": {"name": "npz", "path": "d.npz"}})
    code, _, err = cli("run", spec, "--out", tmp_path / "run", "--no-progress")
    assert_refused(code, err, f"npz {tmp_path / 'd.npz'}: 40 images but 39 labels")
    assert not (tmp_path / "run" / "teacher").exists()


def test_asking_for_cuda_without_a_gpu_exits_2_before_anything_runs(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    spec = write_spec(tmp_path, tiny_spec(search={"device": "cuda"}))
    code, _, err = cli("run", spec, "--out", tmp_path / "run", "--no-progress")
    assert_refused(code, err, "error: search.device: device 'cuda' was asked for, but torch sees no CUDA device")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------
# Device profiles
# ------------------------------------------------------------------------------------------

def _profile_json() -> dict:
    return json.loads((SHIPPED / "rpi4-a72.json").read_text())


def tiny_profile(path: Path) -> Path:
    """A profile that prices every layer of the tests' tiny space on digits (no measuring)."""
    from hwsearch.spaces._plan import reachable_layers
    from hwsearch.targets._profile_format import Entry, block_key

    data = {**_profile_json(), "entries": {}}
    profile = Profile.model_validate(data)
    for layer in reachable_layers(SpaceSpec(**TINY_SPACE), (1, 8, 8), 10):
        profile.add(block_key(layer), Entry(mean_ms=0.01, std_ms=0.0, count=1))
    profile.save(path)
    return path


BAD_PROFILES = {
    "not json": (b"this is not json", "not a readable JSON profile"),
    "truncated": (json.dumps(_profile_json()).encode()[:300], "not a readable JSON profile"),
    "binary": (bytes(range(256)), "not a readable JSON profile"),
    "a list": (b"[1, 2]", "a profile is a JSON object, got list"),
    "no version": (json.dumps({k: v for k, v in _profile_json().items() if k != "schema_version"}).encode(),
                   "no schema_version: not an hwsearch device profile"),
    "old version": (json.dumps({**_profile_json(), "schema_version": 1}).encode(),
                    "schema_version is 1, this hwsearch reads versions 2, 3; measure the device again"),
    "newer version": (json.dumps({**_profile_json(), "schema_version": 4}).encode(),
                      "written by a newer hwsearch: upgrade this one"),
    "no device": (json.dumps({k: v for k, v in _profile_json().items() if k != "device"}).encode(),
                  "invalid profile: device: Field required"),
    "many bad entries": (json.dumps({**_profile_json(), "entries": {f"k{i}": {} for i in range(12)}}).encode(),
                         "; and 31 more"),
}


@pytest.mark.parametrize("case", BAD_PROFILES)
def test_a_corrupt_or_other_version_profile_target_exits_2_with_one_line(case, tmp_path):
    content, says = BAD_PROFILES[case]
    path = tmp_path / "device.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError) as refused:
        Profile.load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message
    spec = write_spec(tmp_path, {**tiny_spec(), "target": "device.json"})
    code, _, err = cli("validate", spec, "--samples", "0")
    assert assert_refused(code, err, says) == [f"error: {message}"]


def test_a_corrupt_profile_exits_2_from_every_command_that_reads_one(tmp_path):
    from hwsearch.search.study._study import open_study

    good = tiny_profile(tmp_path / "device.json")
    spec = parse_spec(tiny_spec(target=str(good)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").write_text(spec.to_yaml())
    open_study(spec, run)  # a run whose target is that profile
    good.write_text(good.read_text()[:-40])  # then the profile is damaged
    cut = f"{good}: not a readable JSON profile"
    for args in (["latency-check", "--target", good, "--no-progress"], ["pareto", run, "--target", good],
                 ["export", run, "--trial", "0", "--no-progress"],
                 ["profile", "--target", "dev", "--out", good, "--no-progress"]):
        code, _, err = cli(*args)
        assert_refused(code, err, cut)


# ------------------------------------------------------------------------------------------
# Teacher models
# ------------------------------------------------------------------------------------------

def _model(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "teacher", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _w(classes: int = 10) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full((64, classes), 0.01, np.float32), "w")


def _x_in(elem=TensorProto.FLOAT, shape=("N", 1, 8, 8), name="x"):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _logits(shape=("N", 10)):
    return helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))


FLAT = helper.make_node("Flatten", ["x"], ["f"], axis=1)


def teacher_missing(t):
    return t / "nope.onnx", "no such file"


def teacher_not_onnx(t):
    (t / "t.onnx").write_bytes(b"PK\x03\x04 a zip, not a model")
    return t / "t.onnx", "cannot load the ONNX model"


def teacher_for_rgb(t):
    linear_onnx(t / "t.onnx", in_shape=(3, 8, 8))
    return t / "t.onnx", "input shape ['N', 3, 8, 8] does not match the dataset's (N, 1, 8, 8)"


def teacher_of_five_classes(t):
    linear_onnx(t / "t.onnx", classes=5)
    return t / "t.onnx", "outputs shape (5,), expected (10,) logits"


def teacher_with_two_inputs(t):
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Flatten", ["m"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    return (_model(t / "t.onnx", nodes, [_x_in(), _x_in(name="s")], [_logits()], [_w()]),
            "takes 2 inputs (x, s); a teacher takes one")


def teacher_of_integers(t):
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["c"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w"], ["y"])]
    return (_model(t / "t.onnx", nodes, [_x_in(TensorProto.INT64)], [_logits()], [_w()]),
            "input 'x' is tensor(int64)")


def teacher_with_undeclared_classes(t):
    """Its class count shows only when it runs (Compress keeps 7 of 10 logits)."""
    keep = numpy_helper.from_array(np.arange(10) < 7, "keep")
    nodes = [FLAT, helper.make_node("MatMul", ["f", "w"], ["l"]),
             helper.make_node("Compress", ["l", "keep"], ["y"], axis=1)]
    return (_model(t / "t.onnx", nodes, [_x_in()], [_logits(("N", "K"))], [_w(), keep]),
            "outputs shape (7,) for 8 images, expected (10,) logits")


def teacher_failing_on_a_batch(t):
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])]
    return (_model(t / "t.onnx", nodes, [_x_in()], [_logits()], [_w(), shape]),
            "fails on the dataset's images 1x8x8")


def teacher_of_nans(t):
    nan = numpy_helper.from_array(np.array(np.nan, np.float32), "nan")
    nodes = [FLAT, helper.make_node("MatMul", ["f", "w"], ["l"]), helper.make_node("Mul", ["l", "nan"], ["y"])]
    return (_model(t / "t.onnx", nodes, [_x_in()], [_logits()], [_w(), nan]),
            "outputs NaN or infinite values")


BAD_TEACHERS = [teacher_missing, teacher_not_onnx, teacher_for_rgb, teacher_of_five_classes, teacher_with_two_inputs,
                teacher_of_integers, teacher_with_undeclared_classes, teacher_failing_on_a_batch, teacher_of_nans]


@pytest.fixture(scope="module")
def digits():
    return load_dataset(parse_spec(tiny_spec()).dataset, 0)


@pytest.mark.parametrize("make", BAD_TEACHERS, ids=[f.__name__ for f in BAD_TEACHERS])
def test_a_teacher_that_does_not_fit_is_a_teacher_error_and_validate_exits_2(make, tmp_path, digits):
    path, says = make(tmp_path)
    with pytest.raises(TeacherError) as refused:
        check_teacher(TeacherSpec(onnx=path), digits)
    message = str(refused.value)
    assert message.startswith(f"teacher.onnx {path}: ") and says in message and "\n" not in message, message
    code, out, err = cli("validate", write_spec(tmp_path, tiny_spec(teacher={"onnx": str(path)})))
    assert assert_refused(code, err, says) == [f"error: {message}"]
    assert ": valid" not in out  # said only when every check passed


def test_a_fitting_teacher_passes_validate(tmp_path, digits):
    linear_onnx(tmp_path / "t.onnx")
    assert 0 <= check_teacher(TeacherSpec(onnx=tmp_path / "t.onnx"), digits) <= 1  # raises nothing
    spec = write_spec(tmp_path, tiny_spec(teacher={"onnx": "t.onnx"}, target=str(tiny_profile(tmp_path / "d.json"))))
    code, out, err = cli("validate", spec, "--samples", "5")
    assert code == 0, err
    assert "teacher: " in out and "gives 10 scores per image" in out and "on the validation split" in out
    assert "dataset: 320 training and 80 validation" in out
    assert out.rstrip().splitlines()[-1] == f"spec {spec}: valid"


def test_bad_data_profile_and_teacher_through_real_processes_exit_2(tmp_path):
    """hwsearch validate / run as subprocesses: a truncated image, a damaged profile, a teacher
    with the wrong classes (found by run after data and target are ready), mismatched arrays."""
    _images(tmp_path / "img" / "cat", 12)
    _images(tmp_path / "img" / "dog", 11, fmt="jpg")
    jpeg = _truncated_jpeg(tmp_path / "img" / "dog" / "11.jpg")
    (tmp_path / "old.json").write_text(json.dumps({**_profile_json(), "schema_version": 1}))
    linear_onnx(tmp_path / "five.onnx", classes=5)
    tiny_profile(tmp_path / "tiny.json")
    _npz(tmp_path / "d.npz", x=_x(40), y=_classes(41))
    cases = [
        (["validate", write_spec(tmp_path, {"name": "a", "dataset": {"name": "imagefolder", "path": "img"}}, "a.yaml")],
         f"cannot read image {jpeg}"),
        (["validate", write_spec(tmp_path, {**tiny_spec(), "target": "old.json"}, "b.yaml")],
         f"{tmp_path / 'old.json'}: schema_version is 1"),
        (["run", write_spec(tmp_path, tiny_spec(teacher={"onnx": "five.onnx"}, target="tiny.json"), "c.yaml"),
          "--out", tmp_path / "c", "--no-progress"], "expected (10,) logits"),
        (["run", write_spec(tmp_path, {"name": "d", "dataset": {"name": "npz", "path": "d.npz"}}, "d.yaml"),
          "--out", tmp_path / "d", "--no-progress"], "40 images but 41 labels"),
    ]
    procs = [(subprocess.Popen([*hwsearch_cmd(), *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True), says) for args, says in cases]
    for proc, says in procs:
        _, err = proc.communicate(timeout=300)
        lines = [line for line in err.strip().splitlines() if not line.startswith(("computing teacher", "calibrated"))]
        assert proc.returncode == EXIT_BAD_INPUT and "Traceback" not in err, err
        assert lines[-1].startswith("error: ") and says in lines[-1], err
