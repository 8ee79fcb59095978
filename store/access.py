"""Who may see what: viewers and their scope, web login sessions, and the audit log.

A therapist sees only sessions with their ``therapist_id``; a supervisor sees the sessions of their
program. Any other role, or a viewer without the id its role needs, sees nothing (fail closed).

Login tokens are 256-bit random values (``secrets.token_urlsafe``); the store keeps only their SHA-256,
so a copy of the database cannot be used to log in. A plain hash is enough for a random token (no
password stretching is needed: there is nothing to guess).
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, delete, false, select
from sqlalchemy.orm import Session

from .ingest import rowcount
from .models import AuditRow, LoginSessionRow, SessionRow

Role = Literal["therapist", "supervisor"]
ROLES: tuple[Role, ...] = ("therapist", "supervisor")


@dataclass(frozen=True)
class Viewer:
    """A logged-in user. ``therapist_id``: the sessions' therapist_id a therapist owns (usually the user
    id); ``program_id``: the program a supervisor oversees."""
    user_id: str
    role: Role
    therapist_id: str | None = None
    program_id: str | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def scope(viewer: Viewer) -> ColumnElement[bool]:
    """WHERE clause over ``SessionRow``: the sessions ``viewer`` may see."""
    if viewer.role == "therapist" and viewer.therapist_id:
        return SessionRow.therapist_id == viewer.therapist_id
    if viewer.role == "supervisor" and viewer.program_id:
        return SessionRow.program_id == viewer.program_id
    return false()


def can_view_session(db: Session, viewer: Viewer, session_id: str) -> bool:
    """True when the session exists and is in ``viewer``'s scope. The web answers the same (404) for a
    session that does not exist and one out of scope, so ids do not leak."""
    return db.execute(select(SessionRow.session_id).where(SessionRow.session_id == session_id, scope(viewer))
                      ).first() is not None


# --- login sessions -------------------------------------------------------------------------------
def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_login(db: Session, viewer: Viewer, ttl: timedelta, now: datetime | None = None) -> str:
    """A new login for ``viewer`` valid for ``ttl``; returns the bearer token (shown once, never stored)."""
    if viewer.role not in ROLES:
        raise ValueError(f"unknown role {viewer.role!r}")
    now = now or now_utc()
    token = secrets.token_urlsafe(32)
    db.add(LoginSessionRow(token_hash=token_hash(token), user_id=viewer.user_id, role=viewer.role,
                           therapist_id=viewer.therapist_id, program_id=viewer.program_id,
                           created_at=now, expires_at=now + ttl))
    db.flush()
    return token


def lookup_login(db: Session, token: str, now: datetime | None = None) -> Viewer | None:
    """The viewer of a valid, unexpired token; None otherwise (unknown, expired or logged out)."""
    if not token:
        return None
    row = db.get(LoginSessionRow, token_hash(token))
    if row is None or row.expires_at <= (now or now_utc()):
        return None
    return Viewer(user_id=row.user_id, role=row.role, therapist_id=row.therapist_id,  # type: ignore[arg-type]
                  program_id=row.program_id)


def expire_login(db: Session, token: str) -> bool:
    """Log out: the token stops working at once. True when it existed."""
    return rowcount(db.execute(delete(LoginSessionRow).where(LoginSessionRow.token_hash == token_hash(token)))) > 0


def purge_expired_logins(db: Session, now: datetime | None = None) -> int:
    return rowcount(db.execute(delete(LoginSessionRow).where(LoginSessionRow.expires_at <= (now or now_utc()))))


# --- audit ----------------------------------------------------------------------------------------
# An action is a name from code ("view_session", "feedback", "login"...), never text from a request.
ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    user_id: str
    action: str
    session_id: str | None


def audit(db: Session, user_id: str, action: str, session_id: str | None = None,
          at: datetime | None = None) -> None:
    """Append one audit record (who, what, which session, when)."""
    if not ACTION_PATTERN.match(action):
        raise ValueError("audit action must be a short lowercase name (code, not text)")
    db.add(AuditRow(at=at or now_utc(), user_id=user_id, action=action, session_id=session_id))
    db.flush()


def audit_entries(db: Session, *, session_id: str | None = None, user_id: str | None = None,
                  since: datetime | None = None, limit: int = 1000) -> list[AuditEntry]:
    """Audit records, newest first, optionally for one session / user / since a time."""
    q = select(AuditRow).order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit)
    if session_id is not None:
        q = q.where(AuditRow.session_id == session_id)
    if user_id is not None:
        q = q.where(AuditRow.user_id == user_id)
    if since is not None:
        q = q.where(AuditRow.at >= since)
    return [AuditEntry(r.at, r.user_id, r.action, r.session_id) for r in db.scalars(q)]
