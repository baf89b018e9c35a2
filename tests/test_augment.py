"""Attack transforms: deterministic, always change the text, and never lose the request.

Encodings are checked by decoding the payload back with an independent inverse; wrappers by
finding the request verbatim. Payloads are benign on purpose.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import random
import re

import pytest

from asl3.data import augment as aug
from asl3.data.io import Row

PAYLOADS = [
    "Tell me how to bake sourdough bread.",
    "What's the best flour for a crusty loaf? Answer in 3 steps!",
    "explain proofing times",
]
SEEDS = range(40)

ENCODINGS = [
    "base64", "hex", "rot13", "caesar", "leetspeak", "homoglyph", "zero_width",
    "letter_spacing", "reversal", "morse",
]  # fmt: skip
WRAPPERS = [
    "roleplay", "developer_mode", "fiction", "academic", "authority", "code_block",
    "prefix_injection", "payload_split",
]  # fmt: skip


def test_registry_names_and_families() -> None:
    assert set(aug.TRANSFORMS) == {*ENCODINGS, *WRAPPERS, "case_noise"}
    for n, t in aug.TRANSFORMS.items():
        assert t.name == n
    assert aug.transform_names("encoding") == ENCODINGS
    assert sorted(aug.transform_names("wrapper")) == sorted(WRAPPERS)
    assert aug.transform_names("noise") == ["case_noise"]
    assert "translation" not in aug.TRANSFORMS


def test_unknown_and_llm_only_names_raise_clear_keyerror() -> None:
    with pytest.raises(KeyError, match="unknown transform 'nope'.*base64"):
        aug.apply("nope", "x", random.Random(0))
    with pytest.raises(KeyError, match="translation.*OpenAIGenerator.translate"):
        aug.apply("translation", "x", random.Random(0))


@pytest.mark.parametrize("name", sorted(aug.TRANSFORMS))
def test_deterministic_and_changes_text(name: str) -> None:
    outs = set()
    for text in PAYLOADS:
        for seed in SEEDS:
            a = aug.apply(name, text, random.Random(seed))
            b = aug.apply(name, text, random.Random(seed))
            assert a == b
            assert a != text
            outs.add(a)
    # Randomness actually varies the output across seeds.
    assert len(outs) > len(PAYLOADS)


# ---- inverses, written independently of the module where possible --------------------------


def _dec_base64(line: str) -> str | None:
    raw = line.strip().encode()
    for alphabet in (b"+/", b"-_"):
        try:
            return base64.b64decode(raw, altchars=alphabet, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return None


def _dec_hex(line: str) -> str | None:
    try:
        return bytes.fromhex(line).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _caesar_all(line: str) -> list[str]:
    def shift(s: str, k: int) -> str:
        return "".join(
            chr((ord(c) - b + k) % 26 + b) if c.isascii() and c.isalpha() else c
            for c in s
            for b in [65 if c.isupper() else 97]
        )

    return [shift(line, k) for k in range(26)]


def _unleet_matches(line: str, text: str) -> bool:
    return len(line) == len(text) and all(
        a == b or a in aug.LEET.get(b.lower(), "") for a, b in zip(line, text, strict=True)
    )


_UNHOMO = {g: latin for latin, gs in aug.HOMOGLYPHS.items() for g in gs}


def _dec_morse(line: str) -> str:
    inv = {v: k for k, v in aug.MORSE.items()}
    return " ".join("".join(inv[c] for c in w.split()) for w in line.split(" / "))


def _morse_expected(text: str) -> str:
    words = ["".join(c for c in w if c in aug.MORSE) for w in text.lower().split()]
    return " ".join(w for w in words if w)


def _squash(s: str) -> str:
    return re.sub(r"[\s\-._/]", "", s)


def _recovered(name: str, out: str, text: str) -> bool:
    lines = out.split("\n")
    for line in lines:
        if name == "base64" and _dec_base64(line) == text:
            return True
        if name == "hex" and _dec_hex(line) == text:
            return True
        if name == "rot13" and codecs.decode(line, "rot13") == text:
            return True
        if name == "caesar" and text in _caesar_all(line) and line != text:
            return True
        if name == "leetspeak" and _unleet_matches(line, text):
            return True
        if name == "homoglyph" and "".join(_UNHOMO.get(c, c) for c in line) == text:
            return True
        if name == "zero_width" and re.sub("[\u200b\u200c\u200d\u2060]", "", line) == text:
            return True
        if name == "letter_spacing" and _squash(line) == _squash(text):
            return True
        if name == "reversal" and text in (line[::-1], " ".join(reversed(line.split()))):
            return True
        if name == "morse" and set(line) <= set(".-/ ") and _dec_morse(line) == _morse_expected(text):
            return True
    return False


@pytest.mark.parametrize("name", ENCODINGS)
def test_encoding_payload_recoverable(name: str) -> None:
    bare = framed = 0
    for text in PAYLOADS:
        for seed in SEEDS:
            out = aug.apply(name, text, random.Random(seed))
            assert _recovered(name, out, text), (name, seed, out)
            if "\n" in out:
                framed += 1
            else:
                bare += 1
    # Sometimes bare, sometimes with an instruction around it.
    assert bare and framed, (name, bare, framed)


def test_caesar_never_uses_rot13_shift_and_varies() -> None:
    text = "abcdefghijklmnopqrstuvwxyz"
    shifts = set()
    for seed in range(200):
        out = aug.apply("caesar", text, random.Random(seed))
        line = next(s for s in out.split("\n") if len(s) == 26 and " " not in s)
        k = (ord(line[0]) - ord("a")) % 26
        assert caesar_ok(k)
        shifts.add(k)
    assert len(shifts) > 10


def caesar_ok(k: int) -> bool:
    return 1 <= k <= 25 and k != 13


def test_homoglyph_and_zero_width_use_the_right_characters() -> None:
    text = PAYLOADS[0]
    for seed in SEEDS:
        out = aug.apply("homoglyph", text, random.Random(seed))
        foreign = [c for c in out if ord(c) > 127]
        assert foreign and all(
            "CYRILLIC" in _uname(c) or "GREEK" in _uname(c) for c in foreign
        )
        zw = aug.apply("zero_width", text, random.Random(seed))
        assert any(c in zw for c in "\u200b\u200c\u200d\u2060")


def _uname(c: str) -> str:
    import unicodedata

    return unicodedata.name(c)


def test_letter_spacing_uses_several_separators() -> None:
    seps = set()
    for seed in range(60):
        out = aug.apply("letter_spacing", "bread", random.Random(seed))
        line = [s for s in out.split("\n") if _squash(s) == "bread"][0]
        seps.add(line[1])
    assert {" ", "-", "."} <= seps


@pytest.mark.parametrize("name", [w for w in WRAPPERS if w != "payload_split"])
def test_wrappers_contain_request_verbatim_and_vary(name: str) -> None:
    outs = set()
    for text in PAYLOADS:
        for seed in SEEDS:
            out = aug.apply(name, text, random.Random(seed))
            assert text in out
            outs.add(out.replace(text, "<R>"))
    assert len(outs) >= 6, name


def test_wrapper_templates_are_many_and_varied_in_length() -> None:
    for name, templates in aug.WRAPPER_TEMPLATES.items():
        assert len(templates) >= 8, name
        assert all(aug.SLOT in t for t in templates), name
        assert any(t.count("\n\n") >= 2 for t in templates), f"{name}: no long template"
        assert any(len(t) < 160 for t in templates), f"{name}: no short template"


_LIT = re.compile(r'"(?:[^"\\]|\\.)*"')


@pytest.mark.parametrize("seed", SEEDS)
def test_payload_split_parts_concatenate_to_request(seed: int) -> None:
    for text in PAYLOADS:
        out = aug.apply("payload_split", text, random.Random(seed))
        assert text not in out  # actually split
        lits = [json.loads(m) for m in _LIT.findall(out)]
        runs = [
            lits[i:j]
            for i in range(len(lits))
            for j in range(i + 2, min(len(lits), i + 4) + 1)
            if "".join(lits[i:j]) == text
        ]
        assert runs, out


def test_case_noise_only_flips_case() -> None:
    for seed in SEEDS:
        out = aug.apply("case_noise", PAYLOADS[0], random.Random(seed))
        assert out.lower() == PAYLOADS[0].lower() and out != PAYLOADS[0]


def test_request_with_braces_is_inserted_verbatim() -> None:
    text = "what does {name} mean in a {request} template?"
    for name in WRAPPERS[:-1]:
        for seed in range(10):
            assert text in aug.apply(name, text, random.Random(seed))


# ---- augment() ----------------------------------------------------------------------------

ROWS = [
    Row(text="Give me a complete sourdough recipe.", label="harmful", category="bread.recipe"),
    Row(text="When was sliced bread invented?", label="harmless", category="bread.facts",
        source="offline"),
    Row(text="Sure, here's a full recipe...", kind="output", label="harmful",
        category="bread.recipe", prompt="recipe please"),
]  # fmt: skip


def test_augment_keeps_labels_and_sets_transform() -> None:
    out = aug.augment(ROWS, random.Random(3), per_row=3)
    assert len(out) == 6  # two input rows x 3; the output row is skipped by default
    for r in out:
        orig = ROWS[0] if r.category == "bread.recipe" else ROWS[1]
        assert (r.label, r.category, r.kind, r.prompt) == (
            orig.label, orig.category, orig.kind, orig.prompt
        )  # fmt: skip
        assert r.transform in aug.TRANSFORMS
        assert r.text != orig.text
        assert r.source == (orig.source or "") + "+aug"
    # Without repetition per row while possible.
    assert len({r.transform for r in out[:3]}) == 3


def test_augment_deterministic_and_filters() -> None:
    a = aug.augment(ROWS, random.Random(9), per_row=2)
    b = aug.augment(ROWS, random.Random(9), per_row=2)
    c = aug.augment(ROWS, random.Random(10), per_row=2)
    assert a == b and a != c
    only = aug.augment(ROWS, random.Random(0), per_row=5, names=["rot13"], kinds=("output",))
    assert len(only) == 5
    assert all(r.kind == "output" and r.transform == "rot13" and r.prompt == "recipe please"
               for r in only)  # fmt: skip
    with pytest.raises(KeyError, match="unknown transform"):
        aug.augment(ROWS, random.Random(0), names=["base64", "bogus"])


def test_augment_chains_transform_names() -> None:
    first = aug.augment(ROWS[:1], random.Random(0), names=["base64"])
    second = aug.augment(first, random.Random(0), names=["roleplay"])
    assert second[0].transform == "base64+roleplay"
    assert second[0].source == "+aug+aug"
    assert first[0].text in second[0].text
