"""The search spec: one YAML file declaring the dataset, the target device and its budget, the
objectives, the space, the teacher and the search settings (pydantic v2, unknown keys refused).

Relative paths in a spec (dataset path, teacher model, a target profile, storage file) are
resolved against the spec file's folder, so a spec works from any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwsearch.search.errors import SearchError
from hwsearch.spaces._config import SpaceSpec
from hwsearch.targets._cost import COST_METRICS

__all__ = [
    "OBJECTIVES",
    "Budget",
    "DatasetSpec",
    "EarlyStopping",
    "SearchSettings",
    "Spec",
    "SpecError",
    "TeacherSpec",
    "TrainingSpec",
    "load_spec",
    "parse_spec",
]

OBJECTIVES = {"accuracy": "maximize", **dict.fromkeys(COST_METRICS, "minimize")}


class SpecError(SearchError, ValueError):
    """A spec that cannot be used. ``problems`` holds one line per problem: field path, the value
    given, what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Budget(_Strict):
    """What the device allows; each limit is optional. Budgets are constraints, not objectives."""

    latency_ms: float | None = Field(default=None, gt=0)
    size_kb: float | None = Field(default=None, gt=0)
    peak_memory_kb: float | None = Field(default=None, gt=0)

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DatasetSpec(_Strict):
    name: str = Field(default="digits", description="digits | imagefolder | npz | cifar10")
    path: Path | None = Field(default=None, description="folder or file, for all but digits")
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    limit: int | None = Field(default=None, ge=20, description="use at most this many images (seeded)")
    image_size: int | None = Field(default=None, ge=8, le=224, description="resize images to this side")
    seed: int | None = Field(default=None, ge=0, description=(
        "seed of the subset and the train/validation split; default: search.seed. Fix it to compare "
        "search seeds on one task"))
    bad_images: Literal["fail", "skip"] = Field(default="fail", description=(
        "imagefolder: an image that cannot be decoded (corrupt, truncated) stops the run naming the "
        "file (fail), or is left out with a warning that names it (skip)"))

    @model_validator(mode="after")
    def _known(self) -> DatasetSpec:
        from hwsearch.search.training._datasets import dataset_sources

        sources = dataset_sources()
        if self.name not in sources:
            raise ValueError(f"unknown dataset {self.name!r}; allowed: {', '.join(sorted(sources))}")
        source = sources[self.name]
        if source.needs_path and self.path is None:
            raise ValueError(f"dataset {self.name!r} needs a 'path'")
        if not source.needs_path and self.path is not None:
            takes = ", ".join(sorted(n for n, s in sources.items() if s.needs_path))
            raise ValueError(f"dataset {self.name!r} is bundled and takes no 'path' (given {str(self.path)!r}); "
                             f"remove it, or name the kind of data the path holds: {takes}")
        if self.image_size is not None and not source.resizes:
            takes = ", ".join(sorted(n for n, s in sources.items() if s.resizes))
            raise ValueError(f"dataset {self.name!r} does not resize its images (image_size {self.image_size} "
                             f"given); remove image_size, or store the images at that size; sources that "
                             f"resize: {takes}")
        return self


class TeacherSpec(_Strict):
    """The distillation teacher: trained once per run (default), or an ONNX model from anywhere,
    whose input and output conventions are declared here (the defaults: float NCHW images in
    [0, 1], logits out). A fixed batch size in the model's input is read from the model."""

    onnx: Path | None = Field(default=None, description="a teacher ONNX model (float images -> logits)")
    extra_epochs: int = Field(default=4, ge=0, description="epochs the trained teacher gets beyond a candidate's")
    layout: Literal["NCHW", "NHWC"] = Field(default="NCHW", description="the teacher's image layout")
    pixel_max: float = Field(default=1.0, gt=0, description=(
        "the value of a full-intensity pixel in the teacher's input, before mean and std: 1 for "
        "images in [0, 1], 255 for raw 0..255 pixels"))
    mean: list[float] | None = Field(default=None, description=(
        "per-channel mean the teacher subtracts, in the units of pixel_max (e.g. [0.485, 0.456, 0.406])"))
    std: list[float] | None = Field(default=None, description="per-channel standard deviation it divides by")
    output: Literal["logits", "probabilities"] = Field(default="logits", description=(
        "what the teacher outputs: logits, or softmax probabilities (turned into log-probabilities)"))

    @model_validator(mode="after")
    def _conventions(self) -> TeacherSpec:
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and (not v or (name == "std" and min(v) <= 0)):
                raise ValueError(f"teacher.{name} must be a non-empty list{' of positive values' * (name == 'std')}, "
                                 f"got {v}")
        return self


class TrainingSpec(_Strict):
    """How every candidate (and the trained teacher) is trained, beyond the epochs, batch size and
    learning rate under ``search`` (see :mod:`hwsearch.search.training._recipe`)."""

    optimizer: Literal["adamw", "sgd"] = Field(default="adamw", description="adamw, or sgd with Nesterov momentum")
    schedule: Literal["onecycle", "cosine"] = Field(default="onecycle", description=(
        "onecycle, or cosine decay after a linear warm-up"))
    warmup: float = Field(default=0.15, ge=0, lt=1, description="share of the training steps spent warming up")
    weight_decay: float = Field(default=1e-4, ge=0, description="on weights only, never on batch norm or biases")
    label_smoothing: float | None = Field(default=None, ge=0, lt=1, description=(
        "smoothing of the labels' cross-entropy; default: 0.1 for a training of 12 dense epochs or more "
        "(the teacher's, the final stage's), else 0"))
    crop_padding: int | None = Field(default=None, ge=0, description=(
        "random crops after padding this many pixels each side; 0 is off; default, for a training of 12 "
        "dense epochs or more: an eighth of the image side (4 at 32x32, 1 at 8x8), else off"))
    flip: bool | None = Field(default=None, description=(
        "random horizontal flips; default, for a training of 12 dense epochs or more: on for photos, off "
        "where a mirror image changes the class (digits); off for shorter trainings"))
    cutout: int = Field(default=0, ge=0, description="side of the square cut out of each training image; 0 is off")
    channels_last: bool = Field(default=True, description="train in the channels-last memory layout (faster on CPUs)")
    quantizer: Literal["lsq", "maxabs"] = Field(default="lsq", description=(
        "how quantization-aware fine-tuning puts layers below 8 bits on their grid: lsq learns per-channel "
        "weight steps and activation ranges (learned step size quantization); maxabs scales weights by "
        "each channel's largest magnitude and tracks activation ranges by a moving min and max, as 8-bit "
        "layers always are"))


class EarlyStopping(_Strict):
    """Multi-objective asynchronous successive halving on validation accuracy across dense epochs
    (see :mod:`hwsearch.search.algorithms._early_stopping`). Latency and size are known before training: only accuracy
    needs the epochs."""

    enabled: bool = Field(default=False, description="stop candidates that trail the others at a rung")
    min_epochs: int = Field(default=2, ge=1, description="dense epochs before the first comparison (first rung)")
    reduction_factor: int = Field(default=3, ge=2, description=(
        "eta: rungs at min_epochs * eta**k epochs; the top 1/eta (and every candidate nothing "
        "dominates at the rung) go on"))
    margin: float = Field(default=0.01, ge=0, le=1, description=(
        "accuracy lead (0-1) a cheaper candidate needs at a rung to count as dominating another"))


class SearchSettings(_Strict):
    trials: int = Field(default=30, ge=1)
    sampler: Literal["tpe", "nsga2", "random", "gp", "cost-aware"] = Field(default="tpe", description=(
        "tpe (the default), nsga2, random, gp: Gaussian-process Bayesian optimisation (log EHVI, "
        "constraint-aware), or cost-aware: prices candidates before proposing them, never proposes "
        "one over budget, and models accuracy alone (expected hypervolume improvement)"))
    seed: int = Field(default=0, ge=0)
    epochs: int = Field(default=8, ge=1, description="dense training epochs per candidate")
    finetune_epochs: int = Field(default=2, ge=0, description="quantization-aware fine-tuning epochs after pruning")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    workers: int = Field(default=1, ge=1, description=(
        "candidates trained at once: processes on this machine, or Ray actors with backend ray"))
    backend: Literal["local", "ray"] = Field(default="local", description=(
        "local: this process (1 worker) or a process pool; ray: Ray actors, local or on a cluster"))
    address: str | None = Field(default=None, description=(
        "backend ray: the cluster to join (HOST:PORT of 'ray start --head'); none starts a local Ray"))
    cpus_per_trial: float | None = Field(default=None, gt=0, description=(
        "CPUs a trial reserves, and its torch threads; default: this machine's CPUs / workers "
        "locally, 1 on Ray"))
    gpus_per_trial: float = Field(default=0, ge=0, description="GPUs a trial reserves on Ray (fractions share one)")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    keep_weights: bool = Field(default=True, description="save each feasible candidate's trained weights")
    seed_corners: bool = Field(default=True, description=(
        "start a new study with the space's fastest and smallest candidates, and the one with the most "
        "multiply-adds the budget admits, so the front spans the trade-off up to the budget"))
    seeds: list[str] = Field(default_factory=list, description=(
        "candidates to try first, as candidate strings (as 'hwsearch pareto' prints them): the model "
        "you deploy today, or a known good design, in the space's terms. Each is trained once, even "
        "when the list grows on a continued study; one over budget is recorded as such"))


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    target: str = Field(default="local-cpu", description="a registered target name or a profile .json path")
    budget: Budget = Field(default_factory=Budget)
    # "accuracy" and the cost metrics (hwsearch.targets.COST_METRICS; a test checks they agree)
    objectives: list[Literal["accuracy", "latency_ms", "size_kb", "peak_memory_kb"]] = Field(
        default=["accuracy", "latency_ms", "size_kb"], min_length=1)
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    search: SearchSettings = Field(default_factory=SearchSettings)
    storage: str | None = Field(
        default=None, description="an Optuna storage URL; default: a journal file in the run directory"
    )

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"objectives must be distinct, got {v}")
        if "accuracy" not in v:
            raise ValueError("objectives must include 'accuracy'")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        from hwsearch.targets._registry import is_target, target_names

        if not is_target(v):
            raise ValueError(f"unknown target {v!r}; registered: {', '.join(target_names())}, "
                             "or the path of an existing profile .json")
        return v

    @model_validator(mode="after")
    def _seeds_in_space(self) -> Spec:
        from hwsearch.spaces import Candidate, params_of

        for i, text in enumerate(self.search.seeds):
            try:
                params_of(Candidate.from_string(text), self.space)
            except ValueError as e:
                raise ValueError(f"search.seeds[{i}] {text!r} is not a candidate of the spec's space: {e}") from None
        return self

    @property
    def data_seed(self) -> int:
        """The seed of the dataset's subset and split."""
        return self.search.seed if self.dataset.seed is None else self.dataset.seed

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _resolve(data: Any, base: Path) -> Any:
    """Resolve the spec's relative paths against ``base`` (before validation)."""
    if not isinstance(data, dict):
        return data

    def fix(section: Any, key: str, only_files: bool = False, where: str = "") -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str):
            value = section[key]
            if "\0" in value:
                raise SpecError([f"{where}{key}: a path cannot contain a NUL character (given {value!r})"])
            if only_files and not value.endswith(".json"):
                return
            if "://" not in value and not Path(value).is_absolute():
                section[key] = str((base / value).resolve())

    fix(data.get("dataset"), "path", where="dataset.")
    fix(data.get("teacher"), "onnx", where="teacher.")
    fix(data, "target", only_files=True)
    return data


def _format(err: Any) -> str:  # a pydantic ErrorDetails
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown field (given {err['input']!r}); check the spelling, or see 'hwsearch spec-schema'"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    given = err.get("input")
    shown = repr(given) if not isinstance(given, dict) else "{...}"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{loc}: {msg} (given {shown})"


def parse_spec(data: Any, base: Path | None = None) -> Spec:
    """Validate a spec given as data; raises :class:`SpecError` with one line per problem."""
    if not isinstance(data, dict):
        raise SpecError([f"(top level): a spec is a mapping of fields, got {type(data).__name__}"])
    data = _resolve(dict(data), base or Path.cwd())
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError([_format(err) for err in e.errors()]) from None


def load_spec(path: str | Path) -> Spec:
    """Read a YAML spec with the safe loader and validate it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError([f"{path}: cannot read the spec ({e.strerror or e})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: not valid YAML ({str(e).splitlines()[0]})"]) from None
    return parse_spec(data, path.parent.resolve())
