"""Cached pooled embeddings of labeled items: the frozen encoder runs once per (encoder, view)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from homework_monitor.model import Encoder, Example, view_text


def _key(tag: str, view: str, texts: Sequence) -> str:
    h = hashlib.sha256(tag.encode() + view.encode())
    for t in texts:
        h.update(repr(t).encode())
    return h.hexdigest()[:20]


def cached_features(encoder: Encoder, tag: str, examples: Sequence[Example], views: Sequence[str],
                    cache_dir: Path | None, batch_size: int = 32) -> np.ndarray:
    blocks = []
    for view in views:
        texts = [view_text(e, view) for e in examples]
        path = cache_dir / f"{_key(tag, view, texts)}.npy" if cache_dir else None
        if path is not None and path.exists():
            blocks.append(np.load(path))
            continue
        emb = encoder.embed(texts, batch_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, emb)
        blocks.append(emb)
    return np.concatenate(blocks, axis=1)
