"""Reading the shared data by path (never copied into the repo) and building microdialogues.

Labeled items: ``labeled/real_dev.jsonl`` (real) and ``labeled/synthetic.jsonl`` (written; training
only). Unlabeled: every corpus in ``corpora/*/sessions.jsonl``, windowed into microdialogues by the
same code the stream worker runs (``homework_monitor.stream.windowing``), tagged by source.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from homework_monitor.model import Example
from homework_monitor.stream.offline import session_utterances
from homework_monitor.stream.schemas import CLASSES
from homework_monitor.stream.windowing import WindowConfig, window_session

CLINICAL_SOURCES = ("annomi", "hlqc", "mibot", "pa_counseling")


def read_jsonl(path: Path) -> Iterator[dict]:
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")  # compressed copies travel to the GPU machine
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def text_sha256(*paths: Path, skip: Callable[[dict], bool] | None = None) -> str:
    """Hash of the records (not the bytes), so a gzipped copy hashes like the original; records ``skip``
    rejects are not part of the data hashed."""
    h = hashlib.sha256()
    for p in paths:
        for d in read_jsonl(p):
            if skip is None or not skip(d):
                h.update(json.dumps(d, sort_keys=True).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LabeledItem:
    id: str
    source: str  # corpus name, or "synthetic"
    session_id: str
    example: Example
    label: str
    labels: tuple[str, ...]
    real: bool
    turn: int | None = None  # the therapist utterance's index in its session (labelled real items)
    review: bool | None = None  # "reviews earlier homework" (ANNOTATION.md); None = not annotated
    why: str | None = None  # how an added label's item was drawn (training/labels/README.md)

    @property
    def y(self) -> int:
        return CLASSES.index(self.label)


def _example(d: dict) -> Example:
    ctx = tuple((c["speaker"], c["text"]) for c in d.get("context") or [])
    return Example(therapist=d["therapist"], client=d.get("client"), context=ctx)


def load_labeled(path: Path, real: bool) -> list[LabeledItem]:
    items = []
    for d in read_jsonl(path):
        items.append(LabeledItem(
            id=str(d["id"]), source=d.get("dataset") or ("synthetic" if not real else "unknown"),
            session_id=d.get("session_id") or f"{d['id']}", example=_example(d), label=d["label"],
            labels=tuple(d.get("labels") or [d["label"]]), real=real,
            turn=int(d["turn"]) if d.get("turn") is not None else None))
    return items


@dataclass(frozen=True)
class LabeledData:
    real: list[LabeledItem]
    synthetic: list[LabeledItem]
    data_hash: str


def load_labeled_data(data_dir: Path) -> LabeledData:
    real_p, syn_p = data_dir / "labeled" / "real_dev.jsonl", data_dir / "labeled" / "synthetic.jsonl"
    present = [p for p in (real_p, syn_p) if p.exists() or p.with_name(p.name + ".gz").exists()]
    return LabeledData(load_labeled(real_p, True), load_labeled(syn_p, False) if syn_p in present else [],
                       text_sha256(*present))


def load_sessions(path: Path) -> list[dict]:
    return list(read_jsonl(path))


def corpus_paths(data_dir: Path, sources: Iterable[str] | None = None) -> list[Path]:
    # A corpus may be stored plain or gzipped (GPU copies); list each corpus once.
    paths = sorted({p.with_name("sessions.jsonl") for p in (data_dir / "corpora").glob("*/sessions.jsonl*")})
    return [p for p in paths if sources is None or p.parent.name in set(sources)]


@dataclass(frozen=True)
class UnlabeledMicrodialogue:
    source: str
    session_id: str
    turn: int
    therapist: str
    client: str | None


def unlabeled_microdialogues(data_dir: Path, sources: Iterable[str] | None = None,
                             exclude_sessions: set[str] | frozenset = frozenset(),
                             cfg: WindowConfig = WindowConfig()) -> list[UnlabeledMicrodialogue]:
    """The paper's pretraining units: therapist turn + client reply, windowed like the stream."""
    out = []
    for path in corpus_paths(data_dir, sources):
        source = path.parent.name
        for s in read_jsonl(path):
            if s["session_id"] in exclude_sessions:
                continue
            _, mds = window_session(session_utterances(s), cfg, s["session_id"])
            out.extend(UnlabeledMicrodialogue(source, s["session_id"], md.turn, md.therapist.text,
                                              md.client.text if md.client else None) for md in mds)
    return out


def session_folds(session_ids: Iterable[str], n_folds: int, seed: int = 13) -> dict[str, int]:
    """Fold of each session: items and whole sessions are grouped, never split across folds."""
    uniq = sorted(set(session_ids))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    return {g: i % n_folds for i, g in enumerate(uniq)}


# ------------------------------------------------------------------ labels added by this project
# Labels live in the repository as ids + labels only (training/labels/*.jsonl); the text is joined from
# the corpora at load time, so no corpus text is ever committed.
ADDED_LABELS_DIR = Path(__file__).resolve().parent / "labels"


def utterance_examples(session: dict, context_turns: int = 3) -> dict[int, Example]:
    """The labelled sets' unit, keyed by the therapist utterance's index among therapist/client
    utterances: that utterance, the client utterance right after it (if any) and up to
    ``context_turns`` utterances before it. Utterances are not merged (real_dev.jsonl is built the same
    way: its ``turn``, ``therapist``, ``client`` and ``context`` match this for all 1,169 items)."""
    spoken = [u for u in session["utterances"] if u.get("speaker") in ("therapist", "client")]
    texts = [" ".join((u.get("text") or "").split()) or "…" for u in spoken]
    out = {}
    for i, u in enumerate(spoken):
        if u["speaker"] != "therapist":
            continue
        client = texts[i + 1] if i + 1 < len(spoken) and spoken[i + 1]["speaker"] == "client" else None
        ctx = tuple((spoken[j]["speaker"], texts[j]) for j in range(max(0, i - context_turns), i))
        out[i] = Example(therapist=texts[i], client=client, context=ctx)
    return out


def load_added_labels(data_dir: Path, paths: Iterable[Path] | None = None) -> list[LabeledItem]:
    """Labels added with the annotation protocol (training/labels/README.md), joined to the corpora.

    Raises ``ValueError`` when a labelled turn is missing from the corpora or is not a therapist
    utterance: a silent skip would quietly shrink the training set.
    """
    rows = [r for p in (paths or sorted(ADDED_LABELS_DIR.glob("*.jsonl"))) for r in read_jsonl(p)]
    wanted: dict[str, set[str]] = {}
    for r in rows:
        wanted.setdefault(r["dataset"], set()).add(r["session_id"])
    examples: dict[str, dict[int, Example]] = {}
    for path in corpus_paths(Path(data_dir), wanted):
        for s in read_jsonl(path):
            if s["session_id"] in wanted[path.parent.name]:
                examples[s["session_id"]] = utterance_examples(s)
    items, missing = [], []
    for r in rows:
        ex = examples.get(r["session_id"], {}).get(int(r["turn"]))
        if ex is None:
            missing.append(f"{r['dataset']}/{r['session_id']}#{r['turn']}")
            continue
        items.append(LabeledItem(id=r["id"], source=r["dataset"], session_id=r["session_id"], example=ex,
                                 label=r["label"], labels=tuple(r["labels"]), real=True, turn=int(r["turn"]),
                                 review=r.get("review"), why=r.get("why")))
    if missing:
        raise ValueError(f"{len(missing)} labelled turns not found in {data_dir}: {missing[:5]}")
    return items


def model_drawn_strata(labels_dir: Path = ADDED_LABELS_DIR) -> dict[str, float]:
    """The strata drawn by what models predicted (``*.strata.json`` beside the label files), each with its
    inverse inclusion weight (pool / drawn). Their items over-represent where the models fire, so figures
    that compare models score them apart, weighted back to the population they were drawn from."""
    out = {}
    for p in sorted(Path(labels_dir).glob("*.strata.json")):
        for why, s in json.loads(p.read_text())["strata"].items():
            out[why] = s["pool"] / s["drawn"]
    return out


# ------------------------------------------------------------------ clinical supervision (sessions_dev)
def clinical_negatives(sessions: Iterable[tuple[str, dict]], truth_rows: Iterable[dict],
                       labelled: set[tuple[str, int]]) -> list[LabeledItem]:
    """Every therapist utterance of the ``sessions_dev`` sessions that neither session annotator marked
    (not in ``turns_any``) and that is not already a labelled item, as a ``none`` training item.

    ``sessions``: (corpus name, session dict) pairs; ``labelled``: (session_id, turn) of labelled items.
    The unit is the labelled sets' (``utterance_examples``), so these items look like real_dev's."""
    marked = {r["session_id"]: {int(t) for t in r.get("turns_any") or []} for r in truth_rows}
    out = []
    for source, s in sessions:
        sid = s["session_id"]
        if sid not in marked:
            continue
        for turn, ex in utterance_examples(s).items():
            if turn not in marked[sid] and (sid, turn) not in labelled:
                out.append(LabeledItem(id=f"neg-{sid}-{turn}", source=source, session_id=sid, example=ex,
                                       label="none", labels=("none",), real=True, turn=turn))
    return out


def select_negatives(negatives: list[LabeledItem], fold_of: dict[str, int], test_fold: int | None,
                     cap: int | None, seed: int = 13) -> list[LabeledItem]:
    """The negatives a fold trains on: none from a session of ``test_fold`` (None = final model, all
    folds), at most ``cap`` of them, drawn in one seeded order shared by every fold."""
    order = np.random.default_rng(seed).permutation(len(negatives))
    chosen = [negatives[i] for i in order if test_fold is None or fold_of[negatives[i].session_id] != test_fold]
    return chosen if cap is None else chosen[:cap]
