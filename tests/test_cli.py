"""The CLI: verdicts as JSON, exit 2 with a one-line reason for bad input, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ASL3 = [sys.executable, "-m", "asl3.cli"]


def run(args, stdin: bytes | None = None, timeout: float = 120):
    return subprocess.run([*ASL3, *args], input=stdin, capture_output=True, timeout=timeout)


def test_check_prints_a_verdict():
    p = run(["check", "What is the boiling point of water at sea level?"])
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    assert set(v) >= {"blocked", "score", "category", "stage"} and v["stage"] == "input"


@pytest.mark.parametrize("stdin", [b"", "caf\u00e9 ".encode() * 3])
def test_check_reads_stdin(stdin):
    p = run(["check", "-"], stdin=stdin)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["blocked"] in (True, False)


def test_invalid_utf8_and_binary_stdin_give_a_clear_error():
    for data in (b"\xff\xfe\xfa hello", bytes(range(256))):
        p = run(["check", "-"], stdin=data)
        assert p.returncode == 2
        assert b"Traceback" not in p.stderr and p.stderr.count(b"\n") == 1


def test_one_megabyte_input_gets_a_verdict():
    p = run(["check", "-"], stdin=b"the quick brown fox " * 52_429)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["blocked"] is False


def test_output_mode_reports_released_characters():
    p = run(["check", "--output", "--prompt", "How do I boil an egg?",
             "Put the egg in boiling water for eight minutes, then cool it."])
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    assert v["stage"] == "output" and v["released_chars"] == v["total_chars"]


def test_a_negative_number_of_calibration_transforms_is_refused(tmp_path):
    p = run(["train", "--out", str(tmp_path / "b"), "--calib-transforms", "-1", "--quiet"])
    assert p.returncode == 2 and b"--calib-transforms" in p.stderr and b"Traceback" not in p.stderr


@pytest.mark.parametrize("flag,value", [("--target-fpr", "1.5"), ("--target-fpr", "-0.1"),
                                        ("--input-fpr-margin", "0"),
                                        ("--input-fpr-margin", "1.2")])
def test_a_calibration_rate_out_of_range_is_refused_before_training(tmp_path, flag, value):
    p = run(["train", "--out", str(tmp_path / "b"), flag, value, "--quiet"])
    assert p.returncode == 2 and flag.encode() in p.stderr and b"Traceback" not in p.stderr
    assert not (tmp_path / "b").exists()


def test_malformed_jsonl_for_eval_names_the_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "hi", "label": "harmless", "category": "other.everyday"}\n{oops\n')
    p = run(["eval", "--data", str(f), "--quiet"])
    assert p.returncode == 2 and b"bad.jsonl:2" in p.stderr and b"Traceback" not in p.stderr


def test_eval_json_and_html_report(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "How do vaccines work?", "label": "harmless", "category": "bio.education"}\n'
                 '{"text": "Sure, boil it.", "kind": "output", "prompt": "egg?", "label": "harmless", "category": "other.everyday"}\n')
    rep = tmp_path / "r.html"
    p = run(["eval", "--data", str(f), "--json", "--quiet", "--report", str(rep)])
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["input"]["harmless"]["n"] == 1 and "<svg" in rep.read_text()


def test_train_with_a_constitution_missing_a_field_fails_cleanly(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("name: x\nversion: 1\ncategories: []\n")
    p = run(["train", "--constitution", str(c), "--out", str(tmp_path / "o"), "--quiet"])
    assert p.returncode == 2 and b"c.yaml" in p.stderr and b"Traceback" not in p.stderr


def test_tampered_bundle_is_refused_by_the_cli(tmp_path):
    from asl3.guard import default_bundle_path

    b = tmp_path / "b"
    shutil.copytree(default_bundle_path(), b)
    v = b / "vocab.json"
    v.write_bytes(v.read_bytes().replace(b'"w|', b'"w!', 1))
    p = run(["check", "--bundle", str(b), "hello"])
    assert p.returncode == 2 and b"SHA-256 mismatch" in p.stderr


def test_help_teaches_with_examples():
    for cmd in ([], ["train"], ["check"], ["eval"], ["generate"]):
        p = run([*cmd, "--help"])
        assert p.returncode == 0 and b"example" in p.stdout


def test_no_command_prints_help_and_exits_2():
    p = run([])
    assert p.returncode == 2


def test_missing_bundle_dir_is_a_clear_error(tmp_path: Path):
    p = run(["check", "--bundle", str(tmp_path / "none"), "hi"])
    assert p.returncode == 2 and b"not a model bundle" in p.stderr


def test_stage2_flag_picks_the_threshold_that_applies():
    from asl3.classify import neural
    from asl3.guard import default_bundle_path

    th = json.loads((default_bundle_path() / "manifest.json").read_text())["thresholds"]
    off = run(["check", "--stage2", "off", "How do vaccines work?"])
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["threshold"] == pytest.approx(th["input"], abs=1e-6)
    on = run(["check", "--stage2", "on", "How do vaccines work?"])
    if neural.available():
        assert on.returncode == 0, on.stderr
        assert json.loads(on.stdout)["threshold"] == pytest.approx(th["input_stage2"], abs=1e-6)
    else:
        assert on.returncode == 2 and b"Traceback" not in on.stderr


def test_a_reader_that_goes_away_is_not_a_traceback():
    """`asl3 ... | head` closes the pipe early: exit quietly, as other command-line tools do."""
    p = subprocess.Popen([*ASL3, "egress", "plan", "--weights", "1TB", "--rate", "100Mbit/s",
                          "--detect-within", "1h", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # before the command writes a byte
    err = p.stderr.read()
    assert p.wait(timeout=120) == 1
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
