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


def real_world_onnx(path, w, side=8):
    """A teacher as real ONNX files come (MLPerf Tiny's ResNet-8, converted from TFLite): NHWC
    images of raw 0..255 pixels, softmax probabilities out, the batch fixed at 1 in the graph."""
    graph = helper.make_graph(
        [helper.make_node("Div", ["x", "k"], ["s"]), helper.make_node("Flatten", ["s"], ["f"], axis=1),
         helper.make_node("MatMul", ["f", "w"], ["l"]), helper.make_node("Softmax", ["l"], ["y"], axis=1)],
        "teacher", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side, side, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w.shape[1]])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(255.0, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_an_onnx_teacher_in_nhwc_of_raw_pixels_giving_probabilities_at_batch_1_is_read_by_its_conventions(tmp_path):
    from hwsearch.search.training._teacher import check_teacher

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (230, 8, 8, 3), dtype=np.uint8)  # NHWC, as the teacher takes them
    w = rng.normal(0, 1, (8 * 8 * 3, 4)).astype(np.float32)
    y = ((x.reshape(len(x), -1) / 255.0) @ w).argmax(1)  # labels the teacher gets exactly right
    np.savez(tmp_path / "d.npz", x=x, y=y)
    real_world_onnx(tmp_path / "t.onnx", w)
    conventions = {"onnx": str(tmp_path / "t.onnx"), "layout": "NHWC", "pixel_max": 255, "output": "probabilities"}
    spec = parse_spec(tiny_spec(dataset={"name": "npz", "path": str(tmp_path / "d.npz"), "limit": None},
                                teacher=conventions))
    data = load_dataset(spec.dataset, 0)
    assert check_teacher(spec.teacher, data) == 1.0  # validate's figure: the conventions were applied
    logits, meta = teacher_logits(spec, data, tmp_path / "run", log=lambda m: None)
    raw = (data.x_train * np.asarray(data.std)[None, :, None, None]
           + np.asarray(data.mean)[None, :, None, None]).transpose(0, 2, 3, 1) * 255
    expected = raw.reshape(len(raw), -1) / 255 @ w
    expected = expected - np.log(np.exp(expected - expected.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - expected.max(1, keepdims=True)
    expected = np.maximum(expected, np.log(1e-12))  # probabilities are clipped at 1e-12 before the log
    np.testing.assert_allclose(logits, expected, atol=2e-3)  # log-probabilities, for all 184 images
    assert meta["conventions"]["layout"] == "NHWC" and len(logits) == len(data.x_train) == 184
    # Declared wrongly (the defaults), it is refused with the way out; and probabilities that are not
    with pytest.raises(TeacherError, match="it looks NHWC: set teacher.layout"):
        check_teacher(parse_spec(tiny_spec(teacher={"onnx": str(tmp_path / "t.onnx")})).teacher, data)
    linear_onnx(tmp_path / "logits.onnx", in_shape=(3, 8, 8), classes=4)
    with pytest.raises(TeacherError, match="set teacher.output: logits"):
        check_teacher(parse_spec(tiny_spec(teacher={"onnx": str(tmp_path / "logits.onnx"),
                                                    "output": "probabilities"})).teacher, data)
