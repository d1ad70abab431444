"""The numbers eval reports, from scores alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imgwatch.evaluation.metrics import (
    counts_at,
    different_photo_scores,
    rank_of,
    share_at_least,
    suggest_duplicates,
    suggest_links,
    summarise_edit,
)


def test_ties_count_against_the_original() -> None:
    assert rank_of(0.99, [0.98, 0.5]) == 1
    assert rank_of(0.9, [0.95, 0.99, 0.1]) == 3
    assert rank_of(0.9, [0.9, 0.1]) == 2  # a tie is not a win
    assert rank_of(1.0, [1.0 - 1e-7] * 3) == 4  # nor is float rounding of the same cosine
    assert rank_of(0.5, [0.6] * 9) == 10
    assert rank_of(0.5, [0.6] * 10) is None  # beyond 10


def test_a_model_that_ignores_its_input_recalls_nothing_first() -> None:
    ranks = [rank_of(1.0, [1.0] * 5) for _ in range(6)]
    summary = summarise_edit("flip_horizontal", ranks, [1.0] * 6)
    assert summary.recall_at_1 == 0 and summary.recall_at_10 == 1 and not summary.survived


def test_an_edit_summary() -> None:
    summary = summarise_edit("crop", [1, 1, 2, None], [0.9, 0.95, 0.8, 0.6])
    assert (summary.copies, summary.recall_at_1, summary.recall_at_10) == (4, 0.5, 0.75)
    assert (summary.score_min, summary.score_median) == (pytest.approx(0.6), pytest.approx(0.85))
    assert math.isnan(summarise_edit("crop", [], []).recall_at_1)


def test_different_photo_pairs_leave_out_pairs_of_one_photo() -> None:
    vectors = np.eye(4, dtype=np.float32)
    vectors[1] = vectors[0]  # row 1 is a copy of photo 0
    scores = different_photo_scores(vectors, [0, 0, 1, 2])
    assert len(scores) == 5  # 6 pairs, less the photo with its copy
    assert sorted(scores.tolist()) == [0.0] * 5


def test_precision_and_recall_by_threshold() -> None:
    positives = np.array([0.99, 0.97, 0.9, 0.7])
    negatives = np.array([0.95, 0.8, 0.5, 0.3])
    rows = {row.threshold: row for row in counts_at(positives, negatives, [0.96, 0.9, 0.8, 1.0])}
    assert (rows[0.96].precision, rows[0.96].recall) == (1.0, 0.5)
    assert (rows[0.9].precision, rows[0.9].recall) == (0.75, 0.75)
    assert (rows[0.8].precision, rows[0.8].recall) == (0.6, 0.75)
    assert (rows[1.0].precision, rows[1.0].recall) == (1.0, 0.0)  # nothing flagged: nothing wrong


def test_the_duplicates_threshold_is_the_highest_with_both_targets() -> None:
    positives = np.linspace(0.96, 1.0, 100)
    negatives = np.linspace(0.2, 0.9, 10_000)
    found = suggest_duplicates(positives, negatives)
    assert found is not None and found.threshold == pytest.approx(0.962)  # 95 % of the copies from 0.962 up
    assert found.recall >= 0.95 and found.precision == 1.0
    assert suggest_duplicates(positives, np.full(1000, 0.99)) is None  # look-alikes score like copies


def test_the_links_threshold_keeps_the_surviving_copies_and_stays_below_duplicates() -> None:
    scores = np.linspace(0.9, 1.0, 101)
    assert suggest_links(scores, None) == 0.9
    assert suggest_links(scores, 0.85) == 0.85
    assert suggest_links(np.array([], dtype=np.float32), 0.9) is None
    assert share_at_least(np.array([0.1, 0.5, 0.9, 0.95]), 0.9) == 0.5
