"""From class probabilities to homework events and session summaries. Pure and deterministic."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .schemas import NONE, Assignment, HomeworkEvent, SessionOpened, SessionSummary, stable_id
from .windowing import Microdialogue, SessionState, evolve

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
        client_id=state.client_id, turn=md.turn, category=decision.category, confidence=round(decision.confidence, 6),
        scores={k: round(float(v), 6) for k, v in scores.items()}, quote=quote_of(md),
        start_s=md.therapist.start_s, trigger_seq=md.trigger_seq, emitted_at=emitted_at,
        model_version=model_version)


def record_assignment(state: SessionState, event: HomeworkEvent) -> SessionState:
    if any(a.turn == event.turn for a in state.assignments):
        return state  # already recorded: replays stay idempotent
    a = Assignment(turn=event.turn, category=event.category, confidence=event.confidence,
                   start_s=event.start_s, quote=event.quote)
    return evolve(state, assignments=tuple(sorted(state.assignments + (a,), key=lambda x: x.turn)))


CATEGORY_TITLES = {"practice": "Practice a skill", "take_action": "Take an action",
                   "journal": "Journal / self-monitor", "learn": "Learn material"}
NO_HOMEWORK_NOTE = "No homework assigned this session."


def _clock(start_s: float | None, first_start_s: float | None) -> str:
    if start_s is None:
        return "time unknown"
    minutes, seconds = divmod(int(round(start_s - (first_start_s or 0.0))), 60)
    return f"{minutes:d}:{seconds:02d} into the session"


def charting_note(assignments: tuple[Assignment, ...] | list[Assignment], first_start_s: float | None) -> str:
    """The homework section of a progress note, ready to paste: one line per assignment in session order,
    its category, the therapist's words and when; or the no-homework sentence."""
    if not assignments:
        return NO_HOMEWORK_NOTE
    cats = ", ".join(CATEGORY_TITLES[c] for c in sorted({a.category for a in assignments}))
    lines = [f"Homework assigned ({cats}):"]
    for a in sorted(assignments, key=lambda x: x.turn):
        lines.append(f'- {CATEGORY_TITLES[a.category]}, {_clock(a.start_s, first_start_s)}: "{a.quote}"')
    return "\n".join(lines)


def session_opened(state: SessionState, start_s: float | None, emitted_at: float,
                   default_scheduled_minutes: int | None = None) -> SessionOpened:
    """The announcement of a session's first message: ids and times, no text."""
    return SessionOpened(session_id=state.session_id, therapist_id=state.therapist_id, client_id=state.client_id,
                         program_id=state.program_id,
                         scheduled_minutes=state.scheduled_minutes or default_scheduled_minutes,
                         started_at=state.started_at if state.started_at is not None else emitted_at,
                         start_s=start_s, emitted_at=emitted_at)


def previous_homework_reviewed(state: SessionState) -> bool | None:
    """Whether this session reviewed the previous session's homework; None when there was none to review
    (no client id, no previous session, or a previous session without homework)."""
    if not state.previous_homework:
        return None
    return bool(state.reviews)


def session_summary(state: SessionState, model_version: str, emitted_at: float,
                    default_scheduled_minutes: int | None = None) -> SessionSummary:
    """The session's summary; ``scheduled_minutes`` is the session's own or, when it sent none, the default
    the nudge rules assumed."""
    cats = sorted({a.category for a in state.assignments})
    duration = (state.last_time_s - state.first_start_s
                if state.last_time_s is not None and state.first_start_s is not None else None)
    return SessionSummary(
        summary_id=stable_id("summary", state.session_id, model_version),
        session_id=state.session_id, therapist_id=state.therapist_id, client_id=state.client_id,
        program_id=state.program_id, scheduled_minutes=state.scheduled_minutes or default_scheduled_minutes,
        started_at=state.started_at, homework_assigned=bool(state.assignments), categories=cats,
        assignments=list(state.assignments),
        note=charting_note(state.assignments, state.first_start_s),
        previous_session_id=state.previous_session_id, previous_homework=list(state.previous_homework),
        previous_homework_reviewed=previous_homework_reviewed(state), reviews=list(state.reviews),
        n_utterances=state.n_utterances,
        n_microdialogues=state.n_microdialogues, missing_utterances=state.missing_utterances,
        duration_s=duration, emitted_at=emitted_at, model_version=model_version)
