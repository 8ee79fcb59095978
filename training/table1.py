"""Rebuild the paper's Table 1 on our data: grouped cross-validation over REAL items only.

Rows (same folds for all): TF-IDF+LR, Doc2Vec+LR, frozen MiniLM + head, MiniLM fine-tuned end to end,
TSDAE (no NSP) + head, TSDAE+NSP + head (the paper's model). Each fold trains on the other folds'
real items plus all synthetic items, and predicts its own real items and every microdialogue of its
own ``sessions_dev`` sessions; session-level results go through the stream's summarize path.

Each row's out-of-fold logits are cached in ``--results-dir`` (``<row>.json``), so the rows that need
a GPU can be computed on one (``--device cuda --rows ...``) and the table assembled anywhere.

  python -m homework_monitor.training.table1 --config full                 # writes training/RESULTS.md
  python -m homework_monitor.training.table1 --config smoke --data-dir tests/fixtures/data --results-dir /tmp/t1
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from homework_monitor.model import Encoder, Example, base_encoder_path
from homework_monitor.stream.config import default_data_dir
from homework_monitor.stream.offline import summarize_all, windowed_sessions
from homework_monitor.stream.schemas import CLASSES
from homework_monitor.stream.windowing import WindowConfig

from .data import LabeledData, corpus_paths, load_labeled_data, read_jsonl, session_folds, unlabeled_microdialogues
from .finetune import FinetuneConfig, finetune, finetuned_logits
from .head import HeadConfig, expected_calibration_error, fit_temperature, head_logits, softmax, train_head
from .metrics import classification_metrics, session_metrics
from .pretrain import CONFIGS as PRETRAIN_CONFIGS
from .pretrain import PretrainConfig, pretrain

ROWS = ("tfidf_lr", "doc2vec_lr", "minilm_frozen", "minilm_finetuned", "tsdae_only", "tsdae_nsp")
ROW_TITLES = {"tfidf_lr": "TF-IDF + LR", "doc2vec_lr": "Doc2Vec + LR",
              "minilm_frozen": "MiniLM frozen + head", "minilm_finetuned": "MiniLM fine-tuned end to end",
              "tsdae_only": "TSDAE (no NSP) + head", "tsdae_nsp": "TSDAE + NSP + head (paper's model)"}
ENCODER_ROWS = {"minilm_frozen", "minilm_finetuned", "tsdae_only", "tsdae_nsp"}


@dataclass(frozen=True)
class Table1Config:
    name: str
    n_folds: int
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    head: HeadConfig
    views: tuple[str, ...] = ("pair", "therapist", "context")
    doc2vec_epochs: int = 20
    threshold: float = 0.5


CONFIGS = {
    "smoke": Table1Config("smoke", 3, PRETRAIN_CONFIGS["smoke"],
                          FinetuneConfig(epochs=1, max_steps=2, batch_size=8, max_length=48),
                          HeadConfig(epochs=5), doc2vec_epochs=2),
    "full": Table1Config("full", 5, PRETRAIN_CONFIGS["full"], FinetuneConfig(), HeadConfig()),
}


@dataclass
class Context:
    cfg: Table1Config
    data_dir: Path
    data: LabeledData
    fold_of: dict[str, int]
    sessions: list  # (SessionState, [Microdialogue]) per sessions_dev session found in corpora
    truth: dict[str, bool | None]
    device: str
    work_dir: Path

    @property
    def real(self):
        return self.data.real

    @property
    def item_folds(self) -> np.ndarray:
        return np.array([self.fold_of[i.session_id] for i in self.real])

    def session_examples(self) -> tuple[list[Example], np.ndarray]:
        ex, folds = [], []
        for state, mds in self.sessions:
            ex += [m.example() for m in mds]
            folds += [self.fold_of[state.session_id]] * len(mds)
        return ex, np.array(folds, dtype=int)

    def sessions_only(self, keep: set[str]) -> tuple[Context, np.ndarray]:
        """This context on the sessions in ``keep`` only, and the mask of their microdialogues among
        all (in ``session_examples`` order)."""
        sub = replace(self, sessions=[s for s in self.sessions if s[0].session_id in keep],
                      truth={k: v for k, v in self.truth.items() if k in keep})
        return sub, np.array([state.session_id in keep for state, mds in self.sessions for _ in mds], dtype=bool)

    def train_split(self, k: int) -> tuple[list, np.ndarray]:
        """Fold k's training items (other folds' real + all synthetic) and their sample weights."""
        items = [i for i in self.real if self.fold_of[i.session_id] != k] + self.data.synthetic
        w = np.array([self.cfg.head.real_weight if i.real else 1.0 for i in items])
        return items, w


@dataclass(frozen=True)
class DevSessions:
    """The ``sessions_dev`` sessions: their truth rows, and the sessions found in the corpora."""
    rows: list[dict]
    sessions: list[tuple[str, dict]]  # (corpus name, session), sorted by session_id

    @property
    def truth(self) -> dict[str, bool | None]:
        return {r["session_id"]: r["homework"] for r in self.rows}

    def windowed(self) -> list:
        return list(windowed_sessions([s for _, s in self.sessions], WindowConfig()))

    def assigning_turns(self, windowed: list) -> np.ndarray:
        """Per microdialogue of ``windowed`` (in order): the session's annotators marked its therapist
        turn as assigning homework (``turns``): the truth of a live event on that turn."""
        marked = {r["session_id"]: set(r.get("turns") or []) for r in self.rows}
        return np.array([m.turn in marked[state.session_id] for state, mds in windowed for m in mds], dtype=bool)


def load_dev_sessions(data_dir: Path) -> DevSessions:
    rows = list(read_jsonl(data_dir / "labeled" / "sessions_dev.jsonl"))
    wanted = {r["session_id"] for r in rows}
    found = [(p.parent.name, s) for p in corpus_paths(data_dir) for s in read_jsonl(p) if s["session_id"] in wanted]
    return DevSessions(rows, sorted(found, key=lambda x: x[1]["session_id"]))


def build_context(cfg: Table1Config, data_dir: Path, device: str, work_dir: Path) -> Context:
    data = load_labeled_data(data_dir)
    dev = load_dev_sessions(data_dir)
    fold_of = session_folds([i.session_id for i in data.real] + list(dev.truth), cfg.n_folds)
    return Context(cfg, data_dir, data, fold_of, dev.windowed(), dev.truth, device, work_dir)


@dataclass
class RowResult:
    name: str
    item_logits: np.ndarray  # [n_real, 5], out of fold
    session_logits: np.ndarray  # [n_session_microdialogues, 5], out of fold
    seconds: float
    where: str
    notes: dict = field(default_factory=dict)
    review_logits: np.ndarray | None = None  # [n_real], out of fold, for rows with the review output
    # The labelled data the logits belong to: row i of item_logits is item i of that data only.
    data_hash: str | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "item_logits": self.item_logits.round(5).tolist(),
               "session_logits": self.session_logits.round(5).tolist(), "seconds": self.seconds,
               "where": self.where, "notes": self.notes, "data_hash": self.data_hash}
        if self.review_logits is not None:
            out["review_logits"] = self.review_logits.round(5).tolist()
        return out

    @classmethod
    def from_json(cls, d: dict) -> RowResult:
        review = d.get("review_logits")
        return cls(d["name"], np.array(d["item_logits"], dtype=np.float64).reshape(-1, len(CLASSES)),
                   np.array(d["session_logits"], dtype=np.float64).reshape(-1, len(CLASSES)),
                   d["seconds"], d["where"], d.get("notes", {}),
                   None if review is None else np.array(review, dtype=np.float64), d.get("data_hash"))


def _text(e: Example) -> str:
    return f"{e.therapist} [SEP] {e.client or ''}"


def _cv_sklearn(ctx: Context, fit_predict: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Shared fold loop for the bag-of-words style rows: fit_predict(train_items, w, [test examples])."""
    sess_ex, sess_folds = ctx.session_examples()
    item_logits = np.zeros((len(ctx.real), len(CLASSES)))
    sess_logits = np.zeros((len(sess_ex), len(CLASSES)))
    folds = ctx.item_folds
    for k in range(ctx.cfg.n_folds):
        train, w = ctx.train_split(k)
        te_items = np.where(folds == k)[0]
        te_sess = np.where(sess_folds == k)[0]
        tests = [ctx.real[i].example for i in te_items] + [sess_ex[i] for i in te_sess]
        out = fit_predict(train, w, tests)
        item_logits[te_items] = out[: len(te_items)]
        sess_logits[te_sess] = out[len(te_items):]
    return item_logits, sess_logits


def _logreg(X, y, w):
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=4.0, class_weight="balanced", max_iter=3000)
    clf.fit(X, y, sample_weight=w)
    return clf


def _full_proba(clf, X) -> np.ndarray:
    """Log-probabilities over all 5 classes, even when a fold lacked one."""
    out = np.full((X.shape[0], len(CLASSES)), -20.0)
    out[:, clf.classes_] = np.log(np.clip(clf.predict_proba(X), 1e-9, 1))
    return out


def fit_tfidf_lr(train, w) -> Callable[[Sequence[Example]], np.ndarray]:
    """TF-IDF (1-2 grams) + logistic regression on the items; returns examples -> log-probabilities."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train) > 200 else 1, sublinear_tf=True)
    X = vec.fit_transform([_text(i.example) for i in train])
    clf = _logreg(X, np.array([i.y for i in train]), w)
    return lambda tests: _full_proba(clf, vec.transform([_text(e) for e in tests]))


def row_tfidf_lr(ctx: Context) -> tuple[np.ndarray, np.ndarray, dict]:
    return (*_cv_sklearn(ctx, lambda train, w, tests: fit_tfidf_lr(train, w)(tests)), {})


def row_doc2vec_lr(ctx: Context) -> tuple[np.ndarray, np.ndarray, dict]:
    from gensim.models.doc2vec import Doc2Vec, TaggedDocument
    from gensim.utils import simple_preprocess
    # Doc2Vec is unsupervised: it learns from every unlabeled microdialogue plus the item texts.
    units = unlabeled_microdialogues(ctx.data_dir)
    corpus = [f"{u.therapist} {u.client or ''}" for u in units] + \
             [_text(i.example) for i in ctx.real + ctx.data.synthetic]
    docs = [TaggedDocument(simple_preprocess(t), [i]) for i, t in enumerate(corpus)]
    d2v = Doc2Vec(docs, vector_size=128, window=5, min_count=2, epochs=ctx.cfg.doc2vec_epochs,
                  workers=2, seed=13)

    def vec(texts):
        return np.stack([d2v.infer_vector(simple_preprocess(t), epochs=20) for t in texts])

    def fit_predict(train, w, tests):
        from sklearn.preprocessing import StandardScaler
        sc = StandardScaler().fit(vec([_text(i.example) for i in train]))
        clf = _logreg(sc.transform(vec([_text(i.example) for i in train])), np.array([i.y for i in train]), w)
        return _full_proba(clf, sc.transform(vec([_text(e) for e in tests])))
    return (*_cv_sklearn(ctx, fit_predict), {"doc2vec_units": len(corpus)})


def _frozen_features(ctx: Context, encoder_path: Path, pooling: str, tag: str):
    from .features import cached_features
    enc = Encoder(encoder_path, pooling, 128, ctx.device)
    cache = ctx.work_dir / "features"
    all_items = ctx.real + ctx.data.synthetic
    X = cached_features(enc, tag, [i.example for i in all_items], ctx.cfg.views, cache)
    sess_ex, _ = ctx.session_examples()
    Xs = cached_features(enc, tag, sess_ex, ctx.cfg.views, cache)
    return X, Xs


def frozen_head_cv(ctx: Context, X: np.ndarray, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(ctx.real)
    y = np.array([i.y for i in ctx.real + ctx.data.synthetic])
    _, sess_folds = ctx.session_examples()
    folds = ctx.item_folds
    item_logits = np.zeros((n, len(CLASSES)))
    sess_logits = np.zeros((len(Xs), len(CLASSES)))
    for k in range(ctx.cfg.n_folds):
        tr = np.concatenate([np.where(folds != k)[0], np.arange(n, len(y))])
        w = np.where(tr < n, ctx.cfg.head.real_weight, 1.0)
        head = train_head(X[tr], y[tr], len(CLASSES), ctx.cfg.head, w)
        item_logits[folds == k] = head_logits(head, X[:n][folds == k])
        if (sess_folds == k).any():
            sess_logits[sess_folds == k] = head_logits(head, Xs[sess_folds == k])
    return item_logits, sess_logits


def pretrained_encoder(ctx: Context, nsp: bool) -> Path:
    out = ctx.work_dir / ("tsdae_nsp" if nsp else "tsdae_only")
    if (out / "encoder" / "config.json").exists() and (out / "pretrain.json").exists():
        return out / "encoder"
    cfg = ctx.cfg.pretrain if nsp else replace(ctx.cfg.pretrain, nsp_weight=0.0)
    units = unlabeled_microdialogues(ctx.data_dir, cfg.sources)
    if cfg.max_units:
        units = units[: cfg.max_units]
    pretrain(units, cfg, out, ctx.device, progress=sys.stderr.isatty())
    return out / "encoder"


def row_minilm_frozen(ctx: Context):
    X, Xs = _frozen_features(ctx, base_encoder_path(), "mean", "base-mean")
    return (*frozen_head_cv(ctx, X, Xs), {"pooling": "mean", "views": ctx.cfg.views})


def _tsdae_row(ctx: Context, nsp: bool):
    enc = pretrained_encoder(ctx, nsp)
    X, Xs = _frozen_features(ctx, enc, "cls", f"{'tsdae_nsp' if nsp else 'tsdae_only'}-{ctx.cfg.name}-cls")
    report = json.loads((enc.parent / "pretrain.json").read_text())
    return (*frozen_head_cv(ctx, X, Xs), {"pooling": "cls", "views": ctx.cfg.views,
                                          "pretrain": {k: report[k] for k in ("steps", "seconds", "device", "units")},
                                          "pretrain_loss_last_100": report["mean_loss_last_100"]})


def row_tsdae_only(ctx: Context):
    return _tsdae_row(ctx, nsp=False)


def row_tsdae_nsp(ctx: Context):
    return _tsdae_row(ctx, nsp=True)


def row_minilm_finetuned(ctx: Context):
    sess_ex, sess_folds = ctx.session_examples()
    folds = ctx.item_folds
    item_logits = np.zeros((len(ctx.real), len(CLASSES)))
    sess_logits = np.zeros((len(sess_ex), len(CLASSES)))
    views = ("pair", "therapist")
    for k in range(ctx.cfg.n_folds):
        train, w = ctx.train_split(k)
        model = finetune(base_encoder_path(), [i.example for i in train], np.array([i.y for i in train]),
                         w, views, "mean", ctx.cfg.finetune, len(CLASSES), ctx.device)
        te = np.where(folds == k)[0]
        item_logits[te] = finetuned_logits(model, [ctx.real[i].example for i in te])
        ts = np.where(sess_folds == k)[0]
        if len(ts):
            sess_logits[ts] = finetuned_logits(model, [sess_ex[i] for i in ts])
        del model
    return item_logits, sess_logits, {"views": views, "finetune": asdict(ctx.cfg.finetune)}


ROW_FUNCS = {"tfidf_lr": row_tfidf_lr, "doc2vec_lr": row_doc2vec_lr, "minilm_frozen": row_minilm_frozen,
             "minilm_finetuned": row_minilm_finetuned, "tsdae_only": row_tsdae_only,
             "tsdae_nsp": row_tsdae_nsp}


def run_row(ctx: Context, name: str, results_dir: Path, recompute: bool = False,
            funcs: dict[str, Callable] | None = None) -> RowResult:
    """The row's cached result, or compute it with ``funcs[name](ctx)`` (-> item logits, session
    logits, notes[, review logits]) and cache it. A cached result of other labelled data is computed
    again: its logits are aligned with that data's items, not these."""
    cached = cached_row(results_dir, name, ctx.data.data_hash)
    if isinstance(cached, RowResult) and not recompute:
        return cached
    t0 = time.time()
    item_logits, sess_logits, notes, *review = (funcs or ROW_FUNCS)[name](ctx)
    res = RowResult(name, item_logits, sess_logits, round(time.time() - t0, 1),
                    f"{platform.node() or 'host'} ({ctx.device})", notes, review[0] if review else None,
                    ctx.data.data_hash)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(res.to_json()))
    return res


def cached_row(results_dir: Path, name: str, data_hash: str) -> RowResult | str | None:
    """The row's cached result; None where there is none; the data hash it was computed on where that is
    not ``data_hash`` (stale: scoring it against these items would misalign them)."""
    path = results_dir / f"{name}.json"
    if not path.exists():
        return None
    res = RowResult.from_json(json.loads(path.read_text()))
    return res if res.data_hash == data_hash else str(res.data_hash)


def evaluate_row(ctx: Context, res: RowResult, threshold: float) -> dict:
    y = np.array([i.y for i in ctx.real])
    folds = ctx.item_folds
    T = fit_temperature(res.item_logits, y)
    probs = softmax(res.item_logits, T)
    pred = probs.argmax(1)
    per_fold = [classification_metrics(y[folds == k], pred[folds == k]) for k in range(ctx.cfg.n_folds)
                if (folds == k).any()]
    pooled = classification_metrics(y, pred)
    spread = {k: float(np.std([f[k] for f in per_fold])) for k in pooled}
    fold_mean = {k: float(np.mean([f[k] for f in per_fold])) for k in pooled}
    sess = session_level(ctx, softmax(res.session_logits, T), threshold)
    return {"pooled": pooled, "fold_mean": fold_mean, "fold_std": spread, "temperature": T,
            "ece": expected_calibration_error(probs, y), "session": sess, "seconds": res.seconds,
            "where": res.where, "notes": res.notes}


def session_level(ctx: Context, sess_probs: np.ndarray, threshold: float) -> dict:
    summaries = summarize_all(ctx.sessions, sess_probs, threshold, "table1", 0.0)
    return session_metrics(ctx.truth, {s.session_id: s.homework_assigned for s in summaries})


def threshold_sweep(ctx: Context, res: RowResult, T: float) -> list[dict]:
    probs = softmax(res.session_logits, T)
    return [{"threshold": t, **session_level(ctx, probs, t)} for t in np.round(np.arange(0.3, 0.96, 0.05), 2)]


def render_markdown(ctx: Context, results: dict[str, dict], command: str, sweep: list[dict] | None,
                    best: str) -> str:
    lines = [f"# Table 1 on our data ({ctx.cfg.name} config)", "",
             f"- Date: {dt.date.today().isoformat()}",
             f"- Command: `{command}`",
             f"- Labeled data hash (sha256 of records, real_dev + synthetic): `{ctx.data.data_hash}`",
             f"- Evaluation: {ctx.cfg.n_folds}-fold cross-validation grouped by `session_id` over the "
             f"{len(ctx.real)} REAL items of `real_dev.jsonl`; each fold trains on the other folds' real "
             f"items plus all {len(ctx.data.synthetic)} synthetic items. Synthetic items are never scored.",
             f"- Session level: {len(ctx.sessions)} `sessions_dev` sessions, each predicted by the fold "
             "model that never saw it, through the stream's windowing + `decide` + summary path "
             f"(homework = any microdialogue whose top class is not `none` with p ≥ {ctx.cfg.threshold} in the table).",
             "- F1 columns are pooled over all out-of-fold predictions; `macro ± sd` is the mean and "
             "standard deviation of per-fold macro-F1. Probabilities are temperature-scaled on the "
             "out-of-fold logits (T, ECE after scaling).",
             "- Provenance: each row's out-of-fold logits are cached in `training/results/<row>.json`; "
             "this command reuses them (`--recompute` redoes a row). Rows whose `where` says `cuda` ran on "
             "an NVIDIA H100 through `bash training/gpu_run.sh` (TSDAE pretraining: 1,500 steps × 64 "
             "microdialogues, all 21,275 unlabeled microdialogues of every corpus; unlabeled text of "
             "evaluation sessions is included, their labels are not).", "",
             "| model | practice | take_action | journal | learn | none | macro-F1 | macro ± sd (folds) "
             "| homework-vs-none F1 | session acc | session P | session R | T | ECE | where |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        p, s = r["pooled"], r["session"]
        lines.append(
            f"| {ROW_TITLES[name]} | " + " | ".join(f"{p['f1_' + c]:.3f}" for c in CLASSES) +
            f" | **{p['macro_f1']:.3f}** | {r['fold_mean']['macro_f1']:.3f} ± {r['fold_std']['macro_f1']:.3f}"
            f" | {p['homework_f1']:.3f} | {s['accuracy']:.3f} | {s['precision']:.3f} | {s['recall']:.3f}"
            f" | {r['temperature']:.2f} | {r['ece']:.3f} | {r['where']} |")
    lines += ["", "Paper (Peretz et al. 2023, Table 1): TSDAE+NSP model macro-F1 0.719; TF-IDF 0.483.", ""]
    if "tfidf_lr" in results and best in results:
        ratio = results[best]["pooled"]["macro_f1"] / max(results["tfidf_lr"]["pooled"]["macro_f1"], 1e-9)
        lines.append(f"Served model: **{ROW_TITLES[best]}** (best pooled macro-F1); {ratio:.2f}× the TF-IDF row.")
        lines.append("")
    if sweep:
        lines += [f"## Session-level decision rule ({ROW_TITLES[best]})", "",
                  "Out-of-fold session predictions at each event threshold (top class ≠ none and p ≥ t):", "",
                  "| threshold | accuracy | precision | recall |", "|---|---|---|---|"]
        lines += [f"| {r['threshold']:.2f} | {r['accuracy']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |"
                  for r in sweep]
        lines.append("")
    lines += ["## Row notes", ""]
    for name, r in results.items():
        lines.append(f"- **{ROW_TITLES[name]}**: {r['seconds']} s; {json.dumps(r['notes'], default=str)}")
    return "\n".join(lines) + "\n"


_SECTION = re.compile(r"<!-- section:([\w-]+):begin -->\n(.*?)\n<!-- section:\1:end -->\n?", re.S)


def with_sections(text: str, path: Path, replace: dict[str, str] | None = None) -> str:
    """``text`` (its own sections dropped) followed by the sections of the report now at ``path``,
    with ``replace``'s set or added: a section is a block another command owns in the same file
    (``table1_v2``'s results in RESULTS.md), so rerunning one command keeps the other's block."""
    blocks = dict(_SECTION.findall(path.read_text())) if path.exists() else {}
    blocks.update(replace or {})
    return _SECTION.sub("", text).rstrip() + "\n" + "".join(
        f"\n<!-- section:{n}:begin -->\n{b.rstrip()}\n<!-- section:{n}:end -->\n" for n, b in blocks.items())


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="full")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--results-dir", type=Path, default=Path("training") / "results")
    p.add_argument("--work-dir", type=Path, default=Path("var") / "table1")
    p.add_argument("--output", type=Path, default=Path("training") / "RESULTS.md")
    p.add_argument("--recompute", action="store_true", help="ignore cached row results")
    p.add_argument("--no-report", action="store_true", help="compute the rows only")
    a = p.parse_args(argv)
    cfg = CONFIGS[a.config]
    rows = [r for r in a.rows.split(",") if r]
    ctx = build_context(cfg, a.data_dir, a.device, a.work_dir / cfg.name)
    results, computed = {}, {}
    for name in rows:
        print(f"[table1] {name} ...", file=sys.stderr, flush=True)
        computed[name] = run_row(ctx, name, a.results_dir, a.recompute)
        results[name] = evaluate_row(ctx, computed[name], cfg.threshold)
        print(f"[table1] {name}: macro-F1 {results[name]['pooled']['macro_f1']:.3f} "
              f"homework-F1 {results[name]['pooled']['homework_f1']:.3f} "
              f"session acc {results[name]['session']['accuracy']:.3f}", file=sys.stderr, flush=True)
    if a.no_report:
        return results
    best = max(results, key=lambda r: results[r]["pooled"]["macro_f1"])
    sweep = threshold_sweep(ctx, computed[best], results[best]["temperature"]) if ctx.sessions else None
    command = "python -m homework_monitor.training.table1 " + " ".join(argv if argv is not None else sys.argv[1:])
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(with_sections(render_markdown(ctx, results, command.strip(), sweep, best), a.output))
    (a.output.with_suffix(".json")).write_text(json.dumps(
        {"best": best, "config": cfg.name, "data_hash": ctx.data.data_hash,
         "rows": {k: {kk: v[kk] for kk in ("pooled", "fold_mean", "fold_std", "temperature", "ece", "session")}
                  for k, v in results.items()}, "session_sweep": sweep}, indent=2))
    print(a.output.read_text())
    return results


if __name__ == "__main__":
    main()
