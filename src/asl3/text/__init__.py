"""Text normalization: canonical views of a text for the classifier (see normalize.py)."""

from asl3.text.normalize import (
    MAX_DECODED_VIEWS,
    MAX_DEPTH,
    View,
    canonical,
    englishness,
    iter_segments,
    segments,
    views,
)

__all__ = [
    "MAX_DECODED_VIEWS",
    "MAX_DEPTH",
    "View",
    "canonical",
    "englishness",
    "iter_segments",
    "segments",
    "views",
]
