"""Submitting a spec to the service: validated, confined to the data roots, then queued.

Nothing in a spec is executed: it is YAML read with the safe loader and validated by the
pydantic spec. A submitted spec may read only under the service's data roots (its dataset path,
its ONNX teacher, a target profile file) and never chooses where it writes: the run directory
is the service's (under its runs root), and a spec's own ``storage`` is refused.

Where the service is configured with a database (``hwsearch service --storage URL``, e.g. a
PostgreSQL server the cluster shares), every job's study is kept there, under a name of its own
(the spec's name, the job's id and a random suffix: several services may share one database); the
job's spec says so, and every reader finds the study through it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

import yaml

from hwsearch.search.service._jobs import Job, JobStore, SubmitError
from hwsearch.search.service._local import read_config
from hwsearch.search.spec import Spec, SpecError, load_spec, parse_spec


def read_spec(spec: str | Path, text: str | None = None, base: Path | None = None) -> Spec:
    """A spec from a file, or from YAML ``text`` (relative paths against ``base``); raises
    :class:`SubmitError` with the spec's field errors."""
    try:
        if text is None:
            return load_spec(spec)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpecError([f"not valid YAML ({str(e).splitlines()[0]})"]) from None
        return parse_spec(data, base)
    except SpecError as e:
        raise SubmitError(e.problems) from None


def confinement_problems(spec: Spec, data_roots: Sequence[str | Path]) -> list[str]:
    """What a spec reads outside the data roots, or where it would choose its own storage."""
    roots = [Path(r).resolve() for r in data_roots]
    reads = {"dataset.path": spec.dataset.path, "teacher.onnx": spec.teacher.onnx}
    if spec.target.endswith(".json"):
        reads["target"] = Path(spec.target)
    problems = []
    for field, path in reads.items():
        if path is None:
            continue
        real = Path(path).resolve()  # symbolic links followed: a link out of a root is outside it
        if not any(real.is_relative_to(root) for root in roots):
            allowed = ", ".join(map(str, roots)) or "none configured"
            problems.append(f"{field}: {path} is outside the service's data roots ({allowed}); "
                            "move the data under one, or start the service with --data-root")
    if spec.storage:
        problems.append("storage: the service keeps each job's study in its run directory; remove the field")
    return problems


def submit(store: JobStore, spec: Spec, data_roots: Sequence[str | Path], trials: int | None = None,
           backend: str = "local", address: str | None = None) -> Job:
    """Queue a validated spec, or raise :class:`SubmitError` (nothing queued) naming each problem.
    The job's study goes to the service's database when its root is configured with one."""
    problems = confinement_problems(spec, data_roots)
    if trials is not None and trials < 1:
        problems.append(f"--trials: at least 1 (given {trials})")
    if problems:
        raise SubmitError(problems)
    storage = read_config(store.root)["storage"]
    if not storage:
        return store.add(spec.name, spec.to_yaml(), trials, backend, address)
    suffix = secrets.token_hex(3)

    def in_database(job_id: int) -> str:
        study = f"{spec.name[:64 - len(str(job_id)) - len(suffix) - 2]}-{job_id}-{suffix}"
        return spec.model_copy(update={"storage": storage, "name": study}).to_yaml()

    return store.add(spec.name, in_database, trials, backend, address)
