"""Exact top-k by a batched scan of an int8 copy of the vectors: one pass per batch, not per query.

Each stored row ``x`` is kept as int8 codes ``c`` with one scale ``s`` (``x ≈ s·c``), and
each query ``q`` is quantised the same way (``q ≈ t·d``) so a batch of queries is scored
against every row by one int8 matrix product (``torch._int_mm``: VNNI on a CPU, the
tensor cores on a GPU). The product is approximate, but its error is bounded:

    |q·x − t·s·(d·c)| ≤ ‖t·d‖·‖x − s·c‖ + ‖q − t·d‖·‖x‖ =: β(q)

(Cauchy-Schwarz on ``q·x − q̂·x̂ = q̂·(x − x̂) + (q − q̂)·x``, with the largest row error and
norm of the copy standing in for each row's). So for a query wanting its ``k`` best at or
above ``floor``, every row whose approximate score is below ``max(kth − 2β, floor − β)``
(``kth``: the ``k``-th best approximate score) provably cannot be in the answer: at least
``k`` rows score at least ``kth − β``. The rest are proposed and re-scored exactly from the
float32 matrix by :class:`~imgwatch.store.embedded.vectors.SlotVectors`, so the answer is
the full scan's, trusted by construction (unlike a graph's). At a link's threshold of
0.8 the band is ~0.02 wide, so a few rows per query are re-scored.

Measured on a 2-core Zen 4 VM at 200k × 2048 (bench/RESULTS.md, issue 26): ~1.5-2.5 ms per
image for a batch of 32-128, against ~12 ms for the float32 scan; the copy is a quarter of
the float32 size (2 KiB per 2048-d image).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from imgwatch.store.embedded.vectors import Proposal, SlotVectors

# Rows quantised per step (64 MiB of float32 at 2048-d), and at most this many approximate
# scores held at once by a scan (2**24 int32 + float32 = 128 MiB).
QUANTISE_ROWS = 8_192
MAX_SCORES_PER_STEP = 1 << 24
# Float32 rounding in the scale products and in the error norms, far above its real size.
ROUNDING_SLACK = 1e-5
# The copy grows by this share of its capacity at least, so appending rows is amortised.
GROWTH = 0.25


def _torch():  # imported when a scan is first built: searching processes need not load torch
    import torch

    return torch


class Int8Rows:
    """An int8 copy of a ``(slots, dim)`` float32 matrix, row for row, on ``device``.

    Rows are (re)quantised with :meth:`set_rows` as the source changes; :meth:`searching` scans it.
    Not thread-safe: its owner serialises use.
    """

    def __init__(self, dim: int, device: str = "cpu") -> None:
        torch = _torch()
        self.dim = dim
        self.device = torch.device(device)
        self.slots = 0
        self._codes = torch.zeros((0, dim), dtype=torch.int8, device=self.device)
        self._scales = torch.zeros(0, dtype=torch.float32, device=self.device)
        self.max_error = 0.0  # the largest ‖x − s·c‖ of any row quantised (a bound: it only grows)
        self.max_norm = 0.0  # the largest ‖x‖

    @property
    def nbytes(self) -> int:
        return int(self._codes.numel() + 4 * self._scales.numel())

    def set_rows(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Quantise ``rows`` (float32, one per id) into slots ``ids``, growing the copy as needed."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return
        self._reserve(int(ids.max()) + 1)
        torch = _torch()
        for start in range(0, len(ids), QUANTISE_ROWS):
            codes, scales, errors = quantised(rows[start : start + QUANTISE_ROWS])
            if len(errors):
                self.max_error = max(self.max_error, float(errors.max()))
                self.max_norm = max(self.max_norm, float(np.linalg.norm(rows[start : start + QUANTISE_ROWS],
                                                                         axis=1).max()))
            part = ids[start : start + QUANTISE_ROWS]
            where = (slice(int(part[0]), int(part[-1]) + 1) if int(part[-1]) - int(part[0]) + 1 == len(part)
                     and np.all(np.diff(part) == 1) else torch.from_numpy(part).to(self.device))
            self._codes[where] = torch.from_numpy(codes).to(self.device)
            self._scales[where] = torch.from_numpy(scales).to(self.device)

    def set_range(self, start: int, stop: int, matrix: np.ndarray) -> None:
        """Quantise ``matrix[start:stop]`` into the same slots (a slice: nothing gathered)."""
        self._reserve(stop)  # once: a full build neither re-copies the codes as it goes nor over-reserves
        for low in range(start, stop, QUANTISE_ROWS):
            high = min(stop, low + QUANTISE_ROWS)
            self.set_rows(np.arange(low, high), matrix[low:high])

    def searching(self, view: SlotVectors) -> SlotVectors:
        """``view`` (the matrix this copies) searched by re-scoring, per query, every slot that may be
        in its answer; ``view``'s live flags are read at every scan (removals need no update here)."""

        def propose(queries: np.ndarray, k: int, exclude_ids: Sequence[Collection[int]] | None,
                    floor: float) -> Proposal:
            return Proposal(self._candidates(queries, k, exclude_ids, view.live, floor), np.empty(0, dtype=np.int64))

        return view.proposed_by(propose)

    # -- helpers ----------------------------------------------------------------------

    def _reserve(self, slots: int) -> None:
        if slots <= self.slots:
            return
        torch = _torch()
        capacity = self._codes.shape[0]
        if slots > capacity:
            capacity = max(slots, int(capacity * (1 + GROWTH)))
            codes = torch.zeros((capacity, self.dim), dtype=torch.int8, device=self.device)
            scales = torch.zeros(capacity, dtype=torch.float32, device=self.device)
            codes[: self.slots] = self._codes[: self.slots]
            scales[: self.slots] = self._scales[: self.slots]
            self._codes, self._scales = codes, scales
        self.slots = slots

    def _candidates(self, queries: np.ndarray, k: int, exclude_ids: Sequence[Collection[int]] | None,
                    live: np.ndarray, floor: float) -> list[np.ndarray]:
        torch = _torch()
        batch = np.ascontiguousarray(queries, dtype=np.float32)
        if len(batch) == 0:
            return []
        codes, steps, errors = quantised(batch)
        # |q·x − t·s·(d·c)| <= ‖t·d‖·‖x − s·c‖ + ‖q − t·d‖·‖x‖ (module docstring), per query
        bound = (np.linalg.norm(codes.astype(np.float32), axis=1) * steps * self.max_error
                 + errors * self.max_norm + ROUNDING_SLACK)
        # The GPU's int8 product wants the batch's width a multiple of 8 (zero queries score 0).
        width = -(-len(batch) // 8) * 8
        padded = np.zeros((self.dim, width), dtype=np.int8)
        padded[:, : len(batch)] = codes.T
        query_codes = torch.from_numpy(padded).to(self.device)
        steps, bound = torch.from_numpy(steps).to(self.device), torch.from_numpy(bound).to(self.device)
        slots = min(self.slots, len(live))
        dead = torch.from_numpy(np.asarray(live[:slots]) == 0).to(self.device)
        excluded = [np.fromiter((int(i) for i in ids), dtype=np.int64) for ids in exclude_ids] if exclude_ids else None

        kth = torch.full((len(batch),), -np.inf, device=self.device)  # the k-th best so far, per query
        kept = []  # (slot, query, approximate score) of each row that may still count
        rows_per_step = max(1, MAX_SCORES_PER_STEP // width)
        for low in range(0, slots, rows_per_step):
            high = min(slots, low + rows_per_step)
            scores = _products(self._codes[low:high], query_codes)[:, : len(batch)].to(torch.float32)
            scores.mul_(self._scales[low:high, None]).mul_(steps[None, :])
            scores[dead[low:high]] = -np.inf
            if excluded is not None:
                for column, ids in enumerate(excluded):
                    inside = ids[(ids >= low) & (ids < high)] - low
                    if len(inside):
                        scores[torch.from_numpy(inside).to(self.device), column] = -np.inf
            if k <= high - low:  # a lower bound of the k-th best overall: the cut only gets safer
                kth = torch.maximum(kth, scores.topk(k, dim=0).values[-1])
            rows, columns = torch.nonzero(scores >= torch.maximum(kth - 2 * bound, floor - bound)[None, :],
                                          as_tuple=True)
            kept.append((rows + low, columns, scores[rows, columns]))
        if not kept:
            return [np.empty(0, dtype=np.int64) for _ in range(len(batch))]
        cut = torch.maximum(kth - 2 * bound, floor - bound)
        slots_kept, columns, approx = (torch.cat(parts) for parts in zip(*kept, strict=True))
        still = approx >= cut[columns]
        slots_kept, columns = slots_kept[still].cpu().numpy(), columns[still].cpu().numpy()
        order = np.argsort(columns, kind="stable")
        bounds = np.searchsorted(columns[order], np.arange(len(batch) + 1))
        return [slots_kept[order[bounds[i] : bounds[i + 1]]].astype(np.int64) for i in range(len(batch))]


def _products(codes, query_codes):  # int8 (rows, dim) @ int8 (dim, width) -> int32, exactly
    torch = _torch()
    if codes.device.type == "cuda" and (codes.shape[0] <= 16 or codes.shape[1] % 8):
        # The GPU's int8 kernel wants more than 16 rows and a dim that is a multiple of 8; float64
        # sums these integers exactly (|sum| <= 127 * 127 * dim, far below 2**53).
        return (codes.double() @ query_codes.double()).to(torch.int32)
    return torch._int_mm(codes, query_codes)


def quantised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row as int8 codes times one scale (its largest magnitude / 127), and ``‖row − scale·codes‖``
    rounded up. In numpy: a worker quantises a batch of 32 rows at a time, too little for torch's threads."""
    rows = np.asarray(rows, dtype=np.float32)
    peaks = np.abs(rows).max(axis=1) if rows.size else np.zeros(len(rows), dtype=np.float32)
    scales = np.where(peaks > 0, peaks / np.float32(127), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    residual = rows.astype(np.float64) - codes.astype(np.float64) * scales[:, None].astype(np.float64)
    errors = (np.linalg.norm(residual, axis=1) * (1 + 1e-6)).astype(np.float32)
    return codes, scales, errors
