"""The distillation teacher and its logits on the training split, cached in the run directory.

By default the teacher is the widest network the space allows (every width, depth and expand
ratio at its maximum, the smallest kernel, full precision, no pruning), trained once per run for a few more
epochs than candidates get. Alternatively the spec names a teacher ONNX model, and onnxruntime
computes its logits, so a teacher from any framework works. The spec declares its conventions
(``teacher.layout``, ``pixel_max``, ``mean``, ``std``, ``output``; by default float32 NCHW images
in [0, 1] and logits out, over the dataset's classes in the dataset's class order); a batch fixed
in the graph is read from it. Probabilities become log-probabilities, which distil exactly as
logits do (a softmax of them gives the probabilities back). A model that does not fit (another
input shape or type, another number of classes, a failure when run, non-finite scores,
"probabilities" that are not) raises :class:`TeacherError` naming the file; :func:`check_teacher`
finds that out on a few images, and measures the teacher on the validation split, for
``hwsearch validate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hwsearch.search.errors import SearchError
from hwsearch.search.training._datasets import Data
from hwsearch.spaces._candidate import Candidate, Stage
from hwsearch.spaces._config import SpaceSpec


class TeacherError(SearchError, ValueError):
    """A teacher model that cannot be used; the message names the file and what does not fit."""


def teacher_candidate(space: SpaceSpec) -> Candidate:
    act = "hswish" if "hswish" in space.activations else space.activations[0]
    kernel = 3 if 3 in space.kernels else min(space.kernels)  # widest, not slowest: kernel adds little
    stages = tuple(Stage(depth=max(s.depths), kernel=kernel, expand=max(space.expand_ratios),
                         width=max(s.widths), se=max(space.se), act=act, stride=s.stride) for s in space.stages)
    return Candidate(stem=max(space.stem_widths), stages=stages)


def _why(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())  # onnxruntime's messages span lines


def _session(path: Path, data: Data, conv):
    """An onnxruntime session of the teacher, its input and output checked against ``data`` read
    with the conventions ``conv`` (a :class:`~hwsearch.search.spec.TeacherSpec`)."""
    import onnxruntime as ort

    if not path.is_file():
        raise TeacherError(f"teacher.onnx {path}: no such file")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise TeacherError(f"teacher.onnx {path}: cannot load the ONNX model ({_why(e)})") from None
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    c, h, w = data.input_shape
    expected = [c, h, w] if conv.layout == "NCHW" else [h, w, c]
    dims = f"(N, {', '.join(map(str, expected))}) in {conv.layout}"
    if len(inputs) != 1:
        raise TeacherError(f"teacher.onnx {path}: takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                           f"a teacher takes one, images {dims}")
    inp = inputs[0]
    if inp.type not in ("tensor(float)", "tensor(uint8)"):
        raise TeacherError(f"teacher.onnx {path}: input {inp.name!r} is {inp.type}; a teacher takes "
                           "tensor(float) (or tensor(uint8)) images")
    got = [d if isinstance(d, int) else None for d in inp.shape[1:]]
    if len(got) != 3 or any(g is not None and g != e for g, e in zip(got, expected)):
        hint = ""
        other = [h, w, c] if conv.layout == "NCHW" else [c, h, w]
        if all(g is None or g == e for g, e in zip(got, other)) and len(got) == 3:
            hint = f"; it looks {'NHWC' if conv.layout == 'NCHW' else 'NCHW'}: set teacher.layout"
        raise TeacherError(f"teacher.onnx {path}: input shape {inp.shape} does not match the dataset's {dims}{hint}")
    for name in ("mean", "std"):
        v = getattr(conv, name)
        if v is not None and len(v) not in (1, c):
            raise TeacherError(f"teacher.{name}: {len(v)} values for images of {c} channels")
    out = outputs[0]
    if out.type not in ("tensor(float)", "tensor(double)", "tensor(float16)"):
        raise TeacherError(f"teacher.onnx {path}: output {out.name!r} is {out.type}; a teacher outputs float "
                           f"{conv.output}")
    shape = out.shape  # None or [] when the model does not declare it: then the run is checked
    if shape and (len(shape) != 2 or isinstance(shape[1], int) and shape[1] != data.num_classes):
        raise TeacherError(f"teacher.onnx {path}: outputs shape {tuple(out.shape[1:])}, expected "
                           f"({data.num_classes},) {conv.output} for the dataset's classes")
    return sess


def _teacher_input(x01: np.ndarray, conv, dtype: str) -> np.ndarray:
    """Images in [0, 1] (N, C, H, W) in the teacher's conventions: pixel range, mean and std, layout."""
    x = x01 * np.float32(conv.pixel_max)
    if dtype == "tensor(uint8)":
        x = np.clip(np.rint(x), 0, 255)
    if conv.mean is not None:
        x = x - np.asarray(conv.mean, np.float32)[None, :, None, None]
    if conv.std is not None:
        x = x / np.asarray(conv.std, np.float32)[None, :, None, None]
    if conv.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.uint8 if dtype == "tensor(uint8)" else np.float32)


class OnnxTeacher:
    """An ONNX teacher, its session checked against ``data`` read with the conventions ``conv`` (a
    :class:`~hwsearch.search.spec.TeacherSpec`). Called on images in [0, 1] (N, C, H, W) it gives
    its logits (log-probabilities for a teacher that outputs probabilities): once per run on the
    training images, or per batch on augmented ones. A model whose batch is fixed in its graph is
    run that many images at a time (the last batch padded, its padding dropped)."""

    def __init__(self, path: Path, data: Data, conv) -> None:
        self.path, self.data, self.conv = Path(path), data, conv
        self.session = _session(self.path, data, conv)

    def __call__(self, x01: np.ndarray) -> np.ndarray:
        path, conv, sess = self.path, self.conv, self.session
        inp = sess.get_inputs()[0]
        batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 256
        out = []
        for i in range(0, len(x01), batch):
            chunk = _teacher_input(x01[i:i + batch], conv, inp.type)
            n = len(chunk)
            if n < batch and isinstance(inp.shape[0], int):
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            try:
                out.append(np.asarray(sess.run(None, {inp.name: chunk})[0])[:n])
            except Exception as e:  # onnxruntime raises its own exception types
                raise TeacherError(f"teacher.onnx {path}: fails on the dataset's images "
                                   f"{'x'.join(map(str, x01.shape[1:]))} ({_why(e)})") from None
        scores = np.concatenate(out).astype(np.float32)
        if scores.ndim != 2 or scores.shape != (len(x01), self.data.num_classes):
            raise TeacherError(f"teacher.onnx {path}: outputs shape {scores.shape[1:]} for {len(x01)} images, "
                               f"expected ({self.data.num_classes},) {conv.output} for the dataset's classes")
        if not np.isfinite(scores).all():
            raise TeacherError(f"teacher.onnx {path}: outputs NaN or infinite values on the dataset's images")
        if conv.output == "probabilities":
            sums = scores.sum(1)
            if (scores < -1e-6).any() or not np.allclose(sums, 1.0, atol=1e-3):
                raise TeacherError(f"teacher.onnx {path}: teacher.output is 'probabilities', but its outputs are "
                                   f"not: rows sum to {sums.min():.3g}..{sums.max():.3g}; set teacher.output: logits")
            return np.log(np.clip(scores, 1e-12, None))
        return scores


def _unit_range(data: Data, x: np.ndarray) -> np.ndarray:
    """Normalised images of ``data`` back in [0, 1], as a teacher's conventions start from."""
    mean = np.asarray(data.mean, np.float32)[None, :, None, None]
    std = np.asarray(data.std, np.float32)[None, :, None, None]
    return x * std + mean


def check_teacher(conv, data: Data, images: int = 8) -> float:
    """Raise :class:`TeacherError` unless the teacher of ``conv`` (a
    :class:`~hwsearch.search.spec.TeacherSpec` naming an ONNX file) loads, takes the dataset's
    images in its declared conventions and gives finite scores over its classes, tried on
    ``images`` training images; then return its accuracy on the validation split. A teacher far
    below what it should score usually has a convention wrong (pixel range, layout, class order)."""
    teacher = OnnxTeacher(Path(conv.onnx), data, conv)  # one session for both checks
    teacher(_unit_range(data, data.x_train[:images]))
    logits = teacher(_unit_range(data, data.x_val))
    return float((logits.argmax(1) == data.y_val).mean())


def teacher_logits(spec, data: Data, run_dir: Path, log=print) -> tuple[np.ndarray, dict]:
    """Logits of the teacher on ``data.x_train`` (cached), and facts about the teacher."""
    folder = run_dir / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    meta_path, logits_path = folder / "teacher.json", folder / "logits.npy"
    source = (spec.teacher.model_dump(mode="json", exclude={"extra_epochs"}) if spec.teacher.onnx
              else teacher_candidate(spec.space).to_string())
    key = {"source": source, "data": data.fingerprint(), "seed": spec.search.seed,
           "epochs": spec.search.epochs + spec.teacher.extra_epochs,
           "training": spec.training.model_dump(mode="json"), "batch_size": spec.search.batch_size,
           "lr": spec.search.lr}
    if meta_path.exists() and logits_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            try:
                cached = np.load(logits_path, allow_pickle=False)
            except (OSError, ValueError) as e:  # a pickle is refused, never run
                raise TeacherError(f"teacher cache {logits_path}: not a plain array of logits ({e}); "
                                   f"delete {folder} to train the teacher again") from None
            if cached.shape != (len(data.x_train), data.num_classes):
                raise TeacherError(
                    f"teacher cache {logits_path}: shape {cached.shape}, expected "
                    f"{(len(data.x_train), data.num_classes)}; delete {folder} to train the teacher again"
                )
            return cached, meta
    if spec.teacher.onnx:
        log(f"computing teacher logits with {spec.teacher.onnx}")
        logits = OnnxTeacher(Path(spec.teacher.onnx), data, spec.teacher)(_unit_range(data, data.x_train))
        meta = {"key": key, "kind": "onnx", "path": str(spec.teacher.onnx),
                "conventions": spec.teacher.model_dump(mode="json", exclude={"onnx", "extra_epochs"})}
    else:
        import torch

        from hwsearch.search.training._evaluate import evaluate, predict_logits, train_settings, trained_network

        cand = teacher_candidate(spec.space)
        s = spec.search
        log(f"training the teacher {cand} ({s.epochs + spec.teacher.extra_epochs} epochs)")
        settings = train_settings(spec, data.input_shape[1], epochs=s.epochs + spec.teacher.extra_epochs,
                                  finetune_epochs=0)
        ev = evaluate(cand, data, None, settings, seed=s.seed, keep_weights=True)
        net = trained_network(cand, data.input_shape, data.num_classes, ev.state_dict)
        logits = predict_logits(net, data.x_train)
        torch.save(ev.state_dict, folder / "teacher.pt")
        meta = {"key": key, "kind": "trained", "candidate": cand.to_string(),
                "val_accuracy": ev.accuracy,
                "train_accuracy": float((logits.argmax(1) == data.y_train).mean())}
    np.save(logits_path, logits.astype(np.float32))
    meta_path.write_text(json.dumps(meta, indent=1))
    return logits, meta
