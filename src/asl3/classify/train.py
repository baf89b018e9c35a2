"""Training: constitution + seed data -> synthetic and augmented examples -> calibrated bundle.

Needs scikit-learn (the ``train`` / ``dev`` extras); the resulting bundle needs only numpy.
Three datasets stay apart: training rows (seed files + offline generation + augmentation),
the calibration split (harmless rows that only set thresholds), and an optional dev set whose
metrics are recorded in the manifest but never influence training or thresholds.
"""

from __future__ import annotations

import random
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from asl3 import constitution as constitution_mod
from asl3.classify.bundle import load_bundle, save_bundle
from asl3.classify.calibrate import threshold_for_fpr, union_thresholds
from asl3.classify.features import (
    Featurizer,
    build_vocab,
    segment_spans,
    token_segments,
    tokens,
)
from asl3.classify.model import HARMFUL, MeanMLP
from asl3.classify.score import CANDIDATE_SENTENCE_TOKENS
from asl3.data.io import Row, read_jsonl, rows_sha256
from asl3.errors import DatasetError
from asl3.text.normalize import canonical, views

PREFIX_CUTS = (8, 16, 24, 40, 64, 96, 128, 176, 240, 320, 420, 550, 750)
Progress = Callable[[str, int, int], None]


@dataclass
class TrainConfig:
    constitution: str = "cbrn"
    data: list[str] = field(default_factory=list)
    calib: list[str] = field(default_factory=list)
    dev: list[str] = field(default_factory=list)
    out: str = "bundle"
    seed: int = 0
    target_fpr_input: float = 0.01
    target_fpr_output: float = 0.01
    # Inputs are calibrated at this share of target_fpr_input. Why a margin: the calibration
    # split is a sample, and what reaches a guard (unseen jailbreak frames, other topics) is
    # not drawn from it; calibrated at exactly 1%, two training seeds blocked 1.13% and 0.44%
    # of the dev sets' harmless inputs. At 0.8% both blocked 0.26% (see ARCHITECTURE.md).
    input_fpr_margin: float = 0.8
    hidden: int = 32
    epochs: int = 15
    alpha: float = 1e-2  # L2 of the input and category models (1e-4 overfit the wild set)
    alpha_output: float = 1e-4  # L2 of the output model
    word_weight: float = 8.0
    per_category_inputs: int = 60
    per_category_outputs: int = 16
    augment_per_row: int = 2
    relevance_floor: float | None = 0.3  # None: plain idf weights (see _relevance_weighted)
    # (tokens, stride). One scale: 16-token windows of unseen jailbreak frames scored as
    # harmful on their own (held-out wild set: 8% false positives with both scales, 1% without)
    windows: tuple[tuple[int, int], ...] = ((40, 10),)
    # Also score inputs sentence by sentence (and by adjacent pairs), and train on sentences;
    # shorter sentences join the next one. None: windows only.
    segment_min_tokens: int | None = 12
    # The first and last sentence stand alone from this many tokens (None: segment_min_tokens)
    segment_edge_min_tokens: int | None = 5
    # Inputs also get a view of their quoted spans joined (normalize.quoted_text): the
    # request a jailbreak quotes, or splits across quoted variables, scored on its own.
    quoted_views: bool = True
    # Inputs whose words are largely misspelt (scrambled, nudged, reversed, pig latin...)
    # also get a view spelt with the model's word vocabulary (asl3.text.spelling). The
    # vocabulary only exists after training, so training rows do not get it; calibration
    # and scoring do.
    repaired_views: bool = True
    # Inputs' canonical view keeps its line breaks, so a request on its own line is a
    # sentence of its own (normalize.views(lines=True)); training, calibration and scoring.
    line_views: bool = True
    # Stage 2 (asl3.classify.neural): "auto" trains it when the neural extra is installed,
    # "minilm" requires it, "none" leaves it out. It reads a stratified sample of the input
    # examples (embedding all of them would take most of the 5-minute budget on 2 cores).
    stage2: str = "auto"
    # Embedding the sample is the largest share of training: 12,000 took the default bundle to
    # 308-318 s on 2 cores (limit 300) once the round-12 rows were in.
    stage2_examples: int = 10_000
    stage2_max_tokens: int = 64  # word pieces the encoder reads per text
    stage2_harmful_share: float = 0.45
    # Share of each class drawn from rows as written before augmentation (see stage2_sample).
    stage2_written_share: float = 0.6
    # The head: one ReLU layer of stage2_hidden units (L2 stage2_alpha), or with 0 a logistic
    # regression (inverse L2 strength stage2_C). See neural.fit_head for why.
    stage2_hidden: int = 128
    stage2_alpha: float = 1e-2
    stage2_heads: int = 3  # an ensemble of hidden-layer heads (seeds seed, seed+1, ...)
    stage2_epochs: int = 50  # per head
    stage2_C: float = 10.0
    stage2_candidates: int = 4  # texts besides the canonical view that stage 2 reads
    # Share of harmful output examples paired with another response's prompt (or none) instead
    # of their own. Without it the output model judged the prompt more than the response: a
    # harmful skeleton after "Write a poem." passed 114 times in 116 (train outputs).
    output_prompt_swap: float = 0.5
    # Share of harmless output examples trained with no prompt, so the prompt-free floor learns
    # both classes. 0.25 halted 109-120/120 dev harmful outputs after benign prompts (against
    # 71-75), but with 1.5-4% false halts: 126 harmless calibration outputs cannot set the
    # floor's 0.5% share of the budget. Off until the calibration split has more outputs.
    output_prompt_drop: float = 0.0
    # "floor": a response's score is the max of its score with and without its prompt (the
    # prompt may add suspicion, never remove it); "prompt": with its prompt only.
    output_context: str = "floor"
    # Transformed copies (asl3.data.augment) of each harmless calibration input, calibrated
    # on together with the plain rows (see train()); 0: plain rows only.
    calib_augment_per_row: int = 1
    holdback: int = 48
    min_tokens: int = 14
    min_df: int = 2
    max_features: int = 60_000
    # synthetic data source: "offline" templates, or "openai" (any OpenAI-compatible endpoint)
    generator: str = "offline"
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    translate: tuple[str, ...] = ()  # languages for the LLM 'translation' transform


def _noop(stage: str, done: int, total: int) -> None:
    pass


def _check_categories(rows: Sequence[Row], known: set[str], source: str) -> None:
    for i, r in enumerate(rows, 1):
        if r.category not in known:
            raise DatasetError(
                f"{source}: row {i}: category {r.category!r} is not in the constitution"
            )


def _prefixes(text: str) -> list[str]:
    """Word-boundary prefixes of a response at growing lengths, plus the whole text."""
    out = []
    for cut in PREFIX_CUTS:
        if cut >= len(text):
            break
        m = re.search(r"\s", text[cut:])
        end = cut + m.start() if m else len(text)
        if end < len(text):
            out.append(text[:end])
    out.append(text)
    return list(dict.fromkeys(out))


def _mean_rows(feat: Featurizer, texts: Sequence[str], idf: np.ndarray):  # -> csr_matrix
    from scipy import sparse

    w = idf.tolist()  # Python floats: indexing a numpy array per feature was most of the cost
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for t in texts:
        counts = Counter(chain.from_iterable(feat.token_ids(tokens(t))))
        total = sum(c * w[i] for i, c in counts.items())
        indices.extend(counts)
        data.extend(c * w[i] / total for i, c in counts.items())
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32), indptr),
        shape=(len(texts), len(feat)),
    )


def relevance(X, y: np.ndarray) -> np.ndarray:
    """|smoothed log-odds| of each feature's presence in harmful versus harmless examples.

    Augmentation wraps harmful and harmless requests alike, so a jailbreak frame's words are
    spread evenly over both classes and get a relevance near 0; the words of a request get a
    high one.
    """
    present = (X > 0).astype(np.float32).tocsc()
    n_h, n_n = float(y.sum()), float((~y).sum())
    df_h = np.asarray(present[y].sum(axis=0)).ravel()
    df_n = np.asarray(present[~y].sum(axis=0)).ravel()
    return np.abs(np.log((df_h + 1) / (n_h + 2)) - np.log((df_n + 1) / (n_n + 2)))


def _relevance_weighted(X, y: np.ndarray, idf: np.ndarray, floor: float):
    """Reweight each example's feature mean by ``floor + relevance``; return (X, weights).

    The mean of a 40-token window that holds a short request inside a long frame is then
    carried by the request's words rather than diluted by the frame's.
    """
    from scipy import sparse

    g = (floor + relevance(X, y)).astype(np.float32)
    Xg = sparse.csr_matrix(X.multiply(g[None, :]))
    sums = np.asarray(Xg.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    Xg = sparse.diags(1.0 / sums) @ Xg
    return Xg.astype(np.float32).tocsr(), (idf * g).astype(np.float32)


def _fit(X, y: np.ndarray, hidden: int, epochs: int, seed: int, alpha: float = 1e-4):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(hidden,), activation="relu", solver="adam", alpha=alpha,
        batch_size=max(32, min(512, X.shape[0] // 100)),  # enough updates on small data
        learning_rate_init=2e-3, max_iter=epochs, random_state=seed,
        shuffle=True, tol=1e-6, n_iter_no_change=epochs + 1,
    )
    clf.fit(X, y)  # a fixed number of epochs: ConvergenceWarning is silenced by the caller
    return clf


def _to_model(clf, classes: list[str], idf: np.ndarray, with_prompt: bool = False) -> MeanMLP:
    """Export a fitted scikit-learn MLP as a numpy MeanMLP (rows pre-multiplied by weights)."""
    W1 = clf.coefs_[0].astype(np.float32)
    W2 = clf.coefs_[1].astype(np.float32)
    b2 = clf.intercepts_[1].astype(np.float32)
    if len(classes) == 2 and W2.shape[1] == 1:  # sklearn's binary case: one logit for class 1
        W2 = np.hstack([np.zeros_like(W2), W2])
        b2 = np.array([0.0, b2[0]], dtype=np.float32)
    V = idf.shape[0]
    arrays = {"W1": W1[:V] * idf[:, None], "b1": clf.intercepts_[0].astype(np.float32),
              "W2": W2, "b2": b2, "wt": idf}
    if with_prompt:
        arrays["W1p"] = W1[V:] * idf[:, None]
    return MeanMLP.from_arrays(arrays, classes)


def _constant_category_model(cid: str, idf: np.ndarray) -> MeanMLP:
    """A constitution with a single harmful category needs no classifier for it."""
    z = np.zeros((idf.shape[0], 1), dtype=np.float32)
    return MeanMLP.from_arrays({"W1": z, "b1": np.zeros(1, np.float32),
                                "W2": np.zeros((1, 1), np.float32),
                                "b2": np.zeros(1, np.float32), "wt": idf}, [cid])


def synthesize(cfg: TrainConfig, const: constitution_mod.Constitution) -> list[Row]:
    """Synthetic rows from the constitution, offline or from an OpenAI-compatible LLM."""
    from asl3.data.generate import OfflineGenerator, OpenAIGenerator

    if cfg.generator == "offline":
        gen = OfflineGenerator(const, seed=cfg.seed)
        return (gen.inputs(per_category=cfg.per_category_inputs)
                + gen.outputs(per_category=cfg.per_category_outputs))
    if cfg.generator != "openai":
        raise DatasetError(f"unknown generator {cfg.generator!r}: use offline or openai")
    if not cfg.base_url or not cfg.model:
        raise DatasetError("the openai generator needs --base-url and --model")
    with OpenAIGenerator(cfg.base_url, cfg.model, api_key=cfg.api_key, seed=cfg.seed) as llm:
        rows = (llm.inputs(const, per_category=cfg.per_category_inputs)
                + llm.outputs(const, per_category=cfg.per_category_outputs))
        if cfg.translate:
            rows += llm.translate([r for r in rows if r.kind == "input"], list(cfg.translate),
                                  random.Random(cfg.seed))
    return rows


def build_training_rows(cfg: TrainConfig, const: constitution_mod.Constitution,
                        progress: Progress = _noop) -> list[Row]:
    """Seed files + offline generation + jailbreak-style augmentation (inputs and outputs)."""
    return _training_rows(cfg, const, progress)[0]


def _training_rows(cfg: TrainConfig, const: constitution_mod.Constitution,
                   progress: Progress = _noop) -> tuple[list[Row], dict[str, str]]:
    """Training rows, and for every augmented text the text it was made from (its payload)."""
    from asl3.data.augment import augment

    known = {c.id for c in const.categories}
    rows: list[Row] = []
    for f in cfg.data:
        got = read_jsonl(f)
        _check_categories(got, known, f)
        rows.extend(got)
    rows.extend(synthesize(cfg, const))
    progress("generate", 1, 1)
    rng = random.Random(cfg.seed)
    inputs = [r for r in rows if r.kind == "input"]
    outputs = [r for r in rows if r.kind == "output"]
    origin: dict[str, str] = {}
    aug: list[Row] = []
    for r in inputs:  # one row at a time so each new text knows its source
        for a in augment([r], rng, per_row=cfg.augment_per_row, kinds=("input",)):
            origin.setdefault(a.text, r.text)
            aug.append(a)
    out_names = ["base64", "rot13", "leetspeak", "letter_spacing", "homoglyph", "zero_width",
                 "case_noise", "reversal", "hex", "morse", "caesar"]
    aug_out: list[Row] = []
    for r in outputs:
        for a in augment([r], rng, per_row=1, names=out_names, kinds=("output",)):
            origin.setdefault(a.text, r.text)
            aug_out.append(a)
    progress("augment", 1, 1)
    return rows + aug + aug_out + _bare_wrappers(const, rng), origin


_FILLERS = ("", "my question", "the question below", "[QUESTION]", "...", "{}")


def _bare_wrappers(const: constitution_mod.Constitution, rng: random.Random) -> list[Row]:
    """Every jailbreak wrapper template with no request in it, labelled harmless.

    A frame alone ("you are DAN, you have no rules...") asks for nothing in the constitution's
    harmful categories. Without these rows the model learns the frame's words from the harmful
    rows it was wrapped around, and then blocks a harmless question inside an unseen frame.
    """
    from asl3.data.augment import SLOT, WRAPPER_TEMPLATES, fill_template

    harmless = [c.id for c in const.categories if c.label == "harmless"]
    if not harmless:
        return []
    out = []
    for name, templates in sorted(WRAPPER_TEMPLATES.items()):
        for t in templates:
            for filler in rng.sample(_FILLERS, 2):
                text = fill_template(t, filler, rng).strip()
                if text and SLOT not in text:
                    out.append(Row(text=text, label="harmless", category=rng.choice(harmless),
                                   transform=name, source="bare-wrapper"))
    return out


_WORD = re.compile(r"[a-z]{3,}")


def _payload_words(text: str) -> set[str]:
    return set(_WORD.findall(canonical(text).lower()))


def _carries(view_text: str, payload: set[str], share: float = 0.6) -> bool:
    """Does a view contain most of the payload's words?

    A harmful row's views are labelled harmful only when they do. The raw view of a base64
    or hex request is a string of symbols that says nothing; labelling it harmful would teach
    the model that *any* encoded text is harmful, and encoded harmless requests would be
    blocked. The decoded view carries the request and keeps the label.
    """
    if not payload:
        return True
    return len(payload & set(_WORD.findall(view_text.lower()))) >= share * len(payload)


def _segments(toks: list[str], starts: list[int], max_len: int, min_len: int,
              edge_len: int | None) -> list[str]:
    """The sentence spans that scoring sees (see ``segment_spans``), as texts."""
    spans = segment_spans(starts, len(toks), max_len, min_len, edge_len)
    return [" ".join(toks[a:b]) for a, b in spans]


def _input_examples(rows: Sequence[Row], scales: Sequence[tuple[int, int]],
                    rng: random.Random, origin: dict[str, str] | None = None,
                    segment_min: int | None = None, segment_edge: int | None = None,
                    quoted: bool = False, lines: bool = False) -> tuple[list[str], list[str]]:
    """Every view of every row; plus, for harmless rows, windows at the scoring scales.

    Views of a harmful row that do not carry its payload (see :func:`_carries`) are left out.
    With ``segment_min``, sentences are examples too: a harmful row's sentences that carry its
    payload (the request inside a frame) and a harmless row's sentences (a frame's own
    sentences, which must score low when judged alone). With ``quoted``, the quoted-spans
    view is one of the views, and with ``lines`` the canonical view keeps its line breaks
    (as they are when such a bundle scores).
    """
    max_len = max(w for w, _ in scales)
    origin = origin or {}
    texts, labels = [], []
    for r in rows:
        seen = set()
        vs = views(r.text, quoted=quoted, lines=lines)
        payload = _payload_words(origin.get(r.text, r.text)) if r.label == "harmful" else None
        for v in vs:
            if v.text and v.text not in seen:
                seen.add(v.text)
                if payload is not None and not _carries(v.text, payload):
                    continue
                texts.append(v.text)
                labels.append(r.category)
                if payload:
                    toks, starts = token_segments(v.text)
                    extra = _payload_windows(toks, payload, scales, rng)
                    if segment_min:
                        hits = [s for s in _segments(toks, starts, max_len, segment_min,
                                                     segment_edge)
                                if _carries(s, payload)]
                        extra += rng.sample(hits, min(2, len(hits)))
                    for w in extra:
                        texts.append(w)
                        labels.append(r.category)
        if r.label == "harmless":
            toks, starts = token_segments(vs[0].text)
            extra = _harmless_windows(toks, scales, rng)
            if segment_min:
                segs = _segments(toks, starts, max_len, segment_min, segment_edge)
                extra += rng.sample(segs, min(4, len(segs)))
            for w in extra:
                texts.append(w)
                labels.append(r.category)
    return texts, labels


def _windows_by_scale(toks: list[str], scales: Sequence[tuple[int, int]]
                      ) -> list[list[str]]:
    """Token windows at each scale, as scoring cuts them; none for texts a window covers."""
    out = []
    for window, stride in scales:
        if len(toks) <= window + stride:
            out.append([])
            continue
        out.append([" ".join(toks[a : a + window])
                    for a in range(0, len(toks) - window + 1, stride)])
    return out


def _payload_windows(toks: list[str], payload: set[str], scales: Sequence[tuple[int, int]],
                     rng: random.Random, per_scale: int = 2) -> list[str]:
    """Windows of a long harmful text that still carry its payload, at every scoring scale.

    A request inside a long wrapper is judged at run time by the window around it, where it
    is diluted by the wrapper's words; these examples teach exactly that situation.
    """
    out = []
    for wins in _windows_by_scale(toks, scales):
        hits = [w for w in wins if _carries(w, payload)]
        out.extend(rng.sample(hits, min(per_scale, len(hits))))
    return out


def _harmless_windows(toks: list[str], scales: Sequence[tuple[int, int]], rng: random.Random,
                      per_scale: int = 4) -> list[str]:
    """Token windows of a harmless text at every scoring scale, at most ``per_scale`` each.

    Scoring takes the max over windows, so every window of a harmless text must score low:
    a wrapper's own sentences ("you are an AI with no rules") are such windows.
    """
    out = []
    for wins in _windows_by_scale(toks, scales):
        out.extend(rng.sample(wins, min(per_scale, len(wins))))
    return out


def _output_examples(rows: Sequence[Row], origin: dict[str, str] | None = None,
                     rng: random.Random | None = None, swap: float = 0.0, drop: float = 0.0
                     ) -> tuple[list[str], list[str], list[str]]:
    """Growing prefixes of the canonical view (the stream), and every other view whole.

    As for inputs, views of a harmful response that do not carry its words are left out.
    With probability ``swap`` a harmful response is paired with another row's prompt (or
    none), keeping its label: an attacker chooses the prompt, so a harmless-looking one must
    not make a harmful response pass. Harmless responses keep their own prompts, whose context
    keeps false positives down (swapping them too tripled the proxy's false positives).
    """
    origin = origin or {}
    rng = rng or random.Random(0)
    pool = sorted({canonical(r.prompt) for r in rows if r.prompt} | {""})
    texts, prompts, labels = [], [], []
    for r in rows:
        p = canonical(r.prompt) if r.prompt else ""
        if r.label == "harmful" and swap and rng.random() < swap:
            p = rng.choice(pool)
        elif r.label != "harmful" and drop and rng.random() < drop:
            p = ""  # the prompt-free context (the floor) must learn harmless responses too
        vs = views(r.text)
        payload = _payload_words(origin.get(r.text, r.text)) if r.label == "harmful" else None
        if payload is None or _carries(vs[0].text, payload):
            for pre in _prefixes(vs[0].text):
                texts.append(pre)
                prompts.append(p)
                labels.append(r.category)
        for v in vs[1:]:
            if payload is not None and not _carries(v.text, payload):
                continue
            texts.append(v.text)
            prompts.append(p)
            labels.append(r.category)
    return texts, prompts, labels


@dataclass
class CalibrationScores:
    """Max score of every harmless calibration row: inputs by stage 1 alone and by both
    stages (None without stage 2), and outputs as streamed: after their own prompt, and
    (bundles with the prompt-free floor) with no prompt, each on its own."""

    inputs: list[float]
    # With stage2_fpr, rows stage 2 was not run on hold an upper bound (see stage2_scores).
    inputs_stage2: list[float] | None
    outputs: list[float]
    outputs_alone: list[float] | None = None


def calibration_scores(guard: Any, rows: Sequence[Row], progress: Progress = _noop,
                       stage2_fpr: float | None = None) -> CalibrationScores:
    """Scores of the harmless calibration rows through the run-time code paths.

    Stage 2 is not gated here, because the gate depends on the threshold being calibrated.
    Without ``stage2_fpr`` it runs on every input row; with it, only on the rows that could
    matter to the threshold at that false-positive rate (:func:`stage2_scores`).
    """
    ins, outs, alone, cands = [], [], [], []
    floor, guard.scorer.output_floor = guard.scorer.output_floor, False  # contexts one by one
    try:
        for i, r in enumerate(rows):
            if r.kind == "input":
                vs = guard.scorer.views_of_input(r.text)
                ins.append(guard.scorer.input_views(vs).score)
                if guard.stage2 is not None:
                    st2 = guard.stage2
                    cands.append(guard.scorer.scored_candidates(vs, st2.candidates,
                                                                st2.sentence_tokens))
            else:
                mon = guard.monitor_output(r.prompt, threshold=float("inf"))
                mon.run(r.text)  # as streamed word by word (see OutputMonitor.run)
                outs.append(mon.max_score)
                if floor:
                    mon = guard.monitor_output(None, threshold=float("inf"))
                    mon.run(r.text)
                    alone.append(mon.max_score)
            progress("calibrate", i + 1, len(rows))
    finally:
        guard.scorer.output_floor = floor
    both = None
    if guard.stage2 is not None:
        both = stage2_scores(guard.stage2, ins, cands, stage2_fpr,
                             lambda d, t: progress("calibrate stage 2", d, t))
    return CalibrationScores(ins, both, outs, alone if floor else None)


def stage2_scores(stage2: Any, s1: Sequence[float],
                  cands: Sequence[Sequence[tuple[str, float]]],
                  fpr: float | None, progress: Any = None) -> list[float]:
    """Two-stage scores of harmless rows for calibrating at ``fpr``: exact where the encoder
    ran, ``combine(s1, 1)`` (an upper bound) where it did not.

    Why: the encoder is most of calibration's cost, and most harmless rows have a stage-1
    score so low that even stage 2 = 1 leaves them far below any threshold. The encoder runs
    on the rows in decreasing stage-1 order, in doubling batches, until every row left has an
    upper bound strictly below the score that sets the threshold (threshold_for_fpr's
    ``k``-th highest): those rows then cannot change it, so the threshold equals the one from
    running the encoder on every row. ``fpr=None``: every row, all exact.
    """
    from asl3.classify.neural import combine

    n = len(s1)
    scores = [combine(a, 1.0) for a in s1]
    order = sorted(range(n), key=lambda i: -s1[i])
    k = n if fpr is None else int(np.floor(fpr * n))
    done, m = 0, n if fpr is None else min(n, max(64, 4 * (k + 1)))
    while True:
        batch = order[done:m]
        got = stage2.combined_many([s1[i] for i in batch], [cands[i] for i in batch], progress)
        for i, both in zip(batch, got, strict=True):
            scores[i] = float(both)
        done = m
        if m >= n or k >= n:
            return scores
        kth = sorted(scores, reverse=True)[k]
        if scores[order[m]] < kth:  # the highest bound left (bounds follow stage-1 order)
            return scores
        m = min(n, 2 * m)


def _want_stage2(mode: str) -> bool:
    from asl3.classify import neural

    if mode not in ("auto", "minilm", "none"):
        raise DatasetError(f"unknown stage 2 {mode!r}: use auto, minilm or none")
    if mode == "minilm" and not neural.available():
        raise DatasetError("stage 2 needs the neural extra: pip install 'asl3[neural]'")
    return mode == "minilm" or (mode == "auto" and neural.available())


def stage2_sample(texts: Sequence[str], labels: Sequence[str], harmful: set[str], n: int,
                  harmful_share: float, seed: int, written: set[str] | None = None,
                  written_share: float = 0.0) -> tuple[list[str], np.ndarray]:
    """A deterministic, stratified sample of distinct input examples for the stage-2 head.

    ``written`` names the rows as they were written (seed files and generator output, before
    augmentation, windows and segments). They are a small part of the examples (about 11,000
    of 59,000 distinct texts for the default bundle), so a uniform sample gave the head about
    500 of them: it learned mostly from views, windows and wrapped copies, and the wordings of
    hand-written requests were the ones it saw least. With ``written_share`` that share of each
    class is drawn from written rows first (as many as there are), the rest uniformly.
    """
    rng = random.Random(seed)
    pairs = list(dict.fromkeys((t, lab in harmful) for t, lab in zip(texts, labels, strict=True)))
    written = written or set()

    def draw(pool: list[str], k: int) -> list[str]:
        mine = [t for t in pool if t in written]
        k_written = min(len(mine), round(k * written_share))
        first = rng.sample(mine, k_written)
        taken = set(first)
        rest = [t for t in pool if t not in taken]
        return first + rng.sample(rest, min(len(rest), k - k_written))

    pos = [t for t, h in pairs if h]
    neg = [t for t, h in pairs if not h]
    n_pos = min(len(pos), round(n * harmful_share))
    n_neg = min(len(neg), n - n_pos)
    got_pos, got_neg = draw(pos, n_pos), draw(neg, n_neg)
    return got_pos + got_neg, np.array([1] * len(got_pos) + [0] * len(got_neg))


def _fit_stage1(cfg: TrainConfig, pool: ThreadPoolExecutor, harmful: set[str],
                inputs: tuple[list[str], list[str]],
                outputs: tuple[list[str], list[str], list[str]], progress: Progress
                ) -> tuple[list[str], np.ndarray, MeanMLP, MeanMLP, MeanMLP]:
    """Vocabulary, then the input, output and category models of stage 1."""
    from scipy import sparse

    in_texts, in_labels = inputs
    out_texts, out_prompts, out_labels = outputs
    progress("featurize", 1, 3)
    vocab, idf = build_vocab(in_texts + out_texts + sorted(set(out_prompts)), cfg.min_df,
                             cfg.max_features)
    # Word and bigram features carry intent; there are ~15 character grams per word, so
    # without this weight the words would be drowned in the mean.
    idf = idf * np.array([cfg.word_weight if f[0] in "wb" else 1.0 for f in vocab],
                         dtype=np.float32)
    feat = Featurizer(vocab)
    progress("featurize", 2, 3)
    X_in = _mean_rows(feat, in_texts, idf)
    X_out = sparse.hstack([_mean_rows(feat, out_texts, idf),
                           _mean_rows(feat, out_prompts, idf)]).tocsr()
    progress("featurize", 3, 3)

    def fit_input() -> MeanMLP:
        y_in = np.array([lab in harmful for lab in in_labels])
        X, wt = X_in, idf
        if cfg.relevance_floor is not None:
            X, wt = _relevance_weighted(X_in, y_in, idf, cfg.relevance_floor)
        return _to_model(_fit(X, y_in, cfg.hidden, cfg.epochs, cfg.seed, cfg.alpha),
                         [HARMFUL], wt)

    progress("fit input and output models", 0, 2)
    in_job = pool.submit(fit_input)
    y_out = np.array([lab in harmful for lab in out_labels])
    out_model = _to_model(_fit(X_out, y_out, cfg.hidden, cfg.epochs, cfg.seed, cfg.alpha_output),
                          [HARMFUL], idf, with_prompt=True)
    progress("fit input and output models", 1, 2)
    in_model = in_job.result()
    progress("fit input and output models", 2, 2)

    progress("fit category model", 0, 1)
    cat_texts = [t for t, lab in zip(in_texts, in_labels, strict=True) if lab in harmful]
    cat_texts += [f"{p}\n{t}" for t, p, lab in zip(out_texts, out_prompts, out_labels, strict=True)
                  if lab in harmful]
    cat_labels = [lab for lab in in_labels if lab in harmful]
    cat_labels += [lab for lab in out_labels if lab in harmful]
    present = sorted(set(cat_labels))
    if len(present) == 1:
        cat_model = _constant_category_model(present[0], idf)
    else:
        clf = _fit(_mean_rows(feat, cat_texts, idf), np.array(cat_labels), 16, cfg.epochs,
                   cfg.seed, cfg.alpha)
        cat_model = _to_model(clf, [str(c) for c in clf.classes_], idf)
    progress("fit category model", 1, 1)
    return vocab, idf, in_model, out_model, cat_model


def _train_stage2(cfg: TrainConfig, encoder: Any, texts: Sequence[str], labels: Sequence[str],
                  harmful: set[str], written: set[str], progress: Progress,
                  stop: threading.Event) -> tuple[Any, dict[str, Any]]:
    """Embed a stratified sample of the input examples and fit the stage-2 head."""
    from asl3.classify import neural

    def embedded(done: int, total: int) -> None:
        if stop.is_set():
            raise RuntimeError("training stopped")
        progress("stage 2: embed", done, total)

    s2_texts, s2_y = stage2_sample(texts, labels, harmful, cfg.stage2_examples,
                                   cfg.stage2_harmful_share, cfg.seed + 2, written,
                                   cfg.stage2_written_share)
    if len(set(s2_y.tolist())) < 2:
        raise DatasetError("stage 2 needs both harmful and harmless input examples")
    E = encoder.encode(s2_texts, embedded)
    progress("stage 2: fit head", 0, 1)
    head = neural.fit_head(E, s2_y, cfg.stage2_C, cfg.seed, cfg.stage2_hidden, cfg.stage2_alpha,
                           cfg.stage2_heads, cfg.stage2_epochs)
    progress("stage 2: fit head", 1, 1)
    spec = {"model": "minilm-mlp" if cfg.stage2_hidden else "minilm-logistic",
            "encoder": neural.ENCODER_NAME,
            "encoder_sha256": encoder.sha256, "max_tokens": encoder.max_tokens,
            "combine": "aligned", "candidates": cfg.stage2_candidates,
            "sentence_tokens": CANDIDATE_SENTENCE_TOKENS,
            "examples": len(s2_texts), "written_share": cfg.stage2_written_share,
            **({"hidden": cfg.stage2_hidden, "alpha": cfg.stage2_alpha,
                "heads": cfg.stage2_heads, "epochs": cfg.stage2_epochs} if cfg.stage2_hidden
               else {"C": cfg.stage2_C})}
    return head, spec


def train(cfg: TrainConfig, progress: Progress = _noop) -> dict[str, Any]:
    """Train, calibrate and save a bundle; returns its manifest (with the digest)."""
    from sklearn.exceptions import ConvergenceWarning

    t0 = time.perf_counter()
    use_stage2 = _want_stage2(cfg.stage2)
    const = constitution_mod.load(cfg.constitution)
    known = {c.id for c in const.categories}
    harmful = {c.id for c in const.harmful}
    rows, origin = _training_rows(cfg, const, progress)

    calib: list[Row] = []
    for f in cfg.calib:
        got = read_jsonl(f)
        _check_categories(got, known, f)
        calib.extend(r for r in got if r.label == "harmless")
    if not cfg.calib:
        # No calibration file: hold out generated harmless rows made with another seed.
        from asl3.data.generate import OfflineGenerator

        g = OfflineGenerator(const, seed=cfg.seed + 7919)
        calib = [r for r in g.inputs(per_category=20) + g.outputs(per_category=8)
                 if r.label == "harmless"]
    train_texts = {r.text for r in rows}
    overlap = sum(1 for r in calib if r.text in train_texts)
    if overlap:
        calib = [r for r in calib if r.text not in train_texts]

    in_rows = [r for r in rows if r.kind == "input"]
    out_rows = [r for r in rows if r.kind == "output"]
    in_texts, in_labels = _input_examples(in_rows, cfg.windows, random.Random(cfg.seed + 1),
                                          origin, cfg.segment_min_tokens,
                                          cfg.segment_edge_min_tokens, cfg.quoted_views,
                                          cfg.line_views)
    out_texts, out_prompts, out_labels = _output_examples(
        out_rows, origin, random.Random(cfg.seed + 3), cfg.output_prompt_swap,
        cfg.output_prompt_drop)
    # Two cores do the work: stage 2's encoder (torch releases the GIL) runs while stage 1
    # featurizes and fits, and the input and output models fit side by side (scipy's sparse
    # products release the GIL too). Each fit has its own seed, so the result is the same.
    # Fixed epoch counts: ConvergenceWarning says nothing here. Filters are process-wide, so
    # they are set once around the threads, not inside them.
    head, encoder, stage2_spec = None, None, None
    torch_threads = 1
    stop = threading.Event()  # set on any failure so the encoder thread stops at its next batch
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=2) as pool:
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            stage2_job = None
            if use_stage2:  # load the encoder first: its import would wait on featurizing's GIL
                from asl3.classify import neural

                encoder = neural.Encoder(max_tokens=cfg.stage2_max_tokens)
                torch_threads = encoder.threads
                # One torch thread while the other core fits stage 1: two torch threads on a
                # shared core wait on each other at every operation (measured: 12,000 texts
                # took 320 s instead of 150 s).
                encoder.threads = 1
                written = {r.text for r in in_rows if r.text not in origin}
                stage2_job = pool.submit(_train_stage2, cfg, encoder, in_texts, in_labels,
                                         harmful, written, progress, stop)
            vocab, idf, in_model, out_model, cat_model = _fit_stage1(
                cfg, pool, harmful, (in_texts, in_labels), (out_texts, out_prompts, out_labels),
                progress)
            if stage2_job is not None:
                assert encoder is not None
                encoder.threads = torch_threads  # stage 1 is done: both cores to the encoder
                head, stage2_spec = stage2_job.result()
        except BaseException:
            stop.set()
            raise
        finally:
            if encoder is not None:
                encoder.threads = torch_threads

    manifest: dict[str, Any] = {
        "name": const.name,
        "version": const.version,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "constitution": {"name": const.name, "version": const.version,
                         "sha256": constitution_mod.sha256_of(cfg.constitution)},
        "categories": [{"id": c.id, "label": c.label, "exemptible": c.exemptible}
                       for c in const.categories],
        "stages": [{"name": "stage1", "model": "mean-embedding-mlp", "hidden": cfg.hidden,
                    "heads": "sigmoid P(harmful); softmax over harmful categories",
                    "word_weight": cfg.word_weight,
                    "features": "word 1-2-grams + char 3-5-grams over canonical views"}]
                  + ([{"name": "stage2", "model": stage2_spec and stage2_spec["model"],
                       "runs": "on inputs whose stage-1 score could reach the threshold"}]
                     if head is not None else []),
        "stage2": stage2_spec,
        "thresholds": {"input": 0.5, "output": 0.5},
        "config": {"windows": [list(w) for w in cfg.windows],
                   "segment_min_tokens": cfg.segment_min_tokens,
                   "segment_edge_min_tokens": cfg.segment_edge_min_tokens,
                   "quoted_views": cfg.quoted_views,
                   "repaired_views": cfg.repaired_views,
                   "line_views": cfg.line_views,
                   "holdback": cfg.holdback,
                   "min_tokens": cfg.min_tokens,
                   "output_context": cfg.output_context,
                   "target_fpr": {"input": cfg.target_fpr_input, "output": cfg.target_fpr_output,
                                  "input_margin": cfg.input_fpr_margin},
                   "seed": cfg.seed},
        "training": {"rows": len(rows), "input_examples": len(in_texts),
                     "output_examples": len(out_texts), "vocab": len(vocab),
                     "data_files": list(cfg.data), "data_sha256": rows_sha256(rows),
                     "calibration_files": list(cfg.calib), "calibration_rows": len(calib),
                     "calibration_overlap_removed": overlap},
    }
    if head is not None:
        manifest["thresholds"]["input_stage2"] = 0.5
    out = Path(cfg.out)
    save_bundle(out, manifest, vocab, in_model, out_model, cat_model, head)

    # Calibrate on the separate harmless split, through the exact run-time code path.
    from asl3.classify.neural import Stage2
    from asl3.guard import Guard, floor_offset

    guard = Guard(load_bundle(out), stage2=False)
    if head is not None:
        guard.stage2 = Stage2(head, stage2_spec or {}, encoder)
    # Harmless inputs also reach the guard in jailbreak dress (a question inside a persona
    # frame, encoded, split): calibrating on plain requests alone left the false-positive rate
    # of those forms uncontrolled (dev-wild harmless blocked: 8, 15 and 15 of 400 over three
    # training seeds at a 1% target). Each harmless calibration input also gets transformed
    # copies, and the threshold holds the target over the mix.
    from asl3.data.augment import augment

    calib_aug = augment([r for r in calib if r.kind == "input"], random.Random(cfg.seed + 5),
                        per_row=cfg.calib_augment_per_row) if cfg.calib_augment_per_row else []
    fpr_in = cfg.target_fpr_input * cfg.input_fpr_margin
    cal = calibration_scores(guard, [*calib, *calib_aug], progress, fpr_in)
    ins, outs = cal.inputs, cal.outputs

    def th(scores: Sequence[float] | None, fpr: float) -> float:
        return threshold_for_fpr(scores, fpr) if scores else 0.5

    manifest["thresholds"] = {"input": th(ins, fpr_in),
                              "output": th(outs, cfg.target_fpr_output)}
    if cal.outputs_alone:  # blocks when either context reaches its threshold: one FP budget
        t_out, t_floor = union_thresholds(outs, cal.outputs_alone, cfg.target_fpr_output)
        manifest["thresholds"].update(output=t_out, output_floor=t_floor)
    if head is not None:
        manifest["thresholds"]["input_stage2"] = th(cal.inputs_stage2, fpr_in)
    manifest["calibration"] = {"input_rows": len(ins), "output_rows": len(outs),
                               "input_rows_transformed": len(calib_aug)}

    if cfg.dev:
        from asl3.eval.metrics import evaluate

        dev_rows: list[Row] = []
        for f in cfg.dev:
            dev_rows.extend(read_jsonl(f))
        guard.thresholds = dict(manifest["thresholds"])
        guard.scorer.floor_offset = floor_offset(guard.thresholds)
        manifest["metrics"] = {"dev_files": list(cfg.dev),
                               **evaluate(guard, dev_rows, progress=progress).summary()}
    manifest["training"]["seconds"] = round(time.perf_counter() - t0, 1)
    digest = save_bundle(out, manifest, vocab, in_model, out_model, cat_model, head)
    manifest["digest"] = digest
    return manifest
