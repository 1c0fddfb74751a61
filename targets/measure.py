"""Time ONNX graphs with onnxruntime: warm-up, many repeats, median, fixed thread count."""

from __future__ import annotations

import time

import numpy as np

from targets.cost import Latency

DEFAULT_PROVIDER = "CPUExecutionProvider"


def session(model_bytes: bytes, threads: int = 1, provider: str = DEFAULT_PROVIDER,
            optimized_path: str | None = None):
    """An inference session with a fixed thread count and full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model_bytes, opts, providers=[provider])


def time_session(sess, feed: dict[str, np.ndarray], warmup: int = 10, repeats: int = 50,
                 min_seconds: float = 0.03, max_repeats: int = 5000) -> Latency:
    """Median of per-run wall times, after ``warmup`` runs; runs at least ``repeats`` times and
    at least ``min_seconds``. ``std_ms`` is the spread of the middle half (IQR / 1.349)."""
    run = sess.run
    for _ in range(warmup):
        run(None, feed)
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < max_repeats):
        t0 = time.perf_counter_ns()
        run(None, feed)
        times.append(time.perf_counter_ns() - t0)
    ms = np.asarray(times, dtype=np.float64) / 1e6
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return Latency(float(med), float((q3 - q1) / 1.349), len(ms))


def time_model(model, input_shape: tuple, threads: int = 1, provider: str = DEFAULT_PROVIDER,
               **kwargs) -> Latency:
    """Time a model (``onnx.ModelProto`` or serialized bytes) on a random input of ``input_shape``."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = session(data, threads, provider)
    inp = sess.get_inputs()[0]
    rng = np.random.default_rng(0)
    if inp.type == "tensor(uint8)":
        x = rng.integers(0, 256, input_shape, dtype=np.uint8)
    else:
        x = rng.standard_normal(input_shape).astype(np.float32)
    return time_session(sess, {inp.name: x}, **kwargs)
