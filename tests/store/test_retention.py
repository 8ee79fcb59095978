"""Retention purge: whole sessions past retention go with their children; audit, feedback and login
sessions past retention go too; everything newer stays."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from homework_monitor.store import access, ingest, queries, retention
from homework_monitor.store.access import Viewer

from . import data
from .snapshot import snapshot

T1 = Viewer("t1", "therapist", therapist_id="T1")
SUP = Viewer("sup1", "supervisor", program_id="P1")


def test_purge_deletes_what_is_past_retention(store):
    with store.session() as db:
        for m in data.messages():
            ingest.apply(db, m)
        a1_event = data.event("a1", 5, "journal", 0).event_id
        a3_event = data.event("a3", 30, "learn", 0).event_id
        queries.record_feedback(db, T1, a1_event, "up", now=datetime(2026, 11, 3, tzinfo=UTC))
        queries.record_feedback(db, T1, a3_event, "up", now=datetime(2026, 11, 11, tzinfo=UTC))
        access.audit(db, "t1", "view_session", "a1", at=datetime(2026, 11, 3, tzinfo=UTC))
        access.create_login(db, SUP, timedelta(hours=8), now=datetime(2026, 11, 12, tzinfo=UTC))
    # retention 10 days at 2026-11-20 00:00: cutoff 2026-11-10 00:00. Sessions last seen before it:
    # a1 (2 Nov), a2 (9 Nov), b1 (3 Nov), b3 (1 Nov), c1 (4 Nov). a3 (10 Nov 10:50), a4, a5 (10 Nov 08:00),
    # b2 (16 Nov), b4 stay. The feedback of 3 Nov and the audit records of 3 Nov go (two from feedback, one
    # direct); the login of 12 Nov has expired.
    now = datetime(2026, 11, 20, tzinfo=UTC)
    with store.session() as db:
        r = retention.purge(db, 10, now=now)
    assert r.cutoff == datetime(2026, 11, 10, tzinfo=UTC)
    assert (r.sessions, r.events, r.assignments, r.nudges, r.feedback, r.audit, r.logins) == (5, 4, 5, 2, 1, 2, 1)
    snap = snapshot(store)
    assert sorted(row[0] for row in snap["sessions"]) == ["a3", "a4", "a5", "b2", "b4"]
    assert len(snap["homework_events"]) == 4 and len(snap["nudges"]) == 3 and len(snap["assignments"]) == 2
    assert len(snap["feedback"]) == 1 and len(snap["audit_log"]) == 1 and snap["login_sessions"] == []
    with store.session() as db:
        assert queries.session_detail(db, SUP, "a1", audit_action=None) is None
    # purging again at the same time deletes nothing more
    with store.session() as db:
        again = retention.purge(db, 10, now=now)
    assert (again.sessions, again.events, again.feedback, again.audit, again.logins) == (0, 0, 0, 0, 0)
    assert snapshot(store) == snap
