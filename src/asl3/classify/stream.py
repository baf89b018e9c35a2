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
from functools import lru_cache

import numpy as np

from asl3.classify.features import bigram_feature
from asl3.classify.model import window_bounds
from asl3.classify.score import CHUNK_CHARS, Scorer
from asl3.text.normalize import canonical, views

_TOKEN = re.compile(r"[^\W_]+")
RUN_MARGIN = 1e-3  # run(): scores this close to the threshold are replayed word by word
MAX_PENDING = 64  # a token longer than this (a blob) is processed without waiting for its end


def split_stream(text: str) -> list[str]:
    """Cut a text into word-sized pieces, as a model would stream it."""
    return _PIECE.findall(text)


_PIECE = re.compile(r"\s*\S+|\s+")


@lru_cache(maxsize=65_536)
def _canonical_piece(piece: str) -> str:
    """canonical() of a streamed piece: a few words at most, and the same words recur, so a
    cache saves most of the per-token normalization cost. Long pieces are not cached."""
    return canonical(piece)


def _canon(piece: str) -> str:
    return _canonical_piece(piece) if len(piece) <= 64 else canonical(piece)


Cuts = tuple[list[str], list[int], list[tuple[int, int]]]


def _cut(pending: str, piece: str) -> tuple[str, str]:
    r"""Where the monitor cuts after ``piece`` arrives: (text to tokenize now, or "" for none
    yet; what stays pending). The cut comes after the last non-token character, so a word is
    only scored once it is complete; a run of token characters over MAX_PENDING (a blob) is
    taken whole. What stays pending is always token characters only, so the last non-token
    character is the new piece's: found by stepping back over its last word (``[^\W_]`` is
    ``str.isalnum``), not by a regex search of the whole pending text."""
    i = len(piece)
    while i and piece[i - 1].isalnum():
        i -= 1
    if i:
        return pending + piece[:i], piece[i:]
    if len(pending) + len(piece) > MAX_PENDING:
        return pending + piece, ""
    return "", pending + piece


def stream_cuts(text: str, recheck: int) -> Cuts:
    """What feeding ``text`` piece by piece (``split_stream``) and finishing does to a fresh
    monitor, without scoring: the tokens in order, the token count at every point where
    feed() or finish() scores, and the tail checks as (index into points, characters fed)."""
    points: list[int] = []
    rechecks: list[tuple[int, int]] = []
    toks: list[str] = []
    pending, total, last = "", 0, 0
    for piece in split_stream(text):
        total += len(piece)
        chunk, pending = _cut(pending, piece)
        if not chunk:
            continue
        toks.extend(_TOKEN.findall(_canon(chunk)))
        points.append(len(toks))
        if total - len(pending) - last >= recheck:
            last = total - len(pending)
            rechecks.append((len(points) - 1, total))
    if pending:
        toks.extend(_TOKEN.findall(_canon(pending)))
        points.append(len(toks))  # finish() scores the last word too
    return toks, points, rechecks


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
        # one row per prompt context (with the prompt, and alone when the bundle floors it)
        self._bias = (self._prompt_term + self._model.b1).astype(np.float32)[None, :, :]
        self._offsets = scorer.context_offsets(self._prompt_term)  # per context, on the logit
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
        """Summed weighted rows and weight of a word's own features (the model's slot sums)."""
        table, (slot,) = self._feat.word_slots([word])
        rows, w = self._model.word_sums(table)
        return rows[slot], float(w[slot])

    def _add_tokens(self, text: str) -> None:
        toks = _TOKEN.findall(_canon(text))
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
        means = self._pre
        np.multiply(self._sum, 1.0 / max(self._n, 1e-6), out=means[0])
        np.multiply(self._win_sum, 1.0 / max(self._win_n, 1e-6), out=means[1])
        pre = means[:, None, :] + self._bias  # (prefix | window) x prompt contexts
        np.maximum(pre, 0.0, out=pre)
        z = float((pre @ self._w2 + self._offsets).max()) + self._b2  # max logit, then sigmoid
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
        now, self._pending = _cut(self._pending, chunk)
        if now:
            self._add_tokens(now)
            self._score_now()
        scored = self._total - len(self._pending)
        if not self._blocked and scored - self._last_recheck >= self._recheck:
            self._last_recheck = scored
            self._tail_check()
        if not self._blocked:
            self._released = max(self._released, scored - self._holdback)
            self._verdict = self._make(self.max_score, self._best_view, False, "")
        return self._verdict

    def run(self, text: str) -> object:
        """Judge a whole response at once: the same verdict and ``releasable`` as feeding it word
        by word (``split_stream``) and calling ``finish``, at a fraction of the cost.

        Why: a non-streamed response is judged as if it had streamed, so both paths block the
        same text; feeding word by word re-scores after every word in Python, while here every
        word's score comes from one cumulative sum. Only a clean response takes this path: when
        any score comes within ``RUN_MARGIN`` of the threshold (float32 running sums and float64
        cumulative sums differ in the last digits), or a principal's exemptions are in play,
        the response is replayed word by word, so a block and its release point are exactly the
        streaming ones."""
        if self._total or self._finished:
            raise RuntimeError("run() needs a fresh monitor")
        if self._exempt is not None or not text:
            return self._replay(text)
        toks, points, rechecks = stream_cuts(text, self._recheck)
        vs = views(text)
        # the whole response's canonical view has the streamed tokens (nearly always): its
        # windows come from the same cumulative sums instead of a second featurization
        fast_whole = len(vs[0].text) <= CHUNK_CHARS and _TOKEN.findall(vs[0].text) == toks
        scores, whole_canon = self._prefix_scores(toks, points, fast_whole)
        # in the order feed() and finish() see them; a run of canonical scores between two
        # tail checks is one entry (its max: the same view whichever of them is highest)
        considered: list[tuple[float, str]] = []
        counted = np.asarray(points) >= self._min_tokens
        prev = 0
        for i, fed in [*rechecks, (len(points) - 1, -1)]:
            run = scores[prev : i + 1][counted[prev : i + 1]]
            if run.size:
                considered.append((float(run.max()), "canonical"))
            prev = i + 1
            if fed >= 0:  # the decoded views of the recent tail, as feed() checks them
                tail = views(text[:fed][-self._recheck_window :])
                if len(tail) > 1:
                    t = self._scorer.output_views(tail[1:], self._prompt_term)
                    considered.append((t.score, t.view))
        if fast_whole:  # what Scorer.output gives: canonical first, then the other views
            considered.append((whole_canon, "canonical"))
            if len(vs) > 1:
                other = self._scorer.output_views(vs[1:], self._prompt_term)
                considered.append((other.score, other.view))
        else:
            whole = self._scorer.output_views(vs, self._prompt_term)
            considered.append((whole.score, whole.view))
        if max(s for s, _ in considered) >= self._threshold - RUN_MARGIN:
            return self._replay(text)
        # clean: the state feed() and finish() would have left
        self._finished = True
        self._parts, self._total, self._released = [text], len(text), len(text)
        self._tokens = len(toks)
        for s, view in considered:
            if s > self.max_score:
                self.max_score, self._best_view = s, view
        self._verdict = self._make(self.max_score, self._best_view, False, "")
        return self._verdict

    def _replay(self, text: str) -> object:
        for piece in split_stream(text):
            if self._blocked:
                break
            self.feed(piece)
        return self.finish()

    def _prefix_scores(self, toks: list[str], points: list[int], whole: bool = False
                       ) -> tuple[np.ndarray, float]:
        """_score_now()'s score after the first n tokens, for each n in ``points``; and with
        ``whole``, the score Scorer.output gives the canonical view when its tokens are
        ``toks``: the max over the whole text and its windows at the output scales (the
        windows of MeanMLP.windows, from these sums)."""
        H = self._model.hidden
        rows = np.zeros((len(toks) + 1, H), dtype=np.float64)  # row 0: nothing yet
        k = np.zeros(len(toks) + 1, dtype=np.float64)
        if toks:  # each token's row as _add_tokens() forms it: word sums plus the bigram
            pos = self._feat.token_positions(toks, self._prev_tok)
            rows[1:], k[1:] = self._model.token_sums(pos)
        S = np.cumsum(rows, axis=0)
        N = np.cumsum(k)
        n = np.asarray(points, dtype=np.int64)
        lo = np.maximum(n - self._window, 0)
        # one pass over every mean needed: prefixes and windows at each point, then (with
        # ``whole``) the whole text's windows at the output scales (MeanMLP.windows's bounds)
        P = len(n)
        firsts, lasts = [np.zeros_like(n), lo], [n, n]
        if whole and toks:
            for w, st in self._scorer.output_scales:
                a, b = window_bounds(len(toks), w, st)
                firsts.append(a)
                lasts.append(b)
        a, b = np.concatenate(firsts), np.concatenate(lasts)
        pre = (S[b] - S[a]) / np.maximum(N[b] - N[a], 1e-6)[:, None]
        h = pre[:, None, :] + self._bias[0].astype(np.float64)  # x (prompt contexts, H)
        np.maximum(h, 0.0, out=h)
        zs = (h.reshape(-1, H) @ self._w2.astype(np.float64)).reshape(len(a), -1)
        zs = (zs + self._offsets.astype(np.float64)).max(axis=1) + self._b2
        z = np.clip(np.maximum(zs[:P], zs[P : 2 * P]), -30.0, 30.0)
        best = 0.0
        if len(zs) > 2 * P:
            zw = float(zs[2 * P :].max())
            best = 1.0 / (1.0 + math.exp(-min(max(zw, -30.0), 30.0)))
        return 1.0 / (1.0 + np.exp(-z)), best

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
