import json
import subprocess
import sys

import pytest
import yaml

from hwsearch.search.spec import SpecError, load_spec, parse_spec
from tests.conftest import REPO, hwsearch_cmd, tiny_spec


def run_cli(*args, cwd=REPO):
    return subprocess.run([*hwsearch_cmd(), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_defaults_make_a_valid_spec():
    spec = parse_spec({"name": "x"})
    assert spec.dataset.name == "digits" and spec.target == "local-cpu"
    assert spec.objectives == ["accuracy", "latency_ms", "size_kb"]
    assert spec.directions == ["maximize", "minimize", "minimize"]


@pytest.mark.parametrize("change, field, allowed", [
    ({"search": {"sampler": "bayes"}}, "search.sampler", "'tpe', 'nsga2', 'random', 'gp' or 'cost-aware'"),
    ({"budget": {"latency_ms": -1}}, "budget.latency_ms", "greater than 0"),
    ({"space": {"weight_bits": [3]}}, "space.weight_bits.0", "2, 4, 8, 16 or 32"),
    ({"space": {"kernels": []}}, "space.kernels", "at least 1"),
    ({"dataset": {"name": "mnist"}}, "dataset", "allowed: cifar10, digits, imagefolder, npz"),
    ({"dataset": {"name": "npz"}}, "dataset", "needs a 'path'"),
    ({"target": "pi9"}, "target", "registered: jetson-orin-nano, local-cpu"),
    ({"objectives": ["latency_ms"]}, "objectives", "must include 'accuracy'"),
    ({"space": {"prune_ratios": [0.5], "expand_ratios": [1]}}, "space", "need an expand ratio > 1"),
    ({"serach": {}}, "serach", "unknown field"),
])
def test_bad_spec_names_the_field_the_value_and_what_is_allowed(change, field, allowed):
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x", **change})
    line = next(p for p in err.value.problems if p.startswith(field + ":"))
    assert allowed in line


def test_bad_spec_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "search": {"sampler": "bayes", "trials": 0},
                                   "space": {"kernels": [4]}}))
    out = run_cli("validate", str(bad))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert len(lines) == 3
    assert any(line.startswith("error: search.sampler:") and "'bayes'" in line for line in lines)
    assert any(line.startswith("error: search.trials:") and "given 0" in line for line in lines)
    assert any(line.startswith("error: space.kernels.0:") for line in lines)


def test_unreadable_yaml_and_missing_file_exit_2(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    for path in (broken, tmp_path / "nope.yaml"):
        out = run_cli("validate", str(path))
        assert out.returncode == 2 and "Traceback" not in out.stderr and str(path.name) in out.stderr


def test_unreachable_budget_is_reported_before_anything_trains(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(budget={"size_kb": 0.01})))
    out = run_cli("run", str(spec), "--out", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "budget.size_kb: 0.01 cannot be met" in out.stderr and "cheapest" in out.stderr
    assert not (tmp_path / "run").exists()  # a run that failed before its first trial leaves nothing behind


def test_validate_reports_size_feasible_share_and_cheapest_cost(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(budget={"latency_ms": 1.0, "size_kb": 3.0})))
    out = run_cli("validate", str(spec), "--samples", "30")
    assert out.returncode == 0, out.stderr
    assert "576 discrete configurations" in out.stdout
    assert "feasible share:" in out.stdout and "/30 sampled" in out.stdout
    assert "cheapest latency_ms:" in out.stdout and "cheapest size_kb:" in out.stdout


def test_relative_paths_resolve_against_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    spec = tmp_path / "sub" / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "dataset": {"name": "npz", "path": "data.npz"}}))
    assert load_spec(spec).dataset.path == (tmp_path / "sub" / "data.npz").resolve()


def test_spec_schema_is_json_and_help_is_light():
    out = run_cli("spec-schema")
    assert out.returncode == 0 and "budget" in json.loads(out.stdout)["properties"]
    probe = ("import sys, hwsearch.search.cli; hwsearch.search.cli.build_parser().format_help(); "
             "print(sorted(m for m in ('torch', 'ray', 'onnxruntime', 'streamlit', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
