"""The distillation teacher and its logits on the training split, cached in the run directory.

By default the teacher is the widest network the space allows (every width, depth and expand
ratio at its maximum, the smallest kernel, full precision, no pruning), trained once per run for a few more
epochs than candidates get. Alternatively the spec names a teacher ONNX model, and onnxruntime
computes its logits, so a teacher from any framework works. Its input is float32
(N, C, H, W) images scaled to [0, 1] (not normalised), its output the logits over the dataset's
classes in the dataset's class order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from search.datasets import Data
from spaces.candidate import Candidate, Stage
from spaces.config import SpaceSpec


class TeacherError(ValueError):
    pass


def teacher_candidate(space: SpaceSpec) -> Candidate:
    act = "hswish" if "hswish" in space.activations else space.activations[0]
    kernel = 3 if 3 in space.kernels else min(space.kernels)  # widest, not slowest: kernel adds little
    stages = tuple(Stage(depth=max(s.depths), kernel=kernel, expand=max(space.expand_ratios),
                         width=max(s.widths), se=max(space.se), act=act) for s in space.stages)
    return Candidate(stem=max(space.stem_widths), stages=stages)


def _onnx_logits(path: Path, data: Data) -> np.ndarray:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise TeacherError(f"teacher {path}: cannot load the ONNX model ({e})") from None
    inp = sess.get_inputs()[0]
    mean = np.asarray(data.mean, np.float32)[None, :, None, None]
    std = np.asarray(data.std, np.float32)[None, :, None, None]
    x = data.x_train * std + mean  # back to [0, 1]
    expected = list(x.shape[1:])
    got = [d if isinstance(d, int) else None for d in inp.shape[1:]]
    if len(got) != 3 or any(g is not None and g != e for g, e in zip(got, expected)):
        raise TeacherError(f"teacher {path}: input shape {inp.shape} does not match the dataset's "
                           f"(N, {', '.join(map(str, expected))})")
    out = []
    for i in range(0, len(x), 256):
        out.append(sess.run(None, {inp.name: x[i:i + 256].astype(np.float32)})[0])
    logits = np.concatenate(out).astype(np.float32)
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise TeacherError(f"teacher {path}: outputs shape {logits.shape[1:]}, expected "
                           f"({data.num_classes},) logits for the dataset's classes")
    return logits


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
            return np.load(logits_path, allow_pickle=False), meta
    if spec.teacher.onnx:
        log(f"computing teacher logits with {spec.teacher.onnx}")
        logits = _onnx_logits(Path(spec.teacher.onnx), data)
        meta = {"key": key, "kind": "onnx", "path": str(spec.teacher.onnx)}
    else:
        import torch

        from search.evaluate import TrainSettings, evaluate, predict_logits, trained_network

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
