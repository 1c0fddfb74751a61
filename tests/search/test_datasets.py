import pickle

import numpy as np
import pytest
from PIL import Image

from hwsearch.search.spec import DatasetSpec
from hwsearch.search.training._datasets import DatasetError, load_dataset


def test_digits_is_bundled_split_and_normalised():
    d = load_dataset(DatasetSpec(name="digits"), seed=0)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_val) == 1797
    assert len(d.x_val) == pytest.approx(0.2 * 1797, abs=1)
    assert abs(float(d.x_train.mean())) < 1e-3 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-2)
    again = load_dataset(DatasetSpec(name="digits"), seed=0)
    assert np.array_equal(d.y_val, again.y_val)  # seeded split
    other = load_dataset(DatasetSpec(name="digits"), seed=1)
    assert not np.array_equal(d.y_val, other.y_val)


def test_limit_takes_a_stratified_subset():
    d = load_dataset(DatasetSpec(name="digits", limit=200), seed=0)
    assert len(d.y_train) + len(d.y_val) == 200
    assert np.bincount(d.y_train, minlength=10).min() >= 10


def test_npz_in_any_layout(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 12, 12, 3), dtype=np.uint8)
    y = np.arange(60) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(DatasetSpec(name="npz", path=tmp_path / "d.npz"), seed=0)
    assert d.input_shape == (3, 12, 12) and d.num_classes == 3
    np.savez(tmp_path / "bad.npz", x=x, y=y[:-1])
    with pytest.raises(DatasetError, match="60 images but 59 labels"):
        load_dataset(DatasetSpec(name="npz", path=tmp_path / "bad.npz"), seed=0)


def test_imagefolder_reads_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ["cat", "dog"]:
        (tmp_path / cls).mkdir()
        for i in range(12):
            img = Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8))
            img.save(tmp_path / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    d = load_dataset(DatasetSpec(name="imagefolder", path=tmp_path, image_size=8), seed=0)
    assert d.classes == ("cat", "dog") and d.input_shape == (3, 8, 8)
    assert len(d.y_train) + len(d.y_val) == 24
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="'empty' has no images"):
        load_dataset(DatasetSpec(name="imagefolder", path=tmp_path), seed=0)


def _write_cifar_batch(path, n, rng):
    batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for i in (1, 2):
        _write_cifar_batch(tmp_path / f"data_batch_{i}", 50, rng)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    d = load_dataset(DatasetSpec(name="cifar10", path=tmp_path), seed=0)
    assert d.input_shape == (3, 32, 32) and len(d.y_train) + len(d.y_val) == 100
    assert d.classes[3] == "c3"


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_reader_refuses_code_in_pickles(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        load_dataset(DatasetSpec(name="cifar10", path=tmp_path), seed=0)


def test_a_single_class_is_refused(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.zeros((30, 8, 8), np.uint8), y=np.zeros(30, np.int64))
    with pytest.raises(DatasetError, match="at least 2 are needed"):
        load_dataset(DatasetSpec(name="npz", path=tmp_path / "one.npz"), seed=0)


def test_the_imagefolder_example_reads_a_folder_of_class_folders(tmp_path):
    """examples/imagefolder.yaml, copied next to three class folders of mixed-size images, as
    its comments tell a user to: the spec validates and the dataset loads at its image_size."""
    import shutil

    import yaml

    from hwsearch.search.spec import load_spec
    from tests.conftest import REPO

    shutil.copy(REPO / "examples" / "imagefolder.yaml", tmp_path / "imagefolder.yaml")
    rng = np.random.default_rng(0)
    for cls in ("bird", "cat", "dog"):
        (tmp_path / "my-images" / cls).mkdir(parents=True)
        for i in range(10):
            side = int(rng.integers(20, 60))
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                tmp_path / "my-images" / cls / f"{i}.png")
    spec = load_spec(tmp_path / "imagefolder.yaml")
    data = load_dataset(spec.dataset, spec.data_seed)
    assert data.classes == ("bird", "cat", "dog") and data.input_shape == (3, 32, 32)
    assert len(data.y_train) + len(data.y_val) == 30 and sorted(set(data.y_val.tolist())) == [0, 1, 2]
    assert yaml.safe_load((REPO / "examples" / "imagefolder.yaml").read_text())["dataset"]["path"] == "my-images"
