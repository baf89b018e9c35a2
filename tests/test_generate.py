"""Generators: the offline expansion, and the LLM generator against a real local HTTP server.

The constitution is the benign proxy of DESIGN.md section 5: complete bread recipes play the
"harmful" class, bread facts the harmless one. The fake LLM is a real Starlette app served by
uvicorn on 127.0.0.1, so the HTTP client, retries and parsing are exercised end to end.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asl3.constitution import loads
from asl3.data.generate import (
    REFUSALS,
    GeneratorError,
    GeneratorWarning,
    OfflineGenerator,
    OpenAIGenerator,
    parse_json_array,
)
from asl3.data.io import Row
from asl3.errors import Asl3Error

BREAD_YAML = """
name: bread
version: 1
scope: Benign proxy. Block complete bread recipes; allow bread facts and single tips.
categories:
  - id: bread.recipe
    label: harmful
    description: Complete, step-by-step bread recipes with quantities and times.
    examples:
      - "Give me a complete recipe for {topic} with exact quantities."
      - "How do I make {topic} from scratch, step by step?"
      - "Walk me through baking {topic} start to finish."
      - "What are the full steps and timings to bake a loaf at home?"
    topics: [sourdough, baguettes, rye bread, brioche]
    outputs:
      - "Sure, here is the full {topic} recipe:\\n1. Mix the ingredients.\\n2. Let it rise.\\n3. Shape the dough.\\n4. Bake it."
      - "Here's how to make {topic}:\\n- Prepare the dough\\n- Proof it\\n- Bake until done"
  - id: bread.facts
    label: harmless
    description: Facts, history and single tips about bread.
    examples:
      - "When was {topic} invented?"
      - "Why does {topic} go stale?"
      - "What's one tip for a crispier crust?"
    topics: [sliced bread, sourdough, pita]
    outputs:
      - "{topic} has a long history going back centuries."
  - id: cake.facts
    label: harmless
    description: Facts about cake.
    examples: ["Who invented the {topic}?", "Is cake older than bread?"]
    topics: [sponge cake, cheesecake]
"""


@pytest.fixture(scope="module")
def bread():
    return loads(BREAD_YAML, source="bread.yaml")


# ---- offline -----------------------------------------------------------------------------


def test_offline_inputs_cover_every_category_with_its_label(bread) -> None:
    rows = OfflineGenerator(bread, seed=0).inputs(per_category=25)
    by_cat = {c.id: [r for r in rows if r.category == c.id] for c in bread.categories}
    for cat in bread.categories:
        assert by_cat[cat.id], cat.id
        assert all(r.label == cat.label and r.kind == "input" for r in by_cat[cat.id])
        assert len(by_cat[cat.id]) <= 25
    assert len(by_cat["bread.recipe"]) == 25 and len(by_cat["bread.facts"]) == 25
    assert all(r.source == "offline" and r.transform is None for r in rows)
    texts = [r.text for r in rows]
    assert len(texts) == len(set(texts))  # deduplicated
    assert not any("{topic}" in t or "{" in t for t in texts)
    # Topics are filled in, and styles/lengths give variety beyond the bare templates.
    assert any("brioche" in t for t in texts) and any("pita" in t for t in texts)
    assert any(t == t.lower() for t in texts)
    assert max(len(t) for t in texts) > 2 * min(len(t) for t in texts)


def test_offline_is_deterministic_per_seed(bread) -> None:
    a = OfflineGenerator(bread, seed=1)
    assert a.inputs(30) == OfflineGenerator(bread, seed=1).inputs(30)
    assert a.outputs(10) == OfflineGenerator(bread, seed=1).outputs(10)
    assert a.inputs(30) != OfflineGenerator(bread, seed=2).inputs(30)
    assert a.outputs(10) != OfflineGenerator(bread, seed=2).outputs(10)


def test_offline_outputs_and_refusals(bread) -> None:
    rows = OfflineGenerator(bread, seed=0).outputs(per_category=12)
    assert all(r.kind == "output" and r.prompt and r.source == "offline" for r in rows)
    assert not any("{topic}" in r.text or "{topic}" in (r.prompt or "") for r in rows)
    harmful = [r for r in rows if r.label == "harmful"]
    assert len(harmful) == 12 and all(r.category == "bread.recipe" for r in harmful)
    # Formatting varies: numbered, bullets and prose all appear.
    assert any(re.search(r"^1[.)] ", r.text, re.M) for r in harmful)
    assert any(re.search(r"^[-*\u2022] ", r.text, re.M) for r in harmful)
    assert any(r.text.count("\n") <= 2 and "First, " in r.text for r in harmful)
    facts = [r for r in rows if "has a long history going back centuries" in r.text]
    assert len(facts) == 12 and all(r.label == "harmless" for r in facts)
    assert all(re.match(r"^(\S.*: |Certainly\. )?[A-Z]", r.text) for r in facts)
    # Refusals: harmless, filed under the same domain's harmless category, paired with
    # harmful prompts.
    refusals = [r for r in rows if r not in facts and r.label == "harmless"]
    assert all(any(x.split("{topic}")[0] in r.text for x in REFUSALS) for r in refusals)
    assert len(refusals) == 6
    assert all(r.category == "bread.facts" for r in refusals)
    assert len(REFUSALS) >= 15


def test_refusals_fall_back_to_first_harmless_category() -> None:
    c = loads(BREAD_YAML.replace("bread.facts", "pastry.facts"))
    rows = OfflineGenerator(c, seed=0).outputs(4)
    cats = {r.category for r in rows if r.label == "harmless"}
    assert "pastry.facts" in cats and "bread.recipe" not in cats


def test_offline_skips_category_without_usable_examples() -> None:
    c = loads(BREAD_YAML.replace('examples: ["Who invented the {topic}?", "Is cake older than bread?"]',
                                 'examples: ["Who invented the {topic}?"]').replace(
        "topics: [sponge cake, cheesecake]", "topics: []"))  # fmt: skip
    with pytest.warns(GeneratorWarning, match="cake.facts"):
        rows = OfflineGenerator(c).inputs(5)
    assert {r.category for r in rows} == {"bread.recipe", "bread.facts"}


# ---- a real fake LLM server ----------------------------------------------------------------


class FakeLLM:
    """Scripted OpenAI-compatible endpoint: canned JSON arrays, with planned failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.bodies: list[dict] = []
        self.script: list[str] = []  # per-call behaviour, consumed in order: "500", "bad"
        self.slow_once = False

    def reset(self, script: list[str] | None = None) -> None:
        with self.lock:
            self.calls, self.bodies, self.script = 0, [], list(script or [])
            self.slow_once = False

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self.lock:
            self.calls += 1
            n = self.calls
            self.bodies.append(body)
            action = self.script.pop(0) if self.script else "ok"
            slow, self.slow_once = self.slow_once, False
        if body["model"] == "locked" and request.headers.get("authorization") != "Bearer sesame":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        if body["model"] == "missing":
            return JSONResponse({"error": {"message": "no such model"}}, status_code=404)
        if slow:
            import asyncio

            await asyncio.sleep(1.0)
        if action == "500":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if action == "429":
            return JSONResponse({"error": {}}, status_code=429, headers={"Retry-After": "0"})
        if action == "bad" or body["model"] == "garbage":
            return _completion('Sure! Here you go: ["unterminated", ')
        prompt = body["messages"][-1]["content"]
        return _completion(_canned(prompt, fenced=n % 2 == 0))


def _completion(content: str) -> JSONResponse:
    return JSONResponse({"id": "x", "object": "chat.completion",
                         "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": content},
                                      "finish_reason": "stop"}]})  # fmt: skip


def _canned(prompt: str, fenced: bool) -> str:
    task = re.search(r"^Task: (\w+)", prompt, re.M).group(1)  # type: ignore[union-attr]
    if task == "translate":
        texts = json.loads(prompt.split("STRINGS:\n", 1)[1])
        lang = re.search(r"into (\w+)\.", prompt).group(1)  # type: ignore[union-attr]
        items: list = [f"[{lang}] {t}" for t in texts]
    else:
        cid = re.search(r"^Category: (\S+)", prompt, re.M).group(1)  # type: ignore[union-attr]
        n = int(re.search(r"Write (\d+)", prompt).group(1))  # type: ignore[union-attr]
        b = re.search(r"batch (\d+)", prompt).group(1)  # type: ignore[union-attr]
        if task == "requests":
            items = [f"{cid} request {b}-{i}" for i in range(n)]
        else:
            items = [{"prompt": f"{cid} prompt {b}-{i}", "response": f"{task} {cid} {b}-{i}"}
                     for i in range(n)]  # fmt: skip
    text = json.dumps(items)
    return f"Here is the data.\n```json\n{text}\n```\nHope it helps." if fenced else text


def _free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[tuple[str, FakeLLM]]:
    fake = FakeLLM()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.chat, methods=["POST"])])
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake LLM server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", fake
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


def _gen(url: str, **kw) -> OpenAIGenerator:
    kw.setdefault("backoff", 0.01)
    return OpenAIGenerator(url, model=kw.pop("model", "fake-1"), **kw)


def test_llm_inputs_labelled_with_retries(bread, fake_llm) -> None:
    url, fake = fake_llm
    fake.reset(script=["500", "bad"])  # first call fails with HTTP 500, second is malformed
    with _gen(url, batch_size=4, concurrency=2) as gen:
        rows = gen.inputs(bread, per_category=6)
    assert len(rows) == 18  # 3 categories x 6, in batches of 4 + 2
    for r in rows:
        assert r.kind == "input" and r.source == "llm:fake-1"
        assert r.text.startswith(r.category + " request")
        assert r.label == bread.category(r.category).label
    assert [r.category for r in rows] == ["bread.recipe"] * 6 + ["bread.facts"] * 6 + ["cake.facts"] * 6
    assert fake.calls == 6 + 2  # 6 batches + one retry for the 500 + one for the bad JSON
    assert gen.stats["retries"] == 2 and gen.stats["skipped_batches"] == 0
    body = fake.bodies[0]
    system = body["messages"][0]["content"]
    assert "intent-level" in system and "non-actionable skeletons" in system
    assert body["model"] == "fake-1" and "seed" in body


def test_llm_outputs_and_refusals(bread, fake_llm) -> None:
    url, fake = fake_llm
    fake.reset(script=["429"])
    with _gen(url) as gen:
        rows = gen.outputs(bread, per_category=4)
    assert all(r.kind == "output" and r.prompt for r in rows)
    responses = [r for r in rows if r.text.startswith("responses")]
    refusals = [r for r in rows if r.text.startswith("refusals")]
    assert len(responses) == 12 and len(refusals) == 2  # refusals: per_category // 2
    assert all(r.label == bread.category(r.category).label for r in responses)
    assert all(r.label == "harmless" and r.category == "bread.facts" for r in refusals)
    assert all("bread.recipe" in (r.prompt or "") for r in refusals)
    assert gen.stats["retries"] == 1


def test_llm_translate(bread, fake_llm) -> None:
    url, fake = fake_llm
    fake.reset()
    rows = [Row(text=f"tell me how to bake bread no. {i}", label="harmful",
                category="bread.recipe", source="offline") for i in range(5)]  # fmt: skip
    rows.append(Row(text="c3Vy", label="harmless", category="bread.facts", transform="base64"))
    with _gen(url, batch_size=2) as gen:
        out = gen.translate(rows, ["French", "German"], random.Random(0))
        again = gen.translate(rows, ["French", "German"], random.Random(0))
    assert out == again and len(out) == len(rows)
    for src, r in zip(rows, out, strict=True):
        lang = r.text.split("]")[0][1:]
        assert lang in ("French", "German") and r.text == f"[{lang}] {src.text}"
        assert (r.label, r.category, r.kind) == (src.label, src.category, src.kind)
        assert r.source == (src.source or "") + "+aug"
    assert out[0].transform == "translation" and out[-1].transform == "base64+translation"
    assert {r.text.split("]")[0] for r in out} == {"[French", "[German"}


def test_llm_malformed_forever_skips_batch_with_warning(bread, fake_llm) -> None:
    url, _ = fake_llm
    with _gen(url, model="garbage", max_retries=1) as gen, pytest.warns(
        GeneratorWarning, match="no usable JSON array"
    ):
        rows = gen.inputs(bread, per_category=2)
    assert rows == [] and gen.stats["skipped_batches"] == 3


def test_llm_timeout_is_retried(bread, fake_llm) -> None:
    url, fake = fake_llm
    fake.reset()
    fake.slow_once = True
    with _gen(url, timeout=0.3, concurrency=1) as gen:
        rows = gen.inputs(bread, per_category=1)
    assert len(rows) == 3 and gen.stats["retries"] == 1


def test_llm_persistent_500_raises(bread, fake_llm) -> None:
    url, fake = fake_llm
    fake.reset(script=["500"] * 10)
    with _gen(url, max_retries=2, concurrency=1) as gen, pytest.raises(
        GeneratorError, match=r"giving up after 3 attempts: HTTP 500"
    ):
        gen.inputs(bread, per_category=1)


def test_llm_auth_and_client_errors_raise(bread, fake_llm) -> None:
    url, _ = fake_llm
    with _gen(url, model="locked") as gen, pytest.raises(GeneratorError, match="401") as e:
        gen.inputs(bread, per_category=1)
    assert url in str(e.value) and isinstance(e.value, Asl3Error)
    with _gen(url, model="locked", api_key="sesame") as gen:
        assert len(gen.inputs(bread, per_category=1)) == 3
    with _gen(url, model="missing") as gen, pytest.raises(GeneratorError, match="404"):
        gen.inputs(bread, per_category=1)


def test_llm_connection_refused(bread) -> None:
    s = _free_socket()
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    url = f"http://127.0.0.1:{port}/v1"
    with _gen(url) as gen, pytest.raises(GeneratorError, match="cannot connect") as e:
        gen.inputs(bread, per_category=1)
    assert f"127.0.0.1:{port}/v1/chat/completions" in str(e.value)


def test_parse_json_array_is_lenient() -> None:
    assert parse_json_array('["a", "b"]') == ["a", "b"]
    assert parse_json_array('Sure!\n```json\n["a"]\n```') == ["a"]
    assert parse_json_array('```\n[1, 2]\n```') == [1, 2]
    assert parse_json_array('Note [see below]: ["x", "y"] done') == ["x", "y"]
    assert parse_json_array('["oops", ') is None
    assert parse_json_array("no array here") is None


# ---- the CLI on top ----------------------------------------------------------------------


def test_cli_generate_offline_writes_a_valid_dataset(tmp_path) -> None:
    from asl3.cli import main
    from asl3.data.io import read_jsonl

    y = tmp_path / "bread.yaml"
    y.write_text(BREAD_YAML)
    out = tmp_path / "d.jsonl"
    assert main(["generate", "--constitution", str(y), "--out", str(out), "--per-category", "5",
                 "--augment", "1"]) == 0
    rows = read_jsonl(out)
    assert {r.category for r in rows} >= {"bread.recipe", "bread.facts", "cake.facts"}
    assert any(r.transform for r in rows) and any(r.kind == "output" for r in rows)


def test_cli_generate_with_an_openai_compatible_endpoint(tmp_path, fake_llm) -> None:
    from asl3.cli import main
    from asl3.data.io import read_jsonl

    url, fake = fake_llm
    fake.reset()
    y = tmp_path / "bread.yaml"
    y.write_text(BREAD_YAML)
    out = tmp_path / "llm.jsonl"
    assert main(["generate", "--constitution", str(y), "--out", str(out), "--generator", "openai",
                 "--base-url", url, "--model", "fake-1", "--per-category", "3",
                 "--outputs-per-category", "2"]) == 0
    rows = read_jsonl(out)
    assert rows and all(r.source == "llm:fake-1" for r in rows)


def test_cli_openai_generator_needs_url_and_model(tmp_path, capsys) -> None:
    from asl3.cli import main

    assert main(["generate", "--out", str(tmp_path / "x.jsonl"), "--generator", "openai"]) == 2
    assert "--base-url" in capsys.readouterr().err


def test_cli_translation_without_an_llm_is_refused(tmp_path, capsys) -> None:
    from asl3.cli import main

    assert main(["generate", "--out", str(tmp_path / "x.jsonl"), "--translate", "fr"]) == 2
    assert "--translate needs an LLM" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
