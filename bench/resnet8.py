"""MLPerf Tiny's image-classification reference, ResNet-8, rebuilt in torch for ``reference.py``:
the network, its training by the final stage's recipe, and its ONNX graph.

The network is Keras's ``resnet_v1_eembc`` (mlcommons/tiny, ``benchmark/training/
image_classification/keras_model.py``): a 3x3 convolution of 16 filters with batch norm and ReLU,
then three stacks of one basic block each (16, 32 and 64 filters; strides 1, 2 and 2): conv3x3,
batch norm, ReLU, conv3x3, batch norm, added to the shortcut, ReLU. The first stack's shortcut is
the identity; the others' is a 1x1 convolution of stride 2 without batch norm. Then an 8x8
average pool and a dense layer of 10. Every convolution has a bias, as in Keras, so it has
:data:`KERAS_PARAMS` = 78,666 parameters with batch norm's four per channel (77,706 once batch
norm is folded into the convolutions, as deployed). Two details differ from Keras and change no
count: torch pads a stride-2 convolution symmetrically (Keras's ``same`` pads bottom and right),
and batch norm uses hwsearch's epsilon (1e-5; Keras 1e-3). Its 12,501,632 multiply-accumulates
per image are counted by :func:`macs`.

It trains as a candidate of the final stage does (``hwsearch.search.training``'s ``_epochs``,
mirrored here because that loop is built around a candidate's plan): the same
:class:`~hwsearch.search.training.TrainSettings` (epochs, batch size, learning rate, recipe:
optimiser, schedule, augmentation, label smoothing, channels-last), the same distillation loss,
dense epochs (bfloat16 autocast on CUDA), then batch norm folded and quantization-aware
fine-tuning at 8-bit weights and activations with hwsearch's own fake quantizers
(:class:`~hwsearch.spaces.network.QConv2d`: per-channel symmetric weights, per-tensor activations
at the input of every convolution and of the classifier; at 8 bits max-abs, as 8-bit candidates
are) at 0.3 times the learning rate. Nothing is pruned. Every random draw comes from one torch
generator seeded by the caller, and a checkpoint after every epoch makes it resumable.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.search.training import augment, optimizer_for, schedule_for
from hwsearch.spaces.network import QConv2d, QLinear, distillation_loss

FILTERS = (16, 32, 64)
KERAS_PARAMS = 78_666  # Keras's count, batch norm's moving statistics included
BN_EPS = 1e-5  # hwsearch's (hwsearch.spaces.network)
QAT_BITS = 8
FINETUNE_LR = 0.3  # fine-tuning's share of the peak learning rate, as for candidates


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = QConv2d(cin, cout, 3, stride, 1)
        self.bn1: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.conv2 = QConv2d(cout, cout, 3, 1, 1)
        self.bn2: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.shortcut = QConv2d(cin, cout, 1, stride, 0) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet8(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = QConv2d(in_channels, FILTERS[0], 3, 1, 1)
        self.stem_bn: nn.Module = nn.BatchNorm2d(FILTERS[0], eps=BN_EPS)
        widths = (FILTERS[0], *FILTERS)
        self.blocks = nn.Sequential(*(BasicBlock(widths[i], widths[i + 1], 1 if i == 0 else 2) for i in range(3)))
        self.classifier = QLinear(FILTERS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(F.relu(self.stem_bn(self.stem(x))))
        out: torch.Tensor = self.classifier(y.mean(dim=(2, 3)))
        return out

    def conv_bn_pairs(self) -> list[tuple[QConv2d, str, nn.Module]]:
        """Every convolution followed by batch norm, with the norm's owner attribute name."""
        pairs: list[tuple[QConv2d, str, nn.Module]] = [(self.stem, "stem_bn", self)]
        for b in self.blocks:
            assert isinstance(b, BasicBlock)
            pairs += [(b.conv1, "bn1", b), (b.conv2, "bn2", b)]
        return pairs

    def quantized_layers(self) -> list[QConv2d | QLinear]:
        return [m for m in self.modules() if isinstance(m, (QConv2d, QLinear))]


def build(generator: torch.Generator | None = None, num_classes: int = 10) -> ResNet8:
    """A fresh ResNet-8, initialised as hwsearch initialises candidates (He normal fan-out
    convolutions, a classifier of std 0.01, zero biases) from ``generator`` when given."""
    net = ResNet8(num_classes=num_classes)
    if generator is not None:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01, generator=generator)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def param_count(net: nn.Module, with_bn_statistics: bool = True) -> int:
    """Parameters as Keras counts them: with batch norm's moving mean and variance."""
    n = sum(p.numel() for p in net.parameters())
    if with_bn_statistics:
        n += sum(m.running_mean.numel() + m.running_var.numel() for m in net.modules()
                 if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None)
    return n


def weights_and_biases(net: ResNet8) -> tuple[int, int]:
    """Deployed weight and bias values (batch norm folded into one bias per output channel)."""
    layers = net.quantized_layers()
    return sum(m.weight.numel() for m in layers), sum(m.weight.shape[0] for m in layers)


def size_kb(net: ResNet8, w_bits: int) -> float:
    """Its size by hwsearch's arithmetic for candidates (``targets/_cost.py``, ``layer_size_bits``):
    weights at ``w_bits``, one 32-bit bias per output channel, KiB."""
    weights, biases = weights_and_biases(net)
    return (weights * w_bits + biases * 32) / 8 / 1024


def macs(net: ResNet8, input_shape: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Multiply-accumulates of one image, counted from every convolution's and the classifier's
    output shape in a forward pass."""
    total = 0

    def hook(m: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.weight[0].numel()  # cin / groups * kh * kw
            total += int(out[0].numel()) * k
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def fold_batchnorm(net: ResNet8) -> ResNet8:
    """Fold every batch norm into its convolution's weights and bias, in place (the deployed form)."""
    for conv, name, owner in net.conv_bn_pairs():
        bn = getattr(owner, name)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        assert bn.running_var is not None and bn.running_mean is not None
        factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias.detach() - bn.running_mean * factor
        if conv.bias is not None:
            bias = bias + conv.bias.detach() * factor
        with torch.no_grad():
            conv.weight.mul_(factor.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias.clone())
        setattr(owner, name, nn.Identity())
    return net


def enable_quantization(net: ResNet8, quantizer: str, learned_below: int) -> ResNet8:
    """Fake quantization of every layer at :data:`QAT_BITS`, as
    :func:`hwsearch.spaces.network.enable_quantization` does for a candidate's layers."""
    for m in net.quantized_layers():
        m.w_bits = m.act_quant.bits = QAT_BITS
        if quantizer == "lsq" and QAT_BITS < learned_below:
            m.learn_step()
            m.act_quant.learn_range()
    return net


def deployed(state: dict[str, torch.Tensor], num_classes: int = 10) -> ResNet8:
    """The folded, quantization-aware network of a state :func:`train` returned."""
    net = enable_quantization(fold_batchnorm(build(num_classes=num_classes)), "maxabs", 0)
    for name, m in net.named_modules():
        if isinstance(m, (QConv2d, QLinear)) and f"{name}.w_step" in state:
            m.learn_step()
            m.act_quant.learn_range()
    net.load_state_dict(state)
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    correct = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / max(1, len(x))


@dataclass
class Trained:
    accuracy: float  # validation, the fake-quantized network in torch
    state_dict: dict[str, torch.Tensor]
    curve: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def train(data, teacher: np.ndarray | None, settings, seed: int, temperature: float, alpha: float,
          checkpoint: Path, log=print) -> Trained:
    """Train ResNet-8 on ``data`` (a :class:`~hwsearch.search.training.Data`) by ``settings`` (the
    final stage's :class:`~hwsearch.search.training.TrainSettings`), distilling from ``teacher``'s
    logits on the training images with ``temperature`` and ``alpha`` (alpha 0: no teacher), then
    fold batch norm and fine-tune quantization-aware at 8 bits. Resumes from ``checkpoint`` (saved
    after every epoch, atomically) when it exists."""
    from hwsearch.search.training import resolve_device

    device = resolve_device(settings.device)
    gen = torch.Generator().manual_seed(seed)
    x, y, xv, yv = (torch.as_tensor(a, device=device) for a in (data.x_train, data.y_train, data.x_val, data.y_val))
    t_logits = torch.as_tensor(teacher, device=device, dtype=torch.float32) if alpha > 0 else None
    if alpha > 0 and teacher is None:
        raise ValueError("alpha > 0 needs the teacher's logits")
    # on the CPU: a generator's state must be (load_state_dict moves the rest to the device)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint.exists() else None
    curve: list[dict] = list(state["curve"]) if state else []
    timings: dict[str, float] = dict(state["timings"]) if state else {}
    recipe = settings.recipe
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format

    def finetune_net() -> ResNet8:
        return enable_quantization(fold_batchnorm(build(num_classes=data.num_classes)), recipe.quantizer,
                                   recipe.learned_below)

    def epochs(net: ResNet8, phase: str, n: int, lr: float) -> None:
        if n == 0:
            return
        net.to(memory_format=layout)
        opt = optimizer_for(net, recipe, lr)
        sched = schedule_for(opt, recipe, lr, n * math.ceil(len(x) / settings.batch_size))
        start = 0
        if state is not None and state["phase"] == phase:
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start = state["epoch"]
        mixed = device == "cuda" and phase == "dense"
        for epoch in range(start, n):
            t0 = time.perf_counter()
            net.train()
            perm = torch.randperm(len(x), generator=gen).to(device)
            total = 0.0
            for i in range(0, len(x), settings.batch_size):
                idx = perm[i:i + settings.batch_size]
                batch = augment(x[idx], recipe, gen).contiguous(memory_format=layout)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mixed):
                    logits = net(batch)
                loss = distillation_loss(logits.float(), t_logits[idx] if t_logits is not None else None, y[idx],
                                         temperature, alpha, label_smoothing=recipe.label_smoothing)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"ResNet-8: loss became {loss.item()} in {phase} epoch {epoch + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            val = accuracy(net, xv, yv)
            spent = time.perf_counter() - t0  # with the epoch's validation, as a candidate's train_s
            timings[f"{phase}_s"] = timings.get(f"{phase}_s", 0.0) + spent
            curve.append({"phase": phase, "epoch": epoch + 1, "loss": total / len(x), "val_accuracy": val,
                          "images_per_s": len(x) / spent})
            log(f"  ResNet-8 {phase} epoch {epoch + 1}/{n}: loss {total / len(x):.3f}, validation {val:.2%}, "
                f"{len(x) / spent:.0f} images/s")
            _save(checkpoint, {"phase": phase, "epoch": epoch + 1, "net": net.state_dict(), "opt": opt.state_dict(),
                               "sched": sched.state_dict(), "gen": gen.get_state(), "curve": curve,
                               "timings": timings})

    if state is not None and state["phase"] == "finetune":
        net = finetune_net().to(device)
        net.load_state_dict(state["net"])
        gen.set_state(state["gen"])
    else:
        net = build(gen, data.num_classes).to(device)
        if state is not None:
            net.load_state_dict(state["net"])
            gen.set_state(state["gen"])
        epochs(net, "dense", settings.epochs, settings.lr)
        net.eval()
        net = fold_batchnorm(net)
        enable_quantization(net, recipe.quantizer, recipe.learned_below)
        with torch.no_grad():  # the fake quantizers' activation ranges, from 4 training batches
            net.train()
            for i in range(min(4, math.ceil(len(x) / 128))):
                net(x[i * 128:(i + 1) * 128])
    epochs(net, "finetune", settings.finetune_epochs, settings.lr * FINETUNE_LR)
    acc = accuracy(net, xv, yv)
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return Trained(acc, weights, curve, timings)


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def onnx_network(net: ResNet8, batch: int | str = "N"):
    """The deployed network as ONNX (opset 17), normalised float ``image`` (N, 3, 32, 32) in,
    ``logits`` out: convolutions with their folded biases and weights as the fake-quantized
    network computes them, ReLU, Add, then global average pooling and the classifier as a 1x1
    convolution and a Flatten, as hwsearch's emitter writes a candidate's head (so
    :func:`hwsearch.search.outputs.quantize_int8` treats it alike)."""
    import onnx
    from onnx import helper, numpy_helper

    nodes: list = []
    inits: list = []

    def conv(x: str, m: QConv2d | QLinear, name: str, relu: bool) -> str:
        w = m.quantized_weight().detach().cpu().numpy().astype(np.float32)
        if w.ndim == 2:
            w = w[:, :, None, None]
        assert m.bias is not None
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"),
                      numpy_helper.from_array(m.bias.detach().cpu().numpy().astype(np.float32), f"{name}.bias")])
        attrs = {}
        if isinstance(m, QConv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name=name,
                                      **attrs))
        if not relu:
            return f"{name}.out"
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv("image", net.stem, "stem", relu=True)
    for i, b in enumerate(net.blocks):
        assert isinstance(b, BasicBlock)
        y = conv(conv(x, b.conv1, f"stack{i + 1}.conv1", relu=True), b.conv2, f"stack{i + 1}.conv2", relu=False)
        s = x if b.shortcut is None else conv(x, b.shortcut, f"stack{i + 1}.shortcut", relu=False)
        nodes.append(helper.make_node("Add", [s, y], [f"stack{i + 1}.add"], name=f"stack{i + 1}.add"))
        nodes.append(helper.make_node("Relu", [f"stack{i + 1}.add"], [f"stack{i + 1}.out"], name=f"stack{i + 1}.relu"))
        x = f"stack{i + 1}.out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    y = conv("pooled", net.classifier, "classifier", relu=False)
    nodes.append(helper.make_node("Flatten", [y], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Identity", ["flat"], ["logits"], name="logits"))
    classes = net.classifier.out_features
    graph = helper.make_graph(nodes, "resnet8", [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT,
                                                                               [batch, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [batch, classes])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwsearch-bench")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
