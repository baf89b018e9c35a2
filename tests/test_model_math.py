"""The numpy model's shortcuts (prefix-sum windows, streaming sums) equal the direct maths."""

from __future__ import annotations

import numpy as np
import pytest

from asl3.classify.calibrate import threshold_for_fpr
from asl3.classify.features import Featurizer, build_vocab
from asl3.classify.model import HARMFUL, MeanMLP

TEXTS = ["please tell me how to bake bread", "how do vaccines work in the body",
         "bread and butter pudding recipe", "tell me about the history of bread"]


def _model(V: int, H: int = 4, seed: int = 0, prompt: bool = False) -> MeanMLP:
    rng = np.random.default_rng(seed)
    arrays = {"W1": rng.normal(size=(V, H)), "b1": rng.normal(size=H), "W2": rng.normal(size=(H, 1)),
              "b2": rng.normal(size=1), "wt": rng.uniform(0.5, 2.0, size=V)}
    if prompt:
        arrays["W1p"] = rng.normal(size=(V, H))
    return MeanMLP.from_arrays(arrays, [HARMFUL])


def test_window_scores_equal_scoring_each_window_alone():
    vocab, _ = build_vocab(TEXTS * 2, min_df=1)
    f = Featurizer(vocab)
    m = _model(len(vocab))
    text = " ".join(TEXTS)
    pos = f.positions(text)
    ws = m.windows(pos, window=5, stride=2)
    assert len(ws.starts) > 3
    for p, a, b in zip(ws.probs[:, 0], ws.starts, ws.ends, strict=True):
        direct_ids = pos.ids[pos.offsets[a] : pos.offsets[b]]
        pre = m.W1[direct_ids].sum(0) / m.wt[direct_ids].sum()
        assert p == pytest.approx(float(m.probs_from_pre(pre[None])[0, 0]), rel=1e-4)


def test_every_token_owns_at_least_one_id_and_padding_weighs_nothing():
    vocab, _ = build_vocab(TEXTS, min_df=1)
    f = Featurizer(vocab)
    pos = f.positions("bread zzzz qqqq bread")
    assert pos.n_tokens == 4 and len(pos.offsets) == 5
    assert (np.diff(pos.offsets) >= 1).all()
    m = _model(len(vocab))
    assert m.wt[f.pad] == 0 and not m.W1[f.pad].any()


def test_unknown_text_scores_the_bias_only():
    vocab, _ = build_vocab(TEXTS, min_df=1)
    m = _model(len(vocab))
    ws = m.windows(Featurizer(vocab).positions("zzzz qqqq"), 5, 2)
    assert ws.probs[0, 0] == pytest.approx(float(m.probs_from_pre(np.zeros((1, 4)))[0, 0]))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        MeanMLP.from_arrays({"W1": np.zeros((3, 2)), "b1": np.zeros(2), "W2": np.zeros((2, 1)),
                             "b2": np.zeros(1), "wt": np.zeros(4)}, [HARMFUL])


def test_threshold_allows_at_most_the_target_share_of_harmless_blocks():
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=1000)
    for target in (0.0, 0.01, 0.05):
        t = threshold_for_fpr(scores, target, floor=0.0)
        assert (scores >= t).mean() <= target
        assert (scores >= t - 1e-3).mean() > target or target == 0.0


def test_threshold_rejects_bad_input():
    with pytest.raises(ValueError):
        threshold_for_fpr([], 0.01)
    with pytest.raises(ValueError):
        threshold_for_fpr([0.1], 1.5)


def test_positions_is_token_ids_flattened_with_padding_for_unknown_tokens():
    from asl3.classify.features import tokens

    vocab, _ = build_vocab(["bake the bread", "bake a cake", "the bread rises"], min_df=1)
    feat = Featurizer(vocab)
    for text in ["bake the bread", "zzzz bake qqqq the", "", "bread bread bread"]:
        pos = feat.positions(text)
        per_tok = feat.token_ids(tokens(text))
        assert pos.n_tokens == len(per_tok)
        for i, ids in enumerate(per_tok):
            got = tuple(pos.ids[pos.offsets[i] : pos.offsets[i + 1]])
            assert got == (ids or (feat.pad,))
