"""Turn an upstream's completion (whole or streamed) into what the client may see.

Pure logic, no I/O: the app feeds upstream chunks in and sends out what comes back.

* Generated text fields (``content``, and the ``reasoning_content``/``reasoning`` fields of
  reasoning servers such as vLLM's) each get a streaming output monitor per choice; only their
  ``releasable`` text is forwarded, so held-back text is never sent.
* Tool-call deltas are held until the choice ends and judged whole: a tool call's arguments
  are generated text too, and streaming them out unjudged would be a bypass.
* ``logprobs`` are dropped: they spell out the generated tokens, held-back ones included.
* Once a choice is blocked it ends with ``finish_reason: "content_filter"`` and nothing more
  of it is forwarded; when every choice has ended, ``done`` tells the app to cancel upstream.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asl3.classify.stream import OutputMonitor
from asl3.guard import Verdict

TEXT_FIELDS = ("content", "reasoning_content", "reasoning")
FILTERED = "content_filter"

NewMonitor = Callable[[], OutputMonitor]
# judge_whole(text) -> (verdict, releasable): a whole text, as Guard.check_output judges it
JudgeWhole = Callable[[str], tuple[Verdict, str]]


@dataclass
class _Choice:
    monitors: dict[str, OutputMonitor] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    tools: list[list[dict[str, Any]]] = field(default_factory=list)
    finished: bool = False
    verdict: Verdict | None = None  # the blocking verdict, if any


def tool_arguments(tool_calls: list[Any]) -> str:
    """All the text a model put into tool calls (names and arguments)."""
    parts: list[str] = []
    for tc in tool_calls:
        if isinstance(tc, dict):
            fn = tc.get("function")
            if isinstance(fn, dict):
                parts.extend(str(fn.get(k) or "") for k in ("name", "arguments"))
    return "\n".join(p for p in parts if p)


class StreamRelay:
    """State of one streamed response."""

    def __init__(self, new_monitor: NewMonitor, judge_whole: JudgeWhole) -> None:
        self._new = new_monitor
        self._judge = judge_whole
        self._choices: dict[int, _Choice] = {}

    # -- results ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Every choice seen has ended (finished or blocked): nothing more is needed upstream."""
        return bool(self._choices) and all(c.finished for c in self._choices.values())

    @property
    def blocked(self) -> Verdict | None:
        for c in self._choices.values():
            if c.verdict is not None:
                return c.verdict
        return None

    @property
    def max_score(self) -> float:
        return max((m.max_score for c in self._choices.values() for m in c.monitors.values()),
                   default=0.0)

    def generated_text(self) -> str:
        """Everything generated (held-back text included): for the reviewers' store only."""
        return "\n".join(m.text for c in self._choices.values() for m in c.monitors.values())

    # -- feeding ---------------------------------------------------------------------------
    def _release(self, st: _Choice, name: str, delta: dict[str, Any]) -> None:
        mon = st.monitors.get(name)
        if mon is None:
            return
        new = mon.releasable[st.sent.get(name, 0):]
        if new:
            st.sent[name] = st.sent.get(name, 0) + len(new)
            delta[name] = new

    def _block(self, st: _Choice, verdict: Verdict) -> None:
        st.verdict = verdict
        st.finished = True

    def _finish(self, st: _Choice) -> None:
        """The choice ended upstream: final verdicts over every field, then its tool calls."""
        for mon in st.monitors.values():
            v = mon.finish()
            if mon.blocked and st.verdict is None:
                self._block(st, v)  # type: ignore[arg-type]
        if st.verdict is None and st.tools:
            v, _ = self._judge(tool_arguments([tc for ts in st.tools for tc in ts]))
            if v.blocked:
                self._block(st, v)
        st.finished = True

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """One upstream chunk in; the chunks to send to the client out (maybe none)."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return [chunk]  # e.g. the usage chunk of stream_options.include_usage
        out_choices: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            idx = ch.get("index", 0)
            st = self._choices.setdefault(idx if isinstance(idx, int) else 0, _Choice())
            if st.finished:
                continue
            delta_in = ch.get("delta") if isinstance(ch.get("delta"), dict) else {}
            delta: dict[str, Any] = {k: v for k, v in delta_in.items()
                                     if k not in TEXT_FIELDS and k != "tool_calls"}
            if isinstance(delta_in.get("tool_calls"), list):
                st.tools.append(copy.deepcopy(delta_in["tool_calls"]))
            for name in TEXT_FIELDS:
                piece = delta_in.get(name)
                if isinstance(piece, str) and piece:
                    mon = st.monitors.get(name)
                    if mon is None:
                        mon = st.monitors[name] = self._new()
                    v = mon.feed(piece)
                    if mon.blocked and st.verdict is None:
                        self._block(st, v)  # type: ignore[arg-type]
            finish = ch.get("finish_reason")
            if st.verdict is None and finish is not None:
                self._finish(st)
            for name in list(st.monitors):
                self._release(st, name, delta)
            if st.verdict is not None:
                finish = FILTERED
            elif st.finished and st.tools:
                extra.append({**chunk, "choices": [{"index": idx, "delta": {"tool_calls": tc},
                                                    "finish_reason": None}
                                                   for tc in st.tools]})
            if "role" in delta and "content" not in delta and "content" in delta_in:
                delta["content"] = ""  # keep the opening chunk's usual shape
            if delta or finish is not None:
                out = {k: v for k, v in ch.items() if k != "logprobs"}
                out["delta"] = delta
                out["finish_reason"] = finish
                out_choices.append(out)
        result: list[dict[str, Any]] = []
        if out_choices or extra:
            # tool calls first, then the chunk that carries the finish reason
            result.extend(_split_tools(extra))
            if out_choices:
                result.append({**chunk, "choices": out_choices})
        return result

    def end(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        """The upstream stream ended: finish every open choice and send what is left."""
        out_choices = []
        for idx, st in self._choices.items():
            if st.finished:
                continue
            self._finish(st)
            delta: dict[str, Any] = {}
            for name in list(st.monitors):
                self._release(st, name, delta)
            if st.verdict is None and st.tools:
                delta["tool_calls"] = [tc for ts in st.tools for tc in ts]
            out_choices.append({"index": idx, "delta": delta,
                                "finish_reason": FILTERED if st.verdict else None})
        return [{**meta, "choices": out_choices}] if out_choices else []


def _split_tools(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chunk per held tool-call delta, in the order they came."""
    out: list[dict[str, Any]] = []
    for c in chunks:
        for ch in c["choices"]:
            out.append({**c, "choices": [ch]})
    return out


def judge_completion(resp: dict[str, Any], judge: JudgeWhole) -> tuple[Verdict | None, float, str]:
    """Check a whole (non-streamed) completion in place.

    Each choice's generated fields are judged as if streamed; a blocked choice keeps only
    its releasable text, loses its tool calls and ends with ``content_filter``. Returns the
    first blocking verdict (or None), the highest score, and all generated text."""
    blocked: Verdict | None = None
    top = 0.0
    texts: list[str] = []
    for ch in resp.get("choices") or []:
        if not isinstance(ch, dict):
            continue
        ch.pop("logprobs", None)
        msg = ch.get("message")
        if not isinstance(msg, dict):
            continue
        releasable: dict[str, str] = {}
        verdict: Verdict | None = None
        for name in TEXT_FIELDS:
            text = msg.get(name)
            if isinstance(text, str) and text:
                texts.append(text)
                v, rel = judge(text)
                top = max(top, v.score)
                releasable[name] = rel
                if v.blocked and verdict is None:
                    verdict = v
        tools = msg.get("tool_calls")
        if verdict is None and isinstance(tools, list) and tools:
            args = tool_arguments(tools)
            texts.append(args)
            v, _ = judge(args)
            top = max(top, v.score)
            if v.blocked:
                verdict = v
        if verdict is not None:
            for name, rel in releasable.items():
                msg[name] = rel
            msg.pop("tool_calls", None)
            ch["finish_reason"] = FILTERED
            blocked = blocked or verdict
    return blocked, top, "\n".join(texts)
