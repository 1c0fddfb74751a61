"""Targets by name (refusing duplicates), or a profile file by path.

Registered: ``local-cpu`` (this host, measured on first use) and every profile shipped in
``targets/profiles/`` under its file name (``rpi4-a72`` ...), measured or estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hwsearch.targets._target import Target

_Factory = TypeVar("_Factory", bound=Callable[[], Target])

_REGISTRY: dict[str, tuple[Callable[[], Target], str | Callable[[], str]]] = {}
_CACHE: dict[str, Target] = {}
SHIPPED = Path(__file__).parent / "profiles"


def register_target(name: str, description: str | Callable[[], str]) -> Callable[[_Factory], _Factory]:
    """Decorator registering a factory ``() -> Target`` under ``name``; the description may be
    a callable, evaluated when targets are listed."""
    def deco(factory: _Factory) -> _Factory:
        if name in _REGISTRY:
            raise ValueError(f"target {name!r} is already registered; register yours under another name, or give "
                             "a spec the path of its profile .json instead of a name")
        _REGISTRY[name] = (factory, description)
        return factory
    return deco


def list_targets() -> dict[str, str]:
    """Registered target names and their one-line descriptions."""
    return {name: desc() if callable(desc) else desc for name, (_, desc) in sorted(_REGISTRY.items())}


def target_names() -> list[str]:
    return sorted(_REGISTRY)


def is_target(name_or_path: str) -> bool:
    return name_or_path in _REGISTRY or (name_or_path.endswith(".json") and Path(name_or_path).is_file())


def is_estimate(name_or_path: str) -> bool:
    """True when a target's latencies are estimates, not measurements. The profile's own
    ``measured: false`` decides, however the target is named or passed (a registered name or the
    path of a file); ``local-cpu`` measures by definition and is not made here (it may measure on
    creation). Raises as :func:`get_target` does for an unknown name or a missing file."""
    return name_or_path != "local-cpu" and not get_target(name_or_path).measured


def estimate_band(name_or_path: str) -> str | None:
    """How far an estimated target's latencies were from published measurements of real networks
    (e.g. 'estimate, x0.62-0.91 of 9 published measurements (median x0.76)'); None for a measured
    target or an estimate without a validation."""
    if not is_estimate(name_or_path):
        return None
    profile = get_target(name_or_path).profile
    return profile.validation.band() if profile is not None and profile.validation is not None else None


def get_target(name_or_path: str) -> Target:
    """The target registered under a name, or the profile at a path (``.json``). One instance per
    name in a process, so measurements made on first use are shared."""
    if name_or_path not in _CACHE:
        if name_or_path in _REGISTRY:
            _CACHE[name_or_path] = _REGISTRY[name_or_path][0]()
        elif name_or_path.endswith(".json"):
            from hwsearch.targets._profile_targets import ProfileTarget

            _CACHE[name_or_path] = ProfileTarget.load(name_or_path)
        else:
            known = ", ".join(sorted(_REGISTRY)) or "none"
            raise KeyError(f"unknown target {name_or_path!r}: registered targets are {known}, "
                           "or give the path of a profile .json")
    return _CACHE[name_or_path]


@register_target("local-cpu", "this host's CPU, onnxruntime, 1 thread, measured on first use")
def _local_cpu() -> Target:
    from hwsearch.targets._profile_targets import LocalCpuTarget

    return LocalCpuTarget(threads=1)


def _register_shipped(path: Path) -> None:
    def factory() -> Target:
        from hwsearch.targets._profile_targets import ProfileTarget

        return ProfileTarget.load(path, name=path.stem)

    def describe() -> str:
        return factory().description

    register_target(path.stem, describe)(factory)


for _path in sorted(SHIPPED.glob("*.json")):
    _register_shipped(_path)
