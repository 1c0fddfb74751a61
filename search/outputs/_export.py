"""Export trained candidates as deployable ONNX, verified against what the search claimed.

For one trial, :func:`export_trial` writes to its folder:

- ``model.onnx``: the trained network in float (weights still on their searched bit grid);
- ``model.int8.onnx``: onnxruntime static quantization of it, QDQ, per-channel int8 weights,
  per-tensor uint8 activations calibrated on training images. Weights searched below 8 bits keep
  their exact grid (their scales are passed to the quantizer), held in int8: a CPU runs them with
  int8 kernels, as the target profile's ``bits.executed_as`` says;
- ``card.json``: the model card (see the README), with the sha256 of both models.

Both models take raw pixels: ``pixels`` is (N, H, W, C), uint8 when the dataset's pixels are
integers in 0..255 (its native range, e.g. 0..16 for digits), scaled and normalised inside the
graph. The batch size is dynamic.

Every export is verified: both models are run by onnxruntime over the validation split and
compared with the torch network, and their latency is measured with the target's runtime
settings and compared with the profile's prediction for that precision. Where the figures
disagree beyond tolerance, the card and the returned warnings say so; the files are written
anyway.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwsearch.search.errors import SearchError
from hwsearch.search.study._records import TrialRecord

if TYPE_CHECKING:
    from hwsearch.search.outputs._results import RunResults
    from hwsearch.search.spec import Spec
    from hwsearch.search.training._datasets import Data
    from hwsearch.targets import Target

FP32_FILE, INT8_FILE, CARD_FILE = "model.onnx", "model.int8.onnx", "card.json"
WEIGHTS_DIR = "weights"  # in a run directory: the weights the search kept, trial_N.pt
CARD_VERSION = 1
FP32_TOLERANCE = 0.001  # accuracy, onnxruntime fp32 vs torch: 0.1 point
INT8_TOLERANCE = 0.01  # accuracy, int8 vs the searched network: 1 point
LATENCY_TOLERANCE = 0.10  # measured vs predicted, where the target is this host
CALIBRATION_IMAGES = 512


class ExportError(SearchError, ValueError):
    """A trial that cannot be exported; the message says why and what to do."""


@dataclass
class ExportReport:
    out_dir: Path
    files: dict[str, Path]  # file name -> path, card included
    card: dict
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What every export of one run shares, loaded once: results, spec, data, target."""

    run_dir: Path
    results: RunResults
    spec: Spec
    data: Data
    target: Target
    _final_data: dict = field(default_factory=dict, repr=False)  # loaded once per final fidelity

    def at_final_fidelity(self, fidelity) -> RunContext:
        """This context with the final stage's spec and data (its own split and normalisation),
        which final weights are scored and exported on."""
        from hwsearch.search.study._final import final_spec
        from hwsearch.search.training._datasets import load_dataset

        spec = final_spec(self.spec, fidelity)
        key = json.dumps(dataclasses.asdict(fidelity), sort_keys=True)
        if key not in self._final_data:
            self._final_data[key] = load_dataset(spec.dataset, spec.data_seed)
        return dataclasses.replace(self, spec=spec, data=self._final_data[key], _final_data=self._final_data)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunContext:
        from hwsearch.search.outputs._results import RunResults
        from hwsearch.search.spec import load_spec
        from hwsearch.search.training._datasets import load_dataset
        from hwsearch.targets import get_target

        run_dir = Path(run_dir)
        if not (run_dir / "spec.yaml").exists():
            raise ExportError(f"{run_dir} is not a run directory (no spec.yaml): give the folder "
                              "'hwsearch run' wrote, e.g. runs/<name>")
        results = RunResults(run_dir)
        spec = load_spec(run_dir / "spec.yaml")
        data = load_dataset(spec.dataset, spec.data_seed)
        target = get_target(results.study.user_attrs.get("target", spec.target))
        # as the search did: a profile measured on this host is fitted to this space's networks
        target.ensure_calibrated(spec.space, data.input_shape, data.num_classes)
        return cls(run_dir, results, spec, data, target)


# ------------------------------------------------------------------------------------------
# torch network -> emitter weights
# ------------------------------------------------------------------------------------------

def layer_weights(net, plan) -> list:
    """The trained (pruned, folded) torch network's parameters, per layer of ``plan``, in the
    form :func:`hwsearch.targets._onnx_graph.network_model` takes: weights put on their bit grid exactly as
    the quantization-aware network computes them, with each channel's grid step (learned or max-abs)."""
    from hwsearch.targets._onnx_graph import ConvWeights, LayerWeights

    def conv(m, bits: int) -> ConvWeights:
        if bits != m.w_bits:
            raise ExportError(f"a layer of the network holds {m.w_bits}-bit weights where its plan has {bits}")
        w = m.quantized_weight().detach().cpu()
        step = m.grid_step().cpu().numpy().astype(np.float32) if bits < 32 else None
        if w.dim() == 2:  # the classifier: a 1x1 convolution on the pooled map
            w = w[:, :, None, None]
        return ConvWeights(w.numpy().astype(np.float32), m.bias.detach().cpu().numpy().astype(np.float32),
                           bits=bits, step=step)

    out = [LayerWeights({"conv": conv(net.stem.conv, plan.stem.w_bits)})]
    for block, bp in zip(net.blocks, plan.blocks):
        convs = {}
        if block.expand is not None:
            convs["expand"] = conv(block.expand.conv, bp.w_bits)
        convs["fused" if bp.fused else "dw"] = conv(block.dw.conv, bp.w_bits)
        if block.se is not None:
            convs["se_reduce"] = conv(block.se.reduce, bp.w_bits)
            convs["se_expand"] = conv(block.se.expand, bp.w_bits)
        convs["project"] = conv(block.project.conv, bp.w_bits)
        out.append(LayerWeights(convs))
    out.append(LayerWeights({"fc": conv(net.classifier, plan.head.w_bits)}))
    return out


def precision_variant(candidate, precision: str):
    """``candidate`` as a file of that precision runs it: ``fp32`` (every layer float) or
    ``int8`` (every layer int8, weights stored in 8 bits, on a lower grid or not). Shapes are
    unchanged."""
    def bits(s):
        return dataclasses.replace(s, w_bits=32 if precision == "fp32" else 8, a_bits=32 if precision == "fp32" else 8)

    return candidate.replace(stages=tuple(bits(s) for s in candidate.stages))


# ------------------------------------------------------------------------------------------
# Quantization with onnxruntime
# ------------------------------------------------------------------------------------------

class _Images:
    """onnxruntime's calibration reader over normalised training images."""

    def __init__(self, x: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([{"image": x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


class _DropAdvice(logging.Filter):
    """onnxruntime's quantizer advises shape pre-processing on every call; our graphs are fully
    shaped already, so that advice is dropped (nothing else is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def grid_overrides(model) -> dict:
    """TensorQuantOverrides that keep every float weight on a low-bit grid (recorded by the
    emitter) on exactly that grid in int8: per-channel scale the grid's step (learned, or max-abs:
    ``max|w| / (2^(b-1) - 1)``, as the emitter recorded it), zero 0, so that the int8 values are
    the grid's integers and dequantize to the float weights exactly."""
    from onnxruntime.quantization import QuantType

    from hwsearch.targets._onnx_graph import WEIGHT_GRIDS, WEIGHT_STEPS

    props = {p.key: p.value for p in model.metadata_props}
    grids, steps = json.loads(props.get(WEIGHT_GRIDS, "{}")), json.loads(props.get(WEIGHT_STEPS, "{}"))
    missing = sorted(set(grids) - set(steps))
    if missing:
        raise ExportError(f"the float model records no grid step for {', '.join(missing)}; export it with this "
                          "version of hwsearch")
    return {name: [{"axis": 0, "quant_type": QuantType.QInt8, "scale": np.float32(s), "zero_point": np.int8(0)}
                   for s in steps[name]] for name in grids}


def quantize_int8(model, calibration: np.ndarray, work_dir: Path):
    """onnxruntime static quantization of a :func:`~hwsearch.targets._onnx_graph.network_model` graph:
    QDQ, per-channel symmetric int8 weights, per-tensor uint8 activations (MinMax on
    ``calibration``), ReLU folded into the quantization. The classifier's output stays float, as
    the emitter's int8 graphs (which the profiles timed) leave it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    path = work_dir / "int8.tmp.onnx"
    source = onnx.ModelProto()
    source.CopyFrom(model)  # the quantizer moves a model's weights to external files: not ours
    advice = _DropAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(source, path, _Images(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Relu", "HardSwish", "HardSigmoid", "Add", "Mul",
                                              "GlobalAveragePool"],
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"TensorQuantOverrides": grid_overrides(model),
                                       "QDQDisableWeightAdjustForInt32Bias": True})
        quantized = onnx.load(path)
    finally:
        logging.getLogger().removeFilter(advice)
        path.unlink(missing_ok=True)
    return _float_logits(quantized)


def _float_logits(model):
    """Remove the quantize/dequantize pair the quantizer puts on the classifier's output."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    flatten = next(n for n in g.node if n.op_type == "Flatten")
    dq = producers.get(flatten.input[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return model
    q = producers[dq.input[0]]
    readers = [n for n in g.node if q.output[0] in n.input or dq.output[0] in n.input]
    if q.op_type != "QuantizeLinear" or len(readers) != 2:
        return model
    flatten.input[0] = q.input[0]
    g.node.remove(q)
    g.node.remove(dq)
    return _without_unused_initializers(model)


def _without_unused_initializers(model):
    """Drop initializers no node reads (the removed pair's scale and zero point): onnxruntime
    would warn about each one every time the file loads."""
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    if len(keep) < len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)
    return model


def optimized_ops(model_bytes: bytes) -> Counter:
    """The node types onnxruntime runs after its graph optimisations (what fused into what)."""
    from hwsearch.targets._layouts import optimized

    return Counter(n.op_type for n in optimized(model_bytes).graph.node)


# ------------------------------------------------------------------------------------------
# Input: raw pixels
# ------------------------------------------------------------------------------------------

def raw_pixels(data, x: np.ndarray) -> np.ndarray:
    """Normalised (N, C, H, W) images back to the raw pixels the exported models take
    (N, H, W, C): uint8 when the dataset's pixels are integers in 0..255, float32 otherwise."""
    mean = np.asarray(data.mean, np.float64)[None, :, None, None]
    std = np.asarray(data.std, np.float64)[None, :, None, None]
    raw = (x.astype(np.float64) * std + mean) / data.scale
    rounded = np.round(raw)
    if np.abs(raw - rounded).max() < 1e-3 and rounded.min() >= 0 and rounded.max() <= 255:
        raw = rounded.astype(np.uint8)
    else:
        raw = raw.astype(np.float32)
    return np.ascontiguousarray(raw.transpose(0, 2, 3, 1))


def opset_of(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def with_input_adapter(network, data, pixel_dtype: np.dtype):
    """``network`` (normalised NCHW float in) behind the raw-pixel adapter."""
    import onnx
    from onnx import TensorProto

    from hwsearch.targets._onnx_graph import input_adapter_model

    dtype = TensorProto.UINT8 if pixel_dtype == np.uint8 else TensorProto.FLOAT
    adapter = input_adapter_model(data.input_shape, data.scale, data.mean, data.std, dtype,
                                  opset=opset_of(network), ir_version=network.ir_version)
    merged = onnx.compose.merge_models(adapter, network, io_map=[("image", "image")])
    del merged.metadata_props[:]
    for p in network.metadata_props:
        merged.metadata_props.append(p)
    return merged


# ------------------------------------------------------------------------------------------
# Verification
# ------------------------------------------------------------------------------------------

def onnx_predictions(model_bytes: bytes, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The class onnxruntime's run of a file predicts for each input (every core, in batches)."""
    from hwsearch.targets._meter import session

    sess = session(model_bytes, threads=os.cpu_count() or 1)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)])


def onnx_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    return float((onnx_predictions(model_bytes, x, batch) == y).mean())


def measure_latencies(
    models: dict[str, tuple[bytes, np.ndarray]], target, threads: int, provider: str
) -> dict[str, float]:
    """Latency in ms of each model on its one-image input, measured together as the target's
    profile was (against the reference network, in interleaved rounds; on the profile's scale
    when the target is this host's, see :mod:`hwsearch.targets._meter`)."""
    from hwsearch.targets._meter import meter
    from hwsearch.targets._profiling import profile_meter

    profile = target.profile
    m = (
        profile_meter(profile, threads, provider)
        if profile is not None and profile.reference
        else meter(threads, provider)
    )
    latencies = m.measure([b for b, _ in models.values()], inputs=[x for _, x in models.values()])
    return {k: lat.mean_ms for k, lat in zip(models, latencies)}


def _tensor_bytes(model) -> int:
    """Bytes of a model's stored tensors (weights, biases, scales, zero points): its size less
    the graph's own description, which dominates the file for networks this small."""
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _float_activations(net):
    """The same network with activation quantization off (what the float model computes)."""
    import copy

    from hwsearch.spaces.network import ActQuant

    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, ActQuant):
            m.bits = 32
    return net


# ------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------

def kept_weights_file(run_dir: Path, trial) -> Path | None:
    """The file holding the weights the search kept for ``trial``, or None where it kept none.

    Its path is a trial attribute, so it comes from the journal, which whoever handed the run over
    could have written: it is used only if it names a file in ``RUN_DIR/weights`` (symbolic links
    resolved); anything else raises :class:`ExportError` and nothing is read."""
    rel = TrialRecord.of(trial).weights
    if rel is None:
        return None
    folder = (run_dir / WEIGHTS_DIR).resolve()
    try:
        path = (run_dir / rel).resolve() if isinstance(rel, str) else None
    except (OSError, ValueError):  # a NUL byte, a symbolic link loop
        path = None
    if path is None or path.parent != folder:
        where = f"leads to {path}" if path else "is not a file name"
        raise ExportError(f"trial {trial.number}: its weights attribute {rel!r} {where}, not to a file in "
                          f"{run_dir / WEIGHTS_DIR}, where 'hwsearch run' keeps weights; refusing to read it. The "
                          "run was altered (its journal edited, or a link planted): export from the run the search "
                          "wrote")
    return path if path.is_file() else None


def load_weights(path: Path) -> dict:
    """A state dict from a kept weights file, read with torch's weights-only unpickler: a file that
    holds anything but tensors (a pickle that would run code when loaded) raises :class:`ExportError`
    before any of it runs."""
    import re

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, KeyError, RuntimeError... for foreign files
        refused = re.search(r"GLOBAL (\S+)", str(e))
        why = f"it would call {refused.group(1)} when loaded" if refused else f"{type(e).__name__}: {e}"
        raise ExportError(f"{path}: not a weights file hwsearch wrote ({why}); refusing it. Delete it to "
                          "export by retraining the trial with its seed") from None
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise ExportError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; delete it to "
                          "export by retraining the trial with its seed")
    return state


def trained_weights(ctx: RunContext, trial, log: Callable[[str], None]) -> tuple[dict | None, dict]:
    """The trial's final weights and where they came from: the file the search kept (see
    :func:`kept_weights_file`), or a reproducible retraining with the trial's seed (same spec, data,
    teacher and device)."""
    from hwsearch.search.study._study import trial_seed
    from hwsearch.search.training._evaluate import evaluate, train_settings
    from hwsearch.spaces import Candidate

    kept = kept_weights_file(ctx.run_dir, trial)
    if kept is not None:
        return load_weights(kept), {"source": "kept", "file": f"{WEIGHTS_DIR}/{kept.name}"}
    s = ctx.spec.search
    cand = Candidate.from_string(str(TrialRecord.of(trial).candidate))
    teacher = None
    if cand.distils:
        from hwsearch.search.training._teacher import teacher_logits

        teacher, _ = teacher_logits(ctx.spec, ctx.data, ctx.run_dir, log=log)
    seed = trial_seed(s.seed, trial.number)
    log(f"trial {trial.number}: no kept weights; retraining with seed {seed}")
    settings = train_settings(ctx.spec, ctx.data.input_shape[1])
    ev = evaluate(cand, ctx.data, teacher, settings, seed, keep_weights=True)
    return ev.state_dict, {"source": "retrained", "seed": seed, "retrained_accuracy": ev.accuracy}


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------

def _exportable(ctx: RunContext, number: int):
    trials = ctx.results.study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ExportError(f"run {ctx.run_dir} has no trial {number} (it has trials 0..{len(trials) - 1})")
    trial = trials[number]
    row = ctx.results.row(trial)
    if row.state != "complete" or row.candidate is None:
        why = f": {row.reason}" if row.reason else ""
        raise ExportError(f"trial {number} is {row.state}{why}; only completed (trained, feasible) trials can be "
                          "exported. 'hwsearch pareto RUN' lists the front")
    return trial, row


def _bits_card(candidate, profile_bits) -> list[dict]:
    executed = profile_bits.executed_as if profile_bits else {}
    native = profile_bits.native if profile_bits else []
    out = []
    for i, s in enumerate(candidate.stages):
        w8 = min(s.w_bits, 8)
        act = ("uint8" if s.a_bits == 8 else
               f"uint8, calibrated at 8 bits (finer than the searched {s.a_bits}-bit grid)" if s.a_bits < 8 else
               "uint8, post-training quantized (searched in float)")
        out.append({
            "stage": i, "weight_bits": s.w_bits, "activation_bits": s.a_bits,
            "target_runs_it_as": executed.get(str(s.w_bits), "unknown to this profile"),
            "native_on_target": s.w_bits in native,
            FP32_FILE: f"float32 kernels; weights in float{'' if s.w_bits >= 32 else f' on their {s.w_bits}-bit grid'}",
            INT8_FILE: f"int8 kernels; weights int8{'' if w8 == 8 else f' on their {w8}-bit grid'}; activations {act}",
        })
    return out


def _target_card(target, plan) -> dict:
    """The target, and how its profile priced this plan's layers (measured, modelled: with the band)."""
    from collections import Counter

    profile = target.profile
    card = {"name": target.name, "description": target.description, "measured": target.measured}
    if profile is not None:
        card["device"] = profile.device.model_dump(mode="json")
        card["bits"] = profile.bits.model_dump(mode="json")
        card["layers_priced_by"] = dict(Counter(profile.priced_by(layer) for layer in plan.layers))
        if profile.extension is not None and "extension" in card["layers_priced_by"]:
            card["extension"] = profile.extension.describe()
    return card


def _runtime_settings(target) -> tuple[int, str, str, bool]:
    """Threads, provider, host and whether the target is this host (so latencies compare)."""
    import onnxruntime as ort

    from hwsearch.targets import host_name

    runtime = target.runtime()
    provider = runtime.provider if runtime.provider in ort.get_available_providers() else "CPUExecutionProvider"
    return runtime.threads, provider, host_name(), runtime.here


def export_trial(run_dir: str | Path, number: int, out_dir: str | Path | None = None, *,
                 context: RunContext | None = None, log: Callable[[str], None] | None = None) -> ExportReport:
    """Export trial ``number`` of a run to ``out_dir`` (default ``RUN_DIR/export/trial_N``):
    both models and the card, verified. The weights are the final training's where ``hwsearch
    train`` ran for the trial (checked on the final stage's validation split), else the search's.
    Raises :class:`ExportError` for a trial that has no trained network (infeasible, pruned,
    failed, running)."""
    log = log or (lambda msg: None)
    ctx = context or RunContext.load(run_dir)
    trial, row = _exportable(ctx, number)
    final = ctx.results.finals.get(number)
    state: dict | None
    if final is not None:
        ctx = ctx.at_final_fidelity(final.fidelity)
        state = load_weights(ctx.run_dir / final.weights)
        weights_info = {"source": "final", "file": final.weights, "fidelity": "final",
                        "final_training": dataclasses.asdict(final.fidelity), "final_accuracy": final.accuracy,
                        "train_images": final.train_images, "teacher": final.teacher}
    else:
        state, weights_info = trained_weights(ctx, trial, log)  # refused weights: nothing is written
        weights_info["fidelity"] = "search"
    # every file goes in here, under a fixed name: nothing from the trial's attributes names one
    out = Path(out_dir) if out_dir else ctx.run_dir / "export" / f"trial_{number}"
    out.mkdir(parents=True, exist_ok=True)
    export = _Export(ctx, number, row, out)
    export.models(state, weights_info)
    export.verify_accuracy()
    export.check_layout()
    export.time_and_price()
    return export.write_card(weights_info)


class _Export:
    """One trial's export, in sections that share what they made: the models, their accuracy,
    their layout against what the profile timed, their latency and size, and the card."""

    def __init__(self, ctx: RunContext, number: int, row, out: Path) -> None:
        from hwsearch.spaces import Candidate, build_plan

        self.ctx, self.number, self.row, self.out = ctx, number, row, out
        self.data, self.target = ctx.data, ctx.target
        self.warnings: list[str] = []
        self.cand = Candidate.from_string(row.candidate)
        self.plan = build_plan(self.cand, self.data.input_shape, self.data.num_classes)

    def models(self, state, weights_info: dict) -> None:
        """The trained network scored in torch; the two ONNX networks (normalised float in), then
        each behind the raw-pixel adapter, written and checked."""
        import onnx
        import torch

        from hwsearch.search.training._evaluate import accuracy, trained_network
        from hwsearch.spaces import build_plan
        from hwsearch.targets._onnx_graph import network_model

        data, cand, row = self.data, self.cand, self.row
        net = trained_network(cand, data.input_shape, data.num_classes, state)
        xv, yv = torch.as_tensor(data.x_val), torch.as_tensor(data.y_val)
        self.acc_torch = accuracy(net, xv, yv)
        low_acts = any(s.a_bits < 32 for s in cand.stages)
        self.acc_float = accuracy(_float_activations(net), xv, yv) if low_acts else self.acc_torch
        if weights_info["source"] == "retrained" and abs(self.acc_torch - row.accuracy) > 1e-9:
            self.warnings.append(f"retrained accuracy {self.acc_torch:.2%} differs from the search's "
                                 f"{row.accuracy:.2%} (another device or library version than the search's?)")
        if weights_info["source"] == "final" and abs(self.acc_torch - weights_info["final_accuracy"]) > 1e-9:
            self.warnings.append(f"the final weights score {self.acc_torch:.2%} here, not the "
                                 f"{weights_info['final_accuracy']:.2%} their training recorded (the data changed?)")
        self.weights = layer_weights(net, self.plan)
        self.plans = {FP32_FILE: build_plan(precision_variant(cand, "fp32"), data.input_shape, data.num_classes),
                      INT8_FILE: build_plan(precision_variant(cand, "int8"), data.input_shape, data.num_classes)}
        self.networks = {FP32_FILE: network_model(self.plans[FP32_FILE], self.weights, batch="N")}
        self.networks[INT8_FILE] = quantize_int8(self.networks[FP32_FILE], data.x_train[:CALIBRATION_IMAGES],
                                                 self.out)
        self.pixels_val = raw_pixels(data, data.x_val)
        self.files: dict[str, Path] = {}
        for name, network in self.networks.items():
            model = with_input_adapter(network, data, self.pixels_val.dtype)
            onnx.checker.check_model(model, full_check=True)
            self.files[name] = self.out / name
            onnx.save(model, self.files[name])

    def verify_accuracy(self) -> None:
        """Accuracy over the validation split, through the files as written."""
        self.acc = acc = {name: onnx_accuracy(path.read_bytes(), self.pixels_val, self.data.y_val)
                          for name, path in self.files.items()}
        if abs(acc[FP32_FILE] - self.acc_float) > FP32_TOLERANCE:
            self.warnings.append(f"{FP32_FILE}: onnxruntime accuracy {acc[FP32_FILE]:.2%} vs torch "
                                 f"{self.acc_float:.2%}: more than 0.1 point apart; the export does not compute "
                                 "what torch computes")
        self.drop = drop = self.acc_torch - acc[INT8_FILE]
        if drop > INT8_TOLERANCE:
            self.warnings.append(f"{INT8_FILE}: int8 accuracy {acc[INT8_FILE]:.2%} is {drop * 100:.1f} points below "
                                 f"the searched network's {self.acc_torch:.2%} (more than 1 point); prefer "
                                 f"{FP32_FILE}, or search with activation_bits 8 so training sees int8 activations")

    def check_layout(self) -> None:
        """The quantized graph must fuse as the emitter's int8 graphs, which the profile timed."""
        from hwsearch.targets._onnx_graph import network_model

        priced_ops = optimized_ops(network_model(self.plans[INT8_FILE], self.weights).SerializeToString())
        int8_ops = optimized_ops(self.networks[INT8_FILE].SerializeToString())
        self.layout_ok = priced_ops == int8_ops
        if not self.layout_ok:
            diff = {k: (priced_ops.get(k, 0), int8_ops.get(k, 0)) for k in set(priced_ops) | set(int8_ops)
                    if priced_ops.get(k, 0) != int8_ops.get(k, 0)}
            self.warnings.append(f"{INT8_FILE}: onnxruntime fuses it differently from the graphs the profile "
                                 f"timed (op: priced, exported) {diff}; its latency may differ from the prediction")

    def time_and_price(self) -> None:
        """Each network alone (what the profile prices) and each file (adapter included), timed
        here and priced on the target; sizes predicted and on disk."""
        from hwsearch.targets import UnpriceableError
        from hwsearch.targets._meter import cpu_mark, neighbours_since
        from hwsearch.targets._profiling import beside_warning

        data, target, files, networks = self.data, self.target, self.files, self.networks
        threads, provider, host, same_host = _runtime_settings(target)
        self.same_host = same_host
        x1, p1 = data.x_val[:1], self.pixels_val[:1]
        mark = cpu_mark()
        timed = measure_latencies(
            {**{f"net:{k}": (m.SerializeToString(), x1) for k, m in networks.items()},
             **{f"file:{k}": (p.read_bytes(), p1) for k, p in files.items()}}, target, threads, provider)
        beside = neighbours_since(mark)  # what other processes took of the host's CPUs meanwhile
        self.searched = searched = target.price(self.plan)
        latency: dict = {"batch": 1, "threads": threads, "provider": provider, "measured_on": host,
                         "target_is_this_host": same_host, "searched_ms": searched.latency_ms, "beside": beside}
        if same_host and (busy := beside_warning(beside)):
            self.warnings.append(f"while the files were timed {busy}; export again on a quiet host to check them")
        try:
            adapter_ms: float | None = target.adapter_latency(data.input_shape, str(self.pixels_val.dtype)).mean_ms
            latency["input_adapter_ms"] = adapter_ms
        except UnpriceableError as e:
            adapter_ms, latency["input_adapter_ms"] = None, f"not priced: {e}"
        size: dict = {"searched_kb": searched.size_kb}
        for name in files:
            cost = target.price(self.plans[name])
            measured, measured_file = timed[f"net:{name}"], timed[f"file:{name}"]
            error = measured / cost.latency_ms - 1.0
            file_ms = cost.latency_ms + adapter_ms if adapter_ms is not None else None
            latency[name] = {"predicted_ms": cost.latency_ms, "measured_ms": measured, "error": error,
                             "file": {"predicted_ms": file_ms, "measured_ms": measured_file,
                                      "error": measured_file / file_ms - 1.0 if file_ms else None},
                             "with_input_adapter_ms": measured_file}
            checks = [("network", cost.latency_ms, measured, error)]
            if file_ms:
                checks.append(("file as shipped, input adapter included", file_ms, measured_file,
                               latency[name]["file"]["error"]))
            for what, pred, meas, err in checks:
                if same_host and abs(err) > LATENCY_TOLERANCE:
                    self.warnings.append(
                        f"{name} ({what}): measured {meas * 1000:.1f} us vs predicted {pred * 1000:.1f} us "
                        f"({err:+.0%}, beyond ±{LATENCY_TOLERANCE:.0%}); re-run on a quiet machine, or "
                        "'hwsearch latency-check' to test the profile")
            size[name] = {"predicted_kb": cost.size_kb, "tensors_kb": _tensor_bytes(networks[name]) / 1024,
                          "on_disk_kb": files[name].stat().st_size / 1024}
        latency[INT8_FILE]["layout_as_priced"] = self.layout_ok
        if not same_host:
            latency["note"] = (f"measured on {host}, not on {target.name}: the measured figures say how this host "
                               "runs the files, not how the target does")
        self.latency, self.size = latency, size

    def write_card(self, weights_info: dict) -> ExportReport:
        """The model card: what the files are, how they were verified, and every warning."""
        import onnx
        import onnxruntime as ort
        import torch

        ctx, cand, data, target, files = self.ctx, self.cand, self.data, self.target, self.files
        acc, latency, same_host = self.acc, self.latency, self.same_host
        not_here = "not checked: the target is not this host"
        card = {
            "card_version": CARD_VERSION,
            "run": str(ctx.run_dir), "trial": self.number,
            "candidate": cand.to_string(), "description": cand.describe().splitlines(),
            "spec": json.loads(json.dumps(ctx.spec.model_dump(mode="json", exclude_none=True))),
            "target": _target_card(target, self.plan),
            "bits": _bits_card(cand, target.profile.bits if target.profile else None),
            "input": {"name": "pixels", "layout": "NHWC", "dtype": str(self.pixels_val.dtype),
                      "shape": ["N", *self.pixels_val.shape[1:]], "pixel_max": round(1 / data.scale),
                      "preprocessing": f"inside the graph: pixels * {data.scale:.6g}, minus the per-channel mean "
                                       f"{[round(m, 4) for m in data.mean]}, divided by the std "
                                       f"{[round(s, 4) for s in data.std]}",
                      "output": "logits (N, classes), float32"},
            "classes": list(data.classes),
            "teacher": (weights_info.get("teacher") if weights_info["source"] == "final"
                        else ctx.results.study.user_attrs.get("teacher")) if cand.distils else None,
            "distillation": {"temperature": cand.temperature, "alpha": cand.alpha} if cand.distils else None,
            "weights": weights_info,
            "accuracy": {"validation_images": len(data.y_val), "fidelity": weights_info["fidelity"],
                         "search": self.row.accuracy, "final": weights_info.get("final_accuracy"),
                         "torch": self.acc_torch,
                         "torch_float_activations": self.acc_float, FP32_FILE: acc[FP32_FILE],
                         INT8_FILE: acc[INT8_FILE], "int8_drop_points": self.drop * 100},
            "latency": latency,
            "size": self.size,
            "peak_memory_kb": {"predicted": self.searched.peak_memory_kb},
            "runtime": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                        "opset": {name: opset_of(self.networks[name]) for name in files}},
            "checks": {
                "fp32_accuracy_within_0.1_point": abs(acc[FP32_FILE] - self.acc_float) <= FP32_TOLERANCE,
                "int8_accuracy_within_1_point": self.drop <= INT8_TOLERANCE,
                "int8_layout_as_priced": self.layout_ok,
                "latency_within_10_percent": ({n: abs(latency[n]["error"]) <= LATENCY_TOLERANCE for n in files}
                                              if same_host else not_here),
                "file_latency_within_10_percent": (
                    {n: latency[n]["file"]["error"] is not None
                     and abs(latency[n]["file"]["error"]) <= LATENCY_TOLERANCE for n in files}
                    if same_host else not_here),
            },
            "warnings": self.warnings,
            "files": {name: {"sha256": sha256(p), "bytes": p.stat().st_size} for name, p in files.items()},
        }
        out_files = dict(files)
        out_files[CARD_FILE] = self.out / CARD_FILE
        out_files[CARD_FILE].write_text(json.dumps(card, indent=1) + "\n")
        return ExportReport(self.out, out_files, card, self.warnings)


def export_pareto(run_dir: str | Path, out_dir: str | Path | None = None, progress: bool = False,
                  on_each: Callable[[ExportReport], None] | None = None,
                  log: Callable[[str], None] | None = None) -> list[ExportReport]:
    """Export every feasible Pareto-optimal trial (by final accuracy where ``hwsearch train`` ran,
    else by the search's), each to ``OUT/trial_N`` (default
    ``RUN_DIR/export``), with a progress bar on stderr if ``progress``; ``on_each`` is called
    with each report as it is done."""
    from tqdm import tqdm

    ctx = RunContext.load(run_dir)
    base = Path(out_dir) if out_dir else ctx.run_dir / "export"
    front = ctx.results.final_pareto() or ctx.results.pareto()  # the front by final accuracy, where trained
    if not front:
        raise ExportError(f"run {ctx.run_dir} has no feasible trained trial yet: nothing to export")
    reports = []
    for row in tqdm(front, desc="exporting", unit="model", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        reports.append(export_trial(ctx.run_dir, row.number, base / f"trial_{row.number}", context=ctx, log=log))
        if on_each:
            on_each(reports[-1])
    return reports
