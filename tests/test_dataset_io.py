"""Dataset files are read strictly: a bad row stops with file and line, nothing is skipped."""

from __future__ import annotations

import pytest

from asl3.data.io import Row, read_jsonl, rows_sha256, write_jsonl
from asl3.errors import DatasetError


def test_round_trip(tmp_path):
    rows = [Row(text="a", label="harmless", category="x.y"),
            Row(text="b", kind="output", label="harmful", category="x.z", prompt="p", transform="base64")]
    p = tmp_path / "d.jsonl"
    assert write_jsonl(p, rows) == 2
    assert read_jsonl(p) == rows
    assert rows_sha256(rows) == rows_sha256(read_jsonl(p))


@pytest.mark.parametrize("line,expect", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"text": "a", "label": "evil", "category": "x.y"}', "field label"),
    ('{"label": "harmful", "category": "x.y"}', "field text"),
    ('{"text": "a", "label": "harmful", "category": "x.y", "extra": 1}', "field extra"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, expect):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok", "label": "harmless", "category": "x.y"}\n\n' + line + "\n")
    with pytest.raises(DatasetError, match=rf"bad.jsonl:3: .*{expect}"):
        read_jsonl(p)


def test_invalid_utf8_and_missing_file(tmp_path):
    p = tmp_path / "bin.jsonl"
    p.write_bytes(b'{"text": "ok", "label": "harmless", "category": "x.y"}\n\xff\xfe\n')
    with pytest.raises(DatasetError, match="bin.jsonl:2: not valid UTF-8"):
        read_jsonl(p)
    with pytest.raises(DatasetError, match="cannot read"):
        read_jsonl(tmp_path / "nope.jsonl")
