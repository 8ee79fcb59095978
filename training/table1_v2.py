"""Model v2 evaluation: every real label, clinical supervision, the review output, the decision rule.

Scored set: ``labeled/real_dev.jsonl`` + the project's labels (``training/labels/*.jsonl``, joined to
the corpora), all real. Folds: ``data.session_folds`` over the items' sessions and the ``sessions_dev``
sessions, so every session (and each ``sessions_dev`` session as a whole) is in one fold. Each fold trains on

- the other folds' real items (weight ``head.real_weight``) and all synthetic items;
- clinical supervision: for the ``sessions_dev`` sessions of the training folds, every therapist
  utterance that neither session annotator marked (``turns_any``) and that is not a labelled item, as a
  ``none`` item (``data.clinical_negatives``; at most ``negatives_cap`` per fold, one seeded order);

and predicts its own real items and every microdialogue of its own ``sessions_dev`` sessions (session
figures through the stream's summary path, as in Table 1). A test fold's sessions never train anything.

Outputs per row: the 5-class logits (unchanged task) and, for the neural rows, a review logit
("the therapist reviews homework assigned earlier"), trained jointly with a masked binary loss on the
items that carry a ``review`` annotation (the project's labels; real_dev and synthetic items have none).

Rows are cached as out-of-fold logits in ``--results-dir`` (``<row>.json``) and the report is rendered
from them into the ``v2`` section of ``training/RESULTS.md`` (Table 1 above it is kept):

  python -m homework_monitor.training.table1_v2 --rows tfidf_lr_v2,minilm_frozen_v2      # CPU rows + report
  bash training/gpu_run_v2.sh                                                       # GPU rows (H100)
  python -m homework_monitor.training.table1_v2 --config smoke --data-dir tests/fixtures/data \\
      --labels-dir tests/fixtures/labels --results-dir /tmp/v2 --output /tmp/R.md

Distillation (``minilm_student_v2``): the teacher is the best of ``teacher_rows`` already computed. While
a teacher row runs, each fold's model also scores every unlabeled microdialogue
(``data.unlabeled_microdialogues``; ``<row>.units.npz``). Student fold k trains on its fold's labelled
items plus the soft labels that teacher fold k (which never saw fold k) gave to units of sessions
outside fold k only, so neither fold k's labels nor its text reach the student. The served student
(``--export-student``) learns from all labelled items and all units, soft-labelled by the mean of the
five fold teachers (no teacher is trained on all data: that would cost another full teacher run).

Some CPU rows answer questions rather than compete. ``minilm_served_further_v2`` continues the served
model itself (its checkpoint from git history, ``served_checkpoint``); ``served_encoder_head_v2`` and
``served_encoder_mpnet_head_v2`` train only a new head, on the served model's frozen encoder alone and
with frozen MPNet beside it (does the stronger encoder add what the fine-tuned one lacks?). Their encoder
trained on real_dev, so they are scored only against the served model on what neither saw.
``minilm_frozen_v2_no_context`` is the frozen row without the context view (does the context the input
carries help?); ``mpnet_frozen_v2`` the frozen row on MPNet, over the served views (about 40 minutes of
features on 2 cores, cached under ``--work-dir``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from homework_monitor.model import Encoder, Example, Head, base_encoder_path, featurize
from homework_monitor.stream.config import Settings, default_data_dir
from homework_monitor.stream.schemas import CLASSES
from homework_monitor.triton_models import SERVED_ARTIFACT

from .data import (
    ADDED_LABELS_DIR,
    CLINICAL_SOURCES,
    LabeledData,
    LabeledItem,
    clinical_negatives,
    load_added_labels,
    load_labeled_data,
    model_drawn_strata,
    select_negatives,
    session_folds,
    text_sha256,
    unlabeled_microdialogues,
)
from .features import cached_features
from .finetune import FinetuneConfig, finetune, finetuned_outputs
from .head import HeadConfig, fit_temperature, joint_head_logits, softmax, train_joint_head
from .metrics import (
    NONE_IDX,
    binary_metrics,
    choose_class_thresholds,
    choose_event_threshold,
    classification_metrics,
    cross_fitted,
    fires,
    fires_curve,
    homework_curve,
    item_scores,
    paired_group_bootstrap,
)
from .metrics import fmt3 as _f
from .metrics import fmt_prf as _prf
from .table1 import CONFIGS as T1_CONFIGS
from .table1 import (
    Context,
    RowResult,
    Table1Config,
    _cv_sklearn,
    cached_row,
    fit_tfidf_lr,
    load_dev_sessions,
    run_row,
    session_level,
    threshold_sweep,
    with_sections,
)

ROWS = ("tfidf_lr_v2", "minilm_frozen_v2", "minilm_frozen_v2_no_context", "mpnet_frozen_v2",
        "minilm_finetuned_v2_pair", "minilm_served_further_v2", "served_encoder_head_v2", "served_encoder_mpnet_head_v2",
        "minilm_finetuned_v2", "minilm_finetuned_v2_ctx", "mpnet_finetuned_v2", "minilm_student_v2")
CPU_ROWS = ("tfidf_lr_v2", "minilm_frozen_v2", "minilm_frozen_v2_no_context", "mpnet_frozen_v2",
            "minilm_finetuned_v2_pair", "minilm_served_further_v2", "served_encoder_head_v2",
            "served_encoder_mpnet_head_v2")
# Rows that start from the served model, which trained on every real_dev item: their pooled figures hold
# those items in their folds without holding them out of the start point, so they are judged only on what
# the served model never saw ("Against the served model"), and never chosen as the best row.
STARTS_FROM_SERVED = ("minilm_served_further_v2", "served_encoder_head_v2", "served_encoder_mpnet_head_v2")
# A row that adds one thing to another: the report also gives their difference, paired, on the same sessions.
CONTROL_OF = {"served_encoder_mpnet_head_v2": "served_encoder_head_v2"}
ROW_TITLES = {
    "tfidf_lr_v2": "TF-IDF + LR",
    "minilm_frozen_v2": "MiniLM frozen + joint head",
    "minilm_frozen_v2_no_context": "MiniLM frozen + joint head, without the context view",
    "mpnet_frozen_v2": "MPNet (all-mpnet-base-v2) frozen + joint head, without the context view",
    "minilm_finetuned_v2_pair": "MiniLM fine-tuned + review output, pair view only (one encoder pass)",
    "minilm_served_further_v2": "Served model fine-tuned further on every label + review output (1 epoch)",
    "served_encoder_head_v2": "Served encoder (frozen) + a new joint head on every label",
    "served_encoder_mpnet_head_v2": "Served encoder + MPNet (both frozen) + a new joint head on every label",
    "minilm_finetuned_v2": "MiniLM fine-tuned + review output",
    "minilm_finetuned_v2_ctx": "MiniLM fine-tuned + review output + context view",
    "mpnet_finetuned_v2": "MPNet (all-mpnet-base-v2) fine-tuned + review output",
    "minilm_student_v2": "MiniLM student distilled from the best teacher",
}
SERVED_EVENT_THRESHOLD: float = Settings.model_fields["event_threshold"].default  # HWM_EVENT_THRESHOLD
FT_VIEWS = ("pair", "therapist")  # the served views; the _ctx row adds "context"
RESULTS_DIR = Path("training") / "results_v2"  # the committed rows


@dataclass(frozen=True)
class V2Config(Table1Config):
    negatives_cap: int | None = 2000  # clinical negatives per fold (None = all)
    negative_weight: float = 1.0  # a little noisier than item labels: half a real item (real_weight 2)
    review_weight: float = 1.0
    beta: float = 0.5  # F-beta of the decision rule: precision counts 4x recall
    ft_minilm: FinetuneConfig = FinetuneConfig(epochs=3, batch_size=64, lr_encoder=5e-5)
    # The row a CPU can train (about 50 min for 5 folds on 2 cores): one view, batches of similar
    # length, two epochs (more examples than the served model's four epochs over a third of the data).
    ft_minilm_pair: FinetuneConfig = FinetuneConfig(epochs=2, batch_size=64, lr_encoder=5e-5, length_buckets=True)
    ft_mpnet: FinetuneConfig = FinetuneConfig(epochs=2, batch_size=32, lr_encoder=2e-5)
    # Continuing the served model (both views, its head as the start): one epoch at a lower encoder rate,
    # so the new labels move a model that already fits real_dev rather than retrain it (52 min on 2 cores).
    ft_served_further: FinetuneConfig = FinetuneConfig(epochs=1, batch_size=64, lr_encoder=2e-5, lr_head=3e-4,
                                                       length_buckets=True)
    ft_student: FinetuneConfig = FinetuneConfig(epochs=2, batch_size=64, lr_encoder=5e-5)
    teacher_rows: tuple[str, ...] = ("mpnet_finetuned_v2", "minilm_finetuned_v2")
    student_units_per_fold: int | None = 8000  # soft-labelled units per student fold (None = all)
    unit_weight: float = 1.0
    infer_batch: int = 256  # inference batch on a GPU (64 on CPU)


_SMOKE_FT = FinetuneConfig(epochs=1, max_steps=2, batch_size=8, max_length=48)
CONFIGS = {
    "smoke": V2Config("smoke", 3, T1_CONFIGS["smoke"].pretrain, _SMOKE_FT, HeadConfig(epochs=5),
                      negatives_cap=10, ft_minilm=_SMOKE_FT, ft_minilm_pair=_SMOKE_FT, ft_mpnet=_SMOKE_FT, ft_student=_SMOKE_FT,
                      ft_served_further=_SMOKE_FT,
                      student_units_per_fold=20),
    "full": V2Config("full", 5, T1_CONFIGS["full"].pretrain, FinetuneConfig(), HeadConfig()),
}


class RowSkipped(RuntimeError):
    """A row that cannot finish before the deadline (GPU budget) or lacks its inputs: nothing is cached."""


@dataclass
class V2Context(Context):
    negatives: list[LabeledItem] = field(default_factory=list)
    results_dir: Path = RESULTS_DIR
    deadline: float | None = None  # time.time() by which a row must be done
    mpnet_path: Path | None = None
    real_dev_ids: frozenset[str] = frozenset()  # what the served (v1) model trained on, with synthetic
    turn_truth: np.ndarray | None = None  # per sessions_dev microdialogue: its turn assigns homework

    @property
    def v2(self) -> V2Config:
        assert isinstance(self.cfg, V2Config)
        return self.cfg

    def fold_negatives(self, k: int | None) -> list[LabeledItem]:
        return select_negatives(self.negatives, self.fold_of, k, self.v2.negatives_cap)

    def train_split(self, k: int) -> tuple[list, np.ndarray]:
        items, w = super().train_split(k)
        neg = self.fold_negatives(k)
        return items + neg, np.concatenate([w, np.full(len(neg), self.v2.negative_weight)])

    def all_training(self) -> tuple[list, np.ndarray]:
        """Every labelled item, for a final model (negatives capped as in a fold)."""
        neg = self.fold_negatives(None)
        items = self.real + self.data.synthetic + neg
        w = np.array([self.cfg.head.real_weight if i.real else 1.0 for i in self.real + self.data.synthetic]
                     + [self.v2.negative_weight] * len(neg))
        return items, w

    @property
    def clinical(self) -> np.ndarray:
        return np.array([i.source in CLINICAL_SOURCES for i in self.real])

    def check_time(self, started: float, done: int, total: int, what: str) -> None:
        """Stop a row whose remaining folds, at the pace so far, would end after the deadline."""
        if self.deadline is None or done == 0 or done >= total:
            return
        projected = time.time() + (time.time() - started) / done * (total - done)
        if projected > self.deadline:
            raise RowSkipped(f"{what}: {done}/{total} folds done, the rest would end "
                             f"{projected - self.deadline:.0f} s after the deadline")


def review_target(items: Sequence[LabeledItem]) -> np.ndarray:
    """1/0 per item where it carries a review annotation, NaN where it does not (masked out)."""
    return np.array([np.nan if i.review is None else float(i.review) for i in items])


def data_paths(data_dir: Path, labels_dir: Path) -> list[Path]:
    lab = data_dir / "labeled"
    paths = [lab / "real_dev.jsonl", lab / "synthetic.jsonl", *sorted(labels_dir.glob("*.jsonl")),
             lab / "sessions_dev.jsonl"]
    return [p for p in paths if p.exists() or p.with_name(p.name + ".gz").exists()]


def build_v2_context(cfg: V2Config, data_dir: Path, labels_dir: Path, device: str, work_dir: Path,
                     results_dir: Path, deadline: float | None = None, mpnet_path: Path | None = None) -> V2Context:
    base = load_labeled_data(data_dir)
    # The rows learn and are scored on the labels drawn without a model. Items drawn where models fire
    # (round 4) would favour whichever row fires less; pair_student learns them and scores them apart,
    # weighted back to their pool.
    drawn = model_drawn_strata(labels_dir)
    added = [i for i in load_added_labels(data_dir, sorted(labels_dir.glob("*.jsonl"))) if i.why not in drawn]
    real = base.real + added
    dev = load_dev_sessions(data_dir)
    labelled = {(i.session_id, i.turn) for i in real if i.turn is not None}
    negatives = clinical_negatives(dev.sessions, dev.rows, labelled)
    data = LabeledData(real, base.synthetic,
                       text_sha256(*data_paths(data_dir, labels_dir), skip=lambda d: d.get("why") in drawn))
    fold_of = session_folds([i.session_id for i in real] + list(dev.truth), cfg.n_folds)
    windowed = dev.windowed()
    return V2Context(cfg, data_dir, data, fold_of, windowed, dev.truth, device, work_dir,
                     negatives=negatives, results_dir=results_dir, deadline=deadline, mpnet_path=mpnet_path,
                     real_dev_ids=frozenset(i.id for i in base.real), turn_truth=dev.assigning_turns(windowed))


# ----------------------------------------------------------------------------------------- rows
def _sample_examples(ctx: V2Context, n: int = 256) -> list[Example]:
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ctx.real), size=min(n, len(ctx.real)), replace=False)
    return [ctx.real[i].example for i in idx]


def row_tfidf_lr_v2(ctx: V2Context):
    items, sess = _cv_sklearn(ctx, lambda train, w, tests: fit_tfidf_lr(train, w)(tests))
    train, w = ctx.train_split(0)
    predict, sample = fit_tfidf_lr(train, w), _sample_examples(ctx)
    t0 = time.perf_counter()
    predict(sample)
    ms = (time.perf_counter() - t0) * 1000 / len(sample)
    return items, sess, {"negatives_per_fold": len(ctx.fold_negatives(0)),
                         "cpu_ms_per_microdialogue": round(ms, 3), "latency_how": f"one batch of {len(sample)}"}


def frozen_encoders_cv(ctx: V2Context, encoders: Sequence[str], views: tuple[str, ...]):
    """Frozen encoders (mean pooling over ``views``; several encoders' features side by side) + the joint
    head, per fold. Encoders: ``minilm`` (the base), ``mpnet``, ``served`` (the served model's fine-tuned
    encoder: it trained on real_dev, so a row using it is judged against the served model only)."""
    cache = ctx.work_dir / "features"
    labelled = ctx.real + ctx.data.synthetic
    sess_ex, sess_folds = ctx.session_examples()
    X, Xn, Xs = [], [], []
    for name in encoders:
        enc, tag = _frozen_encoder(ctx, name)
        X.append(cached_features(enc, tag, [i.example for i in labelled], views, cache))
        Xn.append(cached_features(enc, tag, [i.example for i in ctx.negatives], views, cache))
        Xs.append(cached_features(enc, tag, sess_ex, views, cache))
    X, Xn, Xs = (np.concatenate(b, axis=1) for b in (X, Xn, Xs))
    neg_index = {it.id: j for j, it in enumerate(ctx.negatives)}
    n, folds = len(ctx.real), ctx.item_folds
    y, rev = np.array([i.y for i in labelled]), review_target(labelled)
    item_logits, review_logits = np.zeros((n, len(CLASSES))), np.zeros(n)
    sess_logits = np.zeros((len(sess_ex), len(CLASSES)))
    for k in range(ctx.cfg.n_folds):
        tr = np.concatenate([np.where(folds != k)[0], np.arange(n, len(labelled))])
        nj = np.array([neg_index[it.id] for it in ctx.fold_negatives(k)], dtype=int)
        w = np.concatenate([np.where(tr < n, ctx.cfg.head.real_weight, 1.0), np.full(len(nj), ctx.v2.negative_weight)])
        head = train_joint_head(np.concatenate([X[tr], Xn[nj]]), np.concatenate([y[tr], np.full(len(nj), NONE_IDX)]),
                                np.concatenate([rev[tr], np.full(len(nj), np.nan)]), len(CLASSES), ctx.cfg.head,
                                w, ctx.v2.review_weight)
        te = folds == k
        item_logits[te], review_logits[te] = joint_head_logits(head, X[:n][te])
        if (sess_folds == k).any():
            sess_logits[sess_folds == k] = joint_head_logits(head, Xs[sess_folds == k])[0]
    return item_logits, sess_logits, {"encoders": list(encoders), "pooling": "mean", "views": views,
                                      "head": asdict(ctx.cfg.head),
                                      "negatives_per_fold": len(ctx.fold_negatives(0))}, review_logits


def _frozen_encoder(ctx: V2Context, name: str) -> tuple[Encoder, str]:
    """The encoder and its feature-cache tag (features of different encoders never share a cache entry)."""
    if name == "minilm":
        return Encoder(base_encoder_path(), "mean", 128, ctx.device), "base-mean"
    if name == "mpnet":
        return Encoder(_mpnet_folder(ctx), "mean", 128, ctx.device), "mpnet-mean"
    if name == "served":
        path = served_checkpoint(ctx.work_dir) / "encoder"
        return Encoder(path, "mean", 128, ctx.device), f"served-{SERVED_CHECKPOINT_COMMIT[:7]}-mean"
    raise ValueError(f"unknown encoder {name!r}")


def row_minilm_frozen_v2(ctx: V2Context, views: tuple[str, ...] | None = None):
    """Frozen MiniLM (mean pooling, pair/therapist/context views) + the joint head, per fold."""
    return frozen_encoders_cv(ctx, ("minilm",), views or ctx.cfg.views)


def row_minilm_frozen_v2_no_context(ctx: V2Context):
    """The frozen row without the up-to-3 turns of context: whether the context the input carries helps
    (the same features, folds and head; only the view is left out)."""
    return row_minilm_frozen_v2(ctx, tuple(v for v in ctx.cfg.views if v != "context"))


def row_mpnet_frozen_v2(ctx: V2Context):
    """The frozen row on MPNet: whether the stronger encoder helps, measured on CPU with the same folds and
    head over the served model's two views, so it compares with the MiniLM row without the context view
    (MPNet's features take ~40 min on 2 cores, cached under ``--work-dir``; the fine-tuned MPNet row needs
    a GPU)."""
    return frozen_encoders_cv(ctx, ("mpnet",), FT_VIEWS)


def row_served_encoder_head_v2(ctx: V2Context):
    """A new joint head on the served model's own encoder (frozen, its two views), trained on every label:
    the v2 head's idea in these folds, and the control for the row that adds MPNet beside it."""
    return frozen_encoders_cv(ctx, ("served",), FT_VIEWS)


def row_served_encoder_mpnet_head_v2(ctx: V2Context):
    """The served model's encoder and MPNet side by side (both frozen, two views each) under one joint head:
    whether MPNet adds what the fine-tuned MiniLM lacks. A head is all it trains, so a CPU can fit it; the
    GPU config could serve both encoders."""
    return frozen_encoders_cv(ctx, ("served", "mpnet"), FT_VIEWS)


def _mpnet_folder(ctx: V2Context) -> Path:
    if ctx.mpnet_path is None or not (ctx.mpnet_path / "config.json").exists():
        raise RowSkipped(f"no MPNet encoder folder at {ctx.mpnet_path} (--mpnet, or "
                         "`python -m homework_monitor.training.base_encoders mpnet`)")
    return ctx.mpnet_path


def _units(ctx: V2Context):
    units = unlabeled_microdialogues(ctx.data_dir)
    return units, [Example(u.therapist, u.client) for u in units]


def finetuned_cv(ctx: V2Context, name: str, encoder_path: Path, views: Sequence[str], cfg: FinetuneConfig,
                 score_units: bool = False, soft_units: np.ndarray | None = None, head_init: Path | None = None):
    """Fine-tune per fold (+ review output); ``score_units``: each fold model also scores every unlabeled
    microdialogue (``<name>.units.npz``, for distillation); ``soft_units`` [folds, units, 5]: fold k also
    learns those probabilities on the units of sessions outside fold k (a distilled student);
    ``head_init``: the 5-class head each fold starts from (with ``encoder_path``, a trained model)."""
    sess_ex, sess_folds = ctx.session_examples()
    folds, n = ctx.item_folds, len(ctx.real)
    item_logits, review_logits = np.zeros((n, len(CLASSES))), np.zeros(n)
    sess_logits = np.zeros((len(sess_ex), len(CLASSES)))
    units, unit_ex = _units(ctx) if (score_units or soft_units is not None) else ([], [])
    unit_logits = np.zeros((ctx.cfg.n_folds, len(units), len(CLASSES)), np.float32) if score_units else None
    batch = ctx.v2.infer_batch if ctx.device.startswith("cuda") else 64
    started, notes = time.time(), {"views": list(views), "finetune": asdict(cfg), "encoder": encoder_path.name}
    for k in range(ctx.cfg.n_folds):
        train, w = ctx.train_split(k)
        ex, y, rev = [i.example for i in train], np.array([i.y for i in train]), review_target(train)
        soft = None
        if soft_units is not None:
            pick = student_units(units, ctx.fold_of, k, ctx.v2.student_units_per_fold)
            soft = np.vstack([np.full((len(train), len(CLASSES)), np.nan), soft_units[k][pick]])
            ex += [unit_ex[j] for j in pick]
            y = np.concatenate([y, np.zeros(len(pick), int)])
            rev = np.concatenate([rev, np.full(len(pick), np.nan)])
            w = np.concatenate([w, np.full(len(pick), ctx.v2.unit_weight)])
            notes["units_per_fold"] = len(pick)
        model = finetune(encoder_path, ex, y, w, views, "mean", cfg, len(CLASSES), ctx.device,
                         progress=sys.stderr.isatty(), review=rev, soft=soft, head_init=head_init)
        te = np.where(folds == k)[0]
        item_logits[te], review_logits[te] = finetuned_outputs(model, [ctx.real[i].example for i in te], batch)
        ts = np.where(sess_folds == k)[0]
        if len(ts):
            sess_logits[ts] = finetuned_outputs(model, [sess_ex[i] for i in ts], batch)[0]
        if unit_logits is not None:
            unit_logits[k] = finetuned_outputs(model, unit_ex, batch)[0]
        del model
        print(f"[table1_v2] {name}: fold {k + 1}/{ctx.cfg.n_folds} {time.time() - started:.0f} s",
              file=sys.stderr, flush=True)
        ctx.check_time(started, k + 1, ctx.cfg.n_folds, name)
    notes["negatives_per_fold"] = len(ctx.fold_negatives(0))
    if unit_logits is not None:
        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(ctx.results_dir / f"{name}.units.npz", logits=unit_logits.astype(np.float16),
                            session_ids=np.array([u.session_id for u in units]), turns=np.array([u.turn for u in units]))
    return item_logits, sess_logits, notes, review_logits


def student_units(units: Sequence, fold_of: dict[str, int], k: int, cap: int | None, seed: int = 13) -> np.ndarray:
    """Indices of the units student fold k may learn from: none of a session in fold k; at most ``cap``,
    in one seeded order shared by every fold."""
    order = np.random.default_rng(seed).permutation(len(units))
    ok = [j for j in order if fold_of.get(units[j].session_id, -1) != k]
    return np.array(ok[:cap] if cap is not None else ok, dtype=int)


def row_minilm_finetuned_v2(ctx: V2Context):
    return finetuned_cv(ctx, "minilm_finetuned_v2", base_encoder_path(), FT_VIEWS, ctx.v2.ft_minilm,
                        score_units="minilm_finetuned_v2" in ctx.v2.teacher_rows)


def row_minilm_finetuned_v2_pair(ctx: V2Context):
    return finetuned_cv(ctx, "minilm_finetuned_v2_pair", base_encoder_path(), ("pair",), ctx.v2.ft_minilm_pair)


# The served model's torch weights. Its artifact has held only the ONNX graph since db16743, so the
# fine-tuned checkpoint (version minilm_finetuned-d6b40da5, unchanged since) is read from the commit before
# by blob id: git checks every blob's content against its id.
SERVED_CHECKPOINT_COMMIT = "5525396972568e88b3813204a4038674d5eb53c7"
SERVED_CHECKPOINT_BLOBS = {  # path inside the artifact folder -> git blob id at that commit
    "encoder/config.json": "a61edc7503a6068f1ff4c6ee5ad2c021e89db008",
    "encoder/model.safetensors": "5fa90b77821ee2d47fdee6a7c72b1de414221eb2",
    "encoder/tokenizer.json": "327401998c676bd2d7c625039113b0577ea49fe7",
    "encoder/tokenizer_config.json": "0ee10eae17f04aecdefcd761a2f95acd8e5a353a",
    "head.safetensors": "57989ff92c6003dc691f7ae63f1d7183ef281e1f",
}


def served_checkpoint(work_dir: Path, blobs: dict[str, str] = SERVED_CHECKPOINT_BLOBS,
                      repo: Path = Path(__file__).resolve().parent) -> Path:
    """The served model's fine-tuned encoder folder and head (torch weights), written once under
    ``work_dir`` from the git history of ``repo`` (this checkout); RowSkipped where that history is not
    here (a shallow clone, an installed wheel), leaving nothing half-written."""
    out = work_dir / f"served-checkpoint-{SERVED_CHECKPOINT_COMMIT[:7]}"
    if all((out / rel).exists() for rel in blobs):
        return out
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for rel, blob in blobs.items():
        try:
            got = subprocess.run(["git", "cat-file", "blob", blob], cwd=repo, capture_output=True)
        except FileNotFoundError:  # no git here
            got = subprocess.CompletedProcess([], 127, b"", b"")
        if got.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RowSkipped(f"the served checkpoint's {rel} (blob {blob[:12]} of {SERVED_CHECKPOINT_COMMIT[:7]}) "
                             "is not in this clone's git history: run the row in a full clone")
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(got.stdout)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def row_minilm_served_further_v2(ctx: V2Context):
    start = served_checkpoint(ctx.work_dir)
    item, sess, notes, review = finetuned_cv(ctx, "minilm_served_further_v2", start / "encoder", FT_VIEWS,
                                             ctx.v2.ft_served_further, head_init=start / "head.safetensors")
    return item, sess, {**notes, "start": f"served model at {SERVED_CHECKPOINT_COMMIT[:7]}"}, review


def row_minilm_finetuned_v2_ctx(ctx: V2Context):
    return finetuned_cv(ctx, "minilm_finetuned_v2_ctx", base_encoder_path(), (*FT_VIEWS, "context"), ctx.v2.ft_minilm)


def row_mpnet_finetuned_v2(ctx: V2Context):
    return finetuned_cv(ctx, "mpnet_finetuned_v2", _mpnet_folder(ctx), FT_VIEWS, ctx.v2.ft_mpnet,
                        score_units="mpnet_finetuned_v2" in ctx.v2.teacher_rows)


def pick_teacher(ctx: V2Context) -> tuple[str, float, np.ndarray]:
    """The teacher row with the best out-of-fold macro-F1 among those with cached unit scores: its name,
    its out-of-fold temperature, and its per-fold unit logits [folds, units, 5]."""
    y = np.array([i.y for i in ctx.real])
    best = None
    for row in ctx.v2.teacher_rows:
        res, units_p = cached_row(ctx.results_dir, row, ctx.data.data_hash), ctx.results_dir / f"{row}.units.npz"
        if not (isinstance(res, RowResult) and units_p.exists()):
            continue
        logits = res.item_logits
        macro = classification_metrics(y, logits.argmax(1))["macro_f1"]
        if best is None or macro > best[0]:
            best = (macro, row, fit_temperature(logits, y), units_p)
    if best is None:
        raise RowSkipped(f"no teacher with unit scores in {ctx.results_dir} ({', '.join(ctx.v2.teacher_rows)})")
    return best[1], best[2], np.load(best[3])["logits"].astype(np.float64)


def row_minilm_student_v2(ctx: V2Context):
    teacher, T, unit_logits = pick_teacher(ctx)
    soft = np.stack([softmax(unit_logits[k], T) for k in range(len(unit_logits))])
    item, sess, notes, review = finetuned_cv(ctx, "minilm_student_v2", base_encoder_path(), FT_VIEWS,
                                             ctx.v2.ft_student, soft_units=soft)
    return item, sess, {**notes, "teacher": teacher, "teacher_temperature": round(T, 3)}, review


ROW_FUNCS = {"tfidf_lr_v2": row_tfidf_lr_v2, "minilm_frozen_v2": row_minilm_frozen_v2,
             "minilm_frozen_v2_no_context": row_minilm_frozen_v2_no_context, "mpnet_frozen_v2": row_mpnet_frozen_v2,
             "minilm_finetuned_v2_pair": row_minilm_finetuned_v2_pair, "minilm_served_further_v2": row_minilm_served_further_v2,
             "served_encoder_head_v2": row_served_encoder_head_v2,
             "served_encoder_mpnet_head_v2": row_served_encoder_mpnet_head_v2,
             "minilm_finetuned_v2": row_minilm_finetuned_v2, "minilm_finetuned_v2_ctx": row_minilm_finetuned_v2_ctx,
             "mpnet_finetuned_v2": row_mpnet_finetuned_v2, "minilm_student_v2": row_minilm_student_v2}
COMPARED_ROWS = ("minilm_finetuned_v2_pair", "minilm_served_further_v2", "served_encoder_head_v2",
                 "served_encoder_mpnet_head_v2", "minilm_finetuned_v2", "minilm_finetuned_v2_ctx", "mpnet_finetuned_v2",
                 "minilm_student_v2")  # candidates to replace the served model, or rows that start from it
ENCODER_OF: dict[str, str | tuple[str, ...]] = {"minilm_frozen_v2": "minilm", "minilm_frozen_v2_no_context": "minilm", "mpnet_frozen_v2": "mpnet", "minilm_finetuned_v2_pair": "minilm", "minilm_served_further_v2": "minilm",
              "served_encoder_head_v2": "minilm", "served_encoder_mpnet_head_v2": ("minilm", "mpnet"),
              "minilm_finetuned_v2": "minilm", "minilm_finetuned_v2_ctx": "minilm",
              "mpnet_finetuned_v2": "mpnet", "minilm_student_v2": "minilm"}


# ------------------------------------------------------------------------- served artifacts from rows
def row_evaluation(ctx: V2Context, row: str) -> dict:
    """A computed row's out-of-fold evaluation (its temperature and thresholds are the served ones)."""
    res = cached_row(ctx.results_dir, row, ctx.data.data_hash)
    if not isinstance(res, RowResult):
        raise RowSkipped(f"no {row} row for this data in {ctx.results_dir}: its out-of-fold temperature is the "
                         "served one")
    return evaluate_v2(ctx, res)


def write_finetuned_row(ctx: V2Context, row: str, model, cfg: FinetuneConfig, evaluation: dict, out: Path,
                        **extra) -> Path:
    """A model trained on everything, as the served artifact (ONNX encoder, review head beside it), with
    its row's out-of-fold temperature, thresholds and figures."""
    from .export import save_finetuned, write_artifact
    spec_common = dict(temperature=round(evaluation["temperature"], 4), version=f"{row}-{ctx.data.data_hash[:8]}",
                       extra={"row": row, "data_hash": ctx.data.data_hash,
                              "cv_metrics": {k: round(v, 4) for k, v in evaluation["pooled"].items()},
                              "session": evaluation["session"], "thresholds": evaluation["rule"]["thresholds"],
                              **extra})
    return write_artifact(out, lambda staging: save_finetuned(model, cfg, spec_common, staging))


EXPORTABLE = {"minilm_finetuned_v2_pair": (("pair",), "ft_minilm_pair"), "minilm_finetuned_v2": (FT_VIEWS, "ft_minilm")}


def export_row(ctx: V2Context, row: str, out: Path) -> Path:
    """Train a fine-tuned row's recipe on every labelled item (real, synthetic, clinical negatives capped
    as in a fold, review targets) and write it to ``out`` as a served artifact."""
    if row not in EXPORTABLE:
        raise SystemExit(f"--export-row: one of {', '.join(EXPORTABLE)}")
    evaluation = row_evaluation(ctx, row)
    views, cfg_field = EXPORTABLE[row]
    cfg: FinetuneConfig = getattr(ctx.v2, cfg_field)
    items, w = ctx.all_training()
    model = finetune(base_encoder_path(), [i.example for i in items], np.array([i.y for i in items]), w, views,
                     "mean", cfg, len(CLASSES), ctx.device, progress=sys.stderr.isatty(), review=review_target(items))
    return write_finetuned_row(ctx, row, model, cfg, evaluation, out, items=len(items))


def export_student(ctx: V2Context, out: Path) -> Path:
    """Train the served student on everything (all labelled items, all units soft-labelled by the mean
    of the fold teachers) and write it as the served artifact (ONNX encoder), review head beside it."""
    evaluation = row_evaluation(ctx, "minilm_student_v2")
    teacher, T, unit_logits = pick_teacher(ctx)
    soft_units = np.mean([softmax(unit_logits[k], T) for k in range(len(unit_logits))], axis=0)
    items, w = ctx.all_training()
    units, unit_ex = _units(ctx)
    ex = [i.example for i in items] + unit_ex
    y = np.concatenate([[i.y for i in items], np.zeros(len(units), int)])
    soft = np.vstack([np.full((len(items), len(CLASSES)), np.nan), soft_units])
    rev = np.concatenate([review_target(items), np.full(len(units), np.nan)])
    w = np.concatenate([w, np.full(len(units), ctx.v2.unit_weight)])
    cfg = ctx.v2.ft_student
    model = finetune(base_encoder_path(), ex, y, w, FT_VIEWS, "mean", cfg, len(CLASSES), ctx.device,
                     progress=sys.stderr.isatty(), review=rev, soft=soft)
    return write_finetuned_row(ctx, "minilm_student_v2", model, cfg, evaluation, out, teacher=teacher,
                               units=len(units), items=len(items))


# ----------------------------------------------------------------------------------- evaluation
def _hw(y: np.ndarray, pred: np.ndarray) -> dict:
    return binary_metrics(y != NONE_IDX, pred != NONE_IDX)


def evaluate_v2(ctx: V2Context, res: RowResult) -> dict:
    y, folds, clin = np.array([i.y for i in ctx.real]), ctx.item_folds, ctx.clinical
    T = fit_temperature(res.item_logits, y)
    probs = softmax(res.item_logits, T)
    pred = probs.argmax(1)
    per_fold = [classification_metrics(y[folds == k], pred[folds == k])["macro_f1"]
                for k in range(ctx.cfg.n_folds) if (folds == k).any()]
    out = {"pooled": classification_metrics(y, pred), "clinical": classification_metrics(y[clin], pred[clin]),
           "homework_argmax": _hw(y, pred), "homework_argmax_clinical": _hw(y[clin], pred[clin]),
           "macro_fold_mean": float(np.mean(per_fold)), "macro_fold_std": float(np.std(per_fold)),
           "temperature": T, "session": session_level(ctx, softmax(res.session_logits, T), ctx.cfg.threshold),
           "seconds": res.seconds, "where": res.where, "notes": res.notes,
           "n_items": len(y), "n_clinical": int(clin.sum())}
    beta = ctx.v2.beta
    rule_pred, per_fold_thr = cross_fitted(probs, y, folds, lambda p, t: choose_class_thresholds(p, t, beta))
    event_pred, per_fold_event = cross_fitted(probs, y, folds, lambda p, t: choose_event_threshold(p, t, beta))
    out["rule"] = {"beta": beta, "per_fold_thresholds": per_fold_thr,
                   "thresholds": dict(zip(CLASSES, np.round(choose_class_thresholds(probs, y, beta), 2).tolist())),
                   "pooled": classification_metrics(y, rule_pred), "homework": _hw(y, rule_pred),
                   "homework_clinical": _hw(y[clin], rule_pred[clin])}
    out["event_rule"] = {"per_fold_threshold": {k: v[0] for k, v in per_fold_event.items()},
                         "threshold": float(choose_event_threshold(probs, y, beta)[0]),
                         "homework": _hw(y, event_pred), "homework_clinical": _hw(y[clin], event_pred[clin])}
    out["curve"] = homework_curve(probs, y)
    out["curve_clinical"] = homework_curve(probs[clin], y[clin])
    if res.review_logits is not None:
        rt = review_target(ctx.real)
        m = ~np.isnan(rt)
        out["review"] = binary_metrics(rt[m] > 0.5, res.review_logits[m] >= 0.0)  # p >= 0.5
    return out


def served_reference(ctx: V2Context, artifact: Path) -> dict:
    """The served model's probabilities on what it never trained on (the scored items outside real_dev)
    and on every sessions_dev microdialogue; cached in ``served_reference.json`` per model version."""
    from homework_monitor.runtime import OnnxClassifier
    clf = OnnxClassifier(artifact)
    fresh = [i.id for i in ctx.real if i.id not in ctx.real_dev_ids]
    sess_ex, _ = ctx.session_examples()
    path = ctx.results_dir / "served_reference.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached["version"] == clf.version and cached["items"] == fresh and len(cached["sessions"]) == len(sess_ex):
            return {k: np.array(v) if k in ("item_probs", "sessions") else v for k, v in cached.items()}
    by_id = {i.id: i for i in ctx.real}
    ref = {"version": clf.version, "items": fresh,
           "item_probs": clf.predict_proba([by_id[i].example for i in fresh], 32),
           "sessions": clf.predict_proba(sess_ex, 32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: np.round(v, 5).tolist() if isinstance(v, np.ndarray) else v
                                for k, v in ref.items()}) + "\n")
    return ref


LIVE_CURVE_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def against_served(ctx: V2Context, res: RowResult, ref: dict, control: RowResult | None = None) -> dict:
    """A row's out-of-fold figures beside the served model's, on what the served model never trained on:
    the scored items outside real_dev, and the sessions_dev sessions none of whose items are in real_dev.
    Live turns: every therapist turn of those sessions, an event where the served rule fires (p ≥ the
    event threshold), right where the session's annotators marked the turn as assigning homework.
    ``control``: a row this one extends (``CONTROL_OF``); its live turns are compared with this row's too."""
    assert ctx.turn_truth is not None
    threshold = SERVED_EVENT_THRESHOLD
    y_all = np.array([i.y for i in ctx.real])
    keep = np.isin([i.id for i in ctx.real], ref["items"])
    y, clin = y_all[keep], ctx.clinical[keep]
    T = fit_temperature(res.item_logits, y_all)
    seen = {i.session_id for i in ctx.real if i.id in ctx.real_dev_ids}
    sub, unseen = ctx.sessions_only(set(ctx.truth) - seen)
    out = {"n_items": int(keep.sum()), "n_sessions": len(sub.truth), "threshold": threshold}
    live = {}
    for name, items, sessions in (("served", ref["item_probs"], ref["sessions"]),
                                  ("row", softmax(res.item_logits, T)[keep], softmax(res.session_logits, T))):
        live[name] = fires(sessions[unseen], threshold)
        out[name] = {**item_scores(y, items, clin, threshold),
                     "session": session_level(sub, sessions[unseen], threshold),
                     "live_turns": binary_metrics(ctx.turn_truth[unseen], live[name]),
                     # models fire at different rates: compare live precision at equal recall, not equal threshold
                     "live_turns_curve": fires_curve(ctx.turn_truth[unseen], sessions[unseen], LIVE_CURVE_THRESHOLDS)}
    # A few turns or sessions separate the rows here: how sure is the difference in live turns?
    session_of = np.array([state.session_id for state, mds in ctx.sessions for _ in mds])[unseen]
    out["live_turns_difference"] = paired_group_bootstrap(ctx.turn_truth[unseen], live["served"], live["row"],
                                                          session_of)
    if control is not None:
        control_fires = fires(softmax(control.session_logits, fit_temperature(control.item_logits, y_all))[unseen],
                              threshold)
        out["control"] = {"row": control.name,
                          "live_turns": binary_metrics(ctx.turn_truth[unseen], control_fires),
                          "live_turns_difference": paired_group_bootstrap(ctx.turn_truth[unseen], control_fires,
                                                                          live["row"], session_of)}
    return out


def cpu_latency(ctx: V2Context, row: str, res: RowResult) -> dict | None:
    """CPU cost per microdialogue of the row's architecture (encoder + views + head; the weights do not
    change it): torch fp32 on this machine, batches of 32 over 128 real items, after one warm-up; the
    best of 3 runs (the machine is shared: the minimum is the least disturbed). A row over several
    encoders costs their sum. Cached in ``latency_cpu.json`` per encoder and views; None where an encoder
    is not here (MPNet without its folder)."""
    if "cpu_ms_per_microdialogue" in res.notes:
        return {"ms": res.notes["cpu_ms_per_microdialogue"], "how": res.notes.get("latency_how", "")}
    if row not in ENCODER_OF:
        return None
    kind = ENCODER_OF[row]
    encoders = kind if isinstance(kind, tuple) else (kind,)
    views = tuple(res.notes.get("views") or FT_VIEWS)
    path = ctx.results_dir / "latency_cpu.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    keys = [f"{encoder}:{','.join(views)}" for encoder in encoders]
    for encoder, key in zip(encoders, keys):
        if key in cache:
            continue
        enc_path = base_encoder_path() if encoder == "minilm" else ctx.mpnet_path
        if enc_path is None or not (Path(enc_path) / "config.json").exists():
            return None
        import torch
        enc = Encoder(Path(enc_path), "mean", 128, "cpu")
        head = Head(enc.model.config.hidden_size * len(views), 256, len(CLASSES), 0.2).eval()
        sample = _sample_examples(ctx, 128)
        featurize(enc, sample[:32], views)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            with torch.inference_mode():
                head(torch.from_numpy(featurize(enc, sample, views, 32)))
            runs.append(time.perf_counter() - t0)
        cache[key] = {"ms": round(min(runs) * 1000 / len(sample), 2),
                      "how": f"torch fp32, {torch.get_num_threads()} threads, best of 3 x {len(sample)} "
                             f"microdialogues, {platform.node() or 'host'}"}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=2) + "\n")
    if len(keys) == 1:
        return cache[keys[0]]
    return {"ms": round(sum(cache[k]["ms"] for k in keys), 2),
            "how": " + ".join(f"{k} {cache[k]['ms']} ms" for k in keys) + f" ({cache[keys[0]]['how']})"}


# ----------------------------------------------------------------------------------------- report
def _render_against_served(compared: dict[str, dict]) -> list[str]:
    if not compared:
        return []
    first = next(iter(compared.values()))
    lines = ["", "### Against the served model, on what it never trained on", "",
             f"The served model (`{first['served_version']}`) trained on real_dev and the synthetic items. Here it "
             f"and each row's out-of-fold predictions are scored on the {first['n_items']} items outside real_dev "
             f"and the {first['n_sessions']} `sessions_dev` sessions without a real_dev item. Events: top class ≠ "
             f"none with p ≥ {first['threshold']} (the served threshold). **Live turns**: every therapist turn of "
             "those sessions, an event where the rule fires, right where the session's annotators marked the "
             "turn as assigning homework (the closest measure here of live nudges on real sessions).", "",
             "| model | macro-F1 | hw-vs-none F1 | clinical macro-F1 | clinical hw F1 | events P / R / F1 "
             "| clinical events P / R / F1 | session acc / P / R | live turns P / R / F1 |", "|---|" + "---|" * 8]

    def line(title: str, m: dict) -> str:
        s = m["session"]
        return (f"| {title} | {_f(m['pooled']['macro_f1'])} | {_f(m['homework']['f1'])} | "
                f"{_f(m['clinical']['macro_f1'])} | {_f(m['homework_clinical']['f1'])} | "
                f"{_prf(m['events_at_threshold'])} | {_prf(m['events_at_threshold_clinical'])} | "
                f"{_f(s['accuracy'])} / {_f(s['precision'])} / {_f(s['recall'])} | {_prf(m['live_turns'])} |")
    lines.append(line("served model", first["served"]))
    lines += [line(ROW_TITLES[name], c["row"]) for name, c in compared.items()]
    lines += ["", "Live turns at other event thresholds (precision / recall; the rows fire at different rates, so "
              "compare precision at equal recall):", "",
              "| model | " + " | ".join(f"p ≥ {t:g}" for t in LIVE_CURVE_THRESHOLDS) + " |",
              "|---|" + "---|" * len(LIVE_CURVE_THRESHOLDS)]

    def curve(title: str, m: dict) -> str:
        return f"| {title} | " + " | ".join(f"{_f(c['precision'])} / {_f(c['recall'])}" for c in m["live_turns_curve"]) + " |"
    lines.append(curve("served model", first["served"]))
    lines += [curve(ROW_TITLES[name], c["row"]) for name, c in compared.items()]
    diffs = {name: c["live_turns_difference"] for name, c in compared.items() if "live_turns_difference" in c}
    if diffs:
        d0 = next(iter(diffs.values()))
        lines += ["", f"Live turns at p ≥ {first['threshold']}, each row minus the served model, with a "
                  f"{d0['level']:.0%} interval from {d0['resamples']:,} resamples of the {first['n_sessions']} "
                  "sessions (paired: both models on the same resample; a session's turns move together). An "
                  "interval that holds 0 is a difference these sessions cannot tell from chance:", "",
                  "| model | precision difference | its interval | recall difference | its interval |",
                  "|---|---|---|---|---|"]
        for name, c in compared.items():
            if "live_turns_difference" in c:
                lines.append(_difference_line(ROW_TITLES[name], c["row"]["live_turns"], first["served"]["live_turns"],
                                              c["live_turns_difference"]))
        for name, c in compared.items():
            if "control" in c:
                lines.append(_difference_line(f"{ROW_TITLES[name]}, minus {ROW_TITLES[c['control']['row']]}",
                                              c["row"]["live_turns"], c["control"]["live_turns"],
                                              c["control"]["live_turns_difference"]))
        if any("control" in c for c in compared.values()):
            lines += ["", "The interval covers which sessions were drawn, not the head's seed: the frozen-encoder "
                      f"rows train one head (`--head-seed`, default {HeadConfig().seed}), and another seed can move their live "
                      "precision by as much (the model card's \"A stronger encoder\" gives seeds 14 and 15)."]
    return lines


def _difference_line(title: str, row: dict, base: dict, d: dict) -> str:
    def cell(k: str) -> str:
        return f"{row[k] - base[k]:+.3f} | " + (f"{d[k][0]:+.3f} to {d[k][1]:+.3f}" if d[k] is not None else "—")
    return f"| {title} | {cell('precision')} | {cell('recall')} |"


def render_v2(ctx: V2Context, results: dict[str, dict], missing: dict[str, str | None], command: str,
              best: str | None, sweep: list[dict] | None) -> str:
    n_rev = int((~np.isnan(review_target(ctx.real))).sum())
    n_rev_pos = int(np.nansum(review_target(ctx.real)))
    neg0 = len(ctx.fold_negatives(0))
    lines = [f"## Model v2 ({ctx.cfg.name} config): all real labels, clinical supervision, review output", "",
             f"- Date: {dt.date.today().isoformat()}", f"- Command: `{command}`",
             f"- Data hash (sha256 of records: real_dev + synthetic + training/labels/*.jsonl + sessions_dev): "
             f"`{ctx.data.data_hash}`",
             f"- Scored: {len(ctx.real)} real items ({int(ctx.clinical.sum())} from the clinical corpora "
             f"{', '.join(CLINICAL_SOURCES)}), {ctx.cfg.n_folds} folds grouped by `session_id` (each "
             "`sessions_dev` session wholly in one fold). Each fold trains on the other folds' real items, all "
             f"{len(ctx.data.synthetic)} synthetic items and up to {ctx.v2.negatives_cap or 'all'} clinical "
             f"negatives (of {len(ctx.negatives)}: every therapist utterance of a training-fold `sessions_dev` "
             f"session that neither annotator marked and that is not a labelled item; fold 0 used {neg0}).",
             f"- Session level: {len(ctx.sessions)} `sessions_dev` sessions, each by the fold model that never "
             f"saw it, through the stream's summary path (event: top class ≠ none with p ≥ {ctx.cfg.threshold}).",
             f"- Review output: scored on the {n_rev} items with a review annotation; only **{n_rev_pos} are "
             "positive**, so its precision/recall carry wide uncertainty (one item moves recall by "
             f"{100 / max(n_rev_pos, 1):.0f} points). Rows without a review output show —.",
             "- Distillation (student row): the teacher is the best fine-tuned row with unit scores "
             f"({' / '.join(ctx.v2.teacher_rows)}); student fold k learns teacher fold k's temperature-scaled "
             f"probabilities on up to {ctx.v2.student_units_per_fold or 'all'} unlabeled microdialogues of sessions "
             "outside fold k, plus fold k's training items (so fold k's labels and text reach it through no "
             "teacher); the served student learns every labelled item and all unlabeled microdialogues, "
             "soft-labelled by the mean of the fold teachers.",
             "- F1 at argmax of temperature-scaled out-of-fold probabilities; `clinical` = the clinical corpora "
             "only. CPU latency: per microdialogue on this machine (see notes); the GPU rows' training ran "
             "elsewhere, their latency is their architecture's here.", "",
             "| model | practice | take_action | journal | learn | none | macro-F1 | macro ± sd (folds) "
             "| hw-vs-none F1 | clinical macro-F1 | clinical hw F1 | session acc | session P | session R "
             "| review P / R / F1 | CPU ms / microdialogue | where |",
             "|---|" + "---|" * 16]
    for name, r in results.items():
        p, c, s = r["pooled"], r["clinical"], r["session"]
        rv = r.get("review")
        lat = r.get("latency")
        if name in STARTS_FROM_SERVED:
            lines.append(f"| {ROW_TITLES[name]} | not scored here: it starts from the served model's encoder, which "
                         "trained on the real_dev items in these folds; see *Against the served model* |" + " |" * 13
                         + f" {lat['ms'] if lat else '—'} | {r['where']} |")
            continue
        lines.append(
            f"| {ROW_TITLES[name]} | " + " | ".join(_f(p["f1_" + k]) for k in CLASSES) +
            f" | **{_f(p['macro_f1'])}** | {_f(r['macro_fold_mean'])} ± {_f(r['macro_fold_std'])}"
            f" | {_f(p['homework_f1'])} | {_f(c['macro_f1'])} | {_f(c['homework_f1'])}"
            f" | {_f(s['accuracy'])} | {_f(s['precision'])} | {_f(s['recall'])}"
            f" | {(_f(rv['precision']) + ' / ' + _f(rv['recall']) + ' / ' + _f(rv['f1'])) if rv else '—'}"
            f" | {lat['ms'] if lat else '—'} | {r['where']} |")
    for name, stale in missing.items():
        how = (f"not computed{f' on this data (only on data `{stale}`)' if stale else ''}: "
               f"`python -m homework_monitor.training.table1_v2 --rows {name}`" if name in CPU_ROWS
               else "needs GPU: `bash training/gpu_run_v2.sh`")
        lines.append(f"| {ROW_TITLES[name]} | {how} |" + " |" * 15)
    if set(missing) - set(CPU_ROWS):
        lines += ["", "Rows marked *needs GPU* have not been run: no figure is claimed for them. To run them: "
                  "`bash training/gpu_pack_v2.sh` here (the payload in ~10 MB parts: a device call carries at most "
                  "64 MiB with the working tree, which holds the ~45 MB served model), one device call per part "
                  "(header of that script), the last one running `bash training/gpu_run_v2.sh`; then untar "
                  "`results_v2.tgz` into `training/results_v2/` and rerun this command. MPNet's ~220 MB (fp16) "
                  "need about 22 more calls: more than one session's 15 device minutes allow."]
    lines += _render_against_served({n: r["against_served"] for n, r in results.items() if r.get("against_served")})
    lines += ["", "### Decision rule (out of fold)", "",
              f"Event = top class c ≠ none with p(c) ≥ t_c. Thresholds maximise F{ctx.v2.beta:g} (precision "
              "first) and are cross-fitted: fold k's items are decided by thresholds chosen on the other folds' "
              "out-of-fold probabilities only. `per-class` chooses t_c per homework class, `one threshold` a "
              "single t for all. Thresholds listed are the ones chosen on all folds (for serving).", "",
              "| model | rule | hw P | hw R | hw F1 | clinical hw P | clinical hw R | clinical hw F1 | macro-F1 "
              "| thresholds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name in STARTS_FROM_SERVED:  # thresholds chosen on probabilities partly in sample
            continue
        rows = [("argmax", r["homework_argmax"], r["homework_argmax_clinical"], r["pooled"]["macro_f1"], "—"),
                ("per-class", r["rule"]["homework"], r["rule"]["homework_clinical"], r["rule"]["pooled"]["macro_f1"],
                 ", ".join(f"{k} {v:.2f}" for k, v in r["rule"]["thresholds"].items() if k != "none")),
                ("one threshold", r["event_rule"]["homework"], r["event_rule"]["homework_clinical"], None,
                 f"{r['event_rule']['threshold']:.2f}")]
        for rule, hw, hc, macro, thr in rows:
            lines.append(f"| {ROW_TITLES[name]} | {rule} | {_f(hw['precision'])} | {_f(hw['recall'])} | {_f(hw['f1'])}"
                         f" | {_f(hc['precision'])} | {_f(hc['recall'])} | {_f(hc['f1'])}"
                         f" | {_f(macro) if macro is not None else '—'} | {thr} |")
    if best:
        r = results[best]
        lines += ["", f"### Homework-vs-none precision/recall curve ({ROW_TITLES[best]}, items)", "",
                  "| threshold | P | R | F1 | clinical P | clinical R | clinical F1 |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {a['threshold']:.2f} | {_f(a['precision'])} | {_f(a['recall'])} | {_f(a['f1'])} | "
                  f"{_f(b['precision'])} | {_f(b['recall'])} | {_f(b['f1'])} |"
                  for a, b in zip(r["curve"], r["curve_clinical"])]
    if sweep:
        lines += ["", f"### Session rule ({ROW_TITLES[best]})", "",
                  "Out-of-fold session predictions at each event threshold (top class ≠ none and p ≥ t):", "",
                  "| threshold | accuracy | precision | recall |", "|---|---|---|---|"]
        lines += [f"| {s['threshold']:.2f} | {_f(s['accuracy'])} | {_f(s['precision'])} | {_f(s['recall'])} |"
                  for s in sweep]
    lines += ["", "### Row notes", ""]
    for name, r in results.items():
        lat = r.get("latency")
        lines.append(f"- **{ROW_TITLES[name]}**: {r['seconds']} s; T {r['temperature']:.2f}; "
                     f"latency: {lat['how'] if lat else '—'}; {json.dumps(r['notes'], default=str)}")
    return "\n".join(lines) + "\n"


def default_mpnet() -> Path | None:
    if os.environ.get("HWM_MPNET_ENCODER"):
        return Path(os.environ["HWM_MPNET_ENCODER"])
    from .base_encoders import DEFAULT_CACHE, MPNET
    path = MPNET.cached_path(DEFAULT_CACHE)
    return path if path.is_dir() else None


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="full")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--labels-dir", type=Path, default=ADDED_LABELS_DIR)
    p.add_argument("--rows", default=",".join(CPU_ROWS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--work-dir", type=Path, default=Path("var") / "table1_v2")
    p.add_argument("--output", type=Path, default=Path("training") / "RESULTS.md")
    p.add_argument("--mpnet", type=Path, default=None, help="MPNet encoder folder (default: HWM_MPNET_ENCODER "
                   "or the base_encoders cache)")
    p.add_argument("--deadline-s", type=float, default=None, help="stop rows that would end later than this")
    p.add_argument("--recompute", action="store_true", help="ignore cached row results")
    p.add_argument("--head-seed", type=int, default=None,
                   help="seed of the frozen rows' heads (how much of a difference is the head's seed?); "
                        "needs a --results-dir of its own, since cached rows are found by name")
    p.add_argument("--no-report", action="store_true", help="compute the rows only")
    p.add_argument("--served", type=Path, default=SERVED_ARTIFACT,
                   help="the served artifact the rows are compared with (on what it never trained on)")
    p.add_argument("--export-row", nargs=2, default=None, metavar=("ROW", "OUT"),
                   help=f"train a fine-tuned row ({', '.join(EXPORTABLE)}) on everything and write its artifact to OUT")
    p.add_argument("--export-student", type=Path, default=None, metavar="OUT",
                   help="then train the served student on everything and write its artifact to OUT")
    a = p.parse_args(argv)
    cfg = CONFIGS[a.config]
    if a.head_seed is not None:
        if a.results_dir == RESULTS_DIR:
            raise SystemExit("--head-seed gives rows other than the committed ones: give them a --results-dir")
        cfg = replace(cfg, head=replace(cfg.head, seed=a.head_seed))
    deadline = time.time() + a.deadline_s if a.deadline_s is not None else None
    ctx = build_v2_context(cfg, a.data_dir, a.labels_dir, a.device, a.work_dir / cfg.name, a.results_dir,
                           deadline, a.mpnet or default_mpnet())
    rows = [r for r in a.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; rows: {', '.join(ROWS)}")
    for name in rows:
        if not isinstance(cached_row(a.results_dir, name, ctx.data.data_hash), RowResult) or a.recompute:
            print(f"[table1_v2] {name} ...", file=sys.stderr, flush=True)
            try:
                if deadline is not None and time.time() >= deadline:
                    raise RowSkipped("the deadline has passed")
                run_row(ctx, name, a.results_dir, a.recompute, ROW_FUNCS)
                print(f"[table1_v2] {name} done", file=sys.stderr, flush=True)
            except RowSkipped as e:
                print(f"[table1_v2] {name} SKIPPED: {e}", file=sys.stderr, flush=True)
    if a.export_row is not None:
        print(json.dumps({"exported": str(export_row(ctx, a.export_row[0], Path(a.export_row[1])))}), flush=True)
    if a.export_student is not None:
        try:
            print(json.dumps({"exported": str(export_student(ctx, a.export_student))}), flush=True)
        except RowSkipped as e:
            print(f"[table1_v2] served student SKIPPED: {e}", file=sys.stderr, flush=True)
    if a.no_report:
        return {}
    # The report shows every row whose result is cached for this data, in table order; the rest are listed
    # as missing (with the data a stale result was computed on).
    cached = {name: cached_row(a.results_dir, name, ctx.data.data_hash) for name in ROWS}
    computed = {name: res for name, res in cached.items() if isinstance(res, RowResult)}
    missing = {name: res for name, res in cached.items() if not isinstance(res, RowResult)}
    results = {}
    # The served model's figures are computed (once, then cached) only when a candidate row is in the report.
    ref = None
    if ctx.turn_truth is not None and (a.served / "model.json").exists() and set(computed) & set(COMPARED_ROWS):
        ref = served_reference(ctx, a.served)
    for name, res in computed.items():
        results[name] = evaluate_v2(ctx, res) | {"latency": cpu_latency(ctx, name, res)}
        if ref is not None and name in COMPARED_ROWS:
            results[name]["against_served"] = against_served(ctx, res, ref, computed.get(CONTROL_OF.get(name, ""))) | {
                "served_version": ref["version"]}
        print(f"[table1_v2] {name}: macro-F1 {results[name]['pooled']['macro_f1']:.3f} "
              f"hw-F1 {results[name]['pooled']['homework_f1']:.3f} "
              f"clinical hw-F1 {results[name]['clinical']['homework_f1']:.3f}", file=sys.stderr, flush=True)
    candidates = [r for r in results if r not in STARTS_FROM_SERVED]
    best = max(candidates, key=lambda r: results[r]["pooled"]["macro_f1"]) if candidates else None
    sweep = None
    if best and ctx.sessions:
        sweep = threshold_sweep(ctx, computed[best], results[best]["temperature"])
    command = "python -m homework_monitor.training.table1_v2 " + " ".join(argv if argv is not None else sys.argv[1:])
    body = render_v2(ctx, results, missing, command.strip(), best, sweep)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    old = a.output.read_text() if a.output.exists() else ""
    a.output.write_text(with_sections(old, a.output, {"v2": body}))
    a.output.with_name(a.output.stem + "_v2.json").write_text(json.dumps(
        {"best": best, "config": cfg.name, "data_hash": ctx.data.data_hash, "missing": list(missing),
         # their pooled figures are partly in sample (the start trained on real_dev): read their against_served
         "starts_from_served": [r for r in results if r in STARTS_FROM_SERVED],
         "rows": {k: {kk: v for kk, v in r.items() if kk not in ("notes",)} for k, r in results.items()},
         "session_sweep": sweep}, indent=2, default=float))
    print(body)
    return results


if __name__ == "__main__":
    main()
