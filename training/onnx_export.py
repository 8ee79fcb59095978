"""Convert an artifact's torch encoder into the served ONNX graph (``encoder/model.onnx``).

  python -m homework_monitor.training.onnx_export --artifact triton_models/homework_classifier/1/artifact \\
      --drop-torch-weights

Steps: the HF BertModel (eager attention, so ONNX Runtime's fusion recognises it) plus the artifact's
pooling is exported with dynamic batch and sequence axes; ``onnxruntime.transformers`` fuses it
(embedding+LayerNorm, 6 Attention, 12 SkipLayerNorm, 6 BiasGelu for MiniLM-L6); the weights are then
stored in fp16 behind ``Cast`` nodes (the fine-tuned checkpoint is fp16 already, so nothing is lost:
ONNX Runtime folds the casts at load and computes in fp32), which keeps the served artifact under
50 MB. The written graph's embeddings are then compared with torch's on fixed texts written here; a
difference above 1e-4 removes the graph again and stops the export. ``--drop-torch-weights`` then removes
``encoder/model.safetensors`` (the ONNX graph replaces it in serving; the checkpoint stays in git
history and is rebuilt by ``training.export``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from homework_monitor.runtime import ONNX_ENCODER, ONNX_INPUTS, ONNX_OUTPUT, ModelSpec, OnnxEncoder
from homework_monitor.triton_models import SERVED_ARTIFACT

# Fixed check texts (written for this purpose; no corpus text).
CHECK_TEXTS: list[str | tuple[str, str]] = [
    ("Before next week, could you write down each time the worry shows up?", "Sure, I can try that."),
    "How did the breathing practice go for you?",
    ("Let's plan one small step: a ten minute walk after dinner.", ""),
    "ok",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json", "vocab.txt")


def _pooled_module(encoder_dir: Path, pooling: str):
    import torch
    from transformers import AutoModel
    # Eager attention: the SDPA export is not recognised by ORT's attention fusion (0 fused vs 6).
    bert = AutoModel.from_pretrained(str(encoder_dir), dtype=torch.float32, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            if pooling == "cls":
                return hidden[:, 0]
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    return Pooled().eval(), bert.config


def fp16_storage(model, min_elements: int = 1024):
    """Store every large fp32 initializer as fp16 behind a Cast back to fp32 (ORT folds it at load)."""
    from onnx import TensorProto, helper, numpy_helper
    casts = []
    for init in list(model.graph.initializer):
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
            model.graph.initializer.remove(init)
            model.graph.initializer.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "_to_fp32"))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)
    return model


def export_encoder(encoder_dir: Path, out_dir: Path, pooling: str, max_length: int, atol: float = 1e-4) -> dict:
    """Write ``out_dir/model.onnx`` and the tokenizer files; returns fusion counts and the check."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    module, config = _pooled_module(encoder_dir, pooling)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        dummy = tuple(torch.ones(2, 16, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 16, dtype=torch.long)
                      for n in ONNX_INPUTS)
        axes = {n: {0: "batch", 1: "sequence"} for n in ONNX_INPUTS} | {ONNX_OUTPUT: {0: "batch"}}
        torch.onnx.export(module, dummy, str(raw), input_names=list(ONNX_INPUTS), output_names=[ONNX_OUTPUT],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        # opt_level 0: only the transformer fusions, so the file stays valid for every execution provider.
        fused = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=0, use_gpu=False)
        fusions = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        staged = Path(tmp) / ONNX_ENCODER
        fp16_storage(fused.model)
        fused.save_model_to_file(str(staged))  # also declares the com.microsoft opset of the fused ops
        for name in TOKENIZER_FILES:
            if (encoder_dir / name).exists() and encoder_dir.resolve() != out_dir.resolve():
                shutil.copy2(encoder_dir / name, out_dir / name)
        shutil.copy2(staged, out_dir / ONNX_ENCODER)
    check = check_against_torch(module, out_dir, max_length)
    if check["max_abs_diff"] > atol:
        (out_dir / ONNX_ENCODER).unlink()
        raise SystemExit(f"ONNX embeddings differ from torch by {check['max_abs_diff']:.2e} > {atol}")
    return {"fusions": fusions, "check": check, "bytes": (out_dir / ONNX_ENCODER).stat().st_size}


def check_against_torch(module, onnx_dir: Path, max_length: int) -> dict:
    import torch
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(onnx_dir))
    enc = OnnxEncoder(onnx_dir, max_length)
    got = enc.embed_many([CHECK_TEXTS])[0]
    want = []
    with torch.inference_mode():
        for t in CHECK_TEXTS:
            # As lists, the way training tokenized: tok("a", "") would drop an empty second text.
            pair = ([t[0]], [t[1]]) if isinstance(t, tuple) else ([t],)
            x = tok(*pair, truncation="longest_first", max_length=max_length, return_tensors="pt")
            want.append(module(x["input_ids"], x["attention_mask"], x["token_type_ids"])[0].numpy())
    return {"texts": len(CHECK_TEXTS), "max_abs_diff": float(np.abs(got - np.stack(want)).max())}


def convert_artifact(artifact: Path, source: Path | None = None, drop_torch_weights: bool = False) -> dict:
    spec = ModelSpec.load(artifact)
    if spec.encoder.startswith("base:"):
        raise SystemExit("the artifact uses the base encoder: nothing fine-tuned to export "
                         "(export the base model into an 'encoder' folder first)")
    out_dir = artifact / spec.encoder
    report = export_encoder(source or out_dir, out_dir, spec.pooling, spec.max_length)
    if drop_torch_weights and (out_dir / "model.safetensors").exists():
        (out_dir / "model.safetensors").unlink()
    report["artifact"] = str(artifact)
    report["artifact_bytes"] = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, default=SERVED_ARTIFACT)
    p.add_argument("--source", type=Path, help="torch encoder folder (default: the artifact's encoder folder)")
    p.add_argument("--drop-torch-weights", action="store_true", help="remove encoder/model.safetensors afterwards")
    a = p.parse_args(argv)
    report = convert_artifact(a.artifact, a.source, a.drop_torch_weights)
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
