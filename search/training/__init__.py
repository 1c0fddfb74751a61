"""The worker side: datasets by name, the training and evaluation of one candidate (train dense,
prune, fold, quantize, fine-tune, distil), and the distillation teacher.

Owns what runs inside a trial's process. Must not import the study, the algorithms, the engine
or the outputs: a worker never sees the study. torch loads only with the names of the training
itself, so that datasets and their errors stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsearch._lazy import lazy_exports
from hwsearch.search.training._allocator import keep_freed_memory
from hwsearch.search.training._datasets import (
    Data,
    DatasetError,
    DataSource,
    dataset_sources,
    load_dataset,
    register_dataset,
)
from hwsearch.search.training._teacher import (
    OnnxTeacher,
    TeacherError,
    check_teacher,
    teacher_candidate,
    teacher_logits,
)

if TYPE_CHECKING:
    from hwsearch.search.training._evaluate import (
        Evaluation,
        TrainSettings,
        TrialFailed,
        evaluate,
        evaluation_steps,
        predict_logits,
        resolve_device,
        train_settings,
        trained_network,
    )
    from hwsearch.search.training._recipe import Recipe, augment, optimizer_for, schedule_for

__getattr__ = lazy_exports(__name__, {"._evaluate": (
    "Evaluation", "TrainSettings", "TrialFailed", "evaluate", "evaluation_steps", "predict_logits", "resolve_device",
    "train_settings", "trained_network"), "._recipe": ("Recipe", "augment", "optimizer_for", "schedule_for")})

__all__ = ["Data", "DataSource", "DatasetError", "Evaluation", "OnnxTeacher", "Recipe", "TeacherError", "TrainSettings",
           "TrialFailed", "augment", "check_teacher", "dataset_sources", "evaluate", "evaluation_steps",
           "keep_freed_memory", "load_dataset", "optimizer_for", "predict_logits", "register_dataset", "resolve_device",
           "schedule_for", "teacher_candidate", "teacher_logits", "train_settings", "trained_network"]
