"""Datasets by name. Nothing ever downloads.

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); the default.
- ``imagefolder``: one folder per class of JPEG/PNG images (e.g. CIFAR-10 as images).
- ``npz``: a ``.npz`` file with arrays ``x`` (N,H,W | N,H,W,C | N,C,H,W) and ``y`` (N,).
- ``cifar10``: the standard python batch folder (``data_batch_1`` ... ``data_batch_5``), read with
  an unpickler that only admits the numpy types those files hold.

Every source returns raw images (N, C, H, W) with the factor that scales them to [0, 1]. The
train/validation split is stratified and seeded; per-channel mean and standard deviation come
from the training split only.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says which file or folder and why."""


@dataclass(frozen=True)
class Raw:
    x: np.ndarray  # (N, C, H, W), raw values
    y: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    scale: float  # multiply raw values by this to get [0, 1]


@dataclass(frozen=True)
class DataSource:
    name: str
    needs_path: bool
    load: Callable[..., Raw]
    description: str


_SOURCES: dict[str, DataSource] = {}


def register_dataset(name: str, needs_path: bool, description: str) -> Callable:
    def deco(fn: Callable[..., Raw]) -> Callable[..., Raw]:
        if name in _SOURCES:
            raise ValueError(f"dataset {name!r} is already registered")
        _SOURCES[name] = DataSource(name, needs_path, fn, description)
        return fn
    return deco


def dataset_sources() -> dict[str, DataSource]:
    return dict(_SOURCES)


@dataclass(frozen=True)
class Data:
    """A split dataset, normalised for training. ``x_*`` are float32 (N, C, H, W)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: tuple[str, ...]
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_val, self.y_val):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def _stratified_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of ``n`` of the labels ``y``."""
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return np.arange(len(y))
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y,
                              random_state=int(rng.integers(2**31)))
    return np.sort(idx)


def load_dataset(spec, seed: int) -> Data:
    """Load, subset, split and normalise the dataset of a :class:`~search.spec.DatasetSpec`."""
    from sklearn.model_selection import train_test_split

    source = _SOURCES[spec.name]
    rng = np.random.default_rng(seed)
    raw = source.load(spec, rng)
    x, y = raw.x, raw.y
    if len(x) != len(y):
        raise DatasetError(f"dataset {spec.name!r}: {len(x)} images but {len(y)} labels")
    n_classes = len(raw.classes)
    if n_classes < 2:
        raise DatasetError(f"dataset {spec.name!r} has {n_classes} class; at least 2 are needed")
    if y.min() < 0 or y.max() >= n_classes:
        raise DatasetError(f"dataset {spec.name!r}: labels must be in 0..{n_classes - 1}, "
                           f"found {int(y.min())}..{int(y.max())}")
    if spec.limit is not None and spec.limit < len(y):
        keep = _stratified_subset(y, spec.limit, rng)
        x, y = x[keep], y[keep]
    counts = np.bincount(y, minlength=n_classes)
    stratify = y if counts.min() >= 2 else None
    tr, va = train_test_split(np.arange(len(y)), test_size=spec.val_fraction, stratify=stratify,
                              random_state=int(rng.integers(2**31)))
    xf = x.astype(np.float32) * np.float32(raw.scale)
    mean = xf[tr].mean(axis=(0, 2, 3))
    std = xf[tr].std(axis=(0, 2, 3)).clip(1e-3)
    xn = (xf - mean[None, :, None, None]) / std[None, :, None, None]
    return Data(xn[tr].astype(np.float32), y[tr].astype(np.int64), xn[va].astype(np.float32),
                y[va].astype(np.int64), raw.classes, raw.scale, tuple(map(float, mean)),
                tuple(map(float, std)))


# ------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------

@register_dataset("digits", needs_path=False, description="scikit-learn's bundled 8x8 digits")
def _digits(spec, rng: np.random.Generator) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    return Raw(d.images[:, None].astype(np.uint8), d.target.astype(np.int64),
               tuple(str(c) for c in d.target_names), 1.0 / 16.0)


def _resize_to(img, size: int | None):
    if size is not None and img.size != (size, size):
        from PIL import Image

        img = img.resize((size, size), Image.BILINEAR)
    return img


@register_dataset("imagefolder", needs_path=True, description="a folder per class of JPEG/PNG images")
def _imagefolder(spec, rng: np.random.Generator) -> Raw:
    from PIL import Image

    root = Path(spec.path)
    if not root.is_dir():
        raise DatasetError(f"imagefolder {root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for ci, c in enumerate(classes):
        found = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DatasetError(f"imagefolder {root}: class folder {c!r} has no images")
        files += found
        labels += [ci] * len(found)
    if not files:
        raise DatasetError(f"imagefolder {root}: no class folders with images")
    y = np.asarray(labels, np.int64)
    if spec.limit is not None and spec.limit < len(y):
        keep = _stratified_subset(y, spec.limit, rng)
        files, y = [files[i] for i in keep], y[keep]
    images = []
    mode = None
    for f in _progress(files, "loading images"):
        try:
            with Image.open(f) as im:
                mode = mode or ("L" if im.mode in ("L", "1", "I;16") else "RGB")
                images.append(np.asarray(_resize_to(im.convert(mode), spec.image_size)))
        except OSError as e:
            raise DatasetError(f"imagefolder {root}: cannot read image {f} ({e})") from None
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DatasetError(f"imagefolder {root}: images differ in size {sorted(shapes)[:3]}...; "
                           "set dataset.image_size to resize them")
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return Raw(x, y, tuple(classes), 1.0 / 255.0)


@register_dataset("npz", needs_path=True, description="a .npz file with arrays x and y")
def _npz(spec, rng: np.random.Generator) -> Raw:
    path = Path(spec.path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise DatasetError(f"npz {path}: needs arrays 'x' and 'y', found {sorted(f.files)}")
            x, y = f["x"], f["y"]
    except (OSError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"npz {path}: cannot read ({e})") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DatasetError(f"npz {path}: x must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"npz {path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    n_classes = int(y.max()) + 1 if len(y) else 0
    return Raw(x, y.astype(np.int64), tuple(str(i) for i in range(n_classes)), scale)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only the classes a CIFAR-10 batch holds: no code from the file can run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DatasetError(f"cifar10 {path}: not a readable CIFAR-10 batch ({e})") from None


@register_dataset("cifar10", needs_path=True, description="CIFAR-10 python batches (data_batch_1..5)")
def _cifar10(spec, rng: np.random.Generator) -> Raw:
    root = Path(spec.path)
    batches = sorted(root.glob("data_batch_*"))
    if not batches:
        raise DatasetError(f"cifar10 {root}: no data_batch_* files (the python version of CIFAR-10)")
    xs, ys = [], []
    for b in batches:
        d = _read_batch(b)
        xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], np.int64))
    names = tuple(f"class_{i}" for i in range(10))
    meta = root / "batches.meta"
    if meta.exists():
        names = tuple(n.decode() for n in _read_batch(meta)[b"label_names"])
    x = np.concatenate(xs)
    if spec.image_size and spec.image_size != 32:
        from PIL import Image

        x = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize(
            (spec.image_size,) * 2, Image.BILINEAR)).transpose(2, 0, 1) for im in x])
    return Raw(x, np.concatenate(ys), names, 1.0 / 255.0)


def _progress(items: list, desc: str):
    if len(items) < 2000:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", leave=False)
