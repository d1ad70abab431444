"""What `imgwatch eval` found, per model, and how it is printed: text (one column per model) or JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from imgwatch.errors import printable
from imgwatch.evaluation.metrics import (
    DUPLICATES_PRECISION,
    DUPLICATES_RECALL,
    LINKS_COPY_PERCENTILE,
    SURVIVES_RECALL_AT_1,
    EditSummary,
    PairCounts,
)

# The thresholds the text shows precision and recall at (JSON: every 0.01).
SHOWN_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99)
GLOBAL_DESCRIPTOR_LIMITS = (
    "A global descriptor (one vector for the whole photo, as ResNet50's pooled ImageNet features) sees a crop, "
    "a rotation or a photo inside a screenshot as a different picture: no threshold finds those copies without "
    "also grouping photos that only look alike. A copy-detection model file such as SSCD (a ResNet50 trained "
    "for copy detection, published as TorchScript) finds them far better (docs/eval.md)."
)


@dataclass(frozen=True)
class Miss:
    """A copy whose original did not come first."""

    edit: str
    original: str
    copy: str  # in eval's temporary folder (gone once eval ends)
    rank: int | None  # None: beyond 10
    score: float  # copy to original
    first: str  # what came first instead
    first_score: float


@dataclass(frozen=True)
class BurstPair:
    one: str
    other: str
    score: float


@dataclass(frozen=True)
class ModelReport:
    model: str  # as given (--model), or "the store's model"
    identity: str
    engine: str
    searched: str  # what each copy was searched among, in words
    edits: list[EditSummary]
    copy_pairs: int
    different_pairs: int
    curve: list[PairCounts]  # every 0.01
    duplicates: PairCounts | None  # the suggested duplicates threshold, None when none reaches the targets
    links_threshold: float | None
    links_different_share: float  # of different-photo pairs, the share at or above links_threshold
    bursts: list[BurstPair]
    misses: list[Miss]  # worst first
    unreadable: list[str] = field(default_factory=list)

    @property
    def not_survived(self) -> list[EditSummary]:
        return [edit for edit in self.edits if not edit.survived]


@dataclass(frozen=True)
class EvalReport:
    source: str  # "the store" or a folder
    library: int  # its photos
    sample: int  # photos copied
    seed: int
    seconds: float
    models: list[ModelReport]

    def as_json(self) -> dict[str, object]:
        report = asdict(self)
        for model, raw in zip(self.models, report["models"], strict=True):
            raw["not_survived"] = [edit.edit for edit in model.not_survived]
            for edit, summary in zip(model.edits, raw["edits"], strict=True):
                summary["survived"] = edit.survived
        report["limits"] = GLOBAL_DESCRIPTOR_LIMITS
        return _finite(report)

    def as_text(self) -> str:
        return "\n".join(_text(self))


def _finite(value: object) -> object:
    """NaN (no copies) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _text(report: EvalReport) -> list[str]:
    models = report.models
    lines = [f"{report.sample} photos of {report.library} from {printable(report.source)} (seed {report.seed}), "
             f"{len(models[0].edits)} edited copies of each, in {report.seconds:.0f} s"]
    for model in models:
        lines.append(f"model {printable(model.model)}: {model.identity} on {model.engine}; "
                     f"each copy searched among {model.searched}")
        if model.unreadable:
            lines.append(f"  {len(model.unreadable)} photo(s) could not be read and were left out, e.g. "
                         f"{printable(model.unreadable[0])}")
    lines += ["", "per edit: recall@1 (the original first; ties count against), recall@10, "
              "copy-to-original score min / median"]
    header = f"{'edit':<16}" + "".join(f"  {_short(m.model):>30}" for m in models)
    lines.append(header)
    for summaries in zip(*(m.edits for m in models), strict=True):
        cells = "".join(f"  {_edit_cell(s):>30}" for s in summaries)
        lines.append(f"{summaries[0].edit:<16}{cells}")
    lines += ["", "is it a copy? precision / recall of \"score ≥ threshold\" over pairs "
              f"(copy-original pairs: {models[0].copy_pairs}; pairs of different photos: {models[0].different_pairs})"]
    lines.append(f"{'threshold':<16}" + "".join(f"  {_short(m.model):>30}" for m in models))
    for threshold in SHOWN_THRESHOLDS:
        cells = "".join(f"  {_curve_cell(m, threshold):>30}" for m in models)
        lines.append(f"{threshold:<16.2f}{cells}")
    for model in models:
        lines += ["", f"{printable(model.model)}:", *(f"  {line}" for line in _advice(model))]
    if any(model.not_survived for model in models):
        lines += ["", GLOBAL_DESCRIPTOR_LIMITS]
    return lines


def _short(name: str) -> str:
    return name if len(name) <= 30 else "…" + name[-29:]


def _edit_cell(summary: EditSummary) -> str:
    if not summary.copies:
        return "no copies"
    scores = f"{summary.score_min:.3f} / {summary.score_median:.3f}"
    return f"{summary.recall_at_1:.2f} {summary.recall_at_10:.2f}  {scores}" + ("  " if summary.survived else " !")


def _curve_cell(model: ModelReport, threshold: float) -> str:
    row = next((r for r in model.curve if abs(r.threshold - threshold) < 1e-9), None)
    return "" if row is None else f"{row.precision:.3f} / {row.recall:.3f}"


def _advice(model: ModelReport) -> list[str]:
    lines = []
    if model.duplicates is None:
        lines.append(f"duplicates: no threshold reaches recall ≥ {DUPLICATES_RECALL} at precision ≥ "
                     f"{DUPLICATES_PRECISION} on these copies: this model cannot tell copies from look-alikes")
    else:
        found = model.duplicates
        lines.append(f"duplicates --threshold {found.threshold:.3f}: the highest with recall ≥ {DUPLICATES_RECALL} "
                     f"at precision ≥ {DUPLICATES_PRECISION} (there: recall {found.recall:.3f}, "
                     f"precision {found.precision:.3f})")
    if model.links_threshold is None:
        lines.append("links.threshold: none suggested: the model survives none of the edits")
    else:
        below = ", and not above the duplicates threshold" if model.duplicates is not None else ""
        lines.append(f"links.threshold = {model.links_threshold:.2f}: {100 - LINKS_COPY_PERCENTILE:.0f} % of the "
                     f"copies of the edits it survives score at or above it{below}; "
                     f"{100 * model.links_different_share:.1f} % of pairs of different photos reach it too")
    lines.append(_bursts_line(model))
    failed = model.not_survived
    if failed:
        lines.append(f"not survived (recall@1 < {SURVIVES_RECALL_AT_1}, marked !): "
                     + ", ".join(f"{e.edit} ({e.recall_at_1:.2f})" for e in failed))
    else:
        lines.append(f"survives every edit (recall@1 ≥ {SURVIVES_RECALL_AT_1})")
    return lines


def _bursts_line(model: ModelReport) -> str:
    if not model.bursts:
        return "bursts (one camera, within 2 s, by EXIF): none among the sampled photos and their nearest photos"
    scores = sorted(pair.score for pair in model.bursts)
    line = (f"bursts (one camera, within 2 s, by EXIF): {len(scores)} pair(s), scores {scores[0]:.3f} to "
            f"{scores[-1]:.3f}")
    if model.duplicates is None:
        return line
    above = sum(1 for score in scores if score >= model.duplicates.threshold)
    return line + (f"; {above} at or above {model.duplicates.threshold:.3f}, which `imgwatch duplicates` would "
                   "group as copies" if above else f"; none reaches {model.duplicates.threshold:.3f}")
