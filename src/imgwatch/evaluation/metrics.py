"""The numbers `imgwatch eval` reports, from scores alone (pure).

A copy's rank is the worst position among equal scores: a model that gives every photo the same
vector ranks each original last among its ties, so it scores ~0 recall, never a lucky 1.
Precision and recall of "is a copy" are counted over pairs: positives are copy-original pairs,
negatives pairs of different photos of the sample (originals and copies alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEPTH = 10  # recall@10: the deepest rank told apart; deeper is "beyond"
TIE = 1e-6  # scores this close are equal (float rounding of the same cosine)
SURVIVES_RECALL_AT_1 = 0.9  # an edit with a lower recall@1 is one the model does not survive
DUPLICATES_RECALL = 0.95
DUPLICATES_PRECISION = 0.99
LINKS_COPY_PERCENTILE = 1.0  # links.threshold keeps 99 % of surviving copies' scores above it
THRESHOLD_STEP = 0.001


def rank_of(original_score: float, other_scores: Sequence[float]) -> int | None:
    """The original's rank among ``other_scores`` (the other photos' scores, best first or not):
    1 + how many score at least as high (ties count against); None beyond DEPTH."""
    rank = 1 + sum(1 for score in other_scores if score >= original_score - TIE)
    return rank if rank <= DEPTH else None


@dataclass(frozen=True)
class EditSummary:
    edit: str
    copies: int
    recall_at_1: float
    recall_at_10: float
    score_min: float
    score_median: float

    @property
    def survived(self) -> bool:
        return self.recall_at_1 >= SURVIVES_RECALL_AT_1


def summarise_edit(edit: str, ranks: Sequence[int | None], scores: Sequence[float]) -> EditSummary:
    """One edit's recall@1, recall@10 and copy-to-original scores, from each copy's rank and score."""
    count = len(ranks)
    return EditSummary(
        edit, count,
        sum(1 for r in ranks if r == 1) / count if count else math.nan,
        sum(1 for r in ranks if r is not None) / count if count else math.nan,
        float(min(scores)) if scores else math.nan,
        float(np.median(scores)) if scores else math.nan,
    )


def different_photo_scores(vectors: np.ndarray, photo_of: Sequence[int]) -> np.ndarray:
    """The cosine of every pair of rows of ``vectors`` (unit rows) that show different photos
    (``photo_of[i]``: which photo row i is, an original or a copy of it), each pair once."""
    photos = np.asarray(photo_of)
    upper = np.triu_indices(len(photos), k=1)
    different = photos[upper[0]] != photos[upper[1]]
    scores: np.ndarray = (vectors @ vectors.T)[upper][different]
    return scores


@dataclass(frozen=True)
class PairCounts:
    threshold: float
    precision: float  # of pairs at or above the threshold, the share that are copies (1 when none is)
    recall: float  # of copy-original pairs, the share at or above the threshold


def counts_at(positives: np.ndarray, negatives: np.ndarray, thresholds: Sequence[float]) -> list[PairCounts]:
    """Precision and recall of "score ≥ threshold means a copy" at each threshold."""
    pos, neg = np.sort(positives), np.sort(negatives)
    found = len(pos) - np.searchsorted(pos, thresholds, side="left")
    false = len(neg) - np.searchsorted(neg, thresholds, side="left")
    rows = []
    for threshold, tp, fp in zip(thresholds, found, false, strict=True):
        precision = tp / (tp + fp) if tp + fp else 1.0
        rows.append(PairCounts(round(float(threshold), 6), float(precision), float(tp / len(pos)) if len(pos) else 0.0))
    return rows


def threshold_grid(step: float = THRESHOLD_STEP) -> np.ndarray:
    """Every threshold worth suggesting, from 1 down to 0, ``step`` apart."""
    grid: np.ndarray = np.round(np.arange(round(1 / step), -1, -1) * step, 6)
    return grid


def suggest_duplicates(positives: np.ndarray, negatives: np.ndarray) -> PairCounts | None:
    """The highest threshold (on THRESHOLD_STEP's grid) with recall ≥ DUPLICATES_RECALL and
    precision ≥ DUPLICATES_PRECISION; None when no threshold reaches both."""
    for row in counts_at(positives, negatives, threshold_grid()):  # highest first
        if row.recall >= DUPLICATES_RECALL and row.precision >= DUPLICATES_PRECISION:
            return row
    return None


def suggest_links(surviving_copy_scores: np.ndarray, duplicates: float | None) -> float | None:
    """links.threshold: low enough that 99 % of the copies of the edits the model survives are
    linked (their 1st percentile, rounded down to 0.01), and never above the duplicates
    threshold, since `imgwatch duplicates` groups only linked photos. None when no edit survives."""
    if len(surviving_copy_scores) == 0:
        return None
    floor = math.floor(float(np.percentile(surviving_copy_scores, LINKS_COPY_PERCENTILE)) * 100) / 100
    return floor if duplicates is None else min(floor, duplicates)


def share_at_least(scores: np.ndarray, threshold: float) -> float:
    """The share of ``scores`` at or above ``threshold``."""
    return float(np.mean(scores >= threshold)) if len(scores) else 0.0
