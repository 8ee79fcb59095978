"""Idempotent writes of the four wire messages (what the sink applies, one transaction per batch).

Redelivery changes nothing, and the order of arrival does not matter:

* ``homework-events`` and ``nudges``: inserted once per ``event_id`` / ``nudge_id``; a redelivery is a no-op.
* ``session-opened``: fills the session's ids and its exact start; a redelivery finds them set.
* ``session-summaries``: stored once per ``summary_id``. A different summary of the same session (another
  model version) replaces it only when it was emitted later (ties: the larger id), so any order of arrival
  ends in the same rows.
* A session row is created by whichever message comes first (an event may arrive before its session is
  announced); ids fill in first non-null wins, ``started_at`` is the exact start once known (else the
  earliest emitted_at seen), ``last_seen_at`` the latest emitted_at.

Concurrent sinks (a consumer group) are safe: rows are created with INSERT ... ON CONFLICT DO NOTHING and
a session row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL) before it is merged.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from homework_monitor.stream.schemas import HomeworkEvent, Nudge, SessionOpened, SessionSummary

from .models import AssignmentRow, HomeworkEventRow, NudgeRow, SessionRow

StoredMessage = HomeworkEvent | SessionSummary | Nudge | SessionOpened


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def upsert_insert(db: Session, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with ON CONFLICT clauses, in the dialect of the session's database."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {dialect}")


def rowcount(result: Any) -> int:
    """Rows a DELETE/UPDATE touched (``Session.execute`` is typed as returning a plain Result)."""
    return int(cast(CursorResult, result).rowcount or 0)


def _insert_ignore(db: Session, table: Any, values: dict[str, Any], key: str) -> None:
    """INSERT ... ON CONFLICT (key) DO NOTHING."""
    db.execute(upsert_insert(db, table).values(**values).on_conflict_do_nothing(index_elements=[key]))


_IDS = ("therapist_id", "client_id", "program_id")


def _session(db: Session, session_id: str, ids: dict[str, str | None], at: datetime) -> SessionRow:
    """The session's row, created if absent and locked; ids merged, times widened to include ``at``."""
    _insert_ignore(db, SessionRow.__table__, {"session_id": session_id, **ids, "started_at": at,
                                              "started_at_exact": False, "opened": False, "last_seen_at": at},
                   "session_id")
    row = db.execute(select(SessionRow).where(SessionRow.session_id == session_id).with_for_update()
                     ).scalar_one()
    for name, value in ids.items():
        if getattr(row, name) is None and value is not None:
            setattr(row, name, value)
    if at > row.last_seen_at:
        row.last_seen_at = at
    if not row.started_at_exact and at < row.started_at:
        row.started_at = at
    return row


def _exact_start(row: SessionRow, started_at: datetime) -> None:
    if not row.started_at_exact or started_at < row.started_at:
        row.started_at = started_at
        row.started_at_exact = True


def _fill(row: SessionRow, name: str, value: Any) -> None:
    if getattr(row, name) is None and value is not None:
        setattr(row, name, value)


def apply_event(db: Session, e: HomeworkEvent) -> None:
    at = utc(e.emitted_at)
    _session(db, e.session_id, {k: getattr(e, k) for k in _IDS}, at)
    _insert_ignore(db, HomeworkEventRow.__table__, {
        "event_id": e.event_id, "session_id": e.session_id, "turn": e.turn, "category": e.category,
        "confidence": e.confidence, "scores": dict(e.scores), "quote": e.quote, "start_s": e.start_s,
        "trigger_seq": e.trigger_seq, "emitted_at": at, "model_version": e.model_version}, "event_id")


def apply_nudge(db: Session, n: Nudge) -> None:
    at = utc(n.emitted_at)
    _session(db, n.session_id, {k: getattr(n, k) for k in _IDS}, at)
    _insert_ignore(db, NudgeRow.__table__, {
        "nudge_id": n.nudge_id, "session_id": n.session_id, "rule": n.rule, "message": n.message,
        "session_time_s": n.session_time_s, "previous_session_id": n.previous_session_id,
        "previous_assignments": [a.model_dump(mode="json") for a in n.previous_assignments],
        "emitted_at": at}, "nudge_id")


def apply_opened(db: Session, o: SessionOpened) -> None:
    row = _session(db, o.session_id, {k: getattr(o, k) for k in _IDS}, utc(o.emitted_at))
    _exact_start(row, utc(o.started_at))
    _fill(row, "scheduled_minutes", o.scheduled_minutes)
    row.opened = True


def _supersedes(s: SessionSummary, row: SessionRow) -> bool:
    if row.summary_id is None:
        return True
    if row.summary_id == s.summary_id:
        return False  # redelivery
    assert row.ended_at is not None
    new, old = utc(s.emitted_at), row.ended_at
    return new > old or (new == old and s.summary_id > row.summary_id)


def apply_summary(db: Session, s: SessionSummary) -> None:
    at = utc(s.emitted_at)
    row = _session(db, s.session_id, {k: getattr(s, k) for k in _IDS}, at)
    if s.started_at is not None:
        _exact_start(row, utc(s.started_at))
    _fill(row, "scheduled_minutes", s.scheduled_minutes)
    if not _supersedes(s, row):
        return
    row.summary_id = s.summary_id
    row.ended_at = at
    row.homework_assigned = s.homework_assigned
    row.categories = list(s.categories)
    row.note = s.note
    row.previous_session_id = s.previous_session_id
    row.previous_homework_assigned = bool(s.previous_homework) if s.previous_session_id is not None else None
    row.previous_homework = [a.model_dump(mode="json") for a in s.previous_homework]
    row.previous_homework_reviewed = s.previous_homework_reviewed
    row.reviews = [r.model_dump(mode="json") for r in s.reviews]
    row.n_utterances = s.n_utterances
    row.n_microdialogues = s.n_microdialogues
    row.missing_utterances = s.missing_utterances
    row.duration_s = s.duration_s
    row.model_version = s.model_version
    db.flush()
    db.execute(delete(AssignmentRow).where(AssignmentRow.session_id == s.session_id))
    if s.assignments:
        db.execute(insert(AssignmentRow), [
            {"session_id": s.session_id, "turn": a.turn, "category": a.category, "confidence": a.confidence,
             "start_s": a.start_s, "quote": a.quote} for a in s.assignments])


def apply(db: Session, message: StoredMessage) -> None:
    """Write one message (inside the caller's transaction)."""
    if isinstance(message, HomeworkEvent):
        apply_event(db, message)
    elif isinstance(message, SessionSummary):
        apply_summary(db, message)
    elif isinstance(message, Nudge):
        apply_nudge(db, message)
    elif isinstance(message, SessionOpened):
        apply_opened(db, message)
    else:
        raise TypeError(f"not a stored message: {type(message).__name__}")
