"""The served runtime (ONNX Runtime encoder, numpy head) and the ONNX export.

Texts are written for these tests (no corpus text). Agreement with the torch model on real labelled
items is measured by ``benchmarks/onnx_vs_torch.py`` (docs/SCALING.md), not here: the torch checkpoint
is no longer in the served artifact.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homework_monitor.contract import CLASSES, ContractMismatch, Example
from homework_monitor.runtime import (
    ModelSpec,
    OnnxClassifier,
    _providers,
    converts_to_fp16,
    execution_provider,
    fp16_graph,
    has_onnx_encoder,
    length_buckets,
)
from homework_monitor.triton_models import SERVED_ARTIFACT

EXAMPLES = [
    Example("Please keep a sleep diary every morning this week.", "Okay."),
    Example("How are you feeling today?", None),
    Example("Try the breathing exercise once a day, and write down how strong the worry was before and "
            "after, so we can look at it together next time.", "Sure, I can do that.",
            (("client", "I'm stressed."), ("therapist", "I hear you."))),
    Example("ok", ""),
    Example("Between now and Thursday, could you call the clinic to book the appointment?", "Yes."),
]


@pytest.fixture(scope="module")
def served() -> OnnxClassifier:
    return OnnxClassifier(SERVED_ARTIFACT, threads=2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 128), max_size=300), st.integers(1, 70), st.floats(0.0, 1.0))
def test_length_buckets_cover_every_sequence_once_and_bound_the_padding(lengths, max_size, max_waste):
    lengths = np.array(lengths, dtype=np.int64)
    buckets = length_buckets(lengths, max_size, max_waste)
    seen = np.concatenate(buckets) if buckets else np.array([], dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in buckets:
        assert 1 <= len(b) <= max_size
        longest = lengths[b].max()
        assert lengths[b[0]] == longest  # the first member sets the bucket's width
        assert (lengths[b] >= (1 - max_waste) * longest).all()  # no row padded by more than max_waste


def test_the_served_artifact_is_onnx_and_stays_under_50_mb():
    assert has_onnx_encoder(SERVED_ARTIFACT)
    assert not (SERVED_ARTIFACT / "encoder" / "model.safetensors").exists()
    total = sum(p.stat().st_size for p in SERVED_ARTIFACT.rglob("*") if p.is_file())
    assert total <= 50 * 1024 * 1024, total


def test_probabilities_do_not_depend_on_how_requests_are_batched(served):
    together = served.predict_proba(EXAMPLES)
    one_by_one = np.concatenate([served.predict_proba([e]) for e in EXAMPLES])
    reversed_ = served.predict_proba(EXAMPLES[::-1])[::-1]
    assert together.shape == (len(EXAMPLES), len(CLASSES)) and together.dtype == np.float32
    np.testing.assert_allclose(together.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one_by_one, together, atol=2e-5)
    np.testing.assert_allclose(reversed_, together, atol=2e-5)
    assert served.predict_proba([]).shape == (0, len(CLASSES))


def test_one_bucket_per_call_gives_the_same_probabilities(served):
    padded = OnnxClassifier(SERVED_ARTIFACT, threads=2, max_bucket=10_000, max_waste=1.0)
    np.testing.assert_allclose(padded.predict_proba(EXAMPLES), served.predict_proba(EXAMPLES), atol=2e-5)


def test_the_fp16_graph_agrees_with_fp32_on_labels(served):
    """The GPU config's fp16 conversion, run here on CPU (slow but exact enough to check)."""
    half = OnnxClassifier(SERVED_ARTIFACT, threads=2, fp16=True)
    p16, p32 = half.predict_proba(EXAMPLES), served.predict_proba(EXAMPLES)
    assert (p16.argmax(1) == p32.argmax(1)).all()
    np.testing.assert_allclose(p16, p32, atol=5e-3)


def test_the_gpu_fp16_graph_computes_in_fp16_throughout():
    """What a CUDA instance with fp16 runs: every weight and every fused op's output fp16, only the
    token ids in and the pooled embedding out keep their types."""
    import onnx
    from onnx import TensorProto
    graph = onnx.load_from_string(fp16_graph(SERVED_ARTIFACT / "encoder" / "model.onnx")).graph
    assert {i.data_type for i in graph.initializer} == {TensorProto.FLOAT16}
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    fused = [n for n in graph.node if n.domain == "com.microsoft"]
    assert {n.op_type for n in fused} == {"Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"}
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in fused)
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(i.type.tensor_type.elem_type == TensorProto.INT64 for i in graph.input)


@pytest.mark.parametrize("device, provider, fp16_graph_at_load", [
    ("cpu", "CPUExecutionProvider", True),
    ("cuda", "CUDAExecutionProvider", True),
    ("cuda:1", "CUDAExecutionProvider", True),
    ("tensorrt:0", "TensorrtExecutionProvider", False),  # TensorRT builds its own fp16 engines
])
def test_device_strings_choose_the_execution_provider(device, provider, fp16_graph_at_load):
    assert execution_provider(device) == provider
    assert converts_to_fp16(device, fp16=True) is fp16_graph_at_load
    assert converts_to_fp16(device, fp16=False) is False


def test_gpu_providers_name_the_device_and_fall_back_only_to_cuda_then_cpu():
    (name, cuda), cpu = _providers("cuda:1", fp16=True)
    assert (name, cuda, cpu) == ("CUDAExecutionProvider", {"device_id": 1}, "CPUExecutionProvider")
    (trt, opts), (name, cuda), cpu = _providers("tensorrt:2", fp16=True)
    assert (trt, name, cuda["device_id"], opts["device_id"]) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", 2, 2)
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    with pytest.raises(ValueError, match="unknown device"):
        execution_provider("rocm")


def test_a_gpu_device_without_its_provider_is_an_error_not_a_cpu_fallback():
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fall-back cannot happen here")
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider did not load"):
        OnnxClassifier(SERVED_ARTIFACT, device="cuda:0", fp16=True)


def test_an_artifact_with_another_class_order_is_refused(tmp_path):
    art = tmp_path / "artifact"
    shutil.copytree(SERVED_ARTIFACT, art)
    spec = json.loads((art / "model.json").read_text())
    spec["classes"] = spec["classes"][::-1]
    (art / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ContractMismatch):
        OnnxClassifier(art)


@pytest.mark.slow
def test_export_of_the_base_encoder_fuses_and_matches_torch(tmp_path):
    """The export command end to end on the base MiniLM (the fine-tuned checkpoint is not in the repo)."""
    import torch

    from homework_monitor.model import Head, base_encoder_path, save_artifact
    from homework_monitor.training.onnx_export import convert_artifact
    spec = ModelSpec(views=("pair", "therapist"), temperature=1.5, version="test")
    torch.manual_seed(0)
    head = Head(spec.hidden * 2, spec.head_hidden, len(CLASSES), spec.dropout)
    art = save_artifact(tmp_path / "artifact", spec, head, base_encoder_path())
    from homework_monitor.model import HomeworkClassifier
    want = HomeworkClassifier(art).predict_proba(EXAMPLES)  # torch: no ONNX graph yet
    report = convert_artifact(art, drop_torch_weights=True)
    assert report["fusions"] == {"EmbedLayerNormalization": 1, "Attention": 6, "BiasGelu": 6,
                                 "SkipLayerNormalization": 12}
    assert report["check"]["max_abs_diff"] < 1e-4
    assert not (art / "encoder" / "model.safetensors").exists()
    got = HomeworkClassifier(art).predict_proba(EXAMPLES)  # now on ONNX Runtime
    np.testing.assert_allclose(got, want, atol=1e-4)
