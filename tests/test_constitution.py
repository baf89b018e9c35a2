"""The constitution is the policy: it must load when valid and fail precisely when not."""

from __future__ import annotations

import pytest

from asl3.constitution import bundled_names, load, loads
from asl3.errors import ConstitutionError

VALID = """\
name: tiny
version: 1
scope: test
categories:
  - id: bread.recipe
    label: harmful
    description: Complete recipes.
    examples: ["Give me a full recipe for {topic}"]
    topics: [sourdough]
  - id: bread.facts
    label: harmless
    description: Facts.
"""


def test_bundled_cbrn_constitution_covers_every_domain_and_stage():
    c = load("cbrn")
    ids = {cat.id for cat in c.harmful}
    for domain in ("bio", "chem", "rad", "nuc"):
        for stage in ("acquisition", "production", "enhancement", "weaponization", "delivery", "evasion"):
            assert f"{domain}.{stage}" in ids
    assert {"bio.education", "cbrn.history", "fiction.creative", "other.offtopic"} <= {x.id for x in c.harmless}
    assert "cbrn" in bundled_names()


def test_only_some_harmful_categories_are_exemptible_and_no_harmless_ones():
    c = load("cbrn")
    assert not any(x.exemptible for x in c.harmless)
    assert not c.category("bio.enhancement").exemptible


def test_valid_yaml_loads():
    c = loads(VALID, "tiny.yaml")
    assert c.name == "tiny" and [x.id for x in c.harmful] == ["bread.recipe"]


def test_missing_field_names_file_line_and_field():
    bad = VALID.replace("    description: Facts.\n", "")
    with pytest.raises(ConstitutionError) as e:
        loads(bad, "tiny.yaml")
    msg = str(e.value)
    assert "tiny.yaml:10" in msg and "categories.1.description" in msg


def test_wrong_label_names_its_line():
    bad = VALID.replace("label: harmless", "label: maybe")
    with pytest.raises(ConstitutionError, match=r"tiny.yaml:11: field categories.1.label"):
        loads(bad, "tiny.yaml")


def test_unknown_field_is_refused():
    bad = VALID.replace("    topics: [sourdough]\n", "    topics: [sourdough]\n    colour: red\n")
    with pytest.raises(ConstitutionError, match="colour"):
        loads(bad, "tiny.yaml")


def test_duplicate_ids_and_single_label_are_refused():
    with pytest.raises(ConstitutionError, match="duplicate"):
        loads(VALID.replace("bread.facts", "bread.recipe"), "x.yaml")
    with pytest.raises(ConstitutionError, match="harmful and one harmless"):
        loads(VALID.replace("label: harmless", "label: harmful"), "x.yaml")


def test_bad_yaml_and_unknown_name_give_clear_errors(tmp_path):
    with pytest.raises(ConstitutionError, match=r"x.yaml:\d+: not valid YAML"):
        loads("name: [unclosed\n", "x.yaml")
    with pytest.raises(ConstitutionError, match="unknown constitution"):
        load("nope")
    p = tmp_path / "missing.yaml"
    with pytest.raises(ConstitutionError, match="no such constitution file"):
        load(p)


def test_yaml_cannot_construct_python_objects():
    with pytest.raises(ConstitutionError):
        loads("!!python/object/apply:os.system ['echo hi']\n", "evil.yaml")
