"""Decisions: scores + thresholds + exemptions -> Verdict.

The guard owns policy, not scoring: it turns the classifier's class probabilities into a
block or a pass, applying a principal's exemptions. Exemption precedence is explicit and
narrow: an exemption removes exactly one category's probability from the harmful score, only
if the constitution marks that category ``exemptible``, and only until it expires. Nothing
else (no team or global setting) can widen it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from asl3.classify import neural
from asl3.classify.bundle import Bundle, load_bundle
from asl3.classify.features import Positions
from asl3.classify.score import Score, Scorer
from asl3.classify.stream import OutputMonitor
from asl3.errors import Asl3Error

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Verdict:
    """One decision. ``category`` names the top harmful category when blocked, else None."""

    blocked: bool
    score: float
    category: str | None
    stage: str  # "input" or "output"
    threshold: float
    view: str = "canonical"
    exempted: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocked": self.blocked,
            "score": round(self.score, 6),
            "category": self.category,
            "stage": self.stage,
            "threshold": round(self.threshold, 6),
            "view": self.view,
            "exempted": list(self.exempted),
        }


@dataclass(frozen=True)
class Exemption:
    category: str
    until: datetime

    def active(self, now: datetime) -> bool:
        until = self.until if self.until.tzinfo else self.until.replace(tzinfo=timezone.utc)
        return now < until


@dataclass(frozen=True)
class Principal:
    """Who is asking. Vetted principals carry targeted, expiring, per-category exemptions."""

    name: str
    exemptions: tuple[Exemption, ...] = field(default_factory=tuple)

    def active_exemptions(self, now: datetime | None = None) -> set[str]:
        now = now or datetime.now(timezone.utc)
        return {e.category for e in self.exemptions if e.active(now)}


def floor_offset(thresholds: Mapping[str, float]) -> float:
    """How far (in logits) the prompt-free output score is moved (down when positive) so that
    the one output threshold applies to it at its own calibrated level, ``output_floor``."""
    t, f = thresholds.get("output"), thresholds.get("output_floor")
    if t is None or f is None:
        return 0.0
    logit = lambda p: math.log(p / (1.0 - p))  # noqa: E731
    return logit(f) - logit(t)  # negative when the floor's threshold is the lower one


def default_bundle_path() -> Path:
    return Path(str(resources.files("asl3") / "models" / "default"))


def messages_text(messages: Sequence[Message]) -> str:
    """The text of an OpenAI-style chat: every message's content, text parts included."""
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, Mapping):
            raise Asl3Error("each chat message must be an object with 'role' and 'content'")
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, Mapping) and isinstance(p.get("text"), str):
                    parts.append(p["text"])
        elif c is not None:
            raise Asl3Error("message content must be a string or a list of text parts")
    return "\n".join(parts)


class Guard:
    """Input checks and streaming output monitors over one verified bundle."""

    def __init__(self, bundle: Bundle, stage2: bool | None = None) -> None:
        """``stage2``: None uses the bundle's second stage when the ``neural`` extra is
        installed; True requires it; False runs stage 1 alone (at its own threshold)."""
        self.bundle = bundle
        self.scorer = Scorer(bundle)
        self.thresholds = {k: float(v) for k, v in bundle.thresholds.items()}
        self.scorer.floor_offset = floor_offset(self.thresholds)
        self.holdback = int(bundle.config["holdback"])
        self.exemptible = {cid for cid, c in bundle.categories.items() if c.get("exemptible")}
        self.stage2: neural.Stage2 | None = None
        if stage2 and bundle.stage2_head is None:
            raise Asl3Error(f"{bundle.path}: this bundle has no second stage")
        if stage2 and not neural.available():
            raise Asl3Error("stage 2 needs the neural extra: pip install 'asl3[neural]'")
        if stage2 is not False and bundle.stage2_head is not None and neural.available():
            self.stage2 = neural.Stage2(bundle.stage2_head, bundle.manifest["stage2"])

    @classmethod
    def load(cls, path: str | Path | None = None, expect_digest: str | None = None,
             stage2: bool | None = None) -> Guard:
        return cls(load_bundle(path or default_bundle_path(), expect_digest), stage2)

    @property
    def stages(self) -> str:
        """Which stages judge inputs: "stage1" or "stage1+stage2"."""
        return "stage1+stage2" if self.stage2 is not None else "stage1"

    @property
    def input_threshold(self) -> float:
        return self.thresholds["input_stage2" if self.stage2 is not None else "input"]

    def input_score(self, text: str) -> tuple[float, Score]:
        """The input score the threshold applies to, and stage 1's best window.

        With stage 2, the score is the mean of both stages; below the gate stage 2 cannot
        change the decision, is skipped, and counts as 0 (the score is then a lower bound).
        """
        vs = self.scorer.views_of_input(text)  # normalized once for both stages
        s = self.scorer.input_views(vs)
        if self.stage2 is None:
            return s.score, s
        if s.score < neural.gate(self.input_threshold):
            return neural.combine(s.score, 0.0), s
        st2 = self.stage2
        cands = self.scorer.scored_candidates(vs, st2.candidates, st2.sentence_tokens)
        return st2.combined(s.score, cands), s

    @property
    def categories(self) -> list[str]:
        return list(self.bundle.categories)

    def _exempt(self, principal: Principal | None) -> tuple[np.ndarray | None, tuple[str, ...]]:
        """Mask over the category model's classes of this principal's active, exemptible
        exemptions (None when there are none)."""
        if principal is None:
            return None, ()
        ex = tuple(sorted(principal.active_exemptions() & self.exemptible))
        if not ex:
            return None, ()
        classes = self.bundle.category_model.classes
        return np.array([c in ex for c in classes], dtype=bool), ex

    def _category(self, text: str, pos: Positions | None = None) -> str | None:
        classes = self.bundle.category_model.classes
        if not classes:
            return None
        return classes[int(self.scorer.categories(text, pos).argmax())]

    def check_input(self, text: str | Sequence[Message], principal: Principal | None = None) -> Verdict:
        """Score a user message (or a whole chat) before it reaches the model."""
        if not isinstance(text, str):
            text = messages_text(text)
        score, s = self.input_score(text)
        return self._input_verdict(score, s, principal)

    def check_input_stage1(self, text: str, principal: Principal | None = None) -> Verdict | None:
        """``check_input``'s verdict when stage 1 alone decides it (no second stage, or a score
        under the gate), else None: then call ``check_input``.

        Why: a server can run this cheap, bounded part inline and send only the few inputs
        that need the encoder to a worker thread."""
        vs = self.scorer.views_of_input(text)
        s = self.scorer.input_views(vs)
        if self.stage2 is not None and s.score >= neural.gate(self.input_threshold):
            return None
        score = s.score if self.stage2 is None else neural.combine(s.score, 0.0)
        return self._input_verdict(score, s, principal)

    def _input_verdict(self, score: float, s: Score, principal: Principal | None) -> Verdict:
        threshold = self.input_threshold
        exempted: tuple[str, ...] = ()
        mask, ex = self._exempt(principal)
        if mask is not None and score >= threshold:
            keep = float(1.0 - self.scorer.categories(s.text, s.pos)[mask].sum())
            score = score * keep
            if score < threshold:
                exempted = ex
        blocked = score >= threshold
        category = self._category(s.text, s.pos) if blocked else None
        return Verdict(blocked, score, category, "input", threshold, s.view, exempted)

    def monitor_output(self, prompt: str | Sequence[Message] | None = None,
                       principal: Principal | None = None,
                       threshold: float | None = None) -> OutputMonitor:
        """A streaming monitor for one response to ``prompt``."""
        if prompt is not None and not isinstance(prompt, str):
            prompt = messages_text(prompt)
        mask, _ex = self._exempt(principal)
        th = self.thresholds["output"] if threshold is None else threshold

        def make(score: float, view: str, blocked: bool, ctx: str) -> Verdict:
            category = self._category(ctx) if blocked else None
            return Verdict(blocked, score, category, "output", th, view)

        return OutputMonitor(self.scorer, th, prompt, mask, self.holdback, make)

    def check_output(self, text: str, prompt: str | Sequence[Message] | None = None,
                     principal: Principal | None = None) -> tuple[Verdict, str]:
        """A whole (non-streamed) response, judged exactly as if it had streamed word by word.

        Returns the verdict and the releasable text."""
        mon = self.monitor_output(prompt, principal)
        v = mon.run(text)
        return v, mon.releasable  # type: ignore[return-value]
