"""Model bundles: a directory with ``manifest.json`` plus JSON and npz files, every one hashed.

Loading never executes code: JSON is parsed, arrays come from ``np.load(allow_pickle=False)``,
and every file is checked against the SHA-256 in the manifest before it is read. The manifest's
own digest (``bundle_digest``) is what change management pins, so rewriting the manifest with
fresh hashes is caught there.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asl3.classify.features import Featurizer
from asl3.classify.model import HARMFUL, MeanMLP
from asl3.classify.neural import Head
from asl3.errors import BundleError

FORMAT = "asl3-bundle/1"
MANIFEST = "manifest.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """Everything the guard needs at run time, loaded and verified."""

    manifest: dict[str, Any]
    featurizer: Featurizer
    input_model: MeanMLP
    output_model: MeanMLP
    category_model: MeanMLP
    path: Path | None = None
    digest: str = ""
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage2_head: Head | None = None  # the optional second stage (see asl3.classify.neural)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def thresholds(self) -> dict[str, float]:
        return self.manifest["thresholds"]


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_bundle(out: str | Path, manifest: dict[str, Any], vocab: list[str],
                input_model: MeanMLP, output_model: MeanMLP, category_model: MeanMLP,
                stage2_head: Head | None = None) -> str:
    """Write a bundle; returns its digest (SHA-256 of manifest.json).

    With ``stage2_head``, the manifest must say how stage 2 runs (its ``stage2`` entry)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False).encode(),
        "input.npz": _npz_bytes(input_model.arrays()),
        "output.npz": _npz_bytes(output_model.arrays()),
        "category.npz": _npz_bytes(category_model.arrays()),
    }
    if stage2_head is not None:
        if "stage2" not in manifest:
            raise ValueError("a stage-2 head needs the manifest's stage2 entry")
        files["stage2.npz"] = _npz_bytes(stage2_head.arrays())
    for name, data in files.items():
        (d / name).write_bytes(data)
    m = dict(manifest)
    m["format"] = FORMAT
    m["category_classes"] = category_model.classes
    m["files"] = {name: _sha256(data) for name, data in sorted(files.items())}
    raw = (json.dumps(m, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    (d / MANIFEST).write_bytes(raw)
    return _sha256(raw)


def _read_verified(d: Path, name: str, files: dict[str, str]) -> bytes:
    if name not in files:
        raise BundleError(f"{d}: manifest lists no hash for {name}; refusing to load it")
    p = d / name
    try:
        data = p.read_bytes()
    except OSError:
        raise BundleError(f"{p}: missing bundle file") from None
    if _sha256(data) != files[name]:
        raise BundleError(f"{p}: SHA-256 mismatch with manifest (file tampered or corrupt); refusing to load")
    return data


def _npz(data: bytes, where: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise BundleError(f"{where}: not a valid npz array file: {e}") from None


def load_bundle(path: str | Path, expect_digest: str | None = None) -> Bundle:
    """Load and verify a bundle directory. Raises BundleError on any mismatch."""
    d = Path(path)
    mp = d / MANIFEST
    try:
        raw = mp.read_bytes()
    except OSError:
        raise BundleError(f"{d}: not a model bundle (no {MANIFEST})") from None
    digest = _sha256(raw)
    if expect_digest is not None and digest != expect_digest:
        raise BundleError(f"{mp}: digest {digest[:16]}... is not the approved {expect_digest[:16]}...")
    try:
        m = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mp}: not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{mp}: unknown bundle format {m.get('format') if isinstance(m, dict) else m!r}")
    files = m.get("files") or {}
    try:
        vocab = json.loads(_read_verified(d, "vocab.json", files))
        inp = _npz(_read_verified(d, "input.npz", files), d / "input.npz")
        out = _npz(_read_verified(d, "output.npz", files), d / "output.npz")
        cat = _npz(_read_verified(d, "category.npz", files), d / "category.npz")
        cats = {c["id"]: c for c in m["categories"]}
        input_model = MeanMLP.from_arrays(inp, [HARMFUL])
        output_model = MeanMLP.from_arrays(out, [HARMFUL])
        category_model = MeanMLP.from_arrays(cat, m["category_classes"])
        m["thresholds"]["input"], m["thresholds"]["output"]  # noqa: B018 - presence check
        m["config"]["windows"], m["config"]["holdback"]  # noqa: B018
        head = None
        if m.get("stage2") is not None:
            head = Head.from_arrays(_npz(_read_verified(d, "stage2.npz", files),
                                         d / "stage2.npz"))
            m["thresholds"]["input_stage2"]  # noqa: B018
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{d}: bundle is incomplete or inconsistent: {e!r}") from None
    if any(x.vocab_size != len(vocab) for x in (input_model, output_model, category_model)):
        raise BundleError(f"{d}: weight shapes do not match the vocabulary")
    return Bundle(m, Featurizer(vocab), input_model, output_model, category_model, d, digest,
                  cats, head)
