"""hwsearch export: real ONNX files, run by onnxruntime, checked against the search's claims."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from hwsearch.search.engine._runner import run_search
from hwsearch.search.outputs._export import (
    CARD_FILE,
    FP32_FILE,
    INT8_FILE,
    ExportError,
    RunContext,
    export_trial,
    raw_pixels,
)
from hwsearch.search.outputs._results import RunResults
from hwsearch.search.spec import parse_spec
from tests.conftest import REPO, hwsearch_cmd, tiny_spec

# 4-bit weights everywhere (the stem and classifier stay at 8, as the plan rules), activations
# int8 or float: every candidate has low-bit grids, and some run int8 as searched.
LOW_BIT = {"weight_bits": [4], "activation_bits": [8, 32]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    spec = parse_spec(tiny_spec(space={**tiny_spec()["space"], **LOW_BIT}, search={"trials": 4}))
    run_dir = tmp_path_factory.mktemp("export") / "run"
    run_search(spec, run_dir, progress=False, log=lambda m: None)
    return run_dir


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    best = RunResults(run).pareto()[0]
    return export_trial(run, best.number, tmp_path_factory.mktemp("out") / "best")


def test_card_records_the_checks_and_hashes_every_model(exported):
    from hwsearch.targets._profiling import CONTENDED

    card = json.loads((exported.out_dir / CARD_FILE).read_text())
    assert set(card["files"]) == {FP32_FILE, INT8_FILE}
    for name, facts in card["files"].items():
        data = (exported.out_dir / name).read_bytes()
        assert facts == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    acc = card["accuracy"]
    assert acc["torch"] == pytest.approx(acc["search"])  # the kept weights are the searched network
    assert abs(acc[FP32_FILE] - acc["torch_float_activations"]) <= 0.001
    assert card["checks"]["int8_layout_as_priced"], card["warnings"]
    assert card["checks"]["int8_accuracy_within_1_point"] == (acc["int8_drop_points"] <= 1.0)
    assert card["latency"]["target_is_this_host"]
    adapter = card["latency"]["input_adapter_ms"]
    assert adapter > 0  # local-cpu priced the raw-pixel adapter (measured on first use)
    beside = card["latency"]["beside"]  # what other processes took of the host's CPUs while the files were timed
    assert beside["others_cpu"] >= 0 and beside["cpus"] >= 1
    assert ("while the files were timed" in " ".join(card["warnings"])) == (
        beside["others_cpu"] + beside["steal_cpu"] >= CONTENDED * beside["cpus"])
    for name in (FP32_FILE, INT8_FILE):
        lat = card["latency"][name]
        assert lat["predicted_ms"] > 0 and lat["measured_ms"] > 0
        assert lat["error"] == pytest.approx(lat["measured_ms"] / lat["predicted_ms"] - 1)
        file = lat["file"]  # the file as shipped: the network's price plus the adapter's
        assert file["predicted_ms"] == pytest.approx(lat["predicted_ms"] + adapter)
        assert file["error"] == pytest.approx(file["measured_ms"] / file["predicted_ms"] - 1)
        assert isinstance(card["checks"]["file_latency_within_10_percent"][name], bool)
    assert card["bits"][0]["weight_bits"] == 4 and "4-bit grid" in card["bits"][0][INT8_FILE]
    assert card["input"]["dtype"] == "uint8" and card["input"]["pixel_max"] == 16
    assert card["runtime"]["onnxruntime"] and card["candidate"] == exported.card["candidate"]


def test_4bit_weights_stay_on_their_grid(exported, run):
    import torch

    from hwsearch.targets._onnx_graph import WEIGHT_GRIDS

    assert exported.card["spec"]["training"]["quantizer"] == "lsq"  # the default: the 4-bit steps were learned
    kept = torch.load(run / exported.card["weights"]["file"], weights_only=True)
    assert any(k.endswith("w_step") for k in kept)
    fp32, int8 = onnx.load(exported.files[FP32_FILE]), onnx.load(exported.files[INT8_FILE])
    grids = json.loads({p.key: p.value for p in fp32.metadata_props}[WEIGHT_GRIDS])
    four_bit = [name for name, bits in grids.items() if bits == 4]
    assert four_bit, grids
    floats = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    ints = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    for name in four_bit:
        w = ints[f"{name}_quantized"]
        assert w.dtype == np.int8
        per_channel = [len(np.unique(c)) for c in w.reshape(len(w), -1)]
        assert max(per_channel) <= 16, per_channel
        assert np.abs(w).max() <= 7  # the symmetric 4-bit grid, held exactly in int8
        # and the float model holds the same grid
        assert max(len(np.unique(c)) for c in floats[name].reshape(len(w), -1)) <= 15
    _assert_exact_grids(fp32, int8)


def _assert_exact_grids(fp32, int8) -> None:
    """Every float weight on a grid is held in int8 as the grid's integers, with the grid's step
    as its scale: dequantized, it is the float weight exactly."""
    from hwsearch.targets._onnx_graph import WEIGHT_GRIDS, WEIGHT_STEPS

    props = {p.key: p.value for p in fp32.metadata_props}
    grids, steps = json.loads(props[WEIGHT_GRIDS]), json.loads(props[WEIGHT_STEPS])
    floats = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    ints = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    assert grids and set(grids) == set(steps)
    for name, bits in grids.items():
        q, scale = ints[f"{name}_quantized"], ints[f"{name}_scale"]
        assert np.array_equal(scale, np.asarray(steps[name], np.float32)), name
        assert np.abs(q).max() <= 2 ** (bits - 1) - 1, name
        assert np.array_equal(q.astype(np.float32) * scale.reshape(-1, 1, 1, 1), floats[name]), name


def test_learned_steps_keep_their_exact_grid_in_int8(tmp_path):
    """With learned steps a channel's largest weight need not reach the clamp, so max|w| / qmax
    is not its step: the export takes the step the network learned."""
    import torch

    from hwsearch.search.outputs._export import layer_weights, precision_variant, quantize_int8
    from hwsearch.spaces import Candidate, build_plan, network
    from hwsearch.targets._onnx_graph import network_model

    cand = Candidate.from_string("c8:ir_r1_k3_e3_c16_se_hs_w4a4:ir_r1_k3_e1_c16_re_w2a4")
    plan = build_plan(cand, (1, 8, 8), 10)
    net = network.fold_batchnorm(network.prune(network.build(plan, torch.Generator().manual_seed(0)).eval()))
    network.enable_quantization(net, "lsq").train()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    net(x)  # initialises the learned activation ranges
    learned = [m for m in net.modules() if isinstance(m, network.WeightQuant) and m.w_step is not None]
    with torch.no_grad():  # coarser steps on some channels: their largest weight stays below the clamp
        for m in learned:
            m.w_step.mul_(torch.linspace(0.7, 2.5, len(m.w_step)))
    short = sum(int((m.quantized_weight().detach().flatten(1).abs().amax(1) < m.grid_step() * (2 ** (m.w_bits - 1) - 1)
                     * 0.99).sum()) for m in learned)
    assert short > 0  # channels where the max-abs scale would be wrong
    fp32 = network_model(build_plan(precision_variant(cand, "fp32"), (1, 8, 8), 10), layer_weights(net.eval(), plan),
                         batch="N")
    int8 = quantize_int8(fp32, x.numpy(), tmp_path)
    _assert_exact_grids(fp32, int8)
    # and the float model computes what the quantization-aware network computes (float activations)
    import onnxruntime as ort

    from hwsearch.search.outputs._export import _float_activations

    sess = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, _float_activations(net)(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_models_run_with_numpy_and_onnxruntime_alone(exported, run, tmp_path):
    ctx = RunContext.load(run)
    pixels = raw_pixels(ctx.data, ctx.data.x_val)
    np.save(tmp_path / "pixels.npy", pixels)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import onnxruntime as ort
        x = np.load({str(tmp_path / "pixels.npy")!r})
        for name in ({FP32_FILE!r}, {INT8_FILE!r}):
            s = ort.InferenceSession({str(exported.out_dir)!r} + '/' + name, providers=['CPUExecutionProvider'])
            np.save({str(tmp_path)!r} + '/' + name + '.npy', s.run(None, {{'pixels': x}})[0].argmax(1))
            # the dynamic batch: one image at a time gives the same answer
            expected = np.load({str(tmp_path)!r} + '/' + name + '.npy')[:1]
            assert (s.run(None, {{'pixels': x[:1]}})[0].argmax(1) == expected).all()
        heavy = sorted(m for m in ('torch', 'hwsearch', 'search', 'spaces', 'targets', 'PIL') if m in sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    for name in (FP32_FILE, INT8_FILE):
        pred = np.load(tmp_path / f"{name}.npy")
        assert (pred == ctx.data.y_val).mean() == pytest.approx(exported.card["accuracy"][name])


def test_predict_example_classifies_image_files_without_torch(exported, run, tmp_path):
    from PIL import Image

    ctx = RunContext.load(run)
    pixels = raw_pixels(ctx.data, ctx.data.x_val[:3])
    files = []
    for i, p in enumerate(pixels):  # digits' 0..16 pixels as an ordinary 8-bit PNG
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(np.round(p[..., 0].astype(float) * 255 / 16).astype(np.uint8)).save(files[-1])
    script = ("import runpy, sys; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')\n"
              "assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", script, str(REPO / "examples" / "predict.py"), str(exported.out_dir),
                          *map(str, files), "--top", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    # The example's answers are the model's: same as onnxruntime on the same pixels.
    import onnxruntime as ort

    s = ort.InferenceSession(str(exported.files[FP32_FILE]), providers=["CPUExecutionProvider"])
    expected = s.run(None, {"pixels": pixels})[0].argmax(1)
    for line, k in zip(lines, expected):
        assert line.split(": ")[1].startswith(f"{ctx.data.classes[k]} ")


def test_export_retrains_reproducibly_when_weights_were_not_kept(run, exported, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
    number = exported.card["trial"]
    (copy / "weights" / f"trial_{number}.pt").unlink()
    report = export_trial(copy, number, tmp_path / "out")
    assert report.card["weights"]["source"] == "retrained"
    assert report.card["accuracy"]["torch"] == pytest.approx(report.card["accuracy"]["search"])
    assert not any("retrained accuracy" in w for w in report.warnings)


def test_untrained_trials_are_refused_with_the_reason(run, tmp_path):
    rows = RunResults(run).rows()
    with pytest.raises(ExportError, match="no trial 99"):
        export_trial(run, 99, tmp_path)
    untrained = [r for r in rows if r.state != "complete"]
    for r in untrained[:1]:
        with pytest.raises(ExportError, match=f"trial {r.number} is {r.state}"):
            export_trial(run, r.number, tmp_path)


def test_cli_exports_the_whole_front(run, tmp_path):
    out = subprocess.run([*hwsearch_cmd(), "export", str(run), "--pareto", "--out", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    front = RunResults(run).pareto()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"trial_{r.number}" for r in front)
    for r in front:
        assert {p.name for p in (tmp_path / f"trial_{r.number}").iterdir()} == {FP32_FILE, INT8_FILE, CARD_FILE}
    assert f"exported {len(front)} model(s)" in out.stdout
    bad = subprocess.run([*hwsearch_cmd(), "export", str(tmp_path / "nowhere"), "--trial", "0"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_int8_file_loads_without_warnings(exported):
    """Every initializer of the shipped files is read by a node (onnxruntime warns 'Removing
    initializer ... not used by any node' for each one that is not, every time a file loads), and a
    session logging warnings prints none (its own clean-up after fusing is logged at info level)."""
    import subprocess

    for name in (FP32_FILE, INT8_FILE):
        model = onnx.load(exported.out_dir / name)
        used = {i for n in model.graph.node for i in n.input}
        assert [t.name for t in model.graph.initializer if t.name not in used] == [], name
    script = ("import onnxruntime as ort, sys; o = ort.SessionOptions(); o.log_severity_level = 2; "
              "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])")
    out = subprocess.run([sys.executable, "-c", script, str(exported.out_dir / INT8_FILE)], capture_output=True,
                         text=True, check=True)
    assert "not used by any node" not in out.stderr + out.stdout and "[W:" not in out.stderr
