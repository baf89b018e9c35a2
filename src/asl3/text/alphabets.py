"""Decoders for letters written in another alphabet: Braille, upside-down text, and the NATO
phonetic alphabet.

Why: each keeps a request readable to a model (or to a person with a table) while the
n-gram classifier sees no English words: Braille patterns are symbols, upside-down letters
are IPA and other rare letters (and the text runs backwards), NATO spelling is a string of
words that never occur in requests. They take the folded text (lowercase, homoglyphs and
compatibility forms folded by :mod:`asl3.text.normalize`, line breaks kept; Braille takes
the canonical text), and each is a pure function
``folded -> (folded with the decoded spans replaced, [decoded spans]) | None``.
The caller gates them on cheap tests (a Braille or upside-down character in a non-ASCII
text, a NATO word in the text); the work here is linear in the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from asl3.text.plausible import enough_letters, plausible, splice

__all__ = ["decode_braille", "decode_nato", "decode_upside_down"]

Decoded = tuple[str, list[str]]

# ---------------------------------------------------------------------------------------------
# Braille (Unicode patterns U+2800..U+283F, grade 1)

# Dots 1-6 are bits 0-5 of the offset from U+2800.
_BRAILLE_DOTS = {
    "a": 0x01, "b": 0x03, "c": 0x09, "d": 0x19, "e": 0x11, "f": 0x0B, "g": 0x1B, "h": 0x13,
    "i": 0x0A, "j": 0x1A, "k": 0x05, "l": 0x07, "m": 0x0D, "n": 0x1D, "o": 0x15, "p": 0x0F,
    "q": 0x1F, "r": 0x17, "s": 0x0E, "t": 0x1E, "u": 0x25, "v": 0x27, "w": 0x3A, "x": 0x2D,
    "y": 0x3D, "z": 0x35,
    ",": 0x02, ";": 0x06, ":": 0x12, ".": 0x32, "!": 0x16, "?": 0x26, "'": 0x04, "-": 0x24,
}  # fmt: skip
_CAPITAL_SIGN = 0x20
_NUMBER_SIGN = 0x3C
_BRAILLE_TABLE: dict[int, str | None] = {0x2800 + d: ch for ch, d in _BRAILLE_DOTS.items()}
_BRAILLE_TABLE[0x2800] = " "
_BRAILLE_TABLE[0x2800 + _CAPITAL_SIGN] = None
_BRAILLE_TABLE[0x2800 + _NUMBER_SIGN] = "#"
_BRAILLE_RUN_RE = re.compile("[\u2800-\u28ff]+(?:[ \t]+[\u2800-\u28ff]+)*")
_NUMBER_RE = re.compile("#([a-j]+)")
_DIGITS = str.maketrans("abcdefghij", "1234567890")


def decode_braille(folded: str) -> Decoded | None:
    """Runs of Braille patterns read as grade-1 letters (a number sign turns the letters
    a-j after it into digits; the capital sign is dropped, the blank cell is a space)."""
    pieces: list[tuple[int, int, str]] = []
    for m in _BRAILLE_RUN_RE.finditer(folded):
        decoded = m.group().translate(_BRAILLE_TABLE)
        if "#" in decoded:
            decoded = _NUMBER_RE.sub(lambda d: d.group(1).translate(_DIGITS), decoded)
        if plausible(decoded) and enough_letters(decoded):
            pieces.append((m.start(), m.end(), decoded))
    if not pieces:
        return None
    return splice(folded, pieces), [p[2] for p in pieces]


# ---------------------------------------------------------------------------------------------
# Upside-down text ("ɐqɔpǝɟƃɥᴉɾʞlɯuodbɹsʇnʌʍxʎz", usually also written backwards)

# Characters that only upside-down text uses (IPA aside): a run must hold some of them.
FLIP_ONLY = frozenset("ɐǝɥᴉɯɹʇʌʍʎɟƃɾʞ")
# What each character of upside-down text stands for, in folded form (lowercase; capitals
# such as Ǝ and Ɔ fold to ǝ and ɔ). b/q, d/p, n/u and m/w are their own upside-down pairs.
_FLIP_PAIRS = (
    "ɐa qb ɔc pd ǝe ɟf ƃg ɥh ᴉi ɾj ʞk ɯm un dp bq ɹr ʇt nu ʌv ʍw ʎy mw wm "
    "∀a ꓭb ᗺb ᗡd ⅎf ⅁g ˥l ןl ᴚr ⊥t ∩u λv ⅄y ꓘk ¿? ¡! 69 96 ,' ',"
)
_FLIP_TABLE = str.maketrans({pair[0]: pair[1] for pair in _FLIP_PAIRS.split()})
# Words made only of characters that read the same either way up (or only flip to another
# ASCII letter) may belong to a run of upside-down words around them.
_AMBIGUOUS = frozenset("bdlnopqsuxzmw69.,'\"!?¿¡-")
_WORD_RE = re.compile(r"\S+")
_MIN_FLIP_SHARE = 0.2  # upside-down English has about half its letters flip-only


def _flipped_run(line: str) -> tuple[int, int] | None:
    """The span of ``line`` from its first to its last word holding a flip-only character,
    widened over neighbouring ambiguous words ("so", "pu"), or None."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD_RE.finditer(line)]
    flipped = [i for i, (_, _, w) in enumerate(words) if not FLIP_ONLY.isdisjoint(w)]
    if not flipped:
        return None
    lo, hi = flipped[0], flipped[-1]
    while lo > 0 and _AMBIGUOUS.issuperset(words[lo - 1][2]):
        lo -= 1
    while hi + 1 < len(words) and _AMBIGUOUS.issuperset(words[hi + 1][2]):
        hi += 1
    return words[lo][0], words[hi][1]


def decode_upside_down(folded: str, score: Callable[[str], float]) -> Decoded | None:
    """Upside-down runs of each line mapped back to letters and reversed.

    Generators flip each character and reverse the text so that it reads upside down; a
    run is read backwards unless it reads better forwards (``score``, an englishness
    measure, decides). A run needs flip-only characters to be at least a fifth of its
    letters, so a word of IPA in an English line is left alone.
    """
    pieces: list[tuple[int, int, str]] = []
    pos = 0
    for line in folded.split("\n"):
        if not FLIP_ONLY.isdisjoint(line):
            span = _flipped_run(line)
            if span is not None:
                run = line[span[0] : span[1]]
                letters = sum(map(str.isalpha, run))
                flips = sum(map(FLIP_ONLY.__contains__, run))
                if flips >= 2 and flips >= _MIN_FLIP_SHARE * letters:
                    mapped = run.translate(_FLIP_TABLE)
                    backwards = mapped[::-1]
                    decoded = backwards if score(backwards) >= score(mapped) else mapped
                    if plausible(decoded) and enough_letters(decoded):
                        pieces.append((pos + span[0], pos + span[1], decoded))
        pos += len(line) + 1
    if not pieces:
        return None
    return splice(folded, pieces), [p[2] for p in pieces]


# ---------------------------------------------------------------------------------------------
# NATO phonetic alphabet ("Hotel Echo Lima Lima Oscar")

NATO = {
    "alfa": "a", "alpha": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e",
    "foxtrot": "f", "golf": "g", "hotel": "h", "india": "i", "juliet": "j", "juliett": "j",
    "kilo": "k", "lima": "l", "mike": "m", "november": "n", "oscar": "o", "papa": "p",
    "quebec": "q", "romeo": "r", "sierra": "s", "tango": "t", "uniform": "u", "victor": "v",
    "whiskey": "w", "whisky": "w", "xray": "x", "x-ray": "x", "yankee": "y", "zulu": "z",
}  # fmt: skip
# Word breaks between spelled words. A line break is one too, unless the words are written
# one per line (then most NATO words end a line and line breaks are only layout).
_BREAKS = frozenset(["/", "|", "space", "(space)", "\n"])
_NATO_TOKEN_RE = re.compile(r"\(space\)|x-ray|[a-z]+|[0-9]+|[/|\n]")
MIN_NATO_WORDS = 8


def _nato_run(tokens: list[str]) -> str | None:
    """Letters (and word breaks) of one run of NATO words and breaks, or None if short."""
    letters = [t for t in tokens if t in NATO]
    if len(letters) < MIN_NATO_WORDS:
        return None
    newline_is_break = 2 * tokens.count("\n") < len(letters)
    out: list[str] = []
    for t in tokens:
        if t in NATO:
            out.append(NATO[t])
        elif (t != "\n" or newline_is_break) and out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


def decode_nato(folded: str) -> Decoded | None:
    """Runs of at least :data:`MIN_NATO_WORDS` consecutive NATO words, read as letters.

    Punctuation between the words is ignored; "(space)", "space", "/", "|" and line breaks
    mark word breaks; any other word ends a run.
    """
    if sum(map(NATO.__contains__, _NATO_TOKEN_RE.findall(folded))) < MIN_NATO_WORDS:
        return None
    pieces: list[tuple[int, int, str]] = []
    run: list[re.Match[str]] = []

    def close() -> None:
        while run and run[-1].group() not in NATO:
            run.pop()  # trailing breaks are not part of the run
        if run:
            decoded = _nato_run([m.group() for m in run])
            if decoded is not None:
                pieces.append((run[0].start(), run[-1].end(), decoded))
        run.clear()

    for m in _NATO_TOKEN_RE.finditer(folded):
        tok = m.group()
        if tok in NATO:
            run.append(m)
        elif tok in _BREAKS:
            if run:
                run.append(m)
        else:
            close()
    close()
    if not pieces:
        return None
    return splice(folded, pieces), [p[2] for p in pieces]
