"""The errors of the targets: one root, :class:`TargetError`, so that callers catch it once.

Each error keeps its builtin base (a corrupt profile is still a ``ValueError``).
"""

from __future__ import annotations

__all__ = ["TargetError"]


class TargetError(Exception):
    """Root of every error a target raises on purpose: a bad profile, a layer it cannot price,
    a host too noisy to measure."""
