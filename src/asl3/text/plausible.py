"""Shared checks for decoders: is a decoding writing or noise, and splicing it back in place.

Every decoder in :mod:`asl3.text.normalize`, :mod:`asl3.text.escapes`,
:mod:`asl3.text.transports` and :mod:`asl3.text.alphabets` keeps a decoding only when it
passes these checks, so that binary noise which happens to decode (a hash read as base32, a
list of scores read as ASCII codes) does not cost a classifier pass. They live in their own
module so the decoder modules need not import ``normalize`` (which imports them).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "MIN_RUN_LETTERS",
    "byte_classes",
    "class_table",
    "decode_bytes",
    "enough_letters",
    "layer",
    "plausible",
    "splice",
    "whole_blob",
]


def plausible(text: str, min_letters: int = 6) -> bool:
    """Whether decoded text looks like writing (not binary noise that happened to decode).

    Checks a bounded sample: nearly all characters printable, enough letters, and letters
    making up at least half of the non-space characters. A text shorter than
    ``min_letters`` passes when it is all letters, so decoders of single characters (tags,
    Braille) also require a few letters (:func:`enough_letters`).
    """
    sample = text[:4096]
    n = len(sample)
    if n == 0:
        return False
    spaces = sum(map(sample.count, (" ", "\n", "\t", "\r")))
    printable = sum(map(str.isprintable, sample)) + spaces - sample.count(" ")
    if printable < 0.95 * n:
        return False
    letters = sum(map(str.isalpha, sample))
    return letters >= min(min_letters, n) and letters >= 0.5 * (n - spaces)


MIN_RUN_LETTERS = 4
"""Letters a run of per-character code (tag characters, Braille, upside-down) must decode
to: text of many scripts holds a stray Braille pattern or IPA letter, never four in a row."""


def enough_letters(text: str) -> bool:
    """Whether ``text`` has at least :data:`MIN_RUN_LETTERS` letters (counting stops early)."""
    n = 0
    for ch in text:
        if ch.isalpha():
            n += 1
            if n >= MIN_RUN_LETTERS:
                return True
    return False


def layer(text: str) -> bool:
    """Whether decoded text may be another layer of encoding (hex, percent escapes, base64
    with few letters): at least 16 printable ASCII characters, line breaks allowed.

    A transport's payload need not read as writing when it is itself encoded
    (``%2570%256C...`` decodes to ``%70%6C...``); kept for such decoders, it is searched
    again. Bytes from a blob that is not an encoding are rarely all printable ASCII (16
    random bytes: about one chance in 10^7).
    """
    return len(text) >= 16 and text.isascii() and "".join(text.split("\n")).isprintable()


def decode_bytes(data: bytes, layered: bool = False) -> str | None:
    """UTF-8 text from decoded bytes, or None when the bytes are not (plausible) text; with
    ``layered``, text that may be another encoding (:func:`layer`) is kept too."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if plausible(text) or (layered and layer(text)) else None


def splice(text: str, pieces: list[tuple[int, int, str]], pad: bool = True) -> str:
    """``text`` with each ``(start, end, decoded)`` span replaced by ``decoded``; with
    ``pad``, spaces go around it, so a decoded blob glued to a word stays a word of its own
    (escapes stand for characters in place and are not padded). Spans are in order and do
    not overlap."""
    out: list[str] = []
    pos = 0
    for start, end, decoded in pieces:
        out.append(text[pos:start])
        out.append(f" {decoded} " if pad else decoded)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def class_table(classify: Callable[[str], str]) -> bytes:
    """A ``bytes.translate`` table sending each ASCII character to ``classify(char)`` (one
    ASCII character) and every other byte to "?"."""
    return bytes(ord(classify(chr(i))) if i < 128 else ord("?") for i in range(256))


def byte_classes(text: str, table: bytes) -> bytes:
    """``text`` as one byte per character (non-ASCII characters as "?"), translated by
    ``table`` (:func:`class_table`); positions are the text's.

    Why: patterns that start with a character class ("[0-9]") are tried at every position,
    while a pattern that starts with a literal is scanned for at C speed; mapping a class to
    one byte (every digit to "0") lets a pattern start with that literal. Encoding and
    ``bytes.translate`` cost about a nanosecond a character.
    """
    return text.encode("ascii", "replace").translate(table)


def whole_blob(
    raw: str, full_re: re.Pattern[str], decode: Callable[[str], str | None], min_len: int
) -> tuple[str, list[str]] | None:
    """The whole message read as one blob (base64, base32): with its whitespace (groups,
    line wrapping) removed, all of it matches ``full_re`` and ``decode`` (run -> text | None)
    decodes it. For messages whose tokens are each too short to be tried alone."""
    compact = "".join(raw.split())
    if len(compact) >= min_len and full_re.fullmatch(compact):
        text = decode(compact)
        if text is not None:
            return text, [text]
    return None
