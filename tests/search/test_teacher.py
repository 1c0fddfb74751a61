import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwsearch.search.spec import parse_spec
from hwsearch.search.training._datasets import load_dataset
from hwsearch.search.training._teacher import TeacherError, teacher_candidate, teacher_logits
from tests.conftest import tiny_spec


def linear_onnx(path, in_shape=(1, 8, 8), classes=10, seed=0):
    """A teacher from 'another framework': Flatten -> Gemm, written directly as ONNX."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, (int(np.prod(in_shape)), classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "teacher", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return w


def test_onnx_teacher_logits_come_from_onnxruntime_on_unnormalised_images(tmp_path):
    w = linear_onnx(tmp_path / "t.onnx")
    spec = parse_spec(tiny_spec(teacher={"onnx": str(tmp_path / "t.onnx")}))
    data = load_dataset(spec.dataset, 0)
    logits, meta = teacher_logits(spec, data, tmp_path / "run", log=lambda m: None)
    assert meta["kind"] == "onnx" and logits.shape == (len(data.x_train), 10)
    raw = data.x_train * np.asarray(data.std)[None, :, None, None] + np.asarray(data.mean)[None, :, None, None]
    np.testing.assert_allclose(logits, raw.reshape(len(raw), -1) @ w, rtol=1e-4, atol=1e-4)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5  # the teacher sees images in [0, 1]


def test_onnx_teacher_with_the_wrong_classes_or_input_is_refused(tmp_path):
    data = load_dataset(parse_spec(tiny_spec()).dataset, 0)
    linear_onnx(tmp_path / "five.onnx", classes=5)
    spec = parse_spec(tiny_spec(teacher={"onnx": str(tmp_path / "five.onnx")}))
    with pytest.raises(TeacherError, match=r"expected \(10,\) logits"):
        teacher_logits(spec, data, tmp_path / "a", log=lambda m: None)
    linear_onnx(tmp_path / "rgb.onnx", in_shape=(3, 8, 8))
    spec = parse_spec(tiny_spec(teacher={"onnx": str(tmp_path / "rgb.onnx")}))
    with pytest.raises(TeacherError, match="does not match the dataset"):
        teacher_logits(spec, data, tmp_path / "b", log=lambda m: None)


def test_trained_teacher_is_the_widest_network_and_is_cached(tmp_path):
    spec = parse_spec(tiny_spec())
    cand = teacher_candidate(spec.space)
    assert [s.width for s in cand.stages] == [12, 16] and all(s.expand == 3 for s in cand.stages)
    data = load_dataset(spec.dataset, 0)
    logits, meta = teacher_logits(spec, data, tmp_path, log=lambda m: None)
    assert meta["kind"] == "trained" and (tmp_path / "teacher" / "teacher.pt").exists()
    again, _ = teacher_logits(spec, data, tmp_path, log=lambda m: (_ for _ in ()).throw(AssertionError(m)))
    np.testing.assert_array_equal(logits, again)  # loaded from the cache, not retrained
