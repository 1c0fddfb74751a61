"""Where a layer's tensors change layout, and what two neighbours in one network save on it.

onnxruntime runs a CPU network's fp32 convolutions in a blocked layout (NCHWc, its
``ReorderInput`` and ``ReorderOutput`` at the edges) and its int8 ones in NHWC (``Transpose``
at the edges). A layer timed alone converts its input and its output every time; inside a
network, two neighbours that work in the same layout hand the tensor over as it is, and both
conversions go. Which layers do depends on the host (the NCHWc block is 8 channels with AVX2, 16
with AVX-512) and on the runtime's version, so it is read off the graph onnxruntime optimises
when the layer is measured (:func:`layer_layout`), stored with the layer's entry, and a network's
savings follow from its layers' entries by :func:`boundary_terms`, without the runtime.

The rule, checked against the conversions onnxruntime leaves in whole networks (AMD EPYC host,
onnxruntime 1.32.0, random networks of ``sample_plans(..., spread=True)``): 197 of 200 networks of
the quickstart space (1x8x8), 149 of 150 of the default space (3x32x32), 60 of 60 at 3x96x96
give exactly the count the rule predicts (the rest are off by one conversion).

- A layer leaves its tensor in its output layout (``out``), except a residual block, whose add
  runs where its input is: its output is in ``out`` only when its input was available in that
  layout (the layer before produced it so, even if it also converted it).
- When the tensor leaves in the layout the next layer's first kernel takes (``in``), neither
  converts: two conversions of that tensor saved.
- An int8 head pools whatever it is given (``pool``): an NHWC tensor is pooled as it is and
  transposed after, on one value per channel: one conversion of the big tensor saved.

One more difference between a layer alone and in a network: an fp32 layer whose graph is the
network's output keeps its hard-swish as two operators (``HardSigmoid``, ``Mul``), which a
network fuses into the convolution (``split_act``: the stem's hard-swish, on every host seen).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from hwsearch.spaces._plan import BlockPlan, Layer
from hwsearch.targets._cost import precision_of

if TYPE_CHECKING:
    import onnx

LayoutName = Literal["nchwc", "nhwc", "pool"]

_CONVERSIONS: dict[str, LayoutName] = {"ReorderInput": "nchwc", "ReorderOutput": "nchwc", "Transpose": "nhwc"}
_POOLS_ANY = {"QLinearGlobalAveragePool"}  # pools any layout: onnxruntime transposes after it
_PASS_IN = {"QuantizeLinear", "DequantizeLinear"}  # between a graph's input and its first kernel
_PASS_OUT = {"QuantizeLinear", "DequantizeLinear", "Add", "QLinearAdd", "Sum", "Mul", "QLinearMul", "HardSigmoid",
             "Relu", "Clip", "Identity"}  # between a layer's last kernel and its output
_SPLIT = "HardSigmoid"  # an fp32 graph alone keeps it as an operator; a network fuses it

LAYOUT_FEATURES = ("nchwc_kept", "nchwc_kept_kelems", "nhwc_kept", "nhwc_kept_kelems", "split_act",
                   "split_act_kelems")


class Layout(NamedTuple):
    """A layer's layouts at its edges as onnxruntime runs it alone: the layout its first kernel
    takes its input in (``in_``), and its last kernel gives its output in (``out``), None where
    it is the graph's own (NCHW); ``split_act``: its operators a network fuses (see the module)."""

    in_: LayoutName | None = None
    out: LayoutName | None = None
    split_act: int = 0


def graph_layout(model: onnx.ModelProto, fp32: bool) -> Layout:
    """The :class:`Layout` of a layer's graph as onnxruntime optimised it (one input, one output)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def forward(t: str, depth: int = 0) -> LayoutName | None:
        for n in consumers.get(t, []):
            if n.op_type in _CONVERSIONS:
                return _CONVERSIONS[n.op_type]
            if n.op_type in _POOLS_ANY:
                return "pool"
            if n.op_type in _PASS_IN and depth < 3 and (found := forward(n.output[0], depth + 1)):
                return found
        return None

    def backward(t: str, depth: int = 0) -> LayoutName | None:
        n = producer.get(t)
        if n is None:
            return None
        if n.op_type in _CONVERSIONS:
            return _CONVERSIONS[n.op_type]
        if n.op_type in _PASS_OUT and depth < 4:
            for i in n.input:
                if found := backward(i, depth + 1):
                    return found
        return None

    split = sum(n.op_type == _SPLIT for n in g.node) if fp32 else 0
    return Layout(forward(g.input[0].name), backward(g.output[0].name), split)


def optimized(model_bytes: bytes) -> onnx.ModelProto:
    """The graph onnxruntime runs for these bytes (after its graph optimisations), on this host."""
    import onnx

    from hwsearch.targets._meter import session

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "optimized.onnx")
        session(model_bytes, optimized_path=path)
        return onnx.load(path)


def layer_layout(layer: Layer, model: onnx.ModelProto) -> Layout:
    """The :class:`Layout` of a layer's graph alone (``layer_model``) on this host's onnxruntime
    (a few milliseconds: the graph is optimised, not run)."""
    fp32 = precision_of(layer.w_bits, layer.a_bits) == "fp32"
    return graph_layout(optimized(model.SerializeToString()), fp32)


def conversions(model: onnx.ModelProto) -> int:
    """Layout conversions in an optimised graph (what :func:`boundary_terms` predicts the savings of)."""
    return sum(n.op_type in _CONVERSIONS for n in model.graph.node)


def _out_kelems(layer: Layer) -> float:
    return math.prod(layer.out_shape) / 1000


def boundary_terms(layers: Sequence[Layer], layouts: Sequence[Layout | None]) -> list[dict[str, float]]:
    """Per layer, the :data:`LAYOUT_FEATURES` a network adds for it: the conversions saved at its
    input edge (counted, and weighted by the thousands of values converted) and its own fused
    operators. A layer whose layout is not known (None: a profile of another kind) adds none and
    breaks the chain."""
    out: list[dict[str, float]] = [{} for _ in layers]
    available: LayoutName | None = None  # the layout the tensor entering layer i was produced in
    for i, (layer, lay) in enumerate(zip(layers, layouts)):
        if lay is not None and lay.split_act:
            out[i]["split_act"] = float(lay.split_act)
            out[i]["split_act_kelems"] = lay.split_act * _out_kelems(layer)
        if i + 1 == len(layers):
            break
        nxt = layouts[i + 1]
        residual = isinstance(layer, BlockPlan) and layer.residual
        leaving = lay.out if lay is not None and lay.out and (not residual or available == lay.out) else None
        if leaving and nxt is not None:
            kelems, group = _out_kelems(layer), f"{leaving}_kept"
            if nxt.in_ == leaving:
                out[i + 1][group] = 2.0
                out[i + 1][f"{group}_kelems"] = 2 * kelems
            elif nxt.in_ == "pool" and leaving == "nhwc":
                out[i + 1][group] = 1.0
                out[i + 1][f"{group}_kelems"] = kelems
        available = leaving
    return out


def kept_conversions(layers: Sequence[Layer], layouts: Sequence[Layout | None]) -> int:
    """Conversions a network runs fewer than its layers alone, by :func:`boundary_terms`' rule (an int8
    head's pool moves its conversion, it does not save one)."""
    total = 0
    for layer, terms in zip(layers, boundary_terms(layers, layouts)):
        pooled = terms.get("nhwc_kept", 0) == 1 and layer.kind == "head"
        total += 0 if pooled else int(terms.get("nchwc_kept", 0) + terms.get("nhwc_kept", 0))
    return total
