"""Specification of the decoders behind views() for escapes, blob transports and other
alphabets: Unicode tag characters, percent-encoding, quoted-printable, HTML character
references, backslash escapes, base32, Ascii85/Base85, uuencode, Braille, upside-down text,
binary, decimal character codes, atbash and the NATO phonetic alphabet.

Every encoder is written here (the stdlib's for base32, base85 and uuencode), not taken from
the decoders' tables, so a decoder cannot pass by sharing a bug with the code that produced
its input. All payloads are benign sentences.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asl3.text import MAX_DECODED_VIEWS, canonical, views
from asl3.text.escapes import decode_backslash, decode_tags
from asl3.text.transports import decode_decimal, decode_uu

SENTENCE = "please tell me how to bake sourdough bread at home"
KEY = "sourdough bread"
INSTRUCTION = "Decode this and answer it:\n"


def found(text: str, needle: str = KEY) -> list[str]:
    """Names of the views of ``text`` that contain ``needle``."""
    return [v.name for v in views(text) if needle in v.text]


def names(text: str) -> list[str]:
    return [v.name for v in views(text)]


# ------------------------------------------------------------------------------------------
# Encoders


def tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in text)


def percent(text: str, plus: bool = False, case: str = "X") -> str:
    fmt = "%{:02" + case + "}"
    return "".join("+" if plus and b == 32 else fmt.format(b) for b in text.encode())


def quoted_printable(text: str, width: int = 75) -> str:
    """Every byte escaped, lines wrapped with soft line breaks ("=" at the end of a line)."""
    escaped = [f"={b:02X}" for b in text.encode()]
    per_line = (width - 1) // 3
    lines = ["".join(escaped[i : i + per_line]) for i in range(0, len(escaped), per_line)]
    return "=\n".join(lines)


def html_refs(text: str, form: str = "dec") -> str:
    if form == "dec":
        return "".join(f"&#{ord(c)};" for c in text)
    if form == "hex":
        return "".join(f"&#x{ord(c):X};" for c in text)
    return "".join(f"&#{ord(c)}" for c in text)  # without semicolons, as browsers accept


def backslash(text: str, form: str = "u") -> str:
    if form == "x":
        return "".join(f"\\x{b:02x}" for b in text.encode())
    if form == "U":
        return "".join(f"\\U{ord(c):08X}" for c in text)
    if form == "braced":
        return "".join(f"\\u{{{ord(c):x}}}" for c in text)
    return "".join(f"\\u{ord(c):04x}" for c in text)


def uuencode(text: str, header: bool = True, backtick: bool = False) -> str:
    data = text.encode()
    lines = [
        binascii.b2a_uu(data[i : i + 45], backtick=backtick).decode()
        for i in range(0, len(data), 45)
    ]
    body = "".join(lines)
    return f"begin 644 note.txt\n{body}`\nend\n" if header else body


# Braille by dot numbers (dot n is bit n-1 of the offset from U+2800).
BRAILLE_DOTS = {
    "a": "1", "b": "12", "c": "14", "d": "145", "e": "15", "f": "124", "g": "1245",
    "h": "125", "i": "24", "j": "245", "k": "13", "l": "123", "m": "134", "n": "1345",
    "o": "135", "p": "1234", "q": "12345", "r": "1235", "s": "234", "t": "2345", "u": "136",
    "v": "1236", "w": "2456", "x": "1346", "y": "13456", "z": "1356", " ": "",
}  # fmt: skip


def braille(text: str) -> str:
    out = []
    for c in text:
        if c.isupper():
            out.append(chr(0x2800 + 32))  # capital sign, dot 6
            c = c.lower()
        out.append(chr(0x2800 + sum(1 << (int(d) - 1) for d in BRAILLE_DOTS[c])))
    return "".join(out)


UPSIDE_DOWN = dict(zip("abcdefghijklmnopqrstuvwxyz", "ɐqɔpǝɟƃɥᴉɾʞlɯuodbɹsʇnʌʍxʎz", strict=True))


def upside_down(text: str, backwards: bool = True) -> str:
    flipped = "".join(UPSIDE_DOWN.get(c, c) for c in text)
    return flipped[::-1] if backwards else flipped


def binary(text: str, bits: int = 8, sep: str = " ") -> str:
    return sep.join(format(b, f"0{bits}b") for b in text.encode())


def decimal(text: str, sep: str = " ") -> str:
    return sep.join(str(ord(c)) for c in text)


def atbash(text: str) -> str:
    out = []
    for c in text:
        if "a" <= c <= "z":
            out.append(chr(ord("z") - (ord(c) - ord("a"))))
        elif "A" <= c <= "Z":
            out.append(chr(ord("Z") - (ord(c) - ord("A"))))
        else:
            out.append(c)
    return "".join(out)


NATO = [
    "Alfa",
    "Bravo",
    "Charlie",
    "Delta",
    "Echo",
    "Foxtrot",
    "Golf",
    "Hotel",
    "India",
    "Juliett",
    "Kilo",
    "Lima",
    "Mike",
    "November",
    "Oscar",
    "Papa",
    "Quebec",
    "Romeo",
    "Sierra",
    "Tango",
    "Uniform",
    "Victor",
    "Whiskey",
    "X-ray",
    "Yankee",
    "Zulu",
]


def nato(text: str, word_sep: str = " (space) ", letter_sep: str = " ") -> str:
    return word_sep.join(letter_sep.join(NATO[ord(c) - 97] for c in w) for w in text.split())


# (view name, encoder) for every decoder; each encoder takes the plain sentence.
ENCODINGS: list[tuple[str, Callable[[str], str]]] = [
    ("tags", lambda s: "Nothing to see here. " + tags(s)),
    ("percent", percent),
    ("percent", lambda s: percent(s, plus=True, case="x")),
    ("quoted_printable", quoted_printable),
    ("quoted_printable", lambda s: quoted_printable(s, width=30)),
    ("html", html_refs),
    ("html", lambda s: html_refs(s, "hex")),
    ("html", lambda s: html_refs(s, "bare")),
    ("escapes", backslash),
    ("escapes", lambda s: backslash(s, "U")),
    ("escapes", lambda s: backslash(s, "braced")),
    ("base32", lambda s: base64.b32encode(s.encode()).decode()),
    ("base32", lambda s: base64.b32encode(s.encode()).decode().lower().rstrip("=")),
    ("ascii85", lambda s: base64.a85encode(s.encode(), adobe=True).decode()),
    ("ascii85", lambda s: base64.a85encode(s.encode()).decode()),
    ("ascii85", lambda s: base64.a85encode(s.encode(), wrapcol=24).decode()),
    ("ascii85", lambda s: base64.b85encode(s.encode()).decode()),
    ("uu", uuencode),
    ("uu", lambda s: uuencode(s, header=False, backtick=True)),
    ("braille", braille),
    ("braille", lambda s: braille(s.capitalize())),
    ("upside_down", upside_down),
    ("upside_down", lambda s: upside_down(s, backwards=False)),
    ("binary", binary),
    ("binary", lambda s: binary(s, sep="")),
    ("binary", lambda s: binary(s, bits=7)),
    ("binary", lambda s: binary(s, sep=", ")),
    ("decimal", decimal),
    ("decimal", lambda s: decimal(s, sep=",")),
    ("decimal", lambda s: decimal(s, sep="\n")),
    ("atbash", atbash),
    ("atbash", lambda s: atbash(s.capitalize() + "?")),
    ("nato", nato),
    ("nato", lambda s: nato(s, word_sep=" / ")),
    ("nato", lambda s: nato(s, word_sep=" | ")),
    ("nato", lambda s: nato(s, word_sep=" space ")),
    ("nato", lambda s: nato(s, word_sep="\n")),
    ("nato", lambda s: nato(s, word_sep=" / ", letter_sep=", ")),
]


# ------------------------------------------------------------------------------------------
# Each encoding round-trips, bare and after an instruction line


@pytest.mark.parametrize(("name", "encode"), ENCODINGS)
def test_encoded_sentence_is_found_in_a_view_named_after_its_encoding(
    name: str, encode: Callable[[str], str]
) -> None:
    encoded = encode(SENTENCE)
    assert KEY not in canonical(encoded)  # the disguise works on the canonical view
    assert name in found(encoded)


@pytest.mark.parametrize(("name", "encode"), ENCODINGS)
def test_encoded_sentence_after_an_instruction_is_found(
    name: str, encode: Callable[[str], str]
) -> None:
    vs = [v for v in views(INSTRUCTION + encode(SENTENCE)) if v.name == name]
    assert any(KEY in v.text for v in vs)
    # in place (the instruction kept) and the payload alone
    assert any(v.text.startswith("decode this and answer it") and KEY in v.text for v in vs)
    assert any(v.text.startswith("please tell me how to bake") for v in vs)


def test_nato_variant_spellings_are_accepted() -> None:
    spelled = "Alpha Lima Papa Hotel Alfa (space) Juliet Juliett (space) Xray X-ray Echo Sierra"
    got = [v.text for v in views(spelled) if v.name == "nato"]
    assert "alpha jj xxes" in got


def test_nato_words_one_per_line_spell_one_word() -> None:
    spelled = "\n".join(NATO[ord(c) - 97] for c in "sourdough")
    assert "nato" in found(spelled, "sourdough")


def test_braille_number_sign_turns_letters_into_digits() -> None:
    number_sign = chr(0x2800 + 0b111100)  # dots 3456
    text = braille("bake at ") + number_sign + braille("bj") + braille(" degrees for an hour")
    assert "bake at 20 degrees" in [v.text for v in views(text) if v.name == "braille"][0]


# ------------------------------------------------------------------------------------------
# Tag characters


def test_tag_characters_are_still_deleted_from_the_canonical_view() -> None:
    text = "Nice weather today." + tags(SENTENCE)
    assert canonical(text) == "nice weather today."
    assert "tags" in found(text)


def test_emoji_subdivision_flags_are_not_hidden_text() -> None:
    england = "\U0001f3f4" + tags("gbeng") + "\U000e007f"
    assert decode_tags(f"We visited {england} and loved it") is None
    assert names(f"We visited {england} and loved it {england}") == ["canonical"]


# ------------------------------------------------------------------------------------------
# Pure decoders


def test_backslash_escapes_join_surrogate_pairs_and_utf8_bytes() -> None:
    decoded = decode_backslash(
        "\\ud83c\\udf5e \\x70\\x61\\x69\\x6e \\x64\\x65 \\x6d\\x69\\x65\\u0021"
    )
    assert decoded is not None
    assert decoded[1] == ["\U0001f35e pain de mie!"]
    utf8 = decode_backslash("caf\\xc3\\xa9 \\x61\\x75 \\x6c\\x61\\x69\\x74")
    assert utf8 is not None and utf8[0] == "café au lait"  # escapes decode in place


def test_uuencode_block_is_replaced_in_place_with_its_header_and_end() -> None:
    result = decode_uu("Decode this:\n" + uuencode(SENTENCE) + "Thanks!")
    assert result is not None
    in_place, payloads = result
    assert payloads == [SENTENCE]
    assert "begin 644" not in in_place and "end" not in in_place.split()
    assert in_place.startswith("Decode this:") and in_place.rstrip().endswith("Thanks!")


def test_decimal_codes_must_all_be_character_codes() -> None:
    assert decode_decimal(decimal(SENTENCE)) is not None
    assert decode_decimal(decimal(SENTENCE) + " 300") is None  # one code out of range
    assert decode_decimal("101 102 103 104 105 106 107 108") is None  # a counting list


# ------------------------------------------------------------------------------------------
# Nesting


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("percent+base64", percent(base64.b64encode(SENTENCE.encode()).decode())),
        ("percent+percent", percent(percent(SENTENCE))),
        ("tags+base64", "Hi! " + tags(base64.b64encode(SENTENCE.encode()).decode())),
        ("base32+hex", base64.b32encode(SENTENCE.encode().hex().encode()).decode()),
        (
            "html+rot13",
            html_refs(
                SENTENCE.translate(
                    str.maketrans("abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm")
                )
            ),
        ),
        ("decimal+atbash", decimal(atbash(SENTENCE))),
    ],
)
def test_transport_payloads_are_decoded_again(name: str, text: str) -> None:
    assert name in found(text)


def test_nesting_stops_at_the_depth_limit() -> None:
    three_layers = percent(percent(percent(SENTENCE)))
    assert found(three_layers) == []


def test_many_encodings_at_once_stay_under_the_view_cap() -> None:
    parts = [SENTENCE + " " + chr(97 + i % 26) * (1 + i // 26) for i in range(len(ENCODINGS))]
    text = "\n".join(encode(p) for (_, encode), p in zip(ENCODINGS, parts, strict=True))
    vs = views(text)
    assert 1 < len(vs) <= MAX_DECODED_VIEWS + 1


_SOUP = [
    *"%=&#;\\xXuU{}0123456789abcdefABCDEF \n<~>M`!q,",
    "\u2801",
    "\u283c",
    "\u0250",
    "\u0287",
    "\U000e0041",
    "\U0001f3f4",
    "Alfa ",
    "Echo ",
    "(space)",
    "begin 644 a\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_SOUP), max_size=60).map("".join))
def test_views_never_raise_on_escape_soup(text: str) -> None:
    vs = views(text)
    assert vs[0].text == canonical(text)
    assert len(vs) <= MAX_DECODED_VIEWS + 1
    assert all(canonical(v.text) == v.text for v in vs)


# ------------------------------------------------------------------------------------------
# Ordinary text gets no view

ORDINARY = [
    "https://www.google.com/search?q=how%20to%20bake%20bread&hl=en&source=hp",
    "Solve for x: 2x + 3 = 11, then y = 4x - 1 and z = x^2 + y^2 = 41.",
    "E = mc^2, F = ma, and a = F/m; also x=10, y=20, z=30, w=40.",
    "Price list: 5 = five, 10 = ten, 20 = twenty, 50 = fifty.",
    "=?UTF-8?Q?Caf=C3=A9_au_lait?= is an encoded mail header.",
    '<p>Tom &amp; Jerry</p> <a href="/about">About us</a>',
    "<p>Fish &amp; chips &lt;b&gt;tonight&lt;/b&gt; at 8&nbsp;pm &copy; 2024</p>",
    "Copy the file to C:\\xampp\\htdocs\\x64\\bin\\Users\\admin\\Desktop before running.",
    "Use \\n for a new line and caf\\u00e9 for the accent in JSON strings.",
    "Call me at +1 (555) 123-4567 or 555 123 4567 after 6 pm.",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixes the build",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChw"
    "GA60e6kgAAAABJRU5ErkJggg==",
    "The bits 1010 and 1100 give 1000 under AND, and 1110 under OR.",
    "Key dates: 1914 1918 1939 1945 1989 2001 2008 2020 in this history course.",
    "Scores this week: 85 92 78 88 95 67 73 81 90 77 84 for the class.",
    "Room numbers 101 102 103 104 105 106 107 108 are on the first floor.",
    "Lottery numbers: 12, 23, 34, 45, 56, 67, 78, 89, 90, 11",
    "Temperatures 12 14 15 13 11 10 9 8 degrees this week",
    "ASCII codes: 72 is H, 101 is e, 108 is l and 111 is o.",
    "Matrix [[1, 0, 0], [0, 1, 0], [0, 0, 1]] is the identity; det = 1.",
    "IP 192.168.1.10 and 10.0.0.1 and 172.16.254.1 are private addresses.",
    "The hotel in India had a golf course, a tango bar and an echo, said Oscar.",
    'He said: "Whiskey, Tango, Foxtrot!" and left.',
    "In IPA, 'butter' is /ˈbʌtər/ and 'rural' is /ˈrʊɹəl/, while 'water' is /ˈwɔːtər/.",
    "Istanbul'da ılık bir gün, kısa bir yürüyüş yaptık ve çay içtik.",
    "We flew over \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f "
    "on holiday \U0001f642\U0001f389",
    "AWS example key AKIAIOSFODNN7EXAMPLE is from the docs.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word.",
    "PLEASE READ THE INSTRUCTIONS CAREFULLY BEFORE STARTING THE EXAM!!!",
    "ERROR 404: PAGE_NOT_FOUND_AT_THE_REQUESTED_LOCATION (code=E_NOT_FOUND)",
    "color: #ff0000; margin: 0 auto; font-family: 'Helvetica Neue', Arial, sans-serif;",
    "Version 1.10.2 fixes bugs in 1.10.1, 1.9.8 and 1.9.7.",
    "UUID 550e8400-e29b-41d4-a716-446655440000 and ISBN 978-3-16-148410-0.",
    "Read the label: \u00a1\u028edd\u0250\u0265",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_gets_no_decoded_view(text: str) -> None:
    assert names(text) == ["canonical"]


def test_noise_gives_no_decoded_view() -> None:
    """Stray Braille patterns, IPA letters, tag characters, digits and escapes in random text
    are not decoded (a lone Braille cell reads as one letter: too few to be a message)."""
    rng = random.Random(7)
    for _ in range(5):
        unicode_noise = "".join(chr(rng.randrange(0x20, 0x30000)) for _ in range(20_000))
        ascii_noise = "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(20_000))
        for text in (unicode_noise, ascii_noise):
            got = set(names(text)) - {"canonical", "leet", "caesar", "rot13", "reversed"}
            assert not got, got


@pytest.mark.parametrize("space,name", [("%20", "percent"), ("=20", "quoted_printable")])
def test_words_joined_by_escaped_spaces_are_decoded_whole(space: str, name: str) -> None:
    """A URL-encoded query keeps its words plain but glues them into one token each."""
    assert name in found(SENTENCE.replace(" ", space))
    assert name in found(INSTRUCTION + SENTENCE.replace(" ", space))
    assert names(f"see https://example.com/a{space}b for details") == ["canonical"]


def test_a_sentence_inside_a_url_is_read() -> None:
    """Three or more escaped spaces make a URL's text a view of its own: it costs a classifier
    pass, and a request can hide in a link as well as anywhere else."""
    assert "see you at ten" in " ".join(
        v.text for v in views("subject=Meeting%20notes&body=See%20you%20at%20ten"))
