"""StreamRelay and judge_completion: what of an upstream's response a client may see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asl3 import Guard
from asl3.classify.stream import split_stream
from asl3.data.io import read_jsonl
from asl3.gateway.relay import StreamRelay, judge_completion

PROXY = Path(__file__).parent / "proxy"
ROWS = list(read_jsonl(PROXY / "test.jsonl"))
RECIPE = next(r for r in ROWS if r.kind == "output" and r.label == "harmful")
BENIGN = next(r for r in ROWS if r.kind == "output" and r.label == "harmless")
PROMPT = "Tell me something about bread."


@pytest.fixture(scope="module")
def pguard(proxy_bundle) -> Guard:
    return Guard.load(proxy_bundle)


def relay(g: Guard) -> StreamRelay:
    return StreamRelay(lambda: g.monitor_output(PROMPT), lambda t: g.check_output(t, PROMPT))


def chunk(index: int = 0, finish: str | None = None, **delta) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                         "logprobs": {"content": [{"token": "x"}]}}]}


def run(r: StreamRelay, chunks: list[dict]) -> list[dict]:
    out = []
    for c in chunks:
        out += r.feed(c)
        if r.done:
            break
    return out + r.end({"id": "c"})


def text_of(out: list[dict], index: int = 0, field: str = "content") -> str:
    return "".join(ch["delta"].get(field) or "" for c in out for ch in c["choices"]
                   if ch["index"] == index)


def finishes(out: list[dict], index: int = 0) -> list[str]:
    return [ch["finish_reason"] for c in out for ch in c["choices"]
            if ch["index"] == index and ch["finish_reason"]]


def test_clean_text_is_passed_whole_and_logprobs_are_dropped(pguard):
    out = run(relay(pguard), [chunk(role="assistant", content="")]
              + [chunk(content=p) for p in split_stream(BENIGN.text)] + [chunk(finish="stop")])
    assert text_of(out) == BENIGN.text and finishes(out) == ["stop"]
    assert "logprobs" not in json.dumps(out)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_a_blocked_choice_ends_with_content_filter_and_only_released_text(pguard):
    r = relay(pguard)
    out = run(r, [chunk(content=p) for p in split_stream(RECIPE.text)] + [chunk(finish="stop")])
    sent = text_of(out)
    assert finishes(out) == ["content_filter"] and r.blocked is not None and r.done
    assert RECIPE.text.startswith(sent) and len(sent) < len(RECIPE.text) // 2


def test_reasoning_text_is_monitored_like_content(pguard):
    out = run(relay(pguard), [chunk(reasoning_content=p) for p in split_stream(RECIPE.text)])
    assert finishes(out) == ["content_filter"]
    assert len(text_of(out, field="reasoning_content")) < len(RECIPE.text) // 2


def _tool_chunks(args: str) -> list[dict]:
    first = chunk(tool_calls=[{"index": 0, "id": "t1", "type": "function",
                               "function": {"name": "save_note", "arguments": ""}}])
    parts = [chunk(tool_calls=[{"index": 0, "function": {"arguments": json.dumps(p)[1:-1]}}])
             for p in split_stream(args)]
    return [first, *parts, chunk(finish="tool_calls")]


def test_tool_call_arguments_are_held_and_judged_before_release(pguard):
    out = run(relay(pguard), _tool_chunks(RECIPE.text))
    assert "tool_calls" not in json.dumps(out) and finishes(out) == ["content_filter"]
    out = run(relay(pguard), _tool_chunks(BENIGN.text))
    calls = [ch["delta"]["tool_calls"] for c in out for ch in c["choices"] if "tool_calls" in ch["delta"]]
    assert len(calls) == len(split_stream(BENIGN.text)) + 1 and finishes(out) == ["tool_calls"]


def test_choices_are_judged_separately(pguard):
    recipe, benign = split_stream(RECIPE.text), split_stream(BENIGN.text)
    chunks = []
    for i in range(max(len(recipe), len(benign))):
        if i < len(recipe):
            chunks.append(chunk(0, content=recipe[i]))
        if i < len(benign):
            chunks.append(chunk(1, content=benign[i]))
    chunks += [chunk(0, finish="stop"), chunk(1, finish="stop")]
    out = run(relay(pguard), chunks)
    assert finishes(out, 0) == ["content_filter"] and finishes(out, 1) == ["stop"]
    assert text_of(out, 1) == BENIGN.text


def test_usage_chunks_pass_through(pguard):
    usage = {"id": "c", "choices": [], "usage": {"total_tokens": 3}}
    assert relay(pguard).feed(usage) == [usage]


def test_a_whole_completion_is_cut_to_its_releasable_text(pguard):
    resp = {"choices": [{"index": 0, "finish_reason": "stop", "logprobs": {},
                         "message": {"role": "assistant", "content": RECIPE.text,
                                     "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}},
                        {"index": 1, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": BENIGN.text}}]}
    v, top, text = judge_completion(resp, lambda t: pguard.check_output(t, PROMPT))
    c0, c1 = resp["choices"]
    assert v is not None and v.blocked and top >= v.threshold
    assert c0["finish_reason"] == "content_filter" and "tool_calls" not in c0["message"]
    assert RECIPE.text.startswith(c0["message"]["content"]) and "logprobs" not in c0
    assert c1["message"]["content"] == BENIGN.text and c1["finish_reason"] == "stop"
    assert RECIPE.text in text
