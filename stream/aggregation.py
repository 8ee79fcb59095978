"""From class probabilities to homework events and session summaries. Pure and deterministic."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .schemas import NONE, Assignment, HomeworkEvent, SessionSummary, stable_id
from .windowing import Microdialogue, SessionState

QUOTE_CHARS = 400


@dataclass(frozen=True)
class Decision:
    category: str  # top class, possibly "none"
    confidence: float

    @property
    def is_homework(self) -> bool:
        return self.category != NONE


def decide(scores: Mapping[str, float], threshold: float) -> Decision:
    """Homework when the top class is not ``none`` and its (calibrated) probability >= threshold."""
    top = max(scores, key=scores.__getitem__)
    if top != NONE and scores[top] < threshold:
        return Decision(NONE, float(scores.get(NONE, 0.0)))
    return Decision(top, float(scores[top]))


def quote_of(md: Microdialogue) -> str:
    text = md.therapist.text
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def homework_event(state: SessionState, md: Microdialogue, scores: Mapping[str, float],
                   decision: Decision, model_version: str, emitted_at: float) -> HomeworkEvent:
    return HomeworkEvent(
        event_id=stable_id("event", md.session_id, md.turn, model_version),
        session_id=md.session_id, therapist_id=state.therapist_id, program_id=state.program_id,
        turn=md.turn, category=decision.category, confidence=round(decision.confidence, 6),
        scores={k: round(float(v), 6) for k, v in scores.items()}, quote=quote_of(md),
        start_s=md.therapist.start_s, trigger_seq=md.trigger_seq, emitted_at=emitted_at,
        model_version=model_version)


def record_assignment(state: SessionState, event: HomeworkEvent) -> SessionState:
    if any(a.turn == event.turn for a in state.assignments):
        return state  # already recorded: replays stay idempotent
    a = Assignment(turn=event.turn, category=event.category, confidence=event.confidence,
                   start_s=event.start_s, quote=event.quote)
    return replace(state, assignments=tuple(sorted(state.assignments + (a,), key=lambda x: x.turn)))


def session_summary(state: SessionState, model_version: str, emitted_at: float) -> SessionSummary:
    cats = sorted({a.category for a in state.assignments})
    duration = (state.last_time_s - state.first_start_s
                if state.last_time_s is not None and state.first_start_s is not None else None)
    return SessionSummary(
        summary_id=stable_id("summary", state.session_id, model_version),
        session_id=state.session_id, therapist_id=state.therapist_id, client_id=state.client_id,
        program_id=state.program_id, homework_assigned=bool(state.assignments), categories=cats,
        assignments=list(state.assignments), n_utterances=state.n_utterances,
        n_microdialogues=state.n_microdialogues, missing_utterances=state.missing_utterances,
        duration_s=duration, emitted_at=emitted_at, model_version=model_version)
