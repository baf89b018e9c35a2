"""Stage-1 models: a weighted-mean-of-feature-embeddings MLP (fastText-like), numpy only.

Why this shape: a text's hidden vector is the (idf-weighted) mean of one learned row per
feature occurrence, so (a) any window of the text is scored from two prefix sums, (b) a stream
is scored by adding rows as tokens arrive, O(1) per token, and (c) inference needs nothing
but numpy.

Two heads over the same kind of features:
- the *score* model: one sigmoid output, P(harmful). The input model sees the text; the output
  model also has a prompt matrix, so a response is judged with the request it answers.
- the *category* model: a softmax over the constitution's harmful categories, used to name
  the category of a block and to take an exempted category's share out of the score.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from asl3.classify.features import Positions, SlotTable

HARMFUL = "__harmful__"  # the single class of a score model


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


@dataclass
class WindowScores:
    """Per-window outputs of one text and where each window lies (token indices)."""

    probs: np.ndarray  # (n_windows, n_classes)
    starts: np.ndarray
    ends: np.ndarray


def window_bounds(n: int, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ranges (starts, ends) that scoring reads: the whole text first, then windows of
    ``window`` tokens every ``stride``, the last one flush with the end (none when one window
    covers the text). Shared by MeanMLP.windows and OutputMonitor.run, which must agree."""
    if n <= window:
        return np.array([0]), np.array([n])
    s = list(range(0, n - window + 1, stride))
    if s[-1] != n - window:
        s.append(n - window)
    return np.array([0, *s]), np.array([n, *[x + window for x in s]])


class SlotSums:
    """Each slot's summed (weighted) rows of one matrix and summed weights, for one
    featurizer's slot table, filled as the table grows: a word's character n-grams are
    added once, not at every occurrence.

    Readers take the current state without a lock; only growth is locked. A state is never
    changed below its filled count, so a reader holding an older state reads valid rows.
    """

    def __init__(self, M: np.ndarray, wt: np.ndarray) -> None:
        self.M, self.wt = M, wt
        self._lock = threading.Lock()
        self._state: tuple[SlotTable, np.ndarray, np.ndarray, int] | None = None

    def get(self, table: SlotTable) -> tuple[np.ndarray, np.ndarray]:
        st = self._state
        if st is None or st[0] is not table or st[3] < len(table.ids):
            with self._lock:
                st = self._fill(table)
        return st[1], st[2]

    def _fill(self, table: SlotTable) -> tuple[SlotTable, np.ndarray, np.ndarray, int]:
        st = self._state
        n_now = len(table.ids)
        if st is not None and st[0] is table and st[3] >= n_now:
            return st
        if st is None or st[0] is not table:
            rows = np.zeros((max(1024, 2 * n_now), self.M.shape[1]), dtype=np.float32)
            w, n = np.zeros(len(rows)), 0
        else:
            _, rows, w, n = st
            if n_now > len(rows):
                grown = max(2 * len(rows), n_now)
                rows = np.concatenate([rows, np.zeros((grown - len(rows), rows.shape[1]),
                                                      dtype=np.float32)])
                w = np.concatenate([w, np.zeros(grown - len(w))])
        for slot in range(n, n_now):
            ids = list(table.ids[slot])
            if ids:
                rows[slot] = self.M[ids].sum(axis=0)
                w[slot] = self.wt[ids].astype(np.float64).sum()
        self._state = (table, rows, w, n_now)
        return self._state


@dataclass
class MeanMLP:
    """relu(wmean(W1[ids]) [+ wmean(W1p[prompt ids])] + b1) @ W2 + b2 -> sigmoid or softmax.

    wmean is the weighted mean with weights ``wt`` (idf times a word/bigram boost); W1 and W1p
    rows are stored pre-multiplied by ``wt`` so a sum of rows over a weight sum is the mean.
    """

    classes: list[str]
    W1: np.ndarray  # (V + 1, H) float32; the last row is the zero padding row
    b1: np.ndarray  # (H,)
    W2: np.ndarray  # (H, C)
    b2: np.ndarray  # (C,)
    wt: np.ndarray  # (V + 1,), the padding weight is zero
    W1p: np.ndarray | None = None  # (V + 1, H) prompt side (output score model only)
    # per-slot sums of W1 and W1p for the featurizer's slot table (see SlotSums)
    _slot_sums: dict[str, SlotSums] = field(default_factory=dict, init=False, repr=False,
                                            compare=False)

    @property
    def hidden(self) -> int:
        return int(self.b1.shape[0])

    @property
    def is_score(self) -> bool:
        return self.classes == [HARMFUL]

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored arrays (without the padding row)."""
        out = {"W1": self.W1[:-1], "b1": self.b1, "W2": self.W2, "b2": self.b2,
               "wt": self.wt[:-1]}
        if self.W1p is not None:
            out["W1p"] = self.W1p[:-1]
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], classes: Sequence[str]) -> MeanMLP:
        f32 = {k: v.astype(np.float32, copy=False) for k, v in arrays.items()}
        if f32["W2"].shape[1] != len(classes) or f32["W1"].shape[1] != f32["b1"].shape[0]:
            raise ValueError("layer shapes do not match each other or the class list")
        if f32["wt"].shape[0] != f32["W1"].shape[0]:
            raise ValueError("feature weights do not match the embedding rows")
        def pad(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.zeros((1, *a.shape[1:]), dtype=np.float32)])

        return cls(list(classes), pad(f32["W1"]), f32["b1"], f32["W2"], f32["b2"],
                   pad(f32["wt"]), pad(f32["W1p"]) if "W1p" in f32 else None)

    @property
    def vocab_size(self) -> int:
        return int(self.W1.shape[0]) - 1

    # -- scoring ---------------------------------------------------------------------------
    def word_sums(self, table: SlotTable, name: str = "W1") -> tuple[np.ndarray, np.ndarray]:
        """Each slot's summed (weighted) rows of matrix ``name`` and summed weights (indexed by
        slot; see SlotSums). The streaming monitor adds a word's row per token from these."""
        got = self._slot_sums.get(name)
        if got is None:
            got = self._slot_sums.setdefault(name, SlotSums(getattr(self, name), self.wt))
        return got.get(table)

    def _sums(self, name: str, pos: Positions) -> tuple[np.ndarray, np.ndarray]:
        """Per-token sums of the (weighted) rows of matrix ``name`` and of the weights."""
        rows, w = self.word_sums(pos.table, name)
        slots, bigrams = pos.pairs[:, 0], pos.pairs[:, 1]
        return rows[slots] + getattr(self, name)[bigrams], w[slots] + self.wt[bigrams]

    def _wmean(self, name: str, pos: Positions) -> np.ndarray:
        """Weighted mean of rows of matrix ``name`` (rows pre-multiplied by weights)."""
        if pos.n_tokens == 0:
            return np.zeros(self.hidden, dtype=np.float32)
        S, w = self._sums(name, pos)
        return S.sum(axis=0) / max(float(w.sum()), 1e-6)

    def prompt_pre(self, pos: Positions | None) -> np.ndarray:
        """The prompt's contribution to the hidden pre-activation (zeros without a prompt)."""
        if self.W1p is None or pos is None:
            return np.zeros(self.hidden, dtype=np.float32)
        return self._wmean("W1p", pos)

    def text_pre(self, pos: Positions) -> np.ndarray:
        """Hidden pre-activation of a whole text (no windows)."""
        return self._wmean("W1", pos)

    def probs_from_pre(self, pre: np.ndarray) -> np.ndarray:
        """Outputs from hidden pre-activations (bias not yet added)."""
        h = np.maximum(pre + self.b1, 0.0)
        z = h @ self.W2 + self.b2
        return sigmoid(z) if self.is_score else softmax(z)

    def token_sums(self, pos: Positions) -> tuple[np.ndarray, np.ndarray]:
        """Per-token sums of (weighted) rows and of weights: shared by every window scale."""
        if pos.n_tokens == 0:
            return np.zeros((0, self.hidden), np.float32), np.zeros(0)
        return self._sums("W1", pos)

    def windows(self, pos: Positions | tuple[np.ndarray, np.ndarray], window: int, stride: int,
                prompt: np.ndarray | None = None,
                spans: Sequence[tuple[int, int]] = (),
                offsets: np.ndarray | None = None) -> WindowScores:
        """Outputs for the whole text, for token windows of it, and for extra token spans.

        ``pos`` may be the result of ``token_sums`` to share it between window scales;
        ``spans`` are (start, end) token ranges such as sentences. A 2-D ``prompt`` scores
        every window once per row (prompt context), ``offsets`` adding to each row's logit."""
        S, w = self.token_sums(pos) if isinstance(pos, Positions) else pos
        n = S.shape[0]
        starts, ends = window_bounds(n, window, stride)
        if spans:
            starts = np.concatenate([starts, [a for a, _ in spans]])
            ends = np.concatenate([ends, [b for _, b in spans]])
        H = self.hidden
        if n:
            csum = np.zeros((n + 1, H), dtype=np.float32)
            np.cumsum(S, axis=0, out=csum[1:])
            wsum = np.zeros(n + 1)
            np.cumsum(w, out=wsum[1:])
            counts = np.maximum(wsum[ends] - wsum[starts], 1e-6)[:, None]
            pre = ((csum[ends] - csum[starts]) / counts).astype(np.float32)
        else:
            pre = np.zeros((len(starts), H), dtype=np.float32)
        if prompt is not None:
            # one set of rows per prompt context (see Scorer.prompt_context)
            contexts = prompt.reshape(-1, H)
            k, m = len(contexts), len(starts)
            pre = (pre[None, :, :] + contexts[:, None, :]).reshape(-1, H)
            starts, ends = np.tile(starts, k), np.tile(ends, k)
            if offsets is not None and np.any(offsets):
                h = np.maximum(pre + self.b1, 0.0)
                z = h @ self.W2 + self.b2 + np.repeat(offsets, m)[:, None]
                return WindowScores(sigmoid(z), starts, ends)
        return WindowScores(self.probs_from_pre(pre), starts, ends)
