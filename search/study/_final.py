"""The final training stage's record of a run: per trial, ``final/trial_N/record.json`` (and the
weights beside it), next to the search's study, which it never changes.

The search ranks candidates at a cheap fidelity (few epochs, maybe a subset of the data);
``hwsearch train`` trains the chosen ones again at the final fidelity (:class:`Fidelity`: all the
data, the full schedule). A :class:`FinalRecord` holds both accuracies, so that the front can be
read at either fidelity and the two compared.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.search.errors import SearchError

__all__ = ["FINAL_DIR", "Fidelity", "FinalRecord", "final_records", "final_spec", "write_final_record"]

FINAL_DIR = "final"
RECORD = "record.json"


@dataclass(frozen=True)
class Fidelity:
    """How the final stage trains: dense and fine-tuning epochs, and how many of the dataset's
    images it takes (``limit``; None: all of them), split as the search's spec splits them."""

    epochs: int = 30
    finetune_epochs: int = 3
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.finetune_epochs < 0:
            raise SearchError(f"final training needs epochs >= 1 and finetune epochs >= 0, got {self.epochs} "
                              f"and {self.finetune_epochs}")
        if self.limit is not None and self.limit < 20:
            raise SearchError(f"a final training limit of {self.limit} images is too few (at least 20)")

    def describe(self) -> str:
        data = "all the data" if self.limit is None else f"{self.limit} images"
        return f"{self.epochs} + {self.finetune_epochs} epochs on {data}"


@dataclass(frozen=True)
class FinalRecord:
    """One trial trained at the final fidelity."""

    trial: int
    candidate: str
    fidelity: Fidelity
    accuracy: float  # on the final stage's validation split
    search_accuracy: float | None  # the search's, on its own split, at its fidelity
    train_images: int
    val_images: int
    weights: str  # relative to the run directory
    images_per_s: float  # dense-phase training throughput
    device: str
    host: str
    gpu: str | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    teacher: dict[str, Any] | None = None
    finished_at: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinalRecord:
        return cls(**{**d, "fidelity": Fidelity(**d["fidelity"])})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def final_spec(spec, fidelity: Fidelity):
    """The spec a final training runs under: the run's, with the fidelity's epochs and data, and
    early stopping off (every candidate trains to the end)."""
    search = spec.search.model_copy(update={
        "epochs": fidelity.epochs, "finetune_epochs": fidelity.finetune_epochs,
        "early_stopping": spec.search.early_stopping.model_copy(update={"enabled": False})})
    dataset = spec.dataset.model_copy(update={"limit": fidelity.limit})
    return spec.model_copy(update={"search": search, "dataset": dataset})


def final_records(run_dir: str | Path) -> dict[int, FinalRecord]:
    """Every finished final training of a run, by trial number (empty when none ran)."""
    out: dict[int, FinalRecord] = {}
    folder = Path(run_dir) / FINAL_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob(f"trial_*/{RECORD}")):
        try:
            record = FinalRecord.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SearchError(f"{path}: not a final training record hwsearch wrote ({type(e).__name__}: {e}); "
                              "delete its folder to train that trial again") from None
        out[record.trial] = record
    return out


def write_final_record(run_dir: str | Path, record: FinalRecord) -> Path:
    """Write ``final/trial_N/record.json`` atomically."""
    path = Path(run_dir) / FINAL_DIR / f"trial_{record.trial}" / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(RECORD + ".tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)
    return path
