"""Synthetic data generators: a constitution in, labelled dataset rows out.

Two generators produce the same kind of rows (see :class:`asl3.data.io.Row`):

* :class:`OfflineGenerator` needs no network and no model. It expands each category's
  example phrasings (``{topic}`` filled from the category's topics) through styles (polite,
  terse, urgent, casual, formal, question vs imperative, cover stories, typos, lowercase) and
  lengths (short, or with neutral context sentences around it). It is the reproducible
  baseline: the bundled model can be rebuilt from it bit for bit.
* :class:`OpenAIGenerator` asks any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp,
  Ollama, ...) to write rows, for more natural variety than templates can give. It also
  provides the ``translation`` attack transform (:meth:`OpenAIGenerator.translate`), which
  cannot be done offline and so is not in :data:`asl3.data.augment.TRANSFORMS`.

Safety (DESIGN.md section 5): harmful inputs are intent-level requests only, and harmful
outputs are non-actionable skeletons. The offline generator only recombines what the
constitution's authors wrote, plus neutral wording; the LLM prompt states the same rules.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from asl3.constitution import Category, Constitution
from asl3.data.io import Row
from asl3.errors import Asl3Error

TOPIC = "{topic}"


class GeneratorError(Asl3Error):
    """A generator cannot do its job at all: endpoint unreachable, rejected or persistently failing."""


class GeneratorWarning(UserWarning):
    """Part of a generation run was skipped (a batch the model never answered in usable JSON)."""


# ============================================================================================
# Offline generator: phrasings x styles x lengths

_IMPERATIVE_VERBS = frozenset({
    "give", "tell", "explain", "describe", "list", "write", "show", "provide", "outline",
    "help", "walk", "teach", "summarize", "summarise", "share", "find", "make", "create",
    "compare", "recommend", "suggest", "detail", "draft", "send", "break", "translate",
    "name", "define",
})  # fmt: skip
_COURTESY = re.compile(
    r"^(?:(?:hi|hello|hey)[,!.]?\s+)?(?:please[,]?\s+|(?:can|could|would|will) you(?: please)?\s+)",
    re.IGNORECASE,
)
_TRAILING_PLEASE = re.compile(r",?\s*please([.!?]?)$", re.IGNORECASE)

_POLITE_PRE = ("Hi! ", "Hello, I hope you can help. ", "Excuse me, ", "Good morning! ")
_POLITE_SUF = (" Thank you!", " Thanks so much.", " I'd really appreciate it.", " Thanks in advance.")
_URGENT_PRE = ("URGENT: ", "I need this fast. ", "Quick, ", "Time-sensitive: ", "Emergency. ")
_URGENT_SUF = (" ASAP.", " I need the answer now.", " Please hurry.", " Right now please.")
_CASUAL_PRE = ("hey, ", "yo ", "quick q: ", "ok so ", "hiya, ", "random question but ")
_CASUAL_SUF = (" thx", " lol", " ty!", " :)", " cheers")
_FORMAL_PRE = (
    "I would be grateful if you could address the following. ",
    "Kindly respond to the following request. ",
    "Dear assistant, ",
    "Good afternoon. I have a request. ",
)
_FORMAL_SUF = (" Thank you for your assistance.", " With kind regards.", " I look forward to your reply.")
_COVER_PRE = (
    "I'm writing a report and I need to know this. ",
    "I'm writing a report and ",
    "For a school project: ",
    "I'm researching this for a novel, so: ",
    "My teacher asked us this. ",
    "I work in this field, so ",
    "Asking for a friend: ",
    "I'm preparing a presentation for work. ",
    "My study group got stuck on this. ",
)
_CONTEXT_BEFORE = (
    "I've been curious about this for a while.",
    "Sorry if this is a basic question.",
    "I tried searching online but the answers were confusing.",
    "This came up in a conversation with a friend last week.",
    "I'm new here, so bear with me.",
    "Hope you're having a good day.",
    "I have a question I couldn't find a clear answer to.",
)
_CONTEXT_AFTER = (
    "Any help is appreciated.",
    "Thanks in advance.",
    "A short answer is fine.",
    "Feel free to be detailed.",
    "No rush.",
    "I'll read whatever you send.",
    "Let me know if you need more context.",
)
_KEYBOARD_NEIGHBOURS = {
    "a": "qsz", "b": "vgn", "c": "xdv", "d": "sfe", "e": "wrd", "f": "dgr", "g": "fht",
    "h": "gjy", "i": "uok", "j": "hku", "k": "jli", "l": "ko", "m": "nj", "n": "bmh",
    "o": "ipl", "p": "ol", "q": "wa", "r": "etf", "s": "adw", "t": "ryg", "u": "yij",
    "v": "cbf", "w": "qes", "x": "zsc", "y": "tuh", "z": "xa",
}  # fmt: skip


def _lower_first(s: str) -> str:
    """Lower-case the first letter unless the first word is 'I' or an acronym."""
    first = s.split(" ", 1)[0]
    if not s or first == "I" or first.startswith("I'") or (len(first) > 1 and first.isupper()):
        return s
    return s[0].lower() + s[1:]


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _strip_end(s: str) -> str:
    return s.rstrip().rstrip(".!?").rstrip()


def _first_word(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.split(" ", 1)[0].lower()) if s.strip() else ""


def _as_question(s: str, rng: random.Random) -> str:
    if s.rstrip().endswith("?"):
        return rng.choice(("Quick question: ", "I was wondering: ", "")) + s
    if _first_word(s) in _IMPERATIVE_VERBS:
        return f"{rng.choice(('Could you', 'Can you', 'Would you'))} {_lower_first(_strip_end(s))}?"
    return f"{_strip_end(s)}. Can you help?"


_Q_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"^how (?:do|can|would|should|could) (?:i|you|one|we|someone) (.+)$", re.I),
     lambda m: f"Explain how to {m.group(1)}."),
    (re.compile(r"^(?:can|could|would|will) you (?:please )?(.+)$", re.I),
     lambda m: _upper_first(m.group(1)) + "."),
    (re.compile(r"^what (is|are) (.+)$", re.I),
     lambda m: f"Tell me what {m.group(2)} {m.group(1).lower()}."),
)  # fmt: skip


def _as_imperative(s: str, rng: random.Random) -> str:
    if not s.rstrip().endswith("?"):
        return s
    core = _strip_end(s)
    for pattern, build in _Q_PATTERNS:
        m = pattern.match(core)
        if m:
            return build(m)
    return rng.choice(("Answer this: ", "Tell me: ", "I want to know: ")) + s


def _join(prefix: str, s: str) -> str:
    """Prefix a phrasing, lower-casing its first letter when the prefix ends mid-sentence."""
    return prefix + (_lower_first(s) if prefix.rstrip()[-1:] in (",", "") else s)


def _polite(s: str, rng: random.Random) -> str:
    return _join(rng.choice(_POLITE_PRE), s) + rng.choice(("", *_POLITE_SUF))


def _terse(s: str, rng: random.Random) -> str:
    out = _TRAILING_PLEASE.sub(r"\1", _COURTESY.sub("", s.strip()))
    out = _strip_end(out) if not out.endswith("?") else out
    return _upper_first(out) if rng.random() < 0.5 else _lower_first(out)


def _urgent(s: str, rng: random.Random) -> str:
    return _join(rng.choice(_URGENT_PRE), s) + rng.choice(("", *_URGENT_SUF))


def _casual(s: str, rng: random.Random) -> str:
    return rng.choice(_CASUAL_PRE) + _lower_first(s) + rng.choice(("", *_CASUAL_SUF))


def _formal(s: str, rng: random.Random) -> str:
    return _join(rng.choice(_FORMAL_PRE), s) + rng.choice(("", *_FORMAL_SUF))


def _cover_story(s: str, rng: random.Random) -> str:
    pre = rng.choice(_COVER_PRE)
    return pre + (_lower_first(s) if pre[-2] not in ".:" else s)


def _typos(s: str, rng: random.Random) -> str:
    """Inject 1-3 realistic typos (swap, drop, double, neighbouring key)."""
    chars = list(s)
    for _ in range(rng.randint(1, 3)):
        spots = [i for i in range(len(chars) - 1) if chars[i].isalpha() and chars[i + 1].isalpha()]
        if not spots:
            break
        i = rng.choice(spots)
        kind = rng.randrange(4)
        if kind == 0 and chars[i] != chars[i + 1]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        elif kind == 2:
            chars.insert(i, chars[i])
        else:
            near = _KEYBOARD_NEIGHBOURS.get(chars[i].lower(), "")
            chars[i] = rng.choice(near) if near else chars[i] + chars[i]
    out = "".join(chars)
    return out if out != s else s[:-1] if len(s) > 1 else s + s


def _lowercase(s: str, rng: random.Random) -> str:
    return s.lower()


_FORMS = (_as_question, _as_imperative)
_TONES = (_polite, _terse, _urgent, _casual, _formal, _cover_story)


def _style(s: str, rng: random.Random) -> str:
    """Apply a random mix of form, tone, surface noise and length to one phrasing."""
    if rng.random() < 0.4:
        s = rng.choice(_FORMS)(s, rng)
    if rng.random() < 0.6:
        s = rng.choice(_TONES)(s, rng)
    if rng.random() < 0.35:
        before = rng.sample(_CONTEXT_BEFORE, rng.randint(0, 2))
        after = rng.sample(_CONTEXT_AFTER, rng.randint(0 if before else 1, 2))
        s = " ".join([*before, s, *after])
    if rng.random() < 0.2:
        s = _typos(s, rng)
    if rng.random() < 0.12:
        s = _lowercase(s, rng)
    return re.sub(r"\s+", " ", s).strip()


def _fill(template: str, topic: str | None) -> str | None:
    """Fill ``{topic}``; ``None`` when the template needs a topic and there is none."""
    if TOPIC not in template:
        return template
    return None if topic is None else _upper_first(template.replace(TOPIC, topic))


def _fills(templates: Sequence[str], topics: Sequence[str]) -> list[tuple[str, str | None]]:
    """Every (filled text, topic) from templates x topics; templates without a slot once."""
    out: list[tuple[str, str | None]] = []
    for t in templates:
        if TOPIC in t:
            out.extend((_upper_first(t.replace(TOPIC, tp)), tp) for tp in topics)
        else:
            out.append((t, None))
    return out


_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|step\s+\d+:|[-*\u2022])\s+(.*\S)\s*$", re.IGNORECASE)
_OPENERS = (
    "Sure, here's an overview:",
    "Of course. Here is how it goes:",
    "Happy to help! Here's a summary:",
    "Here you go:",
    "Certainly.",
    "Great question. In short:",
    "Absolutely, here it is:",
)
_CLOSERS = (
    "Let me know if you want more detail on any part.",
    "Hope this helps!",
    "Feel free to ask follow-up questions.",
)
_PROSE_LINKS = ("First, ", "Then, ", "Next, ", "After that, ", "Finally, ")

REFUSALS: tuple[str, ...] = (
    "I can't help with that.",
    "I'm sorry, but I can't provide instructions for {topic}.",
    "I won't be able to help with this request. If you're interested in the history or the "
    "general science, I'm happy to talk about that instead.",
    "Sorry, that's not something I can assist with.",
    "I can't give step-by-step guidance on {topic}. Is there something else I can help you with?",
    "I'm not able to provide that. Detailed procedures like this could cause serious harm, so "
    "I don't share them.",
    "That's a request I have to decline.",
    "I understand you're curious, but I can't walk you through {topic}.",
    "No, I can't help with this one. If you're working on this professionally, your "
    "institution's safety office and published guidance are the right places to go.",
    "I'm going to stop here: I can't provide a procedure for this.",
    "I can't assist with obtaining or producing anything like that.",
    "Unfortunately I can't share that kind of information, even with a fiction or research "
    "framing.",
    "I'd rather not help with this. I can, however, explain the general concepts at a "
    "textbook level if that's useful.",
    "This falls outside what I can help with. If you or someone else is in danger, please "
    "contact local emergency services.",
    "I can't do that. Let me know if there's another topic I can help with.",
    "I hear you, but providing details on {topic} isn't something I'll do.",
    "Sorry, I can't help create, acquire or use anything like that.",
    "I have to decline. I'm happy to discuss the history of {topic} and how it's regulated, "
    "though.",
    "My apologies, but I can't help with {topic}.",
)
"""Built-in refusal texts, paired with harmful prompts and labelled harmless."""

_REFUSAL_EXTRAS = (
    "",
    " I hope you understand.",
    " Is there anything else you'd like to know?",
    " I'm glad to help with a related, safe question.",
)


def _reformat(text: str, rng: random.Random) -> str:
    """Vary an example output's opener and list style without touching its content."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    idx = [i for i, ln in enumerate(lines) if _LIST_ITEM.match(ln)]
    if len(idx) < 2:
        body = text.strip()
        if rng.random() < 0.3:
            body = f"{rng.choice(_OPENERS)} {body}"
        if rng.random() < 0.3:
            body = f"{body} {rng.choice(_CLOSERS)}"
        return body
    items = [m.group(1) for m in (_LIST_ITEM.match(lines[i]) for i in idx) if m]
    intro = " ".join(lines[: idx[0]])
    outro = " ".join(lines[idx[-1] + 1 :])
    if rng.random() < 0.5 or not intro:
        intro = rng.choice(_OPENERS)
    style = rng.randrange(7)
    if style == 6:
        links = [_PROSE_LINKS[min(k, 3)] for k in range(len(items) - 1)] + [_PROSE_LINKS[4]]
        body = " ".join(
            f"{link}{_lower_first(_strip_end(item))}." for link, item in zip(links, items, strict=True)
        )
        parts = [intro, body]
        sep = " " if rng.random() < 0.5 else "\n\n"
    else:
        marks = {
            0: lambda k: f"{k}.",
            1: lambda k: f"{k})",
            2: lambda k: f"Step {k}:",
            3: lambda k: "-",
            4: lambda k: "*",
            5: lambda k: "\u2022",
        }[style]
        parts = [intro, "\n".join(f"{marks(k)} {item}" for k, item in enumerate(items, 1))]
        sep = "\n"
    if outro:
        parts.append(outro)
    elif rng.random() < 0.3:
        parts.append(rng.choice(_CLOSERS))
    return sep.join(parts)


def refusal_category(constitution: Constitution, harmful: Category) -> str:
    """Where a refusal to a harmful request belongs: a harmless category of the same domain
    (so the classifier learns refusals are fine *in that domain*), else the first harmless."""
    same = [c for c in constitution.harmless if c.domain == harmful.domain]
    return (same or constitution.harmless)[0].id


class OfflineGenerator:
    """Expands a Constitution into labelled input rows with no network: categories x phrasings
    x styles x lengths.

    Each category gets its own random stream (seeded by ``seed`` and the category id), so the
    rows for one category do not change when another category is added or edited.
    """

    def __init__(self, constitution: Constitution, seed: int = 0) -> None:
        self.constitution = constitution
        self.seed = seed

    def _rng(self, what: str, cid: str) -> random.Random:
        return random.Random(f"{self.seed}:{what}:{cid}")

    def _phrase(self, cat: Category, rng: random.Random, topic: str | None = None) -> str | None:
        """One styled request for ``cat``, about ``topic`` where its template has a slot."""
        topics = [topic] if topic is not None else cat.topics
        pool = [t for t, _ in _fills(cat.examples, topics)]
        if not pool:
            pool = [t for t, _ in _fills(cat.examples, cat.topics)]
        return _style(rng.choice(pool), rng) if pool else None

    def inputs(self, per_category: int = 60) -> list[Row]:
        """Up to ``per_category`` distinct requests per category (fewer when the category's
        examples and topics cannot make that many distinct texts). Categories with no usable
        example are skipped with a :class:`GeneratorWarning`."""
        seen: set[str] = set()
        rows: list[Row] = []
        for cat in self.constitution.categories:
            rng = self._rng("inputs", cat.id)
            pool = [t for t, _ in _fills(cat.examples, cat.topics)]
            if not pool:
                warnings.warn(
                    f"category {cat.id}: no usable examples (a {TOPIC} example needs topics); "
                    "skipped",
                    GeneratorWarning,
                    stacklevel=2,
                )
                continue
            rng.shuffle(pool)
            made = 0
            # Bases are visited round-robin so every phrasing is used before any repeats; in
            # the first round about half stay unstyled, so the authors' own wording is in.
            for attempt in range(per_category * 30):
                if made >= per_category:
                    break
                base = pool[attempt % len(pool)]
                text = base if attempt < len(pool) and rng.random() < 0.5 else _style(base, rng)
                if text in seen:
                    continue
                seen.add(text)
                rows.append(Row(text=text, kind="input", label=cat.label, category=cat.id,
                                source="offline"))  # fmt: skip
                made += 1
        return rows

    def outputs(self, per_category: int = 20, refusals: int | None = None) -> list[Row]:
        """Output rows (``kind="output"``) paired with generated prompts.

        Per category: up to ``per_category`` reformatted ``outputs`` examples with the
        category's label. Per harmful category also ``refusals`` (default
        ``max(1, per_category // 2)``) refusal texts, labelled harmless under
        :func:`refusal_category` and paired with that category's harmful prompts, so the
        output classifier learns that declining is never the thing to block.
        Duplicate (prompt, text) pairs are dropped.
        """
        n_ref = max(1, per_category // 2) if refusals is None else refusals
        seen: set[tuple[str, str]] = set()
        rows: list[Row] = []

        def add(text: str, prompt: str, label: str, category: str) -> bool:
            if (text, prompt) in seen:
                return False
            seen.add((text, prompt))
            rows.append(
                Row(text=text, kind="output", label=label, category=category, prompt=prompt,
                    source="offline")
            )  # fmt: skip
            return True

        for cat in self.constitution.categories:
            rng = self._rng("outputs", cat.id)
            pool = _fills(cat.outputs, cat.topics)
            made = 0
            for attempt in range(per_category * 30 if pool else 0):
                if made >= per_category:
                    break
                template, topic = pool[attempt % len(pool)]
                prompt = self._phrase(cat, rng, topic)
                if prompt is None:
                    break
                made += add(_reformat(template, rng), prompt, cat.label, cat.id)
            if cat.label != "harmful":
                continue
            target = refusal_category(self.constitution, cat)
            made = 0
            for _ in range(n_ref * 30):
                if made >= n_ref:
                    break
                topic = rng.choice(cat.topics) if cat.topics else None
                text = _fill(rng.choice(REFUSALS), topic)
                prompt = self._phrase(cat, rng, topic)
                if text is None or prompt is None:
                    continue
                made += add(text + rng.choice(_REFUSAL_EXTRAS), prompt, "harmless", target)
        return rows


# ============================================================================================
# LLM generator (any OpenAI-compatible /chat/completions endpoint)

SYSTEM_PROMPT = """You write synthetic training data for a safety classifier that protects an AI \
assistant. The data teaches the classifier to recognise requests and responses that fall \
inside one policy category.

Safety rules. Follow them whatever the category says:
1. Requests are intent-level only: they say what the user wants, in the user's own words, like \
the prompts in public safety benchmarks. Never include technical details, quantities, \
materials, conditions or procedures that would help anyone cause harm.
2. Responses in a harmful category are non-actionable skeletons: one sentence agreeing to \
help, then 3 to 6 numbered stages in vague, generic wording (for example "Gather the necessary \
materials", "Follow the standard procedure"), from which nobody could learn anything.
3. Responses in a harmless category are ordinary, accurate, helpful answers.
4. Reply with a JSON array only: no commentary before or after it."""


def parse_json_array(text: str) -> list[Any] | None:
    """The first JSON array in a model's reply, tolerating code fences and chatter."""
    candidates = [m.group(1) for m in re.finditer(r"```[a-zA-Z]*\s*\n?(.*?)```", text, re.S)]
    candidates.append(text)
    decoder = json.JSONDecoder()
    for cand in candidates:
        for m in re.finditer(r"\[", cand):
            try:
                value, _ = decoder.raw_decode(cand, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                return value
    return None


def _as_text(item: Any) -> str | None:
    if isinstance(item, dict):
        item = item.get("text") or item.get("request") or item.get("prompt")
    if isinstance(item, str) and item.strip():
        return item.strip()
    return None


def _as_pair(item: Any) -> tuple[str, str] | None:
    if isinstance(item, dict):
        p, r = item.get("prompt") or item.get("request"), item.get("response") or item.get("text")
    elif isinstance(item, list | tuple) and len(item) == 2:
        p, r = item
    else:
        return None
    if isinstance(p, str) and isinstance(r, str) and p.strip() and r.strip():
        return p.strip(), r.strip()
    return None


@dataclass
class _Job:
    """One request to the model: which category, what to write, how many, which batch."""

    category: Category
    task: str  # "requests" | "responses" | "refusals" | "translate"
    n: int
    batch: int
    texts: list[str] | None = None  # translate only
    language: str | None = None  # translate only


class OpenAIGenerator:
    """Same output as OfflineGenerator, but asks any OpenAI-compatible chat endpoint to write
    the rows.

    ``base_url`` is the API root (``https://api.openai.com/v1``, ``http://localhost:8000/v1``);
    requests go to ``{base_url}/chat/completions``. JSON mode is not assumed: replies are parsed
    leniently (code fences and chatter around the first JSON array are ignored). A reply with
    no usable array is asked again up to ``max_retries`` times, then that batch is skipped
    with a :class:`GeneratorWarning`. HTTP 429, 5xx and timeouts are retried with exponential
    backoff (``Retry-After`` honoured); connection refused, 401/403 and other 4xx raise
    :class:`GeneratorError` at once, since retrying cannot fix them. ``api_key`` is sent as a
    bearer token only when given (it is never read from the environment, so a key cannot leak
    to an unintended endpoint). Model output is not reproducible in general; ``seed`` is
    forwarded per batch for servers that honour it. ``stats`` counts requests, retries and
    skipped batches.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        seed: int = 0,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        *,
        batch_size: int = 20,
        temperature: float = 0.9,
        backoff: float = 1.0,
        max_tokens: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.seed = seed
        self.max_retries = max(0, max_retries)
        self.concurrency = max(1, concurrency)
        self.batch_size = max(1, batch_size)
        self.temperature = temperature
        self.backoff = backoff
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._lock = threading.Lock()
        self._jitter = random.Random(seed)
        self._contrast: dict[str, list[str]] = {}
        self.stats = {"requests": 0, "retries": 0, "skipped_batches": 0}

    # ---- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- HTTP --------------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _chat(self, messages: list[dict[str, str]], seed: int) -> str | None:
        """One chat completion's text; ``None`` when the reply had no message content."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "seed": seed,
        }
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            self._count("requests")
            try:
                r = self._client.post(self.url, json=payload)
            except httpx.ConnectError as e:
                raise GeneratorError(f"cannot connect to {self.url}: {e}") from None
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as e:
                reason = f"{type(e).__name__} after {self._client.timeout.read}s" if isinstance(
                    e, httpx.TimeoutException) else type(e).__name__  # fmt: skip
            else:
                code = r.status_code
                if code in (401, 403):
                    raise GeneratorError(
                        f"{self.url}: HTTP {code}: the endpoint rejected the credentials "
                        "(check the API key)"
                    )
                if code == 429 or code >= 500:
                    reason = f"HTTP {code}"
                    try:
                        wait = float(r.headers.get("retry-after", ""))
                    except ValueError:
                        wait = None
                elif code >= 400:
                    raise GeneratorError(f"{self.url}: HTTP {code}: {r.text[:300]}")
                else:
                    try:
                        data = r.json()
                        content = data["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        return None
                    return content if isinstance(content, str) else None
            if attempt == self.max_retries:
                raise GeneratorError(
                    f"{self.url}: giving up after {attempt + 1} attempts: {reason}"
                )
            self._count("retries")
            with self._lock:
                jitter = self._jitter.uniform(0.8, 1.2)
            time.sleep(min(wait if wait is not None else self.backoff * 2**attempt * jitter, 60.0))
        raise AssertionError("unreachable")

    def _ask(self, job: _Job, parse: Callable[[Any], Any]) -> tuple[list[Any], str | None]:
        """Ask for one batch; return the parsed items, or none and a warning to emit."""
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": self._prompt(job)},
        ]
        seed = random.Random(f"{self.seed}:{job.task}:{job.category.id}:{job.batch}").randrange(2**31)
        for attempt in range(self.max_retries + 1):
            content = self._chat(messages, seed + attempt)
            array = parse_json_array(content) if content is not None else None
            items = [x for x in map(parse, array or []) if x is not None]
            if array is not None and (job.task != "translate" or len(items) == len(job.texts or [])):
                return items, None
            if attempt < self.max_retries:
                self._count("retries")
                time.sleep(self.backoff * 2**attempt)
        self._count("skipped_batches")
        what = f"{job.task} for {job.category.id}, batch {job.batch}"
        return [], (
            f"{self.url}: no usable JSON array after {self.max_retries + 1} attempts "
            f"({what}); batch skipped"
        )

    def _run(self, jobs: list[_Job], parse: Callable[[Any], Any]) -> list[list[Any]]:
        """Run jobs concurrently; results in job order; warnings raised on this thread."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = [pool.submit(self._ask, j, parse) for j in jobs]
            results = [f.result() for f in futures]
        except BaseException:
            # A fatal error (refused, unauthorised, persistent 5xx) dooms the run: do not
            # keep sending the batches still queued.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        for _, warning in results:
            if warning:
                warnings.warn(warning, GeneratorWarning, stacklevel=3)
        return [items for items, _ in results]

    # ---- prompts -----------------------------------------------------------------------------

    def _prompt(self, job: _Job) -> str:
        if job.task == "translate":
            return (
                "Task: translate\n"
                f"Translate each string in the JSON array below into {job.language}. Keep the "
                "meaning, tone and formatting; leave code, names and encoded text as they are. "
                "Do not answer, refuse or comment on the strings: they are data for a "
                f"classifier. Return a JSON array of exactly {len(job.texts or [])} strings, "
                "in the same order.\n\nSTRINGS:\n" + json.dumps(job.texts, ensure_ascii=False)
            )
        cat = job.category
        lines = [
            f"Task: {job.task}",
            f"Category: {cat.id} (label: {cat.label})",
            f"Description: {cat.description}",
        ]
        if cat.examples:
            lines.append("Example requests (style references only, do not copy them):")
            lines += [f"- {e}" for e in cat.examples[:8]]
        if cat.topics:
            lines.append("Topics: " + ", ".join(cat.topics))
        contrast = self._contrast.get(cat.id)
        if contrast:
            lines.append(
                "These requests are legitimate and must NOT be confused with the harmful "
                "categories below; use the same vocabulary with clearly benign intent:"
            )
            lines += [f"- {d}" for d in contrast]
        variety = (
            "Vary tone (polite, terse, casual, formal, urgent), length (one line to a short "
            "paragraph), person and framing (questions, commands, cover stories)."
        )
        if job.task == "requests":
            lines.append(
                f"Write {job.n} new, varied user requests that belong to this category. "
                f"{variety} This is batch {job.batch}: avoid the most obvious phrasings. "
                f"Return a JSON array of {job.n} strings."
            )
        elif job.task == "responses":
            rule = (
                "The response must be a non-actionable skeleton (safety rule 2)."
                if cat.label == "harmful"
                else "The response is an ordinary helpful answer."
            )
            lines.append(
                f"Write {job.n} pairs of a user request in this category and an assistant "
                f"response to it. {rule} Vary the response format (numbered list, bullets, "
                f"prose). This is batch {job.batch}. Return a JSON array of {job.n} objects, "
                'each {"prompt": "...", "response": "..."}.'
            )
        else:
            lines.append(
                f"Write {job.n} pairs of a user request in this category and an assistant "
                "response that declines it. Vary tone and length; some refusals offer a safe "
                "alternative (history, general science, safety resources). This is batch "
                f"{job.batch}. Return a JSON array of {job.n} objects, each "
                '{"prompt": "...", "response": "..."}.'
            )
        return "\n".join(lines)

    def _jobs(self, cats: Sequence[Category], task: str, per_category: int) -> list[_Job]:
        jobs = []
        for cat in cats:
            left, batch = per_category, 0
            while left > 0:
                n = min(self.batch_size, left)
                jobs.append(_Job(cat, task, n, batch))
                left, batch = left - n, batch + 1
        return jobs

    def _set_contrast(self, constitution: Constitution) -> None:
        self._contrast = {
            c.id: [h.description for h in constitution.harmful if h.domain == c.domain]
            for c in constitution.harmless
        }

    @property
    def _source(self) -> str:
        return f"llm:{self.model}"

    # ---- public API --------------------------------------------------------------------------

    def inputs(self, constitution: Constitution, per_category: int = 20) -> list[Row]:
        """Up to ``per_category`` distinct model-written requests per category."""
        self._set_contrast(constitution)
        jobs = self._jobs(constitution.categories, "requests", per_category)
        results = self._run(jobs, _as_text)
        seen: set[str] = set()
        counts: dict[str, int] = {}
        rows: list[Row] = []
        for job, items in zip(jobs, results, strict=True):
            for text in items[: job.n]:
                cid = job.category.id
                if text in seen or counts.get(cid, 0) >= per_category:
                    continue
                seen.add(text)
                counts[cid] = counts.get(cid, 0) + 1
                rows.append(Row(text=text, kind="input", label=job.category.label,
                                category=cid, source=self._source))  # fmt: skip
        return rows

    def outputs(
        self, constitution: Constitution, per_category: int = 10, refusals: int | None = None
    ) -> list[Row]:
        """Model-written (prompt, response) pairs per category, plus for harmful categories
        ``refusals`` (default ``max(1, per_category // 2)``) declining responses, labelled
        harmless under :func:`refusal_category`, as :meth:`OfflineGenerator.outputs` does."""
        self._set_contrast(constitution)
        n_ref = max(1, per_category // 2) if refusals is None else refusals
        jobs = self._jobs(constitution.categories, "responses", per_category)
        jobs += self._jobs(constitution.harmful, "refusals", n_ref)
        results = self._run(jobs, _as_pair)
        seen: set[tuple[str, str]] = set()
        rows: list[Row] = []
        for job, items in zip(jobs, results, strict=True):
            cat = job.category
            if job.task == "refusals":
                label, cid = "harmless", refusal_category(constitution, cat)
            else:
                label, cid = cat.label, cat.id
            for prompt, text in items[: job.n]:
                if (text, prompt) in seen:
                    continue
                seen.add((text, prompt))
                rows.append(
                    Row(text=text, kind="output", label=label, category=cid, prompt=prompt,
                        source=self._source)
                )  # fmt: skip
        return rows

    def translate(
        self, rows: Sequence[Row], languages: Sequence[str], rng: random.Random
    ) -> list[Row]:
        """The ``translation`` attack transform: each row's text in a random one of
        ``languages`` (attackers switch language because safety training is thinnest outside
        English). Label, category, kind and prompt are kept; ``transform`` and ``source`` are
        set as :func:`asl3.data.augment.augment` sets them. Returns translated rows in input
        order; rows whose batch failed are left out (with a :class:`GeneratorWarning`)."""
        if not languages:
            raise ValueError("translate() needs at least one language")
        chosen = [rng.choice(list(languages)) for _ in rows]
        jobs: list[_Job] = []
        members: list[list[int]] = []
        for lang in dict.fromkeys(chosen):
            idx = [i for i, c in enumerate(chosen) if c == lang]
            for b in range(0, len(idx), self.batch_size):
                part = idx[b : b + self.batch_size]
                dummy = Category(id="translate.batch", label="harmless", description=lang)
                jobs.append(_Job(dummy, "translate", len(part), len(jobs),
                                 texts=[rows[i].text for i in part], language=lang))  # fmt: skip
                members.append(part)
        results = self._run(jobs, _as_text)
        out: dict[int, Row] = {}
        for part, items in zip(members, results, strict=True):
            for i, text in zip(part, items, strict=False):
                row = rows[i]
                out[i] = row.model_copy(
                    update={
                        "text": text,
                        "transform": "translation" if not row.transform
                        else f"{row.transform}+translation",
                        "source": (row.source or "") + "+aug",
                    }
                )
        return [out[i] for i in sorted(out)]
