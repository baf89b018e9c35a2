"""Streaming output monitor: scores a response token by token and holds text back.

The holdback is enforced here, where text is released, not where it is scored: ``releasable``
only ever grows, it trails the scored text by ``holdback`` characters, and once the monitor
has blocked it never grows again. So no text after the point where the classifier fired, and
none of the ``holdback`` characters before it, ever reaches the client.

Cost per fed token is O(1): each completed token adds its feature rows to a running sum (the
whole-prefix mean) and to a sliding window (so a harmful passage late in a long response is
not diluted). Every ``recheck`` characters the recent tail is searched for encoded text
(base64, ciphers, Morse...) and any decoded view is scored, which catches encodings aimed at
the output classifier. ``finish`` scores the whole response through every view, at the
stream's window scale.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable

import numpy as np

from asl3.classify.features import bigram_feature
from asl3.classify.score import Scorer
from asl3.text.normalize import canonical, views

_BOUNDARY = re.compile(r"[\W_](?=[^\W_]*\Z)", re.S)  # the last non-word character
_TOKEN = re.compile(r"[^\W_]+")
MAX_PENDING = 64  # a token longer than this (a blob) is processed without waiting for its end
_ROW_CACHE_LIMIT = 100_000

# make_verdict(score, view, blocked, text_for_category) -> the caller's verdict object
MakeVerdict = Callable[[float, str, bool, str], object]


class OutputMonitor:
    """Monitor one response to one prompt; see the module docstring for the guarantees."""

    def __init__(self, scorer: Scorer, threshold: float, prompt: str | None,
                 exempt: np.ndarray | None, holdback: int, make_verdict: MakeVerdict,
                 recheck: int = 256, recheck_window: int = 1024) -> None:
        self._scorer = scorer
        self._model = scorer.bundle.output_model
        self._feat = scorer.feat
        self._threshold = threshold
        self._exempt = exempt
        self._holdback = holdback
        self._make = make_verdict
        self._recheck = recheck
        self._recheck_window = recheck_window
        self._prompt = canonical(prompt) if prompt else ""
        self._prompt_term = scorer.prompt_context(prompt)
        H = self._model.hidden
        self._pre = np.zeros((2, H), dtype=np.float32)
        self._bias = (self._prompt_term + self._model.b1).astype(np.float32)
        self._w2 = self._model.W2[:, 0].copy()
        self._b2 = float(self._model.b2[0])
        self._sum = np.zeros(H, dtype=np.float32)
        self._n = 0.0
        self._win: deque[tuple[np.ndarray, float]] = deque()
        self._win_sum = np.zeros(H, dtype=np.float32)
        self._win_n = 0.0
        self._window = scorer.window
        self._min_tokens = int(scorer.bundle.config.get("min_tokens", 0))
        self._tokens = 0
        self._prev_tok: str | None = None
        self._parts: list[str] = []
        self._total = 0
        self._pending = ""
        self._released = 0
        self._last_recheck = 0
        self._blocked = False
        self._finished = False
        self._keep = 1.0  # share of the harmful mass not exempted for this principal
        self._update_exemption(self._prompt)
        self.max_score = 0.0
        self._best_view = "canonical"
        self._verdict = self._make(0.0, "canonical", False, "")

    # -- state -----------------------------------------------------------------------------
    @property
    def blocked(self) -> bool:
        return self._blocked

    @property
    def text(self) -> str:
        """Everything fed so far (for logging; never send this to a client)."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def releasable(self) -> str:
        """Text safe to send so far: scored, passed, and older than the holdback."""
        return self.text[: self._released]

    @property
    def released_chars(self) -> int:
        return self._released

    @property
    def verdict(self) -> object:
        return self._verdict

    # -- internals -------------------------------------------------------------------------
    def _update_exemption(self, text: str) -> None:
        if self._exempt is None:
            return
        q = self._scorer.categories(text)
        self._keep = float(1.0 - q[self._exempt].sum())

    def _word_row(self, word: str) -> tuple[np.ndarray, float]:
        """Summed weighted rows and weight of a word's own features, cached per word."""
        cache = self._model.row_cache
        got = cache.get(word)
        if got is None:
            ids = list(self._feat.word_ids(word))
            got = ((self._model.W1[ids].sum(axis=0), float(self._model.wt[ids].sum())) if ids
                   else (np.zeros(self._model.hidden, np.float32), 0.0))
            if len(cache) >= _ROW_CACHE_LIMIT:
                cache.clear()
            cache[word] = got
        return got

    def _add_tokens(self, text: str) -> None:
        toks = _TOKEN.findall(canonical(text))
        if not toks:
            return
        index = self._feat.index
        W1 = self._model.W1
        wt = self._model.wt
        prev = self._prev_tok
        win = self._win
        for t in toks:
            row, k = self._word_row(t)
            if prev is not None:
                b = index.get(bigram_feature(prev, t))
                if b is not None:
                    row = row + W1[b]
                    k += float(wt[b])
            prev = t
            self._tokens += 1
            self._sum += row
            self._n += k
            win.append((row, k))
            self._win_sum += row
            self._win_n += k
            if len(win) > self._window:
                old, ok = win.popleft()
                self._win_sum -= old
                self._win_n -= ok
        self._prev_tok = prev

    def _score_now(self) -> None:
        if self._tokens < self._min_tokens:
            return  # too little evidence yet; nothing is released this early anyway
        pre = self._pre
        np.multiply(self._sum, 1.0 / max(self._n, 1e-6), out=pre[0])
        np.multiply(self._win_sum, 1.0 / max(self._win_n, 1e-6), out=pre[1])
        pre += self._bias
        np.maximum(pre, 0.0, out=pre)
        z = float((pre @ self._w2).max()) + self._b2  # sigmoid is monotone: max logit first
        self._consider(1.0 / (1.0 + math.exp(-min(max(z, -30.0), 30.0))), "canonical")

    def _consider(self, score: float, view: str) -> None:
        if self._exempt is not None and score * self._keep >= self._threshold:
            # re-read the categories with the response so far before deciding
            self._update_exemption(self._prompt + "\n" + self.text[-self._recheck_window :])
        score *= self._keep
        if score > self.max_score:
            self.max_score = score
            self._best_view = view
        if score >= self._threshold and not self._blocked:
            self._blocked = True
            ctx = self._prompt + "\n" + canonical(self.text[-self._recheck_window :])
            self._verdict = self._make(score, view, True, ctx)

    def _tail_check(self) -> None:
        """Score the decoded views of the recent tail (the canonical text is scored per token)."""
        vs = views(self.text[-self._recheck_window :])
        if len(vs) > 1:
            s = self._scorer.output_views(vs[1:], self._prompt_term)
            self._consider(s.score, s.view)

    # -- API -------------------------------------------------------------------------------
    def feed(self, chunk: str) -> object:
        """Add the next piece of the response; returns the current verdict."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if self._blocked or not chunk:
            return self._verdict
        self._parts.append(chunk)
        self._total += len(chunk)
        pending = self._pending + chunk
        m = _BOUNDARY.search(pending)
        if m is not None:
            cut = m.end()
        elif len(pending) > MAX_PENDING:
            cut = len(pending)
        else:
            cut = 0
        if cut:
            self._add_tokens(pending[:cut])
            self._pending = pending[cut:]
            self._score_now()
        else:
            self._pending = pending
        scored = self._total - len(self._pending)
        if not self._blocked and scored - self._last_recheck >= self._recheck:
            self._last_recheck = scored
            self._tail_check()
        if not self._blocked:
            self._released = max(self._released, scored - self._holdback)
            self._verdict = self._make(self.max_score, self._best_view, False, "")
        return self._verdict

    def finish(self) -> object:
        """End of stream: score what is left (whole response, all views); release the rest if clean."""
        if self._finished:
            return self._verdict
        self._finished = True
        if self._blocked:
            return self._verdict
        if self._pending:
            self._add_tokens(self._pending)
            self._pending = ""
            self._score_now()
        if not self._blocked and self._total:
            s = self._scorer.output(self.text, self._prompt_term)
            self._consider(s.score, s.view)
        if not self._blocked:
            self._released = self._total
            self._verdict = self._make(self.max_score, self._best_view, False, "")
        return self._verdict
