"""Offline path: the same windowing and aggregation as the worker, over whole sessions.

Offline equals online: ``windowed_sessions`` + ``summarize_all`` run ``window_session`` (the
worker's state machine), ``decide``, ``homework_event``/``record_assignment`` and ``session_summary``.
Cross-session follow-up too: sessions are processed in input order with an in-memory history per client
(``followup.with_previous`` before a session, ``followup.record_session`` after it), and the review rule
reads every microdialogue (``review.record_reviews``), so an offline summary has the live one's fields.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import ValidationError

from .aggregation import decide, homework_event, record_assignment, session_summary
from .followup import ClientHistory, record_session, with_previous
from .review import record_reviews
from .schemas import CLASSES, CorpusSession, SessionSummary, Utterance
from .validation import Ok, Rejected, check_inbound, field_paths
from .windowing import Microdialogue, WindowConfig, window_session

# The longest session line of the shared corpora is 77 KB; a line beyond this is refused undecoded.
MAX_SESSION_LINE_BYTES = 64 * 1024 * 1024


def _wire_records(session: dict) -> list[tuple[int, dict]]:
    """Corpus-schema session -> (index in the session, wire record) as a live diarizer would send
    them: therapist and client only, seq dense from 0 (the index in the session when, as in every
    corpus here, there are no other speakers), empty text replaced so it is not dead-lettered."""
    meta = session.get("meta") or {}
    keep = {k: meta[k] for k in ("therapist_id", "client_id", "program_id", "scheduled_minutes")
            if meta.get(k) is not None}
    spoken = [(i, u) for i, u in enumerate(session["utterances"]) if u["speaker"] in ("therapist", "client")]
    return [(i, {"type": "utterance", "session_id": session["session_id"], "seq": seq, "speaker": u["speaker"],
                 "text": u["text"] if u["text"].strip() else "…", "start_s": u.get("start_s"),
                 "end_s": u.get("end_s"), **keep})
            for seq, (i, u) in enumerate(spoken)]


def session_utterances(session: dict) -> list[Utterance]:
    """Corpus-schema session -> Utterances (trusted corpora: training, replay)."""
    return [Utterance.model_validate(r) for _, r in _wire_records(session)]


def checked_session(obj: dict, *, max_text_chars: int) -> Ok | Rejected:
    """A decoded session line -> Ok((session_id, utterances)), each utterance validated exactly as the
    worker validates it, or the first refusal: the whole session is refused, since a summary of part
    of a session would read as the summary of all of it."""
    try:
        session = CorpusSession.model_validate(obj)
    except ValidationError as exc:
        return Rejected("schema_error", field_paths(exc))
    utterances = []
    for i, record in _wire_records(session.model_dump()):
        checked = check_inbound(record, max_text_chars=max_text_chars)
        if isinstance(checked, Rejected):
            return Rejected(checked.reason, f"utterances.{i}: {checked.detail}")
        utterances.append(checked.message)
    return Ok((session.session_id, utterances))


def windowed_sessions(sessions: Iterable[dict], cfg: WindowConfig):
    for s in sessions:
        state, mds = window_session(session_utterances(s), cfg, s["session_id"])
        yield state, mds


def summarize_windowed(state, mds: Sequence[Microdialogue], probs: np.ndarray, threshold: float,
                       model_version: str, now: float | None = None,
                       history: dict[str, ClientHistory] | None = None,
                       default_scheduled_minutes: int | None = None) -> SessionSummary:
    """One session's summary. ``history`` (client_id -> ClientHistory) gives the previous session and
    gets this one recorded, as the worker's client history table does."""
    now = time.time() if now is None else now
    if history is not None and state.client_id is not None:
        state = with_previous(state, history.get(state.client_id))
    for md, p in zip(mds, probs):
        scores = dict(zip(CLASSES, map(float, p)))
        d = decide(scores, threshold)
        if d.is_homework:
            state = record_assignment(state, homework_event(state, md, scores, d, model_version, now))
    state = record_reviews(state, mds)
    summary = session_summary(state, model_version, now, default_scheduled_minutes)
    if history is not None and summary.client_id is not None:
        history[summary.client_id] = record_session(history.get(summary.client_id), summary)
    return summary


def summarize_all(windowed: Sequence, probs: np.ndarray, threshold: float, model_version: str,
                  now: float | None = None, history: dict[str, ClientHistory] | None = None,
                  default_scheduled_minutes: int | None = None) -> list[SessionSummary]:
    """Summaries of windowed sessions, in order, given the probabilities of all their microdialogues in
    order (one classifier call for the lot, as the worker batches across sessions). A client's earlier
    session in the input is its later session's previous one (``history``: a fresh one by default)."""
    history = {} if history is None else history
    out, i = [], 0
    for state, mds in windowed:
        out.append(summarize_windowed(state, mds, probs[i:i + len(mds)], threshold, model_version, now,
                                      history, default_scheduled_minutes))
        i += len(mds)
    return out


def session_metrics(truth: dict[str, bool | None], predicted: dict[str, bool]) -> dict[str, float]:
    """Session-level accuracy/precision/recall; sessions whose truth is None (annotators split) are skipped."""
    ids = [s for s, v in truth.items() if v is not None and s in predicted]
    t = np.array([bool(truth[s]) for s in ids], dtype=bool)
    p = np.array([bool(predicted[s]) for s in ids], dtype=bool)
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    return {"sessions": len(ids), "accuracy": float((t == p).mean()) if ids else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0}
