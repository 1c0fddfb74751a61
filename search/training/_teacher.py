"""The distillation teacher and its logits on the training split, cached in the run directory.

By default the teacher is the widest network the space allows (every width, depth and expand
ratio at its maximum, the smallest kernel, full precision, no pruning), trained once per run for a few more
epochs than candidates get. Alternatively the spec names a teacher ONNX model, and onnxruntime
computes its logits, so a teacher from any framework works. Its input is float32
(N, C, H, W) images scaled to [0, 1] (not normalised), its output the logits over the dataset's
classes in the dataset's class order. A model that does not fit (another input shape or type,
another number of classes, a failure when run, non-finite logits) raises :class:`TeacherError`
naming the file; :func:`check_teacher` finds that out on a few images, for ``hwsearch validate``.
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
                         width=max(s.widths), se=max(space.se), act=act) for s in space.stages)
    return Candidate(stem=max(space.stem_widths), stages=stages)


def _why(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())  # onnxruntime's messages span lines


def _session(path: Path, data: Data):
    """An onnxruntime session of the teacher, its input and output checked against ``data``."""
    import onnxruntime as ort

    if not path.is_file():
        raise TeacherError(f"teacher.onnx {path}: no such file")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise TeacherError(f"teacher.onnx {path}: cannot load the ONNX model ({_why(e)})") from None
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    expected = list(data.input_shape)
    if len(inputs) != 1:
        raise TeacherError(f"teacher.onnx {path}: takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                           f"a teacher takes one, float32 images (N, {', '.join(map(str, expected))})")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise TeacherError(f"teacher.onnx {path}: input {inp.name!r} is {inp.type}; a teacher takes "
                           "tensor(float) images scaled to [0, 1]")
    got = [d if isinstance(d, int) else None for d in inp.shape[1:]]
    if len(got) != 3 or any(g is not None and g != e for g, e in zip(got, expected)):
        raise TeacherError(f"teacher.onnx {path}: input shape {inp.shape} does not match the dataset's "
                           f"(N, {', '.join(map(str, expected))})")
    out = outputs[0]
    if out.type not in ("tensor(float)", "tensor(double)", "tensor(float16)"):
        raise TeacherError(f"teacher.onnx {path}: output {out.name!r} is {out.type}; a teacher outputs float logits")
    shape = out.shape  # None or [] when the model does not declare it: then the run is checked
    if shape and (len(shape) != 2 or isinstance(shape[1], int) and shape[1] != data.num_classes):
        raise TeacherError(f"teacher.onnx {path}: outputs shape {tuple(out.shape[1:])}, expected "
                           f"({data.num_classes},) logits for the dataset's classes")
    return sess


def _onnx_logits(path: Path, data: Data, limit: int | None = None) -> np.ndarray:
    """The teacher's logits on the training images (the first ``limit`` of them)."""
    sess = _session(path, data)
    name = sess.get_inputs()[0].name
    mean = np.asarray(data.mean, np.float32)[None, :, None, None]
    std = np.asarray(data.std, np.float32)[None, :, None, None]
    x = data.x_train[:limit] * std + mean  # back to [0, 1]
    out = []
    for i in range(0, len(x), 256):
        try:
            out.append(np.asarray(sess.run(None, {name: x[i:i + 256].astype(np.float32)})[0]))
        except Exception as e:  # onnxruntime raises its own exception types
            raise TeacherError(f"teacher.onnx {path}: fails on the dataset's images "
                               f"{'x'.join(map(str, x.shape[1:]))} ({_why(e)})") from None
    logits = np.concatenate(out).astype(np.float32)
    if logits.ndim != 2 or logits.shape != (len(x), data.num_classes):
        raise TeacherError(f"teacher.onnx {path}: outputs shape {logits.shape[1:]} for {len(x)} images, expected "
                           f"({data.num_classes},) logits for the dataset's classes")
    if not np.isfinite(logits).all():
        raise TeacherError(f"teacher.onnx {path}: outputs NaN or infinite logits on the dataset's images")
    return logits


def check_teacher(path: str | Path, data: Data, images: int = 8) -> None:
    """Raise :class:`TeacherError` unless the teacher loads, takes the dataset's images and gives
    finite logits over its classes, tried on the first ``images`` training images."""
    _onnx_logits(Path(path), data, limit=images)


def teacher_logits(spec, data: Data, run_dir: Path, log=print) -> tuple[np.ndarray, dict]:
    """Logits of the teacher on ``data.x_train`` (cached), and facts about the teacher."""
    folder = run_dir / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    meta_path, logits_path = folder / "teacher.json", folder / "logits.npy"
    source = str(spec.teacher.onnx) if spec.teacher.onnx else teacher_candidate(spec.space).to_string()
    key = {"source": source, "data": data.fingerprint(), "seed": spec.search.seed,
           "epochs": spec.search.epochs + spec.teacher.extra_epochs}
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
        logits = _onnx_logits(Path(spec.teacher.onnx), data)
        meta = {"key": key, "kind": "onnx", "path": str(spec.teacher.onnx)}
    else:
        import torch

        from hwsearch.search.training._evaluate import TrainSettings, evaluate, predict_logits, trained_network

        cand = teacher_candidate(spec.space)
        s = spec.search
        log(f"training the teacher {cand} ({s.epochs + spec.teacher.extra_epochs} epochs)")
        settings = TrainSettings(epochs=s.epochs + spec.teacher.extra_epochs, finetune_epochs=0,
                                 batch_size=s.batch_size, lr=s.lr, device=s.device)
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
