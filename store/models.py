"""The store's tables (SQLAlchemy 2, typed). The Alembic chain in ``migrations/`` creates them.

Protected health information (the therapist's words: quotes, charting notes, reviews, previous
homework) lives only in session-level rows: ``sessions``, ``homework_events``, ``assignments`` and
``nudges``. Aggregates, ``feedback``, ``audit_log`` and ``login_sessions`` hold ids, votes and times only.

Times are timezone-aware UTC datetimes in Python (``UTCDateTime``: ``timestamptz`` on PostgreSQL, ISO text
on SQLite); the wire's epoch seconds are converted on the way in (``ingest``).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID = 128  # schemas.ID_MAX_CHARS: ids are short, from a closed character set
SHORT = 64


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite keeps no zone: stored as UTC, read back as UTC)."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store takes timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Constraint names are fixed so migrations and the models agree on both databases.
NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
          "pk": "pk_%(table_name)s"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class SessionRow(Base):
    """One therapy session: what was announced (session-opened), detected and summarised.

    A row can be created by any of the four topics (an event may arrive before its session is
    announced): ids fill in as messages bring them, first non-null value wins."""
    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    therapist_id: Mapped[str | None] = mapped_column(String(ID))  # indexed with started_at (below)
    client_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    program_id: Mapped[str | None] = mapped_column(String(ID))  # indexed with started_at (below)
    scheduled_minutes: Mapped[int | None] = mapped_column(Integer)
    # When the worker saw the session's first message (session-opened or the summary's started_at);
    # until one of those arrives, the earliest emitted_at seen (started_at_exact false). Windows of the
    # supervisor view select sessions by this time.
    started_at: Mapped[datetime] = mapped_column(index=True)
    started_at_exact: Mapped[bool] = mapped_column(Boolean, default=False)
    opened: Mapped[bool] = mapped_column(Boolean, default=False)  # a session-opened message was stored
    last_seen_at: Mapped[datetime] = mapped_column(index=True)  # latest emitted_at of anything (retention)
    # The summary (set when the session ended; null while it is live).
    summary_id: Mapped[str | None] = mapped_column(String(SHORT), unique=True)
    ended_at: Mapped[datetime | None] = mapped_column(index=True)  # the summary's emitted_at
    homework_assigned: Mapped[bool | None] = mapped_column(Boolean)
    categories: Mapped[list[Any] | None]  # sorted homework categories of the summary
    note: Mapped[str | None] = mapped_column(Text)  # PHI: the charting note
    previous_session_id: Mapped[str | None] = mapped_column(String(ID))
    previous_homework_assigned: Mapped[bool | None] = mapped_column(Boolean)  # null: no previous session known
    previous_homework: Mapped[list[Any] | None]  # PHI: the previous session's assignments (with quotes)
    previous_homework_reviewed: Mapped[bool | None] = mapped_column(Boolean)
    reviews: Mapped[list[Any] | None]  # PHI: turns that reviewed the previous homework (with quotes)
    n_utterances: Mapped[int | None] = mapped_column(Integer)
    n_microdialogues: Mapped[int | None] = mapped_column(Integer)
    missing_utterances: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(SHORT))


class HomeworkEventRow(Base):
    """A live detection (homework-events); clinicians vote on these (``feedback``)."""
    __tablename__ = "homework_events"

    event_id: Mapped[str] = mapped_column(String(SHORT), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.session_id", ondelete="CASCADE"), index=True)
    turn: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    scores: Mapped[dict[str, Any]]
    quote: Mapped[str] = mapped_column(Text)  # PHI
    start_s: Mapped[float | None] = mapped_column(Float)
    trigger_seq: Mapped[int | None] = mapped_column(Integer)
    emitted_at: Mapped[datetime]
    model_version: Mapped[str] = mapped_column(String(SHORT))


class AssignmentRow(Base):
    """An assignment of the session's summary (the final list; replaced if a newer summary arrives)."""
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("session_id", "turn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.session_id", ondelete="CASCADE"), index=True)
    turn: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(32), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    start_s: Mapped[float | None] = mapped_column(Float)
    quote: Mapped[str] = mapped_column(Text)  # PHI


class NudgeRow(Base):
    """A nudge sent to the therapist (nudges topic), at most one per rule and session."""
    __tablename__ = "nudges"

    nudge_id: Mapped[str] = mapped_column(String(SHORT), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.session_id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(32), index=True)
    message: Mapped[str] = mapped_column(Text)  # fixed wording per rule, no transcript text
    session_time_s: Mapped[float | None] = mapped_column(Float)
    previous_session_id: Mapped[str | None] = mapped_column(String(ID))
    previous_assignments: Mapped[list[Any]]  # PHI (review rules): the previous session's quotes
    emitted_at: Mapped[datetime]


class FeedbackRow(Base):
    """A clinician's thumbs up/down on a detection: one vote per user and event, changeable. No text."""
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("event_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("homework_events.event_id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(ID))
    vote: Mapped[int] = mapped_column(SmallInteger)  # +1 up, -1 down
    at: Mapped[datetime] = mapped_column(index=True)


class AuditRow(Base):
    """Who did what to which session, when. Ids and a closed action name only, never text."""
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    user_id: Mapped[str] = mapped_column(String(ID), index=True)
    action: Mapped[str] = mapped_column(String(SHORT))
    session_id: Mapped[str | None] = mapped_column(String(ID), index=True)  # no FK: the log outlives nothing


class LoginSessionRow(Base):
    """A web login: the SHA-256 of a random bearer token (the token itself is never stored)."""
    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID), index=True)
    role: Mapped[str] = mapped_column(String(32))
    therapist_id: Mapped[str | None] = mapped_column(String(ID))
    program_id: Mapped[str | None] = mapped_column(String(ID))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


# Composite indexes the supervisor view's window queries use.
Index("ix_sessions_therapist_started", SessionRow.therapist_id, SessionRow.started_at)
Index("ix_sessions_program_started", SessionRow.program_id, SessionRow.started_at)
