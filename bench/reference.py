"""The whole flow on CIFAR-10 against MLPerf Tiny's ResNet-8 (issue 19, item 6).

    python bench/reference.py [--data ../shared/datasets/cifar10/train] [--epochs 20] [--trials 40]
                              [--final 4] [--work bench/state/reference] [--device auto] [--smoke]
                              [--phases profile,reference,search,final,export,compare]
                              [--run depthwise|fused|fused-20k]

Profile, reference, search, final training, export and comparison, each resumable: results go to
``bench/results/reference.json`` after every phase and every candidate, and a re-run skips what is
done (a phase cut short resumes inside itself: the profile is saved every 5 s, the reference and
every final candidate checkpoint after each epoch, the search continues its study). The exported
files of the final candidates and of ResNet-8 go to ``bench/results/reference/``. ``--smoke`` runs
the same flow tiny (a small space, 400 search and 600 final images, 1 + 1 epochs, 4 trials, 2 final
candidates) into ``bench/work/reference-smoke/``, results file included, in a few minutes.

**Across sessions and checkouts.** The full run's work folder, ``bench/state/reference/`` (the
profile cache, ResNet-8's weights and checkpoints, the search's study and spec, the final stage's
per-epoch checkpoints and records: a few MB), is tracked by git, unlike ``bench/work/``: commit it
when a stretch of work ends, and a new checkout resumes where the last one stopped. Latencies are
only comparable on one host, so the phases that price or time (profile, search, export, compare)
run only on a host of the CPU model the profile was measured on; elsewhere the script stops and
says so (training phases run anywhere).

**Data.** CIFAR-10's training split as JPEGs (``imagefolder``), split with ``dataset.seed`` 0 and
``val_fraction`` 0.1. The final stage and the reference take all 50,000 images: 45,000 train,
5,000 validation. The search takes a seeded, class-balanced 10,000 of them (9,000 / 1,000). No
test split is used: the search's front is selected on its validation split, the final candidates
and the reference are reported on the final one (which also picks the reference's better
distillation variant, below; that choice can only favour the reference).

**Phases.**

(a) ``profile``: ``local-cpu`` (this host, onnxruntime, 1 thread, batch 1) is profiled for the
    search space into the benchmark's own cache (``WORK/cache``, see ``cifar10.use_cache``) before
    anything trains: every reachable layer, the whole-network calibration and its self-check, on the
    space and on its fp32 twin (the exported ``model.onnx`` files run in fp32). Then ResNet-8
    (random weights: values do not change a dense kernel's speed) is timed end to end, fp32 and
    int8, against the profile's reference network and on its scale (``hwsearch.targets.Meter`` with
    the profile's ``reference``; the meter, sessions and thread count the profile uses).
    *ResNet-8 is measured, not priced*: hwsearch's plans have no residual basic-block kind, and
    adding one to the core is outside a benchmark; measuring its ONNX end to end on the profile's
    scale is how the profile measures the whole networks its calibration is fitted on.
(b) ``reference``: ResNet-8 rebuilt in torch (``resnet8.py``: 78,666 parameters as Keras counts
    them, 12.5M multiply-adds) trained on the final split with the final stage's settings
    (``train_settings`` of the final spec: the same epochs, batch, learning rate, optimiser,
    schedule, crops, flips and label smoothing), its dense epochs then batch norm folded and
    quantization-aware fine-tuning at w8a8 with hwsearch's fake quantizers (as every candidate
    here, which are all w8a8). Two variants: distilled from the run's teacher (T 4, alpha 0.5,
    fixed before any result, mid-range of the space's settings) and without a teacher (MLPerf's own
    recipe has none); the more accurate one on the validation split is the reference.
(c) ``search``: ``hwsearch run`` on ``WORK/search.yaml``: the cost-aware sampler, 40 trials, 3 dense
    + 1 fine-tuning epochs on the 10,000 images (batch 128, AdamW one-cycle at 4e-3), the space of
    :data:`SPACE` (``cifar10.SPACE`` deepened, weights and activations at 8 bits only: on this CPU
    int8 runs faster than fp32 at these sizes, e.g. ResNet-8 0.09 against 0.135 ms, and the
    comparison is on int8 size, where 4-bit weights stored in int8 gain nothing). Budget: latency at
    most ResNet-8's measured **int8** latency (its deployed form in MLPerf Tiny, and its faster one
    here; the fp32 figure is recorded, and a warning is written if fp32 were faster) and size at
    most its int8 size (hwsearch's arithmetic: weights at 8 bits, 32-bit biases).
(d) ``final``: ``hwsearch train RUN --trial N`` for the ``--final`` most accurate members of the
    search's feasible front (topped up with the most accurate other feasible trials if the front is
    smaller), each at most the reference's latency and size by the budget: the front's upper end,
    the part near the reference's latency. One process per candidate, at the reference's epochs.
(e) ``export``: ``hwsearch export RUN --trial N`` for each (final weights), into
    ``bench/results/reference/trial_N/``; ResNet-8's ``model.onnx`` (the folded network, weights as
    its 8-bit fake quantizers computed them) and ``model.int8.onnx`` (``quantize_int8``: the exact
    static quantization every candidate's export uses: QDQ, per-channel int8 weights, uint8
    activations calibrated with MinMax on 512 training images), both behind the same raw-pixel
    adapter as the candidates' files, and a ``card.json`` (accuracy, latency, size, parameters,
    multiply-adds, training) into ``bench/results/reference/resnet8/``.
(f) ``compare``: every model's int8 and fp32 network (cut out of its shipped file: the graph from
    ``image`` to ``logits``, adapter excluded, as the profile prices networks) and both files as
    shipped are timed together, in one interleaved batch of the profile's meter, on a quiet host.
    A candidate dominates ResNet-8 when its final validation accuracy (the w8a8 network, as
    ``hwsearch train`` records it) is at least ResNet-8's, its measured int8 latency at most
    ResNet-8's and its int8 size at most ResNet-8's; the margins are reported either way, and the
    same check is repeated with the int8 files' onnxruntime accuracies and with the candidates'
    predicted latencies. A paired test says whether an accuracy margin is more than chance: on the
    same validation images, the images only the candidate's int8 file classifies right against
    those only ResNet-8's does, and McNemar's exact p-value. Kendall's tau between the search's and
    the final accuracy over the finally-trained candidates, and ``bench/results/reference.png``
    (latency and int8 size against accuracy: the search's trials and front, the final candidates
    and ResNet-8). ``--redo compare`` runs the phase again.

**Teacher.** MLPerf Tiny's own trained ResNet-8 (``../shared/models/mlperf-tiny-ic-resnet8.onnx``:
NCHW, pixels 0..255, probabilities out), for the search, the final stage and the reference alike.
The default teacher (the space's widest network) would be trained again at the final fidelity,
24 epochs of a network of ~30M multiply-adds on 45,000 images: over an hour here, against seconds
of onnxruntime for this one. It has seen every image of CIFAR-10's training split, validation
included; distillation reads its outputs on the training images only.

**Budget.** On 2 cores (AMD EPYC) about 4 h in all; the script prints its estimate at the start,
and after the search, one for the final stage from the chosen candidates' measured throughput.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cifar10 import DEFAULT_DATA, check_data, use_cache
from common import ROOT

NAME = "reference"
STATE = ROOT / "bench" / "state"  # tracked: a new checkout resumes from its work folders
SMOKE_WORK = ROOT / "bench" / "work" / "reference-smoke"
RESULTS = ROOT / "bench" / "results"
TEACHER = (ROOT / ".." / "shared" / "models" / "mlperf-tiny-ic-resnet8.onnx").resolve()
TEACHER_SPEC = {"layout": "NCHW", "pixel_max": 255, "output": "probabilities"}
INPUT, CLASSES = (3, 32, 32), 10
OBJECTIVES = ["accuracy", "latency_ms", "size_kb"]
# the reference's two trainings: (name, temperature, alpha); alpha 0 is no teacher
VARIANTS = (("distilled", 4.0, 0.5), ("no teacher", 1.0, 0.0))
SEED = 0

SPACE = {
    "stem_widths": [8, 16, 24],
    "stages": [
        {"widths": [16, 24], "depths": [1, 2]},
        {"widths": [24, 32, 48], "depths": [1, 2, 3]},
        {"widths": [48, 64, 96], "depths": [1, 2, 3]},
    ],
    "kernels": [3, 5],
    "expand_ratios": [1, 3, 4, 6],
    "se": [False, True],
    "activations": ["relu", "hswish"],
    "prune_ratios": [0.0, 0.25, 0.5],
    "weight_bits": [8],
    "activation_bits": [8],
    "distill": True,
    "temperature": [1.0, 8.0],
    "alpha": [0.0, 0.9],
}
# --run: which of the benchmark's runs. Each has its own work folder, results and exports (named
# "reference" for the first, "reference-NAME" for the others); ResNet-8's training, which depends on
# neither the space nor the search, is taken from the first run where data and settings match.
# - "depthwise", the first: the space above, searched at 3 + 1 epochs on 10,000 images.
# - "fused": the same with fused blocks (one dense kxk convolution in place of the 1x1 expansion and
#   the depthwise one) as a per-stage choice: on this CPU's int8 kernels a dense 3x3 convolution runs
#   2-3x more multiply-adds per ns than a depthwise one (ResNet-8 82 against 26-43 for the first
#   run's front), so near ResNet-8's latency a depthwise network affords a fraction of its work.
# - "fused-20k": the fused space searched at a higher fidelity, 4 + 1 epochs on 20,000 images, and
#   without the teacher. The first two runs' search fidelity saturated near 50% from ~0.1 ms on, so
#   bigger networks looked no better and the front stopped short of the budget; their finals were
#   the networks that learn fastest in 3 epochs (wide first stages, thin last ones), not the most
#   capable: "fused" trial 37 read 51.1% in the search like "depthwise" trial 22, and 72.5% dense
#   after 20 epochs against 78.6%. The teacher, MLPerf Tiny's model trained on these very images,
#   cost ResNet-8 3.7 points at the final fidelity (its variants, chosen before any candidate).
# - "res32": "fused-20k" with the first stage at the input's 32x32, as ResNet-8's first stack (stage
#   strides 1, 2, 2: maps of 32, 16, 8 pixels; by default every stage downsamples: 16, 8, 4). The
#   other runs' networks lose three quarters of the image before their first block, so at ResNet-8's
#   size (the budget's binding limit near its latency) they cannot match its accuracy: "fused-20k"'s
#   best final, 5.9M multiply-adds at 16, 8, 4, reached 75.4% against ResNet-8's 79.1%.
# - "res32-depth": "res32" again, unseeded, after depth joined the cost-aware sampler's accuracy
#   features: in "res32" all 40 proposals had one block per stage, and ResNet-8's layout, seeded by
#   hand, read 2.5 points above them. This run says whether the sampler now finds such networks.
#   Its profile phase is res32's (the same space: its cache and budget copied), so that both searches
#   face one budget: measured again on 2026-12-06 on a slower moment of the host, ResNet-8 read
#   0.167 ms against 0.149, a budget 12% looser.
# - "res32-depth-epyc": "res32-depth" whole on another CPU model, the 2-core AMD EPYC host: its own
#   profile, budget (ResNet-8 measured there), search, finals, export and compare. Latencies are only
#   comparable on one host, and "res32-depth"'s timed phases run only on the Intel Xeon host its
#   profile was measured on; this run answers issue 19's question on the host at hand. ResNet-8's
#   training is taken over as in every run (training does not depend on the host).
FUSED_SPACE = {**SPACE, "fused": [False, True]}
RES32_STAGES = [{**stage, "stride": stride} for stage, stride in zip(SPACE["stages"], (1, 2, 2))]
# "res32" was continued with seeds (``search.seeds``): ResNet-8's layout written in the space's terms,
# chosen by pricing alone, before any of them trained. Its searched front has depth 1 in every stage
# and its finals ended 5.9-6.8 points below ResNet-8; these say whether the space's blocks (a fused
# 3x3 convolution and a 1x1 projection, where ResNet-8 has two 3x3) reach ResNet-8 when laid out as
# it is. Widths 16/32/64, depth 2 in the last two stages (ResNet-8's stacks), then:
RES32_SEEDS = (
    # with two blocks in the first stage, as ResNet-8: 12.4M multiply-adds, 71.5 KB, priced 0.1506 ms,
    # over the budget (0.1495): recorded as such, never trained
    "c16:ir_r2_k3_e1_c16_s1_fu_re_w8a8:ir_r2_k3_e1_c32_s2_fu_re_w8a8:ir_r2_k3_e1_c64_s2_fu_re_w8a8",
    # one block in the first stage, the stem and that block widened to 24 to spend the budget: 14.0M,
    # 75.4 KB, 0.1476 ms
    "c24:ir_r1_k3_e1_c24_s1_fu_re_w8a8:ir_r2_k3_e1_c32_s2_fu_re_w8a8:ir_r2_k3_e1_c64_s2_fu_re_w8a8",
    # one block in the first stage, squeeze-excite in the last: 9.8M, 71.8 KB, 0.1298 ms
    "c16:ir_r1_k3_e1_c16_s1_fu_re_w8a8:ir_r2_k3_e1_c32_s2_fu_re_w8a8:ir_r2_k3_e1_c64_s2_fu_se_re_w8a8",
)
RUNS: dict[str, dict] = {
    "depthwise": {"space": SPACE},
    "fused": {"space": FUSED_SPACE},
    "fused-20k": {"space": {**FUSED_SPACE, "distill": False}, "search_limit": 20_000, "search_epochs": 4},
    "res32": {"space": {**FUSED_SPACE, "distill": False, "stages": RES32_STAGES}, "search_limit": 20_000,
              "search_epochs": 4, "seeds": RES32_SEEDS},
    "res32-depth": {"space": {**FUSED_SPACE, "distill": False, "stages": RES32_STAGES}, "search_limit": 20_000,
                    "search_epochs": 4, "profile_from": "res32"},
    "res32-depth-epyc": {"space": {**FUSED_SPACE, "distill": False, "stages": RES32_STAGES}, "search_limit": 20_000,
                         "search_epochs": 4},
}

SMOKE_SPACE = {
    "stem_widths": [8],
    "stages": [{"widths": [8], "depths": [1]}, {"widths": [16], "depths": [1]}, {"widths": [16, 24], "depths": [1]}],
    "kernels": [3], "expand_ratios": [1, 3], "se": [False], "activations": ["relu"], "prune_ratios": [0.0, 0.5],
    "weight_bits": [8], "activation_bits": [8], "distill": True, "temperature": [1.0, 8.0], "alpha": [0.0, 0.9],
}

# Throughput on the 2-core AMD EPYC host, images per second, for the estimate printed at the start
# (bench/train_throughput.py and the figures): dense and fake-quantized training.
RESNET8_IPS, RESNET8_QAT_IPS = 870.0, 450.0
CANDIDATE_IPS, CANDIDATE_QAT_IPS = 650.0, 350.0


@dataclass(frozen=True)
class Sizes:
    """How big each phase is: the full benchmark's, or the smoke run's."""

    search_limit: int = 10_000
    final_limit: int | None = None  # None: all of the images
    val_fraction: float = 0.1
    trials: int = 40
    search_epochs: int = 3
    search_finetune: int = 1
    epochs: int = 20
    finetune_epochs: int = 3
    final: int = 4
    networks: int = 100  # whole networks the profile's calibration measures
    space: dict = field(default_factory=lambda: SPACE)
    run: str = "depthwise"  # a key of RUNS
    seeds: tuple[str, ...] = ()  # the search's search.seeds (a run continued with more keeps its sizes)
    profile_from: str | None = None  # a run of the same space whose profile phase (cache, budget) this one takes

    @property
    def name(self) -> str:
        return NAME if self.run == "depthwise" else f"{NAME}-{self.run}"


SMOKE = Sizes(search_limit=400, final_limit=600, trials=4, search_epochs=1, search_finetune=1, epochs=1,
              finetune_epochs=1, final=2, networks=20, space=SMOKE_SPACE)


def log(msg: str) -> None:
    print(msg, flush=True)


def hwsearch(*args: str) -> None:
    """Run an ``hwsearch`` command of this environment; its failure stops the benchmark."""
    exe = Path(sys.executable).with_name("hwsearch")
    cmd = [str(exe) if exe.exists() else (shutil.which("hwsearch") or "hwsearch"), *args]
    log("$ " + " ".join(cmd))
    done = subprocess.run(cmd)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd)} exited {done.returncode}; re-run this script to resume")


class Bench:
    """The results file and the phases' wall time; every :meth:`save` writes the file atomically."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes) -> None:
        self.args, self.sizes, self.smoke = args, sizes, args.smoke
        self.work = Path(args.work).resolve()
        self.name = sizes.name
        self.path = self.work / f"{self.name}_smoke.json" if self.smoke else RESULTS / f"{self.name}.json"
        self.exports = self.work / "export" if self.smoke else RESULTS / self.name
        self.run_dir = self.work / "run"
        self.results: dict = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.results.setdefault("phases", {})
        self._clock: tuple[dict, float, float] | None = None

    def save(self) -> None:
        if self._clock is not None:
            rec, t0, base = self._clock
            rec["wall_s"] = base + time.perf_counter() - t0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.results, indent=1) + "\n")
        os.replace(tmp, self.path)

    def done(self, phase: str) -> bool:
        return bool(self.results["phases"].get(phase, {}).get("done"))

    @contextmanager
    def phase(self, name: str):
        """Time a phase (its stretches add up over resumed runs); mark it done when it returns."""
        rec = self.results["phases"].setdefault(name, {"done": False, "wall_s": 0.0, "stretches": 0})
        rec["stretches"] += 1
        self._clock = (rec, time.perf_counter(), rec["wall_s"])
        log(f"\n== {name} ==")
        try:
            yield rec
            rec["done"] = True
        finally:
            self.save()
            self._clock = None
            log(f"{name}: {rec['wall_s'] / 60:.1f} min{'' if rec['done'] else ' (not finished)'}")

    # -- the specs ----------------------------------------------------------------------------

    @property
    def budget(self) -> dict[str, float]:
        return dict(self.results["profile"]["budget"])

    def spec_path(self) -> Path:
        """The search's spec, written once (its budget from the profile phase; before that phase, as
        when ``--phases reference`` runs first, without a budget, which nothing that trains reads)."""
        import yaml

        path = self.work / "search.yaml"
        s = self.sizes
        spec = {
            "name": f"{self.name}-smoke" if self.smoke else self.name,
            "dataset": {"name": "imagefolder", "path": str(Path(self.args.data).resolve()), "limit": s.search_limit,
                        "val_fraction": s.val_fraction, "seed": SEED},
            "target": "local-cpu",
            "budget": self.budget if "budget" in self.results.get("profile", {}) else {},
            "objectives": OBJECTIVES,
            "space": s.space,
            "teacher": {"onnx": str(TEACHER), **TEACHER_SPEC},
            "search": {"trials": s.trials, "sampler": "cost-aware", "seed": SEED, "epochs": s.search_epochs,
                       "finetune_epochs": s.search_finetune, "batch_size": 128, "lr": 4e-3, "workers": 1,
                       "device": self.args.device, "keep_weights": False},
        }
        if s.seeds:
            spec["search"]["seeds"] = list(s.seeds)
        text = yaml.safe_dump(spec, sort_keys=False)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return path

    def fidelity(self):
        from hwsearch.search.study import Fidelity

        s = self.sizes
        return Fidelity(epochs=s.epochs, finetune_epochs=s.finetune_epochs, limit=s.final_limit)

    def final_spec(self):
        from hwsearch.search import load_spec
        from hwsearch.search.study import final_spec

        return final_spec(load_spec(self.spec_path()), self.fidelity())

    def final_data(self):
        if not hasattr(self, "_final_data"):
            from hwsearch.search.training import load_dataset

            spec = self.final_spec()
            t0 = time.perf_counter()
            self._final_data = load_dataset(spec.dataset, spec.data_seed)
            log(f"final split: {len(self._final_data.y_train)} train, {len(self._final_data.y_val)} validation "
                f"({time.perf_counter() - t0:.0f}s)")
        return self._final_data

    def target(self):
        from hwsearch.targets import get_target

        if not hasattr(self, "_target"):
            self._target = get_target("local-cpu")
        return self._target


# ------------------------------------------------------------------------------------------
# Helpers: the reference's models, measuring, facts of the host
# ------------------------------------------------------------------------------------------

def meter(target):
    """A meter on the profile's scale: its reference network and time, threads and provider."""
    from hwsearch.targets import Meter

    profile = target.profile
    ref = profile.reference
    return Meter(profile.device.threads, profile.device.provider, reference_ms=ref.ms,
                 reference=(ref.candidate, tuple(ref.input_shape)))


BUSY_RETRIES = 4  # timings taken again while the meter finds the host busy (another process running)


def measure(m, blobs: list[bytes], shapes: list[tuple[int, ...]]) -> list:
    """Latencies (:class:`hwsearch.targets.Latency`) of ONNX models on one input each, timed together
    by the meter ``m``, after a first measurement that is dropped (in a fresh process one can run
    slow: a cold CPU and runtime, see ``front.py``). While the meter waited in vain for a quiet host
    (``busy_batches``: a neighbour's load shifts the ratios, e.g. ResNet-8's fp32 time read 0.085
    instead of 0.135 ms), the batch is timed again, up to :data:`BUSY_RETRIES` times."""
    m.measure(blobs[:1], shapes[:1])
    for attempt in range(BUSY_RETRIES + 1):
        before = m.busy_batches
        out = list(m.measure(blobs, shapes))
        if m.busy_batches == before:
            return out
        log(f"the host was busy while timing (attempt {attempt + 1}); "
            f"{'timing again' if attempt < BUSY_RETRIES else 'keeping these figures'}")
    return out


def network_of(file_bytes: bytes) -> bytes:
    """The network inside a shipped file: the graph from the adapter's output ``image`` to the
    file's output (the logits), as the profile prices networks."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load_from_string(file_bytes)
    return Extractor(model).extract_model(["image"], [model.graph.output[0].name]).SerializeToString()


def reference_models(net, data, work: Path) -> dict:
    """ResNet-8's fp32 and int8 networks (normalised NCHW in, logits out)."""
    import resnet8

    from hwsearch.search.outputs import FP32_FILE, INT8_FILE, quantize_int8

    fp32 = resnet8.onnx_network(net)
    calibration = data.x_train[:512] if data is not None else _random_images(512)
    return {FP32_FILE: fp32, INT8_FILE: quantize_int8(fp32, calibration, work)}


def _random_images(n: int):
    import numpy as np

    return np.random.default_rng(SEED).standard_normal((n, *INPUT)).astype(np.float32)


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def count_images(data: Path) -> int:
    return sum(1 for d in data.iterdir() if d.is_dir() for f in d.iterdir()
               if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})


def estimate(sizes: Sizes, images: int, device: str) -> dict[str, float]:
    """Seconds per phase, from the throughput measured on the 2-core host (CPU; a GPU is faster)."""
    final_n = _train_images(min(images, sizes.final_limit or images), sizes.val_fraction)
    search_n = _train_images(min(images, sizes.search_limit), sizes.val_fraction)
    e, f = sizes.epochs, sizes.finetune_epochs
    per_ref = final_n * e / RESNET8_IPS + final_n * f / RESNET8_QAT_IPS
    per_cand = final_n * e / CANDIDATE_IPS + final_n * f / CANDIDATE_QAT_IPS + 60
    per_trial = search_n * (sizes.search_epochs / CANDIDATE_IPS + sizes.search_finetune / CANDIDATE_QAT_IPS) + 8
    return {"profile": 60.0 + 5.0 * sizes.networks, "reference": len(VARIANTS) * per_ref + 60,
            "search": sizes.trials * per_trial + 60, "final": sizes.final * per_cand,
            "export": (sizes.final + 1) * 100.0, "compare": 60.0}


# ------------------------------------------------------------------------------------------
# The phases
# ------------------------------------------------------------------------------------------

def take_profile(b: Bench, run: str) -> None:
    """The profile phase of another run of the same space on this host's CPU model: its cache (the
    layers, calibration and self-check) and its budget, so that two searches face one budget."""
    other = Sizes(**{**asdict(Sizes()), **{k: v for k, v in RUNS[run].items() if k != "seeds"}, "run": run})
    theirs = json.loads((RESULTS / f"{other.name}.json").read_text())
    if theirs.get("space") != b.sizes.space or theirs["profile"]["host"] != _host():
        sys.exit(f"error: the {run!r} run's profile is of another space or host; this run cannot take it over")
    cache = Path(theirs["profile"]["cache"])
    mine = b.work / "cache" / cache.name
    shutil.copy2(STATE / other.name / "cache" / cache.name, mine)
    b.results["profile"] = {**theirs["profile"], "cache": str(mine), "taken_from": _rel(RESULTS / f"{other.name}.json")}
    log(f"profile taken from the {run!r} run: budget {b.results['profile']['budget']}")


def phase_profile(b: Bench) -> None:
    """(a) The space's profile on this host, and ResNet-8 timed on its scale (random weights)."""
    import resnet8
    import torch
    from tqdm import tqdm

    from hwsearch.search.outputs import FP32_FILE, INT8_FILE
    from hwsearch.spaces import SpaceSpec
    from hwsearch.targets import profile_space, space_fingerprint

    if b.sizes.profile_from:
        take_profile(b, b.sizes.profile_from)
        return
    target = b.target()
    space = SpaceSpec.model_validate(b.sizes.space)

    def bar(items, desc, total):
        return tqdm(items, desc=desc, total=total, unit=desc.split()[-1], leave=False)

    fingerprint = space_fingerprint(space, INPUT, CLASSES)
    if fingerprint not in target.profile.calibration.spaces or target.profile.check_for(fingerprint) is None:
        profile_space(target.profile, space, INPUT, CLASSES, target.path, threads=1, networks=b.sizes.networks,
                      progress=bar, log=log)
    # The exported model.onnx runs each candidate in fp32: the calibration is fitted on the space's
    # fp32 twin too, so that the export's check of the fp32 files has a model of fp32 networks.
    twin = space.model_copy(update={"weight_bits": [32], "activation_bits": [32]})
    if target.ensure_calibrated(twin, INPUT, CLASSES, progress=bar, networks=b.sizes.networks):
        log("calibrated on whole fp32 networks of the space too")
    check = target.profile.check_for(fingerprint)
    twin_check = target.profile.check_for(space_fingerprint(twin, INPUT, CLASSES))
    net = resnet8.fold_batchnorm(resnet8.build(torch.Generator().manual_seed(SEED)).eval())
    models = reference_models(net, None, b.work)
    m = meter(target)
    fp32, int8 = measure(m, [models[FP32_FILE].SerializeToString(), models[INT8_FILE].SerializeToString()],
                         [(1, *INPUT)] * 2)
    int8_kb = resnet8.size_kb(net, 8)
    warning = None
    if fp32.mean_ms < int8.mean_ms:
        warning = (f"ResNet-8 runs faster in fp32 ({fp32.mean_ms:.4f} ms) than in int8 ({int8.mean_ms:.4f} ms) on "
                   "this host; the comparison is against its int8 form, as MLPerf Tiny deploys it")
        log("warning: " + warning)
    b.results["profile"] = {
        "target": "local-cpu", "host": _host(), "cache": str(target.path),
        "layers": len(target.profile.entries),
        "calibration": {"networks": len(target.profile.calibration.samples),
                        "fit_mape": target.profile.calibration.fit_mape},
        "self_check": check.model_dump(mode="json") if check else None,
        "self_check_fp32_twin": twin_check.model_dump(mode="json") if twin_check else None,
        "reference_ms": target.profile.reference.ms,
        "resnet8_random_weights": {"fp32_ms": fp32.mean_ms, "int8_ms": int8.mean_ms, "int8_size_kb": int8_kb,
                                   "fp32_size_kb": resnet8.size_kb(net, 32), "host_noise": m.host()},
        "budget": {"latency_ms": math.floor(int8.mean_ms * 1e6) / 1e6, "size_kb": math.floor(int8_kb * 1e4) / 1e4},
        "budget_basis": "ResNet-8's measured int8 latency (its deployed and, here, faster form) and its int8 size",
        "warning": warning,
    }
    log(f"ResNet-8 on local-cpu: fp32 {fp32.mean_ms:.4f} ms, int8 {int8.mean_ms:.4f} ms, int8 size {int8_kb:.1f} KB; "
        f"the search's budget: {b.budget}")


def phase_reference(b: Bench) -> None:
    """(b) ResNet-8 trained like a final candidate: both variants, checkpointed per epoch."""
    import resnet8
    import torch

    from hwsearch.search.training import teacher_logits, train_settings

    if "reference" not in b.results and "reference_taken_over" not in b.results and reuse_reference(b):
        return
    spec, data = b.final_spec(), b.final_data()
    settings = train_settings(spec, data.input_shape[1])
    folder = b.work / "reference"
    teacher, meta = teacher_logits(spec, data, folder, log=log)
    ref = b.results.setdefault("reference", {"variants": {}})
    for name, temperature, alpha in VARIANTS:
        if name in ref["variants"]:
            continue
        log(f"ResNet-8, {name}: {settings.epochs} + {settings.finetune_epochs} epochs on {len(data.y_train)} images "
            f"({settings.device})")
        key = name.replace(" ", "-")
        t0 = time.perf_counter()
        def each_epoch(msg: str) -> None:
            log(msg)
            b.save()  # the phase's wall time so far, should the process be killed

        out = resnet8.train(data, teacher, settings, SEED, temperature, alpha, folder / f"{key}.ckpt.pt",
                            log=each_epoch)
        torch.save(out.state_dict, folder / f"{key}.pt")
        dense_s = out.timings.get("dense_s", 0.0)
        ref["variants"][name] = {
            "temperature": temperature if alpha else None, "alpha": alpha, "accuracy": out.accuracy,
            "dense_accuracy": next((c["val_accuracy"] for c in reversed(out.curve) if c["phase"] == "dense"), None),
            "weights": str((folder / f"{key}.pt").relative_to(b.work)), "curve": out.curve, "timings": out.timings,
            "images_per_s": len(data.y_train) * settings.epochs / dense_s if dense_s else None,
            "wall_s_this_stretch": time.perf_counter() - t0, "device": settings.device, "host": _host(),
            "gpu": gpu_name()}
        b.save()
        log(f"ResNet-8, {name}: validation {out.accuracy:.2%}")
    chosen = max(ref["variants"], key=lambda n: ref["variants"][n]["accuracy"])
    net = resnet8.build()
    ref.update({"chosen": chosen, "accuracy": ref["variants"][chosen]["accuracy"],
                "params": resnet8.param_count(net), "params_keras": resnet8.KERAS_PARAMS,
                "params_deployed": sum(resnet8.weights_and_biases(net)), "macs": resnet8.macs(net),
                "int8_size_kb": resnet8.size_kb(net, 8), "fp32_size_kb": resnet8.size_kb(net, 32),
                "settings": json.loads(json.dumps(asdict(settings), default=str)),
                "teacher": {k: v for k, v in meta.items() if k != "key"},
                "train_images": len(data.y_train), "val_images": len(data.y_val)})
    log(f"ResNet-8: {ref['params']:,} parameters (Keras: {resnet8.KERAS_PARAMS:,}), {ref['macs']:,} multiply-adds; "
        f"the reference is the '{chosen}' variant, {ref['accuracy']:.2%}")


def reuse_reference(b: Bench) -> bool:
    """A run other than the first takes ResNet-8's training from the first run (its entry and
    weights, copied) where it trained on the same data with the same settings: ResNet-8 does not
    depend on the search's space. Its wall time is counted in this run's total too."""
    from hwsearch.search.training import train_settings

    base_path = RESULTS / f"{NAME}.json"
    if b.smoke or b.name == NAME or not base_path.exists():
        return False
    base = json.loads(base_path.read_text())
    if not base.get("phases", {}).get("reference", {}).get("done"):
        return False
    settings = json.loads(json.dumps(asdict(train_settings(b.final_spec(), INPUT[1])), default=str))
    same = {"data": Path(base.get("data", "")).resolve() == Path(b.args.data).resolve(),
            "settings": base["reference"]["settings"] == settings,
            "final split": {k: base["sizes"][k] for k in ("final_limit", "val_fraction")}
            == {"final_limit": b.sizes.final_limit, "val_fraction": b.sizes.val_fraction}}
    if not all(same.values()):
        log(f"ResNet-8 is trained again: the first run ({_rel(base_path)}) differs in "
            + ", ".join(k for k, v in same.items() if not v))
        return False
    ref = base["reference"]
    for v in ref["variants"].values():
        (b.work / v["weights"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(STATE / NAME / v["weights"], b.work / v["weights"])
    ref["reused_from"] = {"results": _rel(base_path), "wall_s": base["phases"]["reference"]["wall_s"]}
    b.results["reference"] = ref
    log(f"ResNet-8 taken from {_rel(base_path)} (same data and settings): '{ref['chosen']}' {ref['accuracy']:.2%}, "
        f"{ref['reused_from']['wall_s'] / 60:.0f} min of training there")
    return True


def phase_search(b: Bench) -> None:
    """(c) ``hwsearch run`` on the spec, then its trials and front into the results."""
    from hwsearch.search.outputs import RunResults
    from hwsearch.search.study import DEEPEST
    from hwsearch.spaces import Candidate, build_plan

    hwsearch("run", str(b.spec_path()), "--out", str(b.run_dir), "--trials", str(b.sizes.trials))
    rr = RunResults(b.run_dir)
    if queued := seeds_to_try(b, rr):  # a study begun before these seeds: continued, they are queued first
        hwsearch("run", str(b.spec_path()), "--out", str(b.run_dir), "--trials", str(len(rr.rows()) + queued))
        rr = RunResults(b.run_dir)
    front = {r.number for r in rr.pareto()}
    trials = []
    s, n = b.sizes, _train_images(b.sizes.search_limit, b.sizes.val_fraction)
    for row in rr.rows():
        entry = row.to_dict()
        if row.candidate:
            entry["macs"] = build_plan(Candidate.from_string(row.candidate), INPUT, CLASSES).macs
            entry["seeded"] = rr.detail(row.number).seeded
        if row.state == "complete":
            detail = rr.detail(row.number)
            t = detail.timings
            entry.update(timings=t, pareto=row.number in front)
            if t.get("train_s"):  # the dense phase's, validation included (as the final stage counts it)
                entry["images_per_s"] = n * s.search_epochs / t["train_s"]
            if t.get("finetune_s") and s.search_finetune:
                entry["finetune_images_per_s"] = n * s.search_finetune / t["finetune_s"]
        trials.append(entry)
    b.results["search"] = {"run": str(b.run_dir), "spec": str(b.spec_path()), "counts": rr.counts(),
                           "hypervolume": rr.hypervolume(), "front": sorted(front), "trials": trials,
                           "train_images": n, "largest_within_budget": largest_trial(rr),
                           "deepest_within_budget": seeded_trial(rr, DEEPEST),
                           "seeds": list(b.sizes.seeds), "seeded_by_the_spec": given_trials(rr)}
    log(f"search: {rr.counts()}; front: {len(front)} trials")


def largest_trial(rr) -> int | None:
    """The trial of the candidate with the most multiply-adds the budget admits, which hwsearch seeds."""
    from hwsearch.search.study import LARGEST

    return seeded_trial(rr, LARGEST)


def seeded_trial(rr, label: str) -> int | None:
    """The trial hwsearch seeded as ``label`` (``hwsearch.search.study``'s LARGEST, DEEPEST)."""
    return next((r.number for r in rr.rows() if rr.detail(r.number).seeded == label), None)


def given_trials(rr) -> list[int]:
    """The trials of the spec's own ``search.seeds``."""
    from hwsearch.search.study import GIVEN

    return [r.number for r in rr.rows() if (rr.detail(r.number).seeded or "").startswith(GIVEN)]


def seeds_to_try(b: Bench, rr) -> int:
    """How many seeded trials a continued study queues: the largest candidate within budget where it
    predates that seed, and each of the spec's seeds that no trial holds yet."""
    from hwsearch.spaces import Candidate

    held = {r.candidate for r in rr.rows()}
    return (int(largest_trial(rr) is None and bool(b.budget))
            + sum(Candidate.from_string(s).to_string() not in held for s in b.sizes.seeds))


def reopen_for_seeds(b: Bench) -> None:
    """A run whose search predates the seeded largest candidate, or the run's ``seeds``: its search
    goes on by those trials, and the phases after it run again to train, export and compare them
    (their times add up)."""
    search = b.results.get("search")
    if not b.done("search") or ("largest_within_budget" in search
                                and search.get("seeds", []) == list(b.sizes.seeds)):
        return
    log("the search predates some of its seeds (the largest candidate within budget, or the run's own): it goes "
        "on by those trials, and the final, export and compare phases take them in")
    for name in ("search", "final", "export", "compare"):
        if name in b.results["phases"]:
            b.results["phases"][name]["done"] = False
    b.save()


def _train_images(images: int, val_fraction: float) -> int:
    """Training images of a split of ``images`` (scikit-learn's: the validation part rounded up)."""
    return images - math.ceil(images * val_fraction)


def chosen_trials(b: Bench) -> list[int]:
    """The ``final`` most accurate members of the search's feasible front, topped up with the most
    accurate other feasible trials where the front has fewer, then the seeded largest and deepest
    candidates within budget and the run's own seeds that fit it: the search's fidelity cannot rank capacity,
    so they are trained whatever they read there (fixed once chosen; a choice made before a seed
    existed gains it)."""
    final = b.results.setdefault("final", {})
    feasible = [t for t in b.results["search"]["trials"] if t["state"] == "complete"]
    if "chosen" not in final:
        feasible.sort(key=lambda t: (not t.get("pareto"), -t["accuracy"], t["latency_ms"]))
        final["chosen"] = [t["number"] for t in feasible[:b.sizes.final]]
        b.save()
    search = b.results["search"]
    corners = [search.get("largest_within_budget"), search.get("deepest_within_budget")]
    for seeded in [*corners, *search.get("seeded_by_the_spec", [])]:
        if seeded is not None and seeded not in final["chosen"] and any(t["number"] == seeded for t in feasible):
            final["chosen"].append(seeded)
            b.save()
    return list(final["chosen"])


def phase_final(b: Bench) -> None:
    """(d) ``hwsearch train`` for each chosen trial, one process each, at the reference's epochs."""
    from hwsearch.search.study import final_records

    picks = chosen_trials(b)
    by_number = {t["number"]: t for t in b.results["search"]["trials"]}
    n, s = b.results["reference"]["train_images"], b.sizes
    projected = 0.0
    for p in picks:
        t = by_number[p]
        projected += (n * s.epochs / t.get("images_per_s", CANDIDATE_IPS)
                      + n * s.finetune_epochs / t.get("finetune_images_per_s", CANDIDATE_QAT_IPS) + 60)
    log(f"final training of trials {picks}: {s.epochs} + {s.finetune_epochs} epochs on {n} images each; estimated "
        f"{projected / 60:.0f} min from their throughput in the search")
    final = b.results["final"]
    final["estimate_s"] = projected
    final.setdefault("trials", {})
    for p in picks:
        if str(p) in final["trials"]:
            continue
        args = ["train", str(b.run_dir), "--trial", str(p), "--epochs", str(s.epochs),
                "--finetune-epochs", str(s.finetune_epochs)]
        if s.final_limit:
            args += ["--limit", str(s.final_limit)]
        before = final_records(b.run_dir).get(p)
        t0 = time.perf_counter()
        hwsearch(*args)
        record = final_records(b.run_dir)[p]
        entry = {**record.to_dict(), "wall_s": time.perf_counter() - t0}
        if before is not None and before.fidelity == record.fidelity:  # trained by the same command before the
            # phase ran (e.g. on another host, while this one's search could not go on): its own training time
            entry["wall_s"] = sum(record.timings.values())
            entry["wall_note"] = (f"trained before this phase, by `hwsearch {' '.join(args)}` on {record.host}, "
                                  f"finished {record.finished_at}; wall_s is that run's training time (data loading "
                                  "excluded)")
        final["trials"][str(p)] = entry
        b.save()


def phase_export(b: Bench) -> None:
    """(e) ``hwsearch export`` of each final candidate, and ResNet-8's files and card."""
    from hwsearch.search.outputs import CARD_FILE

    exports = b.results.setdefault("export", {})
    for p in chosen_trials(b):
        if str(p) in exports:
            continue
        out = b.exports / f"trial_{p}"
        hwsearch("export", str(b.run_dir), "--trial", str(p), "--out", str(out))
        card = json.loads((out / CARD_FILE).read_text())
        exports[str(p)] = {"dir": _rel(out), "warnings": card["warnings"],
                           "accuracy": card["accuracy"], "latency": card["latency"], "size": card["size"]}
        b.save()
    if "resnet8" not in exports:
        exports["resnet8"] = export_reference(b)


def export_reference(b: Bench) -> dict:
    """ResNet-8's two files behind the raw-pixel adapter, checked by onnxruntime, and its card."""
    import onnx
    import onnxruntime as ort
    import resnet8
    import torch
    from onnx import numpy_helper

    from hwsearch.search.outputs import (
        CARD_FILE,
        FP32_FILE,
        INT8_FILE,
        onnx_accuracy,
        raw_pixels,
        with_input_adapter,
    )

    ref = b.results["reference"]
    data = b.final_data()
    state = torch.load(b.work / ref["variants"][ref["chosen"]]["weights"], map_location="cpu", weights_only=True)
    net = resnet8.deployed(state, data.num_classes)
    out = b.exports / "resnet8"
    out.mkdir(parents=True, exist_ok=True)
    networks = reference_models(net, data, out)
    pixels = raw_pixels(data, data.x_val)
    files = {}
    for name, network in networks.items():
        model = with_input_adapter(network, data, pixels.dtype)
        onnx.checker.check_model(model, full_check=True)
        files[name] = out / name
        onnx.save(model, files[name])
    acc = {name: onnx_accuracy(path.read_bytes(), pixels, data.y_val) for name, path in files.items()}
    m = meter(b.target())
    blobs = [networks[FP32_FILE].SerializeToString(), networks[INT8_FILE].SerializeToString(),
             files[FP32_FILE].read_bytes(), files[INT8_FILE].read_bytes()]
    net_shape, px_shape = (1, *INPUT), (1, *pixels.shape[1:])
    lat = measure(m, blobs, [net_shape, net_shape, px_shape, px_shape])
    latency = {"batch": 1, "threads": m.threads, "provider": m.provider, "measured_on": _host(),
               "scale": "the profile's (local-cpu), against its reference network",
               FP32_FILE: {"measured_ms": lat[0].mean_ms, "with_input_adapter_ms": lat[2].mean_ms},
               INT8_FILE: {"measured_ms": lat[1].mean_ms, "with_input_adapter_ms": lat[3].mean_ms}}
    size = {name: {"hwsearch_kb": resnet8.size_kb(net, 8 if name == INT8_FILE else 32),
                   "tensors_kb": sum(numpy_helper.to_array(t).nbytes for t in networks[name].graph.initializer)
                   / 1024, "on_disk_kb": files[name].stat().st_size / 1024} for name in files}
    v = ref["variants"][ref["chosen"]]
    recipe = ref["settings"]["recipe"]
    learned = recipe["quantizer"] == "lsq" and resnet8.QAT_BITS < recipe["learned_below"]
    grid = "grids learned (LSQ)" if learned else "max-abs weight scales, EMA activation ranges"
    card = {
        "model": "ResNet-8 (MLPerf Tiny image classification, Keras resnet_v1_eembc), rebuilt in torch",
        "parameters": {"keras_count": ref["params"], "deployed_after_folding": ref["params_deployed"]},
        "macs": ref["macs"],
        "input": {"name": "pixels", "layout": "NHWC", "dtype": str(pixels.dtype), "shape": ["N", *pixels.shape[1:]],
                  "pixel_max": round(1 / data.scale),
                  "preprocessing": "inside the graph, as in the candidates' files: pixels scaled, minus the "
                                   "training split's per-channel mean, divided by its std",
                  "output": "logits (N, classes), float32"},
        "classes": list(data.classes),
        "training": {"variant": ref["chosen"], "temperature": v["temperature"], "alpha": v["alpha"],
                     "teacher": ref["teacher"] if v["alpha"] else None, "settings": ref["settings"],
                     "quantization": f"w8a8 quantization-aware fine-tuning (hwsearch's fake quantizers, {grid})",
                     "train_images": ref["train_images"], "images_per_s": v["images_per_s"],
                     "timings": v["timings"], "device": v["device"], "host": v["host"], "gpu": v["gpu"]},
        "accuracy": {"validation_images": len(data.y_val), "final": ref["accuracy"],
                     "torch": resnet8.accuracy(net, torch.as_tensor(data.x_val), torch.as_tensor(data.y_val)),
                     FP32_FILE: acc[FP32_FILE], INT8_FILE: acc[INT8_FILE],
                     "variants": {n: r["accuracy"] for n, r in ref["variants"].items()}},
        "latency": latency,
        "size": size,
        "runtime": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                    "opset": 17},
        "files": {name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for name, p in files.items()},
        "int8_calibration": "onnxruntime quantize_static as hwsearch export does: QDQ, per-channel int8 weights, "
                            "uint8 activations, MinMax on 512 training images",
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    log(f"ResNet-8 exported to {out}: fp32 {acc[FP32_FILE]:.2%}, int8 {acc[INT8_FILE]:.2%}; int8 network "
        f"{lat[1].mean_ms:.4f} ms")
    return {"dir": _rel(out), "accuracy": card["accuracy"], "latency": latency, "size": size}


def _rel(path: Path) -> str:
    """A path as the results record it: relative to the checkout where it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _host() -> str:
    from hwsearch.targets import host_name

    return host_name()


def paired_test(b: Bench, folders: dict[str, Path]) -> dict[str, dict]:
    """Each candidate's int8 file against ResNet-8's on the same validation images (onnxruntime,
    the files as shipped): the images only one of the two classifies right, and McNemar's exact
    two-sided p-value on them (how likely a difference this large is between two equally accurate
    models): a margin of a few images says nothing about which model is the more accurate."""
    import numpy as np
    from scipy.stats import binomtest

    from hwsearch.search.outputs import INT8_FILE, onnx_predictions, raw_pixels

    data = b.final_data()
    pixels = raw_pixels(data, data.x_val)

    def right(folder: Path) -> np.ndarray:
        return np.asarray(onnx_predictions((folder / INT8_FILE).read_bytes(), pixels) == data.y_val)

    base = right(folders["resnet8"])
    out = {}
    for n, folder in folders.items():
        if n == "resnet8":
            continue
        mine = right(folder)
        only_mine, only_base = int((mine & ~base).sum()), int((~mine & base).sum())
        p = binomtest(min(only_mine, only_base), only_mine + only_base, 0.5).pvalue if only_mine + only_base else 1.0
        out[n] = {"images": len(base), "only_candidate_right": only_mine, "only_resnet8_right": only_base,
                  "accuracy_points": 100 * (mine.mean() - base.mean()), "mcnemar_p": float(p)}
    return out


def phase_compare(b: Bench) -> None:
    """(f) Every model timed together; dominance with margins, paired test, Kendall's tau and the plot."""
    from scipy.stats import kendalltau

    from hwsearch.search.outputs import FP32_FILE, INT8_FILE
    from hwsearch.spaces import Candidate, build_plan

    exports = b.results["export"]
    names = ["resnet8", *[str(p) for p in chosen_trials(b)]]
    folders = {n: ROOT / exports[n]["dir"] for n in names}  # an absolute "dir" stays as it is
    blobs, shapes, keys = [], [], []
    for n in names:
        for f in (INT8_FILE, FP32_FILE):
            shipped = (folders[n] / f).read_bytes()
            blobs += [network_of(shipped), shipped]
            shapes += [(1, *INPUT), (1, INPUT[1], INPUT[2], INPUT[0])]
            keys += [(n, f, "network"), (n, f, "file")]
    m = meter(b.target())
    lat = dict(zip(keys, (x.mean_ms for x in measure(m, blobs, shapes))))
    ref = b.results["reference"]
    rows = []
    for n in names:
        row = {"model": "ResNet-8" if n == "resnet8" else f"trial {n}",
               "int8_ms": lat[(n, INT8_FILE, "network")], "fp32_ms": lat[(n, FP32_FILE, "network")],
               "int8_file_ms": lat[(n, INT8_FILE, "file")], "fp32_file_ms": lat[(n, FP32_FILE, "file")],
               "int8_file_accuracy": exports[n]["accuracy"][INT8_FILE],
               "fp32_file_accuracy": exports[n]["accuracy"][FP32_FILE]}
        if n == "resnet8":
            row.update(accuracy=ref["accuracy"], search_accuracy=None, int8_size_kb=ref["int8_size_kb"],
                       macs=ref["macs"], images_per_s=ref["variants"][ref["chosen"]]["images_per_s"])
        else:
            fin = b.results["final"]["trials"][n]
            trial = next(t for t in b.results["search"]["trials"] if t["number"] == int(n))
            plan = build_plan(Candidate.from_string(fin["candidate"]), INPUT, CLASSES)
            row.update(candidate=fin["candidate"], accuracy=fin["accuracy"], search_accuracy=fin["search_accuracy"],
                       predicted_ms=trial["latency_ms"], int8_size_kb=exports[n]["size"][INT8_FILE]["predicted_kb"],
                       searched_size_kb=trial["size_kb"], macs=plan.macs, images_per_s=fin["images_per_s"],
                       search_images_per_s=trial.get("images_per_s"))
        rows.append(row)
    base, cands = rows[0], rows[1:]

    def check(c: dict, acc: str, ms: str) -> dict:
        margins = {"accuracy_points": 100 * (c[acc] - base[acc]),
                   "latency_ms": base["int8_ms"] - c[ms], "latency_pct": 100 * (base["int8_ms"] / c[ms] - 1),
                   "int8_size_kb": base["int8_size_kb"] - c["int8_size_kb"]}
        return {"dominates": margins["accuracy_points"] >= 0 and margins["latency_ms"] >= 0
                and margins["int8_size_kb"] >= 0, "margins": margins}

    paired = paired_test(b, folders)
    for n, c in zip(names[1:], cands):
        c["paired_int8_files"] = paired[n]
        c["vs_resnet8"] = check(c, "accuracy", "int8_ms")
        c["vs_resnet8_int8_files"] = check(c, "int8_file_accuracy", "int8_ms")
        c["vs_resnet8_predicted_latency"] = check(c, "accuracy", "predicted_ms")
    winners = [c for c in cands if c["vs_resnet8"]["dominates"]]
    best = max(winners or cands, key=lambda c: (c["vs_resnet8"]["margins"]["accuracy_points"], -c["int8_ms"]))
    tau = None
    if len(cands) >= 2:
        t = kendalltau([c["search_accuracy"] for c in cands], [c["accuracy"] for c in cands])
        tau = {"tau": None if t.statistic != t.statistic else float(t.statistic),
               "p_value": None if t.pvalue != t.pvalue else float(t.pvalue), "n": len(cands)}
    b.results["compare"] = {
        "rows": rows, "dominated": bool(winners), "dominating_trials": [c["model"] for c in winners],
        "best": {"model": best["model"], **best["vs_resnet8"]}, "kendall_tau": tau,
        "basis": ("accuracy: final validation accuracy (w8a8 network in torch; 'int8_files': onnxruntime on the "
                  "int8 files); latency: int8 network (adapter excluded) measured end to end on the profile's scale, "
                  "all models in one interleaved batch; size: int8, hwsearch's arithmetic"),
        "host_noise": m.host()}
    plot(b, rows)
    verdict = "dominates" if best["vs_resnet8"]["dominates"] else "does not dominate"
    mg = best["vs_resnet8"]["margins"]
    pace = f"ResNet-8 takes {1 + mg['latency_pct'] / 100:.2f}x its time"
    log(f"{best['model']} {verdict} ResNet-8: accuracy {mg['accuracy_points']:+.2f} points, int8 latency "
        f"{-mg['latency_ms'] * 1000:+.1f} us ({pace}), int8 size {-mg['int8_size_kb']:+.1f} KB")
    pt = best["paired_int8_files"]
    log(f"{best['model']} against ResNet-8, int8 files on the same {pt['images']} images: "
        f"{pt['only_candidate_right']} right only by it, {pt['only_resnet8_right']} only by ResNet-8 "
        f"(McNemar's exact p = {pt['mcnemar_p']:.2f})")
    if tau:
        log(f"Kendall's tau, search vs final accuracy over {tau['n']} candidates: {tau['tau']}")


def plot(b: Bench, rows: list[dict]) -> None:
    try:
        import matplotlib
    except ImportError:
        log("no matplotlib (pip install -e '.[bench]'): no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in b.results["search"]["trials"] if t["state"] == "complete"]
    base, cands, ref = rows[0], rows[1:], b.results["reference"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, x, xlabel in ((axes[0], "latency", "int8 latency, ms (local-cpu, 1 thread, batch 1)"),
                          (axes[1], "size", "int8 size, KB")):
        sx = [t["latency_ms"] if x == "latency" else t["size_kb"] for t in trials]
        ax.scatter(sx, [t["accuracy"] for t in trials], s=14, c="0.75", label="search trials (search accuracy)")
        fr = [t for t in trials if t.get("pareto")]
        ax.scatter([t["latency_ms"] if x == "latency" else t["size_kb"] for t in fr], [t["accuracy"] for t in fr],
                   s=22, c="tab:blue", label="search front (search accuracy, predicted)")
        for c in cands:
            cx = c["int8_ms"] if x == "latency" else c["int8_size_kb"]
            px = c["predicted_ms"] if x == "latency" else c["searched_size_kb"]
            ax.annotate("", (cx, c["accuracy"]), (px, c["search_accuracy"]),
                        arrowprops={"arrowstyle": "->", "color": "tab:red", "alpha": 0.5})
            ax.scatter([cx], [c["accuracy"]], s=40, c="tab:red", zorder=3)
            ax.annotate(c["model"], (cx, c["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        rx = base["int8_ms"] if x == "latency" else base["int8_size_kb"]
        ax.scatter([rx], [base["accuracy"]], marker="*", s=220, c="black", zorder=4,
                   label=f"ResNet-8, {ref['chosen']} (final accuracy, measured)")
        for name, v in ref["variants"].items():
            if name != ref["chosen"]:
                ax.scatter([rx], [v["accuracy"]], marker="*", s=160, facecolors="none", edgecolors="black",
                           zorder=4, label=f"ResNet-8, {name}")
        ax.axvline(rx, color="black", ls=":", lw=0.8)
        ax.axhline(base["accuracy"], color="black", ls=":", lw=0.8)
        top = max([base["accuracy"], *(c["accuracy"] for c in cands)]) + 0.02
        ax.fill_between([ax.get_xlim()[0], rx], base["accuracy"], top, color="tab:green", alpha=0.08,
                        label="dominates ResNet-8 here")
        ax.scatter([], [], s=40, c="tab:red", label="final candidates (final accuracy, measured)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("CIFAR-10: the searched front against MLPerf Tiny's ResNet-8, trained the same way")
    fig.tight_layout()
    path = b.path.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"plot: {path}")


TIMED_PHASES = {"profile", "search", "export", "compare"}  # they price or time networks on this host's profile
PHASES = (("profile", phase_profile), ("reference", phase_reference), ("search", phase_search),
          ("final", phase_final), ("export", phase_export), ("compare", phase_compare))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 as an image folder")
    ap.add_argument("--epochs", type=int, help="final dense epochs, for the candidates and ResNet-8 (default 20)")
    ap.add_argument("--finetune-epochs", type=int, help="final fine-tuning epochs (default 3)")
    ap.add_argument("--trials", type=int, help="search trials (default 40)")
    ap.add_argument("--final", type=int, help="candidates of the front trained at the final fidelity (default 4)")
    ap.add_argument("--work", type=Path,
                    help="runs, checkpoints, profile cache (default bench/state/reference[-RUN], tracked by git)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--run", default="depthwise", choices=list(RUNS),
                    help="which run: 'fused' adds fused blocks to the space, 'fused-20k' searches them at 4 + 1 "
                         "epochs on 20,000 images without the teacher, 'res32' the same with the first stage at "
                         "32x32 (stage strides 1, 2, 2, as ResNet-8), 'res32-depth' that again after depth joined "
                         "the cost-aware sampler's features, 'res32-depth-epyc' that again whole on the AMD EPYC host; "
                         "each in its own work folder, results and "
                         "exports (reference-RUN), ResNet-8's training taken from the first run (default depthwise)")
    ap.add_argument("--redo", choices=["reference", "compare"], help="run a finished phase again: 'reference' "
                    "trains ResNet-8 here, in this run, instead of taking its training over from the first run (its "
                    "export and the comparison follow; the record taken over is kept as 'reference_taken_over'); "
                    "'compare' times every model afresh and repeats the comparison (on a host of the profile's CPU "
                    "model)")
    ap.add_argument("--smoke", action="store_true", help="the whole flow, tiny, into its own work folder and results")
    ap.add_argument("--phases", help="run only these phases, comma-separated (e.g. 'reference', which trains "
                    "ResNet-8 and runs on any host: a stretch of work while the host is not quiet enough to time)")
    args = ap.parse_args()
    names = [name for name, _ in PHASES]
    only = set(args.phases.split(",")) if args.phases else set(names)
    if only - set(names):
        sys.exit(f"error: --phases: no phase {', '.join(sorted(only - set(names)))}; the phases are {', '.join(names)}")
    check_data(args.data)
    run = dict(RUNS[args.run])
    if args.smoke:  # the smoke run's tiny space, with the run's changes to it
        changed = {k: v for k, v in run.pop("space").items() if SPACE.get(k) != v}
        if "stages" in changed:  # the run's strides, on the smoke's own stages
            changed["stages"] = [{**mine, **{k: v for k, v in theirs.items() if k == "stride"}}
                                 for mine, theirs in zip(SMOKE_SPACE["stages"], changed["stages"])]
        run = {"space": {**SMOKE_SPACE, **changed}}
    changes = {k: v for k, v in (("epochs", args.epochs), ("finetune_epochs", args.finetune_epochs),
                                 ("trials", args.trials), ("final", args.final)) if v is not None}
    sizes = Sizes(**{**asdict(SMOKE if args.smoke else Sizes()), **run, **changes, "run": args.run})
    args.work = args.work or (SMOKE_WORK if args.smoke else STATE / sizes.name)
    b = Bench(args, sizes)
    use_cache(b.work)  # before any target is made
    b.work.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in asdict(sizes).items() if k not in ("space", "run", "seeds", "profile_from")}
    if b.results.get("sizes", settings) != settings:
        sys.exit(f"error: {b.path} holds a benchmark of other sizes ({b.results['sizes']}); delete it and "
                 f"{b.work} to start again, or give the same options")
    images = count_images(Path(args.data))
    est = estimate(sizes, images, args.device)
    b.results.update(sizes=settings, space=sizes.space, host=_host(), gpu=gpu_name(), data=str(args.data),
                     images=images, estimate_s=est)
    b.results.setdefault("invocations", []).append(datetime.now(UTC).isoformat(timespec="seconds"))
    b.save()
    reopen_for_seeds(b)
    if args.redo == "reference" and "reused_from" in b.results.get("reference", {}):
        b.results["reference_taken_over"] = b.results.pop("reference")
        b.results["phases"]["reference"] = {"done": False, "wall_s": 0.0, "stretches": 0}
        b.results.get("export", {}).pop("resnet8", None)
        for name in ("export", "compare"):
            if name in b.results["phases"]:
                b.results["phases"][name]["done"] = False
        b.save()
    elif args.redo == "compare" and b.done("compare"):
        b.results["phases"]["compare"]["done"] = False
        b.save()
    log(f"{b.name}{' (smoke)' if args.smoke else ''}: {images} images, host {_host()}, GPU {gpu_name() or 'none'}; "
        f"estimated on 2 CPU cores: " + ", ".join(f"{k} {v / 60:.0f} min" for k, v in est.items())
        + f"; total {sum(est.values()) / 3600:.1f} h")
    for name, fn in PHASES:
        if b.done(name):
            log(f"{name}: done before ({b.results['phases'][name]['wall_s'] / 60:.1f} min)")
            continue
        if name not in only:
            log(f"{name}: not asked for (--phases)")
            continue
        profiled_on = b.results.get("profile", {}).get("host")
        if name in TIMED_PHASES and profiled_on and profiled_on != _host():
            sys.exit(f"error: phase {name!r} prices or times networks, and this benchmark's profile was measured on "
                     f"{profiled_on!r}; this host is {_host()!r}, whose latencies are on another scale. Resume it on "
                     f"a {profiled_on!r} host, or start again with another --work and results file")
        with b.phase(name):
            fn(b)
    total = sum(p["wall_s"] for p in b.results["phases"].values())
    total += b.results.get("reference", {}).get("reused_from", {}).get("wall_s", 0.0)  # ResNet-8's, trained there
    b.results["total_wall_s"] = total
    b.save()
    left = [name for name in names if not b.done(name)]
    log(f"\n{'phases left: ' + ', '.join(left) if left else 'all phases'}: {total / 60:.1f} min so far; "
        f"results in {b.path}")


if __name__ == "__main__":
    main()
