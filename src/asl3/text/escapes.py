"""Decoders for escaped text: Unicode tag characters, percent-encoding, quoted-printable,
HTML character references and backslash escapes.

Each of these writes a request one escape per character ("%70%6C%65...", "&#112;&#108;...",
"\\u0070\\u006c..."), which the n-gram classifier reads as noise; tag characters
(U+E0020..U+E007E, "ASCII smuggling") are invisible and :func:`asl3.text.normalize.canonical`
deletes them, so a request hidden in them is not read at all. Every decoder here is a pure
function ``text -> (text with the decoded spans replaced in place, [decoded spans]) | None``.

Why the gates: ordinary text holds these escapes too (a URL with ``%20``, a formula with
``=``, an HTML snippet with ``&amp;``, a Windows path with ``\\x``), and a decoding costs a
classifier pass. A span is decoded only when it is a *run* of escapes (at most three other
characters between two escapes, so escapes are at least half of it) holding at least
:data:`MIN_ESCAPES` escapes of an ASCII letter or digit: spelling words takes letters, while
URLs and formulas escape spaces, punctuation and bytes of non-ASCII characters. The decoding
must then read as text (:func:`asl3.text.plausible.plausible`) or be another layer of
encoding (:func:`asl3.text.plausible.layer`), which is searched again. Escapes stand for
characters, so a run is replaced in place without spaces around it ("caf\\xc3\\xa9" reads
"café"). All patterns match in linear time (the gap between escapes cannot contain the
escape's first character) and the stdlib does the decoding (``urllib.parse``, ``quopri``,
``html``); backslash escapes are decoded by a regular expression that knows only ``\\xHH``,
``\\uHHHH``, ``\\u{H...}`` and ``\\UHHHHHHHH``, never by ``eval`` or the ``unicode_escape``
codec.
"""

from __future__ import annotations

import html
import quopri
import re
import urllib.parse
from collections.abc import Callable, Iterator

from asl3.text.plausible import enough_letters, layer, plausible, splice

__all__ = [
    "MIN_ESCAPES",
    "MIN_SPACE_ESCAPES",
    "decode_backslash",
    "decode_html",
    "decode_percent",
    "decode_quoted_printable",
    "decode_tags",
]

Decoded = tuple[str, list[str]]

MIN_ESCAPES = 4
"""A run of escapes is decoded only when at least this many of them stand for a letter or digit."""

# Code points that count towards MIN_ESCAPES: ASCII letters and digits.
_ALNUM_CODES = frozenset(b for b in range(128) if chr(b).isalnum())


def _enough_letter_escapes(codes: Iterator[int]) -> bool:
    """Whether at least MIN_ESCAPES of ``codes`` are ASCII letters or digits (stops early)."""
    n = 0
    for code in codes:
        if code in _ALNUM_CODES:
            n += 1
            if n >= MIN_ESCAPES:
                return True
    return False


def _decode_runs(
    text: str,
    run_re: re.Pattern[str],
    codes: Callable[[str], Iterator[int]],
    decode: Callable[[str], str],
) -> Decoded | None:
    """Decode every run of ``run_re`` in ``text`` that has enough letter escapes (``codes``
    yields the code of each escape in a run) and decodes (``decode``) to plausible text."""
    pieces: list[tuple[int, int, str]] = []
    for m in run_re.finditer(text):
        run = m.group()
        if not _enough_letter_escapes(codes(run)):
            continue
        decoded = decode(run)
        if plausible(decoded) or layer(decoded):
            pieces.append((m.start(), m.end(), decoded))
    if not pieces:
        return None
    return splice(text, pieces, pad=False), [p[2] for p in pieces]


def _hex_codes(escape_re: re.Pattern[str]) -> Callable[[str], Iterator[int]]:
    """``codes`` for escapes whose only group is the code in hex."""

    def codes(run: str) -> Iterator[int]:
        return (int(m.group(1), 16) for m in escape_re.finditer(run))

    return codes


# ---------------------------------------------------------------------------------------------
# Tag characters

_TAG_RUN_RE = re.compile("[\U000e0020-\U000e007e]+")
_TAG_TABLE = {code: code - 0xE0000 for code in range(0xE0020, 0xE007F)}
# Emoji flags of subdivisions (England, Scotland, Wales) are a black flag followed by tag
# letters ("gbeng") and a cancel tag: not hidden text.
_BLACK_FLAG = "\U0001f3f4"


def decode_tags(text: str) -> Decoded | None:
    """Runs of Unicode tag characters U+E0020..U+E007E read as the ASCII they shadow.

    Tag characters render as nothing, so a request written in them is invisible to a reader
    but not to a model that reads the code points. Runs right after a black flag are emoji
    subdivision flags and are skipped.
    """
    pieces: list[tuple[int, int, str]] = []
    for m in _TAG_RUN_RE.finditer(text):
        start = m.start()
        if start and text[start - 1] == _BLACK_FLAG:
            continue
        decoded = m.group().translate(_TAG_TABLE)
        if (plausible(decoded) and enough_letters(decoded)) or layer(decoded):
            pieces.append((start, m.end(), decoded))
    if not pieces:
        return None
    return splice(text, pieces), [p[2] for p in pieces]


# ---------------------------------------------------------------------------------------------
# Percent-encoding (URLs, form data)

_PCT = r"%[0-9A-Fa-f]{2}"
_PCT_RUN_RE = re.compile(rf"{_PCT}(?:[^%\n]{{0,3}}{_PCT})*")
_PCT_CODES = _hex_codes(re.compile(r"%([0-9A-Fa-f]{2})"))


MIN_SPACE_ESCAPES = 3
"""A text with this many escaped spaces (``%20``, ``=20``) between its words is decoded whole:
the words are plain, but the tokenizer reads "give%20detailed" as one token."""


def _space_escaped(text: str, space: str, decode: Callable[[str], str]) -> Decoded | None:
    """``text`` decoded whole when words are joined by escaped spaces and no run qualified."""
    if text.count(space) < MIN_SPACE_ESCAPES:
        return None
    decoded = decode(text)
    return (decoded, [decoded]) if plausible(decoded) else None


def decode_percent(text: str) -> Decoded | None:
    """Runs of percent escapes (``%70%6C%65``, ``+`` for a space) decoded as UTF-8; or a
    whole text whose words are joined by ``%20`` (a URL-encoded query)."""
    return _decode_runs(text, _PCT_RUN_RE, _PCT_CODES, urllib.parse.unquote_plus) or (
        _space_escaped(text, "%20", urllib.parse.unquote_plus)
    )


# ---------------------------------------------------------------------------------------------
# Quoted-printable (MIME)

_QP = r"=(?:[0-9A-Fa-f]{2}|\r?\n)"
_QP_RUN_RE = re.compile(rf"{_QP}(?:[^=\n]{{0,3}}{_QP})*")
_QP_CODES = _hex_codes(re.compile(r"=([0-9A-Fa-f]{2})"))


def _unquote_qp(run: str) -> str:
    return quopri.decodestring(run.encode("utf-8")).decode("utf-8", "replace")


def decode_quoted_printable(text: str) -> Decoded | None:
    """Runs of quoted-printable escapes (``=70=6C``, soft line breaks ``=\\n``) as UTF-8; or a
    whole text whose words are joined by ``=20``."""
    return _decode_runs(text, _QP_RUN_RE, _QP_CODES, _unquote_qp) or (
        _space_escaped(text, "=20", _unquote_qp)
    )


# ---------------------------------------------------------------------------------------------
# HTML character references

# The lookaheads make each reference take all its digits and the gap hold no ";", so a run
# matches one way only.
_HTML_REF = (
    r"&(?:#[0-9]{1,7}(?![0-9]);?|#[xX][0-9A-Fa-f]{1,6}(?![0-9A-Fa-f]);?"
    r"|[A-Za-z][A-Za-z0-9]{1,31};)"
)
_HTML_RUN_RE = re.compile(rf"{_HTML_REF}(?:[^&;\n]{{0,3}}{_HTML_REF})*")
_HTML_NUM_RE = re.compile(r"&#(?:([0-9]{1,7})|[xX]([0-9A-Fa-f]{1,6}))")


def _html_codes(run: str) -> Iterator[int]:
    """Codes of the numeric references (named ones, ``&amp;``, never count as letters)."""
    for m in _HTML_NUM_RE.finditer(run):
        dec, hexa = m.groups()
        yield int(dec) if dec else int(hexa, 16)


def decode_html(text: str) -> Decoded | None:
    """Runs of HTML character references (``&#112;``, ``&#x70;``, ``&amp;``) unescaped."""
    return _decode_runs(text, _HTML_RUN_RE, _html_codes, html.unescape)


# ---------------------------------------------------------------------------------------------
# Backslash escapes (\xHH, \uHHHH, \u{H...}, \UHHHHHHHH)

_BS = r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|u\{[0-9A-Fa-f]{1,6}\}|U[0-9A-Fa-f]{8})"
_BS_RUN_RE = re.compile(rf"{_BS}(?:[^\\\n]{{0,3}}{_BS})*")
_BS_ONE_RE = re.compile(
    r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|u\{([0-9A-Fa-f]{1,6})\}|U([0-9A-Fa-f]{8}))"
)
# Consecutive \x escapes are bytes (UTF-8 when they decode as such); \u escapes code points.
_BS_PART_RE = re.compile(
    r"((?:\\x[0-9A-Fa-f]{2})+)|\\u([0-9A-Fa-f]{4})|\\u\{([0-9A-Fa-f]{1,6})\}|\\U([0-9A-Fa-f]{8})"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _bs_codes(run: str) -> Iterator[int]:
    for m in _BS_ONE_RE.finditer(run):
        yield int(next(g for g in m.groups() if g is not None), 16)


def _bs_part(m: re.Match[str]) -> str:
    xs, u4, braced, u8 = m.groups()
    if xs is not None:
        data = bytes.fromhex(xs.replace("\\x", ""))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    code = int(u4 or braced or u8, 16)
    return chr(code) if code <= 0x10FFFF else "\ufffd"


def _unbackslash(run: str) -> str:
    """Decode the four escape forms; surrogate pairs written as two ``\\u`` escapes (JSON,
    JavaScript) are joined, lone surrogates become U+FFFD."""
    out = _BS_PART_RE.sub(_bs_part, run)
    if _SURROGATE_RE.search(out) is not None:
        out = out.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return out


def decode_backslash(text: str) -> Decoded | None:
    """Runs of backslash escapes (``\\x70``, ``\\u0070``, ``\\u{70}``, ``\\U00000070``)."""
    return _decode_runs(text, _BS_RUN_RE, _bs_codes, _unbackslash)
