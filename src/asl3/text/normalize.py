"""Canonical views of a text, computed before the n-gram classifier scores it.

A jailbreak rarely states a request plainly: it spells it with look-alike letters, hides
zero-width characters inside words, spaces the letters out, or encodes the whole request
(base64, hex, ROT13 and other Caesar shifts, atbash, reversal, Morse, leetspeak; escapes such
as percent-encoding, quoted-printable, HTML references and backslash escapes; invisible tag
characters; base32, Ascii85, uuencode, binary or decimal character codes; Braille,
upside-down letters, the NATO alphabet). The classifier only knows plain lowercase English
n-grams, so every text is turned into a small set of *views*:

* ``canonical(text)`` removes the cheap disguises that never change meaning (Unicode
  compatibility forms, case, homoglyphs, invisible characters, accents, spaced-out letters);
* ``views(text)`` adds one view per plausible decoding, each canonicalized too.

The caller scores every view and keeps the maximum, so a decoding that turns out to be noise
costs a little time but cannot lower a score; yet every view costs a classifier pass, so
ordinary text should get none. Decoding is therefore *gated*: cheap tests (``str.count``,
``in``, regular expressions that start with a literal, which the engine scans for quickly)
decide whether a decoder is worth trying, and an ordinary English message pays for almost
few of them: ``views()`` on a 1,000-character ordinary message takes about 0.1 ms on this
project's 2-core test machine (``bench/classifier.py`` measures the whole input check). The decoders of escapes, blobs and other alphabets live in
:mod:`asl3.text.escapes`, :mod:`asl3.text.transports` and :mod:`asl3.text.alphabets`;
their gates here cost an ordinary message a few ``in`` tests, one scan of its digits and,
for text with long tokens or non-ASCII characters, a few byte-level tests (measured on 500
English messages of 1,000 characters: +2-3% median, +5% mean; +10% for those with a URL).

Everything here runs in time linear in the input: no regular expression has two ways to
match the same text (so none backtracks catastrophically), the heuristic searches (Caesar
shifts, word segmentation) run on bounded samples, and the number of views
(:data:`MAX_DECODED_VIEWS`) and the depth of nested decodings (:data:`MAX_DEPTH`) are
capped. A megabyte of anything takes well under two seconds.
"""

from __future__ import annotations

import binascii
import math
import operator
import re
import string
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from asl3.text import alphabets, escapes, transports
from asl3.text.plausible import byte_classes, class_table, decode_bytes, whole_blob
from asl3.text.spelling import Lexicon

__all__ = [
    "MAX_DECODED_VIEWS",
    "MAX_DEPTH",
    "View",
    "canonical",
    "englishness",
    "iter_segments",
    "quoted_text",
    "segments",
    "views",
]

MAX_DECODED_VIEWS = 8
"""At most this many decoded views follow the canonical one (bounds the scoring cost)."""

MAX_DEPTH = 2
"""Decodings nest at most this deep: base64 inside base64 is found, a third layer is not."""


@dataclass(frozen=True, slots=True)
class View:
    """One reading of a text: how it was obtained (``name``) and the canonical text.

    Names: ``canonical`` (always first), ``quoted`` (inputs), ``tags``, ``base64``, ``hex``,
    ``percent``, ``quoted_printable``, ``html``, ``escapes``, ``base32``, ``ascii85`` (Base85
    too), ``uu``, ``binary``, ``decimal``, ``morse``, ``leet``, ``spacing``, ``braille``,
    ``upside_down``, ``nato``, ``rot13``, ``caesar``, ``atbash``, ``reversed``,
    ``reversed_words``; a decoding found inside another one is named ``outer+inner`` (for
    example ``base64+rot13``, ``percent+base64``).
    """

    name: str
    text: str


# =============================================================================================
# Word list and englishness
#
# The decoders that have no checksum of their own (Caesar shifts, reversal, leetspeak) are
# accepted only when the decoded text reads more like English than the original. A short list
# of very common words is enough for that: in ordinary prose about half of the tokens are on
# it, in ciphertext almost none are.

_COMMON_WORDS_TEXT = """
    a about above after again against all almost also always am an and another any anyone
    anything are around as ask at away back be because been before being below best better
    between both but by call can cant could day did didnt different do does doesnt doing done
    dont down during each easy else enough even ever every everything example explain few find
    first for found from full get give go going good got great had has have having he help her
    here him his home how however i if im in into is isnt it its just keep kind know last least
    let life like little long look lot made make many may me might more most much must my
    need never new next no not nothing now of off often old on once one only or other our out
    over own part people place please put question quite rather really right said same say see
    she should show since so some someone something step steps still such sure take tell than
    thank thanks that the their them then there these they thing things think this those though
    through time to today together too two under until up us use used using very want was water
    way we well were what when where which while who why will with without work would write year
    yes yet you your
"""
_COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())
"""About 230 of the most frequent English words (no topic words, so ciphertext scores ~0)."""


def _ascii_token_table() -> dict[int, str | None]:
    """Translate table for tokenizing: ASCII non-letters become spaces, apostrophes vanish."""
    table: dict[int, str | None] = {}
    for i in range(128):
        ch = chr(i)
        if ch == "'":
            table[i] = None
        elif not ch.isalpha():
            table[i] = " "
    table[0x2019] = None  # typographic apostrophe
    return table


_TOKEN_TABLE = _ascii_token_table()


def _alpha_tokens(text: str) -> list[str]:
    """Letter-only tokens of lowercase text (digits and punctuation separate words)."""
    return text.translate(_TOKEN_TABLE).split()


def _share_common(tokens: list[str]) -> float:
    """Share of ``tokens`` that are common English words (0.0 for no tokens)."""
    if not tokens:
        return 0.0
    return sum(map(_COMMON_WORDS.__contains__, tokens)) / len(tokens)


def englishness(text: str) -> float:
    """Share of the text's word tokens that are common English words, from 0.0 to 1.0.

    Ordinary English prose scores about 0.4-0.7, ciphertext and random strings close to 0.
    Used to decide whether a decoding (a Caesar shift, a reversal) made a text more readable.
    """
    return _share_common(_alpha_tokens(text.lower()))


# =============================================================================================
# canonical(): Unicode folding

# Look-alike characters that NFKC leaves alone, folded to the ASCII letter they imitate. Keys
# hold upper- and lowercase forms because the two often imitate different Latin letters
# (Greek capital eta looks like H, small eta like n); see _fold_char for case.
_CONFUSABLE_PAIRS = {
    # Cyrillic
    "\u0410": "a", "\u0430": "a", "\u0412": "b", "\u0432": "b", "\u0421": "c", "\u0441": "c",
    "\u0415": "e", "\u0435": "e", "\u041d": "h", "\u043d": "h", "\u04ba": "h", "\u04bb": "h",
    "\u0406": "i", "\u0456": "i", "\u0408": "j", "\u0458": "j", "\u041a": "k", "\u043a": "k",
    "\u04c0": "l", "\u04cf": "l", "\u041c": "m", "\u043c": "m", "\u041e": "o", "\u043e": "o",
    "\u0420": "p", "\u0440": "p", "\u0405": "s", "\u0455": "s", "\u0422": "t", "\u0442": "t",
    "\u0425": "x", "\u0445": "x", "\u0423": "y", "\u0443": "y", "\u04ae": "y", "\u04af": "y",
    "\u0417": "3", "\u0437": "3", "\u0411": "6", "\u0431": "6", "\u0433": "r", "\u043f": "n",
    "\u0438": "u", "\u0448": "w", "\u0429": "w", "\u0449": "w", "\u044c": "b", "\u042c": "b",
    "\u0501": "d", "\u051b": "q", "\u051a": "q", "\u051d": "w", "\u051c": "w", "\u0461": "w",
    "\u0475": "v", "\u0474": "v", "\u04e0": "3", "\u04e1": "3",
    # Greek
    "\u0391": "a", "\u03b1": "a", "\u0392": "b", "\u03b2": "b", "\u0395": "e", "\u03b5": "e",
    "\u0396": "z", "\u0397": "h", "\u03b7": "n", "\u0399": "i", "\u03b9": "i", "\u039a": "k",
    "\u03ba": "k", "\u039c": "m", "\u039d": "n", "\u03bd": "v", "\u039f": "o", "\u03bf": "o",
    "\u03a1": "p", "\u03c1": "p", "\u03a4": "t", "\u03c4": "t", "\u03a5": "y", "\u03c5": "u",
    "\u03a7": "x", "\u03c7": "x", "\u03c9": "w", "\u03c3": "o", "\u03c2": "c", "\u03f2": "c",
    "\u03f9": "c", "\u037f": "j", "\u03f3": "j", "\u03b3": "y", "\u03bc": "u", "\u03c0": "n",
    # Armenian
    "\u0585": "o", "\u057d": "u", "\u0578": "n", "\u0570": "h", "\u0561": "w", "\u0584": "p",
    # Latin letters without a decomposition, IPA and small capitals
    "\u00f8": "o", "\u00d8": "o", "\u0111": "d", "\u0110": "d", "\u0142": "l", "\u0141": "l",
    "\u0127": "h", "\u0126": "h", "\u0167": "t", "\u0166": "t", "\u0180": "b", "\u0268": "i",
    "\u00e6": "ae", "\u00c6": "ae", "\u0153": "oe", "\u0152": "oe", "\u00fe": "th",
    "\u00de": "th", "\u00f0": "d", "\u00d0": "d", "\u0131": "i", "\u0237": "j", "\u0138": "k",
    "\u0251": "a", "\u0261": "g", "\u0269": "i", "\u026a": "i", "\u1d00": "a", "\u0299": "b",
    "\u1d04": "c", "\u1d05": "d", "\u1d07": "e", "\ua730": "f", "\u0262": "g", "\u029c": "h",
    "\u1d0a": "j", "\u1d0b": "k", "\u029f": "l", "\u1d0d": "m", "\u0274": "n", "\u1d0f": "o",
    "\u1d18": "p", "\u0280": "r", "\ua731": "s", "\u1d1b": "t", "\u1d1c": "u", "\u1d20": "v",
    "\u1d21": "w", "\u028f": "y", "\u1d22": "z",
    # Punctuation that disguises separators (dashes, dots, quotes, slashes)
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2043": "-", "\u00b7": ".", "\u2022": ".", "\u2219": ".", "\u22c5": ".",
    "\u2027": ".", "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2044": "/", "\u2215": "/",
}  # fmt: skip
# Enclosed letters that have no compatibility decomposition: regional indicators and the
# negative circled / negative squared Latin capitals used in "fancy text" generators.
for _base in (0x1F1E6, 0x1F150, 0x1F170):
    for _i in range(26):
        _CONFUSABLE_PAIRS[chr(_base + _i)] = chr(ord("a") + _i)

# Invisible characters that are not in the format (Cf) category but render as nothing.
_INVISIBLE_EXTRA = frozenset("\u115f\u1160\u3164\uffa0\u034f\u17b4\u17b5\u180b\u180c\u180d")

# Per-character fold results, shared by all calls. Bounded so adversarial input drawing on
# the whole Unicode range cannot grow it without limit.
_FOLD_CACHE: dict[str, str | None] = {}
_FOLD_CACHE_LIMIT = 100_000


def _fold_char_nocase(ch: str) -> str | None:
    """What one character becomes, before considering its case (``None`` deletes it)."""
    hit = _CONFUSABLE_PAIRS.get(ch)
    if hit is not None:
        return hit
    code = ord(ch)
    if 0xE0000 <= code <= 0xE007F or ch in _INVISIBLE_EXTRA:
        return None  # tag characters, fillers
    cat = unicodedata.category(ch)
    if cat in ("Mn", "Me", "Cf", "Cs"):
        return None  # combining marks, zero-width/bidi/format characters, lone surrogates
    if cat in ("Cc", "Zs", "Zl", "Zp"):
        return " " if ch not in "\n\r" else "\n"
    return ch


def _fold_char(ch: str) -> str | None:
    """What one character becomes in the canonical text (``None`` deletes it).

    Case is folded per character too, and the folded characters are folded again (a
    capital whose lowercase is a homoglyph, like Cyrillic capital GHE, ends as "r"). That
    makes the table closed: its outputs are its own fixed points, so one pass is enough.
    """
    out = _fold_char_nocase(ch)
    if out != ch or out is None:
        return out
    low = ch.casefold()
    if low == ch:
        return ch
    return "".join(_fold_char_nocase(c) or "" for c in low)


_MISSING = object()


def _cached_fold(ch: str) -> str | None:
    """``_fold_char`` through the shared cache."""
    out = _FOLD_CACHE.get(ch, _MISSING)
    if out is _MISSING:
        out = _fold_char(ch)
        if len(_FOLD_CACHE) < _FOLD_CACHE_LIMIT:
            _FOLD_CACHE[ch] = out
    return out  # type: ignore[return-value]


def _fold_table(text: str) -> dict[int, str | None]:
    """A translate table for exactly the characters of ``text``.

    Every character gets an entry (identity included) because a miss in ``str.translate``
    costs an exception internally; building the table from the distinct characters keeps it
    small even for megabytes of text.
    """
    return {ord(ch): _cached_fold(ch) for ch in set(text)}


# ASCII fast path of the fold: controls (tab included) become spaces, CR becomes LF. One
# str.translate call, which CPython runs as a table lookup for ASCII strings.
_ASCII_FOLD = str.maketrans(
    {i: " " for i in (*range(0, 10), 11, 12, *range(14, 32), 127)} | {13: "\n"}
)


def _fold(text: str) -> str:
    """Unicode stage of :func:`canonical`: case, compatibility forms, homoglyphs, marks.

    NFKD (compatibility forms, accents split off), then one table lookup per character
    (marks and invisible characters deleted, homoglyphs to ASCII, case folded), then NFC.
    Newlines are kept (as ``\\n``) so callers can still look at lines; other controls
    become spaces. The result is checked to be a fixed point and the round repeated if not
    (rare, but it is what makes :func:`canonical` idempotent).
    """
    if text.isascii():
        return text.lower().translate(_ASCII_FOLD)
    for _ in range(4):
        s = unicodedata.normalize("NFKD", text)
        s = s.translate(_fold_table(s))
        if s.isascii():
            return s  # ASCII lowercase without controls: a fixed point
        # The table's outputs are its own fixed points, so when the translated text is still
        # NFKD-normal another round would reproduce it, and its NFC form is the fixed point.
        done = unicodedata.is_normalized("NFKD", s)
        text = unicodedata.normalize("NFC", s)
        if done:
            break
    return text


# =============================================================================================
# canonical(): layout (whitespace, spaced-out letters)

# A separator between spaced-out letters: punctuation with optional single spaces around it,
# a slash with up to three spaces on either side (a word break in many spelled-out formats,
# "G | i | v | e  /  m | e"), or one to three spaces. Each alternative is at most 7
# characters and each repetition consumes a letter, so matching is linear.
_SEP = r"(?: ?[.\-_*|] ?| {0,3}/ {0,3}| {1,3})"
_SEP_CAPTURE = re.compile(r"( ?[.\-_*|] ?| {0,3}/ {0,3}| {1,3})")
_SPACED_RE = re.compile(rf"(?<![^\W_])[a-z0-9](?:{_SEP}[a-z0-9]){{2,}}(?![^\W_])")
# Cheap necessary condition, tried first: three lone characters separated by separators.
# Whitespace of any length counts (collapsing it later can create a run), so a False
# answer also holds for the collapsed text. For ASCII text the separators are first mapped
# to spaces, and a pre-check for two lone characters starts with a literal space, which the
# regex engine finds with a fast scan; prose almost never gets past it ("e.g." does).
_SEPS_TO_SPACE = str.maketrans(dict.fromkeys(".-_*|/\n", " "))
_SPACED_PRE_ASCII = re.compile(r" [a-z0-9] +[a-z0-9](?![a-z0-9])")
_SPACED_HINT_ASCII = re.compile(r"[^a-z0-9][a-z0-9] +[a-z0-9] +[a-z0-9](?![a-z0-9])")
_SPACED_HINT = re.compile(
    r"(?<![a-z0-9])[a-z0-9][\s.\-_*|/]+[a-z0-9][\s.\-_*|/]+[a-z0-9](?![a-z0-9])"
)


def _may_have_spaced(text: str) -> bool:
    """Whether ``text`` (folded) may contain spaced-out letters (False means it has none)."""
    if text.isascii():
        mapped = " " + text.translate(_SEPS_TO_SPACE)
        if _SPACED_PRE_ASCII.search(mapped) is None:
            return False
        return _SPACED_HINT_ASCII.search(mapped) is not None
    return _SPACED_HINT.search(text) is not None


def _join_run(m: re.Match[str]) -> str:
    """Join one run of spaced-out characters into words.

    When most separators are punctuation ("s-a-r-i-n", "G | i | v | e"), punctuation joins
    letters and spaces or a slash break words. Otherwise the narrowest run of spaces joins
    letters, and wider spaces, a slash or a stray punctuation mark break words: in
    "m a s s - p r o d u c e" the hyphen is the word's own, not the spelling's. Runs without
    a letter ("1 2 3") are left alone.
    """
    run = m.group()
    parts = _SEP_CAPTURE.split(run)
    chars = parts[0::2]
    seps = parts[1::2]
    if not any(c.isalpha() for c in chars):
        return run
    punct = [not s.isspace() and s.strip() != "/" for s in seps]
    if 2 * sum(punct) > len(seps):
        breaks = [not p for p in punct]
    else:
        narrow = min((len(s) for s in seps if s.isspace()), default=0)
        breaks = [(not s.isspace()) or len(s) > narrow for s in seps]
    out = [chars[0]]
    for brk, ch in zip(breaks, chars[1:], strict=True):
        if brk:
            out.append(" ")
        out.append(ch)
    return "".join(out)


def _layout(folded: str, spaced: bool | None = None) -> str:
    """Join spaced letters and collapse whitespace (the layout stage of canonical()).

    The first join pass sees the folded text's own spacing, where a double space may be a
    word break. Later passes see collapsed text; they only change anything for odd mixes of
    separators (or letters split by line breaks), but they make canonical() a fixed point.
    ``spaced`` is ``_may_have_spaced(folded)`` when the caller already knows it.
    """
    if spaced is None:
        spaced = _may_have_spaced(folded)
    if not spaced:
        return " ".join(folded.split())
    s = " ".join(_SPACED_RE.sub(_join_run, folded).split())
    for _ in range(4):
        t = _SPACED_RE.sub(_join_run, s)
        if t == s:
            break
        s = " ".join(t.split())
    return s


def canonical(text: str) -> str:
    """The canonical form of ``text``: what the classifier reads.

    NFKC-style compatibility folding (fullwidth and mathematical letters), casefolding,
    homoglyphs folded to ASCII, zero-width/format/tag characters and combining marks removed
    (``"çafé"`` -> ``"cafe"``), control characters turned into spaces, spaced-out letters
    joined into words (``"h o w  t o"`` -> ``"how to"``, ``"s-a-r-i-n"`` -> ``"sarin"``) and
    whitespace collapsed. Idempotent: ``canonical(canonical(x)) == canonical(x)``.
    ASCII input takes a fast path that skips the Unicode work.
    """
    return _layout(_fold(text))


# =============================================================================================
# Plausibility of decoded text (see also asl3.text.plausible)


def _wordy(sample: str, symbols: str = "", share: float = 0.8) -> bool:
    """Whether ``sample`` is mostly letters, digits, spaces (and ``symbols``): writing.

    Keeps the heuristic decoders (leetspeak, ciphers) off binary noise, where they would
    only find coincidences at a high cost.
    """
    n = len(sample)
    good = sum(map(str.isalnum, sample)) + sample.count(" ")
    good += sum(map(sample.count, symbols))
    return n > 0 and good >= share * n


# =============================================================================================
# Decoders. Each takes the prepared raw text (case kept) and/or the canonical text and returns
# the decoded text (not yet canonical), or None. Transport decoders (base64, hex) also return
# the bare payloads so that a second layer can be looked for inside them.

_B64_RUN_RE = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")
_B64_FULL_RE = re.compile(r"[A-Za-z0-9+/_\-]+={0,2}")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


def _b64_decode_run(run: str) -> str | None:
    """Decode one base64 run (standard or URL-safe, padded or not) to plausible text."""
    body = run.rstrip("=")
    std = "+" in body or "/" in body
    url = "-" in body or "_" in body
    if std and url:
        return None
    if url:
        body = body.translate(_URLSAFE_TO_STD)
    # A run glued to a preceding word is misaligned; try dropping up to three characters.
    for skip in range(4):
        chunk = body[skip:]
        if len(chunk) % 4 == 1 or len(chunk) < 8:
            continue
        try:
            data = binascii.a2b_base64(chunk + "=" * (-len(chunk) % 4))
        except (binascii.Error, ValueError):
            continue
        text = decode_bytes(data)
        if text is not None:
            return text
        if len(chunk) > 4096:
            break  # long runs are not glued words; one alignment is enough
    return None


def _decode_base64(raw: str) -> tuple[str, list[str]] | None:
    """Decode base64 runs embedded anywhere in ``raw`` (and a whole-message blob).

    Runs of at least 16 base64 characters are candidates; consecutive runs separated only by
    a line break (MIME-style wrapping) are decoded together. The view is ``raw`` with each
    decodable run replaced by its text, so the surrounding instructions stay in context.
    """
    spans: list[tuple[int, int]] = []
    for m in _B64_RUN_RE.finditer(raw):
        start, end = m.span()
        if spans:
            pstart, pend = spans[-1]
            gap = raw[pend:start]
            if gap.strip() == "" and "\n" in gap and (pend - pstart) % 4 == 0:
                spans[-1] = (pstart, end)
                continue
        spans.append((start, end))
    out: list[str] = []
    payloads: list[str] = []
    pos = 0
    for start, end in spans:
        run = "".join(raw[start:end].split())
        text = _b64_decode_run(run)
        if text is None:
            continue
        out.append(raw[pos:start])
        out.append(f" {text} ")
        payloads.append(text)
        pos = end
    if not payloads:
        return whole_blob(raw, _B64_FULL_RE, _b64_decode_run, 12)
    out.append(raw[pos:])
    return "".join(out), payloads


# Hex: pairs of hex digits, optionally with \x or 0x prefixes and space/comma/colon
# separators. A run must start with a digit-led byte: every ASCII character's first nibble is
# a digit, and requiring it keeps the search from stopping at every "be"/"de" in prose.
_HEX_RUN_RE = re.compile(
    r"(?:\\x|0x)?[0-9][0-9a-f](?:[ ,:;]{0,2}(?:\\x|0x)?[0-9a-f]{2}){7,}", re.IGNORECASE
)
_HEX_STRIP_RE = re.compile(r"\\x|0x|[ ,:;]", re.IGNORECASE)


def _decode_hex(raw: str) -> tuple[str, list[str]] | None:
    """Decode runs of at least 8 hex-encoded bytes (16 digits) to plausible UTF-8 text."""
    out: list[str] = []
    payloads: list[str] = []
    pos = 0
    for m in _HEX_RUN_RE.finditer(raw):
        digits = _HEX_STRIP_RE.sub("", m.group())
        if len(digits) % 2:
            digits = digits[:-1]
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            continue
        text = decode_bytes(data)
        if text is None:
            continue
        out.append(raw[pos : m.start()])
        out.append(f" {text} ")
        payloads.append(text)
        pos = m.end()
    if not payloads:
        return None
    out.append(raw[pos:])
    return "".join(out), payloads


_MORSE_CODE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g",
    "....": "h", "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n",
    "---": "o", ".--.": "p", "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u",
    "...-": "v", ".--": "w", "-..-": "x", "-.--": "y", "--..": "z",
    "-----": "0", ".----": "1", "..---": "2", "...--": "3", "....-": "4", ".....": "5",
    "-....": "6", "--...": "7", "---..": "8", "----.": "9",
    ".-.-.-": ".", "--..--": ",", "..--..": "?", ".----.": "'", "-.-.--": "!", "-..-.": "/",
    "-.--.": "(", "-.--.-": ")", ".-...": "&", "---...": ":", "-.-.-.": ";", "-...-": "=",
    ".-.-.": "+", "-....-": "-", "..--.-": "_", ".-..-.": '"', "...-..-": "$", ".--.-.": "@",
}  # fmt: skip
# Codes of 1-7 dots/dashes separated by spaces (letters), " / ", "|" or 2+ spaces (words).
# The lookbehind makes a run start only at the beginning of a dot/dash group, so a megabyte
# of ".-.-.-" without separators is rejected in one pass.
_MORSE_RUN_RE = re.compile(
    r"(?<![.\-\w])[.\-]{1,7}(?:(?: {1,7}| ?[/|] ?|\n)[.\-]{1,7}){4,}(?![.\-\w])"
)
_MORSE_TOKEN_RE = re.compile(r"[.\-]+|[/|]| {2,}|\n")


def _decode_morse_run(run: str) -> str | None:
    """Decode one Morse run, or None when too many codes are unknown or it is not Morse."""
    if "." not in run or "-" not in run:
        return None  # ellipses and dash rules are not Morse
    out: list[str] = []
    known = unknown = 0
    for tok in _MORSE_TOKEN_RE.findall(run):
        if tok[0] in ".-":
            ch = _MORSE_CODE.get(tok)
            if ch is None:
                unknown += 1
            else:
                known += 1
                out.append(ch)
        elif out and out[-1] != " ":
            out.append(" ")
    if known < 4 or unknown > 0.2 * (known + unknown):
        return None
    return "".join(out).strip()


_MORSE_FOLD = str.maketrans(
    {
        "\u00b7": ".",
        "\u2022": ".",
        "\u2219": ".",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "_": "-",
    }
)


def _decode_morse(raw: str) -> tuple[str, list[str]] | None:
    """Replace Morse runs in ``raw`` with their letters (at least 5 codes per run).

    Returns the replaced text and the decoded runs."""
    if not raw.isascii():
        raw = raw.translate(_MORSE_FOLD)
    if raw.count(".") + raw.count("-") < 8:
        return None
    out: list[str] = []
    payloads: list[str] = []
    pos = 0
    for m in _MORSE_RUN_RE.finditer(raw):
        text = _decode_morse_run(m.group())
        if text is None:
            continue
        out.append(raw[pos : m.start()])
        out.append(f" {text} ")
        payloads.append(text)
        pos = m.end()
    if not out:
        return None
    out.append(raw[pos:])
    return "".join(out), payloads


# Leetspeak. Only characters that stand for letters inside words are folded; a view is made
# when some word has a leet character between two letters ("b4k3", "h0w", "5ourd0ugh").
_LEET_CHARS = "0123456789@$!|+\u20ac"
_LEET_MAP = {"4": "a", "@": "a", "8": "b", "3": "e", "\u20ac": "e", "6": "g", "9": "g",
             "1": "i", "!": "i", "|": "l", "0": "o", "5": "s", "$": "s", "7": "t", "+": "t",
             "2": "z"}  # fmt: skip
_LEET_TABLE = str.maketrans(_LEET_MAP)
# Characters that trigger a leet view when found between letters. 2, 6, 8, 9 and + are
# left out: as leet they are rare, inside words common ("h2o", "fe2o3", "a9v", "ctrl+alt").
_LEET_TRIGGERS = "013457@$!|"
# Letter, non-trigger leet characters, a trigger, any leet characters, letter. The first run
# cannot hold a trigger, so there is one way to match and no quadratic backtracking.
_LEET_INTERIOR_RE = re.compile(r"[a-z][2689+\u20ac]*[013457@$!|][0-9@$!|+\u20ac]*[a-z]")
_LEET_MAX_WORD = 24  # longer tokens are blobs (hashes, base64), not words
_LEAD_PUNCT = "\"'(["
_TRAIL_PUNCT = ".,!?;:\"')]"
# Product codes and chemical formulas ("H5N1", "CO2", "B12", "Fe2O3") mix capitals and
# digits in the original text, and have two capitals or no small letter; such words are left
# alone. A capitalized leet word ("H0w", "H3lp") has one capital and small letters.
_CODE_HINT_RE = re.compile(r"[A-Z][0-9]|[0-9][A-Z]")
# "name@host" (package specs, handles) is not leet; "c@ke" and "bre@d" are.
_AT_HANDLE_RE = re.compile(r"[a-z]{3,}@[a-z]{3,}")

# "1" stands for both "i" and "l". English letter-pair frequencies (percent of pairs, "^"
# and "$" for word edges) decide which one fits between its neighbours: "p1ease" -> "please",
# "th1s" -> "this". Right for about three words in four where always-"i" gets three in five.
_I_BEFORE = dict(t=1.34, h=0.76, r=0.73, l=0.62, s=0.55, d=0.50, n=0.34, w=0.39, m=0.32,
                 a=0.32, f=0.28, c=0.27, v=0.27, g=0.16, e=0.18, p=0.12, b=0.11, u=0.11,
                 k=0.10, o=0.08, x=0.05, y=0.05, i=0.04, z=0.03, **{"^": 0.9})  # fmt: skip
_I_AFTER = dict(n=2.43, s=1.13, t=1.12, o=0.83, c=0.70, l=0.47, e=0.40, m=0.32, r=0.31,
                d=0.30, v=0.29, a=0.28, g=0.25, f=0.20, b=0.10, p=0.08, z=0.07, k=0.05,
                x=0.04, u=0.03, i=0.04, **{"$": 0.05})  # fmt: skip
_L_BEFORE = dict(a=1.09, e=0.53, i=0.47, l=0.58, o=0.36, u=0.35, p=0.26, b=0.24, c=0.16,
                 f=0.07, g=0.07, s=0.06, t=0.10, r=0.08, n=0.07, d=0.05, w=0.03, y=0.02,
                 **{"^": 0.3})  # fmt: skip
_L_AFTER = dict(e=0.83, i=0.62, l=0.58, a=0.52, y=0.46, o=0.42, d=0.25, s=0.14, u=0.14,
                t=0.12, f=0.06, v=0.05, k=0.03, p=0.03, b=0.03, m=0.04, **{"$": 0.7})  # fmt: skip


def _fold_leet_word(core: str) -> str:
    """Fold one leet word to letters, choosing "i" or "l" for each "1" by its neighbours."""
    core = core.replace("11", "ll")
    word = core.translate(_LEET_TABLE)
    if "1" not in core or word in _COMMON_WORDS:
        return word
    alt = word.replace("i", "l")
    if (
        alt in _COMMON_WORDS
        and core.translate(str.maketrans({"1": "l"})).translate(_LEET_TABLE) == alt
    ):
        return alt
    out = list(word)
    for k, ch in enumerate(core):
        if ch == "1":
            prev = out[k - 1] if k else "^"
            nxt = out[k + 1] if k + 1 < len(out) else "$"
            i_score = _I_BEFORE.get(prev, 0.02) * _I_AFTER.get(nxt, 0.02)
            l_score = _L_BEFORE.get(prev, 0.02) * _L_AFTER.get(nxt, 0.02)
            if l_score > i_score:
                out[k] = "l"
    return "".join(out)


# Letters -> "a", trigger characters -> "1", other leet characters -> "2", the rest -> " ":
# then "a", 1s and 2s, "a" is a leet character inside a word, found with a literal scan.
_LEET_CLASS = str.maketrans(
    {
        i: "a" if chr(i).islower() else "1" if chr(i) in _LEET_TRIGGERS
        else "2" if chr(i) in _LEET_MAP else " "
        for i in range(128)
    }
)  # fmt: skip
_LEET_CLASS_HINT = re.compile("a2*1[12]*a")
# A whole word made of letters and leet characters, holding at least one leet character,
# with optional quotes/brackets around it. Each part's character class is disjoint from the
# next one's, so a match never backtracks more than a character (e-mail addresses and URLs
# contain "." or ":" and never match).
# Hyphens separate words too ("p010n!um-210", "3nd-u53r"), but digits next to a hyphen are a
# number ("polonium-210", "covid-19", "2020-2021") and are left alone.
_LEET_TOKEN_RE = re.compile(
    r"(?<![^ -])[\"'(\[]*[a-z]*[0-9@$!|+\u20ac][a-z0-9@$!|+\u20ac]*[.,?;:\"')\]]*(?![^ -])"
)


def _has_leet_word(canon: str) -> bool:
    """Whether some word of ``canon`` has a leet character between two letters (cheap)."""
    if not any(ch in canon for ch in _LEET_TRIGGERS):
        return False
    if canon.isascii():
        return _LEET_CLASS_HINT.search(canon.translate(_LEET_CLASS)) is not None
    return _LEET_INTERIOR_RE.search(canon) is not None


def _code_words(text: str) -> frozenset[str]:
    """Lowercased words of the original text that mix capitals and digits (codes, formulas)."""
    if _CODE_HINT_RE.search(text) is None:
        return frozenset()
    return frozenset(
        w.lower().strip(_LEAD_PUNCT + _TRAIL_PUNCT) for w in text.replace("-", " ").split()
        if _CODE_HINT_RE.search(w) and _is_code(w)
    )


def _is_code(word: str) -> bool:
    return sum(ch.isupper() for ch in word) >= 2 or not any(ch.islower() for ch in word)


def _decode_leet(canon: str, text: str) -> str | None:
    """Leetspeak in ``canon`` folded to letters, or None when no word is leet.

    A view is made when some word has a trigger character between two letters. Only words
    holding a leet character are touched (found by one regex pass, so the cost follows the
    number of such words): words with letters are folded, and all-leet words of up to six
    characters ("70", "7311") too, since in leetspeak they are words as well. URLs, e-mail
    addresses, long blobs and capital-digit codes of the original ``text`` are left alone.
    """
    if not _has_leet_word(canon) or not _wordy(canon[:2000], "@$!|+.,?'", 0.9):
        return None
    codes = _code_words(text)
    triggered = False

    def fold(m: re.Match[str]) -> str:
        nonlocal triggered
        tok = m.group()
        core = tok.lstrip(_LEAD_PUNCT)
        lead = tok[: len(tok) - len(core)]
        stripped = core.rstrip(_TRAIL_PUNCT)
        trail = core[len(stripped) :]
        core = stripped
        if not core or len(core) > _LEET_MAX_WORD or core in codes or (
                core.isdigit() and "-" in canon[max(m.start() - 1, 0) : m.end() + 1]):
            return tok
        if _LEET_INTERIOR_RE.search(core) and not _AT_HANDLE_RE.fullmatch(core):
            triggered = True
        elif not (len(core) <= 6 or any("a" <= ch <= "z" for ch in core)):
            return tok
        return lead + _fold_leet_word(core) + trail

    out = _LEET_TOKEN_RE.sub(fold, canon)
    return out if triggered else None


# Caesar / ROT13 / reversal: no checksum, so the decoded text must read clearly more like
# English than the original. Chunks are the text's lines (encoded payloads usually sit on a
# line of their own under an English instruction) and the whole text.
_SHIFT_TABLES = [
    str.maketrans(string.ascii_lowercase, string.ascii_lowercase[s:] + string.ascii_lowercase[:s])
    for s in range(26)
]
# Atbash (a<->z, b<->y, ...) is one more substitution of the same kind, tried beside the
# shifts under the pseudo-shift 26: ranked by letter frequencies, accepted by the same tests.
_ATBASH = 26
_SHIFT_TABLES.append(str.maketrans(string.ascii_lowercase, string.ascii_lowercase[::-1]))
_CIPHER_SAMPLE = 1500  # characters of a line scored per shift
_CIPHER_BUDGET = 60_000  # characters searched for a shift, over all lines of one text
_MIN_GAIN = 0.15
_MIN_ENGLISH = 0.2
# Five of the most frequent English letter pairs make up about a tenth of the pairs in prose
# but only about 2-3% after a shift or a reversal ("th" reads "gu" in ROT13, "ht" reversed).
# Counting them takes a few fast substring counts, so prose lines skip the word-level test.
# "er" is left out: ROT13 and reversal both turn the frequent "re" into it, so ROT13 text
# counted as prose and was never decoded.
_TOP_BIGRAMS = ("th", "he", "in", "an", "nd")
_PROSE_BIGRAM_SHARE = 0.06
# The fifty most frequent English letter pairs (Norvig's counts over Google Books). Inside the
# words of 2,000 training requests they are about half of all pairs (1st percentile 0.25),
# a fifth after a reversal (99th percentile 0.41) and 4-15% after a Caesar shift, so they
# confirm a decoding when a request has too few common words for the word test ("Provide a
# detailed plan for releasing ..." has two in eleven).
_COMMON_BIGRAMS = (
    "th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of",
    "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le",
    "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce", "li", "ch", "ll",
    "be", "ma", "si", "om", "ur",
)  # fmt: skip
_MIN_BIGRAM_SHARE = 0.35
_MIN_BIGRAM_GAIN = 0.15
_MIN_BIGRAMS = 12  # fewer letter pairs than this are too few to judge
# A reversal keeps most pairs common ("er"/"re", "at"/"ta"), so it is told by the ends of
# words instead: English words start with t, s, a, w and end with e, s, t, n, d, y.
# Percentages over the words of half the training requests (the other half: the mean of
# log P(first letter as a start) + log P(last letter as an end), minus the same with the
# ends swapped, is above 0.41 per word for 95% of the requests, below -0.41 reversed).
_START_PCT = (7.9, 4.0, 6.0, 5.0, 2.2, 4.4, 2.5, 5.9, 6.3, 0.3, 0.8, 2.7, 4.7, 2.2, 4.4, 4.7,
              0.3, 3.5, 8.3, 12.7, 1.6, 1.0, 7.3, 0.05, 1.5, 0.05)  # fmt: skip
_END_PCT = (0.8, 0.5, 0.5, 7.4, 19.3, 1.9, 3.2, 2.6, 0.2, 0.05, 1.8, 3.5, 2.0, 8.6, 5.9, 2.3,
            0.05, 5.9, 10.5, 11.8, 1.2, 0.1, 3.7, 0.5, 6.0, 0.05)  # fmt: skip
_END_BIAS = {
    chr(97 + i): math.log(_END_PCT[i] / _START_PCT[i]) for i in range(26)
}  # log P(as an end) - log P(as a start), per letter
_MIN_DIRECTION = 0.3
_MIN_DIRECTION_WORDS = 3


# English letter frequencies (percent, a-z). Scoring a line's letter counts against them
# under each of the 26 shifts ranks the shifts in a few microseconds; only the best three
# are then checked word by word, and none when the line already scores best unshifted.
_LETTER_FREQ = (8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7, 7.5,
                1.9, 0.095, 6.0, 6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074)  # fmt: skip
_SHIFT_LOGS = [[math.log(_LETTER_FREQ[(c + s) % 26] / 100) for c in range(26)] for s in range(26)]
_SHIFT_LOGS.append([math.log(_LETTER_FREQ[25 - c] / 100) for c in range(26)])  # atbash


# Quicker first test: in English about 70% of letters are one of "etaoinshr", after a Caesar
# shift 30-45% (over 99% of shifted lines of 12+ letters fall below 60%).
_FREQUENT_LETTERS = "etaoinshr"
_ENGLISH_FREQUENT_SHARE = 0.6


def _ranked_shifts(sample: str) -> list[int]:
    """The three shifts whose plaintext has the most English letter frequencies, best first
    (atbash competes as shift 26).

    Shift 0 (the sample as it is) competes too: reversed English keeps English letter
    frequencies and ranks it first, a Caesar cipher ranks its own shift first. A sample
    whose letters are mostly the frequent English ones gets ``[0]`` without the full
    ranking.
    """
    letters = sum(map(sample.count, string.ascii_lowercase))
    frequent = sum(map(sample.count, _FREQUENT_LETTERS))
    if frequent >= _ENGLISH_FREQUENT_SHARE * letters:
        return [0]
    counts = list(map(sample.count, string.ascii_lowercase))
    scores = [sum(map(operator.mul, counts, logs)) for logs in _SHIFT_LOGS]
    return sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:3]


def _looks_like_prose(line: str) -> bool:
    """Cheap early exit: True when ``line`` has the letter pairs of ordinary English."""
    return sum(map(line.count, _TOP_BIGRAMS)) >= _PROSE_BIGRAM_SHARE * len(line) > 0


def _cipher_tokens(text: str) -> list[str]:
    """Word tokens for cipher decisions: single letters are left out.

    Lone letters ("a", "i") are common words under many shifts and abound in hex or
    formulas, so counting them would let noise pass for English.
    """
    return [t for t in _alpha_tokens(text) if len(t) > 1]


def _clearly_english(tokens: list[str], base: float) -> float | None:
    """Englishness of ``tokens`` if it is high and clearly above ``base``, else None.

    Besides the share, at least two common words are needed and one of them must have
    three or more letters: random letters often spell "to" or "in", rarely "the" or "how".
    """
    if len(tokens) < 3:
        return None
    hits = [t for t in tokens if t in _COMMON_WORDS]
    score = len(hits) / len(tokens)
    if (
        len(hits) >= 2
        and score >= max(_MIN_ENGLISH, base + _MIN_GAIN)
        and any(len(t) > 2 for t in hits)
    ):
        return score
    return None


def _bigram_share(text: str) -> float:
    """Share of the letter pairs inside ``text``'s words that are common English pairs
    (0.0 when there are too few pairs to judge)."""
    pairs = sum(len(t) - 1 for t in _alpha_tokens(text))
    if pairs < _MIN_BIGRAMS:
        return 0.0
    return sum(map(text.count, _COMMON_BIGRAMS)) / pairs


def _direction(tokens: list[str]) -> float:
    """Mean evidence per word of three or more letters that ``tokens`` read forwards:
    positive for English, negative for reversed English (0.0 for too few words)."""
    words = [t for t in tokens if len(t) > 2]  # hex and ids break into short letter runs
    if len(words) < _MIN_DIRECTION_WORDS:
        return 0.0
    bias = _END_BIAS.get
    return sum(bias(t[-1], 0.0) - bias(t[0], 0.0) for t in words) / len(words)


def _shifted_english(shifted: str, sample: str, base: float) -> float | None:
    """How English ``shifted`` (a Caesar shift of ``sample``, whose word share is ``base``)
    reads, if clearly more than ``sample``; else None.

    The word test (:func:`_clearly_english`) first; failing it, common letter pairs, which
    need no common words and so confirm terse requests of content words.
    """
    score = _clearly_english(_cipher_tokens(shifted), base)
    if score is not None:
        return score
    share = _bigram_share(shifted)
    if share >= max(_MIN_BIGRAM_SHARE, _bigram_share(sample) + _MIN_BIGRAM_GAIN):
        return share
    return None


def _best_shift(sample: str, base: float, ranked: list[int]) -> int | None:
    """The Caesar shift (to apply) that makes ``sample`` clearly English, if any.

    Only the ``ranked`` shifts are tried (none when the unshifted sample ranks first), and
    ROT13 always: it swaps e/r and a/n, so its text can keep English letter frequencies.
    """
    shifts = ranked if ranked and ranked[0] != 0 else []
    best_shift, best_score = 0, 0.0
    for sh in shifts if 13 in shifts else [*shifts, 13]:
        if not sh:
            continue
        score = _shifted_english(sample.translate(_SHIFT_TABLES[sh]), sample, base)
        if score is not None and score > best_score:
            best_shift, best_score = sh, score
    return best_shift or None


def _reads_reversed(sample: str, base: float, ranked: list[int]) -> bool:
    """Whether ``sample`` is reversed English: English letters, English words backwards."""
    if 0 not in ranked:
        return False
    tokens = _cipher_tokens(sample[::-1])
    if _clearly_english(tokens, base) is not None:
        return True
    # Too few common words to go by: English letter frequencies (no shift ranks above the
    # sample itself) and words that start and end the way English words do.
    return ranked[0] == 0 and _direction(tokens) >= _MIN_DIRECTION


def _cipher_name(shift: int) -> str:
    """View name for a decoding shift: ROT13 is its own inverse, the rest are "caesar"
    (and the pseudo-shift 26 is atbash)."""
    return "rot13" if shift == 13 else "atbash" if shift == _ATBASH else "caesar"


def _decode_ciphers(lines: list[str]) -> list[tuple[str, str, list[str]]]:
    """Reversal, Caesar and atbash decodings of lines that are not English (and of the whole
    text).

    Encoded payloads usually sit on a line of their own under an English instruction, so
    each line is judged alone; lines too short to judge are also judged together. Returns
    (name, text, payloads) triples: all lines with the decodable ones replaced, and the
    decoded lines. Lines that pass for prose (letter pairs), have fewer than three words of
    two or more letters, more than 20% common words, or much besides letters are skipped. Letter frequencies rank the
    shifts and only the best three are checked word by word, on at most 60,000 characters.
    """
    budget = _CIPHER_BUDGET
    reversed_lines: dict[int, str] = {}
    by_shift: dict[int, dict[int, str]] = {}
    short_hits = short_tokens = 0
    short: list[int] = []
    for i, line in enumerate(lines):
        if budget <= 0:
            break
        if _looks_like_prose(line):
            continue
        sample = line[:_CIPHER_SAMPLE]
        tokens = _cipher_tokens(sample)
        hits = sum(map(_COMMON_WORDS.__contains__, tokens))
        if len(tokens) < 3:
            short.append(i)
            short_hits += hits
            short_tokens += len(tokens)
            continue
        if hits > 0.2 * len(tokens) or not _wordy(sample, ".,?!'", 0.9):
            continue
        base = hits / len(tokens)
        ranked = _ranked_shifts(sample)
        budget -= len(sample)
        shift = _best_shift(sample, base, ranked)
        if shift is not None:
            by_shift.setdefault(shift, {})[i] = line.translate(_SHIFT_TABLES[shift])
        elif _reads_reversed(sample, base, ranked):
            reversed_lines[i] = line[::-1]
    if len(short) > 1 and short_tokens >= 3 and short_hits <= 0.2 * short_tokens and budget > 0:
        whole = " ".join(lines[i] for i in short)[:_CIPHER_SAMPLE]
        base = short_hits / short_tokens
        ranked = _ranked_shifts(whole)
        if (shift := _best_shift(whole, base, ranked)) is not None:
            by_shift.setdefault(shift, {}).update(
                (i, lines[i].translate(_SHIFT_TABLES[shift])) for i in short
            )
        elif _reads_reversed(whole, base, ranked):
            reversed_lines.update((i, lines[i][::-1]) for i in short)
    found: list[tuple[str, str, list[str]]] = []
    for name, repl in [("reversed", reversed_lines)] + [
        (_cipher_name(shift), r) for shift, r in sorted(by_shift.items(), key=lambda kv: -len(kv[1]))
    ]:
        if repl:
            found.append((name, " ".join(repl.get(i, ln) for i, ln in enumerate(lines)),
                          [repl[i] for i in sorted(repl)]))
    return found


# Spaced letters without word breaks ("h o w t o m a k e") join into one long word; this
# view splits such words at common English words, leaving unknown stretches whole.
_SEGMENT_BUDGET = 2000  # letters of dynamic programming per text
_SEGMENT_MIN = 8  # shorter joined words are left alone
_MAX_COMMON_LEN = max(map(len, _COMMON_WORDS))
_MAX_UNKNOWN = 30


# The most frequent function words, which run-together requests are full of ("howtomake").
_TOP_WORDS = frozenset(
    ("the", "of", "and", "to", "in", "is", "it", "you", "that", "for", "on", "are", "with",
     "as", "be", "at", "this", "how", "what")
)  # fmt: skip


def _word_cost(word: str) -> float:
    """Cost of a common word in a segmentation: cheaper when frequent or long."""
    if len(word) == 1:
        return 2.8
    return (1.5 if word in _TOP_WORDS else 2.3) - 0.1 * len(word)


def _segment_word(word: str) -> str:
    """Split a run-together word into common words and unknown stretches (min-cost DP).

    A common word costs about 2 (less when frequent or long, see :func:`_word_cost`); an
    unknown stretch costs 4 plus 1 per letter, plus 3 when it is shorter than four letters
    (real words rarely are). So "howtomakesarin" becomes "how to make sarin" while "sarin"
    and "sourdough" are not carved into "sar in" and "so urdough". Without a dictionary it
    is a guess; canonical() keeps the joined form, so a bad split only costs one weak view.
    Cost is O(len(word) * 30); callers cap the letters per text.
    """
    n = len(word)
    inf = float("inf")
    cost = [0.0] + [inf] * n
    back = [0] * (n + 1)
    for end in range(1, n + 1):
        best, arg = inf, end - 1
        for start in range(max(0, end - _MAX_COMMON_LEN), end):
            piece = word[start:end]
            if piece in _COMMON_WORDS:
                c = cost[start] + _word_cost(piece)
                if c < best:
                    best, arg = c, start
        for start in range(max(0, end - _MAX_UNKNOWN), end):
            c = cost[start] + 4.0 + (end - start) + (3.0 if end - start <= 3 else 0.0)
            if c < best:
                best, arg = c, start
        cost[end], back[end] = best, arg
    pieces: list[str] = []
    end = n
    while end > 0:
        start = back[end]
        pieces.append(word[start:end])
        end = start
    # Adjacent unknown pieces (split only by the length cap) are glued back together.
    merged: list[str] = []
    for p in reversed(pieces):
        if merged and p not in _COMMON_WORDS and merged[-1] not in _COMMON_WORDS:
            merged[-1] += p
        else:
            merged.append(p)
    return " ".join(merged)


_ALPHA_WORD_RE = re.compile(rf"(?<![^\W_])[a-z]{{{_SEGMENT_MIN},}}(?![^\W_])")


def _decode_spacing(folded: str, canon: str) -> str | None:
    """Word-segment long words that canonical() joined from runs without word breaks.

    Runs that mark word breaks ("h o w  t o", "s-a-r-i-n g-a-s") are already split right.
    Called only when the folded text may hold spaced letters.
    """
    joined: set[str] = set()
    for m in _SPACED_RE.finditer(folded):
        word = _join_run(m)
        if len(word) >= _SEGMENT_MIN and " " not in word:  # a run without word breaks
            joined.add(word)
    joined -= _COMMON_WORDS
    if not joined:
        return None
    budget = _SEGMENT_BUDGET
    changed = False

    def split(m: re.Match[str]) -> str:
        nonlocal budget, changed
        word = m.group()
        if word not in joined or budget < len(word):
            return word
        budget -= len(word)
        out = _segment_word(word)
        changed = changed or out != word
        return out

    text = _ALPHA_WORD_RE.sub(split, canon)
    return text if changed else None


# =============================================================================================
# views()


# Invisible characters removed from the raw text before transport decoding: zero-width
# and bidi controls, soft hyphen, fillers, variation selectors, tags, lone surrogates.
_INVISIBLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\ud800-\udfff"
    "\U000e0000-\U000e007f\U000e0100-\U000e01ef]+"
)


def _prepare_raw(text: str) -> str:
    """The text as the transport decoders want it: case kept, invisible characters removed.

    Base64 is case-sensitive, so decoders cannot use the canonical text; but fullwidth
    digits or zero-width characters sprinkled into a blob should not hide it either.
    """
    if text.isascii():
        return text
    return _INVISIBLE_RE.sub("", unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", text)))


class _Collector:
    """Accumulates distinct views up to the cap."""

    def __init__(self, canon: str) -> None:
        self.views = [View("canonical", canon)]
        self.seen = {canon}

    @property
    def full(self) -> bool:
        return len(self.views) > MAX_DECODED_VIEWS

    def add(self, name: str, text: str) -> str | None:
        """Canonicalize and add a view; returns its canonical text if it was new."""
        if self.full:
            return None
        canon = canonical(text)
        if not canon or canon in self.seen:
            return None
        self.seen.add(canon)
        self.views.append(View(name, canon))
        return canon

    def add_decoding(self, name: str, in_place: str, payloads: list[str]) -> str | None:
        """Add a decoding twice: in place (the instruction around it stays) and the decoded
        payload alone, where a short request is not diluted by that instruction. Returns the
        canonical in-place text if it was new."""
        got = self.add(name, in_place)
        if got is not None:
            self.add(name, " ".join(payloads))
        return got


# Gates: a token of 16+ characters (base64, base32, base85, uuencode, contiguous hex or
# binary), numbers (two spaced hex pairs, or four numbers in a row: decimal codes, binary
# groups), Morse codes between spaces. They run on the canonical text with a space in front
# and start with a literal, which the regex engine scans for at C speed (a pattern that
# starts with a character class is tried at every position). The numbers hint runs on a copy
# of the canonical text with every digit written "0" (hex letters "a", x "x", other letters
# "g"), so that it can start with the literal "0"; lookbehinds then check what precedes.
_LONG_TOKEN_RE = re.compile(r" [^ ]{16,}")
_NUM_CLASS = class_table(
    lambda c: "0" if c.isdigit() else "a" if c in "abcdefABCDEF" else "x" if c in "xX"
    else "g" if c.isalpha() else c
)  # fmt: skip
_NUMBERS_HINT = re.compile(
    rb"0(?<![0ag]0)(?:(?:(?<= 0)(?:x0[0a]|[0a])|(?<= \\x0)[0a])[,:;]? (?:0x|\\x)?[0a]{2}[,:;]? "
    rb"|0{0,7}(?:[,;] ?| )0{1,8}(?:[,;] ?| )0{1,8}(?:[,;] ?| )0)"
)
_MIN_BITS = 42  # six bytes of seven bits: fewer 0s and 1s cannot be a binary run
_MIN_CODES = 8  # decimal character codes: eight numbers, so at least eight digits
_ESCAPE_DECODERS = (
    ("%", "percent", escapes.decode_percent),
    ("=", "quoted_printable", escapes.decode_quoted_printable),
    ("&", "html", escapes.decode_html),
    ("\\", "escapes", escapes.decode_backslash),
)
_MORSE_HINT = re.compile(r" [.\-]{1,7} [.\-]{1,7} [.\-]")
_NOT_B64_RE = re.compile(r"[^A-Za-z0-9+/_=\-\s]")
# Letters of other alphabets that canonical() keeps, told by their UTF-8 bytes: Braille
# patterns (U+2800..U+28FF: E2 A0..A3 ...) and upside-down letters (most are in
# U+0250..U+029F: C9 or CA first). The bytes that can matter are kept and the rest deleted
# (bytes.translate, C speed), so the test costs ordinary non-ASCII text about a
# microsecond; a regular expression over the characters costs several.
_ALPHABET_BYTES = frozenset(b"\xc9\xca\xe2\xa0\xa1\xa2\xa3")
_NOT_ALPHABET_BYTES = bytes(b for b in range(256) if b not in _ALPHABET_BYTES)
_BRAILLE_BYTES = re.compile(rb"\xe2[\xa0-\xa3]")
_MIN_FLIPS = 3  # upside-down letters needed before a text is read upside down
# A NATO spelling of a request almost surely spells an e, a t or an o; three substring
# tests keep the tokenizing off ordinary text.
_NATO_HINTS = ("echo", "tango", "oscar")

Decoder = Callable[[str], tuple[str, list[str]] | None]


def _may_have_tags(text: str) -> bool:
    """Whether ``text`` may hold tag characters (U+E0000..U+E007F): in UTF-16 each is a
    surrogate pair whose first half is U+DB40. One encode and a byte search, where a regular
    expression over a text with emoji costs ten times more."""
    data = text.encode("utf-16-le", "surrogatepass")
    return len(data) > 2 * len(text) and b"\x40\xdb" in data


def _raw_token_spans(raw: str, canon_tokens: list[str]) -> list[tuple[int, int]]:
    """Spans in ``raw`` of its tokens of 16+ characters, found from the canonical text's.

    For ASCII text a canonical token is the raw token lowercased, so a few ``str.find``
    calls place them; other text is split again (:func:`transports.token_spans`).
    """
    if not raw.isascii():
        return transports.token_spans(raw)
    low = raw.lower()
    spans: list[tuple[int, int]] = []
    pos = 0
    for tok in canon_tokens:
        start = low.find(tok, pos)
        if start >= 0:  # not found: letters joined by canonical(), not a blob
            pos = start + len(tok)
            spans.append((start, pos))
    return spans


def _transports(
    raw: Callable[[], str], canon: str, padded: str, canon_tokens: list[str]
) -> list[tuple[str, Decoder]]:
    """The transport decoders whose gates the text passes, in order of priority; each is a
    function of the prepared raw text. ``raw()`` prepares it (only blob gates need it).

    Escapes are gated on their character being in the canonical text at least
    :data:`~asl3.text.escapes.MIN_ESCAPES` times (one ``in`` test each for ordinary text),
    blob encodings on a long token made of their alphabet, numbers on the numbers hint and
    on the count of digits.
    """
    long_token = bool(canon_tokens)
    b64_only = len(canon) >= 12 and _NOT_B64_RE.search(canon) is None
    found: list[tuple[str, Decoder]] = []
    if long_token or b64_only:
        found.append(("base64", _decode_base64))
    hint = False
    n_digits = 0
    if any(d in canon for d in "0123456789"):
        cls = byte_classes(padded, _NUM_CLASS)
        n_digits = cls.count(b"0")
        if n_digits >= _MIN_CODES:  # eight bytes of hex or eight codes need eight digits
            hint = _NUMBERS_HINT.search(cls) is not None
        if hint or long_token:
            found.append(("hex", _decode_hex))
    for char, name, decoder in _ESCAPE_DECODERS:
        if char in canon and canon.count(char) >= escapes.MIN_ESCAPES:
            found.append((name, decoder))
    blob_tokens = [t for t in canon_tokens if "://" not in t]  # URLs are no blobs
    if blob_tokens or b64_only:
        text = raw()
        spans = _raw_token_spans(text, blob_tokens)
        kinds = transports.blob_kinds(text, spans)
        if "base32" in kinds or b64_only:
            found.append(("base32", lambda r: transports.decode_base32(r, spans, whole=b64_only)))
        if "ascii85" in kinds:
            found.append(("ascii85", lambda r: transports.decode_ascii85(r, spans)))
        if "uu" in kinds:
            found.append(("uu", transports.decode_uu))
    if (
        n_digits >= _MIN_BITS
        and (hint or long_token)
        and canon.count("0") + canon.count("1") >= _MIN_BITS
    ):
        found.append(("binary", transports.decode_binary))
    if hint and n_digits >= _MIN_CODES:
        found.append(("decimal", transports.decode_decimal))
    return found


def _decode_into(
    text: str, folded: str, canon: str, spaced: bool, prefix: str, depth: int, sink: _Collector
) -> None:
    """Run every gated decoder on ``text`` and add what they find to ``sink``.

    ``folded``, ``canon`` and ``spaced`` are ``_fold(text)``, ``canonical(text)`` and
    ``_may_have_spaced(folded)``, passed in because the caller already has them. ``depth``
    counts layers: payloads of transport encodings (tag characters, base64, hex, percent,
    quoted-printable, HTML references, backslash escapes, base32, base85, uuencode, binary,
    decimal codes) are searched again while ``depth < MAX_DEPTH``.
    """
    ascii_text = text.isascii()
    raw = text if ascii_text else ""  # prepared on first use (costly for big texts)
    padded = " " + canon
    canon_tokens = [m.group()[1:] for m in _LONG_TOKEN_RE.finditer(padded)]
    nested: list[tuple[str, str]] = []

    def prepared() -> str:
        nonlocal raw
        if not raw:
            raw = _prepare_raw(text)
        return raw

    gated = _transports(prepared, canon, padded, canon_tokens)
    if gated:
        prepared()
    if not ascii_text and _may_have_tags(text):
        # tag characters: on the text itself, since canonical() and _prepare_raw() delete them
        gated.insert(0, ("tags", lambda _raw: escapes.decode_tags(text)))
    for name, decoder in gated:
        result = decoder(raw)
        if result is None:
            continue
        decoded, payloads = result
        if sink.add_decoding(prefix + name, decoded, payloads) is not None and depth < MAX_DEPTH:
            nested.extend((prefix + name + "+", p) for p in payloads)

    if "-" in canon and "." in canon and (_MORSE_HINT.search(padded) or "|" in canon):
        morse = _decode_morse(raw or _prepare_raw(text))
        if morse is not None:
            sink.add_decoding(prefix + "morse", *morse)

    leet = _decode_leet(canon, text)
    if leet is not None:
        sink.add(prefix + "leet", leet)

    if spaced:
        spacing = _decode_spacing(folded, canon)
        if spacing is not None:
            sink.add(prefix + "spacing", spacing)

    if not canon.isascii():
        kept = canon.encode("utf-8", "surrogatepass").translate(None, _NOT_ALPHABET_BYTES)
        if (
            _BRAILLE_BYTES.search(kept) is not None
            and (braille := alphabets.decode_braille(canon)) is not None
        ):
            sink.add_decoding(prefix + "braille", *braille)
        if (
            (b"\xc9" in kept or b"\xca" in kept)
            and sum(map(folded.count, alphabets.FLIP_ONLY)) >= _MIN_FLIPS
            and (upside := alphabets.decode_upside_down(folded, englishness)) is not None
        ):
            sink.add_decoding(prefix + "upside_down", *upside)

    if any(word in canon for word in _NATO_HINTS):
        nato = alphabets.decode_nato(folded)
        if nato is not None:
            sink.add_decoding(prefix + "nato", *nato)

    # Cipher chunks: lines, and the parts of a line around ": " (an instruction, a colon,
    # then the payload is the usual shape of an encoded request).
    if "\n" in folded:
        joined = _SPACED_RE.sub(_join_run, folded) if spaced else folded
        lines = [ln for ln in joined.split("\n") if ln and not ln.isspace()]
    else:
        lines = [canon]
    if any(": " in ln for ln in lines):
        lines = [part for ln in lines for part in ln.split(": ")]
    for name, decoded, payloads in _decode_ciphers(lines):
        sink.add_decoding(prefix + name, decoded, payloads)
    for ln in lines:
        flipped = _word_order_reversed(ln)
        if flipped is not None:
            sink.add(prefix + "reversed_words", flipped)

    for pfx, payload in nested:
        if sink.full:
            break
        _decode_into(payload, *_fold_layout(payload), pfx, depth + 1, sink)


# A request whose word order was reversed ends with the word it should start with.
_OPENERS = frozenset(
    ["how", "what", "where", "which", "why", "who", "can", "could", "would", "tell", "give", "explain", "describe", "list", "write", "show", "help", "please", "walk", "teach", "provide"]
)
_EDGE = "?.!,:;\"'()[]"
_FLIP_ANYWAY_WORDS = 8


def _word_order_reversed(line: str) -> str | None:
    """``line`` with its word order reversed, when it reads like a reversed request.

    Letter reversal is a cipher (handled above); word-order reversal keeps every word English,
    so it is recognised by its shape instead: the last word is a request opener ("what's"
    counts as "what") and the first is not, unless the line is long: a reversed request can
    start with an opener too ("help not does ... how Describe"), and flipping an ordinary
    line only adds a harmless view. Only short lines are tried."""
    if len(line) > 400:
        return None
    words = line.split()
    if len(words) < 4:
        return None
    last, first = words[-1].strip(_EDGE).removesuffix("'s"), words[0].strip(_EDGE)
    if last not in _OPENERS or (first in _OPENERS and len(words) < _FLIP_ANYWAY_WORDS):
        return None
    return " ".join(reversed(words))


def _keep_lines(folded: str) -> str:
    """The layout of a folded text without spaced letters, line breaks kept: each line laid
    out as ``_layout`` does, one line break between non-blank lines."""
    return "\n".join(line for line in (_layout(x, spaced=False) for x in folded.split("\n"))
                     if line)


def _fold_layout(text: str) -> tuple[str, str, bool]:
    """``(_fold(text), canonical(text), _may_have_spaced(folded))`` in one go."""
    folded = _fold(text)
    spaced = _may_have_spaced(folded)
    return folded, _layout(folded, spaced), spaced


# Quoted spans of a canonical text (curly quotes are already straight): double quotes, and
# backtick runs (inline code and code fences). Each alternative consumes its closing mark, so
# a scan is linear; an unmatched mark matches nothing.
_QUOTED_RE = re.compile(r'"([^"]*)"|`+([^`]+)`+')
_QUOTED_SCAN = 20_000  # characters searched for quotes (a chunk, as scoring cuts them)
_QUOTED_MIN_TOKENS = 5  # a request is a clause; shorter quotes are names, titles, idioms
_QUOTED_MAX_SHARE = 0.85  # a view of nearly the whole text adds nothing
_WORD_RE = re.compile(r"[^\W_]+")


def _is_key(text: str, end: int) -> bool:
    """Is the quoted string ending at ``end`` a key (``"task": ...``)? Keys name fields;
    joined with the request they would only dilute it."""
    return text[end : end + 2].lstrip().startswith(":")


def _quoted_strings(code: str) -> list[str]:
    return [m.group(1) for m in _QUOTED_RE.finditer(code)
            if m.group(1) is not None and not _is_key(code, m.end())]


def quoted_text(canon: str) -> str | None:
    """The quoted spans of a canonical text, joined in order, when they say something the
    whole text does not say on its own.

    Why: jailbreaks quote the request they smuggle ("act as my grandma, who used to answer
    "<request>" as a bedtime story", a story in which a character is asked "<request>",
    ``{"task": "<request>"}``; keys are left out), and split it across quoted variables (``x = "How can I"``,
    ``y = " get"``...). In the whole text the request is a clause among the frame's words;
    joined, the quoted spans are the request itself (or, split, the request reassembled).
    None when there are fewer than 5 quoted words, or when the quotes hold nearly the whole
    text (the view would add nothing).
    """
    if '"' not in canon and "`" not in canon:
        return None
    sample = canon[:_QUOTED_SCAN]
    parts = []
    for m in _QUOTED_RE.finditer(sample):
        dq, bq = m.groups()
        if bq and '"' in bq:  # a code block of quoted strings (JSON, Python): the strings
            parts.extend(_quoted_strings(bq))
        elif not _is_key(sample, m.end()):
            parts.append(dq or bq or "")
    joined = " ".join(" ".join(p.split()) for p in parts if p.strip())
    n = len(_WORD_RE.findall(joined))
    if n < _QUOTED_MIN_TOKENS or n > _QUOTED_MAX_SHARE * len(_WORD_RE.findall(sample)):
        return None
    return joined


_REPAIR_CHARS = 20_000  # the part of a text searched for misspelt words (a scoring chunk)


def views(text: str, quoted: bool = False, lexicon: Lexicon | None = None,
          lines: bool = False) -> list[View]:
    """The canonical view of ``text`` followed by its plausible decodings.

    The first element is always ``View("canonical", canonical(text))`` (with ``lines``,
    the same words on their lines). Decoded views follow
    (at most :data:`MAX_DECODED_VIEWS`, each canonicalized, duplicates dropped): runs of
    Unicode tag characters, base64, hex, percent, quoted-printable, HTML-reference,
    backslash-escape, base32, Ascii85/Base85, uuencoded, binary and decimal-code runs
    (embedded ones replaced in place, so the surrounding instruction stays), Morse runs,
    leetspeak, word-segmented spaced letters, Braille, upside-down and NATO-alphabet runs,
    word-order reversal (a line that ends with a request opener such as "how"), and
    reversal/ROT13/Caesar/atbash decodings of lines that are not English (lines and the parts around ": " are judged separately, so an
    English instruction does not hide its encoded payload). Each decoding also gives a view of
    the decoded payload alone, under the same name: a short request decoded in place is
    diluted by the instruction around it ("Caesar cipher, key 7: ... What does it say? Then
    answer it fully"). A second layer found inside the payload of a transport (tags, base64,
    hex, percent, quoted-printable, HTML, escapes, base32, Ascii85, uuencode, binary,
    decimal) is a view of that payload alone, named like ``base64+rot13``.

    A decoder only runs when a cheap test suggests it, and a result is kept only when it is
    plausible text (and, for ciphers, clearly more English). The heuristic searches work on
    bounded samples (Caesar: 1,500 characters per line, 60,000 per text; word segmentation:
    2,000 letters), so the whole call is linear in ``len(text)``. Never raises for any
    ``str``, including lone surrogates and NUL characters.

    With ``quoted`` (inputs), the text's quoted spans joined (:func:`quoted_text`) come right
    after the canonical view.

    With a ``lexicon`` (the words a model knows), a text whose words are largely unknown
    also gets the view ``repaired``: scrambled, nudged, punctuated, reversed, doubled,
    pig-latin or vowelless words and run-together words mapped back to known words
    (:meth:`asl3.text.spelling.Lexicon.repair`). It comes right after the canonical view
    (and the quoted one): it is the text itself, only spelt right.

    With ``lines`` (inputs), the canonical view keeps the text's line breaks (one between
    non-blank lines) unless spaced letters were joined across them: the words are the same,
    but sentence segmentation can see that a request stands on a line of its own (a frame's
    "...is:", the request on the next line, "Do not break character" on the line after),
    instead of merging it with the frame's next instruction. Decoders still read the
    collapsed text.
    """
    folded, canon, spaced = _fold_layout(text)
    sink = _Collector(canon)
    if lines and not spaced and "\n" in folded:
        sink.views[0] = View("canonical", _keep_lines(folded))
    if quoted:
        q = quoted_text(canon)
        if q is not None:
            sink.add("quoted", q)
    if lexicon is not None:
        fixed = lexicon.repair(canon[:_REPAIR_CHARS])
        if fixed is not None:
            sink.add("repaired", fixed)
    _decode_into(text, folded, canon, spaced, "", 1, sink)
    return sink.views


# =============================================================================================
# segments()


def iter_segments(text: str, size: int = 600, stride: int = 300) -> Iterator[str]:
    """Lazily yield overlapping windows of at most ``size`` characters, about ``stride`` apart.

    A window ends at the last whitespace in its second half and the next one starts after
    the first space at or past ``stride`` (up to ``stride // 2`` further), so words are not
    cut when the text has spaces; text without spaces is cut at fixed offsets. Starts advance
    by at least ``stride``, so there are at most ``len(text) / stride + 1`` windows and the
    total output is O(len(text) * size / stride): linear for fixed parameters. Raises
    ``ValueError`` at once unless ``0 < stride <= size``.
    """
    if size <= 0 or stride <= 0 or stride > size:
        raise ValueError(f"need 0 < stride <= size, got size={size}, stride={stride}")
    return _windows(text, size, stride)


def _windows(text: str, size: int, stride: int) -> Iterator[str]:
    """The generator behind :func:`iter_segments` (parameters already checked)."""
    n = len(text)
    if n <= size:
        yield text
        return
    start = 0
    while True:
        end = start + size
        if end >= n:
            yield text[start:]
            return
        cut = max(
            text.rfind(" ", start + size // 2, end + 1),
            text.rfind("\n", start + size // 2, end + 1),
        )
        if cut > start:
            end = cut
        yield text[start:end]
        nxt = start + stride
        space = text.find(" ", nxt, nxt + stride // 2)
        start = space + 1 if space != -1 else nxt
        if start >= n:
            return


def segments(text: str, size: int = 600, stride: int = 300) -> list[str]:
    """Overlapping windows of ``text`` (see :func:`iter_segments`); ``[text]`` if short.

    Scoring the best window keeps a short request from being diluted by a long wrapper.
    Returns a list; use :func:`iter_segments` to avoid holding all windows of a huge text.
    """
    return list(iter_segments(text, size, stride))
