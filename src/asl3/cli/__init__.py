"""The `asl3` command: thin argument parsing and printing over the library.

Every command exits 0 on success and 2 on bad usage or bad input, with a one-line reason on
stderr (never a traceback). Long work shows a progress bar on stderr. Each command group of
the security tools lives in its own module here and registers itself with `add_parsers`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asl3.cli import allowlist as allowlist_cli
from asl3.cli import audit as audit_cli
from asl3.cli import change as change_cli
from asl3.cli import egress as egress_cli
from asl3.cli import vault as vault_cli
from asl3.cli.common import EXIT_BAD_INPUT, Parser, UsageError, add_as, fmt, progress_bar
from asl3.errors import Asl3Error

KEEP_ALIVE_S = 65.0  # uvicorn's default is 5 s, the same as httpx's idle expiry: a race

__all__ = ["EXIT_BAD_INPUT", "UsageError", "build_parser", "main", "progress_bar"]


# -- train ---------------------------------------------------------------------------------
def _llm_options(a: argparse.Namespace) -> dict[str, Any]:
    import os

    if a.generator == "openai" and not (a.base_url and a.model):
        raise UsageError("--generator openai needs --base-url URL and --model NAME")
    if a.translate and a.generator != "openai":
        raise UsageError("--translate needs an LLM: add --generator openai --base-url --model")
    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    if a.api_key_env and key is None:
        raise UsageError(f"environment variable {a.api_key_env} is not set")
    return {"generator": a.generator, "base_url": a.base_url, "model": a.model,
            "api_key": key, "translate": tuple(a.translate or ())}


def _add_llm_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("synthetic data source")
    g.add_argument("--generator", choices=["offline", "openai"], default="offline",
                   help="offline templates (default) or any OpenAI-compatible endpoint")
    g.add_argument("--base-url", metavar="URL", help="API root, e.g. http://localhost:8000/v1")
    g.add_argument("--model", metavar="NAME", help="model name at that endpoint")
    g.add_argument("--api-key-env", metavar="VAR",
                   help="read the API key from this environment variable (never a flag)")
    g.add_argument("--translate", nargs="*", metavar="LANG",
                   help="with --generator openai: also translate requests into these languages")


def cmd_generate(a: argparse.Namespace) -> int:
    from asl3 import constitution
    from asl3.classify.train import TrainConfig, synthesize
    from asl3.data.io import write_jsonl

    const = constitution.load(a.constitution)
    cfg = TrainConfig(constitution=a.constitution, seed=a.seed,
                      per_category_inputs=a.per_category, per_category_outputs=a.outputs_per_category,
                      **_llm_options(a))
    rows = synthesize(cfg, const)
    if a.augment:
        import random

        from asl3.data.augment import augment

        rows += augment(rows, random.Random(a.seed), per_row=a.augment, kinds=("input", "output"))
    n = write_jsonl(a.out, rows)
    print(json.dumps({"out": a.out, "rows": n,
                      "harmful": sum(r.label == "harmful" for r in rows),
                      "harmless": sum(r.label == "harmless" for r in rows)}))
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from asl3.classify.train import TrainConfig, train

    cfg = TrainConfig(constitution=a.constitution, data=a.data or [], calib=a.calib or [],
                      dev=a.dev or [], out=a.out, seed=a.seed,
                      target_fpr_input=a.target_fpr, target_fpr_output=a.target_fpr,
                      input_fpr_margin=a.input_fpr_margin,
                      calib_augment_per_row=a.calib_transforms, stage2=a.stage2,
                      **_llm_options(a))
    if not 0.0 <= a.target_fpr < 1.0:
        raise UsageError(f"--target-fpr must be at least 0 and below 1, got {a.target_fpr}")
    if not 0.0 < a.input_fpr_margin <= 1.0:
        raise UsageError(f"--input-fpr-margin must be above 0 and at most 1, "
                         f"got {a.input_fpr_margin}")
    if a.calib_transforms < 0:
        raise UsageError(f"--calib-transforms must be 0 or more, got {a.calib_transforms}")
    for f in [*cfg.data, *cfg.calib, *cfg.dev]:
        if not Path(f).is_file():
            raise UsageError(f"{f}: no such data file")
    with progress_bar(not a.quiet) as cb:
        m = train(cfg, cb)
    summary = {"out": a.out, "digest": m["digest"], "thresholds": m["thresholds"],
               "training": m["training"]}
    if "metrics" in m:
        summary["dev"] = _headline(m["metrics"])
    print(json.dumps(summary, indent=2))
    return 0


# -- check ---------------------------------------------------------------------------------
def _read_text_arg(text: str) -> str:
    if text != "-":
        return text
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"standard input is not valid UTF-8 (bad byte at offset {e.start})") from None


def cmd_check(a: argparse.Namespace) -> int:
    from asl3.guard import Guard

    text = _read_text_arg(a.text)
    if "\x00" in text:
        raise UsageError("input contains NUL bytes: binary data is not text; nothing was scored")
    guard = Guard.load(a.bundle, stage2=_STAGE2[a.stage2])
    if a.output:
        v, released = guard.check_output(text, prompt=a.prompt)
        out = {**v.to_dict(), "released_chars": len(released), "total_chars": len(text)}
    else:
        out = guard.check_input(text).to_dict()
    print(json.dumps(out))
    return 0


_STAGE2 = {"auto": None, "on": True, "off": False}


def _add_stage2_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage2", choices=list(_STAGE2), default="auto",
                   help="the bundle's second stage (MiniLM) for inputs: auto uses it when the "
                        "neural extra is installed (default), on requires it, off runs stage 1 "
                        "alone at its own threshold")


# -- eval ----------------------------------------------------------------------------------
def _headline(s: dict[str, Any]) -> dict[str, Any]:
    h: dict[str, Any] = {}
    for kind in ("input", "output"):
        if kind in s:
            k = s[kind]
            h[kind] = {"harmful_blocked": k["harmful"]["rate"], "harmless_fpr": k["harmless"]["rate"]}
            if kind == "output":
                h[kind]["median_released_before_halt"] = k["released_before_halt_chars"]["median"]
    return h


def cmd_eval(a: argparse.Namespace) -> int:
    from asl3.data.io import read_jsonl
    from asl3.eval.metrics import evaluate
    from asl3.guard import Guard

    rows = []
    for f in a.data:
        rows.extend(read_jsonl(f))
    if not rows:
        raise UsageError("the data files hold no rows")
    guard = Guard.load(a.bundle, stage2=_STAGE2[a.stage2])
    with progress_bar(not a.quiet) as cb:
        res = evaluate(guard, rows, progress=cb)
    s = res.summary()
    if "input" in s:
        s["input"]["stages"] = guard.stages
    if a.report:
        from asl3.eval.report import write_html

        write_html(a.report, s, title=f"asl3 eval ({guard.stages}): {', '.join(a.data)}")
    if a.json:
        print(json.dumps(s, indent=2))
    else:
        _print_table(s)
    return 0


def _print_table(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    stages = s.get("input", {}).get("stages")
    t = Table(title=f"asl3 eval (inputs judged by {stages})" if stages else "asl3 eval")
    for c in ("kind", "slice", "n", "blocked", "rate"):
        t.add_column(c)
    for kind, k in s.items():
        t.add_row(kind, "harmful (block rate)", *(str(k["harmful"][x]) for x in ("n", "blocked", "rate")))
        t.add_row(kind, "harmless (false positives)", *(str(k["harmless"][x]) for x in ("n", "blocked", "rate")))
        for fam, r in k["harmful_by_family"].items():
            t.add_row(kind, f"  harmful / family {fam}", str(r["n"]), str(r["blocked"]), str(r["rate"]))
        for fam, r in k["harmless_by_family"].items():
            t.add_row(kind, f"  harmless / family {fam}", str(r["n"]), str(r["blocked"]), str(r["rate"]))
        for src, r in k["harmless_by_source"].items():
            t.add_row(kind, f"  harmless / source {src}", str(r["n"]), str(r["blocked"]), str(r["rate"]))
        if kind == "output":
            rb = k["released_before_halt_chars"]
            t.add_row(kind, "released before halt (median chars)", "", "", str(rb["median"]))
        t.add_row(kind, "latency p50 / p99 ms", "", "", f"{k['latency_ms']['p50']} / {k['latency_ms']['p99']}")
    Console().print(t)


# -- serve ---------------------------------------------------------------------------------
def cmd_serve(a: argparse.Namespace) -> int:
    import os

    import uvicorn

    from asl3.gateway.config import GatewayConfig

    if a.workers < 1:
        raise UsageError("--workers must be at least 1")
    if not a.keep_alive > 0:
        raise UsageError("--keep-alive must be a positive number of seconds")
    cfg = GatewayConfig(
        upstream=a.upstream, upstream_key_env=a.upstream_key_env, bundle=a.bundle,
        stage2=_STAGE2[a.stage2], db=a.db, allow_anonymous=a.allow_anonymous,
        max_body_bytes=a.max_body, connect_timeout=a.connect_timeout,
        read_timeout=a.read_timeout, retain_text=a.retain_text, retention_days=a.retention_days,
        echo_delay=a.echo_delay, safeguards=a.safeguards,
        safeguards_trust=tuple(a.safeguards_trust or ()))
    where = f"http://{a.host}:{a.port}/v1"
    banner = (f"asl3 gateway: {where} -> upstream {cfg.upstream}; {a.workers} worker(s); "
              "Ctrl-C stops\n")
    level = "warning" if a.quiet else "info"
    if a.workers == 1:
        from asl3.gateway.app import create_app

        app = create_app(cfg)  # bad bundle, store or upstream settings fail here, in one line
        sys.stderr.write(banner)
        uvicorn.run(app, host=a.host, port=a.port, log_level=level,
                    timeout_keep_alive=a.keep_alive)
        return 0
    from asl3.classify.bundle import load_bundle
    from asl3.guard import default_bundle_path
    from asl3.store import Store

    bundle = load_bundle(cfg.bundle or default_bundle_path())  # fail early, before workers start
    if cfg.safeguards:
        from asl3.gateway.app import apply_safeguards
        from asl3.guard import Guard

        apply_safeguards(Guard(bundle, stage2=False), cfg.safeguards, cfg.safeguards_trust)
    Store(cfg.db).close()
    sys.stderr.write(banner)
    os.environ.update(cfg.to_env())
    uvicorn.run("asl3.gateway.app:create_app_from_env", factory=True, host=a.host, port=a.port,
                workers=a.workers, log_level=level, timeout_keep_alive=a.keep_alive)
    return 0


# -- keys ----------------------------------------------------------------------------------
def _parse_until(text: str) -> Any:
    """An exemption's end: an ISO date (00:00 UTC that day) or datetime (no zone = UTC)."""
    from datetime import datetime, timezone

    s = text.strip()
    try:
        t = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
    except ValueError:
        raise UsageError(f"--until {text!r} is not an ISO date (2026-12-31) or datetime "
                         "(2026-12-31T18:00:00Z)") from None
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    if t <= datetime.now(timezone.utc):
        raise UsageError(f"--until {text} is in the past: an exemption must end in the future")
    return t


def _key_exemptions(a: argparse.Namespace) -> list[Any]:
    """--exempt/--until as the store's ExemptionInfo, each category checked against the bundle's
    constitution: only categories it marks exemptible may be exempted, and always until a date."""
    from asl3.store import ExemptionInfo

    if not a.exempt:
        if a.until:
            raise UsageError("--until goes with --exempt CATEGORY")
        return []
    if not a.until:
        raise UsageError("--exempt needs --until DATE: exemptions always expire")
    until = _parse_until(a.until)
    from asl3.classify.bundle import load_bundle
    from asl3.guard import default_bundle_path

    cats = load_bundle(a.bundle or default_bundle_path()).categories
    exemptible = sorted(c for c, spec in cats.items() if spec.get("exemptible"))
    allowed = f"exemptible categories: {', '.join(exemptible) or 'none'}"
    for c in a.exempt:
        if c not in cats:
            raise UsageError(f"unknown category {c!r} in this bundle's constitution ({allowed})")
        if c not in exemptible:
            raise UsageError(f"category {c!r} is not exemptible ({allowed})")
    return [ExemptionInfo(c, until) for c in dict.fromkeys(a.exempt)]


def _exemptions_json(exemptions: Sequence[Any]) -> list[dict[str, str]]:
    return [{"category": e.category, "until": e.until.isoformat()} for e in exemptions]


def _key_audit(a: argparse.Namespace) -> tuple[Any, Any] | None:
    """(AuditLog, signing Identity) when an audit directory is given (--audit, else
    $ASL3_AUDIT_DIR), else None. Checked before the store changes: --as is required, its key
    must load and the directory must exist, so that a typo never leaves a key action unlogged."""
    import os

    directory = a.audit or os.environ.get("ASL3_AUDIT_DIR") or None
    if directory is None:
        if a.key:
            raise UsageError("--as signs the audit entry: give --audit DIR or set ASL3_AUDIT_DIR")
        return None
    where = "--audit" if a.audit else "ASL3_AUDIT_DIR"
    if not a.key:
        raise UsageError(f"{where} {directory}: key actions are logged there, signed: give "
                         "--as KEYFILE")
    if not Path(directory).is_dir():
        raise UsageError(f"{where} {directory}: no such directory for the audit log")
    from asl3.cli.common import load_identity
    from asl3.security.audit import AuditLog

    return AuditLog(directory), load_identity(a)


def _log_key_action(audit: tuple[Any, Any], action: str, subject: str,
                    details: dict[str, Any]) -> str | None:
    """Append the entry; None when it is logged, else why not (one line)."""
    log, actor = audit
    try:
        log.append(actor, action, subject, details)
    except Asl3Error as e:
        why = str(e)
    except OSError as e:
        why = f"{e.filename}: {e.strerror}" if e.filename else str(e)
    else:
        return None
    return " ".join(why.split())


def cmd_keys_add(a: argparse.Namespace) -> int:
    from asl3.store import Store

    exemptions = _key_exemptions(a)
    audit = _key_audit(a)
    with Store(a.db) as store:
        new = store.add_key(a.name, exemptions)
    failed = None
    if audit is not None:  # never the key or its hash: the prefix names it
        failed = _log_key_action(audit, "keys.add", new.name, {
            "prefix": new.prefix, "exemptions": _exemptions_json(exemptions),
            "store": store.url})
    if a.json:  # printed whatever the log says: a created key is never lost
        print(json.dumps({"name": new.name, "key": new.key, "prefix": new.prefix,
                          "exemptions": _exemptions_json(exemptions)}), flush=True)
    else:
        print(new.key, flush=True)
    if failed is not None:
        sys.stderr.write(f"asl3: key {new.prefix}... for {new.name!r} was created (store it now: "
                         f"it cannot be shown again) but NOT logged: {failed}\n")
        return EXIT_BAD_INPUT
    sys.stderr.write(f"asl3: store this key for {new.name!r} now: it cannot be shown again "
                     f"('asl3 keys list' shows it as {new.prefix}...)\n")
    return 0


def cmd_keys_list(a: argparse.Namespace) -> int:
    from asl3.store import Store

    with Store(a.db) as store:
        keys = store.list_keys()
    if a.json:
        print(json.dumps([{"name": k.name, "prefix": k.prefix, "created": k.created.isoformat(),
                           "revoked": k.revoked.isoformat() if k.revoked else None,
                           "exemptions": _exemptions_json(k.exemptions)} for k in keys], indent=2))
        return 0
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    now = datetime.now(timezone.utc)
    t = Table(title=f"asl3 keys ({store.url})")
    for c in ("name", "prefix", "created (UTC)", "status", "exemptions"):
        t.add_column(c)
    for k in keys:
        ex = ", ".join(f"{e.category} until {e.until:%Y-%m-%d %H:%M}"
                       + (" (expired)" if e.until <= now else "") for e in k.exemptions)
        status = f"revoked {k.revoked:%Y-%m-%d %H:%M}" if k.revoked else "active"
        t.add_row(k.name, f"{k.prefix}...", f"{k.created:%Y-%m-%d %H:%M}", status, ex or "-")
    Console().print(t)
    return 0


def cmd_keys_revoke(a: argparse.Namespace) -> int:
    from asl3.store import Store

    audit = _key_audit(a)
    with Store(a.db) as store:
        n = store.revoke(a.target)
    if n == 0:
        raise UsageError(f"no active key matches {a.target!r} (give a principal name or a key "
                         "prefix from 'asl3 keys list')")
    failed = None
    if audit is not None:
        failed = _log_key_action(audit, "keys.revoke", a.target,
                                 {"revoked": n, "store": store.url})
    if a.json:
        print(json.dumps({"target": a.target, "revoked": n}), flush=True)
    else:
        print(f"revoked {n} key{'s' if n != 1 else ''} matching {a.target!r}", flush=True)
    if failed is not None:
        sys.stderr.write(f"asl3: the keys were revoked but NOT logged: {failed}\n")
        return EXIT_BAD_INPUT
    return 0


def _add_audit_arguments(p: argparse.ArgumentParser) -> None:
    add_as(p, required=False, helptext="your private identity file: signs the audit entry "
           "(required with an audit directory)")
    p.add_argument("--audit", metavar="DIR",
                   help="append a signed entry to the audit log in DIR/audit/ (default: "
                        "$ASL3_AUDIT_DIR; without either, nothing is logged)")


def _add_db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="key store: sqlite:///FILE or "
                   "postgresql://USER@HOST/DB (default: $ASL3_DB or sqlite:///asl3.db)")



# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="asl3", formatter_class=fmt, description=(
        "ASL-3 safeguards: constitutional classifiers and their tools.\n\n"
        "examples:\n"
        "  asl3 check \"How do vaccines train the immune system?\"\n"
        "  asl3 eval --data data/dev/inputs.jsonl --report report.html\n"
        "  asl3 train --constitution cbrn --data data/train/inputs.jsonl --out my-bundle\n"
        "  asl3 vault status vault/"))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    t = sub.add_parser("train", help="train a classifier bundle from a constitution",
                       formatter_class=fmt, description=(
        "Expand a constitution into synthetic data (plus your seed files), augment it with\n"
        "jailbreak-style transforms, train the input and streaming output classifiers, and\n"
        "calibrate their thresholds on a separate harmless split to a target false-positive\n"
        "rate. Deterministic for a given --seed. With the neural extra installed, inputs also\n"
        "get a second stage (a MiniLM encoder and a small neural head) that only reads what the\n"
        "first stage finds suspicious; it has its own calibrated threshold (see --stage2).\n\n"
        "example (rebuilds the bundled default model):\n"
        "  asl3 train --constitution cbrn --data data/train/*.jsonl \\\n"
        "      --calib data/calib/*.jsonl --out src/asl3/models/default --seed 0\n\n"
        "--dev FILE... also evaluates the new bundle and records the metrics in its manifest\n"
        "(about 40 s more for the dev set); asl3 eval does the same afterwards."))
    t.add_argument("--constitution", default="cbrn", metavar="NAME|PATH",
                   help="bundled name (cbrn) or a YAML file (default: cbrn)")
    t.add_argument("--data", nargs="*", metavar="FILE", help="seed JSONL files (inputs and outputs)")
    t.add_argument("--calib", nargs="*", metavar="FILE",
                   help="harmless calibration JSONL (kept out of training); default: generated hold-out")
    t.add_argument("--dev", nargs="*", metavar="FILE", help="dev JSONL: metrics recorded in the manifest only")
    t.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--target-fpr", type=float, default=0.01, metavar="X",
                   help="target false-positive rate (default 0.01): outputs are calibrated to "
                        "it on the calibration split, inputs to X times --input-fpr-margin")
    t.add_argument("--input-fpr-margin", type=float, default=0.8, metavar="M",
                   help="inputs are calibrated at M times the target (default 0.8), because "
                        "traffic is not drawn from the calibration split: at exactly 1%%, "
                        "harmless dev inputs were blocked at 0.4-1.1%% across training seeds")
    t.add_argument("--calib-transforms", type=int, default=1, metavar="N",
                   help="jailbreak-style transformed copies of each harmless calibration input "
                        "calibrated on with the plain rows, so that harmless requests in a "
                        "persona frame or an encoding also hold the target rate (default 1; "
                        "0: plain rows only)")
    t.add_argument("--stage2", choices=["auto", "minilm", "none"], default="auto",
                   help="second stage for inputs: a MiniLM encoder with a small head, run "
                        "only on what stage 1 finds suspicious. auto trains it when the neural "
                        "extra is installed (default); minilm requires it; none leaves it out")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_llm_arguments(t)
    t.set_defaults(func=cmd_train)

    gn = sub.add_parser("generate", help="expand a constitution into a labelled JSONL dataset",
                        formatter_class=fmt, description=(
        "Write synthetic rows (categories x phrasings x styles x lengths) for a constitution,\n"
        "offline or with any OpenAI-compatible LLM, optionally with jailbreak-style augmentation.\n\n"
        "examples:\n"
        "  asl3 generate --constitution tests/proxy/bread.yaml --out bread.jsonl --augment 1\n"
        "  asl3 generate --constitution cbrn --out llm.jsonl --generator openai \\\n"
        "      --base-url http://localhost:8000/v1 --model my-model --translate fr de"))
    gn.add_argument("--constitution", default="cbrn", metavar="NAME|PATH")
    gn.add_argument("--out", required=True, metavar="FILE.jsonl")
    gn.add_argument("--seed", type=int, default=0)
    gn.add_argument("--per-category", type=int, default=60, metavar="N", help="inputs per category")
    gn.add_argument("--outputs-per-category", type=int, default=16, metavar="N")
    gn.add_argument("--augment", type=int, default=0, metavar="K",
                    help="add K transformed copies of every row (encodings, wrappers, noise)")
    _add_llm_arguments(gn)
    gn.set_defaults(func=cmd_generate)

    c = sub.add_parser("check", help="classify one text and print the verdict as JSON",
                       formatter_class=fmt, description=(
        "Classify TEXT (or standard input with '-') as a user request, or with --output as a\n"
        "model response to --prompt, streamed word by word. Prints the verdict as JSON.\n\n"
        "examples:\n"
        "  asl3 check \"What is the history of the Biological Weapons Convention?\"\n"
        "  echo 'some response' | asl3 check --output --prompt 'the question' -"))
    c.add_argument("text", metavar="TEXT|-")
    c.add_argument("--bundle", metavar="DIR", help="model bundle (default: the bundled model)")
    c.add_argument("--output", action="store_true", help="TEXT is a model response")
    c.add_argument("--prompt", help="the request the response answers (with --output)")
    _add_stage2_argument(c)
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("eval", help="measure a bundle on labelled JSONL data",
                       formatter_class=fmt, description=(
        "Block rate on harmful rows, false-positive rate on harmless rows, by category, transform\n"
        "and source; for outputs, harmful streams halted and characters released before the\n"
        "halt; latency.\n\n"
        "example:\n"
        "  asl3 eval --data data/dev/inputs.jsonl data/dev/outputs.jsonl --json --report dev.html"))
    e.add_argument("--data", nargs="+", required=True, metavar="FILE")
    e.add_argument("--bundle", metavar="DIR")
    e.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    e.add_argument("--report", metavar="FILE.html", help="also write an HTML report with plots")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_stage2_argument(e)
    e.set_defaults(func=cmd_eval)
    s = sub.add_parser("serve", help="run the guard gateway (an OpenAI-compatible proxy)",
                       formatter_class=fmt, description=(
        "Serve the OpenAI Chat Completions API in front of a model: prompts are checked before\n"
        "they reach it, generated text is checked as it streams and only released once judged;\n"
        "a block answers HTTP 400 (input) or ends the stream with finish_reason content_filter\n"
        "(output). Clients authenticate with keys from 'asl3 keys add'. Every decision goes to\n"
        "the event store (SQLite file by default, or PostgreSQL).\n\n"
        "examples:\n"
        "  asl3 serve --upstream echo --allow-anonymous          # demo model, no key needed\n"
        "  asl3 serve --upstream http://localhost:8001/v1 --db postgresql://asl3@localhost/asl3\n"
        "  curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \\\n"
        "       -d '{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'"))
    s.add_argument("--upstream", required=True, metavar="URL|echo",
                   help="the model server's OpenAI-compatible base URL (e.g. "
                        "http://localhost:8001/v1 for vLLM, llama.cpp or Ollama), or 'echo', a "
                        "built-in demo model that streams the last user message back")
    s.add_argument("--upstream-key-env", metavar="VAR",
                   help="environment variable with the upstream's API key, if it needs one")
    s.add_argument("--bundle", metavar="DIR", help="classifier bundle (default: the bundled model)")
    s.add_argument("--db", metavar="URL", help="event and key store: sqlite:///FILE or "
                   "postgresql://USER@HOST/DB (default: $ASL3_DB or sqlite:///asl3.db)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes (default 1); each loads its own classifier")
    s.add_argument("--allow-anonymous", action="store_true",
                   help="accept requests without an API key (off by default)")
    s.add_argument("--retain-text", choices=["none", "blocked", "all"], default="blocked",
                   help="which requests' texts the store keeps for offline review (default: "
                        "blocked ones)")
    s.add_argument("--retention-days", type=float, default=30.0, metavar="D",
                   help="erase stored texts older than D days (default 30)")
    s.add_argument("--max-body", type=int, default=2 * 1024 * 1024, metavar="BYTES",
                   help="largest request body accepted; bigger ones get 413 (default 2 MiB)")
    s.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="upstream connect timeout in seconds (default 5)")
    s.add_argument("--read-timeout", type=float, default=120.0, metavar="S",
                   help="longest wait for the upstream's next byte; then 504 (default 120)")
    s.add_argument("--keep-alive", type=float, default=KEEP_ALIVE_S, metavar="S",
                   help="how long an idle client connection stays open (default "
                        f"{KEEP_ALIVE_S:g}); longer than clients' own idle expiry (httpx and "
                        "the openai SDK: 5 s), so the client, not the gateway, closes idle "
                        "connections and a request never meets a connection closing under it")
    s.add_argument("--echo-delay", type=float, default=0.0, metavar="S",
                   help="seconds between the echo model's tokens (to watch streaming)")
    s.add_argument("--safeguards", metavar="DIR",
                   help="settings directory of 'asl3 change': refuse to start unless the bundle "
                        "is the approved one, apply approved threshold overrides, and honour key "
                        "exemptions only where a change approved them")
    s.add_argument("--safeguards-trust", nargs="+", metavar="PUBFILE",
                   help="with --safeguards: refuse to start unless the settings' roster "
                        "(change.json) was signed by one of these identities")
    s.add_argument("--quiet", action="store_true", help="log warnings only")
    _add_stage2_argument(s)
    s.set_defaults(func=cmd_serve)

    kp = sub.add_parser("keys", help="create, list and revoke the gateway's API keys",
                        formatter_class=fmt, description=(
        "API keys for 'asl3 serve'. A key is shown once, when it is created; the store keeps\n"
        "only its SHA-256 and a short prefix to name it by. A principal (NAME) may hold several\n"
        "keys. Exemptions belong to the principal, only for categories the bundle's constitution\n"
        "marks exemptible, and always expire.\n\n"
        "audit: security teams should set ASL3_AUDIT_DIR (or pass --audit DIR) so that every\n"
        "'keys add' and 'keys revoke' is signed (--as KEYFILE) and appended to the audit log\n"
        "('asl3 audit verify DIR'); without it, key actions are not logged. A logged exemption\n"
        "is still only a request: with 'asl3 serve --safeguards', exemptions count only where\n"
        "change management ('asl3 change') approved them.\n\n"
        "examples:\n"
        "  asl3 keys add alice\n"
        "  asl3 keys add lab-7 --exempt bio.acquisition --until 2026-12-31\n"
        "  asl3 keys list --db postgresql://asl3@localhost/asl3\n"
        "  asl3 keys revoke alice                  # or one key by prefix: asl3_AbCdEfG\n"
        "  ASL3_AUDIT_DIR=/srv/asl3/security asl3 keys add bob --as me.key"))
    ksub = kp.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=Parser,
                             required=True)
    ka = ksub.add_parser("add", help="create a key (printed once) for a principal",
                         formatter_class=fmt, description=(
        "Create an API key for principal NAME (created if new) and print it once.\n\n"
        "examples:\n"
        "  asl3 keys add alice\n"
        "  asl3 keys add lab-7 --exempt bio.acquisition --exempt bio.production \\\n"
        "      --until 2026-12-31 --json"))
    ka.add_argument("name", metavar="NAME", help="the principal (a person, team or service)")
    ka.add_argument("--exempt", action="append", metavar="CATEGORY",
                    help="exempt the principal from this exemptible category (repeatable; "
                         "needs --until)")
    ka.add_argument("--until", metavar="DATE",
                    help="when the exemptions end: ISO date (00:00 UTC that day) or datetime")
    ka.add_argument("--bundle", metavar="DIR",
                    help="bundle whose constitution lists the categories (default: bundled model)")
    _add_db_argument(ka)
    _add_audit_arguments(ka)
    ka.add_argument("--json", action="store_true", help="print name, key, prefix as JSON")
    ka.set_defaults(func=cmd_keys_add)
    kl = ksub.add_parser("list", help="list keys (prefixes only; keys are never stored)",
                         formatter_class=fmt, description=(
        "List every key with its principal, prefix, status and exemptions.\n\n"
        "example:\n"
        "  asl3 keys list --json"))
    _add_db_argument(kl)
    kl.add_argument("--json", action="store_true", help="print the list as JSON")
    kl.set_defaults(func=cmd_keys_list)
    kr = ksub.add_parser("revoke", help="revoke a principal's keys, or one key by prefix",
                         formatter_class=fmt, description=(
        "Revoke every key of principal NAME, or the one key whose prefix is PREFIX. The gateway\n"
        "stops accepting it within its key cache time (seconds).\n\n"
        "examples:\n"
        "  asl3 keys revoke alice\n"
        "  asl3 keys revoke asl3_AbCdEfG"))
    kr.add_argument("target", metavar="NAME|PREFIX")
    _add_db_argument(kr)
    _add_audit_arguments(kr)
    kr.add_argument("--json", action="store_true", help="print the count as JSON")
    kr.set_defaults(func=cmd_keys_revoke)
    vault_cli.add_parsers(sub)
    egress_cli.add_parsers(sub)
    audit_cli.add_parsers(sub)
    change_cli.add_parsers(sub)
    allowlist_cli.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(a.func(a))
    except Asl3Error as err:
        sys.stderr.write(f"asl3: {err}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("asl3: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`asl3 ... | head`): not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1

