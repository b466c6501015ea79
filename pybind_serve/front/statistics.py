"""Triton's model statistics answer, from the front's metrics counters, for both fronts."""

from __future__ import annotations

from typing import Any

from ..metrics import Metrics
from ..protocol import documents
from .models import Models

__all__ = ["model_statistics"]


def model_statistics(models: Models, metrics: Metrics, name: str, version: str) -> list[dict[str, Any]]:
    """The ``model_stats`` entries of the loaded versions `Models.matching` selects (all, for an empty name)."""
    entries = []
    for entry in models.matching(name, version):
        spec = entry.spec
        stats = metrics.model(spec.name, spec.version)
        entries.append(
            documents.model_statistics(
                spec.name, spec.version, stats.inference_count, stats.exec_count, stats.durations()
            )
        )
    return entries
