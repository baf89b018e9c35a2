"""Thresholds from a separate harmless calibration split, at a target false-positive rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def threshold_for_fpr(harmless_scores: Sequence[float], target_fpr: float,
                      floor: float = 0.05) -> float:
    """The lowest threshold at which at most ``target_fpr`` of the harmless scores block.

    A score blocks when ``score >= threshold``. With k = floor(target * n) false positives
    allowed, the threshold sits just above the (k+1)-th highest harmless score. ``floor`` stops a
    calibration set with no high scores at all from producing a threshold near zero.
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError("target_fpr must be in [0, 1)")
    s = np.sort(np.asarray(harmless_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("calibration needs at least one harmless example")
    k = int(np.floor(target_fpr * s.size))
    t = float(np.nextafter(s[k], np.inf)) if k < s.size else 0.0
    return min(max(t, floor), 0.999999)


def union_thresholds(primary: Sequence[float], secondary: Sequence[float], target_fpr: float,
                     floor: float = 0.05) -> tuple[float, float]:
    """Thresholds for a rule that blocks when either score reaches its own threshold, with at
    most ``target_fpr`` of the harmless rows blocked in all.

    The secondary score gets half the budget; the primary threshold then takes what is left
    (the rows the secondary already blocks cost it nothing more). Row i of both lists is the
    same harmless text."""
    p = np.asarray(primary, dtype=np.float64)
    s = np.asarray(secondary, dtype=np.float64)
    if p.shape != s.shape or p.size == 0:
        raise ValueError("union calibration needs two equal, non-empty score lists")
    t2 = threshold_for_fpr(s, target_fpr / 2, floor)
    flagged = s >= t2
    k = int(np.floor(target_fpr * p.size)) - int(flagged.sum())
    rest = np.sort(p[~flagged])[::-1]
    t1 = float(np.nextafter(rest[k], np.inf)) if 0 <= k < rest.size else floor
    if k < 0:
        t1 = 0.999999
    return min(max(t1, floor), 0.999999), t2
