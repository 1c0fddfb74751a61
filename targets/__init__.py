"""WHERE a candidate runs: device profiles, the measurement of layers with onnxruntime, and the
one function that prices a candidate (``Target.price``). onnxruntime loads only when a target
measures or a profile target is created."""

from targets.base import Target, UnpriceableError
from targets.cost import Cost, Latency, peak_memory_kb, size_kb
from targets.profile import Profile, ProfileError, layer_key
from targets.registry import get_target, is_target, list_targets, register_target, target_names

__all__ = [
    "Cost", "Latency", "Profile", "ProfileError", "Target", "UnpriceableError", "get_target",
    "is_target", "layer_key", "list_targets", "peak_memory_kb", "register_target", "size_kb", "target_names",
]
