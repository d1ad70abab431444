"""A made-up model report for the report and misses-sheet tests (shared here: tests never import each other)."""

from __future__ import annotations

import math

from imgwatch.evaluation.metrics import EditSummary, PairCounts
from imgwatch.evaluation.report import BurstPair, Miss, ModelReport


def model_report(name: str, recall: float, duplicates: PairCounts | None, bursts: list[BurstPair],
                 misses: list[Miss] | None = None) -> ModelReport:
    edits = [EditSummary("flip_horizontal", 4, 1.0, 1.0, 0.97, 0.98), EditSummary("crop", 4, recall, 1.0, 0.6, 0.8),
             EditSummary("rotate_25", 0, math.nan, math.nan, math.nan, math.nan)]
    curve = [PairCounts(t / 100, 1.0, 0.5) for t in range(101)]
    return ModelReport(name, f"resnet50/{name}", "torch", "the store's 10 indexed photos", edits, 8, 100, curve,
                       duplicates, 0.9 if duplicates else None, 0.02, bursts, misses or [])
