"""The errors a search raises: one root, :class:`SearchError`, so that callers catch it once.

Each error keeps the builtin base it had (a bad spec is still a ``ValueError``), so code written
against the builtins goes on working. Errors of the targets (profiles, pricing, measuring) have
their own root, :class:`hwsearch.targets.TargetError`.
"""

from __future__ import annotations

__all__ = ["SearchError"]


class SearchError(Exception):
    """Root of every error hwsearch's search raises on purpose: bad input, a run that cannot go on."""
