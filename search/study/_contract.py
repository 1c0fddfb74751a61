"""A spec is a contract with its study: what a trial measures may not change under it.

A study's trials are comparable only if every one of them was measured the same way: on the same
data and split, in the same space, trained by the same recipe, distilled from the same teacher,
priced on the same target, against the same objectives and budget. Re-running a run directory
with a spec that changes any of that would mix two experiments in one front, so it is refused,
naming the fields; the user starts a new run with ``--out``.

What only changes how the search is *run* continues the study: the trial count, the workers and
the backend (local, Ray, its address and resources), the device the training runs on, the
sampler, early stopping, whether weights are kept, the seeds (a new study's corners, the
largest candidate within budget, which a study begun before that seed existed gets when
continued, and the spec's own ``search.seeds``, each tried once) and the storage. Everything
else in the spec is part of the contract, so a field added to the spec later is covered without
a change here.

The contract is stored in the study (user attribute ``contract``) when the study is created. A
study created before contracts existed is checked against the ``spec.yaml`` its run directory
holds, when that file can still be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwsearch.search.errors import SearchError

# Fields of the spec that do not change what a trial measures (dotted paths; a section name
# covers everything in it).
RUN_ONLY = frozenset({
    "storage",
    "search.trials", "search.workers", "search.backend", "search.address", "search.cpus_per_trial",
    "search.gpus_per_trial", "search.device", "search.sampler", "search.early_stopping",
    "search.keep_weights", "search.seed_corners", "search.seeds",
})
CONTRACT_ATTR = "contract"
# Fields added to the spec after studies existed whose trials were measured one fixed way: a
# contract recorded before the field holds that value. Such a study resumes with the field set
# to it, and a spec with another value is refused as a change, saying so.
BEFORE_THE_FIELD: dict[str, Any] = {
    "training.quantizer": "maxabs",  # learned step sizes (LSQ) came later; every low-bit layer used max-abs scales
}


class SpecChanged(SearchError, ValueError):
    """A spec that changes what the trials of an existing study measure; ``fields`` names them."""

    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.fields = fields


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out[f"{prefix}.count"] = len(value)
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def _run_only(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in RUN_ONLY)


def contract_of(spec) -> dict[str, Any]:
    """The fields of ``spec`` that decide what a trial measures, flattened to dotted paths
    (``space.stages[0].widths``), with JSON values."""
    flat: dict[str, Any] = {}
    _flatten(spec.model_dump(mode="json"), "", flat)
    return {k: v for k, v in flat.items() if not _run_only(k)}


def spelled_out(path: Path) -> set[str]:
    """The dotted paths a spec file gives a value to (the rest took the defaults of its day)."""
    import yaml

    flat: dict[str, Any] = {}
    _flatten(yaml.safe_load(path.read_text()) or {}, "", flat)
    return set(flat)


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per field whose value differs: ``path: old -> new`` (absent fields shown as such;
    a field of :data:`BEFORE_THE_FIELD` absent from ``old`` has the value trials had before it)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in old and key in BEFORE_THE_FIELD:
            a, b = BEFORE_THE_FIELD[key], new.get(key, "(absent)")
            if a != b:
                lines.append(f"{key}: {a!r} (recorded before the field existed; set it to {a!r} to continue the "
                             f"study) -> {b!r}")
            continue
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if a != b:
            lines.append(f"{key}: {a!r} -> {b!r}")
    return lines


def check_contract(recorded: dict[str, Any], spec, where: str) -> None:
    """Raise :class:`SpecChanged` when ``spec`` measures trials otherwise than the contract
    ``recorded`` for the study in ``where``."""
    changes = changed_fields(recorded, contract_of(spec))
    if not changes:
        return
    shown = changes[:12] + ([f"... and {len(changes) - 12} more"] if len(changes) > 12 else [])
    raise SpecChanged(
        f"the spec changes what the trials of the study in {where} measure, so its results would not be "
        f"comparable with the {len(changes) > 1 and 'fields' or 'field'} below; start a new run with "
        f"--out DIR (or restore the spec: {where}/spec.yaml holds the one the study was run with)\n  "
        + "\n  ".join(shown),
        [c.split(":", 1)[0] for c in changes])
