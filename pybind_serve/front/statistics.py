"""Triton's model statistics answer, from the metrics counters of every front process, for both protocols."""

from __future__ import annotations

from typing import Any

from ..metrics import Metrics
from ..protocol import documents
from .models import Models

__all__ = ["model_statistics"]


async def model_statistics(models: Models, metrics: Metrics, name: str, version: str) -> list[dict[str, Any]]:
    """The ``model_stats`` entries of the loaded versions `Models.matching` selects (all, for an empty name),
    counted over every front of the server."""
    entries = []
    selected = models.matching(name, version)  # ModelNotFoundError before asking the other fronts
    metrics = await metrics.totals()
    for entry in selected:
        spec = entry.spec
        stats = metrics.model(spec.name, spec.version)
        entries.append(
            documents.model_statistics(
                spec.name,
                spec.version,
                stats.inference_count,
                stats.exec_count,
                stats.durations(),
                stats.last_inference_ms,
                stats.batch_durations(),
            )
        )
    return entries
