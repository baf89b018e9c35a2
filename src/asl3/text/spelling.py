"""Repairing deliberately misspelt text against a lexicon of known words.

Character-level noise defeats a word model without any encoding to decode: "Best-of-N"
jailbreaks scramble the inside letters of words ("Gvie dletaied intsrucitnos"), nudge a few
characters to their ASCII neighbours ("ezplain"), sprinkle punctuation inside them
("des*cr-i.be"), reverse each word in place, write pig latin,
double every letter, drop the vowels, or run the words together. A human reads these easily;
character n-grams only partly survive them. This module maps such tokens back to the words
of a :class:`Lexicon` (the words a model knows, most frequent first), so that the repaired
text can be scored as a view of its own.

A repair is only attempted when many of a text's words are unknown: neither a word of the
lexicon nor ordinary English (the 21,700 whole words of the bert-base-uncased vocabulary,
``english_words.txt``). Against the default model's lexicon and that list, 1,000-character
messages made of harmless dev requests have at most 6% unknown words; requests with their
inside letters scrambled have 31% at the median. Each method repairs what it can, and the
method that explains the most unknown words wins, if it explains half of them. All work is
bounded: the first :data:`MAX_TOKENS` unknown words of a text are looked at, each with a
fixed number of dictionary lookups, and run-together words are segmented over at most
:data:`SEGMENT_BUDGET` letters.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from itertools import filterfalse

__all__ = ["MAX_TOKENS", "SEGMENT_BUDGET", "Lexicon"]

MAX_TOKENS = 300  # unknown words of one text looked at
SEGMENT_BUDGET = 1_000  # letters of run-together words segmented per text
MIN_UNKNOWN = 3  # fewer unknown words than this: nothing worth repairing
MIN_UNKNOWN_SHARE = 0.12  # of all words (1,000 characters of harmless dev requests: <= 0.06)
MIN_EXPLAINED = 0.5  # of the unknown words a method must repair for its view to count
SEGMENT_MIN = 16  # an unknown token this long may be words run together (few words are)
# The only pieces of one or two letters a segmentation may use (the vocabulary of a model
# also holds fragments such as "br" or "ch", which would carve any long word).
_SHORT_WORDS = frozenset((
    "a", "i", "am", "an", "as", "at", "be", "by", "do", "go", "he", "if", "in", "is", "it",
    "me", "my", "no", "of", "on", "or", "so", "to", "up", "us", "we",
))
_MAX_WORD = 20  # longest lexicon word used when segmenting
_CONTRACTION_TAILS = frozenset(("s", "t", "d", "m", "ll", "re", "ve"))
_VOWELS = frozenset("aeiou")
_VOWELLESS_SHARE = 0.08  # at most this share of letters are vowels: written without vowels
_WORD_RE = re.compile(r"[a-z]+")
_INNER_PUNCT_RE = re.compile(r"(?<=[a-z])[*._|~^\-]+(?=[a-z])")
# ASCII letters kept, every other byte a space: the words of a canonical text, split at C
# speed (a regular expression took 25-50 us per 1,000 characters, half the cost of views()).
_LETTERS_ONLY = bytes.maketrans(bytes(range(256)),
                                bytes(b if 97 <= b <= 122 else 32 for b in range(256)))


@functools.cache
def english_words() -> frozenset[str]:
    """Ordinary English words (``english_words.txt``, lines starting with # are comments)."""
    text = (resources.files("asl3.text") / "english_words.txt").read_text("utf-8")
    return frozenset(w for w in text.split("\n") if w and not w.startswith("#"))


def _middle_key(word: str) -> str:
    """First letter, last letter, the inside letters sorted: equal for any scrambling of the
    inside ("intsrucitnos" and "instructions")."""
    return word[0] + word[-1] + "".join(sorted(word[1:-1]))


def _skeleton(word: str) -> str:
    return "".join(c for c in word if c not in _VOWELS)


class Lexicon:
    """Known words, most frequent first, with the indexes the repairs look words up in.

    Indexes map a key to the most frequent word with that key: the scrambled-inside key, each
    one-letter wildcard (a substituted letter), the scrambled-inside key with one inside
    letter left out or the first or last letter wildcarded (scrambled *and* nudged, as
    Best-of-N does both), and the consonant skeleton. Built once per bundle (the default
    model's 5,200 words give about 60,000 keys, in well under 0.1 s).
    """

    def __init__(self, words: Iterable[str]) -> None:
        ranked: list[str] = []
        seen: set[str] = set()
        for w in words:
            if w.isalpha() and w.isascii() and w.islower() and w not in seen:
                seen.add(w)
                ranked.append(w)
        # A model's vocabulary also holds encoded leftovers of its training data ("xarhtna"
        # for "anthrax" reversed): a word whose reversal is a more frequent word is dropped,
        # or the reversed spelling would count as known.
        rank = {w: i for i, w in enumerate(ranked)}
        self.words: list[str] = [w for w in ranked if rank.get(w[::-1], len(ranked)) >= rank[w]]
        self.rank: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self._scrambled: dict[str, str] = {}
        self._nudged: dict[str, str] = {}
        self._both: dict[str, str] = {}
        self._skeletons: dict[str, str] = {}
        for w in self.words:  # most frequent first: setdefault keeps the best word per key
            self._skeletons.setdefault(_skeleton(w), w)
            if len(w) < 4:
                continue
            key = _middle_key(w)
            self._scrambled.setdefault(key, w)
            for i in range(len(w)):
                self._nudged.setdefault(f"{w[:i]}?{w[i + 1:]}", w)
            inside = key[2:]
            for i in range(len(inside)):
                if i == 0 or inside[i] != inside[i - 1]:
                    self._both.setdefault(f"{key[:2]}|{inside[:i]}{inside[i + 1:]}", w)
            self._both.setdefault(f"?{key[1:]}", w)  # first letter nudged, inside scrambled
            self._both.setdefault(f"{key[0]}?{inside}", w)  # last letter nudged
        self._english_cost = math.log(len(self.words) + 2) + 1.0
        self._unknown_cost = self._english_cost + 10.0
        self.known: frozenset[str] = frozenset(self.rank) | english_words()
        self._known_bytes = frozenset(w.encode() for w in self.known)

    def __contains__(self, word: object) -> bool:
        return word in self.rank

    # -- single-word repairs ------------------------------------------------------------

    def _best(self, candidates: Iterable[str | None]) -> str | None:
        got = [c for c in candidates if c is not None and c in self.rank]
        return min(got, key=self.rank.__getitem__) if got else None

    def unscramble(self, token: str) -> str | None:
        """The known word this token is a scrambled and/or one-letter-nudged spelling of."""
        if len(token) < 4:
            return None
        key = _middle_key(token)
        if (w := self._scrambled.get(key)) is not None:
            return w
        nudged = self._best(self._nudged.get(f"{token[:i]}?{token[i + 1:]}")
                            for i in range(len(token)))
        if nudged is not None:
            return nudged
        inside = key[2:]
        keys = [f"{key[:2]}|{inside[:i]}{inside[i + 1:]}" for i in range(len(inside))]
        keys += [f"?{key[1:]}", f"{key[0]}?{inside}"]
        return self._best(map(self._both.get, keys))

    def reverse(self, token: str) -> str | None:
        w = token[::-1]
        return w if w in self.rank else None

    def undouble(self, token: str) -> str | None:
        if len(token) % 2 or token[0::2] != token[1::2]:
            return None
        w = token[0::2]
        return w if w in self.rank else None

    def unpig(self, token: str) -> str | None:
        """Pig latin: "ivegay" -> "give" (onset moved back), "askway" -> "ask"."""
        if len(token) < 3 or not token.endswith("ay"):
            return None
        core = token[:-2]
        candidates = [core[-k:] + core[:-k] for k in range(1, min(4, len(core)))]
        if core[-1] in "wyh":  # vowel-initial words take "way", "yay" or "hay"
            candidates.append(core[:-1])
        candidates.append(core)
        return self._best(candidates)

    def unvowel(self, token: str) -> str | None:
        return self._skeletons.get(token)

    # -- run-together words -------------------------------------------------------------

    def _cost(self, word: str) -> float:
        """Zipf cost of a piece: log of its lexicon rank; ordinary English words the lexicon
        lacks rank after it; an unknown stretch costs more than any known word, more again
        per letter, and fragments of one or two letters are unknown too."""
        r = self.rank.get(word) if len(word) > 2 or word in _SHORT_WORDS else None
        if r is not None:
            return math.log(r + 2)
        if word in self.known and len(word) > 2:
            return self._english_cost
        return self._unknown_cost + 3.0 * len(word)

    def segment(self, token: str) -> str | None:
        """Split run-together words ("howdoimake" -> "how do i make"), or None unless the
        best split has at least three pieces of three letters on average, three quarters of
        its letters in known words, and no unknown piece under four letters: a long
        ordinary word the lexicon lacks splits into two ("non proliferation") or into
        fragments ("pro cr as tin at ing"); a run of words does neither, even with an
        unknown word in it ("aerosolize")."""
        n = len(token)
        cost = [0.0] + [math.inf] * n
        back = [0] * (n + 1)
        for end in range(1, n + 1):
            for start in range(max(0, end - _MAX_WORD), end):
                c = cost[start] + self._cost(token[start:end])
                if c < cost[end]:
                    cost[end], back[end] = c, start
        pieces: list[str] = []
        end = n
        while end > 0:
            pieces.append(token[back[end] : end])
            end = back[end]
        if pieces[-1] in _CONTRACTION_TAILS:  # "what'sthemost" was split at the apostrophe
            pieces[-1] = ""
        unknown = [p for p in pieces if p and self._cost(p) > self._unknown_cost]
        if (len(pieces) < 3 or n < 3 * len(pieces) or sum(map(len, unknown)) > n / 4
                or any(len(p) < 4 for p in unknown)):
            return None
        return " ".join(reversed(pieces)).lstrip()

    # -- whole texts --------------------------------------------------------------------

    def repair(self, canon: str) -> str | None:
        """``canon`` (a canonical, lowercase text) with its disguised words repaired, or
        None when nothing was repaired.

        Punctuation sprinkled inside words ("des*cr-i.be") is removed first, when that
        turns most of the touched words into known ones (:meth:`join_inner_punctuation`).
        Word-level disguises are judged when at least :data:`MIN_UNKNOWN` words, and
        :data:`MIN_UNKNOWN_SHARE` of all words, are unknown: each method is tried on the
        distinct unknown words of 3+ letters and the one that repairs the most wins, if it
        repairs most of them; it is then applied to the shorter words too. Unknown tokens of
        :data:`SEGMENT_MIN`+ letters left over are segmented.
        """
        joined = self.join_inner_punctuation(canon)
        text = canon if joined is None else joined
        words = text.encode("ascii", "replace").translate(_LETTERS_ONLY).split()
        unknown_bytes = list(filterfalse(self._known_bytes.__contains__, words))
        if not unknown_bytes:
            return joined  # the common case (None), found at C speed
        unknown = sorted({w.decode() for w in unknown_bytes})[:MAX_TOKENS]
        fixes: dict[str, str] = {}
        if len(unknown_bytes) >= max(MIN_UNKNOWN, MIN_UNKNOWN_SHARE * len(words)):
            fixes = self._word_fixes(unknown, {w.decode() for w in words if len(w) <= 3})
        budget = SEGMENT_BUDGET
        for w in unknown:
            if w not in fixes and len(w) >= SEGMENT_MIN and budget >= len(w):
                budget -= len(w)
                if (split := self.segment(w)) is not None:
                    fixes[w] = split
        if not fixes:
            return joined
        return _WORD_RE.sub(lambda m: fixes.get(m.group(), m.group()), text)

    def join_inner_punctuation(self, canon: str) -> str | None:
        """``canon`` with the punctuation between two letters removed ("ext.r*a.c-t" ->
        "extract"), or None unless at least :data:`MIN_UNKNOWN` words changed and most of
        the changed words are known: "step-by-step", "e.g." or "file_name.py" in ordinary
        text do not join into known words. A few ``str.count`` calls rule out most texts."""
        marks = sum(map(canon.count, "*_|~^"))
        if (marks < MIN_UNKNOWN and canon.count("-") < 2 * MIN_UNKNOWN
                and canon.count(".") - canon.count(". ") < MIN_UNKNOWN):
            return None
        joined, n = _INNER_PUNCT_RE.subn("", canon)
        if n < MIN_UNKNOWN:
            return None
        changed = set(_WORD_RE.findall(joined)) - set(_WORD_RE.findall(canon))
        known = sum(w in self.known for w in changed)
        if known < MIN_UNKNOWN or known < MIN_EXPLAINED * len(changed):
            return None
        return joined

    def _word_fixes(self, unknown: list[str], short: set[str]) -> dict[str, str]:
        """The repairs of the method that explains the most unknown words of 3+ letters,
        applied to every unknown word and every ``short`` word, or nothing when no method
        explains most of them."""
        long_unknown = [w for w in unknown if len(w) >= 3]
        methods: list[Callable[[str], str | None]] = [
            self.unscramble, self.reverse, self.undouble, self.unpig]
        letters = sum(map(len, long_unknown))
        if sum(c in _VOWELS for w in long_unknown for c in w) <= _VOWELLESS_SHARE * letters:
            methods.append(self.unvowel)
        best, best_n = None, 0
        for method in methods:
            n = sum(1 for w in long_unknown if (r := method(w)) is not None and r != w)
            if n > best_n:
                best, best_n = method, n
        if best is None or best_n < max(2, MIN_EXPLAINED * len(long_unknown)):
            return {}
        # The text is disguised word by word: short words are too, even when the disguise
        # left an English word ("ot", "ta" reversed).
        targets = set(unknown) | short
        return {w: r for w in targets if (r := best(w)) is not None and r != w}

    @classmethod
    def from_vocabulary(cls, features: Sequence[str], prefix: str = "w|") -> Lexicon:
        """The words among a model's features (``"w|sarin"``), in the vocabulary's order,
        which is most frequent first."""
        return cls(f[len(prefix):] for f in features if f.startswith(prefix))
