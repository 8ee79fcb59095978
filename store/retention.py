"""Retention: everything older than ``HWM_STORE_RETENTION_DAYS`` is deleted (the sink runs this every
``HWM_STORE_PURGE_INTERVAL_HOURS``; ``homework-monitor store purge`` runs it once).

A session goes as a whole, with its events, assignments, nudges and the feedback on its events, once
nothing about it was emitted within the retention period (``last_seen_at``). Feedback and audit
records older than the period go on their own; login sessions go when expired or older than the period.
Deletes are explicit, children first, so they do not depend on the database enforcing cascades.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from .access import now_utc
from .ingest import rowcount
from .models import AssignmentRow, AuditRow, FeedbackRow, HomeworkEventRow, LoginSessionRow, NudgeRow, SessionRow


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    sessions: int
    events: int
    assignments: int
    nudges: int
    feedback: int
    audit: int
    logins: int


def purge(db: Session, retention_days: float, now: datetime | None = None) -> PurgeResult:
    now = now or now_utc()
    cutoff = now - timedelta(days=retention_days)
    old = select(SessionRow.session_id).where(SessionRow.last_seen_at < cutoff).scalar_subquery()
    old_events = select(HomeworkEventRow.event_id).where(HomeworkEventRow.session_id.in_(old)).scalar_subquery()

    def count(stmt) -> int:
        return rowcount(db.execute(stmt))

    feedback = count(delete(FeedbackRow).where(or_(FeedbackRow.event_id.in_(old_events), FeedbackRow.at < cutoff)))
    events = count(delete(HomeworkEventRow).where(HomeworkEventRow.session_id.in_(old)))
    assignments = count(delete(AssignmentRow).where(AssignmentRow.session_id.in_(old)))
    nudges = count(delete(NudgeRow).where(NudgeRow.session_id.in_(old)))
    sessions = count(delete(SessionRow).where(SessionRow.last_seen_at < cutoff))
    audit = count(delete(AuditRow).where(AuditRow.at < cutoff))
    logins = count(delete(LoginSessionRow).where(or_(LoginSessionRow.expires_at <= now,
                                                     LoginSessionRow.created_at < cutoff)))
    return PurgeResult(cutoff, sessions, events, assignments, nudges, feedback, audit, logins)
