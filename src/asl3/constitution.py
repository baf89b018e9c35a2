"""Constitution: natural-language harmful and harmless categories, loaded from YAML.

The constitution is the policy. Everything downstream (synthetic data, training, the guard's
categories and exemptions) is derived from it, so a malformed file must fail loudly and say
exactly where: file, line and field.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from asl3.errors import ConstitutionError

Label = Literal["harmful", "harmless"]
_ID_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


class Category(BaseModel):
    """One category of the policy.

    ``examples`` are request-level phrasings (never answers). ``topics`` are the subjects the
    offline generator slots into request templates; ``outputs`` are example responses
    (for harmful categories: non-actionable skeletons only).
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    label: Label
    description: str = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    exemptible: bool = False

    @field_validator("id")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"category id {v!r} must be dotted lowercase, like 'bio.acquisition'")
        return v

    @property
    def domain(self) -> str:
        return self.id.split(".", 1)[0]


class Constitution(BaseModel):
    """A named, versioned set of categories with at least one harmful and one harmless."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    scope: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=2)

    @model_validator(mode="after")
    def _checks(self) -> Constitution:
        ids = [c.id for c in self.categories]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate category ids: {', '.join(dupes)}")
        labels = {c.label for c in self.categories}
        if labels != {"harmful", "harmless"}:
            raise ValueError("needs at least one harmful and one harmless category")
        return self

    def category(self, cid: str) -> Category:
        for c in self.categories:
            if c.id == cid:
                return c
        raise KeyError(cid)

    @property
    def harmful(self) -> list[Category]:
        return [c for c in self.categories if c.label == "harmful"]

    @property
    def harmless(self) -> list[Category]:
        return [c for c in self.categories if c.label == "harmless"]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key, so errors can name lines."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[loader.construct_object(key_node)] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip_lines(v) for k, v in obj.items() if k not in ("__lines__", "__line__")}
    if isinstance(obj, list):
        return [_strip_lines(v) for v in obj]
    return obj


def _line_for(doc: object, loc: tuple) -> int | None:
    """Walk a pydantic error location through the line-annotated document."""
    node, line = doc, None
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(part, node.get("__line__", line))
            if part not in node:
                line = node.get("__line__", line)
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if isinstance(node, dict):
                line = node.get("__line__", line)
        else:
            break
    return line


def bundled_names() -> list[str]:
    """Names of the constitutions shipped inside the package."""
    root = resources.files("asl3") / "constitutions"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A bundled name ('cbrn') or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConstitutionError(f"{p}: no such constitution file")
        return p
    root = resources.files("asl3") / "constitutions" / f"{name_or_path}.yaml"
    if not root.is_file():
        raise ConstitutionError(
            f"unknown constitution {str(name_or_path)!r}: give a YAML path or one of "
            f"{', '.join(bundled_names())}"
        )
    return Path(str(root))


def loads(text: str, source: str = "<string>") -> Constitution:
    """Parse and validate constitution YAML text; errors say source, line and field."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConstitutionError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict):
        raise ConstitutionError(f"{source}:1: a constitution must be a YAML mapping")
    try:
        return Constitution.model_validate(_strip_lines(doc))
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(document)"
        line = _line_for(doc, loc)
        where = f"{source}:{line}" if line else source
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConstitutionError(f"{where}: field {field}: {err['msg']}{more}") from None


def load(name_or_path: str | Path = "cbrn") -> Constitution:
    """Load a bundled constitution by name or a YAML file by path."""
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConstitutionError(f"{path}: cannot read: {e}") from None
    return loads(text, source=str(path))


def sha256_of(name_or_path: str | Path) -> str:
    return hashlib.sha256(resolve(name_or_path).read_bytes()).hexdigest()
