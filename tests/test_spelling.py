"""The repaired view: deliberately misspelt words mapped back to the words a model knows.

The sentences are benign; the lexicon is a small hand-made one, most frequent first, as a
model's vocabulary is ordered.
"""

from __future__ import annotations

import random

import pytest

from asl3.text.normalize import views
from asl3.text.spelling import Lexicon, english_words

WORDS = [
    "the", "to", "a", "how", "and", "i", "in", "it", "is", "at", "you", "do", "for", "of",
    "with", "what", "this", "that", "can", "my", "on", "me", "your", "explain", "give",
    "write", "make", "describe", "sourdough", "bread", "bake", "starter", "recipe", "oven",
    "flour", "water", "detailed", "instructions", "guide", "home", "kitchen", "simple",
    "steps", "best", "way", "keep", "alive", "week", "vacation", "from", "form",
]
PLAIN = "explain how to bake sourdough bread at home with simple steps"


@pytest.fixture(scope="module")
def lex() -> Lexicon:
    return Lexicon(WORDS)


def scramble(text: str, rng: random.Random) -> str:
    """Best-of-N style: the inside letters of longer words shuffled until they differ."""
    out = []
    for w in text.split():
        if len(w) > 3:
            inside = list(w[1:-1])
            while "".join(inside) == w[1:-1] and len(set(inside)) > 1:
                rng.shuffle(inside)
            w = w[0] + "".join(inside) + w[-1]
        out.append(w)
    return " ".join(out)


def test_scrambled_inside_letters_are_put_back(lex: Lexicon) -> None:
    disguised = scramble(PLAIN, random.Random(0))
    assert disguised != PLAIN
    assert lex.repair(disguised) == PLAIN


def test_one_nudged_letter_and_scrambling_together_are_repaired(lex: Lexicon) -> None:
    assert lex.unscramble("ezplain") == "explain"  # one letter to its ASCII neighbour
    assert lex.unscramble("sdoruguoh") == "sourdough"  # inside scrambled
    assert lex.unscramble("sdoruguoj") == "sourdough"  # scrambled, last letter nudged
    assert lex.unscramble("rdoruguoh") == "sourdough"  # scrambled, first letter nudged
    assert lex.unscramble("sdorvguoh") == "sourdough"  # scrambled, an inside letter nudged


def test_ties_go_to_the_more_frequent_word(lex: Lexicon) -> None:
    # "from" and "form" share first, last and inside letters; "from" ranks first.
    assert lex._scrambled["fmor"] == "from"


@pytest.mark.parametrize(
    "disguised",
    [
        " ".join(w[::-1] for w in PLAIN.split()),  # each word reversed in place
        "".join(c * 2 if c != " " else c for c in PLAIN),  # every letter doubled
        " ".join(w[1:] + w[0] + "ay" for w in PLAIN.split()),  # pig latin
    ],
    ids=["reversed-words", "doubled", "pig-latin"],
)
def test_word_level_disguises_are_undone(lex: Lexicon, disguised: str) -> None:
    assert lex.repair(disguised) == PLAIN


def test_vowelless_text_is_read_by_its_consonants(lex: Lexicon) -> None:
    text = "xpln hw t bk srdgh brd t hm wth smpl stps"
    fixed = lex.repair(text)
    assert fixed is not None
    assert "explain" in fixed and "sourdough bread" in fixed and "simple steps" in fixed


def test_run_together_words_are_segmented(lex: Lexicon) -> None:
    assert lex.repair("explainhowtobakesourdoughbread please") == (
        "explain how to bake sourdough bread please")


def test_long_words_are_not_carved_into_fragments(lex: Lexicon) -> None:
    # An ordinary long word the lexicon lacks is not a run of words: two pieces or short
    # fragments are refused.
    assert lex.segment("nonproliferation") is None
    assert lex.segment("procrastinating") is None


def test_ordinary_text_gets_no_repair(lex: Lexicon) -> None:
    # Rare words (names, jargon) are not disguised words: nothing to repair when most words
    # are known, whatever the unknown ones happen to resemble.
    assert lex.repair("how do i keep my sourdough starter alive for a week with flour") is None
    assert lex.repair("ask pythagoras and fontainebleau about the oven") is None
    assert lex.repair("") is None


def test_text_the_methods_cannot_explain_is_left_alone(lex: Lexicon) -> None:
    assert lex.repair("qzv wplk mmrt xnnq bbbzt kkpqr") is None


def test_english_words_count_as_known() -> None:
    eng = english_words()
    assert {"the", "bread", "volcano"} <= eng
    assert not any(w.startswith("#") for w in eng)
    lex = Lexicon(WORDS)
    assert "volcano" in lex.known and "volcano" not in lex


def test_the_vocabulary_order_is_the_frequency_order() -> None:
    lex = Lexicon.from_vocabulary(["w|from", "c|<fr", "w|form", "b|from the", "w|x1"])
    assert lex.words == ["from", "form"]  # words only, letters only, in order


def test_reversed_leftovers_of_encoded_training_rows_are_not_words() -> None:
    # A vocabulary holds "daerb" when training data had "bread" reversed: it must not make
    # the reversed spelling count as known.
    lex = Lexicon(["bread", "daerb"])
    assert "daerb" not in lex


def test_views_add_the_repaired_view_only_with_a_lexicon(lex: Lexicon) -> None:
    disguised = "eplxian how to bkae sgourduoh baerd at hmoe wtih smipe steps"
    assert [v.name for v in views(disguised)] == ["canonical"]
    got = views(disguised, lexicon=lex)
    assert [v.name for v in got][:2] == ["canonical", "repaired"]
    assert got[1].text == PLAIN.replace("simple", "smipe")  # not a nudge or a scramble


def test_repair_cost_is_bounded(lex: Lexicon) -> None:
    # A megabyte of random letters: the unknown words looked at and the letters segmented
    # are capped, so this returns (the bench measures time; this checks it terminates).
    rng = random.Random(0)
    junk = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(
        rng.randint(3, 30))) for _ in range(60_000))
    lex.repair(junk)


def test_punctuation_sprinkled_inside_words_is_removed(lex: Lexicon) -> None:
    assert lex.repair("ex*pl-ain h.ow t_o ba*ke so-ur.dough br_ead") == (
        "explain how to bake sourdough bread")


def test_ordinary_hyphens_and_abbreviations_are_not_joined(lex: Lexicon) -> None:
    text = "a step-by-step guide, e.g. a well-known starter-recipe for bread-baking at home"
    assert lex.join_inner_punctuation(text) is None
