"""Bag-of-n-grams features, built for speed and for scoring windows of a text.

A text becomes a sequence of token positions; each position carries the ids of its features:
the word, the bigram ending at it, and character 3-5-grams of the word (robust to typos,
inflections and unseen agent spellings). Keeping positions lets the model score any window of
the text with prefix sums, so a short request buried in a long wrapper is not diluted, and lets
the streaming monitor add tokens one at a time.

Only features seen at training time (the vocabulary) have ids; everything else is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TOKEN_RE = re.compile(r"[^\W_]+")
# Where a sentence or clause ends: terminators (and closing quotes) before a space, the end
# of a tag ("[/INST]", "<|im_end|>"), or a line break. Requests inside jailbreak frames are
# nearly always a sentence of their own.
SEGMENT_BREAK_RE = re.compile(r"[.!?;:]+[\"'\u201d\u2019)\]]*\s+|[>\]]+\s*|\n\s*")
MAX_WORD = 24  # longer tokens (hashes, base64 blobs) only contribute their first characters
CHAR_NS = (3, 4, 5)
_CACHE_LIMIT = 200_000


def word_features(word: str) -> list[str]:
    """Feature strings for one (already canonical) word: unigram plus character n-grams."""
    w = word[:MAX_WORD]
    feats = ["w|" + w]
    padded = f"<{w}>"
    n_chars = len(padded)
    for n in CHAR_NS:
        for i in range(n_chars - n + 1):
            feats.append("c|" + padded[i : i + n])
    return feats


def bigram_feature(prev: str, word: str) -> str:
    return f"b|{prev[:MAX_WORD]} {word[:MAX_WORD]}"


def tokens(text: str) -> list[str]:
    """Word tokens of a canonical text (letters and digits, any script)."""
    return TOKEN_RE.findall(text)


def token_segments(text: str) -> tuple[list[str], list[int]]:
    """Tokens of a text and the token index where each sentence-like piece starts.

    The same tokens as :func:`tokens`: the break characters are never part of a token.
    """
    toks: list[str] = []
    starts: list[int] = []
    for piece in SEGMENT_BREAK_RE.split(text):
        got = TOKEN_RE.findall(piece)
        if got:
            starts.append(len(toks))
            toks.extend(got)
    return toks, starts


def segment_spans(starts: Sequence[int], n_tokens: int, max_len: int, min_len: int,
                  edge_len: int | None = None) -> list[tuple[int, int]]:
    """Token spans of single sentences and of adjacent pairs, at most ``max_len`` tokens.

    Pieces under ``min_len`` tokens ("Dr.", "QUERY:", a short aside) join the following one:
    the mean of a few words is too noisy to judge alone. The first and the last piece stand
    alone from ``edge_len`` tokens (default ``min_len``): a jailbreak puts its request first
    or last ("...Prompt: How do I build X?"), and a short request there would otherwise be
    merged into the frame. The whole text is left out (it is scored anyway), so a
    one-sentence text has no spans.
    """
    edge = min_len if edge_len is None else edge_len
    bounds = [*starts, n_tokens]
    pieces: list[list[int]] = []
    a = None
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        a = lo if a is None else a
        if hi - a >= (edge if a == 0 else min_len):
            pieces.append([a, hi])
            a = None
    if a is not None and a < n_tokens:
        if pieces and n_tokens - a < edge:
            pieces[-1][1] = n_tokens
        else:
            pieces.append([a, n_tokens])
    spans = [(lo, hi) for lo, hi in pieces]
    spans += [(pieces[i][0], pieces[i + 1][1]) for i in range(len(pieces) - 1)]
    return [(lo, hi) for lo, hi in spans if hi - lo <= max_len and (lo, hi) != (0, n_tokens)]


def text_features(text: str) -> Iterable[str]:
    """Every feature string of a text (used to build the vocabulary)."""
    toks = tokens(text)
    prev = None
    for t in toks:
        yield from word_features(t)
        if prev is not None:
            yield bigram_feature(prev, t)
        prev = t


@dataclass
class Positions:
    """Feature ids of a text, grouped by token (CSR style).

    Token ``i`` owns ``ids[offsets[i]:offsets[i + 1]]``; every token owns at least one id (a
    token with no known feature owns the padding id ``len(vocab)``, whose row and weight are
    zero), so per-token sums can use ``np.add.reduceat``.
    """

    ids: np.ndarray  # int32, flat
    offsets: np.ndarray  # int64, n_tokens + 1
    n_tokens: int
    segment_starts: tuple[int, ...] = ()  # first token of each sentence-like piece


class Featurizer:
    """Maps canonical text to feature ids through a fixed vocabulary, caching per word."""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.index: dict[str, int] = {f: i for i, f in enumerate(self.vocab)}
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._pair_cache: dict[tuple[str | None, str], tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def word_ids(self, word: str) -> tuple[int, ...]:
        got = self._word_cache.get(word)
        if got is None:
            index = self.index
            got = tuple(index[f] for f in word_features(word) if f in index)
            if len(self._word_cache) >= _CACHE_LIMIT:
                self._word_cache.clear()
            self._word_cache[word] = got
        return got

    def token_ids(self, toks: Sequence[str]) -> list[tuple[int, ...]]:
        """Per-token feature ids (word features plus the bigram with the previous token)."""
        out: list[tuple[int, ...]] = []
        index = self.index
        prev: str | None = None
        for t in toks:
            ids = self.word_ids(t)
            if prev is not None:
                b = index.get(bigram_feature(prev, t))
                if b is not None:
                    ids = (*ids, b)
            out.append(ids)
            prev = t
        return out

    @property
    def pad(self) -> int:
        return len(self.vocab)

    def _pair_ids(self, prev: str | None, word: str) -> tuple[int, ...]:
        """A token's feature ids after ``prev`` (cached): its word ids, then the bigram's."""
        ids = self.word_ids(word)
        if prev is not None:
            b = self.index.get(bigram_feature(prev, word))
            if b is not None:
                ids = (*ids, b)
        if not ids:
            ids = (self.pad,)
        if len(self._pair_cache) >= _CACHE_LIMIT:
            self._pair_cache.clear()
        self._pair_cache[(prev, word)] = ids
        return ids

    def positions(self, text: str) -> Positions:
        """Feature ids of a text by token: the hot path of every check, so one inlined loop.

        Same result as flattening :meth:`token_ids`, with the word and bigram lookups cached.
        """
        toks, starts = token_segments(text)
        pairs = self._pair_cache
        flat: list[int] = []
        offsets = [0]
        prev: str | None = None
        for t in toks:
            # one lookup per (previous token, token): the word's ids plus the bigram's, or
            # the padding id when neither is known
            ids = pairs.get((prev, t))
            if ids is None:
                ids = self._pair_ids(prev, t)
            flat.extend(ids)
            offsets.append(len(flat))
            prev = t
        return Positions(np.asarray(flat, dtype=np.int32), np.asarray(offsets, dtype=np.int64),
                         len(toks), tuple(starts))


def build_vocab(texts: Iterable[str], min_df: int = 2, max_features: int = 200_000
                ) -> tuple[list[str], np.ndarray]:
    """Features in at least ``min_df`` texts (most frequent first, ties by name) and their idf.

    idf = ln((1 + n_texts) / (1 + df)) + 1, as scikit-learn's smooth idf: rare, specific
    features weigh more in a text's mean than ubiquitous ones like common character grams.
    """
    df: dict[str, int] = {}
    n_texts = 0
    for text in texts:
        n_texts += 1
        for f in set(text_features(text)):
            df[f] = df.get(f, 0) + 1
    kept = [f for f, n in df.items() if n >= min_df]
    kept.sort(key=lambda f: (-df[f], f))
    kept = kept[:max_features]
    idf = np.log((1 + n_texts) / (1 + np.array([df[f] for f in kept], dtype=np.float64))) + 1
    return kept, idf.astype(np.float32)
