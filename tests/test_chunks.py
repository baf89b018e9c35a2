"""Chunked AES-256-GCM files: round trip at every size around chunk boundaries; a file opens
only under its own key, model and file name; failures leave no output behind."""

from __future__ import annotations

import os

import pytest

from asl3.security.chunks import HEADER_SIZE, TAG, ChunkError, decrypt_file, encrypt_file

KEY = bytes(range(32))


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 200])
def test_round_trip_at_chunk_boundaries(tmp_path, size: int) -> None:
    src, enc, out = tmp_path / "p", tmp_path / "e", tmp_path / "o"
    src.write_bytes(os.urandom(size))
    assert encrypt_file(src, enc, KEY, model="m", name="p", chunk_size=64) == size
    chunks = max(1, -(-size // 64))
    assert enc.stat().st_size == HEADER_SIZE + size + chunks * TAG
    assert decrypt_file(enc, out, KEY, model="m", name="p") == size
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(("key", "model", "name"), [
    (bytes(32), "m", "p"), (KEY, "other", "p"), (KEY, "m", "other")])
def test_a_file_opens_only_under_its_own_key_model_and_name(tmp_path, key, model, name) -> None:
    src, enc, out = tmp_path / "p", tmp_path / "e", tmp_path / "o"
    src.write_bytes(os.urandom(300))
    encrypt_file(src, enc, KEY, model="m", name="p", chunk_size=64)
    with pytest.raises(ChunkError, match="chunk 1 of 5 fails authentication"):
        decrypt_file(enc, out, key, model=model, name=name)
    assert not out.exists() and not (tmp_path / "o.partial").exists()


def test_the_same_plaintext_encrypts_differently_each_time(tmp_path) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"x" * 100)
    encrypt_file(src, tmp_path / "a", KEY, model="m", name="p")
    encrypt_file(src, tmp_path / "b", KEY, model="m", name="p")
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


def test_not_an_encrypted_file(tmp_path) -> None:
    (tmp_path / "e").write_bytes(b"hello world, not a vault file at all.......")
    with pytest.raises(ChunkError, match="not an asl3 encrypted file"):
        decrypt_file(tmp_path / "e", tmp_path / "o", KEY, model="m", name="p")
