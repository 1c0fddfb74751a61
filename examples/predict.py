"""Classify images with a model exported by ``hwsearch export``: onnxruntime and numpy only.

    python examples/predict.py runs/quickstart/export/trial_5 digit.png other.png
    python examples/predict.py runs/quickstart/export/trial_5 --int8 batch.npy

This is the whole deployment path: no torch, no hwsearch. The export folder holds
``model.onnx`` (float), ``model.int8.onnx`` and ``card.json``; the card says what the model
takes (``input``) and names the classes. The model normalises inside its graph, so it takes raw
pixels, (N, H, W, C), in the dataset's own range: 0..255 for photos, 0..16 for scikit-learn's
digits (``input.pixel_max``).

Image files (PNG, JPEG, ...) are read with Pillow, converted to grey or RGB as the model wants,
resized to its input and rescaled from 0..255 to 0..pixel_max. A ``.npy`` file holds pixels
ready to use: (H, W, C) or (N, H, W, C), already in the model's range.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load_pixels(path: Path, shape: list, dtype: np.dtype, pixel_max: int) -> np.ndarray:
    """One file as (n, H, W, C) pixels of the model's type and range."""
    _, h, w, c = shape
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        x = x[None] if x.ndim == 3 else x
        if x.shape[1:] != (h, w, c):
            raise SystemExit(f"{path}: pixels of shape {x.shape[1:]}, the model takes (H, W, C) = {(h, w, c)}")
        return x.astype(dtype)
    from PIL import Image  # only for image files

    with Image.open(path) as im:
        im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float64).reshape(h, w, c)
    x = x * (pixel_max / 255.0)
    if dtype == np.uint8:
        x = np.round(x)
    return x.astype(dtype)[None]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path, help="a folder written by 'hwsearch export'")
    p.add_argument("files", nargs="+", type=Path, help="image files, or .npy arrays of pixels")
    p.add_argument("--int8", action="store_true", help="use model.int8.onnx (default: model.onnx)")
    p.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    args = p.parse_args(argv)

    card = json.loads((args.export_dir / "card.json").read_text())
    spec, classes = card["input"], card["classes"]
    model = args.export_dir / ("model.int8.onnx" if args.int8 else "model.onnx")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    dtype = np.dtype(spec["dtype"])
    batches = [load_pixels(f, spec["shape"], dtype, spec["pixel_max"]) for f in args.files]
    names = [f"{f}[{i}]" if len(b) > 1 else str(f) for f, b in zip(args.files, batches) for i in range(len(b))]
    probs = softmax(session.run(None, {spec["name"]: np.concatenate(batches)})[0])
    for name, p_ in zip(names, probs):
        best = np.argsort(-p_)[:args.top]
        print(f"{name}: " + ", ".join(f"{classes[k]} {p_[k]:.1%}" for k in best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
