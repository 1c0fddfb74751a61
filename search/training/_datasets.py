"""Datasets by name. Nothing ever downloads.

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); the default.
- ``imagefolder``: one folder per class of JPEG/PNG images (e.g. CIFAR-10 as images).
- ``npz``: a ``.npz`` file with arrays ``x`` (N,H,W | N,H,W,C | N,C,H,W) and ``y`` (N,).
- ``cifar10``: the standard python batch folder (``data_batch_1`` ... ``data_batch_5``), read with
  an unpickler that only admits the numpy types those files hold.

Every source returns raw images (N, C, H, W) with the factor that scales them to [0, 1]. The
train/validation split is stratified and seeded; per-channel mean and standard deviation come
from the training split only.

Bad data (a missing or unreadable path, an empty class folder, a corrupt image, labels out of
range, arrays that do not fit together) raises :class:`DatasetError` naming the file or folder;
an ``imagefolder`` can instead skip undecodable images (``dataset.bad_images: skip``).
"""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsearch.search.errors import SearchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class DatasetError(SearchError, ValueError):
    """A dataset that cannot be loaded; the message says which file or folder and why."""


@dataclass(frozen=True)
class Raw:
    x: np.ndarray  # (N, C, H, W), raw values
    y: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    scale: float  # multiply raw values by this to get [0, 1]


@dataclass(frozen=True)
class DataSource:
    """A dataset source: ``load(spec, rng) -> Raw`` reads ``spec.path`` (when ``needs_path``) and
    raises :class:`DatasetError` naming the file or folder when it cannot; it resizes to
    ``spec.image_size`` when ``resizes`` (the spec refuses image_size for the others)."""

    name: str
    needs_path: bool
    load: Callable[..., Raw]
    description: str
    resizes: bool = False
    mirrors: bool = True  # a mirror image is still of its class (photos): training may flip it


_SOURCES: dict[str, DataSource] = {}


def register_dataset(name: str, needs_path: bool, description: str, resizes: bool = False,
                     mirrors: bool = True) -> Callable:
    def deco(fn: Callable[..., Raw]) -> Callable[..., Raw]:
        if name in _SOURCES:
            raise ValueError(f"dataset {name!r} is already registered ({_SOURCES[name].description}); "
                             "register yours under another name")
        _SOURCES[name] = DataSource(name, needs_path, fn, description, resizes, mirrors)
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
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """A hash of the arrays, computed once (they are never written after loading): the final
        stage keys every candidate's checkpoint on it, and 45,000 CIFAR-10 images take seconds."""
        cached: str | None = self.__dict__.get("_fingerprint")
        if cached is None:
            import hashlib

            h = hashlib.sha256()
            for a in (self.x_train, self.y_train, self.x_val, self.y_val):
                h.update(np.ascontiguousarray(a).tobytes())
            cached = self.__dict__["_fingerprint"] = h.hexdigest()[:16]
        return cached


def _where(spec) -> str:
    """How messages name a dataset: its source and path (``npz /data/d.npz``), else its name."""
    return f"{spec.name} {spec.path}" if spec.path is not None else f"dataset {spec.name!r}"


def _split(y: np.ndarray, rng: np.random.Generator, where: str, what: str, **size) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of the indices of ``y``, stratified when every class has 2 examples or more;
    a split that cannot be made (too few examples for the classes) is a :class:`DatasetError`."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(np.arange(len(y)), stratify=stratify, random_state=int(rng.integers(2**31)),
                                **size)
    except ValueError as e:
        raise DatasetError(f"{where}: cannot take {what} from {len(y)} images of "
                           f"{np.count_nonzero(counts)} classes ({e})") from None


def _stratified_subset(y: np.ndarray, n: int, rng: np.random.Generator, where: str = "dataset") -> np.ndarray:
    """Indices of a seeded, class-balanced subset of ``n`` of the labels ``y``."""
    if n >= len(y):
        return np.arange(len(y))
    idx, _ = _split(y, rng, where, f"dataset.limit {n} images", train_size=n)
    return np.sort(idx)


def load_dataset(spec, seed: int) -> Data:
    """Load, subset, split and normalise the dataset of a :class:`~hwsearch.search.spec.DatasetSpec`.
    Raises :class:`DatasetError` naming the file or folder when the data cannot be used."""
    source = _SOURCES[spec.name]
    where = _where(spec)
    rng = np.random.default_rng(seed)
    raw = source.load(spec, rng)
    x, y = raw.x, raw.y
    if len(x) != len(y):
        raise DatasetError(f"{where}: {len(x)} images but {len(y)} labels")
    if not len(y):
        raise DatasetError(f"{where}: holds no images")
    n_classes = len(raw.classes)
    if n_classes < 2:
        raise DatasetError(f"{where} has {n_classes} class{'' if n_classes == 1 else 'es'}; "
                           "at least 2 are needed")
    if y.min() < 0 or y.max() >= n_classes:
        raise DatasetError(f"{where}: labels must be in 0..{n_classes - 1}, "
                           f"found {int(y.min())}..{int(y.max())}")
    if spec.limit is not None and spec.limit < len(y):
        keep = _stratified_subset(y, spec.limit, rng, where)
        x, y = x[keep], y[keep]
    tr, va = _split(y, rng, where, f"a validation split of dataset.val_fraction {spec.val_fraction:g}",
                    test_size=spec.val_fraction)
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

@register_dataset("digits", needs_path=False, description="scikit-learn's bundled 8x8 digits", mirrors=False)
def _digits(spec, rng: np.random.Generator) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    return Raw(d.images[:, None].astype(np.uint8), d.target.astype(np.int64),
               tuple(str(c) for c in d.target_names), 1.0 / 16.0)


def _resize_to(img, size: int | None):
    if size is not None and img.size != (size, size):
        from PIL import Image

        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


def _listdir(folder: Path, what: str) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DatasetError(f"{what}: cannot list the folder ({e.strerror or e})") from None


def _no_path(kind: str, path: Path, want: str) -> DatasetError:
    state = f"is not a {want}" if path.exists() else f"no such {want}"
    return DatasetError(f"{kind} {path}: {state}")


def _warn(message: str) -> None:
    """A warning about the data for the person running the command (stderr, one line)."""
    print(f"warning: {message}", file=sys.stderr)


@register_dataset("imagefolder", needs_path=True, description="a folder per class of JPEG/PNG images",
                  resizes=True)
def _imagefolder(spec, rng: np.random.Generator) -> Raw:
    from PIL import Image

    root = Path(spec.path)
    if not root.is_dir():
        raise _no_path("imagefolder", root, "folder")
    classes = [p.name for p in _listdir(root, f"imagefolder {root}") if p.is_dir()]
    if not classes:
        raise DatasetError(f"imagefolder {root}: no class folders (expected one folder of images per class)")
    files, labels = [], []
    for ci, c in enumerate(classes):
        found = [p for p in _listdir(root / c, f"imagefolder {root / c}") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise DatasetError(f"imagefolder {root}: class folder {c!r} has no images "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [ci] * len(found)
    y = np.asarray(labels, np.int64)
    if spec.limit is not None and spec.limit < len(y):
        keep = _stratified_subset(y, spec.limit, rng, f"imagefolder {root}")
        files, y = [files[i] for i in keep], y[keep]
    images, kept, skipped = [], [], []
    mode = None
    for i, f in enumerate(_progress(files, "loading images")):
        try:
            with Image.open(f) as im:
                im_mode = mode or ("L" if im.mode in ("L", "1", "I;16") else "RGB")
                # convert() decodes the whole file, so a truncated one fails here, not later
                images.append(np.asarray(_resize_to(im.convert(im_mode), spec.image_size)))
                mode = im_mode
        except Exception as e:  # decoders raise many types for bad files (OSError, SyntaxError, ...)
            reason = f"{type(e).__name__}: {e}"
            if spec.bad_images != "skip":
                raise DatasetError(f"imagefolder {root}: cannot read image {f} ({reason}); delete or replace "
                                   "it, or set dataset.bad_images: skip to leave such images out") from None
            skipped.append(f"{f} ({reason})")
            continue
        kept.append(i)
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        _warn(f"imagefolder {root}: skipped {len(skipped)} unreadable image(s) (dataset.bad_images: skip): {shown}")
        y = y[kept]
        empty = [c for ci, c in enumerate(classes) if not np.any(y == ci)]
        if empty:
            raise DatasetError(f"imagefolder {root}: no readable image left in class folder(s) "
                               f"{', '.join(map(repr, empty))}")
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
    if not path.is_file():
        raise _no_path("npz", path, "file")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DatasetError(f"npz {path}: holds a single array, not arrays 'x' and 'y' "
                               "(write it with numpy.savez(path, x=images, y=labels))")
        with f:
            if "x" not in f or "y" not in f:
                raise DatasetError(f"npz {path}: needs arrays 'x' and 'y', found {sorted(f.files)}")
            x, y = f["x"], f["y"]
    except DatasetError:
        raise
    except Exception as e:  # numpy, zipfile and zlib raise many types for a bad file
        raise DatasetError(f"npz {path}: cannot read ({type(e).__name__}: {e})") from None
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DatasetError(f"npz {path}: x must hold integer or float pixel values, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DatasetError(f"npz {path}: x must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {x.shape}")
    if 0 in x.shape[1:]:
        raise DatasetError(f"npz {path}: x holds empty images, shape {x.shape} as (N,C,H,W)")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DatasetError(f"npz {path}: x holds NaN or infinite values")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"npz {path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DatasetError(f"npz {path}: labels must be 0..K-1 for K classes, found {int(y.min())}")
    present = np.unique(y)
    n_classes = int(present[-1]) + 1 if len(y) else 0
    if len(present) != n_classes:
        n_missing = n_classes - len(present)
        missing = sorted(set(range(min(n_classes, len(present) + 5))) - set(present.tolist()))[:5]
        raise DatasetError(f"npz {path}: labels must be 0..K-1 with every class present; found {len(present)} "
                           f"distinct labels up to {n_classes - 1}: no example of {', '.join(map(str, missing))}"
                           + (f" and {n_missing - len(missing)} more" if n_missing > len(missing) else ""))
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
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


def _read_batch(path: Path, keys: tuple[bytes, ...]) -> dict:
    """A CIFAR-10 pickle (a dict holding ``keys``), or a :class:`DatasetError` naming the file."""
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # a bad pickle raises many types (UnpicklingError, EOFError, TypeError, ...)
        raise DatasetError(f"cifar10 {path}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or any(k not in d for k in keys):
        found = sorted(map(repr, d)) if isinstance(d, dict) else type(d).__name__
        raise DatasetError(f"cifar10 {path}: not a CIFAR-10 batch: needs {', '.join(map(repr, keys))}, found {found}")
    return d


@register_dataset("cifar10", needs_path=True, description="CIFAR-10 python batches (data_batch_1..5)",
                  resizes=True)
def _cifar10(spec, rng: np.random.Generator) -> Raw:
    root = Path(spec.path)
    if not root.is_dir():
        raise _no_path("cifar10", root, "folder")
    batches = sorted(root.glob("data_batch_*"))
    if not batches:
        raise DatasetError(f"cifar10 {root}: no data_batch_* files (the python version of CIFAR-10)")
    xs, ys = [], []
    for b in batches:
        d = _read_batch(b, (b"data", b"labels"))
        try:
            data = np.asarray(d[b"data"], np.uint8)
            labels = np.asarray(d[b"labels"], np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise DatasetError(f"cifar10 {b}: data or labels are not arrays of numbers ({e})") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
            raise DatasetError(f"cifar10 {b}: expected data (N, 3072) and labels (N,), got data {data.shape} "
                               f"and labels {labels.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    names = tuple(f"class_{i}" for i in range(10))
    meta = root / "batches.meta"
    if meta.exists():
        label_names = _read_batch(meta, (b"label_names",))[b"label_names"]
        if (not isinstance(label_names, list) or len(label_names) != 10
                or not all(isinstance(n, bytes) for n in label_names)):
            raise DatasetError(f"cifar10 {meta}: label_names must be a list of 10 names, got {label_names!r:.80}")
        names = tuple(n.decode(errors="replace") for n in label_names)
    x = np.concatenate(xs)
    if spec.image_size and spec.image_size != 32:
        from PIL import Image

        x = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize(
            (spec.image_size,) * 2, Image.Resampling.BILINEAR)).transpose(2, 0, 1) for im in x])
    return Raw(x, np.concatenate(ys), names, 1.0 / 255.0)


def _progress(items: list, desc: str):
    if len(items) < 2000:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", leave=False)
