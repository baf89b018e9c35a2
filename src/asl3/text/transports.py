"""Decoders for binary-to-text transports besides base64 and hex: base32, Ascii85/Base85,
uuencode, and bytes written as binary digits or as decimal character codes.

Why: each turns a request into a blob the n-gram classifier cannot read, and each is one
click away in online converters. Every decoder is a pure function
``raw -> (raw with the decoded spans replaced in place, [decoded spans]) | None`` on the
prepared raw text (case kept: base32 and base85 are case-sensitive).

None of these has a checksum, and their alphabets overlap with ordinary tokens (a long word
is valid lowercase base32, a URL-safe token is mostly valid base85, a list of scores is
valid decimal codes), so a decoding is kept only when it reads as text
(:func:`asl3.text.plausible.decode_bytes`) or as another layer of encoding, which is then
searched again; decimal codes, which decode to a printable character each, must look like
words (:func:`_texty`). Candidates are whole tokens (or runs of lines) found
by patterns that match in linear time; the stdlib decodes (``base64``, ``binascii``), and the
pure-Python base85 decoders are tried on a short prefix before a whole run.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from asl3.text.plausible import (
    byte_classes,
    class_table,
    decode_bytes,
    layer,
    plausible,
    splice,
    whole_blob,
)

__all__ = [
    "UU_TOKEN_RE",
    "blob_kinds",
    "decode_ascii85",
    "decode_base32",
    "decode_binary",
    "decode_decimal",
    "decode_uu",
    "token_spans",
]

Decoded = tuple[str, list[str]]


Span = tuple[int, int]


def token_spans(raw: str, min_len: int = 16) -> list[Span]:
    """Spans of the whitespace-separated tokens of ``raw`` at least ``min_len`` long, in
    order. (``str.split`` and ``str.find`` run in C; a regular expression for long tokens
    would try a match at every character of every word.)"""
    spans: list[Span] = []
    pos = 0
    for tok in raw.split():
        if len(tok) >= min_len:
            start = raw.find(tok, pos)  # shorter tokens before it cannot contain it
            pos = start + len(tok)
            spans.append((start, pos))
    return spans


# The line after a wrapped blob: its last, shorter line (too short to be a long token).
_NEXT_LINE_RE = re.compile(r"[ \t]*\r?\n[ \t]*(\S+)")


def _merge_wrapped(
    raw: str, spans: list[Span], blob_re: re.Pattern[str] | None = None
) -> list[list[Span]]:
    """Join spans wrapped over lines: a span is merged into the previous one when only
    whitespace holding a line break separates them and the previous line is at least as
    long (wrapped lines have one width, the last is shorter).

    Each blob comes as a list of spans to try in order: with ``blob_re``, first the blob
    with the shorter line after it (when that line is all ``blob_re``), then without (the
    line may be the text going on, "Thanks!", which would spoil the decoding)."""
    merged: list[Span] = []
    widths: list[int] = []
    for start, end in spans:
        if merged:
            pstart, pend = merged[-1]
            gap = raw[pend:start]
            if "\n" in gap and not gap.strip() and widths[-1] >= end - start:
                merged[-1] = (pstart, end)
                continue
        merged.append((start, end))
        widths.append(end - start)
    blobs: list[list[Span]] = []
    for (start, end), width in zip(merged, widths, strict=True):
        tries = [(start, end)]
        m = _NEXT_LINE_RE.match(raw, end) if blob_re is not None else None
        if m is not None and len(m.group(1)) < width and blob_re.fullmatch(m.group(1)):
            tries.insert(0, (start, m.end(1)))
        blobs.append(tries)
    return blobs


def _decode_spans(
    raw: str,
    spans: list[Span] | list[list[Span]],
    decode: Callable[[str], str | None],
    compact: bool = True,
) -> Decoded | None:
    """Replace each span (or the first of each list of spans) that ``decode`` (run -> text
    | None) decodes; with ``compact`` the run's whitespace (line wrapping) is removed
    first."""
    pieces: list[tuple[int, int, str]] = []
    for item in spans:
        for start, end in item if isinstance(item, list) else [item]:
            run = raw[start:end]
            text = decode("".join(run.split()) if compact else run)
            if text is not None:
                pieces.append((start, end, text))
                break
    if not pieces:
        return None
    return splice(raw, pieces), [p[2] for p in pieces]


# Quotes and brackets around a token are not part of an encoded blob.
_EDGES = "\"'`()[]{}<>.,;:!?"


def _blob_spans(raw: str, spans: list[Span], blob_re: re.Pattern[str]) -> list[list[Span]]:
    """The tokens (``spans``) that are blobs of ``blob_re`` once the quotes, brackets and
    punctuation around them are dropped, narrowed to the blob and joined over lines."""
    found: list[Span] = []
    for start, end in spans:
        tok = raw[start:end]
        core = tok.lstrip(_EDGES)
        start += len(tok) - len(core)
        core = core.rstrip(_EDGES)
        if len(core) >= 16 and blob_re.fullmatch(core):
            found.append((start, start + len(core)))
    return _merge_wrapped(raw, found, blob_re)


# ---------------------------------------------------------------------------------------------
# Base32 (RFC 4648 alphabet A-Z 2-7, one case, optional '=' padding)

_B32_FULL_RE = re.compile(r"[A-Z2-7]+=*|[a-z2-7]+=*")


def _b32_run(run: str) -> str | None:
    """Decode one base32 run to plausible text (a length that no encoder makes loses its
    last character, as a truncated copy would)."""
    body = run.rstrip("=").upper()
    if len(body) % 8 in (1, 3, 6):
        body = body[:-1]
    try:
        data = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return None
    return decode_bytes(data, layered=True)


def decode_base32(raw: str, spans: list[Span] | None = None, whole: bool = True) -> Decoded | None:
    """Base32 tokens of 16+ characters (lines of one blob joined), decoded in place; or the
    whole message, when all of it is base32 split into groups.

    ``spans`` are the long tokens of ``raw`` (:func:`token_spans`) when the caller has them;
    ``whole=False`` says the caller knows the message is not all base32 characters.
    """
    if spans is None:
        spans = token_spans(raw)
    found = _decode_spans(raw, _blob_spans(raw, spans, _B32_FULL_RE), _b32_run)
    if found is not None or not whole:
        return found
    return whole_blob(raw, _B32_FULL_RE, _b32_run, 16)


# ---------------------------------------------------------------------------------------------
# Ascii85 (btoa, Adobe "<~ ~>") and Base85 (RFC 1924, git, Python's b85encode)

_A85_DELIMITED_RE = re.compile(r"<~[!-uz\s]*~>")
_A85_FULL_RE = re.compile(r"[!-uz]+")
_B85_FULL_RE = re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]+")
_ANY85_RE = re.compile(r"[!-~]+")
_PROBE = 200  # characters (40 groups) decoded first: the decoders are pure Python


def _b85_try(body: str) -> str | None:
    """``body`` decoded as Ascii85 or as Base85, whichever gives plausible text."""
    decoders = []
    if _A85_FULL_RE.fullmatch(body):
        decoders.append(base64.a85decode)
    if _B85_FULL_RE.fullmatch(body):
        decoders.append(base64.b85decode)
    for decode in decoders:
        try:
            if len(body) > _PROBE:
                probe = decode(body[:_PROBE]).decode("utf-8", "ignore")
                if not (plausible(probe) or layer(probe)):
                    continue
            text = decode_bytes(decode(body), layered=True)
        except (ValueError, binascii.Error):
            continue
        if text is not None:
            return text
    return None


def blob_kinds(raw: str, spans: list[Span]) -> set[str]:
    """Which blob decoders may find something in ``raw``, judged by its long tokens
    (``spans``): "base32" (a token of the base32 alphabet, quotes and brackets aside),
    "ascii85" (20+ characters of the Ascii85 or the Base85 alphabet, or ``<~``) and "uu"
    (no small letter). A URL or a long word is none of these, so ordinary text with long
    tokens calls no decoder."""
    kinds: set[str] = set()
    for start, end in spans:
        tok = raw[start:end]
        core = tok.strip(_EDGES)
        if len(core) >= 16 and _B32_FULL_RE.fullmatch(core):
            kinds.add("base32")
        if len(tok) >= 20 and (_A85_FULL_RE.fullmatch(tok) or _B85_FULL_RE.fullmatch(tok)):
            kinds.add("ascii85")
        if UU_TOKEN_RE.fullmatch(tok):
            kinds.add("uu")
    if "~" in raw and "<~" in raw:
        kinds.add("ascii85")
    return kinds


def _a85_run(run: str) -> str | None:
    if run.startswith("<~"):
        return _b85_try(run[2:-2])
    return _b85_try(run)


def decode_ascii85(raw: str, spans: list[Span] | None = None) -> Decoded | None:
    """Ascii85 between ``<~`` and ``~>``, and tokens of 20+ characters of the Ascii85 or the
    Base85 alphabet (lines of one blob joined), decoded in place.

    ``spans`` are the long tokens of ``raw`` (:func:`token_spans`) when the caller has them.
    """
    if "~" in raw and "<~" in raw:
        delimited = [m.span() for m in _A85_DELIMITED_RE.finditer(raw)]
        if delimited:
            return _decode_spans(raw, delimited, _a85_run)
    if spans is None:
        spans = token_spans(raw)
    blobs = [(s, e) for s, e in spans if e - s >= 20 and _ANY85_RE.fullmatch(raw, s, e)]
    return _decode_spans(raw, _merge_wrapped(raw, blobs, _ANY85_RE), _a85_run)


# ---------------------------------------------------------------------------------------------
# uuencode

_UU_LINE_RE = re.compile(r"[!-`][ -`]*")
UU_TOKEN_RE = re.compile(r"[!-`]+")
"""A token that may belong to a uuencoded line (no small letters): the caller's gate."""
_UU_BEGIN_RE = re.compile(r"begin(?:-base64)? [0-7]{3,4} \S")


def _uu_line(line: str) -> bytes | None:
    """The bytes of one uuencoded line, or None when it is not one (the length character
    must match the line's length, give or take padding stripped or added in transit)."""
    if not _UU_LINE_RE.fullmatch(line):
        return None
    n = (ord(line[0]) - 32) & 63
    need = (n + 2) // 3 * 4
    if n == 0 or not need - 3 <= len(line) - 1 <= need + 3:
        return None
    try:
        return binascii.a2b_uu(line[: need + 1])
    except binascii.Error:
        return None


def decode_uu(raw: str) -> Decoded | None:
    """Blocks of uuencoded lines (with or without ``begin 644 name`` and ``end``), decoded.

    Each line is decoded on its own (``binascii.a2b_uu``); consecutive lines form a block,
    and a block of at least 8 bytes that decodes to plausible text replaces its lines."""
    pieces: list[tuple[int, int, str]] = []
    block: list[bytes] = []
    start = end = pos = 0
    begin_at: int | None = None

    def flush() -> None:
        nonlocal block
        data = b"".join(block)
        block = []
        if len(data) >= 8 and (text := decode_bytes(data, layered=True)) is not None:
            pieces.append((start, end, text))

    for line in raw.split("\n"):
        line_end = pos + len(line)
        stripped = line.rstrip("\r ")
        data = _uu_line(stripped) if len(stripped) > 1 else None
        if data is not None:
            if not block:
                start = begin_at if begin_at is not None else pos
            block.append(data)
            end = line_end
        else:
            if block and stripped in ("`", "end", ""):
                end = line_end  # terminator lines belong to the block
                if stripped == "`":
                    pos = line_end + 1
                    continue
            if block:
                flush()
            begin_at = pos if _UU_BEGIN_RE.match(stripped) else None
        pos = line_end + 1
    if block:
        flush()
    if not pieces:
        return None
    return splice(raw, pieces), [p[2] for p in pieces]


# ---------------------------------------------------------------------------------------------
# Bytes as numbers: binary digits and decimal character codes


def _texty(text: str) -> bool:
    """Whether characters decoded one number each read as words: plausible, letters and
    spaces at least 80% of them, and either a space or mostly small letters (a list of
    scores decodes to capitals and punctuation, "U\\NX_CIQZ")."""
    if not plausible(text):
        return False
    letters = sum(map(str.isalpha, text))
    spaces = text.count(" ")
    if letters + spaces < 0.8 * len(text):
        return False
    return spaces > 0 or sum(map(str.islower, text)) >= 0.5 * letters


# The run patterns work on a copy of the text whose digits are written as one character
# (all digits as "0"; for binary, 0 and 1 as "0" and the other digits as "2"): a pattern
# that starts with a literal is scanned for at C speed, one that starts with a character
# class ("[0-9]") is tried at every position. The copy has the text's length, so its spans
# are the text's.
_DIGITS_AS_ZERO = class_table(lambda c: "0" if c.isdigit() else c)
_BITS_AS_ZERO = class_table(lambda c: "0" if c in "01" else "2" if c.isdigit() else c)
# Groups of 7 or 8 bits separated by spaces, commas or line breaks (6+ groups), or 6+ bytes
# of 8 bits written without separators; the lookbehind rejects a digit inside a number.
_BIN_RUN_RE = re.compile(
    rb"0(?<![02]0)(?:0{6,7}(?:(?:[ \t]{1,3}|[ \t]{0,2}[,;][ \t]{0,2}|\r?\n)0{7,8}){5,}"
    rb"|0{7}(?:0{8}){5,})(?![02])"
)
_BIN_GROUP_RE = re.compile(r"[01]{7,8}")


def _binary_run(run: str) -> str | None:
    if run.isdigit():
        groups = [run[i : i + 8] for i in range(0, len(run), 8)]
    else:
        groups = _BIN_GROUP_RE.findall(run)
    try:
        text = bytes(int(g, 2) for g in groups).decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return None
    return text if _texty(text) or layer(text) else None


def decode_binary(raw: str) -> Decoded | None:
    """Runs of 6+ bytes written in binary ("01001000 01101001 ...", or without spaces)."""
    spans = [m.span() for m in _BIN_RUN_RE.finditer(byte_classes(raw, _BITS_AS_ZERO))]
    return _decode_spans(raw, spans, _binary_run, compact=False)


# 8+ numbers of one to three digits separated by spaces, commas, semicolons or line breaks;
# a number glued to a decimal point or another digit is not a character code.
_DEC_RUN_RE = re.compile(
    rb"0(?<![0.,]0)0{0,2}(?:(?:[ \t]{0,2}[,;][ \t\r\n]{0,3}|[ \t\r\n]{1,3})0{1,3}){7,}"
    rb"(?!0|\.0)"
)
_NUMBER_RE = re.compile(r"[0-9]+")
_MIN_CODE, _MAX_CODE = 9, 126  # tab .. tilde


def _decimal_run(run: str) -> str | None:
    """The characters of one run of codes, if all are in range and read as words. A run
    that counts (room numbers "101 102 ... 108" read "efghijkl") is a list, not a text."""
    digits = _NUMBER_RE.findall(run)
    if not all(_MIN_CODE <= int(c) <= _MAX_CODE for c in digits):  # stops at the first miss
        return None
    codes = [int(c) for c in digits]
    if len({b - a for a, b in zip(codes, codes[1:], strict=False)}) == 1:
        return None
    text = "".join(map(chr, codes))
    return text if _texty(text) else None


def decode_decimal(raw: str) -> Decoded | None:
    """Runs of 8+ decimal character codes, all from 9 to 126 ("72 105 32 ..." or
    "72,105,32,..."), read as ASCII."""
    spans = [m.span() for m in _DEC_RUN_RE.finditer(byte_classes(raw, _DIGITS_AS_ZERO))]
    return _decode_spans(raw, spans, _decimal_run, compact=False)
