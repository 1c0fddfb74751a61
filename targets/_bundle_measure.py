"""The device side of a bundle: time its ONNX graphs on the device, with nothing but numpy and
onnxruntime there. ``hwsearch profile --bundle`` writes this module, with the meter's source
(:mod:`hwsearch.targets._meter`) in front of it, as the bundle's stand-alone ``measure.py``: the
device measures exactly as ``hwsearch profile`` does here (against the reference network, in
interleaved rounds, spikes dropped and measured again).

What it writes is ``timings.json``: every graph's median ratio to the reference network and its
interval (and for a layer, the graph onnxruntime optimised it into here, where its tensors change
layout), and per measuring run the reference's quiet-host time. Ratios, not milliseconds: runs
on different days (a resume after a kill) keep one scale, fixed at home from all the runs' times
of the reference (``hwsearch profile --import``). The file is rewritten atomically after every
batch of graphs, so a kill loses one batch at most and the next run resumes after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# --- hwsearch imports (measure.py holds the meter's source above instead) ---
from hwsearch.targets._meter import Meter, cpu_mark, host_name, neighbours_since, session

# --- end of hwsearch imports ---

Json = dict[str, Any]  # a JSON object
BUNDLE_BATCH = 24  # graphs measured together, interleaved round by round (as hwsearch profile does)
TIMINGS = "timings.json"


# A layer's graph as onnxruntime optimises it on the device tells where its tensors change layout
# (hwsearch.targets._layouts). onnx is not there: the optimised file's protobuf is read directly, the
# few fields needed (ONNX's onnx.proto): ModelProto.graph 7; GraphProto.node 1, .input 11, .output 12;
# NodeProto.input 1, .output 2, .op_type 4; ValueInfoProto.name 1.
def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: memoryview) -> list[tuple[int, Any]]:
    """A protobuf message's fields, in order: (number, value), a length-delimited value as a memoryview
    (another message, a string or packed numbers), a fixed-width one as None (not needed here)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        value: Any = None
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire} (groups) in an ONNX file")
        out.append((key >> 3, value))
    return out


def graph_of(model: bytes) -> Json:
    """An ONNX model's graph, as much of it as layouts need: the names of its inputs and outputs, and
    its nodes as ``[op_type, inputs, outputs]``, in order."""
    def text(v: memoryview) -> str:
        return bytes(v).decode()

    graph: Json = {"inputs": [], "outputs": [], "nodes": []}
    for number, g in _fields(memoryview(model)):
        if number != 7:
            continue
        for field, value in _fields(g):
            if field == 1:
                node = _fields(value)
                graph["nodes"].append([next((text(v) for f, v in node if f == 4), ""),
                                       [text(v) for f, v in node if f == 1], [text(v) for f, v in node if f == 2]])
            elif field in (11, 12):
                name = next((text(v) for f, v in _fields(value) if f == 1), "")
                graph["inputs" if field == 11 else "outputs"].append(name)
    return graph


def optimized_graph(model: bytes, threads: int, provider: str) -> Json | None:
    """The graph onnxruntime runs for ``model`` here (:func:`graph_of` of the file it saves after its
    optimisations); None where the provider cannot save one (one that compiles graphs, as TensorRT)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "optimized.onnx")
        try:
            session(model, threads, provider, optimized_path=path)
            return graph_of(Path(path).read_bytes())
        except Exception:  # noqa: BLE001 (onnxruntime raises its own kinds; the layouts are then unknown)
            return None


def write_atomically(path: Path, text: str) -> None:
    """Write a file atomically: a reader (or a resumed run after a kill) never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: Path, data: Json) -> None:
    write_atomically(path, json.dumps(data))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")  # noqa: UP017 (Python 3.8+ on a device)


def _fresh_state(manifest: Json, threads: int, provider: str) -> Json:
    import onnxruntime as ort

    return {"bundle": manifest["id"], "host": host_name(), "machine": platform.machine(),
            "python": platform.python_version(), "onnxruntime": ort.__version__, "threads": threads,
            "provider": provider, "spinning": threads > 1, "sessions": [], "readings": {}, "complete": False}


def _resumable(state: Json, manifest: Json, threads: int, provider: str) -> str | None:
    """Why ``state`` cannot be resumed here (None: it can)."""
    import onnxruntime as ort

    if state.get("bundle") != manifest["id"]:
        return "it belongs to another bundle"
    here = {"host": host_name(), "onnxruntime": ort.__version__, "threads": threads, "provider": provider}
    for field, value in here.items():
        if state.get(field) != value:
            return f"it was measured with {field} {state.get(field)!r}, this run has {value!r}"
    if threads > 1 and not state.get("spinning"):
        return "it was measured with the workers stopped after every run (an older measure.py)"
    return None


def measure_bundle(bundle: Path, out: Path | None = None, threads: int | None = None, provider: str | None = None,
                   log: Callable[[str], None] = print) -> Path:
    """Measure every graph of the bundle not measured yet into ``out`` (default: the bundle's
    ``timings.json``), resuming what a previous run left. Returns ``out``."""
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    out = out or bundle / TIMINGS
    threads = threads or manifest["threads"]
    provider = provider or manifest["provider"]
    if provider not in ort.get_available_providers():
        raise SystemExit(f"error: provider {provider} is not available in this onnxruntime ({ort.__version__}); "
                         f"available: {', '.join(ort.get_available_providers())}")
    state = json.loads(out.read_text()) if out.exists() else None
    if state is not None and (why := _resumable(state, manifest, threads, provider)):
        raise SystemExit(f"error: {out} cannot be resumed here: {why}; move it away to measure from the start")
    state = state or _fresh_state(manifest, threads, provider)
    graphs = manifest["graphs"]
    todo = [g for g in graphs if g["id"] not in state["readings"]]
    log(f"measuring {len(todo)} of {len(graphs)} graphs on {state['host']} (onnxruntime {state['onnxruntime']}, "
        f"{provider}, {threads} thread(s))" + (f"; {len(graphs) - len(todo)} measured before" if state["readings"]
                                               else ""))
    if not todo:
        state["complete"] = True
        save_json(out, state)
        return out
    m = Meter(threads, provider, reference_onnx=(bundle / manifest["reference"]["file"]).read_bytes())
    mark = cpu_mark()  # what other processes take of the device's CPUs meanwhile (Linux)
    run = {"started": _now(), "reference_quiet_ms": m.reference_here_ms(), "bursts": len(m.ref_bursts),
           "noise": m.host()["noise"]}
    state["sessions"].append(run)
    index = len(state["sessions"]) - 1
    t0, done = time.monotonic(), 0
    for i in range(0, len(todo), BUNDLE_BATCH):
        batch = todo[i:i + BUNDLE_BATCH]
        readings = m.measure_readings([(bundle / g["file"]).read_bytes() for g in batch],
                                      [g["input_shape"] for g in batch])
        for g, r in zip(batch, readings):
            state["readings"][g["id"]] = {"ratio": r.ratio, "sem": r.sem, "rounds": r.rounds, "rejected": r.rejected,
                                          "runs": r.runs, "session": index}
            if g["kind"] == "layer":  # optimised, not run: a few milliseconds
                state["readings"][g["id"]]["graph"] = optimized_graph((bundle / g["file"]).read_bytes(), threads,
                                                                      provider)
        host = m.host()
        run.update(reference_quiet_ms=m.reference_here_ms(), bursts=int(host["bursts"]), noise=host["noise"],
                   **neighbours_since(mark))
        save_json(out, state)
        done += len(batch)
        spent = time.monotonic() - t0
        left = spent / done * (len(todo) - done)
        log(f"  [{len(graphs) - len(todo) + done}/{len(graphs)}] {batch[-1]['kind']} graphs; "
            f"{spent:.0f}s spent, about {left:.0f}s left")
    state["complete"] = True
    save_json(out, state)
    log(f"wrote {out}: every graph measured; bring it home and run: hwsearch profile --import {out} --out DEVICE.json")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(
        "Measure this bundle's ONNX graphs on this device (needs only numpy and onnxruntime). Resumes where a "
        "previous run stopped; writes timings.json atomically after every batch."))
    p.add_argument("--bundle", default=str(Path(sys.argv[0]).resolve().parent),
                   help="the bundle folder (default: this script's folder)")
    p.add_argument("--out", help="the timings file (default: BUNDLE/timings.json)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: the bundle's)")
    p.add_argument("--provider", help="execution provider (default: the bundle's), e.g. CUDAExecutionProvider")
    args = p.parse_args(argv)
    measure_bundle(Path(args.bundle), Path(args.out) if args.out else None, args.threads, args.provider,
                   log=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
