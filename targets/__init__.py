"""WHERE a candidate runs: device profiles, the measurement of graphs with onnxruntime, and the
one function that prices a candidate (``Target.price``).

Owns latency, size and memory. Must not import :mod:`hwsearch.search` nor torch; may import
:mod:`hwsearch.spaces`. Importing it is light: onnx and onnxruntime load with the names that
measure or emit graphs (the meter, the profiler, the ONNX emitter), and when a profile target
is created.

Modules (private): ``_target`` (the interface, pricing), ``_cost`` (value objects, exact size and
memory), ``_profile_format`` (the profile file and its latency model), ``_profile_targets``
(targets backed by a profile; ``local-cpu``), ``_registry``, ``_meter`` (timing against a
reference), ``_profiling`` (measuring and calibrating a space; the latency check),
``_onnx_graph`` (the ONNX emitter), ``_estimate`` (roofline profiles), ``_errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsearch._lazy import lazy_exports
from hwsearch.targets._cost import COST_METRICS, Cost, Latency, network_macs, peak_memory_kb, precision_of, size_kb
from hwsearch.targets._errors import TargetError
from hwsearch.targets._extend import Extension, fit_extension
from hwsearch.targets._profile_format import (
    Calibration,
    Entry,
    Profile,
    ProfileError,
    SelfCheck,
    UnpriceableError,
    layer_key,
)
from hwsearch.targets._registry import (
    SHIPPED,
    estimate_band,
    get_target,
    is_estimate,
    is_target,
    list_targets,
    register_target,
    target_names,
)
from hwsearch.targets._target import Target

if TYPE_CHECKING:
    from hwsearch.targets._estimate import DEVICES, estimate_profile, estimate_profiles
    from hwsearch.targets._meter import HostTooNoisy, Meter, random_feed, reference_model, session, time_session
    from hwsearch.targets._onnx_graph import (
        identity_model,
        input_adapter_model,
        layer_model,
        layer_shapes,
        network_model,
        random_network_weights,
        random_weights,
    )
    from hwsearch.targets._profile_targets import LocalCpuTarget, ProfileTarget, host_name
    from hwsearch.targets._profiling import (
        check_latency,
        describe_check,
        measure_network,
        parallel_warning,
        profile_space,
        profile_warnings,
        sample_plans,
        space_fingerprint,
    )

__getattr__ = lazy_exports(__name__, {
    "._estimate": ("DEVICES", "estimate_profile", "estimate_profiles"),
    "._meter": ("HostTooNoisy", "Meter", "random_feed", "reference_model", "session", "time_session"),
    "._onnx_graph": ("identity_model", "input_adapter_model", "layer_model", "layer_shapes", "network_model",
                     "random_network_weights", "random_weights"),
    "._profile_targets": ("LocalCpuTarget", "ProfileTarget", "host_name"),
    "._profiling": ("check_latency", "describe_check", "measure_network", "parallel_warning", "profile_space",
                    "profile_warnings", "sample_plans", "space_fingerprint"),
})

__all__ = [
    "COST_METRICS", "DEVICES",
    "SHIPPED",
    "Calibration",
    "Cost",
    "Entry",
    "HostTooNoisy",
    "Latency",
    "LocalCpuTarget",
    "Meter",
    "Profile",
    "ProfileError",
    "ProfileTarget",
    "SelfCheck",
    "Target",
    "TargetError",
    "UnpriceableError",
    "check_latency",
    "describe_check",
    "Extension",
    "estimate_band",
    "estimate_profile",
    "estimate_profiles",
    "fit_extension",
    "get_target",
    "host_name",
    "identity_model",
    "is_estimate",
    "input_adapter_model",
    "is_target",
    "layer_key",
    "layer_model",
    "layer_shapes",
    "list_targets",
    "measure_network",
    "network_macs",
    "network_model",
    "parallel_warning",
    "peak_memory_kb",
    "precision_of",
    "profile_space",
    "profile_warnings",
    "random_feed",
    "random_network_weights",
    "random_weights",
    "reference_model",
    "register_target",
    "sample_plans",
    "session",
    "size_kb",
    "space_fingerprint",
    "target_names",
    "time_session",
]
