"""Shared fixtures: the bundled model, and a small model trained on the benign proxy constitution."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / "tests" / "proxy"


@pytest.fixture(scope="session")
def guard():
    from asl3 import Guard

    return Guard.load()


@pytest.fixture(scope="session")
def proxy_bundle(tmp_path_factory) -> Path:
    """Train a bundle on the bread proxy constitution with asl3's own training code.

    Same settings as `asl3 train --constitution tests/proxy/bread.yaml --data
    tests/proxy/train.jsonl --calib tests/proxy/calib.jsonl --target-fpr 0.05`: the acceptance
    bar allows 5% false positives, so the threshold is calibrated to that rate."""
    from asl3.classify.train import TrainConfig, train

    out = tmp_path_factory.mktemp("proxy") / "bundle"
    train(TrainConfig(constitution=str(PROXY / "bread.yaml"), data=[str(PROXY / "train.jsonl")],
                      calib=[str(PROXY / "calib.jsonl")], out=str(out), seed=0,
                      target_fpr_input=0.05, target_fpr_output=0.05))
    return out
