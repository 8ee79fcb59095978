"""Login sessions (hashed tokens, expiry, logout), the audit log's no-text rule, and scoping."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from homework_monitor.store import access
from homework_monitor.store.access import Viewer
from homework_monitor.store.models import LoginSessionRow, SessionRow

T0 = datetime(2026, 11, 12, 9, tzinfo=UTC)
SUP = Viewer("sup1", "supervisor", program_id="P1")


def test_login_create_lookup_expire(store):
    with store.session() as db:
        token = access.create_login(db, SUP, timedelta(minutes=30), now=T0)
        other = access.create_login(db, Viewer("t1", "therapist", therapist_id="T1"), timedelta(hours=8), now=T0)
    assert len(token) >= 40 and token != other
    with store.session() as db:
        assert access.lookup_login(db, token, now=T0 + timedelta(minutes=29)) == SUP
        assert access.lookup_login(db, token, now=T0 + timedelta(minutes=30)) is None  # expired
        assert access.lookup_login(db, token + "x", now=T0) is None
        assert access.lookup_login(db, "", now=T0) is None
        # only the hash is stored
        hashes = db.scalars(select(LoginSessionRow.token_hash)).all()
        assert hashlib.sha256(token.encode()).hexdigest() in hashes
        dump = repr(db.execute(text("SELECT * FROM login_sessions")).all())
        assert token not in dump and other not in dump
    with store.session() as db:
        assert access.purge_expired_logins(db, now=T0 + timedelta(hours=1)) == 1  # the 30-minute one
        assert access.lookup_login(db, other, now=T0 + timedelta(hours=1)) is not None
        assert access.expire_login(db, other) is True  # logout
        assert access.lookup_login(db, other, now=T0 + timedelta(hours=1)) is None
        assert access.expire_login(db, other) is False
    with store.session() as db, pytest.raises(ValueError):
        access.create_login(db, Viewer("x", "admin"), timedelta(hours=1))  # type: ignore[arg-type]


def test_audit_takes_names_not_text(store):
    with store.session() as db:
        access.audit(db, "t1", "view_session", "a3", at=T0)
        access.audit(db, "sup1", "login", at=T0 + timedelta(seconds=1))
        for bad in ("View session", "view_session: client said hello", "", "x" * 65):
            with pytest.raises(ValueError):
                access.audit(db, "t1", bad, "a3")
    with store.session() as db:
        assert [(e.user_id, e.action, e.session_id) for e in access.audit_entries(db)] == [
            ("sup1", "login", None), ("t1", "view_session", "a3")]
        assert [e.action for e in access.audit_entries(db, session_id="a3")] == ["view_session"]
        assert [e.action for e in access.audit_entries(db, user_id="sup1")] == ["login"]
        assert [e.action for e in access.audit_entries(db, since=T0 + timedelta(seconds=1))] == ["login"]


@pytest.mark.parametrize("viewer, visible", [
    (Viewer("t1", "therapist", therapist_id="T1"), ["s1"]),
    (Viewer("sup1", "supervisor", program_id="P1"), ["s1", "s2"]),
    (Viewer("sup2", "supervisor", program_id="P2"), ["s3"]),
    (Viewer("t9", "therapist"), []),  # a therapist without an id sees nothing
    (Viewer("sup9", "supervisor"), []),  # a supervisor without a program sees nothing
    (Viewer("x", "therapist", program_id="P1"), []),  # a therapist is not scoped by program
    (Viewer("x", "admin", therapist_id="T1", program_id="P1"), []),  # unknown role: nothing  # type: ignore[arg-type]
])
def test_scope(store, viewer, visible):
    with store.session() as db:
        for sid, therapist, program in (("s1", "T1", "P1"), ("s2", "T2", "P1"), ("s3", "T3", "P2"),
                                        ("s4", None, None)):
            db.add(SessionRow(session_id=sid, therapist_id=therapist, program_id=program, started_at=T0,
                              started_at_exact=True, opened=True, last_seen_at=T0))
    with store.session() as db:
        assert sorted(db.scalars(select(SessionRow.session_id).where(access.scope(viewer)))) == visible
        for sid in ("s1", "s2", "s3", "s4", "missing"):
            assert access.can_view_session(db, viewer, sid) == (sid in visible)
