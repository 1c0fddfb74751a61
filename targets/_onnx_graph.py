"""Emit runnable ONNX graphs for the layers of a :class:`~hwsearch.spaces._plan.NetworkPlan`.

One emitter serves block profiling (random weights), whole-network measurement and export
(trained weights). Each layer runs at a *precision* decided by its bit widths and the runtime:

- ``fp32``: float convolutions. Weights below 32 bits are stored on their low-bit grid but run in
  float, which is what a CPU runtime does with weight-only quantization;
- ``int8``: QDQ format, the form onnxruntime fuses into integer kernels (QLinearConv ...):
  per-channel symmetric int8 weights, per-tensor uint8 activations, int32 biases. Bit widths below
  8 are held on their grid inside int8 (no 4-bit kernels exist on CPU: measured, not assumed).

Batch norm is already folded: every convolution has a bias. Graphs use opset 17.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwsearch.spaces._plan import BlockPlan, FusedBlockPlan, HeadPlan, Layer, NetworkPlan, StemPlan
from hwsearch.targets._cost import precision_of

OPSET = 17
# Activations are uint8 (weights int8): the U8S8 form x86 kernels run (onnxruntime converts S8S8
# QDQ to it anyway). A ReLU output's range starts at 0, so its zero point is 0; others sit at 128.
ZERO_AFTER_RELU, ZERO_SIGNED = 0, 128

Shape = Sequence[int | str]  # a tensor's dimensions; a name ("N") for a dynamic one
TensorSpec = tuple[str, Shape] | tuple[str, Shape, int]  # name, shape[, TensorProto element type]
AttrValue = int | float | str | Sequence[int] | Sequence[float]  # an ONNX node attribute


class _ConvAttrs(TypedDict):
    kernel_shape: list[int]
    strides: list[int]
    pads: list[int]
    group: int


@dataclass
class ConvWeights:
    weight: npt.NDArray[np.float32]  # (out, in/groups, k, k), already on its bit grid if quantized
    bias: npt.NDArray[np.float32]  # (out,)
    in_scale: float = 0.05  # per-tensor activation scale of the input (int8 only)
    in_zero: int | None = None  # uint8 zero point; None: ZERO_AFTER_RELU after a ReLU, else ZERO_SIGNED
    out_scale: float = 0.05  # per-tensor scale of the output, after the activation (int8 only)
    bits: int = 32  # the grid ``weight`` is on: per-channel symmetric, ``2^(bits-1) - 1`` steps a side
    # (out,): each channel's grid step, ``weight`` being integer multiples of it (learned steps);
    # None: the max-abs step ``max|w| / (2^(bits-1) - 1)``
    step: npt.NDArray[np.float32] | None = None


def grid_step(cw: ConvWeights) -> npt.NDArray[np.float32]:
    """The step of each output channel's grid of ``cw.weight`` (``cw.bits < 32``): the one given,
    else max-abs's."""
    if cw.step is not None:
        return cw.step.astype(np.float32)
    qmax = 2 ** (cw.bits - 1) - 1
    step: npt.NDArray[np.float32] = (np.abs(cw.weight).reshape(len(cw.weight), -1).max(axis=1).clip(1e-8)
                                     / qmax).astype(np.float32)
    return step


@dataclass
class LayerWeights:
    """A layer's parameters by role: 'conv' (stem), 'expand', 'dw', 'fused' (a fused block's dense
    kxk), 'se_reduce', 'se_expand', 'project', 'fc' (head), plus the output activation scale for int8 graphs."""

    convs: dict[str, ConvWeights] = field(default_factory=dict)
    out_scale: float = 0.05
    out_zero: int | None = None


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._after_relu: set[str] = set()
        self._quantized: dict[str, str] = {}  # DequantizeLinear output -> its QuantizeLinear output
        self.weight_grids: dict[str, int] = {}  # float weight initializer -> the bit grid it is on
        self.weight_steps: dict[str, list[float]] = {}  # float weight initializer -> its grid's step per channel

    def dequantized(self, x_q: str, scale: float, zero: int) -> str:
        """A graph input already in int8 (as between layers of an int8 network), dequantized."""
        s = self.const(np.array(scale, np.float32), "s")
        z = self.const(np.array(zero, np.uint8), "z")
        y = self.node("DequantizeLinear", [x_q, s, z])
        self._quantized[y] = x_q
        return y

    def quantized_source(self, x: str) -> str | None:
        """The int8 tensor that ``x`` was dequantized from, if any."""
        return self._quantized.get(x)

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, array: np.ndarray, stem: str = "c") -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def node(self, op: str, inputs: list[str], stem: str | None = None, **attrs: AttrValue) -> str:
        out = self.name(stem or op.lower())
        attributes: dict[str, Any] = attrs  # make_node takes them as **kwargs: Any, beside its own keywords
        self.nodes.append(helper.make_node(op, inputs, [out], **attributes))
        return out

    def qdq(self, x: str, scale: float, zero: int | None) -> str:
        """Quantize to int8 and back: marks ``x`` as an int8 tensor for the runtime.

        A ReLU output's calibrated zero point is 0 (its range starts at 0); with it,
        onnxruntime drops the ReLU into the integer kernel. ``zero=None`` applies that rule.
        A tensor is quantized once: ``x`` already dequantized from int8 is returned as it is.
        """
        if x in self._quantized:
            return x
        if zero is None:
            zero = ZERO_AFTER_RELU if x in self._after_relu else ZERO_SIGNED
        s = self.const(np.array(scale, np.float32), "s")
        z = self.const(np.array(zero, np.uint8), "z")
        q = self.node("QuantizeLinear", [x, s, z])
        y = self.node("DequantizeLinear", [q, s, z])
        self._quantized[y] = q
        return y

    def conv(self, x: str, cw: ConvWeights, precision: str, stride: int = 1, groups: int = 1) -> str:
        k = cw.weight.shape[-1]
        attrs = _ConvAttrs(kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups)
        if precision == "fp32":
            w, b = self.const(cw.weight.astype(np.float32), "w"), self.const(cw.bias.astype(np.float32), "b")
            if cw.bits < 32:
                self.weight_grids[w] = cw.bits
                self.weight_steps[w] = [float(s) for s in grid_step(cw)]
            return self.node("Conv", [x, w, b], **attrs)
        x = self.qdq(x, cw.in_scale, cw.in_zero)
        w_scale = np.abs(cw.weight).reshape(len(cw.weight), -1).max(axis=1).clip(1e-8) / 127.0
        w_q = np.clip(np.round(cw.weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
        b_scale = (w_scale * cw.in_scale).astype(np.float32)
        b_q = np.round(cw.bias / b_scale).astype(np.int32)
        zeros8, zeros32 = np.zeros(len(w_scale), np.int8), np.zeros(len(w_scale), np.int32)
        w = self.node("DequantizeLinear", [self.const(w_q, "wq"), self.const(w_scale.astype(np.float32), "ws"),
                                           self.const(zeros8, "wz")], axis=0)
        b = self.node("DequantizeLinear", [self.const(b_q, "bq"), self.const(b_scale, "bs"),
                                           self.const(zeros32, "bz")], axis=0)
        return self.node("Conv", [x, w, b], **attrs)

    def conv_act(self, x: str, cw: ConvWeights, precision: str, act: str | None, stride: int = 1,
                 groups: int = 1) -> str:
        """A convolution and its activation, laid out as onnxruntime's QDQ quantizer lays them out
        in int8: the output quantized once, a ReLU folded into that quantization (zero point
        0 clamps at zero), any other activation run between two quantized tensors."""
        y = self.conv(x, cw, precision, stride, groups)
        if precision == "fp32":
            return self.act(y, act)
        if act == "relu":
            return self.qdq(y, cw.out_scale, ZERO_AFTER_RELU)
        y = self.qdq(y, cw.out_scale, ZERO_SIGNED)
        return self.qdq(self.act(y, act), cw.out_scale, ZERO_SIGNED) if act else y

    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        y = self.node({"relu": "Relu", "hswish": "HardSwish"}[kind], [x])
        if kind == "relu":
            self._after_relu.add(y)
        return y

    def model(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> onnx.ModelProto:
        """Inputs and outputs as ``(name, shape)`` (float) or ``(name, shape, TensorProto type)``."""
        def info(n: str, s: Shape, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(n, dtype, list(s))

        # Drop nodes nothing reads (a quantized output's unused dequantize): the runtime keeps them.
        needed, nodes = {o[0] for o in outputs}, []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.output):
                nodes.append(n)
                needed.update(n.input)
        nodes.reverse()
        graph = helper.make_graph(nodes, "hwsearch", [info(*i) for i in inputs],
                                  [info(*o) for o in outputs], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="hwsearch")
        model.ir_version = 8
        return model


def _out_qdq(g: GraphBuilder, y: str, lw: LayerWeights, precision: str) -> str:
    return g.qdq(y, lw.out_scale, lw.out_zero) if precision == "int8" else y


@singledispatch
def emit_layer(layer: Layer, g: GraphBuilder, x: str, lw: LayerWeights) -> str:
    """Emit a layer into ``g`` after tensor ``x`` with the weights ``lw``; returns its output
    tensor's name (one emitter per layer kind)."""
    raise TypeError(f"no ONNX emitter for a {type(layer).__name__}: register one with emit_layer.register")


@emit_layer.register
def _emit_stem(layer: StemPlan, g: GraphBuilder, x: str, lw: LayerWeights) -> str:
    p = precision_of(layer.w_bits, layer.a_bits)
    return g.conv_act(x, lw.convs["conv"], p, layer.act, layer.stride)


@emit_layer.register(FusedBlockPlan)  # the same rule, branching on ``fused``
@emit_layer.register
def _emit_block(layer: BlockPlan, g: GraphBuilder, x: str, lw: LayerWeights) -> str:
    p = precision_of(layer.w_bits, layer.a_bits)
    y = x
    if layer.fused:
        y = g.conv_act(y, lw.convs["fused"], p, layer.act, layer.stride)
    else:
        if layer.has_expand:
            y = g.conv_act(y, lw.convs["expand"], p, layer.act)
        y = g.conv_act(y, lw.convs["dw"], p, layer.act, layer.stride, groups=layer.cmid)
    if layer.se:
        s = _out_qdq(g, g.node("GlobalAveragePool", [y]), lw, p)
        s = g.conv_act(s, lw.convs["se_reduce"], p, "relu")
        s = g.conv_act(s, lw.convs["se_expand"], p, None)
        s = _out_qdq(g, g.node("HardSigmoid", [s], alpha=1.0 / 6, beta=0.5), lw, p)
        y = _out_qdq(g, g.node("Mul", [y, s]), lw, p)
    y = g.conv_act(y, lw.convs["project"], p, None)
    if layer.residual:
        y = _out_qdq(g, g.node("Add", [x, y]), lw, p)
    return y


@emit_layer.register
def _emit_head(layer: HeadPlan, g: GraphBuilder, x: str, lw: LayerWeights) -> str:
    p = precision_of(layer.w_bits, layer.a_bits)
    y = g.node("GlobalAveragePool", [x])
    y = g.conv(y, lw.convs["fc"], p)  # a 1x1 convolution on the pooled map is the linear layer
    return g.node("Flatten", [y], axis=1)


@singledispatch
def _kind_int8_io(layer: Layer) -> tuple[bool, bool]:
    """Whether a layer of this kind, inside an int8 network, takes and gives int8 tensors (when
    it runs in int8 itself). The stem quantizes the float image itself; the head gives float
    logits; blocks pass int8 tensors on."""
    raise TypeError(f"no int8 boundary rule for a {type(layer).__name__}: register one with _kind_int8_io.register")


@_kind_int8_io.register
def _stem_int8_io(layer: StemPlan) -> tuple[bool, bool]:
    return False, True


@_kind_int8_io.register(FusedBlockPlan)  # the same rule, branching on ``fused``
@_kind_int8_io.register
def _block_int8_io(layer: BlockPlan) -> tuple[bool, bool]:
    return True, True


@_kind_int8_io.register
def _head_int8_io(layer: HeadPlan) -> tuple[bool, bool]:
    return True, False


def layer_shapes(layer: Layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Input and output shapes (batch 1) of a layer."""
    return (1, *layer.in_shape), (1, *layer.out_shape)


def random_weights(layer: Layer, rng: np.random.Generator) -> LayerWeights:
    """Weights of the right shapes for timing: values do not change a dense kernel's speed."""
    return LayerWeights({role: ConvWeights(rng.normal(0, 0.1, shape).astype(np.float32),
                                           rng.normal(0, 0.1, shape[0]).astype(np.float32))
                         for role, (shape, _) in layer.convs.items()})


def _int8_io(layer: Layer) -> tuple[bool, bool]:
    """Whether a layer, inside an int8 network, takes and gives int8 tensors: never when it runs
    in fp32 itself, else as its kind says."""
    if precision_of(layer.w_bits, layer.a_bits) != "int8":
        return False, False
    return _kind_int8_io(layer)


def layer_model(layer: Layer, weights: LayerWeights | Sequence[LayerWeights]) -> onnx.ModelProto:
    """A graph holding one layer alone, batch 1, for timing; given several weights, that many
    copies of the layer side by side, each reading the same input and giving its own output (run
    one after another: the session is sequential), so that the copies after the first run as a
    layer inside a network does, the runtime already started.

    An int8 layer takes and gives int8 tensors, as it does inside an int8 network, so its time
    holds no quantize or dequantize steps that the network would not run.
    """
    copies = [weights] if isinstance(weights, LayerWeights) else list(weights)
    g = GraphBuilder()
    in_shape, out_shape = layer_shapes(layer)
    int8_in, int8_out = _int8_io(layer)
    x = g.dequantized("x", 0.05, ZERO_SIGNED) if int8_in else "x"
    outputs: list[TensorSpec] = []
    for i, lw in enumerate(copies):
        y = emit_layer(layer, g, x, lw)
        out_type = TensorProto.FLOAT
        source = g.quantized_source(y) if int8_out else None
        if source:
            y, out_type = source, TensorProto.UINT8
        outputs.append((g.node("Identity", [y], "y" if i == 0 else f"y{i}"), out_shape, out_type))
    return g.model([("x", in_shape, TensorProto.UINT8 if int8_in else TensorProto.FLOAT)], outputs)


WEIGHT_GRIDS = "hwsearch.weight_grids"  # metadata key: JSON {float weight initializer: bits}
WEIGHT_STEPS = "hwsearch.weight_steps"  # metadata key: JSON {float weight initializer: [step per channel]}


def network_model(plan: NetworkPlan, weights: list[LayerWeights], batch: int | str = 1) -> onnx.ModelProto:
    """The whole network of a :class:`~hwsearch.spaces._plan.NetworkPlan`, normalised float image
    (N, C, H, W) in, logits out. ``batch`` may be a name (``"N"``) for a dynamic batch size.
    Float weights held on a low-bit grid are listed in the metadata under :data:`WEIGHT_GRIDS`,
    their grids' steps per channel under :data:`WEIGHT_STEPS` (float32 values, exact in JSON)."""
    import json

    g = GraphBuilder()
    x = "image"
    for layer, lw in zip(plan.layers, weights):
        x = emit_layer(layer, g, x, lw)
    y = g.node("Identity", [x], "logits")
    model = g.model([("image", (batch, *plan.input_shape))], [(y, (batch, plan.num_classes))])
    if g.weight_grids:
        helper.set_model_props(model, {WEIGHT_GRIDS: json.dumps(g.weight_grids),
                                       WEIGHT_STEPS: json.dumps(g.weight_steps)})
    return model


def input_adapter_model(input_shape: tuple[int, int, int], scale: float, mean: tuple[float, ...],
                        std: tuple[float, ...], dtype: int = TensorProto.UINT8, batch: int | str = "N",
                        opset: int = OPSET, ir_version: int = 8) -> onnx.ModelProto:
    """Raw pixels in, the network's input out: ``pixels`` (N, H, W, C) of ``dtype`` becomes
    ``image`` (N, C, H, W) float, ``(pixels * scale - mean) / std`` per channel, as a 1x1
    convolution with a diagonal weight (``scale / std``) and a bias (``-mean / std``). Put in front
    of :func:`network_model` with ``onnx.compose.merge_models``.

    Not a Mul and an Add: in an int8 file onnxruntime moves the Transpose past them, to cancel it
    against the NHWC layout of its first ``QLinearConv``, and a per-channel Mul or Add over an NHWC
    tensor broadcasts along an innermost axis of C (3) elements, which it runs element by element:
    on CIFAR-10 (3x32x32, Intel Xeon, 1 thread) the adapter added 38 us to a network of 85 us (and
    to ResNet-8's), the convolution 8.5 us; same outputs. In an fp32 file the Mul and Add ran about
    6 us faster; one adapter serves both, and the profiles price it."""
    c, h, w = input_shape
    g = GraphBuilder()
    x = g.node("Cast", ["pixels"], "pixels_float", to=TensorProto.FLOAT)
    x = g.node("Transpose", [x], "pixels_nchw", perm=[0, 3, 1, 2])
    mean_, std_ = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    weight = np.zeros((c, c, 1, 1), np.float32)
    weight[range(c), range(c), 0, 0] = scale / std_
    w_ = g.const(weight, "pixel_scale")
    b_ = g.const((-mean_ / std_).astype(np.float32), "pixel_shift")
    g.nodes.append(helper.make_node("Conv", [x, w_, b_], ["image"]))
    model = g.model([("pixels", (batch, h, w, c), dtype)], [("image", (batch, c, h, w))])
    model.opset_import[0].version = opset
    model.ir_version = ir_version
    return model


def random_network_weights(plan: NetworkPlan, rng: np.random.Generator) -> list[LayerWeights]:
    return [random_weights(layer, rng) for layer in plan.layers]


def identity_model(shape: tuple[int, ...]) -> onnx.ModelProto:
    """The empty graph: its run time is the runtime's fixed per-call overhead."""
    g = GraphBuilder()
    y = g.node("Identity", ["x"], "y")
    return g.model([("x", shape)], [(y, shape)])
