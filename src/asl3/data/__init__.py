"""Synthetic data: dataset rows and JSONL I/O, offline and LLM generators, attack transforms."""

from asl3.data.io import Row, read_jsonl, write_jsonl

__all__ = ["Row", "read_jsonl", "write_jsonl"]
