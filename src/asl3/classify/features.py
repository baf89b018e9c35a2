"""Bag-of-n-grams features, built for speed and for scoring windows of a text.

A text becomes a sequence of token positions; each position carries the ids of its features:
the word, the bigram ending at it, and character 3-5-grams of the word (robust to typos,
inflections and unseen agent spellings). Keeping positions lets the model score any window of
the text with prefix sums, so a short request buried in a long wrapper is not diluted, and lets
the streaming monitor add tokens one at a time.

Only features seen at training time (the vocabulary) have ids; everything else is ignored.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TOKEN_RE = re.compile(r"[^\W_]+")
# Where a sentence or clause ends: terminators (and closing quotes) before a space, the end
# of a tag ("[/INST]", "<|im_end|>"), or a line break. Requests inside jailbreak frames are
# nearly always a sentence of their own.
# (Written as one character class then the rest of the matching branch: the same matches as
# r"[.!?;:]+[\"'\u201d\u2019)\]]*\s+|[>\]]+\s*|\n\s*", about four times faster to split with.)
SEGMENT_BREAK_RE = re.compile(r"[.!?;:>\]\n](?:(?<=[.!?;:])[.!?;:]*[\"'\u201d\u2019)\]]*\s+"
                              r"|(?<=[>\]])[>\]]*\s*|(?<=\n)\s*)")
MAX_WORD = 24  # longer tokens (hashes, base64 blobs) only contribute their first characters
CHAR_NS = (3, 4, 5)
_CACHE_LIMIT = 200_000
_TABLE_LIMIT = 100_000  # (previous, word) pairs per slot table; each model keeps a row per slot


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


@functools.lru_cache(maxsize=1 << 17)
def _cached_word_features(word: str) -> tuple[str, ...]:
    return tuple(word_features(word))


def text_features(text: str) -> Iterable[str]:
    """Every feature string of a text (used to build the vocabulary). A word's features are
    computed once and remembered: words repeat a lot, and building the default bundle's
    vocabulary spent most of its time recomputing them."""
    toks = tokens(text)
    for t in toks:
        yield from _cached_word_features(t)
    for prev, t in zip(toks, toks[1:], strict=False):
        yield bigram_feature(prev, t)


class SlotTable:
    """The distinct words a featurizer has seen, each with its feature ids (the word's *slot*),
    and every (previous word, word) pair seen with its slot and its bigram's id.

    Why: a word's character n-grams are most of a text's features. Summing them once per
    distinct word (each model keeps those sums per slot, see ``MeanMLP.token_sums``) instead
    of once per occurrence makes a text two row lookups per token. A table only grows, so a
    slot stays valid for every ``Positions`` that refers to the table; a full featurizer
    starts a new table instead of clearing this one.
    """

    def __init__(self) -> None:
        self.slot_of: dict[str, int] = {}
        self.ids: list[tuple[int, ...]] = []  # slot -> the word's own feature ids
        self.pairs: dict[tuple[str | None, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def slot(self, word: str, ids: tuple[int, ...]) -> int:
        got = self.slot_of.get(word)
        if got is None:
            with self._lock:  # concurrent checks: one slot per word, appended in order
                got = self.slot_of.get(word)
                if got is None:
                    self.ids.append(ids)
                    got = self.slot_of[word] = len(self.ids) - 1
        return got


@dataclass
class Positions:
    """A text's tokens as feature lookups: ``pairs[i]`` is token ``i``'s (slot in ``table``,
    bigram id or the padding id ``len(vocab)``, whose row and weight are zero)."""

    pairs: np.ndarray  # int32, (n_tokens, 2)
    table: SlotTable
    n_tokens: int
    segment_starts: tuple[int, ...] = ()  # first token of each sentence-like piece
    pad: int = 0

    def token_ids(self, i: int) -> tuple[int, ...]:
        """Token ``i``'s feature ids: its word's, then its bigram's (the padding id alone
        when it has none), as ``Featurizer.token_ids`` lists them."""
        slot, b = (int(x) for x in self.pairs[i])
        ids = self.table.ids[slot] + ((b,) if b != self.pad else ())
        return ids or (self.pad,)

    @property
    def ids(self) -> np.ndarray:
        """Every token's feature ids, flat (CSR style with ``offsets``)."""
        flat = [i for t in range(self.n_tokens) for i in self.token_ids(t)]
        return np.asarray(flat, dtype=np.int32)

    @property
    def offsets(self) -> np.ndarray:
        """Token ``i`` owns ``ids[offsets[i]:offsets[i + 1]]``."""
        lens = [len(self.token_ids(t)) for t in range(self.n_tokens)]
        return np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]).astype(np.int64)


class Featurizer:
    """Maps canonical text to feature ids through a fixed vocabulary, caching per word."""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.index: dict[str, int] = {f: i for i, f in enumerate(self.vocab)}
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self.table = SlotTable()

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

    def _pair(self, table: SlotTable, prev: str | None, word: str) -> tuple[int, int]:
        """A token's (slot, bigram id) after ``prev``, remembered in ``table``."""
        b = self.index.get(bigram_feature(prev, word), self.pad) if prev is not None else self.pad
        got = (table.slot(word, self.word_ids(word)), b)
        table.pairs[(prev, word)] = got
        return got

    def _current_table(self) -> SlotTable:
        table = self.table
        if len(table.pairs) >= _TABLE_LIMIT or len(table.ids) >= _TABLE_LIMIT:
            table = self.table = SlotTable()  # earlier Positions keep the old one
        return table

    def word_slots(self, words: Sequence[str]) -> tuple[SlotTable, list[int]]:
        """Slots of words in the current table (the streaming monitor's word-by-word path)."""
        table = self._current_table()
        slot_of = table.slot_of
        out = []
        for w in words:
            got = slot_of.get(w)
            out.append(table.slot(w, self.word_ids(w)) if got is None else got)
        return table, out

    def positions(self, text: str) -> Positions:
        """A text's tokens as (slot, bigram) lookups: the hot path of every check."""
        toks, starts = token_segments(text)
        return self.token_positions(toks, starts=tuple(starts))

    def token_positions(self, toks: Sequence[str], prev: str | None = None,
                        starts: tuple[int, ...] = ()) -> Positions:
        """Positions of tokens already cut (``prev``: the token before the first, as a stream
        has one). One inlined loop with one dictionary lookup per (previous token, token)."""
        table = self._current_table()
        pairs = table.pairs
        flat: list[int] = []
        for t in toks:
            got = pairs.get((prev, t))
            if got is None:
                got = self._pair(table, prev, t)
            flat += got
            prev = t
        return Positions(np.asarray(flat, dtype=np.int32).reshape(-1, 2), table, len(toks),
                         starts, self.pad)


def build_vocab(texts: Iterable[str], min_df: int = 2, max_features: int = 200_000
                ) -> tuple[list[str], np.ndarray]:
    """Features in at least ``min_df`` texts (most frequent first, ties by name) and their idf.

    idf = ln((1 + n_texts) / (1 + df)) + 1, as scikit-learn's smooth idf: rare, specific
    features weigh more in a text's mean than ubiquitous ones like common character grams.
    """
    df: Counter[str] = Counter()
    n_texts = 0
    for text in texts:
        n_texts += 1
        df.update(set(text_features(text)))
    kept = [f for f, n in df.items() if n >= min_df]
    kept.sort(key=lambda f: (-df[f], f))
    kept = kept[:max_features]
    idf = np.log((1 + n_texts) / (1 + np.array([df[f] for f in kept], dtype=np.float64))) + 1
    return kept, idf.astype(np.float32)
