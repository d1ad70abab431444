"""The report as a person reads it (a column per model) and as JSON."""

from __future__ import annotations

import json

from imgwatch.evaluation.metrics import PairCounts
from imgwatch.evaluation.report import BurstPair, EvalReport
from tests.evaluation.made_up import model_report


def report() -> EvalReport:
    bursts = [BurstPair("/p/a.jpg", "/p/b.jpg", 0.97), BurstPair("/p/c.jpg", "/p/d.jpg", 0.91)]
    return EvalReport("the store", 10, 4, 0, 3.0, [
        model_report("imagenet", 0.5, PairCounts(0.95, 1.0, 0.96), bursts),
        model_report("/weights/other.pth", 1.0, None, [])])


def test_text_has_a_column_per_model_and_says_what_to_set() -> None:
    text = report().as_text()
    header = next(line for line in text.splitlines() if line.startswith("edit "))
    assert "imagenet" in header and "/weights/other.pth" in header
    crop = next(line for line in text.splitlines() if line.startswith("crop "))
    assert "0.50 1.00  0.600 / 0.800 !" in crop and "1.00 1.00  0.600 / 0.800  " in crop
    assert "no copies" in next(line for line in text.splitlines() if line.startswith("rotate_25 "))
    assert "duplicates --threshold 0.950" in text and "links.threshold = 0.90" in text
    assert "2 pair(s), scores 0.910 to 0.970; 1 at or above 0.950" in text
    assert "not survived (recall@1 < 0.9, marked !): crop (0.50), rotate_25 (nan)" in text
    assert "no threshold reaches recall" in text  # the second model
    assert "SSCD" in text


def test_json_names_what_was_not_survived_and_has_no_nan() -> None:
    loaded = json.loads(json.dumps(report().as_json(), allow_nan=False))
    first = loaded["models"][0]
    assert first["not_survived"] == ["crop", "rotate_25"]
    assert first["edits"][2]["recall_at_1"] is None and first["edits"][0]["survived"] is True
    assert first["duplicates"] == {"threshold": 0.95, "precision": 1.0, "recall": 0.96}
    assert loaded["models"][1]["duplicates"] is None and "SSCD" in loaded["limits"]
