"""Build the served artifact from a Table 1 row: train on ALL labeled data, keep the row's temperature.

  python -m homework_monitor.training.export --row best --out triton_models/homework_classifier/1/artifact

``best`` is the row with the highest out-of-fold macro-F1 among the cached encoder rows. The
temperature comes from that row's out-of-fold logits, so thresholds keep their meaning in serving. An
encoder of its own is converted to the served ONNX graph (``training.onnx_export``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from homework_monitor.model import BASE_ENCODER, Encoder, ModelSpec, base_encoder_path, save_artifact
from homework_monitor.stream.config import default_data_dir
from homework_monitor.stream.schemas import CLASSES
from homework_monitor.triton_models import SERVED_ARTIFACT

from .features import cached_features
from .finetune import FinetuneConfig, FinetunedModel, finetune
from .head import JointHead, train_head
from .onnx_export import convert_artifact
from .table1 import (
    CONFIGS,
    ENCODER_ROWS,
    Context,
    RowResult,
    build_context,
    cached_row,
    evaluate_row,
    pretrained_encoder,
)

REVIEW_HEAD = "review_head.safetensors"
FROZEN = {"minilm_frozen": ("mean", None), "tsdae_only": ("cls", False), "tsdae_nsp": ("cls", True)}


def pick_best(ctx: Context, results_dir: Path) -> tuple[str, dict]:
    scored = {}
    for row in ENCODER_ROWS:
        res = cached_row(results_dir, row, ctx.data.data_hash)
        if isinstance(res, RowResult):
            scored[row] = evaluate_row(ctx, res, ctx.cfg.threshold)
    if not scored:
        raise SystemExit(f"no encoder row results in {results_dir}: run training.table1 first")
    best = max(scored, key=lambda r: scored[r]["pooled"]["macro_f1"])
    return best, scored[best]


def export_row(ctx: Context, row: str, evaluation: dict, out: Path) -> Path:
    items = ctx.real + ctx.data.synthetic
    y = np.array([i.y for i in items])
    w = np.array([ctx.cfg.head.real_weight if i.real else 1.0 for i in items])
    metrics = {k: round(v, 4) for k, v in evaluation["pooled"].items()}
    spec_common = dict(temperature=round(evaluation["temperature"], 4),
                       version=f"{row}-{ctx.data.data_hash[:8]}",
                       extra={"row": row, "cv_metrics": metrics, "session": evaluation["session"],
                              "data_hash": ctx.data.data_hash})
    return write_artifact(out, lambda staging: _build(ctx, row, items, y, w, spec_common, staging))


def write_artifact(out: Path, build: Callable[[Path], Path]) -> Path:
    """``build(staging)`` writes an artifact next to ``out``; an encoder of its own becomes the served
    ONNX graph; then the staging folder replaces ``out``. A failed build never destroys ``out``."""
    staging = out.with_name(out.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    built = build(staging)
    if ModelSpec.load(built).encoder != BASE_ENCODER:
        # Served format: the encoder as an ONNX graph (runs without torch), the torch weights dropped.
        convert_artifact(built, drop_torch_weights=True)
    if out.exists():
        shutil.rmtree(out)
    built.replace(out)
    return out


def save_finetuned(model: FinetunedModel, cfg: FinetuneConfig, spec_common: dict, out: Path) -> Path:
    """A fine-tuned model as an artifact: its encoder (fp16) and its 5-class head, as served. A review
    output, when the model has one, is saved beside it (``review_head.safetensors``, read from the
    class head's hidden layer; ``extra.review_head`` says so) and is not served yet."""
    with tempfile.TemporaryDirectory() as tmp:
        model.enc.model.save_pretrained(tmp)
        model.enc.tokenizer.save_pretrained(tmp)
        spec = ModelSpec(views=model.views, pooling=model.pooling, max_length=cfg.max_length,
                         hidden=model.enc.model.config.hidden_size, head_hidden=cfg.head_hidden,
                         dropout=cfg.dropout, **spec_common)
        if isinstance(model.head, JointHead):
            spec.extra = {**spec.extra, "review_head": {
                "file": REVIEW_HEAD, "input": "the class head's hidden layer (after its ReLU)",
                "output": "one logit: the therapist reviews homework assigned earlier"}}
        saved = save_artifact(out, spec, model.class_head.cpu(), Path(tmp))
    if isinstance(model.head, JointHead):
        save_file({k: v.detach().float().cpu().contiguous() for k, v in model.head.review.state_dict().items()},
                  str(out / REVIEW_HEAD))
    return saved


def _build(ctx: Context, row: str, items, y, w, spec_common: dict, out: Path) -> Path:
    if row in FROZEN:
        pooling, nsp = FROZEN[row]
        enc_path = base_encoder_path() if nsp is None else pretrained_encoder(ctx, nsp)
        enc = Encoder(enc_path, pooling, 128, ctx.device)
        X = cached_features(enc, f"export-{row}", [i.example for i in items], ctx.cfg.views,
                            ctx.work_dir / "features")
        head = train_head(X, y, len(CLASSES), ctx.cfg.head, w)
        spec = ModelSpec(views=ctx.cfg.views, pooling=pooling, head_hidden=ctx.cfg.head.hidden,
                         dropout=ctx.cfg.head.dropout, **spec_common)
        return save_artifact(out, spec, head, None if nsp is None else enc_path)
    if row == "minilm_finetuned":
        views = ("pair", "therapist")
        model = finetune(base_encoder_path(), [i.example for i in items], y, w, views, "mean",
                         ctx.cfg.finetune, len(CLASSES), ctx.device)
        return save_finetuned(model, ctx.cfg.finetune, spec_common, out)
    raise SystemExit(f"row {row!r} is not an encoder row")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", default="best")
    p.add_argument("--config", choices=sorted(CONFIGS), default="full")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--device", default="cpu")
    p.add_argument("--results-dir", type=Path, default=Path("training") / "results")
    p.add_argument("--work-dir", type=Path, default=Path("var") / "table1")
    p.add_argument("--out", type=Path, default=SERVED_ARTIFACT)
    a = p.parse_args(argv)
    cfg = CONFIGS[a.config]
    ctx = build_context(cfg, a.data_dir, a.device, a.work_dir / cfg.name)
    if a.row == "best":
        row, evaluation = pick_best(ctx, a.results_dir)
    else:
        row = a.row
        res = cached_row(a.results_dir, row, ctx.data.data_hash)
        if not isinstance(res, RowResult):
            raise SystemExit(f"no {row} result in {a.results_dir} for this data" +
                             (f" (it was computed on data {res})" if res else "") + ": run training.table1 first")
        evaluation = evaluate_row(ctx, res, cfg.threshold)
    path = export_row(ctx, row, evaluation, a.out)
    print(json.dumps({"row": row, "artifact": str(path), "macro_f1": evaluation["pooled"]["macro_f1"],
                      "temperature": evaluation["temperature"]}))


if __name__ == "__main__":
    main()
